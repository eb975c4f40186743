"""The Dagster code location: it loads without running dbt or changing the environment; it shows
raw → staging → marts lineage, the nightly job and its 02:00 schedule, the GX checks, the
automation conditions that refresh audiences and model outputs (and none on deliveries), the
daily AIPL partitions; and the nightly job and an AIPL backfill really run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from openaudience.core.schema.raw import LOAD_ORDER, RAW_TABLES
from openaudience.core.settings import PROJECT_ROOT
from openaudience.raw.loading import load_file
from orchestration.resources import WarehouseResource, warehouse_resource
from tests.conftest import AS_OF

AIPL_KEY = dg.AssetKey(["marts", "aipl_daily"])
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def defs():
    """The definitions as `make ui` loads them, with the manifest prepared first as it does."""
    from openaudience.core.dbt import ensure_manifest
    from orchestration.definitions import build_definitions

    ensure_manifest()
    return build_definitions()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG", "DAGSTER_HOME"))}
    return {**env, **extra}


def test_importing_and_loading_the_code_location_runs_no_dbt_and_keeps_the_environment(defs, tmp_path):
    """`import orchestration.definitions` does nothing; loading it (what dg dev calls) reads the
    prepared manifest and files: dbt never started, os.environ untouched."""
    script = """
import os, subprocess, sys
popen = subprocess.Popen
def refuse(cmd, *args, **kwargs):
    if "dbt" in " ".join(map(str, cmd if isinstance(cmd, (list, tuple)) else [cmd])):
        raise AssertionError(f"dbt was started: {cmd}")
    return popen(cmd, *args, **kwargs)
subprocess.Popen = refuse
before = dict(os.environ)
import orchestration.definitions as location
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert "orchestration.defs.dbt.assets" not in sys.modules, "dbt assets built on import"
assert "dbt" not in sys.modules and "dagster_dbt" not in sys.modules
loaded = location.code_location()
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert loaded.resolve_job_def("nightly_refresh") is not None
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env=_clean_env(DAGSTER_HOME=str(tmp_path)))
    assert done.returncode == 0 and "clean" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_missing_manifest_is_a_message(monkeypatch, tmp_path):
    import openaudience.core.dbt as core_dbt
    from openaudience.core.errors import UserError
    from orchestration.definitions import build_definitions

    monkeypatch.setattr(core_dbt, "MANIFEST", tmp_path / "target" / "manifest.json")
    with pytest.raises(UserError, match=r"manifest.*missing.*make ui"):
        build_definitions()


