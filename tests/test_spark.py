"""The project on Apache Spark (OA_TARGET=spark, local mode in this process), against DuckDB.

The small generated data set (2,000 people, 180 days) goes through the real loader into a Spark
warehouse, `oa build` runs every model, seed, data test and unit test there through dbt-spark,
`oa aipl backfill` computes eight AIPL days, and every example audience is built; then the
tables people and models read and every audience's members must be identical to DuckDB's, built
the same way. One Spark session serves the module (`make test-spark` runs it in one process).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from pathlib import Path

import pytest

from openaudience.core.warehouse import Warehouse
from tests.conftest import AIPL_HISTORY_START, AS_OF, Target, make_target, shared_build

pytestmark = pytest.mark.spark

COMPARED = ("marts.user_tags", "marts.rfm_default", "marts.rfm_lifetime", "marts.aipl_daily",
            "marts.ml_repurchase_features", "marts.product_tags", "marts.dim_identities",
            "marts.fct_orders")
VOLATILE = {"resolved_at"}  # when the row was written


def _build(target: Target, data: Path) -> dict:
    """Load, build, eight AIPL days, model outputs, every audience: what both engines go through."""
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.raw.loading import load_files
    from tests.support.ml_outputs import write_ml_outputs

    load_files(target.warehouse, [(table, data / f"{table}.parquet") for table in LOAD_ORDER])
    steps = {}
    for name, args in (("build", ("build", "--as-of", AS_OF)),
                       ("aipl", ("aipl", "backfill", "--start", AIPL_HISTORY_START, "--end", AS_OF))):
        done = target.oa(*args)
        assert done.returncode == 0, (f"oa {' '.join(args)} on {target.name}:\n"
                                      f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
        steps[name] = done.stdout
    write_ml_outputs(target.warehouse)
    done = target.oa("audience", "build", "--as-of", AS_OF)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    steps["audiences"] = done.stdout
    return steps


@pytest.fixture(scope="module")
def duck(small_demo, tmp_path_factory) -> Target:
    folder, steps = shared_build("spark_parity_duckdb", tmp_path_factory,
                                 lambda root: _build(make_target("duckdb", root, None, ""), small_demo))
    target = make_target("duckdb", folder, None, "")
    target.build_log = steps["build"]
    return target


@pytest.fixture(scope="module")
def spark(small_demo, tmp_path_factory) -> tuple[Target, dict]:
    target = make_target("spark", tmp_path_factory.mktemp("spark"), None, "")
    return target, _build(target, small_demo)


def _canon(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    if isinstance(value, decimal.Decimal):
        return round(float(value), 9)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def _rows(wh: Warehouse, sql: str) -> list[tuple]:
    return sorted((tuple(_canon(v) for v in row) for row in wh.query(sql)), key=repr)


def _diff(a: list[tuple], b: list[tuple]) -> str:
    only_a, only_b = sorted(set(a) - set(b), key=repr), sorted(set(b) - set(a), key=repr)
    return (f"{len(a)} rows on DuckDB, {len(b)} on Spark; DuckDB only: {only_a[:3]}; "
            f"Spark only: {only_b[:3]}")


def test_every_model_seed_data_test_and_unit_test_passes_on_spark(spark, duck):
    """The whole project ran on Spark: as many nodes passed as on DuckDB, none skipped or failed."""
    _, steps = spark

    def summary(log: str) -> str:
        return log.split("dbt build passed", 1)[1].split("\n", 1)[0]

    assert "dbt build passed" in steps["build"], steps["build"][-3000:]
    assert summary(steps["build"]) == summary(duck.build_log)
    assert not any(word in summary(steps["build"]) for word in ("error", "fail", "skip", "warn"))


@pytest.mark.parametrize("relation", COMPARED)
def test_tables_are_identical_on_spark_and_duckdb(spark, duck, relation):
    target, _ = spark
    schema, table = relation.split(".")
    duck_columns = [c for c in duck.warehouse.columns(schema, table) if c not in VOLATILE]
    spark_columns = [c for c in target.warehouse.columns(schema, table) if c not in VOLATILE]
    assert sorted(duck_columns) == sorted(spark_columns)
    sql = f"select {', '.join(duck_columns)} from {relation}"
    on_duck, on_spark = _rows(duck.warehouse, sql), _rows(target.warehouse, sql)
    assert on_duck, f"{relation} is empty: the comparison would prove nothing"
    assert on_duck == on_spark, _diff(on_duck, on_spark)


def test_every_audience_has_the_same_members(spark, duck):
    from openaudience.segments.engine import latest

    target, _ = spark
    names = sorted(p.stem for p in (Path(__file__).parents[1] / "audiences").glob("*.yml"))
    assert len(names) >= 15
    sql = ("select one_id, id_type, id_value from audiences.audience_members "
           "where audience = %s and version = %s")
    for name in names:
        on_duck = _rows(duck.warehouse, sql.replace("%s", "'" + name + "'", 1).replace(
            "%s", str(latest(duck.warehouse, name)["version"])))
        on_spark = _rows(target.warehouse, sql.replace("%s", "'" + name + "'", 1).replace(
            "%s", str(latest(target.warehouse, name)["version"])))
        assert on_duck == on_spark, f"{name}: " + _diff(on_duck, on_spark)


def test_model_features_are_read_from_spark_in_bounded_batches(spark, duck):
    """What the models train on, read as they read it: in batches of at most `batch_rows`, never
    the whole table in the driver at once."""
    target, _ = spark
    sql = "select * from marts.ml_repurchase_features"
    batches = list(target.warehouse.iter_batches(sql, batch_rows=700))
    assert len(batches) > 1 and max(len(b) for b in batches) <= 700
    on_spark = sorted((tuple(_canon(v) for v in row) for b in batches
                       for row in b.astype(object).itertuples(index=False)), key=repr)
    on_duck = _rows(duck.warehouse, sql)
    assert [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r) for r in on_spark] == \
        [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r) for r in on_duck]


def test_rows_sent_to_spark_past_the_in_memory_limit_go_through_a_scratch_table(spark):
    """What the state store hands Spark (the people due at a journey's step, suppressed ids)
    stays in the session up to a limit; past it each batch is written to a scratch Parquet
    table, which goes with the view."""
    import pyarrow as pa

    target, _ = spark
    wh = target.warehouse
    schema = pa.schema([("one_id", pa.string()), ("n", pa.int64())])
    batches = [pa.table({"one_id": [f"p{i}" for i in range(k, k + 400)], "n": list(range(k, k + 400))},
                        schema=schema) for k in range(0, 1200, 400)]
    before = set(wh.query("show tables in raw"))
    for limit in (10_000, 500):
        with wh.connect() as sconn, sconn.view("oa_people", iter(batches), schema, in_memory_rows=limit):
            during = {r[1] for r in wh.execute(sconn, "show tables in raw")}
            assert any(t.startswith("oa_scratch_oa_people_") for t in during) == (limit == 500)
            assert wh.execute(sconn, "select count(*), count(distinct one_id), sum(n) from oa_people") == \
                [(1200, 1200, sum(range(1200)))]
    assert set(wh.query("show tables in raw")) == before


def test_a_refused_file_leaves_every_table_as_it_was(spark, tmp_path):
    """Spark has no transaction to roll back: every file is staged and checked before any is
    swapped in, so a refused second file leaves the first table unchanged and no stage behind."""
    from openaudience.core.errors import ValidationFailed
    from openaudience.raw.loading import load_files

    target, _ = spark
    wh = target.warehouse
    before = {t: wh.row_count("raw", t) for t in ("products", "customers")}
    products = tmp_path / "products.csv"
    products.write_text("item_id,name,category,brand,price,season,listed_at\n"
                        "NEW1,Tee,apparel,Acme,19.90,all,2026-01-01 00:00:00\n")
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,mobile,email,gender,birth_date,city,member_level,registered_at\n"
                         "C1,13800138000,a@b.cn,robot,1990-01-01,Shanghai,gold,2026-01-01 10:00:00\n")
    with pytest.raises(ValidationFailed):
        load_files(wh, [("products", products), ("customers", customers)], mode="replace")
    assert {t: wh.row_count("raw", t) for t in ("products", "customers")} == before
    left = [r[1] for r in wh.query("show tables in raw") if "stage" in r[1]]
    assert left == []


def test_identity_keeps_its_ids_when_built_again(spark):
    """dim_identities reads its previous rows: on Spark from a copy made aside before it
    overwrites the table, dropped after."""
    target, _ = spark
    sql = "select node_key, one_id from marts.dim_identities"
    before = _rows(target.warehouse, sql)
    done = target.oa("build", "--select", "dim_identities", "--as-of", AS_OF)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _rows(target.warehouse, sql) == before
    assert not target.warehouse.table_exists("marts", "dim_identities__previous")


def test_a_pruned_version_drops_its_partition(spark):
    """Past `snapshots` (5 for cart_abandoners), a version's members go: on Spark its partition
    is dropped, while the version's row stays in the state store for the size history."""
    from openaudience.segments.engine import versions

    target, _ = spark
    for _ in range(5):
        done = target.oa("audience", "build", "cart_abandoners", "--as-of", AS_OF)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    every = {v["version"] for v in versions(target.warehouse, "cart_abandoners", kept_only=False)}
    kept = {v["version"] for v in versions(target.warehouse, "cart_abandoners")}
    held = {r[0] for r in target.warehouse.query(
        "select distinct version from audiences.audience_members where audience = 'cart_abandoners'")}
    assert len(every) == 6 and len(kept) == 5
    assert held == kept and min(every) not in held


def test_a_delivery_reads_its_plan_from_spark_and_sends_what_duckdb_sends(spark, duck, monkeypatch):
    """A delivery beside a Spark warehouse reads the members, their ids and their variables from
    Spark, and keeps its runs, log and state in the state store: a real webhook receiver gets
    the same people with the same variables as from DuckDB; suppression by any of a person's ids
    applies; the same version again sends nothing."""
    from connectors.webhook_receiver import WebhookReceiver
    from openaudience.delivery.engine import deliver, runs
    from openaudience.delivery.source import load_destinations
    from openaudience.delivery.suppression import add as suppress
    from openaudience.segments.engine import latest
    from openaudience.segments.source import AUDIENCE_DIR, Catalog, load_project

    target, _ = spark
    got, summaries = {}, {}
    for engine, t in (("duckdb", duck), ("spark", target)):
        wh = t.warehouse
        # one person on the list by their e-mail: the webhook addresses them by mobile
        version = latest(wh, "shanghai_big_spenders")["version"]
        person = sorted(wh.query(
            "select t.one_id, t.email from audiences.audience_members m join marts.user_tags t "
            "on t.one_id = m.one_id where m.audience = 'shanghai_big_spenders' and m.version = %s "
            "and t.email is not null", [version]))[0]
        suppress(wh, "email", [person[1]], "complaint")
        receiver = WebhookReceiver(secret="s3cret").start()
        monkeypatch.setenv("OA_CRM_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("OA_CRM_WEBHOOK_SECRET", "s3cret")
        try:
            dests = load_destinations(audiences=load_project(AUDIENCE_DIR, Catalog.from_project()))
            [run] = deliver(dests, "crm_coupon_webhook", wh=wh)
            assert deliver(dests, "crm_coupon_webhook", wh=wh) == []
        finally:
            receiver.stop()
        got[engine] = sorted((m["user_profile"]["target_id"], m["params"]["vars"]["city"])
                             for m in receiver.state.accepted.values())
        summaries[engine] = (run.status, run.counts)
        assert runs(wh, "crm_coupon_webhook")[0]["run_id"] == run.run_id
    assert got["duckdb"] and got["spark"] == got["duckdb"]
    assert summaries["spark"] == summaries["duckdb"] and summaries["spark"][1]["suppressed"] >= 1


PARITY_JOURNEY = """\
name: spark_parity
trigger: {audience: cart_abandoners}
holdout: {percent: 10}
goal: {did: purchase, within_days: 7}
steps:
  - random_branch:
      id: split
      branches:
        - name: remind
          percent: 60
          steps:
            - send: {id: reminder, destination: cart_reminder_webhook}
            - behavior_branch:
                id: bought
                event: purchase
                window_days: 3
                did:
                  - generate_audience: {id: gen_buyers, name: gen_spark_buyers}
                did_not:
                  - tag_branch:
                      id: city
                      branches:
                        - name: shanghai
                          where: {tag: {name: city, in: [Shanghai]}}
                          steps:
                            - send: {id: coupon, destination: cart_coupon_webhook}
                      other:
                        - generate_audience: {id: gen_others, name: gen_spark_others}
        - name: later
          percent: 40
          steps:
            - wait: {days: 1}
            - behavior_branch:
                id: viewed_before
                event: view
                window_days: 7
                look: back
                did: [end]
                did_not:
                  - generate_audience: {id: gen_later, name: gen_spark_later}
"""
JOURNEY_SECRET = "spark-journey-secret"


def _journey_context(wh: Warehouse, folder: Path, receiver):
    """The journeys of `folder` over the project's destinations, without the frequency caps
    (they count real time, and the clock here is the data's)."""
    from openaudience.delivery.source import load_destinations
    from openaudience.delivery.spec import Policies
    from openaudience.journeys import engine
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    project = load_project()
    dests = load_destinations(audiences=project)
    dests.policies = Policies()
    journeys = load_journeys(folder, project, dests)
    assert not journeys.problems, journeys.all_problems
    env = {"OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": JOURNEY_SECRET}
    return engine.Context(wh, journeys, dests, project, environ=env)


def test_a_journey_runs_on_spark_as_on_duckdb(spark, duck, tmp_path):
    """A scheduled journey with a random, a behaviour (ahead and back) and a tag branch, a wait,
    generated audiences and sends to a real webhook receiver, simulated and then run with the
    same clock beside Spark and on DuckDB: the same people per step and branch, the same members
    in each generated version (on Spark, its partition of the members table), the same messages
    with the same variables, the same sends' counts and lift. Beside Spark the journey's tables
    are in the state store, and Spark holds none of them."""
    from connectors.webhook_receiver import WebhookReceiver
    from openaudience.journeys import engine
    from openaudience.journeys.clock import to_utc
    from openaudience.journeys.report import lift
    from openaudience.segments.engine import latest

    target, _ = spark
    folder = tmp_path / "journeys"
    folder.mkdir()
    (folder / "spark_parity.yml").write_text(PARITY_JOURNEY)
    t0 = to_utc(dt.datetime(2026, 6, 15, 9, 0), "Asia/Shanghai")
    got = {}
    for engine_name, wh in (("duckdb", duck.warehouse), ("spark", target.warehouse)):
        receiver = WebhookReceiver(secret=JOURNEY_SECRET).start()
        try:
            ctx = _journey_context(wh, folder, receiver)
            simulated = engine.simulate(ctx, "spark_parity", t0, t0 + dt.timedelta(days=5))
            would = engine.node_counts(wh, simulated.plan.name)
            engine.drop_simulation(ctx, "spark_parity")
            ctx = _journey_context(wh, folder, receiver)  # a simulation's context only simulates
            assert engine.start(ctx, "spark_parity", t0) == "running"
            reports = [engine.tick(ctx, now=t0 + dt.timedelta(days=d, minutes=1 if d else 0))
                       for d in (0, 1, 3)]
        finally:
            receiver.stop()
        assert all(not r.error for rs in reports for r in rs), reports
        assert reports[-1][0].status == "completed", reports[-1]
        generated = {}
        for audience in ("gen_spark_buyers", "gen_spark_others", "gen_spark_later"):
            version = latest(wh, audience)
            generated[audience] = (version["size"], sorted(r[0] for r in wh.query(
                "select one_id from audiences.audience_members where audience = %s and version = %s",
                [audience, version["version"]])))
        messages = sorted((m["params"]["template"], m["user_profile"]["target_id"],
                           json.dumps(m["params"].get("vars"), sort_keys=True))
                          for m in receiver.state.accepted.values())
        acts = sorted((a["node"], a["status"], a["people"], a["held_out"], a["sent"], a["suppressed"])
                      for a in engine.actions(wh, "spark_parity") if a["kind"] == "send")
        arms = lift(wh, ctx.journeys.plans["spark_parity"])
        got[engine_name] = {"counts": engine.node_counts(wh, "spark_parity"), "simulated": would,
                            "generated": generated, "messages": messages, "sends": acts,
                            "lift": [(a.name, a.treated, a.treated_converted, a.held_out,
                                      a.held_out_converted) for a in [arms.overall, *arms.arms]]}
    duck_run, spark_run = got["duckdb"], got["spark"]
    for part in ("counts", "simulated", "generated", "sends", "lift", "messages"):
        assert spark_run[part] == duck_run[part], part
    counts = duck_run["counts"]
    # every branch of every condition was taken by someone, so the comparison proves each of them
    for node in ("split", "bought", "city", "viewed_before"):
        assert len(counts[node]["branches"]) == 2 and all(counts[node]["branches"].values()), (node, counts)
    assert all(size == len(people) > 0 for size, people in duck_run["generated"].values())
    assert {m[0] for m in duck_run["messages"]} == {"cart_reminder", "cart_coupon"}
    # the reminder's variable, from the tags (Spark's user_tags beside Spark)
    assert all(json.loads(m[2])["city"] for m in duck_run["messages"] if m[0] == "cart_reminder")
    assert duck_run["simulated"]["split"]["branches"] == counts["split"]["branches"]
    _, treated, _, held_out, _ = duck_run["lift"][0]
    assert treated > 0 and held_out > 0
    assert not target.warehouse.table_exists("journeys", "journey_positions")


def test_posted_events_start_journeys_beside_spark(spark, tmp_path):
    """Event-triggered journeys beside Spark, end to end as on DuckDB and PostgreSQL (the same
    events, journeys, sends and limits: tests/support/event_journeys.py): the events stay in the
    state store, each ingest sends the new ones to Spark's copies, whose marts.fct_events_live
    names their people, and an audience built on Spark sees them before any build. After a
    build, the people are resolved again."""
    from openaudience.core.schema.spark import refresh_event_people
    from tests.support.event_journeys import run_posted_events

    target, _ = spark
    wh = target.warehouse
    arrived = run_posted_events(target, tmp_path)
    assert arrived < 60, f"the sends took {arrived:.1f} s"
    state = wh.state
    known = state.query("select count(*), count(one_id) from events.event_people")[0]
    assert known[0] >= 16 and known[0] == known[1], known  # every event's person known
    on_spark = wh.query("select count(*) from events.events where event_code = 'app_purchase'")[0][0]
    assert on_spark == state.query("select count(*) from events.events "
                                   "where event_code = 'app_purchase'")[0][0] >= 15
    # what a build does afterwards: a person no longer known, or another, comes back as Spark says
    with state.connect() as conn:
        state.execute(conn, "update events.event_people set one_id = null")
    with wh.session() as conn:
        assert refresh_event_people(wh, conn) == known[0]
        assert refresh_event_people(wh, conn) == 0
    assert state.query("select count(one_id) from events.event_people")[0][0] == known[0]
    # each row once on Spark: what a rolled-back ingest sent is found there when the retry
    # stores the same event
    from openaudience.core.schema import operational as op
    from openaudience.core.schema.spark import send_new_events

    cols = ", ".join(op.EVENTS.column_names)
    others = ", ".join(c for c in op.EVENTS.column_names if c != "event_id")
    again = (f"insert into events.events ({cols}) select 'sent-then-rolled-back', {others} "
             "from events.events where event_id = (select max(event_id) from events.events)")

    class RolledBack(Exception):
        pass

    with pytest.raises(RolledBack), state.session() as conn, state.transaction(conn):
        state.execute(conn, again)
        with wh.connect() as sconn:
            assert send_new_events(wh, sconn, conn) == {"events.identity_links": 0, "events.events": 1}
        raise RolledBack
    with state.connect() as conn:
        state.execute(conn, again)
        with wh.connect() as sconn:
            assert send_new_events(wh, sconn, conn) == {"events.identity_links": 0, "events.events": 0}
    assert wh.query("select count(*), count(distinct event_id) from events.events") == \
        state.query("select count(*), count(distinct event_id) from events.events")


def test_oa_events_follow_beside_spark_sends_and_lets_go_of_the_local_session(spark):
    """The command line beside Spark: the shipped event journey starts, `oa events ingest`
    enters a buyer, `oa events follow` sends the thank-you with the purchase's attributes, and
    once idle stops this process's local Spark session, so that another process (a build) can
    open the catalog; the next command starts it again."""
    import secrets

    from connectors.webhook_receiver import WebhookReceiver
    from openaudience.core import spark as sessions
    from openaudience.events import messages as m
    from openaudience.events.log import EventLog, log_dir
    from openaudience.events.source import load_events
    from tests.support.event_journeys import members_of, purchase
    from tests.support.hostile import run_main

    target, _ = spark
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(secret=secret).start()
    env = {**target.env, "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret}
    try:
        done = run_main(("journey", "start", "app_purchase_thank_you"), env)
        assert done.returncode == 0, done.stdout + done.stderr
        member, mobile = members_of(target.warehouse, 20)[-1]
        log = EventLog.open(log_dir(target.settings.home))
        log.append(m.judge_events([purchase(member, 100, "42", "P-cli")], load_events(), "shop-app").records)
        log.close()
        done = run_main(("events", "ingest"), env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "journey app_purchase_thank_you: 1 entered" in done.stdout, done.stdout
        assert sessions._SESSION is not None
        done = run_main(("events", "follow", "--seconds", "3"), env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "journey app_purchase_thank_you: moved" in done.stdout and "sent 1" in done.stdout, done.stdout
        assert sessions._SESSION is None  # let go while idle
        [message] = receiver.state.accepted.values()
        assert message["user_profile"]["target_id"] == mobile
        assert message["params"]["vars"] == {"item": "P-cli", "amount": "42"}
    finally:
        receiver.stop()
        assert run_main(("journey", "stop", "app_purchase_thank_you"), env).returncode == 0


def test_dagster_runs_the_same_definitions_on_spark(spark, monkeypatch, tmp_path):
    """The code location's definitions, unchanged, with the resources the target chooses: the
    AIPL days asset materialises two days on Spark through dagster-dbt, whose dbt (`oa-dbt`)
    starts the session in its own process, and reports the days' rows."""
    import dagster as dg

    from orchestration.defs.dbt.assets import AIPL_KEY
    from tests.conftest import point_process_at

    target, _ = spark
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    assert Path(defs.resources["dbt"].dbt_executable).name == "oa-dbt"
    last = dt.date.fromisoformat(AS_OF)
    first = last - dt.timedelta(days=1)
    sql = "select stat_date, count(*) from marts.aipl_daily group by stat_date order by stat_date"
    before = target.warehouse.query(sql)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize([defs.resolve_assets_def(AIPL_KEY)], instance=instance,
                                tags={"dagster/asset_partition_range_start": first.isoformat(),
                                      "dagster/asset_partition_range_end": last.isoformat()})
        assert result.success
        events = result.get_asset_materialization_events()
        assert sorted(e.materialization.partition for e in events if e.asset_key == AIPL_KEY) == \
            [first.isoformat(), last.isoformat()]
        meta = next(e.materialization.metadata for e in events if e.asset_key == AIPL_KEY)
        in_days = sum(n for day, n in before if str(day) in (str(first), str(last)))
        assert meta["rows_in_days"].value == in_days > 0
    assert target.warehouse.query(sql) == before  # the two days recomputed, the others kept


def test_the_models_train_and_score_the_same_on_spark(spark, duck):
    """Training reads the features from Spark in batches, keeps its versions in the state store
    and writes its scores and recommendations to Spark: the same choices, figures, scores and
    recommendations as on DuckDB."""
    import pandas as pd

    from ml import recommend as rc
    from ml import repurchase as rp
    from ml.pools import load_pools
    from openaudience.segments.engine import build
    from openaudience.segments.source import AUDIENCE_DIR, Catalog, load_project

    target, _ = spark
    config = rp.load_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"min_users": 100})})
    project = load_project(AUDIENCE_DIR, Catalog.from_project())
    tasks = rc.load_config()
    picks = next(t for t in tasks.tasks if t.name == "shanghai_beauty_picks")
    out = {}
    for engine, t in (("duckdb", duck), ("spark", target)):
        wh = t.warehouse
        training = rp.train(wh, config)
        rp.activate(wh, training.version)
        rp.score(wh)
        scores = pd.DataFrame(wh.query(f"select one_id, probability, rank, decile from {rp.SCORES_TABLE}"),
                              columns=["one_id", "probability", "rank", "decile"])
        chosen = rc.train(wh)
        build(project, project.upstream([picks.audience]), dt.date.fromisoformat(AS_OF), wh=wh)
        rc.run_task(wh, picks, tasks, load_pools())
        recs = pd.DataFrame(wh.query("select one_id, item_id, rank, score from ml.recommendations "
                                     "where task = %s", [picks.name]),
                            columns=["one_id", "item_id", "rank", "score"])
        out[engine] = (training.metrics, scores.sort_values("one_id").reset_index(drop=True),
                       (chosen.chosen, chosen.test.round(9).to_dict("records")),
                       recs.sort_values(["one_id", "rank"]).reset_index(drop=True))
    (m_duck, s_duck, c_duck, r_duck), (m_spark, s_spark, c_spark, r_spark) = out["duckdb"], out["spark"]
    for name, figures in m_duck.items():
        assert figures == pytest.approx(m_spark[name]), name
    assert len(s_duck) > 500
    pd.testing.assert_frame_equal(s_duck, s_spark, check_dtype=False)
    assert c_duck == c_spark and len(r_duck) > 0
    pd.testing.assert_frame_equal(r_duck, r_spark, check_dtype=False, atol=1e-9)


@pytest.mark.parametrize("args", [
    ("status",),
    ("report", "rfm", "rfm_default"),
    ("report", "aipl", "default", "--start", AIPL_HISTORY_START, "--end", AS_OF),
    ("report", "pivot", "--tags", "gender,channels_used"),
    ("report", "audience", "top_spenders"),
    ("audience", "count", "shanghai_big_spenders", "--as-of", AS_OF),
    ("audience", "list"),
    ("deliver", "status"),
    ("journey", "list"),
    ("journey", "tick"),
])
def test_the_commands_people_read_work_on_spark(spark, args, tmp_path):
    """What people read (status, the HTML reports with a multi-value tag, an audience, the runs,
    the journey files) and a journey tick work on Spark."""
    target, _ = spark
    done = target.oa(*args, *(("--out", str(tmp_path / "r.html")) if args[0] == "report" else ()))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


PG_STATE_JOURNEY = """\
name: pg_state
trigger: {audience: pg_people}
steps:
  - behavior_branch:
      id: bought
      event: purchase
      window_days: 7
      look: back
      did: [end]
      did_not:
        - send: {id: one, destination: pg_first}
        - generate_audience: {id: gen, name: gen_pg_people}
"""


def test_a_postgresql_state_store_beside_spark_runs_a_journey(spark, pg_cluster, tmp_path):
    """OA_STATE_TARGET=postgres beside the same Spark warehouse: the audience versions, the
    journey's tables and the delivery log in PostgreSQL, read a batch at a time through a
    server-side cursor when they go to Spark (the people due), and filled from Spark (entrants,
    branches, the send's ids) in its transactions."""
    import pyarrow as pa

    from connectors.webhook_receiver import WebhookReceiver
    from openaudience.journeys import engine
    from openaudience.segments.engine import MEMBERS, latest, write_version
    from tests.test_journey_kill import SECRET, T0, _context

    target, _ = spark
    env = {**target.env, "OA_STATE_TARGET": "postgres", **pg_cluster.reset_database("spark_state")}
    wh = Target(name="spark", env=env).warehouse
    assert wh.state.engine == "postgres"
    ids = [f"pg{i:04d}" for i in range(300)]
    write_version(wh, "pg_people", "one_id", pa.table({"one_id": ids, "id_value": ids}), T0.date(), "test")
    receiver = WebhookReceiver(secret=SECRET).start()
    a, d, j = (tmp_path / name for name in ("audiences", "destinations", "journeys"))
    for folder, name, text in (
            (a, "pg_people", "name: pg_people\nid_type: one_id\n"
                             "where:\n  tag: {name: city, is_not_null: true}\n"),
            (d, "pg_first", f"name: pg_first\naudience: pg_people\nchannel: webhook\nmode: full\n"
                            f"schedule: manual\nbatch_size: 50\nwebhook:\n  url: {receiver.url}\n"
                            "  secret_env: OA_TEST_KILL_SECRET\n  params: {template: first}\n"),
            (j, "pg_state", PG_STATE_JOURNEY)):
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.yml").write_text(text)
    try:
        ctx = _context(wh, a, d, j, {"OA_TEST_KILL_SECRET": SECRET})
        assert engine.start(ctx, "pg_state", T0) == "running"
        [r] = engine.tick(ctx, now=T0 + dt.timedelta(minutes=1))
        assert r.status == "completed" and not r.error, r
        got = sorted(m["user_profile"]["target_id"] for m in receiver.state.accepted.values())
        assert got == ids  # nobody made these purchases: each did_not, and each was sent once
        counts = engine.node_counts(wh, "pg_state")
        assert counts["bought"]["branches"] == {"did_not": 300} and counts["gen"]["reached"] == 300
        version = latest(wh, "gen_pg_people")
        assert version["size"] == 300 and wh.query(
            f"select count(distinct one_id) from {MEMBERS} where audience = 'gen_pg_people' and version = %s",
            [version["version"]]) == [(300,)]
        assert wh.state.table_exists("journeys", "journey_positions")
        assert not wh.table_exists("journeys", "journey_positions")
    finally:
        receiver.stop()
        with wh.connect() as sconn:  # the Spark warehouse is shared with the other tests
            for audience in ("pg_people", "gen_pg_people"):
                wh.delete_partition(sconn, MEMBERS, {"audience": audience, "version": 1})


def test_a_journey_killed_mid_send_beside_spark_resumes_with_no_one_sent_twice(spark, tmp_path):
    """A tick in a process of its own, killed (SIGKILL) while its send is half acknowledged: the
    next tick resumes the run from the state store, and the receiver has everyone once, nobody
    skipped, only what was acknowledged at the kill sent again. Local mode's catalog admits one
    process, so this one stops its session first: the module's last test, nothing after needs it."""

    from connectors.webhook_receiver import WebhookReceiver
    from openaudience.core import spark as spark_session
    from openaudience.journeys import engine
    from tests.test_journey_kill import (
        PEOPLE,
        SECRET,
        T0,
        _context,
        _people,
        _project,
        _tick_and_kill_at_half,
        _webhook,
    )

    target, _ = spark
    wh = target.warehouse
    ids = _people(wh, PEOPLE)  # a version in the state store, its members on Spark
    receiver = WebhookReceiver(secret=SECRET, delay_s=0.05).start()
    a, d, j = _project(tmp_path, {"first": _webhook("first", receiver.url, "first")},
                       {"kill": {"trigger": {"audience": "people"},
                                 "steps": [{"send": {"id": "one", "destination": "first"}}]}})
    environ = {"OA_TEST_KILL_SECRET": SECRET}
    ctx = _context(wh, a, d, j, environ)
    engine.start(ctx, "kill", T0)
    spark_session.stop()
    acked = _tick_and_kill_at_half(target.env, environ, (a, d, j), receiver, seconds=180)
    assert PEOPLE * 0.5 <= len(acked) < PEOPLE
    assert engine.node_counts(wh, "kill")["one"]["waiting"] == PEOPLE  # sending, in a run to resume
    [r] = engine.tick(ctx, now=T0 + dt.timedelta(minutes=1))
    receiver.stop()
    assert r.status == "completed" and r.moved["one"] == PEOPLE, r
    got = [m["user_profile"]["target_id"] for m in receiver.state.accepted.values()]
    assert sorted(got) == ids and len(got) == len(set(got))  # nobody skipped, nobody acted on twice
    assert {k for k, n in receiver.state.seen.items() if n > 1} <= acked
