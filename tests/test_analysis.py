"""RFM, AIPL and pivot analysis on a small generated data set, on DuckDB and PostgreSQL: the
models agree across engines, the YAML alone drives them, bad YAML is named, the AIPL flow
identity holds, and the HTML reports render in a real headless Chromium."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess

import pandas as pd
import pytest

from openaudience.analysis.aipl import analyse_aipl
from openaudience.analysis.catalog import Catalog
from openaudience.analysis.pivot import chart_kind, nice_step, pivot_tags
from openaudience.analysis.rfm import analyse_rfm
from openaudience.core.settings import PROJECT_ROOT
from tests.conftest import AIPL_HISTORY_START, AS_OF, DBT, make_target

FLOW_START = AIPL_HISTORY_START
HISTORY_DAYS = (dt.date.fromisoformat(AS_OF) - dt.date.fromisoformat(AIPL_HISTORY_START)).days + 1


@pytest.fixture(scope="module")
def built(built_engines):
    """Both engines built, with AIPL history from FLOW_START (eight days)."""
    return built_engines


def _rows(target, sql: str) -> list[tuple]:
    out = []
    for row in target.warehouse.query(sql):
        out.append(tuple(round(float(v), 6) if isinstance(v, float) or type(v).__name__ == "Decimal"
                         else (str(v) if hasattr(v, "isoformat") else v) for v in row))
    return out


@pytest.mark.parametrize("model", ["rfm_default", "rfm_lifetime"])
def test_rfm_models_are_identical_on_both_engines(built, model):
    sql = (f"select one_id, recency_days, frequency, monetary, r_score, f_score, m_score, "
           f"rfm_code, rfm_segment, r_comparison, f_comparison, m_comparison, as_of_date "
           f"from marts.{model} order by one_id")
    duck, pg = (_rows(built[e], sql) for e in ("duckdb", "postgres"))
    assert len(duck) > 500
    assert duck == pg
    segments = {r[8] for r in duck}
    assert len(segments) >= 6, segments  # the demo data spreads over the types


def test_two_rfm_models_score_with_their_own_bins(built):
    wh = built["duckdb"].warehouse
    d = wh.query_df("select r_score, f_score, m_score from marts.rfm_default")
    lifetime = wh.query_df("select r_score, f_score, m_score from marts.rfm_lifetime")
    assert d["r_score"].max() == 5 and lifetime["r_score"].max() == 4
    comparisons = wh.query("select distinct f_comparison, m_comparison from marts.rfm_lifetime")
    assert comparisons == [(2.0, 3.0)]  # the fixed comparison values of the YAML


def _copy_project(tmp_path):
    copy = tmp_path / "project"
    for item in ("models", "macros", "seeds", "tests/dbt"):
        shutil.copytree(PROJECT_ROOT / item, copy / item)
    for item in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(PROJECT_ROOT / item, copy / item)
    return copy


def _dbt_in(copy, target, *args):
    cmd = [DBT, *args, "--project-dir", str(copy), "--profiles-dir", str(copy),
           "--vars", json.dumps({"as_of": AS_OF})]
    return subprocess.run(cmd, cwd=copy, env={**target.env, **target.settings.dbt_env()},
                          capture_output=True, text=True)


def _score(values: pd.Series, points: list[float]) -> pd.Series:
    out = pd.Series(pd.NA, index=values.index, dtype="Int64")
    for i, p in enumerate(points):
        out[values >= p] = i + 1
    return out


def test_changing_a_breakpoint_in_yaml_rescores_without_sql(built, tmp_path):
    target = built["duckdb"]
    wh = target.warehouse
    before = wh.query_df("select one_id, monetary, m_score from marts.rfm_default order by one_id")
    copy = _copy_project(tmp_path)
    yml = copy / "models/marts/rfm/_rfm__models.yml"
    text = yml.read_text()
    old, new = "monetary: [0, 200, 500, 1500, 5000]", "monetary: [0, 1000, 2000, 3000, 4000]"
    assert old in text
    yml.write_text(text.replace(old, new, 1))  # the model, not the unit tests below it
    sql_before = {p.name: p.read_text() for p in (copy / "models/marts/rfm").glob("*.sql")}
    try:
        done = _dbt_in(copy, target, "build", "--select", "rfm_default")
        assert done.returncode == 0, done.stdout[-4000:]
        after = wh.query_df("select one_id, monetary, m_score from marts.rfm_default order by one_id")
        assert sql_before == {p.name: p.read_text() for p in (copy / "models/marts/rfm").glob("*.sql")}
        expected = _score(after["monetary"], [0, 1000, 2000, 3000, 4000])
        assert after["m_score"].astype("Int64").tolist() == expected.tolist()
        changed = (before["m_score"].values != after["m_score"].values).sum()
        assert changed > len(after) // 10, changed
    finally:
        target.dbt("build", "--select", "rfm_default")  # back to the project's own bins


@pytest.mark.parametrize(("yml", "select", "old", "new", "message"), [
    ("rfm/_rfm__models.yml", "rfm_default", "frequency: [1, 2, 3, 5, 8]", "frequency: [1, 3, 2, 5, 8]",
     "RFM model rfm_default: meta.rfm.frequency breakpoints must rise strictly: 3 then 2"),
    ("rfm/_rfm__models.yml", "rfm_default", "input: transactions", "input: orders",
     "meta.rfm.input must be 'transactions' or 'customers', not 'orders'"),
    ("rfm/_rfm__models.yml", "rfm_lifetime",
     "comparison: {recency_days: mean, frequency: 2, monetary: 3}",
     "comparison: {recency_days: median, frequency: 2, monetary: 3}",
     "meta.rfm.comparison.recency_days must be 'mean' or a number, not 'median'"),
    # the rules themselves are checked by `oa aipl compile` (tests/test_aipl_rules.py); dbt only
    # refuses rules that changed since they were compiled
    ("aipl/_aipl__models.yml", "aipl_daily",
     "{name: views_30d, \">=\": 3}", "{name: views_30d, \">=\": 4}",
     "AIPL rules changed in models/marts/aipl/_aipl__models.yml; run `oa aipl compile`"),
])
def test_bad_model_yaml_names_the_file_and_the_key(built, tmp_path, yml, select, old, new, message):
    copy = _copy_project(tmp_path)
    path = copy / "models/marts" / yml
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))  # the model, not a unit test
    done = _dbt_in(copy, built["duckdb"], "compile", "--select", select)
    assert done.returncode != 0
    assert f"models/marts/{yml}" in done.stdout
    assert message in " ".join(done.stdout.split())


def test_aipl_daily_is_identical_on_both_engines_and_one_stage_a_day(built):
    sql = "select aipl_model, stat_date, one_id, stage from marts.aipl_daily order by 1, 2, 3"
    duck, pg = (_rows(built[e], sql) for e in ("duckdb", "postgres"))
    assert duck == pg
    days = {r[1] for r in duck}
    assert len(days) == HISTORY_DAYS  # the backfilled days
    keys = [(r[0], r[1], r[2]) for r in duck]
    assert len(keys) == len(set(keys))
    assert {r[3] for r in duck} == {"A", "I", "P", "L"}


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_aipl_flow_identity_holds_for_every_stage(built, engine):
    catalog = Catalog.load()
    start, end = dt.date.fromisoformat(FLOW_START), dt.date.fromisoformat(AS_OF)
    for name in catalog.aipl_models():
        flow = analyse_aipl(built[engine].warehouse, name, start, end, catalog)
        s = flow.stages
        assert s["identity_holds"].all(), s
        recount = s["retained"] + s[["to_A", "to_I", "to_P", "to_L"]].sum(axis=1) + s["churned"]
        assert (s["start"] == recount).all()
        assert s["start"].sum() > 0 and s["churned"].sum() > 0
        assert len(flow.trend["stat_date"].unique()) == HISTORY_DAYS


def test_aipl_report_of_an_uncomputed_day_says_how_to_compute_it(built):
    done = built["duckdb"].oa("report", "aipl", "default", "--start", "2026-05-01", "--end", AS_OF)
    assert done.returncode == 2
    assert "no rows for model 'default' on 2026-05-01" in done.stderr
    assert "oa aipl backfill --start 2026-05-01 --end 2026-05-01" in " ".join(done.stderr.split())


def test_rfm_analysis_adds_up(built):
    a = analyse_rfm(built["duckdb"].warehouse, "rfm_default")
    assert a.segments["users"].sum() == a.core["transacting_users"]
    assert a.segments["share"].sum() == pytest.approx(1.0)
    assert a.segments["amount"].sum() == pytest.approx(a.core["amount"])
    assert len(a.segments) == 8
    for df in a.bubbles.values():
        assert df["users"].sum() == a.core["transacting_users"]
    assert a.trend is not None and a.trend["amount"].sum() == pytest.approx(a.core["amount"])
    assert (a.samples.groupby("rfm_segment").size() <= 5).all()


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_pivot_distributions(built, engine):
    tags = ["gender", "member_level", "city", "categories_bought", "age", "registered_at"]
    dists = {d.tag: d for d in pivot_tags(built[engine].warehouse, tags)}
    total = built[engine].warehouse.row_count("marts", "user_tags")
    for tag in ("gender", "member_level", "city", "age", "registered_at"):
        assert dists[tag].values["users"].sum() == total, tag  # every user once, nulls included
    cats = dists["categories_bought"].values
    assert not cats["value"].str.contains(",").any()  # split on the delimiter
    assert dists["gender"].chart == "pie"
    assert dists["age"].values["value"].str.match(r"^\[\d+, \d+\)$|^\(empty\)$").all()
    assert dists["registered_at"].values["value"].str.match(r"^\d{4}-\d{2}$|^\(empty\)$").all()
    filtered = {d.tag: d for d in pivot_tags(built[engine].warehouse, ["gender"], exclude_null=True)}
    assert "unknown" not in set(filtered["gender"].values["value"])
    assert "(empty)" not in set(filtered["gender"].values["value"])


def test_pivot_results_match_across_engines(built):
    tags = ["gender", "city", "categories_bought", "age", "registered_at"]
    duck, pg = ({d.tag: d.values for d in pivot_tags(built[e].warehouse, tags)}
                for e in ("duckdb", "postgres"))
    for tag in tags:
        a = duck[tag].sort_values("value").reset_index(drop=True)
        b = pg[tag].sort_values("value").reset_index(drop=True)
        assert a["value"].tolist() == b["value"].tolist(), tag
        assert a["users"].tolist() == b["users"].tolist(), tag


def test_chart_choice_and_bins():
    assert [chart_kind(n) for n in (1, 5, 6, 10, 11, 40)] == [
        "pie", "pie", "bar", "bar", "scroll_bar", "scroll_bar"]
    assert nice_step(73) == 10 and nice_step(0.9) == 0.1 and nice_step(180) == 20


def test_pivot_rejects_unknown_tags_and_wide_multi_value_tags(built, tmp_path):
    from openaudience.core.errors import UserError

    wh = built["duckdb"].warehouse
    with pytest.raises(UserError, match="unknown tag"):
        pivot_tags(wh, ["gender", "shoe_size"])
    # a scratch copy of the warehouse where one person bought from 60 categories
    copy = make_target("duckdb", tmp_path, None, "")
    copy.settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built["duckdb"].settings.duckdb_path, copy.settings.duckdb_path)
    many = ",".join(f"c{i}" for i in range(60))
    with copy.warehouse.connect() as conn:
        copy.warehouse.execute(conn, "update marts.user_tags set categories_bought = %s where one_id = "
                                     "(select min(one_id) from marts.user_tags)", [many])
    wide = r"has (6[0-9]|7[0-9]) distinct values after splitting; .* at most 50"
    with pytest.raises(UserError, match=wide):
        pivot_tags(copy.warehouse, ["categories_bought"])


def test_reports_render_in_headless_chromium(built, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "the report test needs Chromium (Debian package 'chromium'); .ci/run installs it"
    duck = built["duckdb"]
    reports = []
    for args in (("rfm", "rfm_default"), ("aipl", "default", "--start", FLOW_START, "--end", AS_OF),
                 ("pivot", "--tags", "gender,member_level,city,categories_bought,age")):
        out = tmp_path / f"{args[0]}.html"
        done = duck.oa("report", *args, "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == str(out)
        reports.append(out)
    expected_charts = {"rfm": 6, "aipl": 3, "pivot": 5}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            for path in reports:
                page = browser.new_page()
                errors: list[str] = []
                requests: list[str] = []
                page.on("console", lambda m, errs=errors: errs.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, errs=errors: errs.append(str(e)))
                page.on("request", lambda r, seen=requests: seen.append(r.url))
                page.goto(path.as_uri())
                page.wait_for_function(
                    "document.querySelectorAll('.chart').length > 0 && [...document.querySelectorAll"
                    "('.chart')].every(c => c.querySelector('svg .mark-group, svg g.mark-rect, "
                    "svg g.mark-symbol, svg g.mark-arc, svg g.mark-line'))", timeout=30_000)
                charts = page.locator(".chart").count()
                assert charts == expected_charts[path.stem], (path.stem, charts)
                marks = page.locator(".chart svg path").count()
                assert marks > charts, (path.stem, marks)
                assert errors == [], (path.stem, errors)
                assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
                page.close()
        finally:
            browser.close()
