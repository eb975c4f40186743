"""Event-triggered journeys end to end, shared by the engines' tests (tests/test_event_journeys.py
on DuckDB and PostgreSQL, tests/test_spark.py beside Spark): events posted to a real collector on
loopback by ten concurrent clients, followed into journeys whose webhook sends reach a local
receiver, with the trigger limits and the triggering event's attributes checked."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from connectors.events import EventClient
from connectors.webhook_receiver import WebhookReceiver

KEY = "event-journey-signing-key"

JOURNEYS = {
    # three thank-yous a day at most, only for purchases of 10 CNY or more, with a cart note to
    # those who add to the cart within ten minutes
    "thanks_thrice": """\
name: thanks_thrice
trigger:
  event: app_purchase
  channel: shop-app
  attributes: {attribute: {name: amount, ">=": 10}}
  limit: {times: 3, within_days: 1}
steps:
  - send: {destination: app_thank_you_webhook}
  - behavior_branch:
      event: app_add_to_cart
      window: {minutes: 10}
      did:
        - send: {destination: app_cart_nudge_webhook}
""",
    # a welcome at the second purchase, once in a lifetime
    "welcome_once": """\
name: welcome_once
trigger:
  event: app_purchase
  channel: Shop app
  min_count: 2
  limit: once
steps:
  - send: {destination: app_thank_you_webhook}
""",
}



def members_of(wh, n: int) -> list[tuple[str, str]]:
    """(member id, mobile) of `n` members whose mobile the warehouse knows."""
    return wh.query("select i.id_value, u.mobile from marts.dim_identities i join marts.user_tags u "
                    "on u.one_id = i.one_id where i.id_type = 'member_id' and u.mobile is not null "
                    f"order by i.id_value limit {int(n)}")


def purchase(member: str, n: int, amount: str, item: str) -> dict:
    return {"customerId": member, "eventCode": "app_purchase", "eventId": f"{member}-buy-{n}",
            "eventTime": int(time.time() * 1000), "extendAttributes": {"item_id": item, "amount": amount}}


def by_journey(wh, receiver: WebhookReceiver) -> dict[str, list[dict]]:
    """The receiver's messages by the journey whose send made them (its run id, task_id)."""
    runs = dict(wh.query("select run_id, journey from journeys.journey_actions where run_id is not null"))
    out: dict[str, list[dict]] = {}
    with receiver.state.lock:
        messages = list(receiver.state.accepted.values())
    for message in messages:
        out.setdefault(runs.get(message["callback_params"]["task_id"], "?"), []).append(message)
    return out


def _reached(receiver: WebhookReceiver) -> set[str]:
    with receiver.state.lock:
        return {m["user_profile"]["target_id"] for m in receiver.state.accepted.values()}


