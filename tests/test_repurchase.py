"""Repurchase prediction: BG/NBD recovers the parameters it simulated from; the dbt features
see nothing after their cutoff (perturbing future rows changes no feature, on both engines);
and on generated data whose generator plants a repurchase signal (consumables come back), the
model beats both baselines on validation AUC and the random group on top-25 % precision, is
stored as a version, scores everyone predictable, and reports."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from ml import bgnbd, purchases
from ml import repurchase as rp
from ml.report import pngs, write_report
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.settings import PROJECT_ROOT
from tests.conftest import AS_OF, DBT, ENGINES

FEATURE_COLUMNS = ["cutoff_date", "one_id", *rp.FEATURES, *rp.CATEGORICAL]


# -- BG/NBD ---------------------------------------------------------------------------------------
def test_bgnbd_recovers_the_parameters_it_simulated_from():
    truth = bgnbd.BgNbd(r=0.25, alpha=4.0, a=0.8, b=2.5)
    x, t_x, T = bgnbd.simulate(truth, 6000, T=52.0, seed=3)
    fitted = bgnbd.fit(x, t_x, T)
    assert fitted.r == pytest.approx(truth.r, rel=0.2)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.25)
    assert fitted.a == pytest.approx(truth.a, rel=0.4)
    assert fitted.b == pytest.approx(truth.b, rel=0.4)
    # the fit is a maximum: the true parameters are no more likely than the fitted ones
    ll = lambda m: bgnbd.log_likelihood((m.r, m.alpha, m.a, m.b), x, t_x, T).sum()  # noqa: E731
    assert ll(fitted) >= ll(truth)


def test_bgnbd_expected_purchases_match_a_simulated_future():
    model = bgnbd.BgNbd(r=0.5, alpha=6.0, a=0.9, b=3.0)
    n, T, horizon = 4000, 40.0, 20.0
    x, t_x, _ = bgnbd.simulate(model, n, T=T, seed=11)
    # the same customers observed longer: purchases in (T, T + horizon] come from the same draws
    x_long, _, _ = bgnbd.simulate(model, n, T=T + horizon, seed=11)
    future = x_long - x
    expected = model.expected_purchases(horizon, x, t_x, np.full(n, T))
    assert expected.mean() == pytest.approx(future.mean(), rel=0.1)
    # and they rank customers: those expected to buy more did
    high = expected > np.median(expected)
    assert future[high].mean() > 2 * future[~high].mean()


# -- configuration --------------------------------------------------------------------------------
def test_the_shipped_config_loads_and_bad_values_name_the_file():
    config = rp.load_config()
    assert config.horizon_days == 30 and config.training_cutoffs == 3
    manifest = {"nodes": {"model.openaudience.ml_repurchase_features": {
        "config": {"meta": {"repurchase": {"horizon_days": 400, "model": {"calibration": "platt"}}}}}}}
    with pytest.raises(ConfigError) as info:
        rp.load_config(manifest)
    text = str(info.value)
    assert text.startswith("models/marts/ml/_ml__models.yml: ml_repurchase_features:")
    assert "meta.repurchase.horizon_days" in text and "meta.repurchase.model.calibration" in text
    # purchase_type goes into SQL as a literal: a behaviour type's code only
    manifest["nodes"]["model.openaudience.ml_repurchase_features"]["config"]["meta"]["repurchase"] = {
        "purchase_type": "purchase' or 1=1 --", "purchase_source": "crm"}
    with pytest.raises(ConfigError) as info:
        rp.load_config(manifest)
    assert "meta.repurchase.purchase_type" in str(info.value)
    expected = "meta.repurchase.purchase_source: Input should be 'auto', 'behaviors' or 'orders'"
    assert expected in str(info.value)
    # one as-of per run: the model's own as_of is gone, with what to do instead
    manifest["nodes"]["model.openaudience.ml_repurchase_features"]["config"]["meta"]["repurchase"] = {
        "as_of": "2026-06-01"}
    with pytest.raises(ConfigError, match=r"meta\.repurchase\.as_of is gone: a run has one as-of date, "
                                          r"the --as-of of oa build"):
        rp.load_config(manifest)
    # versions trained before kept an as_of key in their stored configuration; they still score
    assert rp.RepurchaseConfig.stored('{"horizon_days": 60, "as_of": null}').horizon_days == 60


def test_the_properties_file_refuses_as_of_at_its_line(tmp_path):
    path = tmp_path / "_ml__models.yml"
    path.write_text("version: 2\nmodels:\n  - name: ml_repurchase_features\n    config:\n      meta:\n"
                    "        repurchase:\n          horizon_days: 30\n          as_of: 2026-06-01\n")
    with pytest.raises(rp.PropertiesErrors) as info:
        rp.check_properties(path)
    assert str(info.value.problems[0]).replace(str(tmp_path) + "/", "").startswith(
        "_ml__models.yml:8: meta.repurchase.as_of: as_of is gone")


@pytest.mark.slow  # dbt compiles of a project copy
def test_cutoffs_step_apart_and_dbt_refuses_a_purchase_type_that_is_not_a_code(tmp_path):
    """A 60-day horizon with training cutoffs 14 days apart: the score, validation and training
    cutoffs are T, T - 60, T - 120, T - 134, T - 148, T - 162. And the macro checks what it
    pastes into the SQL of ml_purchases, whoever compiles it."""
    import re

    root = tmp_path / "project"
    for folder in ("seeds", "models", "macros"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder)
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(PROJECT_ROOT / name, root)
    path = root / "models/marts/ml/_ml__models.yml"
    shipped = path.read_text()
    env = {**os.environ, "OA_TARGET": "duckdb", "OA_DUCKDB_PATH": str(tmp_path / "w.duckdb")}

    def compile_(select: str) -> subprocess.CompletedProcess:
        return subprocess.run([DBT, "compile", "--select", select, "--project-dir", str(root),
                               "--profiles-dir", str(root), "--target-path", str(tmp_path / "target")],
                              cwd=root, capture_output=True, text=True, env=env, timeout=300)

    path.write_text(shipped.replace("horizon_days: 30", "horizon_days: 60")
                    .replace("training_cutoffs: 3", "training_cutoffs: 4\n          cutoff_step_days: 14"))
    done = compile_("ml_repurchase_features")
    assert done.returncode == 0, done.stdout[-3000:]
    sql = next((tmp_path / "target").rglob("ml_repurchase_features.sql")).read_text()
    row = re.findall(r"cast\(r\.t - (\d+) as date\) as c(\d+)", sql)
    assert [(int(c), int(d)) for d, c in row] == [(0, 0), (1, 60), (2, 120), (3, 134), (4, 148), (5, 162)]
    assert "d.purchase_date <= c.c5 + 60" in sql  # the label: the horizon after each cutoff

    path.write_text(shipped.replace("horizon_days: 30", "horizon_days: 30\n          as_of: 2026-06-01"))
    done = compile_("ml_purchases")
    assert done.returncode != 0
    assert ("models/marts/ml/_ml__models.yml: ml_repurchase_features: meta.repurchase.as_of is gone: a run "
            "has one as-of date") in done.stdout, done.stdout[-3000:]

    path.write_text(shipped.replace("purchase_type: purchase", "purchase_type: \"x' or 1=1 --\""))
    done = compile_("ml_purchases")
    assert done.returncode != 0
    assert ("models/marts/ml/_ml__models.yml: ml_repurchase_features: meta.repurchase.purchase_type must "
            "be a behaviour type's code") in done.stdout, done.stdout[-3000:]


# -- the model on data with a planted signal -------------------------------------------------------
@pytest.mark.slow
def test_the_model_beats_both_baselines_and_scores_everyone(signal, tmp_path):
    wh = signal.warehouse
    training = rp.train(wh)
    m = training.metrics
    print(training.chosen, training.chosen_on, training.selection,
          {k: round(v["auc"], 4) for k, v in m.items()},
          round(m["model"]["ece"], 4))
    assert m["model"]["auc"] >= max(m[b]["auc"] for b in rp.BASELINES) + 0.01, m
    assert m["model"]["precision_top25"] > 1.5 * m["model"]["random_precision_top25"]
    assert training.warnings == []
    # the precision of the top groups falls as they grow; the random group stays near the base rate
    top = training.top_shares
    assert list(top["precision"]) == sorted(top["precision"], reverse=True)
    assert top["random_precision"].std() < 0.05
    # calibrated: predicted and observed shares agree within a few points on average
    assert (training.calibration["predicted"] - training.calibration["observed"]).abs().mean() < 0.05
    # (a linear model's categories are one-hot: main_category=<value>)
    assert {f.split("=")[0] for f in training.importance["feature"]} == {*rp.FEATURES, *rp.ENGINEERED,
                                                                         *rp.CATEGORICAL}
    assert m["model"]["ece"] < 0.05 and 0 < m["model"]["brier"] < 0.25
    # a version, not active until said so; scoring refuses without one
    [v] = [v for v in rp.versions(wh) if v["version"] == training.version]
    assert not v["active"]
    if rp.active_version(wh) is None:
        with pytest.raises(UserError, match="no active repurchase model"):
            rp.score(wh)
    rp.activate(wh, training.version)
    scoring = rp.score(wh)
    [(n_predictable,)] = wh.query(f"select count(*) from {rp.FEATURES_TABLE} where cutoff_role = 'score'")
    rows = wh.query(f"select count(*), count(distinct one_id), min(rank), max(rank), min(decile), "
                    f"max(decile), min(probability), max(probability), min(model_version) "
                    f"from {rp.SCORES_TABLE}")[0]
    assert rows[:6] == (n_predictable, n_predictable, 1, n_predictable, 1, 10)
    assert 0 <= rows[6] <= rows[7] <= 1 and rows[8] == training.version
    # the top decile holds the highest probabilities
    [(low_top, high_rest)] = wh.query(f"select min(case when decile = 1 then probability end), max(case "
                                      f"when decile > 1 then probability end) from {rp.SCORES_TABLE}")
    assert low_top >= high_rest
    assert scoring.warnings == []
    # purchases grew past drift_warning since training: scoring says so
    with wh.connect() as conn:
        wh.execute(conn, f"update {rp.VERSIONS_TABLE} set purchases = purchases / 2 where model = "
                         "'repurchase' and version = %s", [training.version])
    [drift] = rp.score(wh).warnings
    assert drift.startswith("purchases grew 10") and f"since version {training.version}" in drift
    path = write_report(training, tmp_path, scoring)
    html = path.read_text()
    assert "Against the baselines" in html and "bgnbd" in html and "vegaEmbed" in html
    images = pngs(training, scoring)
    assert set(images) == {"top_groups", "calibration", "importance", "validation_scores", "scores"}
    assert all(png.startswith(b"\x89PNG") for png in images.values())
    # `oa ml models`: one validation cutoff is a date and the window its labels cover
    done = signal.oa("ml", "models")
    assert done.returncode == 0, done.stderr
    window = rp.versions(wh)[0]
    cutoff = json.loads(window["data_window"])["validate"][0][:10]
    horizon = json.loads(window["config"])["horizon_days"]
    end = dt.date.fromisoformat(cutoff) + dt.timedelta(days=horizon)
    assert f"cutoff {cutoff}, purchases to {end}" in " ".join(done.stdout.split()), done.stdout
    assert f"{cutoff} – {cutoff}" not in done.stdout


@pytest.mark.slow
def test_the_dagster_assets_train_score_and_show_their_charts(signal, monkeypatch, tmp_path):
    import dagster as dg

    from orchestration.defs.ml.assets import repurchase_model, repurchase_scores
    from orchestration.resources import WarehouseResource
    from tests.conftest import point_process_at

    target = signal
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    result = dg.materialize([repurchase_model, repurchase_scores],
                            resources={"warehouse": WarehouseResource()})
    assert result.success
    [model] = result.asset_materializations_for_node("ml__repurchase_model")
    assert model.metadata["auc"].value > model.metadata["bgnbd_auc"].value
    assert model.metadata["calibration_chart"].value.startswith("![Calibration](data:image/png;base64,")
    [scores] = result.asset_materializations_for_node("ml__repurchase_scores")
    version = model.metadata["version"].value
    assert scores.metadata["model_version"].value == version
    assert rp.active_version(target.warehouse)["version"] == version
    assert scores.metadata["dagster/row_count"].value == target.warehouse.query(
        f"select count(*) from {rp.SCORES_TABLE}")[0][0]


@pytest.mark.slow
def test_where_bgnbd_does_not_hold_the_model_beats_every_baseline(buyers, tmp_path):
    """Habit, seasonal and category buyers (tests/support/buyers.py), from orders alone: the
    active version beats BG/NBD, the heuristic and logistic regression by 0.01 of AUC at least,
    calibrated."""
    training = rp.train(buyers.warehouse)
    m = training.metrics
    print(training.chosen, training.chosen_on, training.selection,
          {k: round(v["auc"], 4) for k, v in m.items()}, round(m["model"]["ece"], 4))
    assert "paid order lines" in training.source
    assert m["model"]["auc"] >= max(m[b]["auc"] for b in rp.BASELINES) + 0.01, m
    assert training.warnings == [] and m["model"]["ece"] < 0.05
    rp.activate(buyers.warehouse, training.version)
    assert rp.score(buyers.warehouse).users > 5_000


# -- no leakage ------------------------------------------------------------------------------------
def _features(wh) -> pd.DataFrame:
    cols = ", ".join(FEATURE_COLUMNS + ["cutoff_role", "label"])
    rows = wh.query(f"select {cols} from {rp.FEATURES_TABLE} where cutoff_role in ('train', 'validate')")
    df = pd.DataFrame(rows, columns=[*FEATURE_COLUMNS, "cutoff_role", "label"])
    return df.sort_values(["cutoff_date", "one_id"]).reset_index(drop=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_features_see_nothing_after_their_cutoff(built_engines, engine):
    """Every purchase after the validation cutoff is changed (amounts, channels, items) and new
    ones are added, keeping the latest day so the cutoffs stay put: no feature of a training or
    validation row may move, while the validation labels do."""
    target = built_engines[engine]
    wh = target.warehouse
    before = _features(wh)
    [(validate,)] = wh.query(f"select min(cutoff_date) from {rp.FEATURES_TABLE} "
                             "where cutoff_role = 'validate'")
    [(last,)] = wh.query("select max(behavior_date) from marts.fct_behaviors where event_type = 'purchase'")
    assert len(before) > 1000 and validate < last
    # one as-of for the run: T is the latest purchase on or before the build's as-of date
    as_of = dt.date.fromisoformat(AS_OF)
    used = purchases.source(wh)
    assert used.requested == used.reference == as_of == last
    assert used.stale() is None and used.as_of() == f"as of {AS_OF}"
    beyond = as_of + dt.timedelta(days=2)
    try:
        with wh.connect() as conn:
            other_item = wh.execute(conn, "select max(item_id) from marts.product_tags")[0][0]
            wh.execute(conn, "update marts.fct_behaviors set behavior_amount = behavior_amount * 7 + 1, "
                             "channel = 'perturbed', item_id = %s where event_type = 'purchase' and "
                             "behavior_date > %s and behavior_date < %s", [other_item, validate, last])
            # people who did not buy in the horizon now do, in a row inside it
            wh.execute(conn, """
                insert into marts.fct_behaviors (behavior_id, one_id, occurred_at, behavior_date, event_type,
                    channel, object_attribute, object_value, item_id, behavior_count, behavior_amount)
                select behavior_id, one_id, occurred_at + interval '3 days', behavior_date + 3, event_type,
                       channel, object_attribute, object_value, item_id, behavior_count, behavior_amount
                from marts.fct_behaviors
                where event_type = 'purchase' and behavior_date <= %s and behavior_date > %s""",
                       [validate, validate - dt.timedelta(days=3)])
            # and a purchase after the as-of date, which this run must not see (it would move T
            # and with it every cutoff)
            wh.execute(conn, """
                insert into marts.fct_behaviors (behavior_id, one_id, occurred_at, behavior_date, event_type,
                    channel, object_attribute, object_value, item_id, behavior_count, behavior_amount)
                select gen_random_uuid(), one_id, occurred_at + interval '2 days', behavior_date + 2,
                       event_type, channel, object_attribute, object_value, item_id, behavior_count,
                       behavior_amount
                from marts.fct_behaviors
                where event_type = 'purchase' and behavior_date = %s
                limit 1""", [as_of])
        target.dbt("run", "--select", "ml_purchases ml_reference_date ml_repurchase_features")
        assert purchases.source(wh).reference == as_of
        after = _features(wh)
        assert len(after) == len(before)
        pd.testing.assert_frame_equal(before[FEATURE_COLUMNS], after[FEATURE_COLUMNS])
        changed = (before["label"] != after["label"]) & (before["cutoff_role"] == "validate")
        assert changed.sum() > 0  # the perturbation did reach the future

        # a run as of a date well after the data: the models say they are as of the last purchase
        later = as_of + dt.timedelta(days=20)
        target.dbt("run", "--select", "ml_purchases ml_reference_date", as_of=later.isoformat())
        used = purchases.source(wh)
        assert (used.requested, used.reference) == (later, beyond)
        gap = (later - beyond).days
        assert used.as_of() == (f"as of {beyond}, the latest purchase on or before the requested {later} "
                                f"({gap} days before it)")
        assert used.stale().startswith(f"the purchases end on {beyond}, {gap} days before the run's as-of "
                                       f"date {later}")
    finally:
        target.dbt("run", "--select", "fct_behaviors ml_purchases ml_reference_date ml_repurchase_features")
    pd.testing.assert_frame_equal(before, _features(wh))


def test_behaviour_columns_are_the_ones_the_perturbation_writes(built_engines):
    """The insert above names fct_behaviors' columns; it must name them all."""
    wh = built_engines["duckdb"].warehouse
    cols = {r[0] for r in wh.query("select column_name from information_schema.columns where "
                                   "table_schema = 'marts' and table_name = 'fct_behaviors'")}
    assert cols - {"behavior_id", "one_id", "occurred_at", "behavior_date", "event_type", "channel",
                   "object_attribute", "object_value", "item_id", "behavior_count", "behavior_amount"} \
        <= {"source_events"}


