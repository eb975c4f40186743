"""Deliveries on both engines against real local peers: the webhook contract (signature, body,
variables) at a real HTTP receiver, hashed file exports, diffs between versions, suppression and
frequency caps, dry runs, the circuit breaker, dead letters and replay, and the fault test:
100,000 members (30,000 on PostgreSQL) through a proxy that fails 20 % of requests, the sender
killed mid-run and rerun, and the receiver acting on every member exactly once."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.webhook import SignatureError, SignatureVerifier, sign
from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.errors import UserError
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery import store
from openaudience.delivery.engine import deliver, replay, runs
from openaudience.delivery.source import DestinationErrors, load_destinations
from openaudience.delivery.suppression import add as suppress
from openaudience.segments.engine import MEMBERS, VERSIONS, build, write_version
from openaudience.segments.source import AUDIENCE_DIR, load_project
from tests.conftest import OA, point_process_at
from tests.support.faults import FaultProxy
from tests.support.kafka import read_all
from tests.test_segments import CATALOG, TODAY

ENGINES = ["duckdb", "postgres"]
SECRET = "test-secret-123"


# -- the contract, without a warehouse --------------------------------------------------------
def test_signature_matches_the_contracts_worked_example():
    assert sign("123456789", "1631865523", "2e6eceb5737b473284c930c8ef79090e") == \
        "459fa2f7e79389c337e6b2077538fb9408241e79715b2f40dfa6c2757e2ecce8"
    assert sign("", "1631865523", "x") == ""  # no secret: the header is the empty string


def test_verifier_rejects_tampered_expired_and_replayed_requests():
    v = SignatureVerifier("k3y", max_skew_s=300)
    now = 1_700_000_000
    good = sign("k3y", str(now), "n1")
    v.verify(str(now), "n1", good, now=now)
    with pytest.raises(SignatureError, match="already used"):
        v.verify(str(now), "n1", good, now=now + 1)
    with pytest.raises(SignatureError, match="does not match"):
        v.verify(str(now), "n2", good[:-1] + ("0" if good[-1] != "0" else "1"), now=now)
    with pytest.raises(SignatureError, match="from now"):
        v.verify(str(now - 301), "n3", sign("k3y", str(now - 301), "n3"), now=now)
    with pytest.raises(SignatureError, match="missing"):
        v.verify(None, "n4", good, now=now)


# -- destination files -------------------------------------------------------------------------
GOOD = {"audience": "shanghai_big_spenders", "channel": "webhook",
        "webhook": {"url": "http://127.0.0.1:9/hook"}}


@pytest.mark.parametrize("change, line, expected", [
    ({"audience": "shanghai_big_spender"}, 2, "audience: unknown audience 'shanghai_big_spender' "
                                              "(did you mean 'shanghai_big_spenders'?)"),
    ({"webhook": None}, 3, "channel: channel: webhook needs a webhook: block"),
    ({"webhook": {"url": "http://x", "secret_env": "my secret"}}, 6,
     "webhook.secret_env: 'my secret' is not an environment variable name"),
    ({"webhook": {"url": "http://x", "params": {"t": "hi ${city}"}}}, 6,
     "webhook.params: the params use ${city} but variables: does not define it"),
    ({"webhook": {"url": "http://x", "params": {"t": "${c}"}}, "variables": {"c": {"tag": "cty"}}}, 10,
     "variables.c.tag: unknown tag 'cty' (did you mean 'city'?)"),
    ({"webhook": {"url": "http://x"}, "variables": {"c": {"tag": "city"}}}, 7,
     "variables.c: variable 'c' is defined but no webhook parameter uses ${c}"),
    ({"webhook": {"url": "ftp://x"}}, 4, "must start with http:// or https://"),
    ({"id_type": "mobil"}, 6, "id_type: unknown id type 'mobil' (did you mean 'mobile'?)"),
    ({"mode": "sometimes"}, 6, "mode: Input should be 'diff' or 'full'"),
    ({"file": {"format": "csv"}}, 6, "file: a file: block belongs to channel: file, not webhook"),
    ({"batch_size": 5000}, 6, "batch_size: webhook takes at most 1,000 per batch"),
])
def test_destination_errors_name_file_line_and_field(tmp_path, change, line, expected):
    import yaml

    body = {"name": "d", **GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    (tmp_path / "d.yml").write_text(yaml.safe_dump(body, sort_keys=False))
    with pytest.raises(DestinationErrors) as info:
        load_destinations(tmp_path)
    message = str(info.value)
    assert f"d.yml:{line}: " in message, message
    assert expected in message, message


def test_policy_and_name_errors(tmp_path):
    import yaml

    (tmp_path / "other.yml").write_text(yaml.safe_dump({"name": "d", **GOOD}))
    (tmp_path / "_policies.yml").write_text(yaml.safe_dump(
        {"frequency_caps": [{"name": "c", "channel": "webhok", "max": 1, "days": 7},
                            {"name": "m", "channel": "meta_ads", "max": 1, "days": 7}]}))
    with pytest.raises(DestinationErrors) as info:
        load_destinations(tmp_path)
    message = str(info.value)
    assert "other.yml:3: name: the file is other.yml; name it d.yml or the name other" in message
    assert "_policies.yml:2: frequency_caps[0].channel: unknown channel 'webhok' (did you mean " \
           "'webhook'?)" in message
    assert "_policies.yml:6: frequency_caps[1].channel: meta_ads keeps a list, it sends nobody a " \
           "message: caps apply to webhook, email, sms or '*'" in message


def test_the_shipped_destinations_are_valid():
    dests = load_destinations()
    assert {"crm_coupon_webhook", "high_value_export"} <= set(dests.destinations)


# -- helpers over a built warehouse ------------------------------------------------------------
@pytest.fixture(scope="module")
def delivered_audiences(built_engines):
    """The two audiences the shipped destinations read, built on both engines."""
    project = load_project(AUDIENCE_DIR, CATALOG)
    for target in built_engines.values():
        build(project, ["shanghai_big_spenders", "high_value_rfm"], TODAY, wh=target.warehouse)
    yield project
    for target in built_engines.values():  # the shared build is put back: nothing delivered
        _reset_delivery(target.warehouse)


def _reset_delivery(wh) -> None:
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        for table in (store.RUNS, store.LOG, store.STATE, store.DEAD, store.SUPPRESSION):
            wh.execute(conn, f"delete from {table}")


def _members(wh, audience: str, version: int | None = None) -> dict[str, str]:
    v = version or wh.query(f"select max(version) from {VERSIONS} where audience = %s", [audience])[0][0]
    return dict(wh.query(f"select id_value, one_id from {MEMBERS} where audience = %s and version = %s",
                         [audience, v]))


def _synthetic_version(wh, audience: str, id_type: str, ids: list[str]) -> int:
    """A new version of `audience` holding exactly `ids` (one_id = 'p' + id)."""
    return write_version(wh, audience, id_type, pa.table({"one_id": ["p" + i for i in ids],
                                                          "id_value": ids}), TODAY, "test")


def _folders(tmp_path: Path, destinations: dict[str, str], audiences: dict[str, str] | None = None,
             policies: str = "") -> tuple[Path, Path]:
    a, d = tmp_path / "audiences", tmp_path / "destinations"
    a.mkdir(exist_ok=True)
    d.mkdir(exist_ok=True)
    for name, text in (audiences or {}).items():
        (a / f"{name}.yml").write_text(text)
    for name, text in destinations.items():
        (d / f"{name}.yml").write_text(text)
    if policies:
        (d / "_policies.yml").write_text(policies)
    return a, d


SYNTHETIC = """name: {name}
id_type: one_id
where:
  tag: {{name: city, is_not_null: true}}
