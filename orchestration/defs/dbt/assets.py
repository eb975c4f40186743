"""dbt models, seeds and tests as Dagster assets and asset checks, over the parsed manifest.

Two `@dbt_assets` definitions: `warehouse_models` (every seed, model and test but `aipl_daily`) and
`aipl_days`, the daily-partitioned `aipl_daily` (a partition is a day of AIPL stages; a range of
days is one dbt invocation with `aipl_start`/`aipl_end`, so a Dagster backfill is what
`oa aipl backfill` does). Both are made by `dbt_definitions()` when the code location loads,
from the manifest `make ui` (or the command running a job) prepared: nothing runs dbt on import.
"""


import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from openaudience.analysis.catalog import Catalog
from openaudience.core.dbt import holding_warehouse, require_manifest
from openaudience.core.schema.raw import RAW_SCHEMA
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.sql import qualified
from openaudience.core.warehouse import publish_snapshot
from orchestration.dbt_project import DBT_PROJECT
from orchestration.metadata import chart_metadata
from orchestration.resources import WarehouseResource

TABLE_MATERIALIZATIONS = {"table", "incremental", "seed", "connected_components"}
AIPL_MODEL = "aipl_daily"
AIPL_KEY = dg.AssetKey(["marts", AIPL_MODEL])
PARTIAL_PARSE = "partial_parse.msgpack"
AIPL_FIRST_DAY = "2025-01-01"
"""The first AIPL partition. Days before it can still be computed with `oa aipl backfill`."""


