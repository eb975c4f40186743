"""The receipt endpoint under hostile and careless clients, through real HTTP clients against the
real endpoint on loopback: a huge body is refused from its headers without being read, an
unsigned request gets an explicit 401, a nonce replayed after a restart (or to another endpoint
process sharing OA_HOME) is refused, a mixed batch gets a verdict per receipt that ingest then
agrees with, and a destination whose secret is missing answers 503 while the others work."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from connectors.webhook import (
    SIGNATURE_HEADER,
    SignatureError,
    SignatureVerifier,
    new_nonce,
    sign,
    signature_matches,
)
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.settings import PROJECT_ROOT
from openaudience.delivery.receipts import QUEUED_NOTE, ReceiptServer, ingest
from openaudience.delivery.source import load_destinations
from openaudience.segments.source import load_project
from tests.conftest import OA, make_target
from tests.support.hostile import assert_refused

SECRET_A, SECRET_B = "receipts-secret-a", "receipts-secret-b"
DESTINATION = """name: {name}
audience: people
channel: webhook
webhook:
  url: http://127.0.0.1:9/hook
  secret_env: {env}
  receipts:
    window_hours: 72
    statuses: {{"200": delivered, "410": unsubscribed}}
"""


@pytest.fixture
def dests(tmp_path):
    """Two destinations with receipts, crm_a (secret in OA_TEST_RECEIPTS_A) and crm_b."""
    a, d = tmp_path / "audiences", tmp_path / "destinations"
    a.mkdir()
    d.mkdir()
    (a / "people.yml").write_text("name: people\nid_type: one_id\nwhere:\n"
                                  "  tag: {name: city, is_not_null: true}\n")
    for name, env in (("crm_a", "OA_TEST_RECEIPTS_A"), ("crm_b", "OA_TEST_RECEIPTS_B")):
        (d / f"{name}.yml").write_text(DESTINATION.format(name=name, env=env))
    return load_destinations(d, load_project(a))


BOTH = {"OA_TEST_RECEIPTS_A": SECRET_A, "OA_TEST_RECEIPTS_B": SECRET_B}


def _signed(secret: str, timestamp: int | None = None, nonce: str | None = None) -> tuple[str, dict]:
    """The query string and headers of a request signed as the contract says."""
    ts, nonce = str(timestamp or int(time.time())), nonce or new_nonce()
    return f"timestamp={ts}&nonce={nonce}", {SIGNATURE_HEADER: sign(secret, ts, nonce)}


def _receipt(msg_id: str, status: str = "200", webhook_id: str = "crm_a", **callback) -> dict:
    sent = str(int(time.time() * 1000) - 60_000)
    return {"msg_id": msg_id, "status": status, "cst_id": "13800000000", "send_time": sent,
            "callback_params": {"task_id": "t" * 32, "webhook_id": webhook_id, "send_time": sent,
                                "msg_key": "k" * 32, **callback}}


def _partial_post(url: str, path: str, headers: dict, declared: int, send: bytes,
                  chunked: bool = False) -> http.client.HTTPResponse:
    """POST that declares `declared` bytes (or none, chunked) but sends only `send`, then waits
    for the answer: it can only come if the endpoint answered from the headers."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", path)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Type", "application/json")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(declared))
    conn.endheaders()
    conn.send(send)
    return conn.getresponse()