def test_the_warehouse_resource_names_its_variables_and_never_holds_a_secret(monkeypatch):
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    env = {"OA_TARGET": "postgres", "OA_PG_DSN": "postgresql://oa:pa55word@db.example:5432/crm"}
    for key in [k for k in os.environ if k.startswith(("OA_", "PG"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    resource = warehouse_resource()
    assert isinstance(resource.pg_dsn, dg.EnvVar) and resource.pg_dsn.env_var_name == "OA_PG_DSN"
    assert isinstance(resource.target, dg.EnvVar) and resource.pg_password == ""

    seen = {}

    @dg.asset
    def probe(warehouse: WarehouseResource) -> None:
        settings = warehouse.settings()
        seen.update(target=settings.target, user=settings.pg_env["PGUSER"], db=settings.pg_env["PGDATABASE"],
                    password=settings.pg_env["PGPASSWORD"])

    definitions = dg.Definitions(assets=[probe], resources={"warehouse": resource})
    snapshot = serialize_value(RepositorySnap.from_def(definitions.get_repository_def()))
    assert "OA_PG_DSN" in snapshot and "pa55word" not in snapshot  # what the UI is sent
    assert dg.materialize([probe], resources={"warehouse": resource}).success  # read when it runs
    assert seen == {"target": "postgres", "user": "oa", "db": "crm", "password": "pa55word"}
    # the CLI's settings (load_settings) and an empty resource agree: both follow the environment
    assert WarehouseResource().settings().pg_env == resource.settings().pg_env


def test_definitions_load_with_job_schedule_and_checks(defs):
    job = defs.resolve_job_def("nightly_refresh")
    assert job is not None
    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    graph = defs.resolve_asset_graph()
    check_keys = {k.name for k in graph.asset_check_keys}
    for table in RAW_TABLES:
        assert f"gx_suite_{table}" in check_keys


def test_lineage_runs_from_raw_tables_to_marts(defs):
    graph = defs.resolve_asset_graph()
    user_tags = dg.AssetKey(["marts", "user_tags"])
    upstream = graph.get(user_tags).parent_keys
    assert dg.AssetKey(["intermediate", "int_users_ids_pivoted"]) in upstream

    def ancestors(key, seen=None):
        seen = seen if seen is not None else set()
        for parent in graph.get(key).parent_keys:
            if parent not in seen:
                seen.add(parent)
                ancestors(parent, seen)
        return seen

    everything_above = ancestors(user_tags)
    for table in ("customers", "orders", "order_items", "behavior_events", "identity_links"):
        assert dg.AssetKey(["raw", table]) in everything_above
    assert dg.AssetKey(["staging", "stg_shop__customers"]) in everything_above
    assert dg.AssetKey(["marts", "dim_identities"]) in everything_above
    assert graph.get(user_tags).group_name == "marts"


def test_refreshes_are_automation_conditions_not_sensors_and_cadence_jobs(defs):
    from openaudience.segments.source import load_project
    from orchestration.definitions import AUTOMATION_SENSOR

    sensors = {s.name: s for s in defs.sensors}
    assert "audiences_after_nightly" not in sensors and "model_outputs_after_nightly" not in sensors
    jobs = {j.name for j in defs.jobs}
    assert not {j for j in jobs if j in ("model_outputs", "audiences_daily", "audiences_hourly")
                or j.startswith("audiences_cron_")}
    assert {"audiences_refresh_all", "audiences_from_models", "nightly_refresh"} <= jobs  # by hand, CLI
    assert not [s.name for s in defs.schedules if s.name.startswith("audiences_")]

    graph = defs.resolve_asset_graph()
    project = load_project()
    for name in project.order:
        condition = graph.get(dg.AssetKey(["audiences", name])).automation_condition
        refresh = project.audiences[name].refresh
        if refresh == "daily":
            assert "refresh: daily" in condition.get_label(), name
        elif refresh != "manual":
            assert condition is not None and refresh in str(condition.get_label()), name
    weekly = graph.get(dg.AssetKey(["audiences", "high_value_rfm"])).automation_condition
    assert "0 3 * * 1" in weekly.get_label()
    for key in (["ml", "repurchase_scores"], ["ml", "recommendations"]):
        assert graph.get(dg.AssetKey(key)).automation_condition.get_label() == "eager"

    # one sensor evaluates them, running from the start; it targets no delivery, none has a condition
    sensor = sensors[AUTOMATION_SENSOR]
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(graph)
    assert dg.AssetKey(["audiences", "top_spenders"]) in targeted
    deliveries = {k for k in graph.get_all_asset_keys() if k.path[0] == "deliveries"}
    assert deliveries and not targeted & deliveries
    assert all(graph.get(k).automation_condition is None for k in deliveries)
    # what sends messages starts stopped
    assert sensors["deliveries_on_new_version"].default_status == dg.DefaultSensorStatus.STOPPED
    sending = [s for s in defs.schedules if s.name.startswith("deliver_")]
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in sending)


def test_conditions_refresh_daily_audiences_after_their_inputs_and_cron_ones_on_their_cron(defs):
    """Evaluated as the sensor does: after user_tags updates, the daily audiences (and those they
    read) are requested; on Monday 03:00 the weekly one too; never a delivery; not twice."""
    from openaudience.segments.source import load_project
    from orchestration.defs.audiences.assets import refresh_cadences

    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    cadences = refresh_cadences(load_project())
    daily = {dg.AssetKey(["audiences", n]) for n, c in cadences.items() if "daily" in c}
    scheduled = {dg.AssetKey(["audiences", n]) for n in cadences}
    with dg.instance_for_test() as instance:
        def report(key, partition=None):
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))

        for key in keys:  # everything built once: nothing missing
            report(key, "2026-06-29" if key == AIPL_KEY else None)

        def evaluate(hour, minute, cursor=None):
            return dg.evaluate_automation_conditions(
                defs=defs, instance=instance, cursor=cursor,
                evaluation_time=dt.datetime(2026, 6, 29, hour, minute, tzinfo=SHANGHAI))  # a Monday

        first = evaluate(2, 30)
        assert first.total_requested == 0
        report(dg.AssetKey(["marts", "user_tags"]))  # the nightly refresh rebuilt it
        second = evaluate(3, 30, first.cursor)
        requested = {k for k in keys if second.get_num_requested(k)}
        assert daily <= requested
        assert dg.AssetKey(["audiences", "high_value_rfm"]) in requested  # refresh: "0 3 * * 1"
        audiences = {k for k in requested if k.path[0] == "audiences"}
        assert audiences <= scheduled  # manual ones only when asked
        assert not [k for k in requested if k.path[0] in ("deliveries", "marts", "raw")]
        assert dg.AssetKey(["ml", "repurchase_scores"]) not in requested  # its inputs did not change
        third = evaluate(3, 40, second.cursor)
        assert third.total_requested == 0  # requested once, not on every tick
        report(dg.AssetKey(["marts", "ml_repurchase_features"]))
        fourth = evaluate(3, 50, third.cursor)
        assert fourth.get_num_requested(dg.AssetKey(["ml", "repurchase_scores"])) == 1