# -- both engines, and orders alone, on the small data set -----------------------------------------
def test_both_engines_give_the_same_features_model_and_scores(ml_engines):
    """The features are SQL (dbt) and training and scoring read and write the warehouse: on the
    same data, both engines give the same feature rows, the same validation figures and the same
    scores (the model's quality is judged once, on `signal`)."""
    config = rp.load_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"min_users": 100})})
    features, metrics, scores = {}, {}, {}
    for engine, target in ml_engines.items():
        wh = target.warehouse
        features[engine] = _features(wh)
        training = rp.train(wh, config)
        metrics[engine] = training.metrics
        rp.activate(wh, training.version)
        rp.score(wh)
        rows = wh.query(f"select one_id, probability, rank, decile, model_version from {rp.SCORES_TABLE} "
                        "order by one_id")
        scores[engine] = pd.DataFrame(rows, columns=["one_id", "probability", "rank", "decile", "version"])
    assert len(features["duckdb"]) > 1000
    pd.testing.assert_frame_equal(features["duckdb"], features["postgres"], check_dtype=False)
    for name, figures in metrics["duckdb"].items():
        assert figures == pytest.approx(metrics["postgres"][name]), (name, metrics)
    assert len(scores["duckdb"]) > 500
    pd.testing.assert_frame_equal(scores["duckdb"], scores["postgres"], check_dtype=False)