def test_a_huge_or_unsigned_body_is_refused_from_its_headers(dests, tmp_path):
    server = ReceiptServer(dests, tmp_path, environ=BOTH).start()
    base = server.url + "/crm_a"
    try:
        query, _ = _signed(SECRET_A)
        huge = _partial_post(base, f"/receipts/crm_a?{query}", {SIGNATURE_HEADER: "0" * 64},
                             64 * 1024 * 1024, b"[" + b" " * 1023)
        assert huge.status == 413 and "at most 1,048,576" in json.loads(huge.read())["message"]
        # within the limit, but the signature is wrong: refused before the body is read
        forged = _partial_post(base, f"/receipts/crm_a?{query}", {SIGNATURE_HEADER: "0" * 64},
                               100_000, b"[" + b" " * 99)
        assert forged.status == 401 and json.loads(forged.read())["message"] == "signature does not match"
        chunked = _partial_post(base, f"/receipts/crm_a?{query}", {SIGNATURE_HEADER: "0" * 64}, 0,
                                b"5\r\n[   ]\r\n", chunked=True)
        assert chunked.status == 411
        unsigned = requests.post(f"{base}?{_signed(SECRET_A)[0]}", json=[_receipt("m1")], timeout=5)
        assert unsigned.status_code == 401
        assert unsigned.json()["message"].startswith(f"missing {SIGNATURE_HEADER} header")
        query, headers = _signed(SECRET_A)
        ok = requests.post(f"{base}?{query}", json=[_receipt("m1")], headers=headers, timeout=5)
        assert ok.status_code == 200 and ok.json()["queued"] == 1  # it still serves
    finally:
        server.stop()
    spooled = [json.loads(x) for x in (tmp_path / "receipts" / "crm_a.jsonl").read_text().splitlines()]
    # the forged and the unsigned request are counted, not spooled; a 413 or 411 spools nothing
    assert [(v["verdict"], v.get("msg_id", "")) for v in spooled] == [("accepted", "m1")]
    assert server.refused == {"crm_a": 2}

    small = ReceiptServer(dests, tmp_path, environ={**BOTH, "OA_RECEIPT_MAX_BYTES": "2048"}).start()
    try:
        query, headers = _signed(SECRET_A)
        big = requests.post(f"{small.url}/crm_a?{query}", json=[_receipt(f"m{i}") for i in range(20)],
                            headers=headers, timeout=5)
        assert big.status_code == 413 and "at most 2,048" in big.json()["message"]
    finally:
        small.stop()
    with pytest.raises(ConfigError, match="OA_RECEIPT_MAX_BYTES='1MB': give the largest receipt body"):
        ReceiptServer(dests, tmp_path, environ={**BOTH, "OA_RECEIPT_MAX_BYTES": "1MB"})


def test_a_mixed_batch_gets_a_verdict_per_receipt_and_ingest_agrees(dests, tmp_path):
    server = ReceiptServer(dests, tmp_path / "home", environ=BOTH).start()
    late = str(int(time.time() - 80 * 3600) * 1000)
    batch = [_receipt("good"), _receipt("code", status="999"), _receipt("other", webhook_id="crm_b"),
             _receipt("late", send_time=late), {"status": "200"}, "not a receipt"]
    try:
        query, headers = _signed(SECRET_A)
        answer = requests.post(f"{server.url}/crm_a?{query}", json=batch, headers=headers, timeout=5)
    finally:
        server.stop()
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == "PARTIAL" and body["queued"] == 1
    verdicts = [(r["msg_id"], r["verdict"], r["reason"]) for r in body["results"]]
    assert verdicts[0] == ("good", "queued", QUEUED_NOTE)
    assert verdicts[1][:2] == ("code", "rejected") and verdicts[1][2].startswith("unknown status '999'")
    assert verdicts[2] == ("other", "rejected", "callback_params.webhook_id 'crm_b' is not crm_a")
    assert verdicts[3][:2] == ("late", "rejected") and verdicts[3][2].startswith("late: 80.0 h after")
    assert verdicts[4:] == [("", "rejected", "missing msg_id or callback_params.msg_key")] * 2
    # ingest runs the check the endpoint could not: the log holds no message "good" refers to
    target = make_target("duckdb", tmp_path, None, "")
    totals = ingest(target.warehouse, dests)
    assert totals == {"accepted": 0, "rejected": 6, "suppressed": 0}
    rows = dict(target.warehouse.query("select coalesce(msg_id, ''), reason from delivery.delivery_receipts "
                                       "where msg_id in ('good', 'code', 'other', 'late')"))
    assert rows["good"] == "no such message in the delivery log"
    assert {m: r for m, _, r in verdicts[1:4]} == {m: rows[m] for m in ("code", "other", "late")}


