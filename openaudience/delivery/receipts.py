"""Receipts: what integrators post back about each message, as the webhook contract defines.

`ReceiptServer` (run by `oa deliver receive`) takes POST /receipts/<destination>?timestamp=..&nonce=..
signed like the requests we send (X-QA-Hmac-Signature with the destination's secret), whose body
is a JSON array of ``{msg_id, status, cst_id, send_time, callback_params}``.

Everything that can be judged from the request line and headers is judged before the body is
read: the body must declare a Content-Length of at most OA_RECEIPT_MAX_BYTES (default 1 MiB;
411 or 413 otherwise), and the signature must be there (401), match, carry a timestamp within
5 minutes and a nonce not seen before (401). Nonces are kept in a SQLite file beside the spool
until their timestamp is too old to pass, so a replay is refused after a restart of the
endpoint and by every endpoint process sharing OA_HOME. A destination whose secret is not in
the environment (or is empty) answers 503 (a warning names the variable); the others are served.
A request that is not authenticated (a 401, an unsubscribe token that is not genuine) writes
nothing to disk: it is counted, and a warning at most once a minute per destination says how
many were refused, so that nobody can grow the spool without the secret.

The answer gives a verdict per receipt, in order: `rejected` with the reason (an unknown status
code, another destination's webhook_id, a receipt later than the destination's window after
the send, a send_time that is no millisecond time between 2000 and now, a malformed receipt),
or `queued` for a receipt that passed every check that can run here; `oa deliver receipts`
checks at ingest that the delivery log holds its message. A body that is no JSON array (or is
nested too deeply to parse) is answered 400. Verdicts of signed requests, good and bad, go to an
append-only spool (OA_HOME/receipts/<destination>.jsonl), never straight to the warehouse, so
the endpoint keeps answering while a DuckDB file is busy.

`ingest` moves new spool lines into delivery.delivery_receipts (deduplicated on msg_id, status
and send time), rejects receipts for messages the log does not hold, and turns unsubscribes and
complaints into suppression-list entries. It reads each spool from the byte offset it stopped
at, in bounded chunks, and a line it cannot use (not JSON, a field out of range) becomes a
rejected row, so one bad line never blocks the lines after it. A Dagster sensor runs it every
minute.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow as pa

from connectors.http_server import JsonServer
from connectors.webhook import ECHO_CHARS, SIGNATURE_HEADER, signature_matches, unix_seconds
from openaudience.core.errors import ConfigError
from openaudience.core.warehouse import Warehouse
from openaudience.delivery import store
from openaudience.delivery.source import Destinations
from openaudience.delivery.spec import Destination, Receipts

RECEIPTS = store.RECEIPTS
SPOOL_OFFSETS = store.SPOOL_OFFSETS
# added to receipt_spool_offsets (its lines_read came first): where the next ingest starts reading
SUPPRESSING = {"unsubscribed": ("unsubscribe", None), "complained": ("complaint", "*")}
MAX_BYTES_ENV = "OA_RECEIPT_MAX_BYTES"
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_SKEW_S = 300.0  # a signed request's timestamp may be this far from now
QUEUED_NOTE = ("passed the endpoint's checks; `oa deliver receipts` records it if the delivery log "
               "holds its message")
FIELD_CHARS = 256  # the longest msg_id, status, cst_id or msg_key a receipt may carry
NONCE_CHARS = 128
EARLIEST_MS = 946_684_800_000  # 2000-01-01: no receipt is about a message sent before
_MILLIS = re.compile(r"[0-9]{1,16}")  # ASCII only: int() also takes "١٢", "1_2" and 4,000 digits
INGEST_LINES = 10_000  # spool lines per ingest transaction
REFUSED_LOG_S = 60.0  # at most one warning a minute per destination about refused requests
log = logging.getLogger("oa.receipts")


def spool_dir(home: Path) -> Path:
    return home / "receipts"


def max_body_bytes(environ) -> int:
    """OA_RECEIPT_MAX_BYTES: the largest receipt body the endpoint reads."""
    raw = environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{MAX_BYTES_ENV}={raw!r}: give the largest receipt body in bytes, a whole "
                          f"number such as {DEFAULT_MAX_BYTES}")
    return int(raw)


def _echo(value) -> str:
    """A peer's value as quoted back in a reason: repr, at most ECHO_CHARS of it."""
    scalar = value is None or isinstance(value, str | int | float)
    text = repr(value) if scalar else f"<{type(value).__name__}>"
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def _millis(value, now: float) -> int | None:
    """A millisecond unix time between 2000-01-01 and now (plus the allowed clock skew), or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value) if isinstance(value, str) or 0 <= value < 10**16 else ""
    if not _MILLIS.fullmatch(text):
        return None
    ms = int(text)
    return ms if EARLIEST_MS <= ms <= (now + MAX_SKEW_S) * 1000 else None


class NonceCache:
    """Nonces already used, per destination, in a SQLite file (OA_HOME/receipts/nonces.sqlite3).

    A file rather than memory so that a replay is refused after a restart and across endpoint
    processes: each claim is one insert in an immediate transaction, which SQLite serialises
    between processes. A nonce is kept until its timestamp falls out of the tolerance, after
    which the timestamp check refuses the request anyway.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute("pragma journal_mode = wal")
            conn.execute("create table if not exists nonces (destination text not null, nonce text not "
                         "null, expires_at real not null, primary key (destination, nonce))")
            conn.execute("create index if not exists nonces_expiry on nonces (expires_at)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def claim(self, destination: str, nonce: str, expires_at: float, now: float) -> bool:
        """Record the nonce; False when it was used before and has not expired."""
        conn = self._connect()
        try:
            conn.execute("begin immediate")
            conn.execute("delete from nonces where expires_at < ?", [now])
            fresh = conn.execute("insert or ignore into nonces values (?, ?, ?)",
                                 [destination, nonce, expires_at]).rowcount == 1
            conn.execute("commit")
            return fresh
        finally:
            conn.close()


class ReceiptServer:
    """The receipt endpoint for every destination with `receipts:` configured, and the
    unsubscribe links of e-mail destinations."""

    def __init__(self, dests: Destinations, home: Path, port: int = 0, host: str = "127.0.0.1",
                 environ=None) -> None:
        environ = os.environ if environ is None else environ
        self.dests = dests
        self.secrets: dict[str, str] = {}
        self.unsubscribe_secrets: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}  # destination -> the variable it lacks
        # unauthenticated requests refused, per destination: counted here, never spooled
        self.refused: dict[str, int] = {}
        self._refused_lock = threading.Lock()
        self._refused_logged: dict[str, tuple[float, int]] = {}  # destination -> (when, count then)
        for name, d in sorted(dests.destinations.items()):
            self._configure(name, d, environ)
        # for whoever starts the endpoint to show (`oa deliver receive` prints them); never a value
        self.warnings = [f"{name}: the environment variable {var} is not set; its requests are answered "
                         "503 until the endpoint is restarted with it"
                         for name, var in self.unavailable.items()]
        if self.unavailable and not self.names:
            raise ConfigError("the receipt endpoint has no destination to serve: "
                              + "; ".join(f"destination {n}: the environment variable {v} is not set"
                                          for n, v in self.unavailable.items())
                              + "; it needs them to check signatures and tokens")
        max_body = max_body_bytes(environ)
        self.spool = spool_dir(home)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.nonces = NonceCache(self.spool / "nonces.sqlite3")
        self.http = JsonServer(self.handle, host, port, name="oa-receipts",
                               max_body=max_body, admit=self.admit)

    def _configure(self, name: str, d: Destination, environ) -> None:
        """Serve the destination with its secret, or list it as unavailable: an empty secret
        would accept unsigned receipts and forged unsubscribes."""
        if d.webhook is not None and d.webhook.receipts is not None:
            var = d.webhook.secret_env  # required with receipts: (spec.WebhookBlock)
            if var and environ.get(var):
                self.secrets[name] = environ[var]
            else:
                self.unavailable[name] = var or "named by webhook.secret_env"
        if d.email is not None:
            var = d.email.unsubscribe_secret_env
            if environ.get(var):
                self.unsubscribe_secrets[name] = environ[var]
            else:
                self.unavailable[name] = var

    @property
    def url(self) -> str:
        return self.http.base_url + "/receipts"

    def start(self) -> ReceiptServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    @property
    def names(self) -> list[str]:
        return sorted(set(self.secrets) | set(self.unsubscribe_secrets))

    def _write(self, destination: str, verdicts: list[dict]) -> None:
        """Append verdicts to the destination's spool in one write under an exclusive lock, so
        lines of endpoint processes sharing OA_HOME never interleave."""
        data = "".join(json.dumps(v, ensure_ascii=False, sort_keys=True) + "\n" for v in verdicts).encode()
        fd = os.open(self.spool / f"{destination}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def _refuse(self, name: str, reason: str, now: float) -> None:
        """Count an unauthenticated request instead of spooling it; warn at most once a minute
        per destination with the number refused since the last warning."""
        with self._refused_lock:
            count = self.refused[name] = self.refused.get(name, 0) + 1
            when, before = self._refused_logged.get(name, (float("-inf"), 0))
            if now - when < REFUSED_LOG_S:
                return
            self._refused_logged[name] = (now, count)
        log.warning("%s: %d unauthenticated request(s) refused since %s (last: %s)", name, count - before,
                    "the endpoint started" if before == 0 else "the last warning", reason)

    def unsubscribe(self, name: str, token: str, received_at: str, now: float) -> tuple[int, str]:
        """An unsubscribe link (GET) or RFC 8058 one-click (POST) from an e-mail."""
        from connectors.smtp import check_token

        key = check_token(self.unsubscribe_secrets[name], name, token)
        if key is None:
            self._refuse(name, "unsubscribe: the token is not genuine", now)
            return 400, "<p>This unsubscribe link is not valid.</p>"
        self._write(name, [{"msg_id": f"unsubscribe:{key}", "status_code": "unsubscribe",
                            "status": "unsubscribed", "cst_id": "", "send_time": "",
                            "idempotency_key": key, "received_at": received_at,
                            "verdict": "accepted", "reason": ""}])
        return 200, "<p>You are unsubscribed and will get no more of these e-mails.</p>"

    def admit(self, method: str, path: str, headers, now: float | None = None) -> tuple | None:
        """The answer to a request that can be refused from its line and headers, before its
        body is read: an unknown path, a destination without its secret, a bad signature."""
        now = time.time() if now is None else now
        url = urlparse(path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("receipts", "unsubscribe"):
            return 404, {"code": "NOT_FOUND", "message": "POST /receipts/<destination with receipts:>"}
        kind, name = parts
        if name in self.unavailable:
            return 503, {"code": "UNAVAILABLE",
                         "message": f"{name} is not served: the endpoint was started without the "
                                    f"environment variable {self.unavailable[name]}"}
        if kind == "unsubscribe":
            return None if name in self.unsubscribe_secrets else \
                (404, {"code": "NOT_FOUND", "message": f"no e-mail destination {name}"})
        if method != "POST":
            return 405, {"code": "METHOD_NOT_ALLOWED", "message": "POST receipts here"}
        if name not in self.secrets:
            return 404, {"code": "NOT_FOUND", "message": "POST /receipts/<destination with receipts:>"}
        problem = self._signature_problem(name, parse_qs(url.query), headers, now)
        if problem is None:
            return None
        self._refuse(name, f"signature: {problem}", now)
        return 401, {"code": "UNAUTHORIZED", "message": problem}

    def _signature_problem(self, name: str, query: dict, headers, now: float) -> str | None:
        """Why the request's signature does not hold, or None: the contract's HMAC over the
        secret, timestamp and nonce, a timestamp within MAX_SKEW_S, and a nonce used once."""
        secret = self.secrets[name]
        signature = headers.get(SIGNATURE_HEADER)
        if signature is None:
            return f"missing {SIGNATURE_HEADER} header: sign the request with the destination's secret"
        timestamp, nonce = query.get("timestamp", [None])[0], query.get("nonce", [None])[0]
        if not timestamp or not nonce:
            return "missing timestamp or nonce in the query string"
        ts = unix_seconds(timestamp)
        if ts is None:
            return f"timestamp {_echo(timestamp)} is not unix seconds"
        if abs(now - ts) > MAX_SKEW_S:
            return f"timestamp {ts} is {abs(now - ts):.0f} s from now (at most {MAX_SKEW_S:.0f} s)"
        if len(nonce) > NONCE_CHARS:
            return f"the nonce is longer than {NONCE_CHARS} characters"
        if not signature_matches(secret, timestamp, nonce, signature):
            return "signature does not match"
        if not self.nonces.claim(name, nonce, ts + MAX_SKEW_S, now):
            return f"nonce {nonce[:ECHO_CHARS]} was already used (replay)"
        return None

    def handle(self, method: str, path: str, headers, body: bytes,
               now: float | None = None) -> tuple[int, dict | str]:
        """A request `admit` let through: an unsubscribe, or a signed batch of receipts."""
        now = time.time() if now is None else now
        url = urlparse(path)
        kind, name = url.path.strip("/").split("/")
        if kind == "unsubscribe":
            return self.unsubscribe(name, parse_qs(url.query).get("token", [""])[0], _stamp(now), now)
        cfg = self.dests.destinations[name].webhook.receipts
        try:  # a signed peer's body still must not kill the handler (its nonce is used already)
            items = json.loads(body)
            if not isinstance(items, list):
                raise ValueError
            verdicts = [check_receipt(item, name, cfg, now) for item in items]
        except (ValueError, RecursionError, OverflowError) as exc:
            reason = ("body is nested too deeply" if isinstance(exc, RecursionError)
                      else "body is not a JSON array of receipts")
            self._write(name, [{"verdict": "rejected", "reason": reason, "received_at": _stamp(now)}])
            return 400, {"code": "BAD_REQUEST",
                         "message": f"{reason}: the body must be a JSON array of receipts"}
        self._write(name, verdicts)
        return 200, _answer(verdicts)


def _stamp(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None).isoformat()


# a receipt's fields as the spool and ingest name them, and as the contract does
FIELDS = (("msg_id", "msg_id"), ("status_code", "status"), ("cst_id", "cst_id"), ("send_time", "send_time"),
          ("idempotency_key", "callback_params.msg_key"))


def _field(value) -> str | None:
    """A receipt's text field as ingest stores it ("" when absent), or None when it is no string
    or whole number of at most FIELD_CHARS characters."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if len(text) <= FIELD_CHARS else None


def check_receipt(item, name: str, cfg: Receipts, now: float) -> dict:
    """One receipt as its spool line: `accepted` (for ingest to check against the delivery log)
    or `rejected` with the reason. These are the checks that need no warehouse; every field
    ingest reads is checked here, so what is queued can be recorded."""
    item = item if isinstance(item, dict) else {}
    callback = item.get("callback_params") if isinstance(item.get("callback_params"), dict) else {}
    raw = {key: (callback.get("msg_key") if key == "idempotency_key" else item.get(wire))
           for key, wire in FIELDS}
    v = {key: _field(value) or "" for key, value in raw.items()}
    v.update(received_at=_stamp(now), verdict="accepted", reason="")
    reason = _receipt_problem(v, raw, callback, name, cfg, now)
    if reason:
        v.update(verdict="rejected", reason=reason)
    else:
        v["status"] = cfg.statuses[v["status_code"]]
    return v


def _receipt_problem(v: dict, raw: dict, callback: dict, name: str, cfg: Receipts, now: float) -> str:
    for key, wire in FIELDS:
        if _field(raw[key]) is None:
            return (f"{wire} {_echo(raw[key])} is not a string or whole number of at most "
                    f"{FIELD_CHARS} characters")
    if not v["msg_id"] or not v["idempotency_key"]:
        return "missing msg_id or callback_params.msg_key"
    if callback.get("webhook_id") not in (name, None):
        return f"callback_params.webhook_id {_echo(callback.get('webhook_id'))} is not {name}"
    if v["status_code"] not in cfg.statuses:
        return (f"unknown status {_echo(v['status_code'])}; this destination takes "
                f"{', '.join(sorted(cfg.statuses))}")
    sent: dict[str, int] = {}
    times = (("send_time", raw["send_time"]), ("callback_params.send_time", callback.get("send_time")))
    for wire, value in times:
        if value is None or value == "":
            continue
        ms = _millis(value, now)
        if ms is None:
            return (f"{wire} {_echo(value)} is not a millisecond unix time between 2000 and now "
                    f"(at most {MAX_SKEW_S:.0f} s ahead)")
        sent[wire] = ms
    if not sent:
        return "send_time is not a millisecond timestamp"
    if "send_time" in sent:
        v["send_time"] = str(sent["send_time"])
    sent_ms = sent.get("callback_params.send_time", sent.get("send_time"))
    if now - sent_ms / 1000 > cfg.window_hours * 3600:
        return (f"late: {(now - sent_ms / 1000) / 3600:.1f} h after the send, "
                f"the window is {cfg.window_hours:g} h")
    return ""


def _answer(verdicts: list[dict]) -> dict:
    """The reply to a batch: a verdict per receipt, in the order they came."""
    results = [{"msg_id": v["msg_id"], "verdict": "rejected", "reason": v["reason"]}
               if v["verdict"] == "rejected" else
               {"msg_id": v["msg_id"], "verdict": "queued", "reason": QUEUED_NOTE} for v in verdicts]
    rejected = [{"msg_id": r["msg_id"], "reason": r["reason"]} for r in results if r["verdict"] == "rejected"]
    return {"code": "PARTIAL" if rejected else "OK", "queued": len(results) - len(rejected),
            "rejected": rejected, "results": results}


def ingest(wh: Warehouse, dests: Destinations) -> dict[str, int]:
    """Move new spool lines into delivery_receipts; counts of accepted and rejected receipts.
    Each spool is read from the byte offset the last ingest stopped at, INGEST_LINES lines per
    transaction (the rows and the new offset together); a line still being written waits."""
    wh = wh.state  # receipts are operational state
    folder = spool_dir(wh.settings.home)
    totals = {"accepted": 0, "rejected": 0, "suppressed": 0}
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
        for path in files:
            with path.open("rb") as f:
                known, offset, lines = _spool_offset(wh, conn, path, f)
                while True:
                    f.seek(offset)
                    chunk = []
                    for _ in range(INGEST_LINES):
                        line = f.readline()
                        if not line.endswith(b"\n"):  # the end, or a line being appended
                            break
                        chunk.append(line)
                    if not chunk:
                        break
                    offset += sum(len(line) for line in chunk)
                    lines += len(chunk)
                    rows = [_spool_row(line) for line in chunk]
                    with wh.transaction(conn):
                        _insert(wh, conn, path.stem, rows, dests, totals)
                        if known:
                            wh.execute(conn, f"update {SPOOL_OFFSETS} set lines_read = %s, bytes_read = %s "
                                             "where spool_file = %s", [lines, offset, path.name])
                        else:
                            wh.execute(conn, f"insert into {SPOOL_OFFSETS} (spool_file, lines_read, "
                                             "bytes_read) values (%s, %s, %s)", [path.name, lines, offset])
                    known = True
                    if len(chunk) < INGEST_LINES:
                        break
    return totals


def _spool_offset(wh: Warehouse, conn, path: Path, f) -> tuple[bool, int, int]:
    """(whether the spool has an offsets row, the byte offset to read from, lines read so far).
    A row from before byte offsets has only its line count: those lines are skipped once. A
    spool shorter than the offset was replaced, and is read from its start."""
    done = wh.execute(conn, f"select lines_read, bytes_read from {SPOOL_OFFSETS} where spool_file = %s",
                      [path.name])
    if not done:
        return False, 0, 0
    lines, offset = int(done[0][0]), done[0][1]
    if offset is None:
        offset = 0
        for _ in range(lines):
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            offset += len(line)
    if offset > os.fstat(f.fileno()).st_size:
        return True, 0, 0
    return True, int(offset), lines


def _spool_row(line: bytes) -> dict:
    """A spool line as a receipt row; a line that is no JSON object becomes a rejected row."""
    try:
        row = json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        row = None
    if not isinstance(row, dict):
        return {"verdict": "rejected", "reason": "spool line is not a JSON object"}
    return row


def _text(value) -> str | None:
    """A spool field as the receipts table stores it."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else str(value) if isinstance(value, int | float) else \
        f"<{type(value).__name__}>"
    return text[:FIELD_CHARS]


def _recordable(r: dict, now: float) -> dict:
    """A spool row as delivery_receipts holds it: text fields, parsed times. A field ingest
    cannot use (a send_time out of range, a received_at that is no time) turns an accepted row
    into a rejected one that says why, never an exception."""
    out = {k: _text(r.get(k)) for k in ("msg_id", "idempotency_key", "cst_id", "status_code", "status",
                                        "reason")}
    out["verdict"] = "accepted" if r.get("verdict") == "accepted" else "rejected"
    problems = []
    out["received_at"] = None
    if isinstance(r.get("received_at"), str):
        try:
            at = dt.datetime.fromisoformat(r["received_at"])
            out["received_at"] = at.astimezone(dt.UTC).replace(tzinfo=None) if at.tzinfo else at
        except ValueError:
            pass
    if out["received_at"] is None:
        out["received_at"] = dt.datetime.fromisoformat(_stamp(now))
        problems.append(f"received_at {_echo(r.get('received_at'))} is not an ISO time")
    out["send_time"], raw = None, r.get("send_time")
    if raw is not None and raw != "":
        ms = _millis(raw, now)
        if ms is None:
            problems.append(f"send_time {_echo(raw)} is not a millisecond unix time between 2000 and now")
        else:
            out["send_time"] = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)
    if problems and out["verdict"] == "accepted":
        out.update(verdict="rejected", reason="; ".join(problems))
    return out


def _insert(wh: Warehouse, conn, destination: str, rows: list[dict], dests: Destinations,
            totals: dict[str, int]) -> None:
    now = time.time()
    rows = [_recordable(r, now) for r in rows]
    keys = [r["idempotency_key"] or "" for r in rows]
    known: dict[str, str] = {}
    for i in range(0, len(keys), 500):
        chunk = [k for k in keys[i:i + 500] if k]
        if chunk:
            marks = ", ".join(["%s"] * len(chunk))
            sql = (f"select distinct idempotency_key, id_value from {store.LOG} where destination = %s "
                   f"and idempotency_key in ({marks})")
            known.update(wh.execute(conn, sql, [destination, *chunk]))
    seen = set(wh.execute(conn, f"select msg_id, status_code, send_time from {RECEIPTS} "
                                "where destination = %s and verdict = 'accepted'", [destination]))
    columns = ("msg_id", "idempotency_key", "cst_id", "status_code", "status", "send_time", "received_at",
               "verdict", "reason")
    out: dict[str, list] = {k: [] for k in columns}
    suppress: list[tuple[str, str]] = []
    for r in rows:
        if r["verdict"] == "accepted" and r["idempotency_key"] not in known:
            r.update(verdict="rejected", reason="no such message in the delivery log")
        if r["verdict"] == "accepted":
            marker = (r["msg_id"], r["status_code"], r["send_time"])
            if marker in seen:
                continue  # the same receipt again
            seen.add(marker)
            r["cst_id"] = r["cst_id"] or known[r["idempotency_key"]]
            mapped = SUPPRESSING.get(r["status"] or "")
            if mapped:  # the id the log sent under that key, not what the peer says (or hashed)
                suppress.append((known[r["idempotency_key"]], mapped[0]))
        else:
            r["status"] = None
        totals[r["verdict"]] = totals.get(r["verdict"], 0) + 1
        for k in columns:
            out[k].append(r[k])
    n = len(out["verdict"])
    if n:
        table = pa.table({"destination": pa.array([destination] * n, pa.string()),
                          **{k: pa.array(v, pa.timestamp("us") if k in ("send_time", "received_at")
                                         else pa.string()) for k, v in out.items()}})
        wh.insert_arrow(conn, RECEIPTS, table)
    if suppress and destination in dests.destinations:
        from openaudience.delivery.suppression import insert_entries

        d = dests.destinations[destination]
        id_type = dests.id_type(destination)
        for reason in {r for _, r in suppress}:
            channel = "*" if reason == "complaint" else d.channel
            values = [cst for cst, r in suppress if r == reason and cst]
            totals["suppressed"] += insert_entries(wh, conn, id_type, values, reason, channel,
                                                   f"receipt:{destination}")
