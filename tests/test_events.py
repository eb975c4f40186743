"""Real-time events: the definitions in events/ (file:line errors, the management rules), the
reporting contract checked message by message, the collector over real HTTP (`oa events serve`
on loopback: signatures, sizes, per-message errors, retries stored once), the kill -9 fault
test, and the log into the warehouse on both engines."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from connectors.events import (
    SIGNATURE_HEADER,
    EventClient,
    signed_headers,
)
from openaudience.core.settings import PROJECT_ROOT
from openaudience.events import messages as m
from openaudience.events.log import EventLog, log_dir, segments
from openaudience.events.source import EventErrors, changes, load_events
from tests.conftest import OA
from tests.support.postgres import free_port

KEY = "app-signing-key"
ENV = {"OA_EVENTS_KEY_SHOP_APP": KEY}  # the H5 site's key is left unset: its channel answers 503


def _now_ms() -> int:
    return int(time.time() * 1000)


def _purchase(customer: str, at: int | None = None, **attrs) -> dict:
    return {"customerId": customer, "eventCode": "app_purchase", "eventSourceCode": "shop-app",
            "eventTime": at or _now_ms(), "extendAttributes": {"item_id": "P1", "amount": "12.5", **attrs}}


# -- definitions ----------------------------------------------------------------------------------
def test_the_shipped_definitions_load():
    registry = load_events()
    assert {"app_purchase", "app_add_to_cart", "h5_login"} <= set(registry.events)
    purchase = registry.events["app_purchase"]
    assert purchase.app_key == "shop-app"
    assert purchase.attributes == {"app_version": "text", "item_id": "text", "order_id": "text",
                                   "amount": "numeric"}


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


CHANNEL = ("channel: {{name: {name}, app_key: {key}, app_type: app, key_env: OA_K_{env}}}\n")


def test_definition_errors_name_the_file_the_line_and_what_to_do(tmp_path):
    _write(tmp_path, "a.yml", CHANNEL.format(name="A", key="a-app", env="A")
           + "events:\n  - code: buy\n    name: Buy\n")
    _write(tmp_path, "b.yml", CHANNEL.format(name="B", key="a-app", env="B")
           + "events:\n  - {code: view, name: View, attributes: [{id: x, name: X}, {id: x, name: Y}]}\n")
    _write(tmp_path, "c.yml", CHANNEL.format(name="C", key="c-app", env="C")
           + "events:\n  - {code: buy, name: Also buy}\n")
    _write(tmp_path, "d.yml", "channel: {name: D, app_key: d, app_type: tv, key_env: lower_case}\n"
                              "events: []\n")
    _write(tmp_path, "e.yml", CHANNEL.format(name="E", key="e-app", env="E")
           + "events:\n  - code: '1bad'\n    name: Bad\n    attributes:\n"
             "      - {id: price, name: Price, type: number}\n")
    with pytest.raises(EventErrors) as info:
        load_events(tmp_path)
    assert str(info.value).replace(str(tmp_path) + "/", "").splitlines() == [
        "b.yml:1: channel.app_key: app_key 'a-app' is already the channel of a.yml:1; an app_key names one "
        "channel",
        "b.yml:3: events[0].attributes[1].id: attribute 'x' is listed twice",
        "c.yml:3: events[0].code: event code 'buy' is already defined at a.yml:3; a code names one event",
        "d.yml:1: channel.app_type: Input should be 'app', 'mini_program', 'web' or 'third_party'",
        "d.yml:1: channel.key_env: key_env names an environment variable (A-Z, 0-9, _), not 'lower_case'; "
        "the key itself never goes into a file",
        "d.yml:2: events: List should have at least 1 item after validation, not 0",
        "e.yml:3: events[0].code: event code '1bad' must start with a letter and hold only letters, digits, "
        "'_', '.' and '-' (at most 64)",
        "e.yml:6: events[0].attributes[0].type: Input should be 'text' or 'numeric'",
    ]


def test_the_management_rules_allow_names_and_new_attributes_only():
    registry = load_events()
    applied = json.loads(json.dumps(registry.as_json()))
    assert changes(registry, applied) == []
    renamed = json.loads(json.dumps(applied))
    renamed["events"]["app_purchase"]["name"] = "Purchase (old name)"
    del renamed["events"]["app_purchase"]["attributes"]["order_id"]  # added since: allowed
    assert changes(registry, renamed) == []
    before = json.loads(json.dumps(applied))
    before["events"]["app_purchase"]["attributes"]["coupon"] = "text"
    before["events"]["app_purchase"]["attributes"]["amount"] = "text"
    before["events"]["h5_login"]["app_key"] = "shop-app"
    before["channels"]["shop-app"]["app_type"] = "web"
    assert changes(registry, before) == [
        "channel shop-app: app_type was 'web' and cannot change (to 'app'); define a new channel instead",
        "event app_purchase: attribute 'amount' is text and cannot become numeric",
        "event app_purchase: attribute 'coupon' cannot be removed (attributes are only added); put it back",
        "event h5_login: it belongs to channel 'shop-app' and cannot move to 'h5-site'",
    ]
    # an event a journey triggers on stays while the journey does
    assert changes(registry, applied, {"app_checkout": ["thank_you"]}) == [
        "event app_checkout cannot be removed: journey thank_you triggers on it"]


# -- the messages ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("message", "error"), [
    ({"eventCode": "app_purchase", "eventTime": 1_700_000_000_000}, "customerId is required"),
    ({"customerId": "m", "eventCode": "app_checkout", "eventTime": 1_700_000_000_000},
     "unknown eventCode 'app_checkout'"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventTime": "1700000000000"},
     "eventTime must be an integer"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventTime": 1_700_000_000},
     "eventTime 1700000000 is not a millisecond time"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventTime": 1_700_000_000_000,
      "extendAttributes": {"colour": "red"}}, "attribute 'colour' is not an attribute of 'app_purchase'"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventTime": 1_700_000_000_000,
      "extendAttributes": {"amount": "NaN"}}, "attribute 'amount' is numeric; 'NaN' is not a finite number"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventSourceCode": "h5-site",
      "eventTime": 1_700_000_000_000}, "eventSourceCode 'h5-site' is not the channel of 'app_purchase'"),
    ({"customerId": "m", "eventCode": "h5_login", "eventTime": 1_700_000_000_000},
     "event 'h5_login' belongs to channel h5-site; this request is signed by shop-app"),
    ({"customerId": "m\x00", "eventCode": "app_purchase", "eventTime": 1_700_000_000_000},
     "customerId holds control characters"),
    ({"customerId": "m", "eventCode": "app_purchase", "eventTime": 1_700_000_000_000, "v": 2},
     "v must be 1"),
    ("not an object", "a message must be a JSON object"),
])
def test_each_bad_message_says_what_is_wrong(message, error):
    judged = m.judge_events([_purchase("good"), message], load_events(), "shop-app")
    assert len(judged.records) == 1 and judged.records[0]["customer_id"] == "good"
    [problem] = judged.errors
    assert problem["index"] == 1 and problem["errorCode"] == m.BAD_MESSAGE
    assert error in problem["errorDesc"], problem


def test_the_same_event_reported_twice_has_one_id():
    registry = load_events()
    at = _now_ms()
    first = m.judge_events([_purchase("m1", at)], registry, "shop-app").records[0]
    unsourced = {**_purchase("m1", at), "eventSourceCode": None}
    again = m.judge_events([unsourced], registry, "shop-app").records[0]
    other = m.judge_events([_purchase("m1", at + 1)], registry, "shop-app").records[0]
    assert first["id"] == again["id"] != other["id"]
    given = m.judge_events([{**_purchase("m1", at), "eventId": "evt-1"}], registry, "shop-app").records[0]
    assert given["id"] == "e:evt-1"
    with pytest.raises(ValueError, match="101 messages in one batch; at most 100"):
        m.batch({"eventMessageModelListStr": json.dumps([_purchase("m")] * 101)}, "eventMessageModelListStr")


def test_identity_messages_map_the_twelve_id_mappings():
    judged = m.judge_identities([
        {"customerId": "m1", "customerIdList": [{"customerId": "13800138000", "idMapping": "mobile"},
                                                {"customerId": "oX1", "idMapping": "open_id"}]},
        {"customerId": "m2", "customerIdList": [{"customerId": "x", "idMapping": "qq"}]},
    ], load_events(), "shop-app")
    assert judged.records[0]["ids"] == [["mobile", "13800138000"], ["openid", "oX1"]]
    assert judged.records[0]["customer_id_type"] == "member_id"
    expected = "customerIdList[0].idMapping 'qq' is not one of oneid, email, mobile"
    assert expected in judged.errors[0]["errorDesc"]
    assert len(m.IDMAPPING) == 12


# -- the log --------------------------------------------------------------------------------------
def test_the_log_keeps_one_writer_stores_once_and_cuts_a_torn_line(tmp_path):
    log = EventLog.open(tmp_path)
    with pytest.raises(Exception, match="another collector \\(PID"):
        EventLog.open(tmp_path)
    records = [{"id": f"h:{i}", "kind": "event"} for i in range(3)]
    assert (log.append(records).stored, log.append(records[1:] + [{"id": "h:9"}]).duplicates) == (3, 2)
    log.close()
    [segment] = segments(tmp_path)
    with segment.open("ab") as fh:
        fh.write(b'{"id":"h:torn","kind":"ev')  # a crash in the middle of a write
    again = EventLog.open(tmp_path)
    assert again.records == 4 and "h:9" in again and "h:torn" not in again
    assert segment.read_bytes().endswith(b"\n")
    again.close()


# -- the collector over HTTP ----------------------------------------------------------------------
def _serve(home: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OA_")}, "OA_HOME": str(home), **ENV}
    proc = subprocess.Popen([OA, "events", "serve", "--port", str(port), *extra], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the collector did not start")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    home = tmp_path_factory.mktemp("collector")
    port = free_port()
    proc = _serve(home, port)
    yield f"http://127.0.0.1:{port}", home, port
    _stop(proc)


def _raw(port: int, headers: dict, length: int | None, body: bytes = b"", path: str = "/events"):
    """One request as written: headers, a declared length and a body that may disagree."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if length is not None:
            conn.putheader("Content-Length", str(length))
        conn.endheaders(body or None)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_the_collector_speaks_the_contract(collector):
    url, home, port = collector
    client = EventClient(url, "shop-app", KEY)
    at = _now_ms()
    batch = [_purchase("m1", at), _purchase("m2", at, amount="lots"), _purchase("m3", at)]
    status, answer = client.events(batch)
    assert status == 200 and answer["success"] is False and answer["errorCode"] == m.BAD_MESSAGE
    assert answer["accepted"] == 2 and answer["traceId"]
    assert [e["index"] for e in answer["errors"]] == [1]
    # the retry of the whole batch: the good ones are there already, stored once
    status, answer = client.events([batch[0], batch[2]])
    assert (status, answer["success"], answer["accepted"], answer["duplicates"]) == (200, True, 0, 2)
    status, answer = client.identities([{"customerId": "m1", "customerIdList": [
        {"customerId": "13800138000", "idMapping": "mobile"}]}])
    assert (status, answer["success"], answer["accepted"]) == (200, True, 1)
    lines = [json.loads(line) for p in segments(log_dir(home)) for line in p.read_text().splitlines()]
    assert sorted(r["customer_id"] for r in lines if r["kind"] == "event") == ["m1", "m3"]
    # what the collector has done since it started, for whoever watches it
    with urllib.request.urlopen(f"{url}/health", timeout=10) as reply:
        health = json.loads(reply.read())
    assert health["records"] == len(lines) and health["duplicates"] >= 2 and health["refused_messages"] >= 1
    assert all(r["received"] >= at - 1000 for r in lines)