def test_a_destination_without_its_secret_answers_503_and_the_others_work(dests, tmp_path):
    server = ReceiptServer(dests, tmp_path, environ={"OA_TEST_RECEIPTS_A": SECRET_A}).start()
    try:
        query, headers = _signed(SECRET_A)
        a = requests.post(f"{server.url}/crm_a?{query}", json=[_receipt("a1")], headers=headers, timeout=5)
        query, headers = _signed(SECRET_B)
        b = requests.post(f"{server.url}/crm_b?{query}", json=[_receipt("b1", webhook_id="crm_b")],
                          headers=headers, timeout=5)
    finally:
        server.stop()
    assert a.status_code == 200 and a.json()["code"] == "OK"
    assert b.status_code == 503 and "OA_TEST_RECEIPTS_B" in b.json()["message"]
    assert server.names == ["crm_a"]
    assert server.warnings == ["crm_b: the environment variable OA_TEST_RECEIPTS_B is not set; its requests "
                               "are answered 503 until the endpoint is restarted with it"]
    assert SECRET_A not in b.text + a.text
    with pytest.raises(ConfigError, match="crm_a: the environment variable OA_TEST_RECEIPTS_A is not set"):
        ReceiptServer(dests, tmp_path, environ={})  # nothing left to serve: it does not start


# -- `oa deliver receive` as processes: restarts and two endpoints sharing OA_HOME ----------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_endpoint(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    # started with SIGINT ignored, as a background job is: `oa deliver receive` still stops on it
    proc = subprocess.Popen([OA, "deliver", "receive", "--port", str(port)], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the endpoint did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/receipts/crm_coupon_webhook"
        except OSError:
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the endpoint did not stop on Ctrl-C:\n{proc.communicate()[0]}") from None


def _post(url: str, query: str, headers: dict) -> requests.Response:
    receipt = _receipt("r1", webhook_id="crm_coupon_webhook")
    return requests.post(f"{url}?{query}", json=[receipt], headers=headers, timeout=5)


def test_a_replayed_nonce_is_refused_after_a_restart_and_by_another_process(tmp_path):
    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG"))},
           "OA_HOME": str(home), "OA_CRM_WEBHOOK_SECRET": SECRET_A}
    signed = _signed(SECRET_A)
    first, url = _start_endpoint(env)
    try:
        assert _post(url, *signed).status_code == 200
    finally:
        _stop(first)
    restarted, url = _start_endpoint(env)
    # this test's process serves the same OA_HOME beside it: a second endpoint process
    beside = ReceiptServer(load_destinations(), home, environ={"OA_CRM_WEBHOOK_SECRET": SECRET_A}).start()
    try:
        replay = _post(url, *signed)
        assert replay.status_code == 401 and "already used (replay)" in replay.json()["message"]
        fresh = _signed(SECRET_A)
        assert _post(url, *fresh).status_code == 200
        elsewhere = _post(beside.url + "/crm_coupon_webhook", *fresh)
        assert elsewhere.status_code == 401 and "already used (replay)" in elsewhere.json()["message"]
    finally:
        beside.stop()
        _stop(restarted)
    lines = (home / "receipts" / "crm_coupon_webhook.jsonl").read_text().splitlines()
    assert [json.loads(x)["verdict"] for x in lines] == ["accepted", "accepted"]  # replays: not spooled


