"""Event-triggered journeys: the trigger and its component allow-list checked at the file's
lines, and end to end on both engines: events posted to a real collector (`oa events serve` on
loopback) by ten concurrent clients start journeys whose webhook sends reach a local receiver
within seconds, with the triggering event's attributes filled in, and the trigger limits (once;
three times a day; min_count) hold however the events fall into ingests."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.settings import PROJECT_ROOT
from tests.conftest import OA
from tests.support.event_journeys import members_of, purchase, run_posted_events


def _problems(folder: Path, name: str, text: str) -> str:
    from openaudience.journeys.source import load_journeys

    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yml").write_text(text)
    journeys = load_journeys(folder)
    return "\n".join(str(p) for p in journeys.problems.get(name, []))


def test_an_event_trigger_and_its_steps_are_checked_at_their_lines(tmp_path):
    message = _problems(tmp_path, "bad", """\
name: bad
trigger:
  event: app_purchase
  channel: H5 site
  attributes:
    any:
      - attribute: {name: colour, in: [red]}
      - attribute: {name: amount, in: [x]}
  limit: {times: 3, within_days: 1}
steps:
  - send: {destination: high_value_export}
  - wait: {days: 1}
  - behavior_branch:
      event: h5_login
      window_days: 2
      did: [end]
""")
    assert "bad.yml:4: trigger.channel: event app_purchase belongs to channel 'Shop app'" in message
    assert "bad.yml:7: trigger.attributes.any[0].attribute.name: unknown attribute 'colour'" in message
    assert "bad.yml:8: trigger.attributes.any[1].attribute.in: operator 'in' does not apply to numeric " \
           "attribute 'amount'" in message
    assert "bad.yml:11: steps[0].send.destination: destination high_value_export sends to file" in message
    assert "bad.yml:12: steps[1].wait: wait is not available in an event-triggered journey" in message
    assert "bad.yml:15: steps[2].behavior_branch.window_days: the window of a behaviour branch in an " \
           "event-triggered journey is at most a day" in message
    assert "steps[2].behavior_branch.event: event h5_login is of channel h5-site" in message


@pytest.mark.parametrize(("trigger", "error"), [
    ("event: app_purchase\n  channel: shop-app\n  limit: {times: 11, within_days: 7}",
     "trigger.limit.Limit.times: Input should be less than or equal to 10"),
    ("event: app_purchase\n  channel: shop-app\n  limit: {times: 2, within_days: 8}",
     "trigger.limit.Limit.within_days: Input should be less than or equal to 7"),
    ("event: app_purchase\n  channel: shop-app\n  limit: twice",
     "'twice' is not a trigger limit: write once, or {times: Y, within_days: X}"),
    ("event: app_purchase\n  channel: shop-app",
     "an event trigger needs limit (spec D §2.3)"),
    ("event: app_purchase\n  channel: shop-app\n  limit: once\n  schedule: {daily: \"09:00\"}",
     "schedule: belong to an audience trigger"),
    ("audience: cart_abandoners\n  limit: once", "limit: belong to an event trigger"),
    ("event: app_purchased\n  channel: shop-app\n  limit: once",
     "trigger.event: unknown event 'app_purchased' (did you mean 'app_purchase'?)"),
])
def test_bad_event_triggers_say_what_to_write(tmp_path, trigger, error):
    message = _problems(tmp_path, "t", f"name: t\ntrigger:\n  {trigger}\nsteps:\n  - send: "
                                       "{destination: app_thank_you_webhook}\n")
    assert error in message, message


def test_event_variables_need_an_event_journey_with_that_attribute(tmp_path):
    # an audience journey has no triggering event to read
    message = _problems(tmp_path, "a", "name: a\ntrigger: {audience: cart_abandoners}\n"
                                       "steps:\n  - send: {destination: app_thank_you_webhook}\n")
    assert "destination app_thank_you_webhook fills amount, item from the triggering event; only an " \
           "event-triggered journey has one" in message
    # the H5 login has no item_id or amount
    message = _problems(tmp_path, "h", "name: h\ntrigger: {event: h5_login, channel: H5 site, limit: once}\n"
                                       "steps:\n  - send: {destination: app_thank_you_webhook}\n")
    assert "variable amount reads attribute 'amount', which event h5_login does not have" in message
    assert "variable item reads attribute 'item_id', which event h5_login does not have" in message


def test_a_destination_with_event_variables_sends_only_for_journeys(tmp_path):
    import shutil

    from openaudience.delivery.source import DestinationErrors, load_destinations

    folder = tmp_path / "destinations"
    folder.mkdir()
    text = (PROJECT_ROOT / "destinations" / "app_thank_you_webhook.yml").read_text()
    text = text.replace("schedule: journey ", "schedule: daily   ")
    (folder / "app_thank_you_webhook.yml").write_text(text)
    shutil.copy(PROJECT_ROOT / "destinations" / "_policies.yml", folder)
    with pytest.raises(DestinationErrors) as caught:
        load_destinations(folder)
    assert "variables.item.event: an event variable is filled when an event-triggered journey sends; " \
           "give the destination schedule: journey" in str(caught.value)


def test_the_shipped_event_journey_is_valid():
    from openaudience.journeys.source import load_journeys

    journeys = load_journeys()
    assert "app_purchase_thank_you" in journeys.plans, journeys.problems.get("app_purchase_thank_you")
    trigger = journeys.plans["app_purchase_thank_you"].journey.trigger
    assert trigger.is_event and trigger.label == "event:app_purchase"


def test_an_event_a_journey_uses_cannot_be_removed(tmp_path):
    """Spec §7.2: the events the shipped journey triggers and branches on are protected; a
    definitions folder without the cart event is refused, naming the journey."""
    from openaudience.events.source import changes, load_events
    from openaudience.journeys.source import used_events

    used = used_events()
    assert used["app_purchase"] == ["app_purchase_thank_you"]
    assert used["app_add_to_cart"] == ["app_purchase_thank_you"]
    folder = tmp_path / "events"
    folder.mkdir()
    text = (PROJECT_ROOT / "events" / "shop_app.yml").read_text()
    cut = text.index("  - code: app_add_to_cart")
    (folder / "shop_app.yml").write_text(text[:cut])
    refused = changes(load_events(folder), None, used)
    assert refused == ["event app_add_to_cart cannot be removed: journey app_purchase_thank_you "
                       "triggers on it"]


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def journey_engines(built_engines, pg_cluster, tmp_path_factory):
    """This module's own copy of `built_engines` (it starts journeys and stores events)."""
    from tests.conftest import own_copy_of_built

    return own_copy_of_built(built_engines, pg_cluster, tmp_path_factory, "event_journeys")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ("duckdb", "postgres"))