def test_the_collector_refuses_before_it_reads(collector):
    url, home, port = collector
    body = json.dumps({"eventMessageModelListStr": json.dumps([_purchase("x")])}).encode()
    good = signed_headers(KEY, "shop-app", body)

    auth = (401, m.AUTH_FAILED[0])
    for headers, expected in (
        ({**good, SIGNATURE_HEADER: "0" * 64}, auth),                          # a wrong signature
        (signed_headers("another-key", "shop-app", body), auth),              # another key
        (signed_headers(KEY, "shop-app", body, timestamp=int(time.time()) - 600), auth),  # stale
        ({k: v for k, v in good.items() if k != SIGNATURE_HEADER}, auth),     # none
        (signed_headers(KEY, "nobody", body), auth),                           # no such channel
        (signed_headers("x", "h5-site", body), (503, m.UNAVAILABLE)),          # a channel without a key
    ):
        status, answer = _raw(port, headers, len(body), body)
        assert (status, answer["errorCode"]) == expected, (headers, answer)
        assert answer["success"] is False and answer["traceId"]
    # a body too large, or of no declared size, is refused from the headers: nothing is read
    assert _raw(port, good, 50 * 1024 * 1024)[0] == 413
    assert _raw(port, good, None)[0] == 411
    # a signed body that is not the body sent
    tampered = body.replace(b"12.5", b"99.5")
    assert tampered != body
    status, answer = _raw(port, good, len(tampered), tampered)
    assert (status, answer["errorCode"]) == auth
    # the body's JSON and the batch
    for payload, code in ((b"[", m.BAD_REQUEST), (json.dumps({"eventMessageModelListStr": "{}"}).encode(),
                                                   m.BAD_REQUEST),
                          (json.dumps([_purchase("z")] * 101).encode(), m.BATCH_TOO_LARGE)):
        status, answer = _raw(port, signed_headers(KEY, "shop-app", payload), len(payload), payload)
        assert (status, answer["errorCode"]) == (400, code), answer
    status, answer = _raw(port, good, len(body), body, path="/nowhere")
    assert status == 404
    assert not any('"x"' in p.read_text() or '"z"' in p.read_text() for p in segments(log_dir(home)))


