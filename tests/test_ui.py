"""The Dagster UI as an operator sees it, in headless Chromium: the asset graph, an audience's
latest version after `oa audience build` at the command line (the CLI reports to the instance)
and its automation condition, the daily partitions of aipl_daily, and the automation page: the
automation sensor that refreshes audiences and model outputs running, the sending sensors and
schedules stopped."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import PROJECT_ROOT
from tests.support.postgres import free_port

WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))


@pytest.fixture
def ui(built_engines, tmp_path):
    """The webserver on the built DuckDB warehouse, with its own instance; (url, target, env)."""
    target = built_engines["duckdb"]
    env = {**target.env, **target.settings.dbt_env(), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster" / "dagster.yaml")  # as `make ui`
    port = free_port()
    log = open(tmp_path / "webserver.log", "w")
    workspace = tmp_path / "workspace.yaml"  # the code location as `make ui` (dg dev) names it
    workspace.write_text("load_from:\n  - python_module:\n      module_name: orchestration.definitions\n"
                         "      location_name: openaudience\n")
    proc = subprocess.Popen([WEBSERVER, "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
                            env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the webserver did not start:\n"
                                     + (tmp_path / "webserver.log").read_text()[-4000:])
            time.sleep(1)
        yield url, target, env
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _browser(p):
    chromium = shutil.which("chromium")
    assert chromium, "the UI test needs Chromium (Debian package 'chromium'); .ci/run installs it"
    return p.chromium.launch(executable_path=chromium, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def _toggles(page) -> dict[str, bool]:
    """Each automation's on/off switch: a row's selection box is followed by its switch."""
    boxes = page.evaluate("""() => [...document.querySelectorAll('input[type=checkbox]')].map(i => {
        const row = i.parentElement.parentElement.parentElement;
        return [i.checked, row ? row.innerText.trim().split(/\\s+/)[0] : ''];
    })""")
    out = {}
    for (_, name), (state, rest) in zip(boxes, boxes[1:], strict=False):
        if name and not rest and name not in ("Select", "Sign"):
            out[name] = state
    return out


def test_the_ui_shows_the_graph_a_cli_build_automation_partitions_and_stopped_sending(ui):
    from playwright.sync_api import sync_playwright

    url, target, env = ui
    done = subprocess.run([str(Path(sys.executable).with_name("oa")), "audience", "build",
                           "shanghai_big_spenders", "--as-of", "2026-06-29"],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "note:" not in done.stderr, done.stderr  # the report reached the instance
    version = int(re.search(r"shanghai_big_spenders\s+│\s+(\d+)", done.stdout).group(1))

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            # the asset graph of the audiences group: the audience and what it reads
            page.goto(f"{url}/locations/openaudience/asset-groups/audiences", wait_until="networkidle")
            page.get_by_text("Latest event", exact=True).first.wait_for(timeout=60_000)
            audiences = [f.stem for f in (PROJECT_ROOT / "audiences").glob("*.yml")]
            shown = [name for name in audiences if page.get_by_text(name, exact=True).count()]
            assert len(shown) >= 5, shown  # the graph draws the nodes in view

            # the audience's page: the version the CLI built, reported with source cli
            page.goto(f"{url}/assets/audiences/shanghai_big_spenders", wait_until="networkidle")
            page.get_by_text("Latest materialization", exact=False).first.wait_for(timeout=60_000)
            body = page.locator("body")
            body.get_by_text("definition_hash", exact=False).first.wait_for(timeout=60_000)
            text = body.inner_text()
            shown = dict(re.findall(r"\n(\w+)\s+\w{3} \d{1,2}, \d{1,2}:\d{2} [AP]M\s+(\S+)", text))
            assert shown["version"] == str(version) and shown["source"] == "cli", text[:3000]
            assert re.search(r"mobile\s+1[3-9][0-9]\*{4}[0-9]{4}", text)  # the preview, masked
            inline = page.locator('img[src^="data:image/svg+xml"]')  # the size line, no click needed
            assert inline.count() >= 1 and inline.first.is_visible()

            # the audience's refresh is an automation condition, evaluated by the automation sensor
            details = page.get_by_text("Automation condition", exact=True).first
            details.wait_for(timeout=60_000)
            side = body.inner_text()
            assert "refresh: daily (after its inputs upda" in side, side[-3000:]
            assert "audience_and_model_refresh" in side

            # aipl_daily: one partition per day, from the first day to today in OA_TIMEZONE
            page.goto(f"{url}/assets/marts/aipl_daily?view=partitions", wait_until="networkidle")
            page.get_by_text(re.compile(r"\d+ Partitions Selected")).first.wait_for(timeout=60_000)
            text = body.inner_text()
            today = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
            days = (today - dt.date(2025, 1, 1)).days + 1
            assert f"{days} Partitions Selected" in text and "2025-01-01" in text, text[:3000]
            assert today.isoformat() in text

            # automation: the nightly schedule and the automation sensor run; what sends messages
            # starts stopped
            page.goto(f"{url}/automation", wait_until="networkidle")
            page.get_by_text("nightly_refresh_schedule", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("Automation condition sensor", exact=True).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)  # the toggles' states load after the names
            assert _toggles(page) == {
                "audience_and_model_refresh": True, "deliveries_on_new_version": False,
                "delivery_receipts_sensor": True, "events_ingest_sensor": True, "journeys_due": True,
                "nightly_refresh_schedule": True, "recommend_training_schedule": True,
                "repurchase_training_schedule": True}
            assert errors == [], errors
        finally:
            browser.close()
    assert os.path.isdir(env["DAGSTER_HOME"])
    _assert_graphql_answers(url)


def _assert_graphql_answers(url: str) -> None:
    """What the UI reads, asked of the webserver's GraphQL API: the code location loaded as the
    UI loads it (the workspace of `make ui`), with the nightly job and schedule, the lineage from
    raw tables and the GX checks on them."""
    import json

    query = ("{ repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name "
             "cronSchedule } jobs { name } } } } assetNodes { assetKey { path } dependencyKeys "
             "{ path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }")
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.load(response)["data"]
    repo = data["repositoriesOrError"]["nodes"][0]
    assert {"name": "nightly_refresh_schedule", "cronSchedule": "0 2 * * *"} in repo["schedules"]
    assert {"name": "nightly_refresh"} in repo["jobs"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"path": ["raw", "customers"]} in nodes["staging/stg_shop__customers"]["dependencyKeys"]
    raw_checks = [c["name"] for c in nodes["raw/customers"]["assetChecksOrError"]["checks"]]
    assert raw_checks == ["gx_suite_customers"]
    assert "marts/user_tags" in nodes


def test_a_cli_load_is_a_materialization_of_its_raw_asset(small_demo, tmp_path):
    import dagster as dg

    from tests.conftest import make_target
    from tests.support.hostile import run_main

    target = make_target("duckdb", tmp_path, None, "")
    env = {**target.env, "DAGSTER_HOME": str(tmp_path / "dagster")}
    for mode in ("append", "replace"):
        done = run_main(["load", "customers", str(small_demo / "customers.parquet"), "--mode", mode], env)
        assert done.returncode == 0 and "note:" not in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]
    rows = target.warehouse.query("select count(*) from raw.customers")[0][0]
    os.environ["DAGSTER_HOME"], saved = env["DAGSTER_HOME"], os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey(["raw", "customers"]), limit=5).records
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = saved
    assert len(records) == 2  # one per load, newest first
    meta = records[0].asset_materialization.metadata
    assert meta["source"].value == "cli" and meta["mode"].value == "replace"
    assert meta["rows_loaded"].value == meta["dagster/row_count"].value == rows > 0