def test_posted_events_start_journeys_whose_sends_arrive_within_seconds(journey_engines, engine, tmp_path):
    # two followers at once on PostgreSQL: one ingests at a time
    arrived = run_posted_events(journey_engines[engine], tmp_path, followers=2 if engine == "postgres" else 1)
    assert arrived < 30, f"the sends took {arrived:.1f} s"


@pytest.mark.slow
def test_oa_events_follow_runs_until_its_time_is_up_and_says_what_it_did(journey_engines, tmp_path):
    """The command line: `oa events ingest` enters people and says so; `oa events follow` sends."""
    from openaudience.delivery.source import load_destinations
    from openaudience.events import messages as m
    from openaudience.events.log import EventLog, log_dir
    from openaudience.events.source import load_events
    from openaudience.journeys import engine as journeys
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    target = journey_engines["duckdb"]
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(secret=secret).start()
    env = {**target.env, "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret}
    project = load_project()
    dests = load_destinations(audiences=project)
    ctx = journeys.Context(target.warehouse, load_journeys(project=project, dests=dests), dests, project)
    try:
        if journeys.journey_row(ctx.wh, "app_purchase_thank_you") is not None:
            journeys.forget(ctx, "app_purchase_thank_you")
        journeys.start(ctx, "app_purchase_thank_you")
        member, mobile = members_of(target.warehouse, 20)[-1]  # not one the other tests messaged (caps)
        log = EventLog.open(log_dir(target.settings.home))
        log.append(m.judge_events([purchase(member, 100, "42", "P-cli")], load_events(), "shop-app").records)
        log.close()
        run = subprocess.run([OA, "events", "ingest"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr
        assert "journey app_purchase_thank_you: 1 entered" in run.stdout
        run = subprocess.run([OA, "events", "follow", "--seconds", "3"], env=env, cwd=PROJECT_ROOT,
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert "journey app_purchase_thank_you: moved" in run.stdout and "sent 1" in run.stdout, run.stdout
        [message] = receiver.state.accepted.values()
        assert message["user_profile"]["target_id"] == mobile
        assert message["params"]["vars"] == {"item": "P-cli", "amount": "42"}
    finally:
        receiver.stop()
        journeys.stop(ctx, "app_purchase_thank_you")


def test_a_journey_needs_the_live_events_view_to_start(target, tmp_path):
    """Before the first build the warehouse cannot resolve events to people: start says so."""
    from openaudience.core.errors import UserError
    from openaudience.delivery.source import load_destinations
    from openaudience.journeys import engine as journeys
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    project = load_project()
    dests = load_destinations(audiences=project)
    ctx = journeys.Context(target.warehouse, load_journeys(project=project, dests=dests), dests, project)
    with pytest.raises(UserError, match="marts.fct_events_live, which the warehouse does not have yet; "
                                        "run `oa build` first"):
        journeys.start(ctx, "app_purchase_thank_you")


@pytest.mark.slow
def test_the_dagster_ingest_job_moves_event_journeys_and_shows_them(journey_engines, tmp_path, monkeypatch):
    """Without `oa events follow`, the sensor's job does the same pass: the person enters, the
    thank-you goes out, and the journey's asset records it."""
    import dagster as dg

    from openaudience.delivery.source import load_destinations
    from openaudience.events import messages as m
    from openaudience.events.log import EventLog, log_dir
    from openaudience.events.source import load_events
    from openaudience.journeys import engine as journeys
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project
    from orchestration.definitions import build_definitions
    from orchestration.resources import WarehouseResource
    from tests.conftest import point_process_at

    target = journey_engines["duckdb"]
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(secret=secret).start()
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    monkeypatch.setenv("OA_CRM_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("OA_CRM_WEBHOOK_SECRET", secret)
    try:
        project = load_project()
        dests = load_destinations(audiences=project)
        ctx = journeys.Context(target.warehouse, load_journeys(project=project, dests=dests), dests, project)
        if journeys.journey_row(ctx.wh, "app_purchase_thank_you") is not None:
            journeys.forget(ctx, "app_purchase_thank_you")
        journeys.start(ctx, "app_purchase_thank_you")
        member, mobile = members_of(target.warehouse, 30)[-1]
        log = EventLog.open(log_dir(target.settings.home))
        log.append(m.judge_events([purchase(member, 200, "77", "P-dagster")], load_events(),
                                  "shop-app").records)
        log.close()
        defs = build_definitions()
        with dg.instance_for_test() as instance:
            result = defs.resolve_job_def("events_ingest").execute_in_process(
                instance=instance, resources={"warehouse": WarehouseResource()})
        assert result.success
        keys = {e.materialization.asset_key for e in result.get_asset_materialization_events()}
        assert dg.AssetKey(["journeys", "app_purchase_thank_you"]) in keys, keys
        [message] = receiver.state.accepted.values()
        assert message["user_profile"]["target_id"] == mobile
        assert message["params"]["vars"] == {"item": "P-dagster", "amount": "77"}
        journeys.stop(ctx, "app_purchase_thank_you")
    finally:
        receiver.stop()


@pytest.mark.slow
def test_live_views_a_partial_build_drops_come_back_and_no_entry_is_lost_meanwhile(journey_engines):
    """PostgreSQL drops a view with the table it reads when dbt replaces that table: `oa build
    --select fct_behaviors` makes the live views again. A view gone under a running event journey
    stops the ingest with what to run (the events wait in the log); then the person enters."""
    from openaudience.core.errors import UserError
    from openaudience.delivery.source import load_destinations
    from openaudience.events import messages as m
    from openaudience.events.ingest import ingest
    from openaudience.events.log import EventLog, log_dir
    from openaudience.events.source import load_events
    from openaudience.journeys import engine as journeys
    from openaudience.journeys import live
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    target = journey_engines["postgres"]
    wh, home = target.warehouse, target.settings.home
    run = subprocess.run([OA, "build", "--select", "fct_behaviors"], env=target.env, cwd=PROJECT_ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert wh.table_exists("marts", "fct_events_live") and wh.table_exists("marts", "fct_behaviors_live")

    project = load_project()
    dests = load_destinations(audiences=project)
    ctx = journeys.Context(wh, load_journeys(project=project, dests=dests), dests, project)
    if journeys.journey_row(wh, "app_purchase_thank_you") is not None:
        journeys.forget(ctx, "app_purchase_thank_you")
    journeys.start(ctx, "app_purchase_thank_you")
    with wh.connect() as conn:
        wh.execute(conn, "drop view marts.fct_behaviors_live")
        wh.execute(conn, "drop view marts.fct_events_live")
    before = wh.query("select count(*) from events.events")[0][0]
    member, _ = members_of(wh, 40)[-1]
    log = EventLog.open(log_dir(home))
    log.append(m.judge_events([purchase(member, 300, "15", "P-view")], load_events(), "shop-app").records)
    log.close()
    with pytest.raises(UserError, match="run `oa build --select fct_events_live fct_behaviors_live`"):
        ingest(wh, home, on_events=live.enter)
    assert wh.query("select count(*) from events.events")[0][0] == before  # nothing half-stored
    target.dbt("run", "--select", "fct_events_live fct_behaviors_live")
    done = ingest(wh, home, on_events=live.enter)
    assert done.events == 1 and done.entered == {"app_purchase_thank_you": 1}
    journeys.stop(ctx, "app_purchase_thank_you")
