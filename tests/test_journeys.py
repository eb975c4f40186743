"""Journeys on both engines against a real webhook receiver: the language's checks with file and
line, cycles and re-entry, every branch kind, holdouts, sends through the delivery engine (keys,
suppression, caps), pause/resume/stop, the changed-file rule, and the concurrency limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.errors import UserError
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery import store
from openaudience.delivery.source import load_destinations
from openaudience.journeys import engine
from openaudience.journeys.clock import to_utc
from openaudience.journeys.source import JourneyErrors, load_journeys

ENGINES = ["duckdb", "postgres"]
SECRET = "journey-secret"
TZ = "Asia/Shanghai"
T0 = to_utc(dt.datetime(2026, 6, 20, 9, 0), TZ)  # 9 days before the data's as-of date
TODAY = dt.date(2026, 6, 29)


# -- the language, without a warehouse -------------------------------------------------------------
def _write(folder: Path, body: dict, name: str = "j") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump({"name": name, **body}, sort_keys=False))
    return path


BASE = {"trigger": {"audience": "cart_abandoners"},
        "steps": [{"send": {"destination": "cart_reminder_webhook"}}]}


def test_the_shipped_journeys_are_valid():
    journeys = load_journeys()
    assert not journeys.problems, journeys.all_problems
    assert {"cart_abandon_reminder", "welcome_offer_ab"} <= set(journeys.plans)
    plan = journeys.plans["cart_abandon_reminder"]
    assert list(plan.nodes) == ["start", "first_reminder", "wait_1", "bought_since", "end_1",
                                "coupon_reminder"]
    assert plan.nodes["bought_since"].children == (("did", "end_1"), ("did_not", "coupon_reminder"))


@pytest.mark.parametrize("steps, line, expected", [
    ([{"wait": {"days": 3}}], 5, "steps[0].wait: the journey is incomplete: every path ends with an action"),
    ([{"send": {"destination": "cart_reminder_webhok"}}], 6,
     "unknown destination 'cart_reminder_webhok' (did you mean 'cart_reminder_webhook'?)"),
    ([{"wait": {"days": 31}}, "end"], 5, "31 days is longer than 30 days, the longest wait"),
    ([{"random_branch": {"branches": [{"name": "a", "percent": 30, "steps": ["end"]},
                                      {"name": "b", "percent": 60, "steps": ["end"]}]}}], 5,
     "the percentages add up to 90; they must add up to 100"),
    ([{"copy_branch": {"branches": [{"name": f"b{i}", "steps": ["end"]} for i in range(11)]}}], 6,
     "List should have at most 10 items"),
    ([{"result_branch": {"after": {"hours": 2}, "branches": [{"result": "success", "steps": ["end"]}]}}], 5,
     "a result_branch follows a send (to sms, email or webhook) in the same list"),
    ([{"send": {"destination": "cart_coupon_webhook"}},
      {"result_branch": {"after": {"hours": 2}, "branches": [{"result": "success", "steps": ["end"]}]}}], 7,
     "webhook cart_coupon_webhook collects no receipts"),
    ([{"behavior_branch": {"event": "purchse", "window_days": 3, "did": ["end"]}}], 6,
     "unknown behaviour type 'purchse' (did you mean 'purchase'?)"),
    ([{"behavior_branch": {"event": "purchase", "window_days": 16, "did": ["end"]}}], 7,
     "less than or equal to 15"),
    ([{"tag_branch": {"branches": [{"name": "sh", "where": {"tag": {"name": "cty", "in": ["x"]}},
                                    "steps": ["end"]}]}}], 10, "unknown tag 'cty' (did you mean 'city'?)"),
    ([{"copy_branch": {"branches": [{"name": "a", "steps": ["end"]}, {"name": "b", "steps": []}]}}], 11,
     "branch b has no steps: the journey is incomplete"),
    ([{"random_branch": {"branches": [{"name": "a", "percent": 50, "steps": ["end"]},
                                      {"name": "b", "percent": 50, "steps": ["end"]}]}}, "end"], 5,
     "a random_branch ends its list of steps"),
    ([{"sned": {"destination": "x"}}], 5, "unknown step 'sned' (did you mean 'send'?)"),
    ([{"send": {"destination": "cart_reminder_webhook", "id": "x"}},
      {"send": {"destination": "cart_reminder_webhook", "id": "x"}}], 10, "id 'x' is used twice"),
])
def test_bad_journey_files_name_file_line_and_field(tmp_path, steps, line, expected):
    path = _write(tmp_path / "journeys", {"trigger": {"audience": "cart_abandoners"}, "steps": steps})
    journeys = load_journeys(path.parent)
    assert "j" not in journeys.plans
    message = "\n".join(str(p) for p in journeys.problems["j"])
    assert f"j.yml:{line}: " in message, message
    assert expected in message, message
    with pytest.raises(JourneyErrors):
        journeys.get("j")


@pytest.mark.parametrize("trigger, expected", [
    ({"audience": "cart_abandoner"}, "trigger.audience: unknown audience 'cart_abandoner' (did you mean "
                                     "'cart_abandoners'?)"),
    ({"audience": "cart_abandoners", "schedule": {"weekly": {"day": "monday", "at": "25:00"}}},
     "j.yml:7: trigger.schedule.weekly.at: '25:00' is not a time of day"),
    ({"audience": "cart_abandoners", "schedule": "sometimes"},
     "j.yml:4: trigger.schedule: 'sometimes' is not a schedule: write once, or one of"),
    ({"audience": "cart_abandoners", "reentry": "twice"}, "'twice' is not a re-entry policy"),
    ({"audience": "cart_abandoners", "reentry": {"after_days": 0}}, "greater than or equal to 1"),
])
def test_bad_triggers(tmp_path, trigger, expected):
    path = _write(tmp_path / "journeys", {**BASE, "trigger": trigger})
    message = "\n".join(str(p) for p in load_journeys(path.parent).problems["j"])
    assert expected in message, message
    assert "literal[" not in message, message


def test_a_journey_destination_is_never_delivered_on_its_own():
    from openaudience.delivery.engine import deliver

    dests = load_destinations()
    assert dests.destinations["cart_reminder_webhook"].schedule == "journey"
    with pytest.raises(UserError, match="has schedule: journey: only journeys send through it"):
        deliver(dests, "cart_reminder_webhook", dry_run=True)


def test_a_holdout_needs_a_goal_and_generated_audiences_must_not_feed_their_own_trigger(tmp_path):
    folder = tmp_path / "journeys"
    _write(folder, {**BASE, "holdout": {"percent": 10}}, "j")
    message = "\n".join(str(p) for p in load_journeys(folder).problems["j"])
    assert "holdout: a holdout measures the lift on the goal: give goal: too" in message
    # a generates x, b enters x and generates y, a enters... its own trigger through b: a cycle
    _write(folder, {"trigger": {"audience": "y_audience"},
                    "steps": [{"generate_audience": {"name": "x_audience"}}]}, "j")
    _write(folder, {"trigger": {"audience": "x_audience"},
                    "steps": [{"generate_audience": {"name": "y_audience"}}]}, "k")
    from openaudience.segments.source import load_project as lp

    project = lp()
    project.external.update({"x_audience": "j", "y_audience": "k"})
    journeys = load_journeys(folder, project)
    message = "\n".join(str(p) for p in journeys.all_problems)
    assert "journeys feed each other's triggers through generated audiences in a cycle" in message, message


# -- running, on both engines -----------------------------------------------------------------------
@pytest.fixture()
def receiver():
    r = WebhookReceiver(secret=SECRET).start()
    yield r
    r.stop()


def _reset(wh) -> None:
    from openaudience.core.schema import operational as op

    with wh.connect() as conn:
        wh.ensure_schema(conn)
        for table in (*op.JOURNEY_TABLES, op.DELIVERY_RUNS, op.DELIVERY_LOG, op.DELIVERY_STATE,
                      op.DELIVERY_DEAD_LETTERS, op.SUPPRESSION_LIST, op.DELIVERY_RECEIPTS):
            wh.execute(conn, f"delete from {table.relation}")
        wh.execute(conn, "delete from audiences.audience_members where audience like 'gen_%%'" if wh.engine ==
                   "postgres" else "delete from audiences.audience_members where audience like 'gen_%'")


def _context(target, project, receiver, folder: Path | None = None, caps: bool = False):
    """The journeys of `folder` over the project's destinations; without the frequency caps of
    destinations/_policies.yml unless `caps` (they count real time, and these tests send a
    person several messages within seconds)."""
    from openaudience.delivery.spec import Policies

    dests = load_destinations(audiences=project)
    if not caps:
        dests.policies = Policies()
    journeys = load_journeys(folder or PROJECT_ROOT / "journeys", project, dests)
    env = {"OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": SECRET}
    return engine.Context(target.warehouse, journeys, dests, project, environ=env)


def _members(wh, audience: str) -> dict[str, str]:
    return dict(wh.query("select one_id, id_value from audiences.audience_members m where audience = %s and "
                         "version = (select max(version) from audiences.audience_versions v where "
                         "v.audience = m.audience and kept)", [audience]))


def _mobiles(wh) -> dict[str, str]:
    return dict(wh.query("select one_id, mobile from marts.user_tags where mobile is not null"))


@pytest.mark.parametrize("engine_name", ENGINES)
def test_cart_reminder_sends_waits_branches_and_holds_out(built_engines, journey_audiences, receiver,
                                                          engine_name):
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    ctx = _context(target, journey_audiences, receiver)
    members = _members(wh, "cart_abandoners")
    assert len(members) > 50
    assert engine.start(ctx, "cart_abandon_reminder", T0) == "running"
    [first] = engine.tick(ctx, now=T0)
    assert first.cycles_started == [1] and not first.error, first
    held = {o for o in members if engine.bucket(f"cart_abandon_reminder:holdout:{o}") < 1000}
    assert 0 < len(held) < len(members) * 0.2
    sent_first = {m["user_profile"]["target_id"] for m in receiver.state.accepted.values()
                  if m["params"]["template"] == "cart_reminder"}
    assert sent_first == {members[o] for o in members if o not in held}
    assert first.moved == {"start": len(members), "first_reminder": len(members)}
    # nothing more is due until the wait is over
    again = engine.tick(ctx, now=T0 + dt.timedelta(days=2))
    assert again[0].moved == {} and len(receiver.state.accepted) == len(sent_first)
    later = T0 + dt.timedelta(days=3, minutes=1)
    [third] = engine.tick(ctx, now=later)
    assert third.status == "completed", third
    # who bought in the three days of the wait, by the behaviour facts
    lo, hi = T0, T0 + dt.timedelta(days=3)
    bought = {r[0] for r in wh.query("select distinct one_id from marts.fct_behaviors "
                                     "where event_type = 'purchase' "
                                     "and occurred_at >= %s and occurred_at < %s", [lo, hi])
              if r[0] in members}
    coupons = [m for m in receiver.state.accepted.values() if m["params"]["template"] == "cart_coupon"]
    assert {m["user_profile"]["target_id"] for m in coupons} == {members[o] for o in members
                                                                 if o not in held and o not in bought}
    counts = engine.node_counts(wh, "cart_abandon_reminder")
    assert counts["bought_since"]["branches"] == {k: v for k, v in (
        ("did", len(bought)), ("did_not", len(members) - len(bought))) if v}
    assert counts["end_1"]["reached"] == len(bought)
    acts = engine.actions(wh, "cart_abandon_reminder")
    assert [(a["node"], a["status"], a["sent"], a["held_out"]) for a in acts] == [
        ("first_reminder", "succeeded", len(sent_first), len(held)),
        ("coupon_reminder", "succeeded", len(coupons), len(held - bought))]
    keys = [r[0] for r in wh.query(f"select idempotency_key from {store.LOG} "
                                   "where destination = 'cart_coupon_webhook'")]
    assert len(keys) == len(set(keys)) == len(coupons)
    # a journey runs once
    with pytest.raises(UserError, match="has run \\(completed\\); a journey runs once"):
        engine.start(ctx, "cart_abandon_reminder", later)


def _journey_folder(tmp_path: Path, name: str, body: dict) -> Path:
    folder = tmp_path / "journeys"
    _write(folder, body, name)
    return folder


def _sent(receiver, template: str) -> list[str]:
    return sorted(m["user_profile"]["target_id"] for m in receiver.state.accepted.values()
                  if m["params"]["template"] == template)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_every_branch_kind_routes_and_counts(built_engines, journey_audiences, receiver, engine_name,
                                             tmp_path):
    """copy → (tag: Shanghai → send A, other → generate an audience), (time: 09:00 and +2 h → sends),
    (random 30/70 → send B / end); then the result branch after a send with receipts."""
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    folder = _journey_folder(tmp_path, "branches", {
        "trigger": {"audience": "cart_abandoners"},
        "steps": [{"copy_branch": {"id": "copy", "branches": [
            {"name": "by_city", "steps": [{"tag_branch": {"id": "city", "branches": [
                {"name": "shanghai", "where": {"tag": {"name": "city", "in": ["Shanghai"]}},
                 "steps": [{"send": {"id": "send_sh", "destination": "welcome_offer_a"}}]}],
                "other": [{"generate_audience": {"id": "gen", "name": "gen_not_shanghai"}}]}}]},
            {"name": "timed", "steps": [{"time_branch": {"id": "times", "branches": [
                {"name": "nine", "at": "09:00",
                 "steps": [{"send": {"id": "at_nine", "destination": "welcome_offer_b"}}]},
                {"name": "later", "after": {"hours": 2}, "steps": ["end"]}]}}]},
            {"name": "ab", "steps": [{"random_branch": {"id": "split", "branches": [
                {"name": "a", "percent": 30, "steps": [
                    {"send": {"id": "reminder", "destination": "cart_reminder_webhook"}},
                    {"result_branch": {"id": "result", "after": {"hours": 24}, "branches": [
                        {"result": "clicked", "steps": ["end"]},
                        {"result": "success", "steps": ["end"]},
                        {"result": "no_feedback", "steps": [
                            {"send": {"id": "nudge", "destination": "cart_coupon_webhook"}}]}],
                        "other": ["end"]}}]},
                {"name": "b", "percent": 70, "steps": ["end"]}]}}]}]}}]})
    ctx = _context(target, journey_audiences, receiver, folder)
    assert not ctx.journeys.problems, ctx.journeys.all_problems
    members = _members(wh, "cart_abandoners")
    cities = dict(wh.query("select one_id, city from marts.user_tags"))
    start_at = to_utc(dt.datetime(2026, 6, 20, 7, 30), TZ)
    engine.start(ctx, "branches", start_at)
    [r] = engine.tick(ctx, now=start_at)
    assert not r.error, r
    shanghai = {o for o in members if cities.get(o) == "Shanghai"}
    assert 0 < len(shanghai) < len(members)
    assert _sent(receiver, "welcome_offer_a") == sorted(members[o] for o in shanghai)
    gen = _members(wh, "gen_not_shanghai")
    assert set(gen) == set(members) - shanghai
    split_a = {o for o in members if engine.bucket(f"branches:split:{o}") < 3000}
    assert _sent(receiver, "cart_reminder") == sorted(members[o] for o in split_a)
    # the time branch: nobody at 09:00's send before 09:00 local
    assert _sent(receiver, "welcome_offer_b") == []
    counts = engine.node_counts(wh, "branches")
    assert counts["times"]["branches"] == {"copied": len(members)}
    assert counts["at_nine"]["waiting"] == len(members)
    # receipts for the reminder: two clicked, one delivered, the rest nothing yet
    keys = wh.query(f"select one_id, idempotency_key from {store.LOG} "
                    "where destination = 'cart_reminder_webhook' "
                    "order by one_id")
    assert len(keys) == len(split_a) >= 4
    now = dt.datetime(2026, 6, 20, 1, 0)
    receipts = [(keys[0][1], "clicked"), (keys[1][1], "clicked"), (keys[1][1], "delivered"),
                (keys[2][1], "delivered")]
    with wh.connect() as conn:
        for key, status in receipts:
            wh.execute(conn, f"insert into {store.RECEIPTS} (destination, msg_id, idempotency_key, "
                             "status_code, status, received_at, verdict) "
                             "values ('cart_reminder_webhook', %s, %s, '200', %s, %s, "
                             "'accepted')", [key + status, key, status, now])
    nine = to_utc(dt.datetime(2026, 6, 20, 9, 0), TZ)
    [r] = engine.tick(ctx, now=nine)
    assert _sent(receiver, "welcome_offer_b") == sorted(members.values())
    [r] = engine.tick(ctx, now=start_at + dt.timedelta(hours=24, minutes=1))
    assert r.status == "completed", r
    results = engine.node_counts(wh, "branches")["result"]["branches"]
    assert results == {"clicked": 2, "success": 1, "no_feedback": len(split_a) - 3}
    nudged = {o for o, _ in keys[3:]}
    assert _sent(receiver, "cart_coupon") == sorted(members[o] for o in nudged)
    # counts conserve at every condition node
    counts = engine.node_counts(wh, "branches")
    for node in ("city", "split", "result"):
        assert sum(counts[node]["branches"].values()) == counts[node]["reached"], node


@pytest.mark.parametrize("engine_name", ENGINES)
def test_periodic_cycles_reenter_by_policy_and_pause_resume_stop(built_engines, journey_audiences, receiver,
                                                                 engine_name, tmp_path):
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    steps = [{"send": {"destination": "welcome_offer_a"}}, {"wait": {"days": 2}}, "end"]
    folder = tmp_path / "journeys"
    for name, reentry in (("daily_once", "once"), ("daily_every", "every_cycle"),
                          ("daily_after", {"after_days": 3})):
        _write(folder, {"trigger": {"audience": "shanghai_big_spenders", "schedule": {"daily": "09:00"},
                                    "reentry": reentry}, "end_at": "2026-06-26 00:00", "steps": steps}, name)
    ctx = _context(target, journey_audiences, receiver, folder)
    assert not ctx.journeys.problems, ctx.journeys.all_problems
    members = _members(wh, "shanghai_big_spenders")
    day = [to_utc(dt.datetime(2026, 6, 20 + i, 9, 0), TZ) for i in range(7)]
    for name in ("daily_once", "daily_every", "daily_after"):
        engine.start(ctx, name, day[0] - dt.timedelta(hours=1))
    for i in range(6):  # 20th to 25th, one tick a day at 09:00
        engine.tick(ctx, now=day[i])
    entered = {name: [c["entered"] for c in engine.cycles(wh, name)] for name in ("daily_once", "daily_every",
                                                                                   "daily_after")}
    n = len(members)
    assert entered["daily_once"] == [n, 0, 0, 0, 0, 0]
    # inside for two days (the wait ends as the third cycle starts), so every_cycle re-enters them
    # every other day
    assert entered["daily_every"] == [n, 0, n, 0, n, 0]
    # after_days: 3 counts from the last entry: day 0, then day 3; on day 5 the last entry is 2 days old
    assert entered["daily_after"] == [n, 0, 0, n, 0, 0]
    # end_at (26th 00:00): no more cycles; the last one finishes, then the journey is completed
    engine.tick(ctx, now=day[6])
    engine.tick(ctx, now=day[6] + dt.timedelta(days=2))
    assert engine.journey_row(wh, "daily_every")["status"] == "completed"
    keys = [r[0] for r in wh.query(f"select idempotency_key from {store.LOG} "
                                   "where destination = 'welcome_offer_a'")]
    assert len(keys) == len(set(keys)) == 3 * n + n + 2 * n  # every send a key of its own


@pytest.mark.parametrize("engine_name", ENGINES)
def test_operations_statuses_and_the_running_limit(built_engines, journey_audiences, receiver, engine_name,
                                                   tmp_path, monkeypatch):
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    folder = tmp_path / "journeys"
    body = {"trigger": {"audience": "shanghai_big_spenders"},
            "steps": [{"wait": {"hours": 1}}, {"send": {"destination": "welcome_offer_a"}}]}
    for name in ("one", "two"):
        _write(folder, body, name)
    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import Warehouse

    ctx = _context(target, journey_audiences, receiver, folder)
    ctx.wh = Warehouse(load_settings({**target.env, "OA_JOURNEY_MAX_RUNNING": "1"}))
    assert ctx.wh.settings.journey_max_running == 1
    assert engine.start(ctx, "one", T0) == "running"
    assert engine.start(ctx, "two", T0) == "pending"
    with pytest.raises(UserError, match="was started already \\(running\\)"):
        engine.start(ctx, "one", T0)
    [r] = engine.tick(ctx, now=T0)
    assert r.journey == "one" and r.cycles_started == [1]
    assert engine.pause(ctx, "one") == "paused"
    assert engine.journey_row(wh, "two")["status"] == "pending"
    reports = engine.tick(ctx, now=T0 + dt.timedelta(hours=2))  # one paused: two takes the place
    assert [x.journey for x in reports] == ["two"]
    assert _sent(receiver, "welcome_offer_a") == []  # one is paused; two's people wait an hour
    assert engine.resume(ctx, "one") == "pending"
    engine.stop(ctx, "two", T0 + dt.timedelta(hours=2))
    reports = engine.tick(ctx, now=T0 + dt.timedelta(hours=3))
    assert [x.journey for x in reports] == ["one"]
    members = _members(wh, "shanghai_big_spenders")
    assert len(_sent(receiver, "welcome_offer_a")) == len(members)
    assert engine.journey_row(wh, "one")["status"] == "completed"
    row = engine.journey_row(wh, "two")
    assert row["status"] == "stopped"
    assert engine.node_counts(wh, "two")["wait_1"]["stopped"] == len(members)
    with pytest.raises(UserError, match="only a paused or failed journey resumes"):
        engine.resume(ctx, "two")
    # an edit after start: refused (the stored definition runs), with what to do
    _write(folder, {**body, "steps": [{"send": {"destination": "welcome_offer_b"}}]}, "one")
    ctx = _context(target, journey_audiences, receiver, folder)
    rows = {r["journey"]: r for r in engine.statuses(wh, ctx.journeys)}
    assert rows["one"]["changed"] and not rows["two"]["changed"]


@pytest.mark.parametrize("engine_name", ENGINES)
def test_sends_obey_suppression_and_a_missing_credential_fails_the_journey(
        built_engines, journey_audiences, receiver, engine_name, tmp_path):
    from openaudience.delivery.suppression import add as suppress

    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    folder = _journey_folder(tmp_path, "sup", {"trigger": {"audience": "shanghai_big_spenders"},
                                               "steps": [{"send": {"destination": "welcome_offer_a"}}]})
    members = _members(wh, "shanghai_big_spenders")
    mobiles = _mobiles(wh)
    blocked = sorted(members)[:2]
    suppress(wh, "mobile", [mobiles[o] for o in blocked], "unsubscribe", channel="*", source="test")
    ctx = _context(target, journey_audiences, receiver, folder, caps=True)
    ctx.environ = {}
    engine.start(ctx, "sup", T0)
    [r] = engine.tick(ctx, now=T0)
    assert r.status == "failed" and "OA_CRM_WEBHOOK_URL" in r.error, r
    assert engine.journey_row(wh, "sup")["status"] == "failed"
    ctx.environ = {"OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": SECRET}
    assert engine.resume(ctx, "sup", T0) == "running"
    [r] = engine.tick(ctx, now=T0 + dt.timedelta(minutes=1))
    assert r.status == "completed", r
    assert _sent(receiver, "welcome_offer_a") == sorted(mobiles[o] for o in members if o not in blocked)
    [a] = engine.actions(wh, "sup")
    assert a["suppressed"] == 2 and a["sent"] == len(members) - 2
    # the caps of destinations/_policies.yml count journey sends like any other: two webhook
    # messages a week, so a third journey sending to the same people is capped
    for name in ("sup2", "sup3"):
        _write(folder, {"trigger": {"audience": "shanghai_big_spenders"},
                        "steps": [{"send": {"destination": "welcome_offer_b"}}]}, name)
    ctx = _context(target, journey_audiences, receiver, folder, caps=True)
    for name in ("sup2", "sup3"):
        engine.start(ctx, name, T0)
        engine.tick(ctx, [name], now=T0)
    third = engine.actions(wh, "sup3")[0]
    assert third["capped"] == len(members) - 2 and third["sent"] == 0, third


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_simulation_counts_what_would_happen_and_leaves_nothing_behind(
        built_engines, journey_audiences, receiver, engine_name):
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    ctx = _context(target, journey_audiences, receiver)
    members = _members(wh, "cart_abandoners")
    start_at = T0
    result = engine.simulate(ctx, "cart_abandon_reminder", start_at, start_at + dt.timedelta(days=10))
    assert result.row["status"] == "completed" and result.still_inside == 0
    counts = engine.node_counts(wh, result.plan.name)
    assert counts["start"]["reached"] == len(members)
    held = {o for o in members if engine.bucket(f"cart_abandon_reminder:holdout:{o}") < 1000}
    assert counts["start"]["held_out"] == len(held)  # the same draw as the real journey
    acts = {a["node"]: a for a in engine.actions(wh, result.plan.name)}
    assert acts["first_reminder"]["status"] == "would_send"
    assert acts["first_reminder"]["pending"] == len(members) - len(held)
    bought = {r[0] for r in wh.query("select distinct one_id from marts.fct_behaviors where "
                                     "event_type = 'purchase' and occurred_at >= %s and occurred_at < %s",
                                     [start_at, start_at + dt.timedelta(days=3)]) if r[0] in members}
    assert counts["bought_since"]["branches"].get("did", 0) == len(bought)
    from openaudience.journeys.report import journey_page

    page = journey_page(wh, result.plan, result.row, simulated=True)
    assert "(simulated)" in page.title and len(page.specs) >= 2
    engine.drop_simulation(ctx, "cart_abandon_reminder")
    assert receiver.state.accepted == {}  # nothing was sent
    for table in ("journeys.journeys", "journeys.journey_positions", "journeys.journey_actions",
                  "delivery.delivery_runs", "delivery.delivery_log"):
        assert wh.query(f"select count(*) from {table}") == [(0,)], table


def test_the_cli_validates_starts_ticks_reports_and_shows_in_dagster(
        built_engines, journey_audiences, receiver, tmp_path, monkeypatch):
    import dagster as dg

    from tests.conftest import point_process_at

    target = built_engines["duckdb"]
    wh = target.warehouse
    _reset(wh)
    point_process_at(target, monkeypatch, tmp_path / "dagster", keep=("OA_CRM_",))
    monkeypatch.setenv("OA_CRM_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("OA_CRM_WEBHOOK_SECRET", SECRET)
    env = {**target.env, "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": SECRET,
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    from tests.support.hostile import run_main

    def oa(*args):
        return run_main(list(args), env)

    done = oa("journey", "validate")
    assert done.returncode == 0 and "journey file(s) valid" in done.stdout, done.stderr
    done = oa("journey", "list")
    assert "cart_abandon_reminder" in done.stdout and "not_started" in done.stdout, done.stdout
    done = oa("journey", "start", "cart_abandon_reminder", "--at", "2026-06-20 09:00")
    assert done.returncode == 0 and "running" in done.stdout, done.stderr
    done = oa("journey", "tick", "--at", "2026-06-20 09:00")
    assert done.returncode == 0, done.stderr
    assert "cart_abandon_reminder: running; cycle 1 started" in " ".join(done.stdout.split()), done.stdout
    members = _members(wh, "cart_abandoners")
    held = {o for o in members if engine.bucket(f"cart_abandon_reminder:holdout:{o}") < 1000}
    assert len(receiver.state.accepted) == len(members) - len(held)
    done = oa("journey", "tick", "--at", "2026-06-23 09:01")
    assert done.returncode == 0 and "completed" in done.stdout, done.stdout + done.stderr
    done = oa("journey", "status", "cart_abandon_reminder")
    assert done.returncode == 0 and "bought_since" in done.stdout and "coupon_reminder" in done.stdout
    done = oa("report", "journey", "cart_abandon_reminder", "--out", str(tmp_path / "j.html"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "j.html").read_text()
    assert "Holdout and lift" in html and "people per step" in html
    done = oa("journey", "start", "cart_abandon_reminder")
    assert done.returncode == 2 and "a journey runs once" in done.stderr
    done = oa("journey", "tick", "--at", "yesterday")
    assert done.returncode == 2 and "--at must be a local date and time" in done.stderr
    # what the CLI did shows on the journey's asset in Dagster
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["journeys", "cart_abandon_reminder"]))
        meta = event.asset_materialization.metadata
    assert meta["status"].value == "completed" and meta["source"].value == "cli"
    assert meta["entered"].value == len(members)
    assert meta["flow"].value.startswith("![cart_abandon_reminder: people per step](data:image/png;base64,")
    # the code location: an asset per journey after its audience, the due sensor, running
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["audiences", "cart_abandoners"]) in graph.get(
        dg.AssetKey(["journeys", "cart_abandon_reminder"])).parent_keys
    sensor = defs.get_sensor_def("journeys_due")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.DagsterInstance.get() as instance:
        assert sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests == []
    done = oa("journey", "start", "welcome_offer_ab")
    assert done.returncode == 0, done.stderr
    with dg.DagsterInstance.get() as instance:
        [request] = sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).run_requests
        assert [k.to_user_string() for k in request.asset_selection] == ["journeys/welcome_offer_ab"]
        result = dg.materialize([defs.resolve_assets_def(dg.AssetKey(["journeys", "welcome_offer_ab"]))],
                                instance=instance, selection=[dg.AssetKey(["journeys", "welcome_offer_ab"])])
        assert result.success
        meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["status"].value == "completed"
    assert meta["entered"].value == len(_members(wh, "new_members_this_month")) > 0


def test_the_published_json_schema_is_current_and_accepts_the_shipped_journeys():
    import json

    import jsonschema

    from openaudience.journeys.source import journey_files
    from openaudience.journeys.spec import json_schema

    published = json.loads((PROJECT_ROOT / "docs/journey.schema.json").read_text())
    assert published == json_schema(), "regenerate docs/journey.schema.json (see docs/journeys.md)"
    validator = jsonschema.Draft202012Validator(published)
    for path in journey_files(PROJECT_ROOT / "journeys"):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path.name
    bad = {"name": "x", "trigger": {"audience": "a"}, "steps": [{"sned": {"destination": "d"}}]}
    assert list(validator.iter_errors(bad))


def test_the_lift_has_a_confidence_interval_and_a_verdict():
    from openaudience.journeys.report import Arm

    a = Arm("journey", treated=1000, treated_converted=150, held_out=1000, held_out_converted=100)
    assert a.lift == pytest.approx(0.05)
    low, high = a.interval  # 0.05 ± 1.96 * sqrt(.15*.85/1000 + .1*.9/1000) = 0.05 ± 0.028906
    assert (low, high) == (pytest.approx(0.021094, abs=1e-5), pytest.approx(0.078906, abs=1e-5))
    # pooled 0.125: z = 0.05 / sqrt(.125*.875*2/1000) = 3.3806, two-sided p = 0.000723
    assert a.significant and a.p_value == pytest.approx(0.000723, rel=0.01)
    assert a.verdict().startswith("raises conversion by 5.0 points") and "significant" in a.verdict()
    small = Arm("journey", treated=90, treated_converted=12, held_out=10, held_out_converted=1)
    assert not small.significant and "not significant at 95 %" in small.verdict()
    assert "no comparison" in Arm("journey", 50, 5, 0, 0).verdict()
