"""dbt models, seeds and tests as Dagster assets and asset checks, over the parsed manifest."""


from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from openaudience.analysis.catalog import Catalog
from openaudience.core.dbt import ensure_manifest, holding_warehouse
from openaudience.core.schema.raw import RAW_SCHEMA
from openaudience.core.warehouse import publish_snapshot
from orchestration.dbt_project import DBT_PROJECT
from orchestration.metadata import chart_metadata
from orchestration.resources import WarehouseResource

TABLE_MATERIALIZATIONS = {"table", "incremental", "seed", "connected_components"}

ensure_manifest()


class OpenAudienceTranslator(DagsterDbtTranslator):
    """Sources are the raw assets ``raw/<table>``; models are grouped by layer."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            # the delivery tables are written by the delivery assets, not loaded as raw files
            schema = "delivery" if dbt_resource_props["source_name"] == "delivery" else RAW_SCHEMA
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


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path,
    dagster_dbt_translator=TRANSLATOR,
    project=DBT_PROJECT,
    name="warehouse_models",
)
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                     warehouse: WarehouseResource):
    """dbt build over the selected models: seeds, models and their data and unit tests.

    Events are held until dbt exits, because an embedded DuckDB file cannot be read while the
    dbt process writes it; then each table gets its row count, and the RFM models and
    aipl_daily their charts (PNG).
    """
    wh = warehouse.get()
    with holding_warehouse():  # another process may hold the embedded file: wait for it
        invocation = dbt.cli(["build"], context=context)
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
    counts = wh.row_counts(list(relations.values())) if relations else {}
    catalog = Catalog(invocation.manifest)
    for event in events:
        unique_id = event.metadata.get("unique_id") if hasattr(event, "metadata") else None
        relation = relations.get(unique_id.value) if unique_id else None
        extra: dict[str, Any] = {}
        if relation and counts.get(relation) is not None:
            extra["dagster/row_count"] = dg.MetadataValue.int(counts[relation])
        if relation:
            extra.update(_charts(context, wh, catalog, nodes[unique_id.value]))
        if extra:
            event = event.with_metadata({**event.metadata, **extra})
        yield event


def _charts(context: dg.AssetExecutionContext, wh, catalog: Catalog,
            node: Mapping[str, Any]) -> dict[str, Any]:
    """The model's charts as PNG metadata; a chart that cannot be drawn is reported, not fatal,
    because the model itself was built and tested."""
    try:
        return chart_metadata(wh, catalog, dict(node))
    except Exception as exc:  # noqa: BLE001 - logged and shown on the asset instead
        context.log.warning(f"charts for {node['name']} failed: {exc}")
        return {"chart_error": dg.MetadataValue.text(str(exc))}