"""


def _hook(name: str, audience: str, **extra) -> str:
    lines = [f"name: {name}", f"audience: {audience}", "channel: webhook",
             *(f"{k}: {v}" for k, v in extra.items()),
             "webhook:", "  url_env: OA_TEST_WEBHOOK_URL", "  secret_env: OA_TEST_WEBHOOK_SECRET",
             "  timeout_s: 1"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def receiver(monkeypatch):
    r = WebhookReceiver(secret=SECRET).start()
    monkeypatch.setenv("OA_TEST_WEBHOOK_URL", r.url)
    monkeypatch.setenv("OA_TEST_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("OA_CRM_WEBHOOK_URL", r.url)
    monkeypatch.setenv("OA_CRM_WEBHOOK_SECRET", SECRET)
    yield r
    r.stop()


# -- the shipped destinations --------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_webhook_sends_the_contract_with_variables_then_only_the_diff(
        built_engines, delivered_audiences, receiver, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    dests = load_destinations(audiences=delivered_audiences)
    members = _members(wh, "shanghai_big_spenders")
    assert members
    [first] = deliver(dests, "crm_coupon_webhook", wh=wh)
    assert first.status == "succeeded"
    assert first.counts["sent"] == len(members) == len(receiver.state.accepted)
    cities = dict(wh.query("select one_id, city from marts.user_tags"))
    keys = dict(wh.query(f"select id_value, idempotency_key from {store.LOG} where run_id = %s",
                         [first.run_id]))
    for key, message in receiver.state.accepted.items():
        mobile = message["user_profile"]["target_id"]
        assert message["user_profile"]["target_type"] == "MOBILE"
        assert keys[mobile] == key == message["callback_params"]["msg_key"]
        assert message["callback_params"]["task_id"] == first.run_id
        assert message["callback_params"]["webhook_id"] == "crm_coupon_webhook"
        assert message["params"]["coupon_id"] == "SUMMER25"
        assert message["params"]["text"] == "A summer gift for our friends in ${city}"
        assert message["params"]["vars"]["city"] == (cities[members[mobile]] or "your city")
    # the same version again: nothing to do; a new version with the same members: nothing sent
    assert deliver(dests, "crm_coupon_webhook", wh=wh) == []
    build(delivered_audiences, ["shanghai_big_spenders"], TODAY, wh=wh)
    [second] = deliver(dests, "crm_coupon_webhook", wh=wh)
    assert second.status == "succeeded" and second.counts["planned"] == 0
    assert len(receiver.state.accepted) == len(members)
    assert sum(receiver.state.seen.values()) == len(members)


@pytest.mark.parametrize("engine", ENGINES)
def test_hashed_file_export_writes_parts_and_then_adds_and_removes(
        built_engines, delivered_audiences, engine):
    target = built_engines[engine]
    wh = target.warehouse
    _reset_delivery(wh)
    dests = load_destinations(audiences=delivered_audiences)
    emails = set(_members(wh, "high_value_rfm"))
    [run] = deliver(dests, "high_value_export", wh=wh)
    assert run.status == "succeeded" and run.counts["sent"] == len(emails)
    folder = wh.settings.home / "exports" / "high_value_export"
    latest = json.loads((folder / "latest.json").read_text())
    manifest = json.loads((folder / latest["manifest"]).read_text())
    assert manifest["id_form"] == "sha256" and manifest["sent"] == len(emails)
    rows = [r for part in manifest["parts"]
            for r in csv.DictReader((folder / run.run_id / part).open())]
    assert {r["id"] for r in rows} == {hashlib.sha256(e.encode()).hexdigest() for e in emails}
    assert {r["op"] for r in rows} == {"add"}
    # a version with one member gone and one new: the next run writes exactly those two
    kept = sorted(emails)[1:]
    v = _synthetic_version(wh, "high_value_rfm", "email", [*kept, "new.person@example.org"])
    [diff] = deliver(dests, "high_value_export", wh=wh)
    assert diff.audience_version == v
    parts = json.loads((folder / diff.run_id / "_manifest.json").read_text())["parts"]
    rows = [r for part in parts for r in csv.DictReader((folder / diff.run_id / part).open())]
    assert sorted((r["op"], r["id"]) for r in rows) == sorted([
        ("add", hashlib.sha256(b"new.person@example.org").hexdigest()),
        ("remove", hashlib.sha256(sorted(emails)[0].encode()).hexdigest())])


def test_the_aes_form_is_mysqls_aes_encrypt():
    from connectors.identifiers import IdError, decrypt_aes, encrypt_aes

    # printf 13800138000 | openssl enc -aes-128-ecb -K $(printf 0123456789ABCDEF | xxd -p) -base64
    assert encrypt_aes("13800138000", "0123456789ABCDEF") == "D/sJzgv2sHWBONDIZXW/Eg=="
    assert decrypt_aes("D/sJzgv2sHWBONDIZXW/Eg==", "0123456789ABCDEF") == "13800138000"
    with pytest.raises(IdError, match="exactly 16 characters"):
        encrypt_aes("x", "not-a-key")
    with pytest.raises(IdError, match="not an AES ciphertext"):
        decrypt_aes("D/sJzgv2sHWBONDIZXW/Eg==", "FEDCBA9876543210")


@pytest.mark.parametrize("engine", ENGINES)
def test_an_aes_export_decrypts_to_the_normalised_ids(built_engines, tmp_path, monkeypatch, engine):
    from connectors.identifiers import decrypt_aes

    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    a, d = _folders(tmp_path, {"aes_out": f"name: aes_out\naudience: aes_people\nchannel: file\n"
                                          f"id_form: aes\naes_key_env: OA_TEST_AES_KEY\nbatch_size: 40\n"
                                          f"file: {{folder: {tmp_path / 'out'}}}\n"},
                    {"aes_people": SYNTHETIC.format(name="aes_people").replace("one_id", "mobile", 1)})
    phones = [f"+86 139{i:08d}" for i in range(100)]
    _synthetic_version(wh, "aes_people", "mobile", phones)
    monkeypatch.setenv("OA_EXPORT_ROOTS", str(tmp_path))  # an export folder outside OA_HOME
    dests = load_destinations(d, load_project(a))
    monkeypatch.setenv("OA_TEST_AES_KEY", "short")
    with pytest.raises(UserError, match="OA_TEST_AES_KEY: the AES key must be exactly 16 characters"):
        deliver(dests, "aes_out", wh=wh)
    monkeypatch.setenv("OA_TEST_AES_KEY", "00112233445566AA")
    [run] = deliver(dests, "aes_out", wh=wh)
    assert run.status == "succeeded" and run.counts["sent"] == 100
    folder = tmp_path / "out" / "aes_out" / run.run_id
    rows = [r for part in sorted(folder.glob("part-*.csv")) for r in csv.DictReader(part.open())]
    assert {decrypt_aes(r["id"], "00112233445566AA") for r in rows} == {f"139{i:08d}" for i in range(100)}


# -- suppression, caps, dry run ------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_suppression_and_frequency_caps_stop_messages_and_say_why(
        built_engines, delivered_audiences, receiver, tmp_path, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    project = load_project(AUDIENCE_DIR, CATALOG)
    _, d = _folders(tmp_path, {"first": _hook("first", "shanghai_big_spenders"),
                               "second": _hook("second", "shanghai_big_spenders")},
                    policies="frequency_caps:\n  - {name: email_only, channel: email, max: 1, days: 7}\n"
                             "  - {name: once_a_week, channel: webhook, max: 1, days: 7}\n")
    dests = load_destinations(d, project)
    members = _members(wh, "shanghai_big_spenders")
    mobiles = sorted(members)
    by_mobile = mobiles[0]
    # the second person is suppressed through another of their ids (their e-mail or member id)
    other = wh.query("select id_type, id_value from marts.dim_identities where one_id = %s and "
                     "id_type <> 'mobile' order by id_type limit 1", [members[mobiles[1]]])
    assert other, "the test needs a person with a second id"
    suppress(wh, "mobile", [by_mobile], "unsubscribe", "webhook")
    suppress(wh, other[0][0], [other[0][1]], "complaint", "*")
    suppress(wh, "mobile", [mobiles[2]], "t_reply", "file")  # another channel: no effect here
    [run] = deliver(dests, "first", wh=wh)
    assert run.counts["suppressed"] == 2
    assert run.counts["sent"] == len(members) - 2
    rules = dict(wh.query(f"select id_value, rule from {store.LOG} where run_id = %s and status = "
                          "'suppressed'", [run.run_id]))
    assert rules == {by_mobile: "suppressed: unsubscribe", mobiles[1]: "suppressed: complaint"}
    sent = {m["user_profile"]["target_id"] for m in receiver.state.accepted.values()}
    assert by_mobile not in sent and mobiles[1] not in sent and mobiles[2] in sent
    # a second destination on the same channel: everyone already messaged this week is capped
    [capped] = deliver(dests, "second", wh=wh)
    assert capped.counts["capped"] == len(members) - 2 and capped.counts["sent"] == 0
    assert {r[0] for r in wh.query(f"select distinct rule from {store.LOG} where run_id = %s and "
                                   "status = 'capped'", [capped.run_id])} == {"frequency cap once_a_week"}


@pytest.mark.parametrize("engine", ENGINES)
def test_dry_run_shows_the_plan_and_sends_nothing(built_engines, delivered_audiences, receiver, engine):
    target = built_engines[engine]
    wh = target.warehouse
    _reset_delivery(wh)
    dests = load_destinations(audiences=delivered_audiences)
    [plan] = deliver(dests, "crm_coupon_webhook", wh=wh, dry_run=True)
    assert plan.dry_run and plan.counts["pending"] == len(_members(wh, "shanghai_big_spenders"))
    assert len(plan.preview) == min(10, plan.counts["pending"])
    assert receiver.state.requests == 0
    assert wh.query(f"select count(*) from {store.LOG}")[0][0] == 0
    assert runs(wh) == []
    # the CLI's dry run needs no endpoint and no secret: it plans, prints and rolls back
    done = subprocess.run([OA, "deliver", "crm_coupon_webhook", "--dry-run"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env={**target.env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would send" in done.stdout and "first 10 of what would be sent" in done.stdout
    assert runs(wh) == []


# -- failures -----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_a_dead_channel_trips_the_breaker_and_a_rerun_resumes(
        built_engines, receiver, tmp_path, monkeypatch, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    a, d = _folders(tmp_path, {"flaky": _hook("flaky", "breaker_people", batch_size=10, concurrency=2,
                                              breaker_failures=3)},
                    {"breaker_people": SYNTHETIC.format(name="breaker_people")})
    ids = [f"{i:05d}" for i in range(400)]
    _synthetic_version(wh, "breaker_people", "one_id", ids)
    proxy = FaultProxy(receiver.url, fault_rate=0.0)
    proxy.down = True
    monkeypatch.setenv("OA_TEST_WEBHOOK_URL", proxy.url)
    dests = load_destinations(d, load_project(a))
    fast = dests.destinations["flaky"].model_copy(update={"retries": dests.destinations["flaky"].retries
                                                          .model_copy(update={"max_attempts": 2,
                                                                              "initial_backoff_s": 0.01})})
    dests.destinations["flaky"] = fast
    started = time.monotonic()
    [stopped] = deliver(dests, "flaky", wh=wh)
    assert stopped.status == "stopped" and "consecutive batches failed" in stopped.error
    assert time.monotonic() - started < 20
    assert stopped.counts["pending"] >= 400 - 10 * 2 * 2 * 3  # it stopped early
    assert stopped.counts["sent"] == 0 and receiver.state.requests == 0
    proxy.down = False
    summaries = deliver(dests, "flaky", wh=wh)
    assert [s.status for s in summaries] == ["succeeded"] and summaries[0].resumed
    assert summaries[0].run_id == stopped.run_id
    assert len(receiver.state.accepted) == 400
    proxy.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_refused_members_become_dead_letters_and_replay_sends_them(
        built_engines, monkeypatch, tmp_path, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    refusing = {"on": True}
    r = WebhookReceiver(secret=SECRET, refuse=lambda m: "INVALID_USER" if refusing["on"] and
                        m["user_profile"]["target_id"].endswith("7") else None).start()
    monkeypatch.setenv("OA_TEST_WEBHOOK_URL", r.url)
    monkeypatch.setenv("OA_TEST_WEBHOOK_SECRET", SECRET)
    a, d = _folders(tmp_path, {"picky": _hook("picky", "picky_people", batch_size=1)},
                    {"picky_people": SYNTHETIC.format(name="picky_people")})
    ids = [f"{i:04d}" for i in range(100)]
    _synthetic_version(wh, "picky_people", "one_id", ids)
    dests = load_destinations(d, load_project(a))
    [run] = deliver(dests, "picky", wh=wh)
    assert run.status == "partial" and run.counts["failed"] == 10 and run.counts["sent"] == 90
    errors = {e for (e,) in wh.query(f"select error from {store.DEAD} where destination = 'picky'")}
    assert errors == {"INVALID_USER: refused"}
    refusing["on"] = False
    again = replay(dests, "picky", wh=wh)
    assert again is not None and again.status == "succeeded" and again.counts["sent"] == 10
    assert len(r.state.accepted) == 100
    assert replay(dests, "picky", wh=wh) is None  # nothing left
    r.stop()


def test_a_missing_secret_variable_is_a_clear_error(built_engines, delivered_audiences, monkeypatch):
    wh = built_engines["duckdb"].warehouse
    _reset_delivery(wh)
    monkeypatch.setenv("OA_CRM_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.delenv("OA_CRM_WEBHOOK_SECRET", raising=False)
    dests = load_destinations(audiences=delivered_audiences)
    with pytest.raises(UserError, match="the environment variable OA_CRM_WEBHOOK_SECRET is not set"):
        deliver(dests, "crm_coupon_webhook", wh=wh)


# -- the fault test -------------------------------------------------------------------------------
# 100,000 members on DuckDB; PostgreSQL runs the same SQL paths (plan, batches, flushes, resume)
# on 30,000, which keeps the suite inside its budget
FAULT_MEMBERS = {"duckdb": 100_000, "postgres": 30_000}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_faults_and_a_kill_mid_run_still_deliver_every_member_exactly_once(
        built_engines, tmp_path, engine):
    target = built_engines[engine]
    wh = target.warehouse
    members = FAULT_MEMBERS[engine]
    _reset_delivery(wh)
    receiver = WebhookReceiver(secret=SECRET).start()
    proxy = FaultProxy(receiver.url, fault_rate=0.2, seed=11)
    a, d = _folders(tmp_path, {"bulk": _hook("bulk", "bulk_people", batch_size=200, concurrency=4,
                                             breaker_failures=50)
                               + "retries: {max_attempts: 12, initial_backoff_s: 0.05, max_backoff_s: 2}\n"},
                    {"bulk_people": SYNTHETIC.format(name="bulk_people")})
    ids = [f"{i:06d}" for i in range(members)]
    _synthetic_version(wh, "bulk_people", "one_id", ids)
    env = {**target.env, "OA_TEST_WEBHOOK_URL": proxy.url, "OA_TEST_WEBHOOK_SECRET": SECRET,
           "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-m", "tests.support.run_delivery", str(a), str(d), "bulk"]
    first = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(receiver.state.accepted) < members * 0.3:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run made no progress"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = len(receiver.state.accepted)
    assert killed_at < members
    second = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "succeeded" in second.stdout and "resumed" in second.stdout, second.stdout
    receiver.stop()
    proxy.stop()
    # every member acted on once, under one key each; the keys are the ones the log holds
    accepted = receiver.state.accepted
    assert len(accepted) == members
    assert {m["user_profile"]["target_id"] for m in accepted.values()} == set(ids)
    keys = {k for (k,) in wh.query(f"select idempotency_key from {store.LOG} where destination = 'bulk' "
                                   "and status = 'sent'")}
    assert keys == set(accepted)
    assert wh.query(f"select count(*) from {store.LOG} where destination = 'bulk' and "
                    "status <> 'sent'")[0][0] == 0
    # the faults happened, and some answers were lost after the receiver acted
    assert min(proxy.faults[f] for f in ("500", "429", "reset", "late")) > 0, proxy.faults
    assert sum(1 for n in receiver.state.seen.values() if n > 1) > 0
    [run] = [r for r in runs(wh, "bulk")]
    assert run["status"] == "succeeded" and run["sent"] == members


# -- receipts -----------------------------------------------------------------------------------
def _post_receipts(url: str, items, secret: str = SECRET, timestamp: int | None = None,
                   signature: str | None = None):
    import requests

    from connectors.webhook import SIGNATURE_HEADER, new_nonce

    ts, nonce = str(timestamp or int(time.time())), new_nonce()
    sig = sign(secret, ts, nonce) if signature is None else signature
    return requests.post(f"{url}?timestamp={ts}&nonce={nonce}", json=items,
                         headers={SIGNATURE_HEADER: sig}, timeout=5)


@pytest.mark.parametrize("engine", ENGINES)
def test_receipts_are_verified_recorded_and_unsubscribes_suppress(
        built_engines, delivered_audiences, receiver, engine):
    from openaudience.delivery.receipts import RECEIPTS, ReceiptServer, ingest

    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    dests = load_destinations(audiences=delivered_audiences)
    [run] = deliver(dests, "crm_coupon_webhook", wh=wh)
    sent = list(receiver.state.accepted.values())[:3]
    server = ReceiptServer(dests, wh.settings.home).start()
    url = server.url + "/crm_coupon_webhook"

    def receipt(message, status, msg_id, cst_id=None, **change):
        body = {"msg_id": msg_id, "status": status,
                "cst_id": cst_id or message["user_profile"]["target_id"],
                "send_time": message["callback_params"]["send_time"],
                "callback_params": dict(message["callback_params"])}
        body["callback_params"].update(change)
        return body

    late_ms = int(time.time() - 80 * 3600) * 1000
    try:
        # the unsubscribe names someone else as cst_id: the log's id for that key is suppressed
        ok = _post_receipts(url, [receipt(sent[0], "200", "m0"),
                                  receipt(sent[1], "410", "m1", cst_id="13999999999"),
                                  receipt(sent[2], "999", "m2"),
                                  receipt(sent[2], "200", "m3", send_time=str(late_ms)),
                                  receipt(sent[2], "200", "m4", msg_key="0" * 32),
                                  receipt(sent[0], "200", "m0")])
        assert ok.status_code == 200
        assert [r["msg_id"] for r in ok.json()["rejected"]] == ["m2", "m3"]
        tampered = _post_receipts(url, [receipt(sent[0], "200", "m5")], signature="0" * 64)
        expired = _post_receipts(url, [receipt(sent[0], "200", "m6")], timestamp=int(time.time()) - 3600)
        assert tampered.status_code == 401 and "does not match" in tampered.json()["message"]
        assert expired.status_code == 401 and "from now" in expired.json()["message"]
    finally:
        server.stop()
    totals = ingest(wh, dests)
    assert totals == {"accepted": 2, "rejected": 3, "suppressed": 1}
    rows = wh.query(f"select msg_id, verdict, status, reason from {RECEIPTS} order by received_at, msg_id")
    by_id = {m: (v, s, r) for m, v, s, r in rows if m}
    assert by_id["m0"] == ("accepted", "delivered", None)
    assert by_id["m1"] == ("accepted", "unsubscribed", None)
    assert by_id["m2"][0] == "rejected" and by_id["m2"][2].startswith("unknown status '999'")
    assert by_id["m3"][2].startswith("late: 80.0 h after the send")
    assert by_id["m4"][2] == "no such message in the delivery log"
    assert sum(1 for m, *_ in rows if m == "m0") == 1  # the repeated receipt is kept once
    # the two forged requests were refused and counted, never spooled: anyone can send them
    assert server.refused == {"crm_coupon_webhook": 2}
    assert not [r for m, *_, r in rows if not m]
    assert ingest(wh, dests) == {"accepted": 0, "rejected": 0, "suppressed": 0}  # nothing twice
    assert wh.query(f"select id_value, channel, reason from {store.SUPPRESSION}") == [
        (sent[1]["user_profile"]["target_id"], "webhook", "unsubscribe")]
    assert run.status == "succeeded"


def test_the_receipt_endpoint_needs_the_secret_it_checks(delivered_audiences, monkeypatch, tmp_path):
    from openaudience.core.errors import ConfigError
    from openaudience.delivery.receipts import ReceiptServer

    monkeypatch.delenv("OA_CRM_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="OA_CRM_WEBHOOK_SECRET is not set"):
        ReceiptServer(load_destinations(audiences=delivered_audiences), tmp_path)


def test_the_examples_in_docs_destinations_are_valid(tmp_path):
    import re

    text = (PROJECT_ROOT / "docs" / "destinations.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    written = []
    for block in blocks:
        header = re.match(r"# destinations/(\w+)\.yml\n", block)
        name = header.group(1) if header else "_policies" if block.startswith("frequency_caps") else None
        assert name, f"docs/destinations.md: a yaml block that is no destination file:\n{block}"
        (tmp_path / f"{name}.yml").write_text(block)
        written.append(name)
    dests = load_destinations(tmp_path)
    assert set(dests.destinations) == {n for n in written if n != "_policies"}
    assert len(dests.policies.frequency_caps) == 2


# -- the dbt delivery models ----------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_delivery_models_count_the_funnel_receipts_and_conversions(built_engines, engine):
    """A planted run: 300 people sent on 2026-06-10, some held back, receipts for some; the
    models' counts equal a pandas count over the same rows and the orders of fct_orders."""
    import random

    import pandas as pd

    target = built_engines[engine]
    wh = target.warehouse
    _reset_delivery(wh)
    people = [r[0] for r in wh.query("select one_id from marts.user_tags order by one_id limit 400")]
    rng = random.Random(5)
    sent_at = dt.datetime(2026, 6, 10, 12, 0)
    statuses = ["sent"] * 300 + ["suppressed"] * 40 + ["capped"] * 30 + ["failed"] * 20 + ["pending"] * 10
    rows = []
    for i, (one_id, status) in enumerate(zip(people, statuses, strict=True)):
        rows.append(("r1", f"{i:032x}", "d1", "webhook", "a1", 1, 0, one_id, "one_id", one_id, "add", None,
                     status, None, 1, sent_at, sent_at if status == "sent" else None, None))
    receipts = []
    for i in range(300):
        status = rng.choice(["delivered", "opened", "clicked", "failed", None])
        if status:
            receipts.append(("d1", f"m{i}", f"{i:032x}", "x", status, sent_at, sent_at, "accepted", None))
    receipts.append(("d1", "bad", f"{0:032x}", "x", None, sent_at, sent_at, "rejected", "late"))
    log_cols = ("run_id", "idempotency_key", "destination", "channel", "audience", "audience_version",
                "batch_no", "one_id", "id_type", "id_value", "op", "variables", "status", "rule",
                "attempts", "planned_at", "sent_at", "external_id")
    with wh.connect() as conn:
        wh.execute(conn, f"insert into {store.RUNS} (run_id, destination, channel, audience, "
                         "audience_version, mode, id_type, id_form, trigger, status, planned, sent, failed, "
                         "started_at) values ('r1', 'd1', 'webhook', 'a1', 1, 'diff', 'one_id', 'raw', "
                         "'manual', 'stopped', 400, 300, 20, %s)", [sent_at])
        for r in rows:
            wh.execute(conn, f"insert into {store.LOG} ({', '.join(log_cols)}) values "
                             f"({', '.join(['%s'] * len(log_cols))})", list(r))
        for r in receipts:
            wh.execute(conn, f"insert into {store.RECEIPTS} (destination, msg_id, idempotency_key, "
                             "status_code, status, send_time, received_at, verdict, reason) values "
                             "(%s, %s, %s, %s, %s, %s, %s, %s, %s)", list(r))
    target.dbt("build", "--select", "stg_delivery__runs+ stg_delivery__log+ stg_delivery__receipts+")
    got = wh.query_df("select * from marts.fct_deliveries").iloc[0]
    by_key = {r[2]: r[4] for r in receipts if r[7] == "accepted"}
    sent_keys = [r[1] for r in rows if r[12] == "sent"]
    orders = wh.query_df("select one_id, ordered_at, total_amount from marts.fct_orders where is_paid")
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"])
    window = orders[(orders.ordered_at > sent_at) & (orders.ordered_at <= sent_at + dt.timedelta(days=7))]
    sent_people = {r[7] for r in rows if r[12] == "sent"}
    converted = set(window.one_id) & sent_people
    expected = {
        "planned": 400, "sent": 300, "suppressed": 40, "capped": 30, "pending": 10,
        "failed": 20 + sum(1 for k in sent_keys if by_key.get(k) == "failed"),
        "delivered": sum(1 for k in sent_keys if by_key.get(k) in ("delivered", "opened", "clicked")),
        "opened": sum(1 for k in sent_keys if by_key.get(k) in ("opened", "clicked")),
        "clicked": sum(1 for k in sent_keys if by_key.get(k) == "clicked"),
        "converted": len(converted),
    }
    assert {k: int(got[k]) for k in expected} == expected
    assert expected["converted"] > 0, "the planted window should hold some orders"
    assert got["conversion_amount"] == pytest.approx(
        window[window.one_id.isin(sent_people)].total_amount.sum())
    assert got["delivery_rate"] == pytest.approx(expected["delivered"] / 300)
    assert got["open_rate"] == pytest.approx(expected["opened"] / expected["delivered"])
    daily = wh.query_df("select * from marts.agg_delivery_channel_daily")
    assert list(daily.channel_day_id) == ["webhook:2026-06-10"] and int(daily.sent[0]) == 300
    _reset_delivery(wh)