def test_the_endpoint_refuses_to_start_with_no_secret_to_check(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG"))},
           "OA_HOME": str(tmp_path / "home")}
    done = subprocess.run([OA, "deliver", "receive", "--port", str(_free_port())], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert_refused(done, "destination crm_coupon_webhook: the environment variable OA_CRM_WEBHOOK_SECRET "
                         "is not set")
    assert not (tmp_path / "home" / "receipts").exists()  # no spool, no nonce file


# -- no secret, hostile signed peers, unauthenticated floods -------------------------------------
def test_receipts_need_a_secret_in_the_file_and_in_the_environment(dests, tmp_path):
    folder = tmp_path / "destinations"
    unsigned_file = DESTINATION.format(name="crm_a", env="X").replace("  secret_env: X\n", "")
    (folder / "crm_a.yml").write_text(unsigned_file)
    with pytest.raises(UserError, match=r"crm_a\.yml:4: webhook: receipts: needs secret_env"):
        load_destinations(folder, load_project(tmp_path / "audiences"))
    # a destination built in code past that check is still not served unsigned, nor is an empty secret
    a = dests.destinations["crm_a"]
    dests.destinations["crm_a"] = a.model_copy(update={"webhook": a.webhook.model_copy(
        update={"secret_env": None})})
    for destinations, environ in ((dests, BOTH), (None, {**BOTH, "OA_TEST_RECEIPTS_A": ""})):
        if destinations is None:
            dests.destinations["crm_a"] = a
        server = ReceiptServer(dests, tmp_path, environ=environ).start()
        try:
            query, _ = _signed("")
            unsigned = requests.post(f"{server.url}/crm_a?{query}", json=[_receipt("u", status="410")],
                                     headers={SIGNATURE_HEADER: ""}, timeout=5)
        finally:
            server.stop()
        assert unsigned.status_code == 503 and server.names == ["crm_b"]
    assert not (tmp_path / "receipts" / "crm_a.jsonl").exists()
    # the shared check refuses an empty secret whatever it is handed
    ts, nonce = str(int(time.time())), new_nonce()
    assert not signature_matches("", ts, nonce, "") and not signature_matches("", ts, nonce, None)
    with pytest.raises(SignatureError, match="no secret to check the signature with"):
        SignatureVerifier("").verify(ts, nonce, "")


def test_a_signed_peer_cannot_crash_the_endpoint_or_block_ingest(dests, tmp_path):
    home = tmp_path / "home"
    server = ReceiptServer(dests, home, environ=BOTH).start()

    def post(body: bytes) -> requests.Response:
        query, headers = _signed(SECRET_A)
        return requests.post(f"{server.url}/crm_a?{query}", data=body, timeout=5,
                             headers={**headers, "Content-Type": "application/json"})

    try:
        deep = post(b"[" * 100_000 + b"]" * 100_000)
        batch = post(json.dumps([_receipt("overflow", send_time="9" * 400),
                                 {**_receipt("future"), "send_time": "99999999999999999"},
                                 {**_receipt("super"), "send_time": "²"},
                                 {**_receipt("ancient"), "send_time": "12"},
                                 {**_receipt("long"), "msg_id": "m" * 5000},
                                 _receipt("fine")]).encode())
    finally:
        server.stop()
    assert deep.status_code == 400 and deep.json()["message"].startswith("body is nested too deeply")
    assert batch.status_code == 200 and batch.json()["queued"] == 1
    reasons = {r["msg_id"]: r["reason"] for r in batch.json()["rejected"]}
    assert set(reasons) == {"overflow", "future", "super", "ancient", ""}
    assert reasons["overflow"].startswith("callback_params.send_time '99999")
    assert reasons["future"].startswith("send_time '99999999999999999' is not a millisecond unix time")
    assert reasons["super"].startswith("send_time '²' is not")
    assert reasons[""].startswith("msg_id 'mmm")
    assert all(len(r) < 200 for r in reasons.values())  # a peer's values are quoted cut short

    # lines a careless endpoint (or a hand) left in the spool become rejected rows, never errors
    spool = home / "receipts" / "crm_a.jsonl"
    old = {"msg_id": "old", "status_code": "200", "status": "delivered", "cst_id": "",
           "send_time": "99999999999999999", "idempotency_key": "k" * 32,
           "received_at": "2026-06-01T00:00:00", "verdict": "accepted", "reason": ""}
    with spool.open("a", encoding="utf-8") as f:
        f.write(json.dumps(old) + "\n")
        f.write(json.dumps({**old, "msg_id": "sup", "send_time": "²"}) + "\n")
        f.write("{not json\n[1, 2]\n")
        f.write(json.dumps({**old, "msg_id": "when", "send_time": "", "received_at": "yesterday"}) + "\n")
    target = make_target("duckdb", tmp_path, None, "")
    wh = target.warehouse
    assert ingest(wh, dests) == {"accepted": 0, "rejected": 12, "suppressed": 0}
    rows = dict(wh.query("select msg_id, reason from delivery.delivery_receipts "
                         "where msg_id in ('old', 'sup', 'when', 'fine')"))
    assert rows["old"].startswith("send_time '99999999999999999' is not a millisecond unix time")
    assert rows["sup"].startswith("send_time '²' is not")
    assert rows["when"] == "received_at 'yesterday' is not an ISO time"
    assert rows["fine"] == "no such message in the delivery log"
    assert wh.query("select count(*) from delivery.delivery_receipts where reason = "
                    "'spool line is not a JSON object'") == [(2,)]
    # the offset moved past them: nothing twice, and a new line is read from where it stopped
    assert ingest(wh, dests) == {"accepted": 0, "rejected": 0, "suppressed": 0}
    with spool.open("a", encoding="utf-8") as f:
        f.write(json.dumps({**old, "msg_id": "next", "send_time": str(int(time.time() * 1000))}) + "\n")
        f.write('{"msg_id": "half')  # being written: waits for its newline
    assert ingest(wh, dests) == {"accepted": 0, "rejected": 1, "suppressed": 0}
    # an offsets row from before byte offsets (lines only): those lines are skipped, once
    with wh.connect() as conn:
        wh.execute(conn, "update delivery.receipt_spool_offsets set bytes_read = null, lines_read = 12")
    assert ingest(wh, dests) == {"accepted": 0, "rejected": 1, "suppressed": 0}
    assert wh.query("select msg_id, count(*) from delivery.delivery_receipts where msg_id = 'next' "
                    "group by msg_id") == [("next", 2)]


def test_unauthenticated_requests_are_counted_not_spooled(dests, tmp_path, caplog):
    server = ReceiptServer(dests, tmp_path, environ=BOTH).start()
    url, forged = server.url + "/crm_a", {SIGNATURE_HEADER: "0" * 64}
    answers = []
    try:
        with caplog.at_level(logging.WARNING, logger="oa.receipts"):
            for _ in range(30):
                answers.append(requests.post(f"{url}?{_signed(SECRET_A)[0]}", json=[_receipt("x" * 60_000)],
                                             headers=forged, timeout=5))
            # a timestamp of 400 digits, or no ASCII digits, is refused like any other
            for ts in ("1" + "0" * 400, "x" * 5000, "١٢٣"):
                answers.append(requests.post(f"{url}?timestamp={ts}&nonce=n", json=[], headers=forged,
                                             timeout=5))
            answers.append(requests.post(f"{url}?timestamp={int(time.time())}&nonce={'n' * 5000}", json=[],
                                         headers=forged, timeout=5))
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [401] * 34
    assert all(len(a.json()["message"]) < 150 for a in answers)  # nothing echoed whole
    assert answers[-1].json()["message"] == "the nonce is longer than 128 characters"
    assert not (tmp_path / "receipts" / "crm_a.jsonl").exists()
    assert server.refused == {"crm_a": 34}
    warnings = [r.getMessage() for r in caplog.records if r.name == "oa.receipts"]
    assert warnings == ["crm_a: 1 unauthenticated request(s) refused since the endpoint started "
                        "(last: signature: signature does not match)"]  # then at most once a minute


def test_a_nonce_with_white_space_cannot_replay_a_signed_request():
    """The contract's signature ignores white space; a nonce that differs only by it must not
    pass as a fresh one (the replay check compares nonces as strings)."""
    from connectors.webhook import SignatureError, SignatureVerifier, sign, signature_matches

    ts, nonce = str(int(time.time())), "a1" * 16
    signature = sign("k3y", ts, nonce)
    assert signature_matches("k3y", ts, nonce, signature)
    for twin in (nonce + " ", nonce[:10] + "\u3000" + nonce[10:], nonce + "\n"):
        assert sign("k3y", ts, twin) == signature  # the contract cannot tell them apart...
        assert not signature_matches("k3y", ts, twin, signature)  # ...so we refuse the form
    verifier = SignatureVerifier("k3y")
    verifier.verify(ts, nonce, signature)
    with pytest.raises(SignatureError):
        verifier.verify(ts, nonce + " ", signature)
