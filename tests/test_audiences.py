"""The audience engine on both engines: building the examples saves exactly what the pandas
evaluator of test_segments selects (set operations, uploads, tables, limits included), the batch
and the one-query-per-audience paths agree, versions are kept and pruned, a failed build changes
nothing, and the CLI (diff, explain, export, preview, list), the Dagster assets and the audience
report do what they say."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from openaudience.core.errors import UserError
from openaudience.segments.engine import MEMBERS, build, versions
from openaudience.segments.source import AUDIENCE_DIR, load_project
from tests.conftest import AS_OF, OA, point_process_at
from tests.test_segments import CATALOG, PROJECT, TODAY, Evaluator

ENGINES = ["duckdb", "postgres"]


def _saved(wh, name: str, version: int | None = None) -> dict[str, str]:
    v = version or versions(wh, name)[0]["version"]
    rows = wh.query(f"select one_id, id_value from {MEMBERS} where audience = %s and version = %s",
                    [name, v])
    return dict(rows)


@pytest.fixture(scope="module")
def examples_built(built_engines):
    """Every example built twice on both engines: in one batch, then one query per audience."""
    reports = {}
    for engine, target in built_engines.items():
        batch = build(PROJECT, PROJECT.order, TODAY, wh=target.warehouse)
        single = build(PROJECT, PROJECT.order, TODAY, wh=target.warehouse, batch=False)
        reports[engine] = (batch, single)
    return reports


@pytest.mark.parametrize("engine", ENGINES)
def test_built_examples_hold_what_the_evaluator_selects(built_engines, examples_built, engine):
    target = built_engines[engine]
    wh = target.warehouse
    ev = Evaluator(target)
    tags = ev.tags
    batch, _ = examples_built[engine]
    by_name = {r.audience: r for r in batch.results}
    sizes = {}
    for name in PROJECT.order:  # dependency order, so the evaluator has what set operations read
        audience = PROJECT.audiences[name]
        expected = ev.save(audience)
        saved = _saved(wh, name, by_name[name].version)
        assert set(saved) == expected, name
        id_col = "one_id" if audience.id_type == "one_id" else audience.id_type
        assert all(tags.at[one_id, id_col] == value for one_id, value in saved.items()), name
        matched = ev.members(audience)
        r = by_name[name]
        assert (r.size, r.matched) == (len(expected), len(matched)), name
        assert r.dropped == sum(1 for m in matched if pd.isna(tags.at[m, id_col])), name
        sizes[name] = r.size
    assert sum(1 for n in sizes.values() if n > 0) == len(sizes), sizes
    assert sizes["top_spenders"] == 500 and sizes["loyalty_survey_sample"] <= 200


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_and_one_query_per_audience_agree(built_engines, examples_built, engine):
    batch, single = examples_built[engine]
    layers = len(PROJECT.layers(PROJECT.order))
    assert batch.passes == layers < len(PROJECT.order)
    assert single.passes == len(PROJECT.order)
    for b, s in zip(batch.results, single.results, strict=True):
        assert (s.audience, s.version, s.size) == (b.audience, b.version + 1, b.size)
        assert (s.added, s.removed) == (0, 0), s.audience


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / f"{name}.yml").write_text(text)


@pytest.mark.parametrize("engine", ENGINES)
def test_versions_past_snapshots_lose_members_but_keep_statistics(built_engines, tmp_path, engine):
    wh = built_engines[engine].warehouse
    _write(tmp_path, {
        "snap_s": "name: snap_s\nsnapshots: 2\nwhere:\n  tag: {name: city, in: [Shanghai]}\n",
    })
    project = load_project(tmp_path, CATALOG)
    for _ in range(3):
        build(project, ["snap_s"], TODAY, wh=wh)
    every = versions(wh, "snap_s", kept_only=False)
    assert [(v["version"], v["kept"]) for v in every][:3] == [(3, True), (2, True), (1, False)]
    assert every[2]["size"] == every[0]["size"] > 0
    assert not _saved(wh, "snap_s", 1)
    # a version another audience names stays, whatever snapshots says
    _write(tmp_path, {"snap_p": "name: snap_p\nwhere:\n  audience: {name: snap_s, version: 3}\n"})
    project = load_project(tmp_path, CATALOG)
    build(project, ["snap_s", "snap_s", "snap_p"], TODAY, wh=wh)
    build(project, ["snap_s"], TODAY, wh=wh)
    build(project, ["snap_p"], TODAY, wh=wh)
    kept = [v["version"] for v in versions(wh, "snap_s")]
    assert kept == [5, 4, 3]
    assert versions(wh, "snap_p")[0]["size"] == every[0]["size"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_build_changes_nothing(built_engines, tmp_path, engine):
    wh = built_engines[engine].warehouse
    _write(tmp_path, {
        "fail_a": "name: fail_a\nwhere:\n  tag: {name: city, in: [Shanghai]}\n",
        "fail_b": "name: fail_b\nwhere:\n  all:\n    - audience: {name: fail_a}\n"
                  "    - table: {name: reference.no_such_table, id_type: member_id}\n",
    })
    project = load_project(tmp_path, CATALOG)
    with pytest.raises(UserError, match="table reference.no_such_table does not exist"):
        build(project, project.order, TODAY, wh=wh)
    assert versions(wh, "fail_a", kept_only=False) == []  # layer one was rolled back with the rest
    with wh.connect() as conn:
        wh.execute(conn, "create table reference.dup_guests (user_unique_id varchar(20))")
        wh.execute(conn, "insert into reference.dup_guests values ('M00000001'), ('M00000001'), (null)")
    try:
        _write(tmp_path, {"fail_b": "name: fail_b\nwhere:\n  table: {name: reference.dup_guests, "
                                    "id_type: member_id}\n"})
        project = load_project(tmp_path, CATALOG)
        with pytest.raises(UserError, match=r"user_unique_id must be unique and never NULL "
                                            r"\(1 NULL, 1 duplicate\)"):
            build(project, ["fail_b"], TODAY, wh=wh)
    finally:
        with wh.connect() as conn:
            wh.execute(conn, "drop table reference.dup_guests")


def _diff_counts(text: str) -> tuple[int, int]:
    match = re.search(r"\+([\d,]+) −([\d,]+)", text)
    assert match, text
    return int(match[1].replace(",", "")), int(match[2].replace(",", ""))


@pytest.mark.parametrize("engine", ENGINES)
def test_diff_shows_an_edited_example_before_any_build(built_engines, examples_built, engine):
    target = built_engines[engine]
    ev = Evaluator(target)
    name = "shanghai_big_spenders"
    path = AUDIENCE_DIR / f"{name}.yml"
    original = path.read_text()
    old = set(_saved(target.warehouse, name))
    before = len(versions(target.warehouse, name, kept_only=False))
    try:
        path.write_text(original.replace('">=": 1000', '">=": 300'))
        edited = load_project(AUDIENCE_DIR, CATALOG).audiences[name]
        new = ev.save(edited)  # reads no other audience
        assert new != old
        done = target.oa("audience", "diff", name, "--as-of", AS_OF)
        assert done.returncode == 0, done.stderr
        assert _diff_counts(done.stdout) == (len(new - old), len(old - new))
        assert f"({len(old):,} → {len(new):,} members)" in " ".join(done.stdout.split())
        done = target.oa("audience", "diff", name, "--against", "HEAD", "--as-of", AS_OF)
        assert done.returncode == 0, done.stderr
        assert '+    - tag: {name: spend_90d, ">=": 300}' in done.stdout
        assert _diff_counts(done.stdout) == (len(new - old), len(old - new))
        done = target.oa("audience", "diff", name, "--against", "no-such-rev")
        assert done.returncode == 2 and "--against no-such-rev:" in done.stderr
    finally:
        path.write_text(original)
    assert len(versions(target.warehouse, name, kept_only=False)) == before  # nothing was saved


@pytest.mark.parametrize("engine", ENGINES)
def test_explain_marks_every_condition_for_one_person(built_engines, examples_built, engine):
    target = built_engines[engine]
    name = "lapsed_app_buyers"
    members = set(_saved(target.warehouse, name))
    everyone = [r[0] for r in target.warehouse.query("select one_id from marts.user_tags "
                                                     "where oaid is not null order by one_id")]
    inside, outside = sorted(members)[0], next(p for p in everyone if p not in members)
    for person, verdict in ((inside, "meets"), (outside, "does not meet")):
        done = target.oa("audience", "explain", name, person, "--as-of", AS_OF)
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stdout.splitlines() if line.startswith(("✓", "✗"))]
        assert len(lines) == 5  # all, three children, and the behaviour under not
        assert lines[0].startswith("✓" if verdict == "meets" else "✗")
        assert lines[3].startswith("✓") != lines[4].startswith("✓")  # not: is the complement
        assert f"{person} {verdict} the conditions of {name}" in " ".join(done.stdout.split())
    done = target.oa("audience", "explain", name, "nobody", "--as-of", AS_OF)
    assert done.returncode == 2 and "no person with one_id 'nobody'" in done.stderr
    city = target.warehouse.query("select city from marts.user_tags where one_id = %s", [outside])[0][0]
    done = target.oa("audience", "explain", "shanghai_big_spenders", outside, "--as-of", AS_OF)
    assert done.returncode == 0, done.stderr
    shown = "NULL" if city is None else repr(city)
    expected = f"tag city in ['Shanghai', 'Hangzhou'] [city = {shown}]"
    assert expected in " ".join(done.stdout.split())  # rich wraps long lines


@pytest.mark.parametrize("engine", ENGINES)
def test_export_writes_plain_or_hashed_ids(built_engines, examples_built, engine, tmp_path):
    target = built_engines[engine]
    name = "high_value_rfm"
    saved = _saved(target.warehouse, name)
    for hash_name in ("none", "md5", "sha256"):
        out = tmp_path / f"{hash_name}.csv"
        done = target.oa("audience", "export", name, "--hash", hash_name, "--out", str(out))
        assert done.returncode == 0, done.stderr
        rows = list(csv.reader(out.open()))
        assert rows[0] == ["email" if hash_name == "none" else f"email_{hash_name}"]
        digest = {"md5": hashlib.md5, "sha256": hashlib.sha256}.get(hash_name)
        expected = {digest(v.encode()).hexdigest() if digest else v for v in saved.values()}
        assert {r[0] for r in rows[1:]} == expected
    out = tmp_path / "mobile.csv"
    done = target.oa("audience", "export", name, "--id-type", "mobile", "--out", str(out))
    assert done.returncode == 0, done.stderr
    mobiles = dict(target.warehouse.query("select one_id, mobile from marts.user_tags"))
    expected = {mobiles[o] for o in saved if mobiles[o] is not None}
    assert {r[0] for r in list(csv.reader(out.open()))[1:]} == expected
    done = target.oa("audience", "export", name, "--hash", "sha1", "--out", str(tmp_path / "x.csv"))
    assert done.returncode == 2 and "--hash 'sha1' is not one of none, md5, sha256" in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_preview_count_and_list(built_engines, examples_built):
    target = built_engines["duckdb"]
    done = target.oa("audience", "preview", "store_event_guests", "--rows", "5", "--as-of", AS_OF)
    assert done.returncode == 0, done.stderr
    assert "5 member(s) shown" in done.stdout and "female" in done.stdout
    done = target.oa("audience", "count", "top_spenders", "--as-of", AS_OF)
    assert done.returncode == 0 and "limit keeps at most 500" in " ".join(done.stdout.split())
    done = subprocess.run([OA, "audience", "list"], env={**target.env, "COLUMNS": "200"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("current") == len(PROJECT.order), done.stdout


@pytest.mark.parametrize("engine", ENGINES)
def test_dagster_audience_job_materializes_with_metadata(built_engines, engine, tmp_path, monkeypatch):
    import dagster as dg

    target = built_engines[engine]
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    monkeypatch.setenv("OA_AUDIENCE_CONCURRENCY", "2")
    from orchestration.launch import run_audience_job

    results = run_audience_job("audiences_refresh_all", TODAY)
    from_models = {n for n in PROJECT.order if PROJECT.reads_models(n)}
    assert {r.audience for r in results} == set(PROJECT.order) - from_models
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("audience_refresh").slot_count == 2
        event = instance.get_latest_materialization_event(dg.AssetKey(["audiences", "top_spenders"]))
        meta = event.asset_materialization.metadata
    assert meta["size"].value == next(r.size for r in results if r.audience == "top_spenders")
    for key in ("added", "removed", "dropped_missing_id", "version", "definition_hash"):
        assert key in meta
    assert meta["preview"].value.count("\n| oa_") == 10
    with dg.DagsterInstance.get() as instance:
        preview = instance.get_latest_materialization_event(dg.AssetKey(
            ["audiences", "shanghai_big_spenders"])).asset_materialization.metadata["preview"].value
    mobiles = [line.split("|")[3].strip() for line in preview.splitlines()[2:]]
    assert len(mobiles) == 10 and all(re.fullmatch(r"1[3-9][0-9]\*{4}[0-9]{4}", m) for m in mobiles), mobiles
    assert meta["size_history_chart"].value.startswith("![top_spenders size](data:image/png;base64,")


def test_assets_show_what_each_audience_reads_and_refresh_on_its_schedule():
    import dagster as dg

    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()

    def parents(name):
        return {k.to_user_string() for k in graph.get(dg.AssetKey(["audiences", name])).parent_keys}

    assert parents("high_value_rfm") == {"marts/user_tags", "marts/rfm_default"}
    assert parents("lapsed_app_buyers") == {"marts/user_tags", "marts/fct_behaviors"}
    assert parents("new_buyers_not_loyal") == {"marts/user_tags", "audiences/aipl_converters",
                                               "audiences/top_spenders", "audiences/loyal_or_repeat"}
    assert "reference/store_event_guests" in parents("store_event_guests")
    assert graph.get(dg.AssetKey(["audiences", "top_spenders"])).owners == ["team:crm"]
    job = defs.resolve_job_def("audiences_refresh_all")
    assert {n.definition.pool for n in job.graph.node_dict.values()} == {"audience_refresh"}
    weekly = graph.get(dg.AssetKey(["audiences", "high_value_rfm"])).automation_condition
    assert "0 3 * * 1" in weekly.get_label()  # its refresh: cron, as an automation condition
    assert defs.resolve_sensor_def("audience_and_model_refresh") is not None


def test_audience_concurrency_setting_is_checked():
    from openaudience.core.settings import ConfigError, load_settings

    assert load_settings({}).audience_concurrency == 3
    assert load_settings({"OA_AUDIENCE_CONCURRENCY": "10"}).audience_concurrency == 10
    for bad in ("0", "11", "three"):
        with pytest.raises(ConfigError, match=f"OA_AUDIENCE_CONCURRENCY='{bad}': give a whole "
                                              "number from 1 to 10"):
            load_settings({"OA_AUDIENCE_CONCURRENCY": bad})


@pytest.mark.parametrize("engine", ENGINES)
def test_audience_analysis_tgi_and_chi_square(built_engines, examples_built, engine):
    from scipy.stats import chi2_contingency

    from openaudience.analysis.audience import analyse_audience
    from openaudience.analysis.catalog import Catalog

    target = built_engines[engine]
    name = "shanghai_big_spenders"
    catalog = Catalog.load()
    a = analyse_audience(target.warehouse, name, catalog=catalog)
    members = set(_saved(target.warehouse, name))
    tags = target.warehouse.query_df("select one_id, member_level from marts.user_tags")
    tags["member_level"] = tags["member_level"].fillna("(empty)")
    tags["in"] = tags["one_id"].isin(members)
    assert (a.size, a.population) == (len(members), len(tags))
    level = next(t for t in a.tags if t.tag == "member_level").values.set_index("value")
    pop = tags["member_level"].value_counts()
    aud = tags.loc[tags["in"], "member_level"].value_counts()
    for value in pop.index:
        share_a, share_p = aud.get(value, 0) / len(members), pop[value] / len(tags)
        assert level.at[value, "tgi"] == int(share_a / share_p * 100 + 0.5), value
    table = pd.crosstab(tags["member_level"], tags["in"]).to_numpy()
    chi2, p, dof, _ = chi2_contingency(table, correction=False)
    ours = next(t for t in a.tags if t.tag == "member_level")
    assert ours.chi2 == pytest.approx(chi2) and ours.p_value == pytest.approx(p) and ours.dof == dof
    assert len(a.top) == 10 and list(a.top["p_value"]) == sorted(a.top["p_value"])
    assert "city" in set(a.top["tag"])  # the audience is defined by city
    assert a.rfm is not None and int(a.rfm["audience"].sum()) + a.rfm.attrs["not_scored"] == a.size


def test_audience_report_renders_in_headless_chromium(built_engines, examples_built, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "the report test needs Chromium (Debian package 'chromium'); .ci/run installs it"
    out = tmp_path / "audience.html"
    done = built_engines["duckdb"].oa("report", "audience", "shanghai_big_spenders", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(out.as_uri())
            page.wait_for_function("[...document.querySelectorAll('.chart')].every("
                                   "c => c.querySelector('svg g.mark-rect, svg g.mark-line'))",
                                   timeout=30_000)
            # size history, ten significant tags, the RFM composition, then the other tags
            assert page.locator(".chart").count() >= 12
            assert page.locator("h2", has_text="The 10 most significant tags").count() == 1
            assert page.locator("h2", has_text="RFM composition (rfm_default)").count() == 1
            assert errors == []
        finally:
            browser.close()