class OpenAudienceTranslator(DagsterDbtTranslator):
    """Sources are the raw assets ``raw/<table>``; models are grouped by layer."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            # the delivery and event tables are written by their assets, not loaded as raw files
            source = dbt_resource_props["source_name"]
            schema = source if source in ("delivery", "events") else RAW_SCHEMA
            return dg.AssetKey([schema, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "seed":
            return "reference"
        fqn = dbt_resource_props.get("fqn", [])
        if len(fqn) > 2 and fqn[1] in ("staging", "intermediate", "marts"):
            return fqn[1]
        return "models"


TRANSLATOR = OpenAudienceTranslator(
    settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


def aipl_partitions(timezone: str) -> dg.DailyPartitionsDefinition:
    """One partition per day from AIPL_FIRST_DAY to today (end_offset=1: the nightly run computes
    the day it runs on, as aipl_daily does by default), days in OA_TIMEZONE."""
    return dg.DailyPartitionsDefinition(start_date=AIPL_FIRST_DAY, timezone=timezone, end_offset=1)


def dbt_definitions(timezone: str) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """(warehouse_models, aipl_days) over the prepared manifest; a missing manifest is a message."""
    manifest = require_manifest()
    return _dbt_definitions(str(manifest), manifest.stat().st_mtime, timezone)


@cache
def _dbt_definitions(manifest: str, _mtime: float, timezone: str):
    @dbt_assets(manifest=manifest, exclude=AIPL_MODEL, dagster_dbt_translator=TRANSLATOR,
                project=DBT_PROJECT, name="warehouse_models")
    def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                         warehouse: WarehouseResource):
        """dbt build over the selected models: seeds, models and their data and unit tests.

        Events are held until dbt exits, because an embedded DuckDB file cannot be read while the
        dbt process writes it; then each table gets its row count, and the RFM models their
        charts (PNG).
        """
        yield from _build(context, dbt, warehouse, ["build"])

    @dbt_assets(manifest=manifest, select=AIPL_MODEL, dagster_dbt_translator=TRANSLATOR,
                project=DBT_PROJECT, name="aipl_days", partitions_def=aipl_partitions(timezone),
                backfill_policy=dg.BackfillPolicy.single_run())
    def aipl_days(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
        """aipl_daily for the run's days: one dbt build (the model and its tests) with
        aipl_start/aipl_end the first and last day of the partition range and as_of its last day,
        as `oa aipl backfill --start --end` runs it. A backfill of many days is this one run."""
        days = context.partition_key_range
        dbt_vars = {"as_of": days.end, "aipl_start": days.start, "aipl_end": days.end}
        context.log.info(f"aipl_daily: {days.start} to {days.end}")
        yield from _build(context, dbt, warehouse, ["build", "--vars", json.dumps(dbt_vars)],
                          days=(days.start, days.end))

    return warehouse_models, aipl_days


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource,
           args: list[str], days: tuple[str, str] | None = None) -> Iterator[Any]:
    """Run dbt with the warehouse's settings in its environment; then the events, each table's
    rows (for a range of days: the rows of those days) and the charts as metadata."""
    wh = warehouse.get()
    # on Spark, dbt's own process (oa-dbt) starts the session: local mode admits one process
    holding = nullcontext() if wh.engine == "spark" else holding_warehouse()
    with warehouse.dbt_environment(), holding, \
            run_folder(context.op_execution_context.op.name, context.run.run_id) as folder:
        if wh.engine == "spark":
            from openaudience.core import spark

            spark.stop()  # an earlier step of this run may hold it
        invocation = dbt.cli(args, context=context, target_path=folder)
        events = list(invocation.stream())
        # still holding it: readers get this build's snapshot before any queued writer starts
        publish_snapshot(wh.settings)
    nodes = invocation.manifest["nodes"]
    relations: dict[str, tuple[str, str]] = {}
    for event in events:
        if isinstance(event, dg.Output | dg.AssetMaterialization):
            unique_id = event.metadata.get("unique_id")
            node = nodes.get(unique_id.value if unique_id else "", {})
            if node.get("config", {}).get("materialized") in TABLE_MATERIALIZATIONS:
                relations[node["unique_id"]] = (node["schema"], node["alias"])
    if days is None:
        counts = wh.row_counts(list(relations.values())) if relations else {}
    else:
        counts = {relation: _rows_in_days(wh, relation, days) for relation in relations.values()}
    catalog = Catalog(invocation.manifest)
    for event in events:
        unique_id = event.metadata.get("unique_id") if hasattr(event, "metadata") else None
        relation = relations.get(unique_id.value) if unique_id else None
        extra: dict[str, Any] = {}
        if relation and counts.get(relation) is not None:
            name = "dagster/row_count" if days is None else "rows_in_days"
            extra[name] = dg.MetadataValue.int(counts[relation])
        if relation and days is not None:
            extra["days"] = dg.MetadataValue.text(f"{days[0]} to {days[1]}")
        if relation:
            extra.update(_charts(context, wh, catalog, nodes[unique_id.value]))
        if extra:
            event = event.with_metadata({**event.metadata, **extra})
        yield event


@contextmanager
def run_folder(asset: str, run_id: str) -> Iterator[Path]:
    """dbt's target folder for one invocation, removed after it; the parse state is kept per asset.

    dagster-dbt gives each invocation a folder of its own under target/ (so runs side by side do
    not write one manifest) and leaves it there: a nightly schedule would add one a night. Each
    starts with the asset's last partial-parse state (`target/dagster/<asset>.msgpack`), so the
    next run with the same variables and profile parses only what changed, and the folder goes
    once the run's events are read. A folder left by a killed run is removed by the next run of
    the asset once it is a day old."""
    root = Path(os.environ.get("DBT_TARGET_PATH") or PROJECT_ROOT / "target") / "dagster"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{asset}-*"):
        with suppress(OSError):
            if stale.is_dir() and time.time() - stale.stat().st_mtime > 86_400:
                shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{asset}-{run_id[:8]}-", dir=root))
    state = root / f"{asset}.msgpack"
    with suppress(OSError):
        shutil.copyfile(state, folder / PARTIAL_PARSE)
    try:
        yield folder
        with suppress(OSError):  # the newest state wins; a reader never sees half a file
            kept = root / f".{folder.name}.msgpack"
            shutil.copyfile(folder / PARTIAL_PARSE, kept)
            os.replace(kept, state)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rows_in_days(wh, relation: tuple[str, str], days: tuple[str, str]) -> int:
    first, last = (dt.date.fromisoformat(d) for d in days)
    rows = wh.query(f"select count(*) from {qualified(*relation)} where stat_date between %s and %s",
                    [first, last])
    return int(rows[0][0])


def _charts(context: dg.AssetExecutionContext, wh, catalog: Catalog,
            node: Mapping[str, Any]) -> dict[str, Any]:
    """The model's charts as PNG metadata; a chart that cannot be drawn is reported, not fatal,
    because the model itself was built and tested."""
    try:
        return chart_metadata(wh, catalog, dict(node))
    except Exception as exc:  # noqa: BLE001 - logged and shown on the asset instead
        context.log.warning(f"charts for {node['name']} failed: {exc}")
        return {"chart_error": dg.MetadataValue.text(str(exc))}