def test_aipl_daily_is_partitioned_by_day_and_the_nightly_run_computes_its_day(defs):
    graph = defs.resolve_asset_graph()
    partitions = graph.get(AIPL_KEY).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.timezone == "Asia/Shanghai" and partitions.start.date() == dt.date(2025, 1, 1)
    assert graph.get(dg.AssetKey(["marts", "user_tags"])).partitions_def is None  # only aipl_daily
    assert defs.resolve_assets_def(AIPL_KEY).backfill_policy == dg.BackfillPolicy.single_run()
    main = defs.resolve_assets_def(dg.AssetKey(["marts", "user_tags"]))
    assert AIPL_KEY not in main.keys
    assert AIPL_KEY in defs.resolve_job_def("nightly_refresh").asset_layer.selected_asset_keys
    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 6, 29, 2, 0, tzinfo=SHANGHAI))
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-06-29"


@pytest.mark.slow
def test_an_aipl_backfill_of_two_days_is_one_dbt_run_with_a_materialization_per_day(built_engines, defs,
                                                                                    monkeypatch, tmp_path):
    """A range of AIPL partitions (what a Dagster backfill runs, BackfillPolicy.single_run) is one
    step and one `dbt build` with aipl_start/aipl_end; each day gets its materialization."""
    from tests.conftest import point_process_at

    target = built_engines["duckdb"]
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    aipl = defs.resolve_assets_def(AIPL_KEY)
    assert aipl.backfill_policy == dg.BackfillPolicy.single_run()
    last = dt.date.fromisoformat(AS_OF)
    first = last - dt.timedelta(days=1)
    before = target.warehouse.query("select stat_date, count(*) from marts.aipl_daily "
                                    "group by stat_date order by stat_date")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize(  # with the resources the code location binds
            [aipl], instance=instance,
            tags={"dagster/asset_partition_range_start": first.isoformat(),
                  "dagster/asset_partition_range_end": last.isoformat()})
        assert result.success
        events = result.get_asset_materialization_events()
        days = sorted(e.materialization.partition for e in events if e.asset_key == AIPL_KEY)
        assert days == [first.isoformat(), last.isoformat()]
        assert len(result.get_step_success_events()) == 1
        commands = [e.message for e in instance.all_logs(result.run_id)
                    if e.message and "Running dbt command" in e.message]
        assert len(commands) == 1, commands
        assert json.dumps({"as_of": last.isoformat(), "aipl_start": first.isoformat(),
                           "aipl_end": last.isoformat()}) in commands[0], commands
        meta = next(e.materialization.metadata for e in events if e.asset_key == AIPL_KEY)
        assert meta["days"].value == f"{first} to {last}"
        in_days = sum(n for day, n in before if str(day) in (str(first), str(last)))
        assert meta["rows_in_days"].value == in_days > 0
    after = target.warehouse.query("select stat_date, count(*) from marts.aipl_daily "
                                   "group by stat_date order by stat_date")
    assert after == before  # the two days recomputed, the others kept

    # `oa aipl backfill` reports its days the same way (orchestration.observe.report_aipl_days)
    from orchestration.observe import report_aipl_days

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "cli"))
    notes: list[str] = []
    assert report_aipl_days(first, last, warn=notes.append) == 2, notes
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(AIPL_KEY, limit=5).records
    assert sorted(r.partition_key for r in records) == [first.isoformat(), last.isoformat()]
    assert all(r.asset_materialization.metadata["source"].value == "cli" for r in records)
    assert records[0].asset_materialization.metadata["rows_in_days"].value > 0