def test_orders_without_purchase_events_train_both_models_and_say_so(ml_engines):
    """A shop that loaded orders and order lines and no purchase events (the usual start): both
    models learn from the paid order lines, and say so; with neither, the message says what to
    load. (The generated purchase events are the paid order lines, so the features agree.)"""
    from ml import recommend as rc

    config = rp.load_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"min_users": 100})})
    for target in ml_engines.values():
        wh = target.warehouse
        assert purchases.source(wh).name == "behaviors"
        before = _features(wh)
        try:
            with wh.connect() as conn:
                wh.execute(conn, "delete from marts.fct_behaviors where event_type = 'purchase'")
            target.dbt("run", "--select", "ml_purchases ml_reference_date ml_repurchase_features")
            used = purchases.source(wh)
            assert used.name == "orders" and used.lines > 1000
            after = _features(wh)
            assert len(after) == len(before)
            numeric = ["cutoff_date", "one_id", *rp.FEATURES]
            pd.testing.assert_frame_equal(before[numeric], after[numeric], check_dtype=False)
            # the category bought most: a tie may fall the other way (a behaviour stream keeps one
            # event for two lines of one product in one order)
            assert (before["main_category"] == after["main_category"]).mean() > 0.98
            training = rp.train(wh, config)
            assert "paid order lines" in training.source, training.source
            assert "paid order lines" in rc.train(wh, activate=False).source
            with wh.connect() as conn:
                wh.execute(conn, "delete from marts.fct_order_items")
            target.dbt("run", "--select", "ml_purchases ml_reference_date ml_repurchase_features")
            nothing = (f"no purchases to learn from on or before the as-of date {AS_OF}: "
                       "marts.fct_behaviors has no 'purchase' events")
            with pytest.raises(purchases.EmptyPurchases, match=nothing):
                rp.train(wh, config)
            with pytest.raises(purchases.EmptyPurchases):
                rc.train(wh)
        finally:
            target.dbt("run", "--select",
                       "fct_behaviors fct_order_items ml_purchases ml_reference_date ml_repurchase_features")


def test_too_little_data_is_a_clear_message(built_engines):
    wh = built_engines["duckdb"].warehouse
    config = rp.load_config().model_copy(update={"model": rp.ModelSettings(min_users=10_000_000)})
    with pytest.raises(rp.DataTooSmall, match="the train cutoff has .* predictable people .* needs "
                                              "at least 10,000,000"):
        rp.train(wh, config)


def test_models_retrain_weekly_and_score_after_each_nightly_refresh():
    import dagster as dg

    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in (["ml", "repurchase_scores"], ["ml", "recommendations"]):  # after each model update
        condition = graph.get(dg.AssetKey(key)).automation_condition
        assert condition is not None and condition.get_label() == "eager", key
    for job in ("repurchase_training", "recommend_training"):
        schedule = defs.resolve_schedule_def(f"{job}_schedule")
        assert schedule.cron_schedule.endswith("* * 1") and schedule.job_name == job