def test_a_second_collector_on_the_same_home_says_who_holds_it(collector):
    url, home, port = collector
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OA_")}, "OA_HOME": str(home), **ENV}
    done = subprocess.run([OA, "events", "serve", "--port", str(free_port())], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "another collector (PID" in done.stderr and "writes" in done.stderr, done.stderr


# -- the fault test -------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_while_ten_clients_post_loses_no_answered_event(tmp_path):
    """Ten clients post batches; the collector is killed with SIGKILL mid-stream and started
    again; the clients retry what got no answer. Every event answered `success` is in the log
    exactly once, and nothing is there twice."""
    port = free_port()
    proc = _serve(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    answered: list[set[str]] = [set() for _ in range(10)]
    stop = threading.Event()
    restarted = threading.Event()
    sent_batches = [0] * 10

    def client(n: int) -> None:
        c = EventClient(url, "shop-app", KEY, timeout=5)
        i = 0
        while not stop.is_set():
            batch = [{**_purchase(f"c{n}"), "eventId": f"c{n}-{i}-{j}"} for j in range(20)]
            while not stop.is_set():  # until this batch is answered: a retry after the crash
                try:
                    status, answer = c.events(batch)
                except Exception:  # noqa: BLE001 - the collector is down: retry
                    time.sleep(0.05)
                    continue
                if status == 200 and answer["success"]:
                    answered[n].update(e["eventId"] for e in batch)
                    break
                time.sleep(0.05)
            sent_batches[n] += 1
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while sum(map(len, answered)) < 3000:
            assert time.monotonic() < deadline, "the clients got no answers"
            time.sleep(0.05)
        before_kill = sum(map(len, answered))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests in flight fail; the clients keep retrying
        proc = _serve(tmp_path, port)
        restarted.set()
        deadline = time.monotonic() + 60
        while sum(map(len, answered)) < before_kill + 3000:
            assert time.monotonic() < deadline, "no answers after the restart"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        _stop(proc)
    ids = [json.loads(line)["id"] for p in segments(log_dir(tmp_path)) for line in p.read_text().splitlines()]
    assert len(ids) == len(set(ids)), "an event is in the log twice"
    everything = set().union(*answered)
    assert {"e:" + e for e in everything} <= set(ids), "an answered event is missing"
    assert len(everything) >= before_kill + 3000


# -- into the warehouse ---------------------------------------------------------------------------
def test_the_log_goes_into_the_warehouse_once(target, tmp_path):
    from openaudience.core.schema import operational as op
    from openaudience.events.ingest import ingest

    registry = load_events()
    home = target.settings.home
    log = EventLog.open(log_dir(home))
    at = _now_ms()
    events = m.judge_events([_purchase(f"m{i}", at + i) for i in range(30)], registry, "shop-app").records
    ids = [{"customerId": "13800138000", "idMapping": "mobile"},
           {"customerId": "A@B.example", "idMapping": "email"}]
    people = m.judge_identities([{"customerId": "m1", "customerIdList": ids}], registry, "shop-app").records
    log.append(events[:20] + people)
    wh = target.warehouse
    done = ingest(wh, home, chunk_lines=7)
    assert (done.events, done.identities, done.unreadable) == (20, 2, 0)
    log.append(events[20:])
    again = ingest(wh, home)
    assert (again.events, again.identities) == (10, 0)
    assert ingest(wh, home).events == 0  # nothing new: nothing twice
    log.close()
    rows = wh.query(f"select event_code, customer_id, customer_id_type, attributes, occurred_at "
                    f"from {op.EVENTS.relation} order by customer_id")
    assert len(rows) == 30 and {r[0] for r in rows} == {"app_purchase"}
    assert json.loads(rows[0][3]) == {"amount": "12.5", "item_id": "P1"} and rows[0][2] == "member_id"
    assert sorted(wh.query(f"select id_type, id_value from {op.EVENT_IDENTITIES.relation}")) == [
        ("email", "A@B.example"), ("mobile", "13800138000")]


# -- from a Kafka topic ---------------------------------------------------------------------------
def _logged(home: Path) -> list[dict]:
    return [json.loads(line) for p in segments(log_dir(home)) for line in p.read_text().splitlines()]


def _wait_logged(home: Path, n: int, proc: subprocess.Popen, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        found = _logged(home)
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{len(_logged(home))} of {n} events logged")


def test_events_from_a_kafka_topic_join_the_log_once(broker, tmp_path):
    """JSON lines on a topic (a real Kafka-protocol broker): the good ones are logged, the bad
    ones said and skipped; after a restart the reader goes on from its offsets, and a message
    read twice is still logged once."""
    from confluent_kafka import Producer

    topic = "app-events"
    broker.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    at = _now_ms()
    for i in range(40):
        producer.produce(topic, json.dumps({**_purchase(f"k{i}", at), "eventId": f"k{i}"}).encode(),
                         key=str(i).encode())
    producer.produce(topic, b"not json")
    producer.produce(topic, json.dumps([_purchase("bad", at, amount="many"),
                                        {**_purchase("k40", at), "eventId": "k40"}]).encode())
    producer.flush(10)
    port = free_port()
    extra = ("--kafka-topic", topic, "--kafka-bootstrap", broker.bootstrap, "--kafka-channel", "shop-app")
    proc = _serve(tmp_path, port, *extra)
    try:
        logged = _wait_logged(tmp_path, 41, proc)
    finally:
        _, err = _stop(proc)
    assert sorted(r["id"] for r in logged) == sorted(f"e:k{i}" for i in range(41))
    assert "not JSON; skipped" in err and "attribute 'amount' is numeric" in err, err
    # the reader stored where it stopped; more messages, one of them again, after a restart
    (tmp_path / "events" / f"kafka-{topic}.json").write_text(json.dumps({"0": 0}))  # partition 0 again
    for i in range(41, 50):
        producer.produce(topic, json.dumps({**_purchase(f"k{i}", at), "eventId": f"k{i}"}).encode())
    producer.flush(10)
    proc = _serve(tmp_path, port, *extra)
    try:
        logged = _wait_logged(tmp_path, 50, proc)
        time.sleep(1)  # anything read twice would land now
    finally:
        _stop(proc)
    ids = [r["id"] for r in _logged(tmp_path)]
    assert len(ids) == len(set(ids)) == 50


def test_the_cli_ingests_and_dagster_does_the_same_when_the_log_grows(tmp_path, monkeypatch):
    """`oa events ingest` as a command, then the sensor sees the log grow and the asset moves
    the rest, with its counts as metadata (DuckDB: the SQL runs on both engines above)."""
    import dagster as dg

    from orchestration.definitions import build_definitions
    from orchestration.resources import WarehouseResource
    from tests.conftest import Target, make_target, point_process_at

    target = make_target("duckdb", tmp_path, None, "")
    home = target.settings.home
    registry = load_events()
    log = EventLog.open(log_dir(home))
    log.append(m.judge_events([_purchase(f"c{i}") for i in range(5)], registry, "shop-app").records)
    (tmp_path / "dagster").mkdir()
    with_ui = Target(name="duckdb", env={**target.env, "DAGSTER_HOME": str(tmp_path / "dagster")})
    done = with_ui.oa("events", "ingest")
    assert done.returncode == 0, done.stderr
    assert "5 new event(s) and 0 identity link(s)" in " ".join(done.stdout.split()), done.stdout
    point_process_at(target, monkeypatch, tmp_path / "dagster")
    with dg.DagsterInstance.get() as instance:  # what the command did shows in the UI
        reported = instance.get_latest_materialization_event(dg.AssetKey(["events", "events"]))
        meta = reported.asset_materialization.metadata
        assert (meta["new_events"].value, meta["source"].value) == (5, "cli")
    defs = build_definitions()
    sensor = defs.get_sensor_def("events_ingest_sensor")
    with dg.instance_for_test() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(first, dg.RunRequest)
        log.append(m.judge_events([_purchase(f"d{i}") for i in range(3)], registry, "shop-app").records)
        grown = sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor="{}"))
        assert isinstance(grown, dg.RunRequest)
        result = defs.resolve_job_def("events_ingest").execute_in_process(
            instance=instance, resources={"warehouse": WarehouseResource()})
    log.close()
    assert result.success
    mat = next(e.materialization for e in result.get_asset_materialization_events()
               if e.materialization.asset_key == dg.AssetKey(["events", "events"]))
    assert mat.metadata["new_events"].value == 3 and mat.metadata["already_there"].value == 0
    assert target.warehouse.query("select count(*) from events.events")[0][0] == 8


# -- into the models: the next build sees them ----------------------------------------------------
@pytest.fixture(scope="module")
def event_engines(built_engines, pg_cluster, tmp_path_factory):
    """This module's own copy of `built_engines` (its builds change fct_behaviors and identities)."""
    from tests.conftest import own_copy_of_built

    return own_copy_of_built(built_engines, pg_cluster, tmp_path_factory, "events")


EVENT_MODELS = ("stg_events__events stg_events__identity_links dim_event_types int_collector_events_built "
                "int_identity_links "
                "int_identity_nodes int_identity_shared_ids int_identity_guarded_links "
                "int_identity_components dim_identities fct_behaviors intermediate.users user_tags")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ("duckdb", "postgres"))