@pytest.fixture
def loaded(target, small_demo):
    for table in LOAD_ORDER:
        load_file(target.warehouse, table, small_demo / f"{table}.parquet")
    return target


@pytest.mark.slow
@pytest.mark.parametrize("target", ["duckdb"], indirect=True)
def test_nightly_job_runs_checks_and_builds(loaded, tmp_path):
    """`oa nightly` on DuckDB, the default. On PostgreSQL, what the job runs is tested where it
    lives: the dbt build (`built_engines`), the GX checks (below) and the charts' queries
    (test_the_charts_of_the_rfm_and_aipl_assets_read_either_engine)."""
    env = {**loaded.env, "DAGSTER_HOME": str(tmp_path / "dagster")}
    folders = Path(env.get("DBT_TARGET_PATH") or PROJECT_ROOT / "target") / "dagster"
    before = set(folders.iterdir()) if folders.exists() else set()
    from tests.support.hostile import run_main

    done = run_main(["nightly"], env)  # `oa nightly` through the CLI's main, in this process
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "nightly_refresh succeeded" in done.stdout
    assert "0 failed" in done.stdout
    assert loaded.warehouse.row_count("marts", "user_tags") > 2_000
    _assert_chart_metadata(tmp_path / "dagster")
    # each dbt invocation's target folder is gone; each asset's parse state is kept for the next
    assert {p for p in folders.iterdir() if p.is_dir()} <= before
    assert {"aipl_days.msgpack", "warehouse_models.msgpack"} <= {p.name for p in folders.iterdir()}
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    try:  # the nightly run computes today's AIPL day, its partition
        event = instance.get_latest_materialization_event(AIPL_KEY)
        assert event.asset_materialization.partition == dt.datetime.now(SHANGHAI).date().isoformat()
    finally:
        instance.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_the_charts_of_the_rfm_and_aipl_assets_read_either_engine(built_engines, engine):
    """The queries behind the RFM and AIPL assets' chart metadata (what the nightly job attaches
    to them) on each engine."""
    import base64
    import re

    from openaudience.analysis.catalog import Catalog
    from orchestration.metadata import chart_metadata

    catalog = Catalog.load()
    nodes = {n["name"]: n for n in catalog.manifest["nodes"].values() if n["resource_type"] == "model"}
    wh = built_engines[engine].warehouse
    for name, field in (("rfm_default", "rfm_segments_chart"), ("rfm_lifetime", "rfm_mf_r_chart"),
                        ("aipl_daily", "aipl_default_trend_chart")):
        metadata = chart_metadata(wh, catalog, nodes[name])
        match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", metadata[field].value)
        assert match, (name, metadata[field].value[:200])
        assert base64.b64decode(match.group(1))[:8] == b"\x89PNG\r\n\x1a\n", name
    assert metadata["aipl_default_flow_chart"]


def _assert_chart_metadata(home):
    """The RFM and AIPL assets carry their charts as PNG images in the run's metadata."""
    import base64
    import re

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        for key, field in ((["marts", "rfm_default"], "rfm_segments_chart"),
                           (["marts", "rfm_lifetime"], "rfm_mf_r_chart"),
                           (["marts", "aipl_daily"], "aipl_default_trend_chart")):
            event = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert event is not None, key
            metadata = event.asset_materialization.metadata
            assert "chart_error" not in metadata, metadata.get("chart_error")
            text = metadata[field].value
            match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
            assert match, (key, text[:200])
            png = base64.b64decode(match.group(1))
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, key
    finally:
        instance.dispose()


@pytest.mark.slow
def test_a_gx_check_fails_when_a_raw_table_breaks_its_contract(loaded):
    from openaudience.raw.checks import validate_table

    wh = loaded.warehouse
    assert validate_table(wh, RAW_TABLES["orders"]).passed
    with wh.connect() as conn:
        wh.execute(conn, "update raw.orders set total_amount = -1 where order_id in "
                         "(select min(order_id) from raw.orders)")
        wh.execute(conn, "insert into raw.orders select * from raw.orders where order_id in "
                         "(select max(order_id) from raw.orders)")
    outcome = validate_table(wh, RAW_TABLES["orders"])
    assert not outcome.passed
    assert outcome.by_expectation == {"expect_column_values_to_be_between": 1,
                                      "expect_column_values_to_be_unique": 2}