def run_posted_events(target, tmp_path: Path, followers: int = 1) -> float:
    """Post the events, follow them with `followers` threads at once, and check what was sent
    and stored; returns the seconds until the last send arrived."""
    from openaudience.delivery.source import load_destinations
    from openaudience.delivery.spec import Policies
    from openaudience.events.collector import spawn, stop
    from openaudience.journeys import engine as journeys
    from openaudience.journeys.follow import follow
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project

    wh, home = target.warehouse, target.settings.home
    state = wh.state  # the journey tables and the events (beside Spark: the state store)
    folder = tmp_path / "journeys"
    folder.mkdir()
    for name, text in JOURNEYS.items():
        (folder / f"{name}.yml").write_text(text)
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(secret=secret).start()
    environ = {**os.environ, "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret}
    project = load_project()
    dests = load_destinations(audiences=project)
    dests.policies = Policies()  # no frequency caps: these people hear from us several times a minute
    ctx = journeys.Context(wh, load_journeys(folder, project, dests), dests, project, environ=environ)
    for name in JOURNEYS:
        assert journeys.start(ctx, name) == "running"
    (a, a_mobile), (b, _), (c, c_mobile), (d, d_mobile) = members_of(wh, 4)
    # a buys twelve times (three thank-yous, one welcome), b buys for 5 CNY (nothing),
    # c buys and then adds to the cart (thank-you and cart note), d buys once (thank-you only)
    batches = [[purchase(a, i, "20", f"A{i}")] for i in range(12)]
    batches += [[purchase(b, 0, "5", "B0")], [purchase(c, 0, "99.5", "C-item")],
                [purchase(d, 0, "10", "D0")]]
    cart = [{"customerId": c, "eventCode": "app_add_to_cart", "eventId": f"{c}-cart",
             "eventTime": int(time.time() * 1000), "extendAttributes": {"item_id": "C-next"}}]
    env = {**environ, **target.env, "OA_EVENTS_KEY_SHOP_APP": KEY}
    collector, port = spawn(env)
    stop_following = threading.Event()
    followers = [threading.Thread(target=follow, args=(ctx, home, 0.2, stop_following), daemon=True)
                 for _ in range(followers)]  # two at once: one ingests at a time
    started = time.monotonic()
    try:
        for f in followers:
            f.start()

        def post(batch: list[dict]) -> tuple[int, dict]:
            client = EventClient(f"http://127.0.0.1:{port}", "shop-app", KEY)
            try:
                return client.events(batch)
            finally:
                client.close()

        with ThreadPoolExecutor(10) as pool:  # ten clients at once, a's events among them
            answers = list(pool.map(post, batches))
        assert all(status == 200 and answer["success"] for status, answer in answers), answers
        # c's cart comes a moment after the thank-you reached c: the cart branch after the send
        # counts from when c arrived at it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and c_mobile not in _reached(receiver):
            time.sleep(0.1)
        time.sleep(1.0)
        assert post(cart)[1]["success"]
        while time.monotonic() < deadline and len(receiver.state.accepted) < 3 + 1 + 1 + 1 + 1:
            time.sleep(0.1)
        arrived = time.monotonic() - started
        time.sleep(2.0)  # anything more would arrive now
    finally:
        stop_following.set()
        for f in followers:
            f.join(60)
        stop(collector)
        receiver.stop()
    sent = by_journey(state, receiver)
    thanks = sent.get("thanks_thrice", [])
    to = (sorted(m["user_profile"]["target_id"] for m in thanks),
          state.query("select journey, cycle, node, status, people, sent, missing_id, capped "
                   "from journeys.journey_actions order by journey, cycle, node"))
    thank_yous = [m for m in thanks if m["params"]["template"] == "APP_THANK_YOU"]
    notes = [m for m in thanks if m["params"]["template"] == "APP_CART_KEPT"]
    assert sorted(m["user_profile"]["target_id"] for m in thank_yous) == sorted([a_mobile] * 3 + [c_mobile,
                                                                                 d_mobile]), to
    assert [m["user_profile"]["target_id"] for m in notes] == [c_mobile], to
    # the variables are the triggering purchase's attributes
    assert {m["user_profile"]["target_id"]: m["params"]["vars"] for m in thank_yous}[c_mobile] == \
        {"item": "C-item", "amount": "99.5"}
    assert {m["params"]["vars"]["item"] for m in thank_yous if m["user_profile"]["target_id"] == a_mobile} \
        <= {f"A{i}" for i in range(12)}
    welcome = sent.get("welcome_once", [])
    assert [m["user_profile"]["target_id"] for m in welcome] == [a_mobile]  # only a bought twice
    assert set(sent) <= {"thanks_thrice", "welcome_once"}
    # what the warehouse says: a entered three times, once past... the rest kept out by the limit
    entries = dict(state.query("select one_id, count(*) from journeys.journey_event_entries "
                            "where journey = 'thanks_thrice' group by one_id"))
    assert sorted(entries.values()) == [1, 1, 3]
    assert state.query("select count(*) from events.events where event_code = 'app_purchase'")[0][0] >= 15
    statuses = dict(state.query("select journey, status from journeys.journeys where journey in "
                             "('thanks_thrice', 'welcome_once')"))
    assert statuses == {"thanks_thrice": "running", "welcome_once": "running"}  # they go on
    for name in JOURNEYS:
        journeys.stop(ctx, name)
    # before any build, an audience of the event sees today's purchases (fct_behaviors_live)
    from openaudience.segments.engine import MEMBERS, build
    from openaudience.segments.source import Catalog

    audiences = tmp_path / "audiences"
    audiences.mkdir()
    (audiences / "bought_in_app_today.yml").write_text(
        "name: bought_in_app_today\nid_type: mobile\nwhere:\n"
        "  behavior: {did: app_purchase, last_days: 1, count: {'>=': 2}}\n")
    today = dt.datetime.now(dt.UTC).date()
    build(load_project(audiences, Catalog.from_project()), ["bought_in_app_today"], today, wh=wh)
    members = {r[0] for r in wh.query(f"select id_value from {MEMBERS} "
                                      "where audience = 'bought_in_app_today'")}
    assert members == {a_mobile}  # a bought twelve times today, the others once
    return arrived