# -- Kafka ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_kafka_gets_one_keyed_message_per_change_then_adds_and_removes(
        built_engines, broker, tmp_path, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    topic = f"audience-changes-{engine}"
    broker.create_topic(topic, partitions=3)
    a, d = _folders(tmp_path, {"stream": f"name: stream\naudience: stream_people\nchannel: kafka\n"
                                         f"id_form: sha256\nbatch_size: 2000\nkafka:\n"
                                         f"  bootstrap_servers: {broker.bootstrap}\n  topic: {topic}\n"},
                    {"stream_people": SYNTHETIC.format(name="stream_people")})
    ids = [f"{i:05d}" for i in range(5000)]
    v1 = _synthetic_version(wh, "stream_people", "one_id", ids)
    dests = load_destinations(d, load_project(a))
    [run] = deliver(dests, "stream", wh=wh)
    assert run.status == "succeeded" and run.counts["sent"] == 5000
    messages = read_all(broker, topic, 5000)
    assert len(messages) == 5000
    bodies = [json.loads(m.value()) for m in messages]
    assert {b["id"] for b in bodies} == {hashlib.sha256(i.encode()).hexdigest() for i in ids}
    assert all(m.key().decode() == b["id"] for m, b in zip(messages, bodies, strict=True))
    assert {(b["audience"], b["version"], b["op"], b["id_type"]) for b in bodies} == {
        ("stream_people", v1, "add", "one_id")}
    keys = dict(wh.query(f"select idempotency_key, id_value from {store.LOG} where run_id = %s",
                         [run.run_id]))
    assert all(dict(m.headers())["idempotency-key"].decode() == b["idempotency_key"] and
               b["idempotency_key"] in keys for m, b in zip(messages, bodies, strict=True))
    # 100 leave, 50 join: 150 messages more, with their ops
    v2 = _synthetic_version(wh, "stream_people", "one_id", ids[100:] + [f"n{i}" for i in range(50)])
    [diff] = deliver(dests, "stream", wh=wh)
    assert diff.counts["sent"] == 150
    everything = [json.loads(m.value()) for m in read_all(broker, topic, 5150)]
    assert len(everything) == 5150
    later = sorted((b["op"], b["id"]) for b in everything if b["version"] == v2)
    assert later == sorted([("remove", hashlib.sha256(i.encode()).hexdigest()) for i in ids[:100]]
                           + [("add", hashlib.sha256(f"n{i}".encode()).hexdigest()) for i in range(50)])


