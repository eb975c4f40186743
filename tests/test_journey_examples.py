"""Every journey of journeys/examples/ (the scenarios of spec D §6) runs on both engines against
real local peers: an SMS platform with its phone-file server, an SMTP server, a webhook
receiver (push and QR code), Tencent Ads and Ocean Engine, and a Kafka-protocol broker. Each
journey completes; every branch conserves its people; every send's people reached its peer
(exactly those, once); and the scenarios' own rules hold: who logged in twice, which city goes
where, the A/B split, e-mail results deciding between SMS and push, the time branch's times."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil

import pytest

from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery import store
from openaudience.delivery.source import load_destinations
from openaudience.journeys import engine
from openaudience.journeys.clock import to_utc
from openaudience.journeys.source import load_journeys
from tests.support.ad_platforms import OceanEngine, TencentAds
from tests.support.kafka import read_all
from tests.support.sms_platform import FileServer, SmsPlatform
from tests.support.smtp import Mailbox, SmtpServer
from tests.test_journeys import TZ, _members, _reset

ENGINES = ["duckdb", "postgres"]
EXAMPLES = PROJECT_ROOT / "journeys" / "examples"
T0 = to_utc(dt.datetime(2026, 6, 20, 9, 0), TZ)
SECRET = "examples-secret"


def _digits(phone: str) -> str:
    d = "".join(c for c in phone if c.isdigit())
    return d[2:] if len(d) == 13 else d


@pytest.mark.parametrize("engine_name", ENGINES)
def test_every_spec_example_runs_against_its_peers(built_engines, journey_audiences, broker, tmp_path,
                                                   engine_name):
    target = built_engines[engine_name]
    wh = target.warehouse
    _reset(wh)
    topic = f"journey-examples-{engine_name}"
    broker.create_topic(topic, partitions=1)
    sms, files = SmsPlatform(), FileServer(wh.settings.home / "sms_files")
    mails = {e for (e,) in wh.query("select email from marts.user_tags where email is not null")}
    refused = set(sorted(mails)[::7])  # the mail server refuses some addresses: the result branch
    mailbox = Mailbox(refuse=refused)
    smtp = SmtpServer(mailbox).start()
    push = WebhookReceiver(secret=SECRET).start()
    tencent, ocean = TencentAds(1001, 2002, "tok-t"), OceanEngine(77, "880", 99, "tok-o")
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder)
    d = folder / "destinations"
    for name, old, new in (("ex_email", "smtp_port: 2525", f"smtp_port: {smtp.port}"),
                           ("ex_tencent", "https://api.e.qq.com", tencent.url),
                           ("ex_ocean", "https://ad.oceanengine.com", ocean.url),
                           ("ex_kafka", "topic: journey-examples", f"topic: {topic}")):
        path = d / f"{name}.yml"
        path.write_text(path.read_text().replace(old, new))
    environ = {"OA_EXAMPLE_SMS_API": sms.url, "OA_EXAMPLE_SMS_FILES": files.url,
               "OA_EXAMPLE_SMTP_HOST": "127.0.0.1", "OA_EXAMPLE_UNSUBSCRIBE_SECRET": "unsub",
               "OA_EXAMPLE_PUSH_URL": push.url, "OA_EXAMPLE_PUSH_SECRET": SECRET,
               "OA_EXAMPLE_TENCENT_TOKEN": "tok-t", "OA_EXAMPLE_OCEAN_TOKEN": "tok-o",
               "OA_EXAMPLE_KAFKA": broker.bootstrap}
    project = journey_audiences
    dests = load_destinations(d, project)
    journeys = load_journeys(folder, project, dests)
    assert not journeys.problems, journeys.all_problems
    assert len(journeys.plans) == 11
    ctx = engine.Context(wh, journeys, dests, project, environ=environ)
    try:
        for name in journeys.plans:
            engine.start(ctx, name, T0)
        now = T0
        while now <= T0 + dt.timedelta(days=24):  # a tick a day (and the midnight of the time branch)
            for at in (now, now + dt.timedelta(hours=15, minutes=1)):
                for r in engine.tick(ctx, now=at):
                    assert not r.error, r
            now += dt.timedelta(days=1)
    finally:
        for peer in (sms, files, push, tencent, ocean):
            (peer.server.shutdown() if peer is files else peer.stop())
        smtp.stop()
    statuses = {name: engine.journey_row(wh, name)["status"] for name in journeys.plans}
    assert set(statuses.values()) == {"completed"}, statuses

    # every branch conserves its people; every send's people were sent (or held back for a reason)
    sent_to: dict[str, list[str]] = {}
    for name, plan in journeys.plans.items():
        counts = engine.node_counts(wh, name)
        for node in plan.nodes.values():
            reached = counts.get(node.id, {}).get("reached", 0)
            kids = [counts.get(c, {}).get("reached", 0) for _, c in node.children]
            if node.kind in ("random_branch", "tag_branch", "behavior_branch", "result_branch"):
                branches = counts.get(node.id, {}).get("branches", {})
                assert sum(branches.values()) == reached, (name, node.id)
                assert sum(kids) <= reached, (name, node.id)
            else:
                assert all(k == reached for k in kids), (name, node.id)
        for a in engine.actions(wh, name):
            if a["kind"] != "send":
                continue
            held = a["held_out"]
            accounted = sum(a[k] for k in ("sent", "failed", "suppressed", "capped", "skipped",
                                           "missing_id", "already_sent"))
            assert accounted == a["people"] - held or a["missing_id"], (name, a)
            ids = [i for (i,) in wh.query(f"select id_value from {store.LOG} where run_id = %s "
                                          "and status = 'sent'", [a["run_id"]])]
            sent_to.setdefault(a["destination"], []).extend(ids)

    # each peer got exactly what the log says was sent, once
    phones = sorted(p for b in sms.batches.values() for p in b["phones"])
    assert phones == sorted(sent_to.get("ex_sms", []) + sent_to.get("ex_sms_store", []))
    assert sorted(m["To"] for m in mailbox.messages) == sorted(sent_to["ex_email"])
    assert not set(sent_to["ex_email"]) & refused
    pushed = sorted(m["user_profile"]["target_id"] for m in push.state.accepted.values())
    assert pushed == sorted(sent_to["ex_push"] + sent_to["ex_qr_code"])
    assert sum(push.state.seen.values()) == len(pushed)
    spenders = _members(wh, "shanghai_big_spenders")
    assert tencent.violations == [] and ocean.violations == []
    assert tencent.members == {hashlib.md5(_digits(m).encode()).hexdigest() for m in spenders.values()}
    assert ocean.members == {hashlib.sha256(_digits(m).encode()).hexdigest() for m in spenders.values()}
    kafka = read_all(broker, topic, len(spenders))
    assert sorted(json.loads(m.value())["id"] for m in kafka) == sorted(spenders)
    crowd = _members(wh, "ex_ad_push_crowd")
    assert set(crowd) == set(spenders)

    # the scenarios' own rules
    abandoners = _members(wh, "cart_abandoners")
    tags = {o: (city, mobile, email, int(o365 or 0), int(o90 or 0), channel)
            for o, city, mobile, email, o365, o90, channel
            in wh.query("select one_id, city, mobile, email, orders_365d, orders_90d, "
                        "preferred_order_channel from marts.user_tags")}
    logins = dict(wh.query("select one_id, sum(behavior_count) from marts.fct_behaviors "
                           "where event_type = 'login' and channel = 'web' and occurred_at >= %s "
                           "and occurred_at < %s group by one_id",
                           [T0 - dt.timedelta(days=1), T0]))
    twice = {o for o in abandoners if (logins.get(o) or 0) >= 2}
    assert engine.node_counts(wh, "ex_login_behaviour")["logged_in"]["branches"] == {
        k: v for k, v in (("did", len(twice)), ("did_not", len(abandoners) - len(twice))) if v}
    city = engine.node_counts(wh, "ex_city_tags")["city"]["branches"]
    expected = {"shanghai": sum(tags[o][0] == "Shanghai" for o in abandoners),
                "hangzhou": sum(tags[o][0] == "Hangzhou" for o in abandoners)}
    expected["other"] = len(abandoners) - expected["shanghai"] - expected["hangzhou"]
    assert city == {k: v for k, v in expected.items() if v}
    ab = engine.node_counts(wh, "ex_ab_random")["ab"]["branches"]
    email_arm = {o for o in abandoners if engine.bucket(f"ex_ab_random:ab:{o}") < 4000}
    assert ab.get("email", 0) == len(email_arm) and ab.get("sms", 0) == len(abandoners) - len(email_arm)
    results = engine.node_counts(wh, "ex_email_result")["result_branch_1"]["branches"]
    emailed = [o for o in abandoners if tags[o][2]]
    failed = sum(tags[o][2] in refused for o in emailed)
    assert results.get("failure", 0) == failed and results.get("success", 0) == len(emailed) - failed
    repeat = {o for o in abandoners if tags[o][3] > 2 or tags[o][4] >= 1}
    gift = engine.node_counts(wh, "ex_repurchase_gift")["tag_branch_1"]["branches"]
    assert gift.get("repeat_buyers", 0) == len(repeat)
    # the time branch: the e-mail went at the next 00:00 local, the SMS at 09:00 (the start)
    times = dict(wh.query("select node, min(arrived_at) from journeys.journey_positions where journey = "
                          "'ex_time_branch' group by node"))
    assert times["send_1"] == to_utc(dt.datetime(2026, 6, 21, 0, 0), TZ)
    assert times["send_2"] == T0
    cycles = engine.cycles(wh, "ex_dormancy_greetings")
    assert [c["entered"] for c in cycles] == [len(abandoners), 0]  # re-entry after 60 days: not yet
