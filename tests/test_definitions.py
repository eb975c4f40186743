"""The Dagster code location: it loads, shows raw → staging → marts lineage, the nightly job and
its 02:00 schedule, and the GX checks; and the nightly job really runs on both engines."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from openaudience.core.schema.raw import LOAD_ORDER, RAW_TABLES
from openaudience.core.settings import PROJECT_ROOT
from openaudience.raw.loading import load_file
from orchestration.definitions import defs
from tests.conftest import OA

pytestmark = pytest.mark.slow  # runs the nightly job, which runs dbt build

def test_definitions_load_with_job_schedule_and_checks():
    job = defs.resolve_job_def("nightly_refresh")
    assert job is not None
    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    graph = defs.resolve_asset_graph()
    check_keys = {k.name for k in graph.asset_check_keys}
    for table in RAW_TABLES:
        assert f"gx_suite_{table}" in check_keys


def test_lineage_runs_from_raw_tables_to_marts():
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


def test_dagster_can_load_the_code_location_like_the_ui_does(tmp_path):
    import shutil

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "orchestration.definitions"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def loaded(target, small_demo):
    for table in LOAD_ORDER:
        load_file(target.warehouse, table, small_demo / f"{table}.parquet")
    return target


def test_nightly_job_runs_checks_and_builds_on_each_engine(loaded, tmp_path):
    env = {**loaded.env, "DAGSTER_HOME": str(tmp_path / "dagster")}
    done = subprocess.run([OA, "nightly"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "nightly_refresh succeeded" in done.stdout
    assert "0 failed" in done.stdout
    assert loaded.warehouse.row_count("marts", "user_tags") > 2_000
    _assert_chart_metadata(tmp_path / "dagster")


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


def test_the_ui_serves_the_asset_graph_schedule_and_gx_checks(tmp_path):
    """What `make ui` shows, asked of a real dagster-webserver over its GraphQL API."""
    import json
    import shutil
    import time
    import urllib.request

    from tests.support.postgres import free_port

    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "OA_HOME": str(tmp_path / "oa")}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-m", "orchestration.definitions",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = ("{ repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name "
             "cronSchedule } jobs { name } } } } assetNodes { assetKey { path } dependencyKeys "
             "{ path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }")
    try:
        deadline = time.monotonic() + 120
        data = None
        while time.monotonic() < deadline and data is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                    headers={"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    data = json.load(response)["data"]
            except OSError:
                assert server.poll() is None, "dagster-webserver exited"
                time.sleep(1)
        assert data is not None, "dagster-webserver did not answer within 120 s"
    finally:
        server.terminate()
        server.wait(timeout=30)
    repo = data["repositoriesOrError"]["nodes"][0]
    assert {"name": "nightly_refresh_schedule", "cronSchedule": "0 2 * * *"} in repo["schedules"]
    assert {"name": "nightly_refresh"} in repo["jobs"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"path": ["raw", "customers"]} in nodes["staging/stg_shop__customers"]["dependencyKeys"]
    raw_checks = [c["name"] for c in nodes["raw/customers"]["assetChecksOrError"]["checks"]]
    assert raw_checks == ["gx_suite_customers"]
    assert "marts/user_tags" in nodes