def test_a_missing_topic_stops_the_run_with_a_clear_error(built_engines, broker, tmp_path):
    wh = built_engines["duckdb"].warehouse
    _reset_delivery(wh)
    a, d = _folders(tmp_path, {"nowhere": f"name: nowhere\naudience: lost_people\nchannel: kafka\n"
                                          f"kafka:\n  bootstrap_servers: {broker.bootstrap}\n"
                                          f"  topic: no-such-topic\n  timeout_s: 5\n"},
                    {"lost_people": SYNTHETIC.format(name="lost_people")})
    _synthetic_version(wh, "lost_people", "one_id", ["1", "2"])
    dests = load_destinations(d, load_project(a))
    with pytest.raises(UserError, match="topic 'no-such-topic' does not exist"):
        deliver(dests, "nowhere", wh=wh)
    [r] = runs(wh, "nowhere")
    assert r["status"] == "stopped" and r["pending"] == 2


# -- e-mail ---------------------------------------------------------------------------------------
EMAIL_DESTINATION = """name: newsletter
audience: mail_people
channel: email
batch_size: 20
variables:
  city: {tag: city, if_missing: default, default: "your city & co"}
email:
  smtp_host: 127.0.0.1
  smtp_port: PORT
  starttls: false
  from_address: news@shop.example
  from_name: The Shop
  subject: "News for {{ city }}"
  html: "<p>Hello {{ email }} in {{ city }}</p><a href='{{ unsubscribe_url }}'>unsubscribe</a>"
  text: "Hello {{ email }}. Unsubscribe: {{ unsubscribe_url }}"
  unsubscribe_url: "http://127.0.0.1:RPORT/unsubscribe/newsletter?token={token}"
  unsubscribe_secret_env: OA_TEST_UNSUBSCRIBE_SECRET
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_email_over_smtp_with_unsubscribe_headers_refusals_and_the_link(
        built_engines, tmp_path, monkeypatch, engine):
    from urllib.parse import parse_qs, urlparse

    import requests

    from connectors.smtp import check_token
    from openaudience.delivery.receipts import ReceiptServer, ingest
    from tests.support.smtp import Mailbox, SmtpServer

    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    monkeypatch.setenv("OA_TEST_UNSUBSCRIBE_SECRET", "unsub-secret")
    emails = [f"user{i}@example.org" for i in range(60)]
    mailbox = Mailbox(refuse={emails[3]}, busy_once={emails[10], emails[30]})
    smtp = SmtpServer(mailbox).start()
    a, d = _folders(tmp_path, {}, {"mail_people": "name: mail_people\nid_type: email\nwhere:\n"
                                                  "  tag: {name: email, is_not_null: true}\n"})
    project = load_project(a)
    dests0 = load_destinations(d, project)  # no destination yet: the receipt server's port first
    server = ReceiptServer(dests0, wh.settings.home)
    rport = server.http.server.server_address[1]
    server.stop()
    (d / "newsletter.yml").write_text(EMAIL_DESTINATION.replace("RPORT", str(rport))
                                      .replace("PORT", str(smtp.port)))
    dests = load_destinations(d, project)
    _synthetic_version(wh, "mail_people", "email", emails)
    try:
        [run] = deliver(dests, "newsletter", wh=wh)
    finally:
        smtp.stop()
    assert run.status == "partial" and run.counts["sent"] == 59 and run.counts["failed"] == 1
    assert {m["To"] for m in mailbox.messages} == set(emails) - {emails[3]}
    assert len(mailbox.messages) == 59  # the 451s were retried, and nobody got two
    keys = dict(wh.query(f"select id_value, idempotency_key from {store.LOG} where run_id = %s",
                         [run.run_id]))
    first = next(m for m in mailbox.messages if m["To"] == emails[0])
    assert first["Subject"] == "News for your city & co"  # plain text: not escaped
    assert first["Message-ID"] == f"<{keys[emails[0]]}@shop.example>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = first["List-Unsubscribe"].strip("<>")
    token = parse_qs(urlparse(link).query)["token"][0]
    assert check_token("unsub-secret", "newsletter", token) == keys[emails[0]]
    html = first.get_body(("html",)).get_content()
    assert "in your city &amp; co</p>" in html and link in html  # HTML: values escaped
    assert wh.query(f"select error from {store.DEAD} where destination = 'newsletter'") == [
        ("550: 5.1.1 no such mailbox",)]
    # the person clicks the link: the next delivery holds them back
    server = ReceiptServer(dests, wh.settings.home, port=rport).start()
    try:
        assert requests.get(link, timeout=5).status_code == 200
        assert requests.get(link.replace(token, token[:-1] + "0"), timeout=5).status_code == 400
    finally:
        server.stop()
    assert ingest(wh, dests)["suppressed"] == 1
    v = _synthetic_version(wh, "mail_people", "email", emails + ["new@example.org"])
    smtp = SmtpServer(mailbox).start()
    (d / "newsletter.yml").write_text(EMAIL_DESTINATION.replace("RPORT", str(rport))
                                      .replace("PORT", str(smtp.port)).replace("mode: diff", "")
                                      + "mode: full\n")
    try:
        [again] = deliver(load_destinations(d, project), "newsletter", wh=wh)
    finally:
        smtp.stop()
    assert again.audience_version == v
    assert wh.query(f"select id_value, rule from {store.LOG} where run_id = %s and status = 'suppressed'",
                    [again.run_id]) == [(emails[0], "suppressed: unsubscribe")]


# -- SMS ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_sms_sends_phone_files_polls_reports_and_times_out_silent_numbers(
        built_engines, tmp_path, monkeypatch, engine):
    from openaudience.delivery.receipts import RECEIPTS
    from openaudience.delivery.sms_reports import poll
    from tests.support.sms_platform import FileServer, SmsPlatform

    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    platform = SmsPlatform()
    files = FileServer(wh.settings.home / "sms_files")
    monkeypatch.setenv("OA_TEST_SMS_API", platform.url)
    monkeypatch.setenv("OA_TEST_SMS_FILES", files.url)
    a, d = _folders(tmp_path, {"promo_sms": "name: promo_sms\naudience: sms_people\nchannel: sms\n"
                                            "batch_size: 1000\nsms:\n  base_url_env: OA_TEST_SMS_API\n"
                                            "  platform_name: acme-sms\n  sign_name: Shop\n"
                                            "  template_code: T1\n  template_params: {coupon: S25}\n"
                                            "  phone_files: {base_url_env: OA_TEST_SMS_FILES}\n"},
                    {"sms_people": "name: sms_people\nid_type: mobile\nwhere:\n"
                                   "  tag: {name: mobile, is_not_null: true}\n"})
    phones = [f"138{i:08d}" for i in range(2500)]
    _synthetic_version(wh, "sms_people", "mobile", phones)
    dests = load_destinations(d, load_project(a))
    try:
        [run] = deliver(dests, "promo_sms", wh=wh)
        assert run.status == "succeeded" and run.counts["sent"] == 2500
        assert len(platform.batches) == 3 and platform.send_calls == 3
        assert sorted(p for b in platform.batches.values() for p in b["phones"]) == phones
        first = next(iter(platform.batches.values()))["request"]
        assert (first["signName"], first["templateCode"], json.loads(first["templateParam"])) == (
            "Shop", "T1", {"coupon": "S25"})
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        t = poll(wh, dests, now=now)
        silent = sum(1 for p in phones if p.endswith("9"))
        failing = sum(1 for p in phones if p.endswith("3"))
        assert t == {"delivered": 2500 - silent - failing, "failed": failing, "timed_out": 0,
                     "waiting": silent, "errors": 0}
        assert platform.detail_calls == 3 + 0  # one page per batch of at most 1,000
        later = poll(wh, dests, now=now + dt.timedelta(hours=73))
        assert later == {"delivered": 0, "failed": silent, "timed_out": silent, "waiting": 0,
                         "errors": 0}
        assert poll(wh, dests, now=now + dt.timedelta(hours=74))["failed"] == 0  # nothing twice
        rows = wh.query(f"select status, count(*) from {RECEIPTS} where destination = 'promo_sms' "
                        "group by status order by status")
        assert rows == [("delivered", 2500 - silent - failing), ("failed", failing + silent)]
    finally:
        platform.stop()
        files.stop()


# -- Dagster ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_a_new_audience_version_triggers_its_deliveries_in_dagster(
        built_engines, receiver, tmp_path, monkeypatch, engine):
    import dagster as dg

    target = built_engines[engine]
    wh = target.warehouse
    _reset_delivery(wh)
    point_process_at(target, monkeypatch, tmp_path / "dagster", keep=("OA_CRM_", "OA_TEST_"))
    from orchestration.definitions import defs
    from orchestration.launch import ensure_dagster_home, run_audience_job, run_delivery_job

    ensure_dagster_home()

    sensor = defs.get_sensor_def("deliveries_on_new_version")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # nothing is sent on first `make ui`
    with dg.DagsterInstance.get() as instance:
        start = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert start.run_requests == [] and start.cursor is not None  # started: from now on
    run_audience_job("audiences_refresh_all", TODAY)
    with dg.DagsterInstance.get() as instance:
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=start.cursor))
        selections = sorted(tuple(k.to_user_string() for k in r.asset_selection) for r in tick.run_requests)
        assert selections == [("deliveries/crm_coupon_webhook",), ("deliveries/high_value_export",)]
        again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=tick.cursor))
        assert again.run_requests == []  # nothing new since
        run_audience_job("audiences_refresh_all", TODAY)  # built while the sensor was stopped...
        restarted = sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, cursor=again.cursor, last_sensor_start_time=1_900_000_000.0))
        assert restarted.run_requests == []  # ...is no backlog when it is started again
    summaries = run_delivery_job()
    by_name = {s.destination: s for s in summaries}
    assert by_name["crm_coupon_webhook"].counts["sent"] == len(receiver.state.accepted) > 0
    assert by_name["high_value_export"].status == "succeeded"
    with dg.DagsterInstance.get() as instance:
        meta = instance.get_latest_materialization_event(
            dg.AssetKey(["deliveries", "crm_coupon_webhook"])).asset_materialization.metadata
    assert meta["sent"].value == by_name["crm_coupon_webhook"].counts["sent"]
    assert meta["status"].value == "succeeded"
    assert meta["funnel"].value.startswith("![crm_coupon_webhook](data:image/png;base64,")
    # the delivery asset reads the audience asset: lineage in the UI
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["audiences", "shanghai_big_spenders"]) in graph.get(
        dg.AssetKey(["deliveries", "crm_coupon_webhook"])).parent_keys


def test_a_bad_suppression_file_names_its_lines_and_adds_nothing(tmp_path):
    from openaudience.delivery.suppression import add, read_ids

    path = tmp_path / "unsubscribed.txt"
    path.write_text("# exported from the CRM\n+86 138 0000 0001\n\n12345\n13800000002\nnot-a-phone\n")
    with pytest.raises(UserError) as info:
        read_ids(path, "mobile")
    message = str(info.value)
    assert message.startswith("nothing was added; fix these lines:")
    assert f"{path}:4: '12345' is not an 11-digit mainland mobile" in message
    assert f"{path}:6: 'not-a-phone'" in message and ":2:" not in message
    path.write_text("+86 138 0000 0001\n13800000002\n")
    assert read_ids(path, "mobile") == ["13800000001", "13800000002"]
    with pytest.raises(UserError, match="reason 'gone' is not one of unsubscribe, t_reply"):
        add(None, "mobile", ["13800000001"], "gone")