def test_events_reach_behaviours_identities_and_audiences_at_the_next_build(event_engines, engine,
                                                                           tmp_path):
    """Events of a known member and of a member only the collector knows (with an identity
    message giving their mobile): after the ingest and the build, both are behaviour rows of
    their person, the new member's mobile is theirs, and an audience of the event finds them."""
    import datetime as dt

    from openaudience.events.ingest import ingest
    from openaudience.segments.engine import MEMBERS, build
    from openaudience.segments.source import Catalog, load_project

    target = event_engines[engine]
    wh = target.warehouse
    [(member, one_id)] = wh.query("select id_value, one_id from marts.dim_identities "
                                  "where id_type = 'member_id' order by id_value limit 1")
    at = int(dt.datetime(2026, 6, 29, 10, tzinfo=dt.UTC).timestamp() * 1000)
    registry = load_events()
    log = EventLog.open(log_dir(target.settings.home))
    mobile = [{"customerId": "+86 139 0000 0001", "idMapping": "mobile"}]
    log.append(m.judge_events([_purchase(member, at, amount="88.80", item_id="P0042"),
                               _purchase("new-member-1", at + 1000)], registry, "shop-app").records
               + m.judge_identities([{"customerId": "new-member-1", "customerIdList": mobile}], registry,
                                    "shop-app").records)
    log.close()
    assert ingest(wh, target.settings.home).events == 2
    target.dbt("build", "--select", EVENT_MODELS)  # the models and their data tests
    rows = wh.query("select one_id, channel, item_id, behavior_amount from marts.fct_behaviors "
                    "where event_type = 'app_purchase' order by occurred_at")
    assert len(rows) == 2
    assert rows[0][0] == one_id and rows[0][1] == "app" and rows[0][2] == "P0042"
    assert float(rows[0][3]) == 88.8
    [(new_person,)] = wh.query("select one_id from marts.dim_identities where id_type = 'member_id' "
                               "and id_value = 'new-member-1'")
    assert rows[1][0] == new_person
    assert wh.query("select one_id from marts.dim_identities where id_type = 'mobile' "
                    "and id_value = '13900000001'") == [(new_person,)]
    # an audience of the event, as an analytics engineer writes it
    folder = tmp_path / "audiences"
    folder.mkdir()
    (folder / "app_buyers.yml").write_text(
        "name: app_buyers\nid_type: one_id\nwhere:\n  behavior: {did: app_purchase, last_days: 7}\n")
    project = load_project(folder, Catalog.from_project())
    build(project, ["app_buyers"], dt.date(2026, 6, 29), wh=wh)
    members = {r[0] for r in wh.query(f"select one_id from {MEMBERS} where audience = 'app_buyers'")}
    assert members == {one_id, new_person}


def test_a_log_that_cannot_be_written_answers_503_and_stores_nothing(tmp_path):
    """The event log's file fails under the collector (here its descriptor is gone, as a full or
    failed disk fails a write): the request is answered 503, not success, and nothing counts."""
    import asyncio

    from openaudience.events.collector import Collector

    log = EventLog.open(tmp_path)
    app = Collector(load_events(), {"shop-app": KEY}, log, 1_048_576)
    body = json.dumps({"eventMessageModelListStr": json.dumps([_purchase("m1")])}).encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in signed_headers(KEY, "shop-app", body).items()]
    headers.append((b"content-length", str(len(body)).encode()))
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    async def run():
        await app._start()
        try:
            scope = {"type": "http", "path": "/events", "method": "POST", "headers": headers}
            await app(scope, receive, send)
        finally:
            await app._stop()

    os.close(log._fd)  # every write from now on fails with an OSError
    asyncio.run(run())
    assert sent[0]["status"] == 503
    answer = json.loads(sent[1]["body"])
    assert answer["success"] is False and answer["errorCode"] == m.UNAVAILABLE
    assert log.records == 0 and "h:" not in "".join(p.read_text() for p in segments(tmp_path))
    log._fd = None
    log.close()


def test_a_replaced_log_is_read_again_from_its_start_and_nothing_is_ingested_twice(target):
    """The log moved or replaced under a warehouse that remembers an offset in it: the ingest
    reads what there is from the start, and the events it already holds are not written again."""
    import shutil

    from openaudience.events.ingest import ingest

    home = target.settings.home
    registry = load_events()
    records = m.judge_events([_purchase(f"r{i}") for i in range(6)], registry, "shop-app").records
    log = EventLog.open(log_dir(home))
    log.append(records[:4])
    log.close()
    wh = target.warehouse
    assert ingest(wh, home).events == 4
    shutil.rmtree(log_dir(home))  # a new log: one segment, shorter than the offset remembered
    log = EventLog.open(log_dir(home))
    log.append(records[3:])
    log.close()
    again = ingest(wh, home)
    assert (again.events, again.already) == (2, 1)
    assert wh.query("select count(*) from events.events")[0][0] == 6
