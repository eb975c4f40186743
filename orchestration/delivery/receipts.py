"""Receipts: what integrators post back about each message, as the webhook contract defines.

`ReceiptServer` (run by `oa deliver receive`) takes POST /receipts/<destination>?timestamp=..&nonce=..
signed like the requests we send (X-QA-Hmac-Signature with the destination's secret), whose body
is a JSON array of ``{msg_id, status, cst_id, send_time, callback_params}``. It rejects a bad or
replayed signature (401), and per receipt an unknown status code, a receipt for another
destination, or one later than the destination's receipt window after the send. Verdicts, good
and bad, go to an append-only spool (OA_HOME/receipts/<destination>.jsonl), never straight to
the warehouse, so the endpoint keeps answering while a DuckDB file is busy.

`ingest` moves new spool lines into delivery.delivery_receipts (deduplicated on msg_id, status
and send time), rejects receipts for messages the log does not hold, and turns unsubscribes and
complaints into suppression-list entries. A Dagster sensor runs it every minute.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyarrow as pa

from connectors.http_server import JsonServer
from connectors.webhook import SIGNATURE_HEADER, SignatureError, SignatureVerifier
from orchestration.delivery import store
from orchestration.delivery.source import Destinations
from orchestration.warehouse import Warehouse

RECEIPTS = store.RECEIPTS
SPOOL_OFFSETS = store.SPOOL_OFFSETS
SUPPRESSING = {"unsubscribed": ("unsubscribe", None), "complained": ("complaint", "*")}


def spool_dir(home: Path) -> Path:
    return home / "receipts"


class ReceiptServer:
    """The receipt endpoint for every destination with `receipts:` configured."""

    def __init__(self, dests: Destinations, home: Path, port: int = 0, host: str = "127.0.0.1",
                 environ=None) -> None:
        environ = os.environ if environ is None else environ
        self.dests = dests
        self.spool = spool_dir(home)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.verifiers: dict[str, SignatureVerifier] = {}
        self.unsubscribe_secrets: dict[str, str] = {}
        for name, d in dests.destinations.items():
            if d.webhook is not None and d.webhook.receipts is not None:
                secret = ""
                if d.webhook.secret_env:
                    secret = environ.get(d.webhook.secret_env, "")
                    if not secret:  # an empty secret would accept unsigned receipts
                        from orchestration.errors import ConfigError

                        raise ConfigError(f"destination {name}: the environment variable "
                                          f"{d.webhook.secret_env} is not set; the receipt endpoint "
                                          "needs it to check signatures")
                self.verifiers[name] = SignatureVerifier(secret)
            if d.email is not None and environ.get(d.email.unsubscribe_secret_env):
                self.unsubscribe_secrets[name] = environ[d.email.unsubscribe_secret_env]
        self.http = JsonServer(self.handle, host, port, name="oa-receipts")

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
        return sorted(set(self.verifiers) | set(self.unsubscribe_secrets))

    def _write(self, destination: str, verdicts: list[dict]) -> None:
        with self.lock, (self.spool / f"{destination}.jsonl").open("a", encoding="utf-8") as f:
            for v in verdicts:
                f.write(json.dumps(v, ensure_ascii=False, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def unsubscribe(self, name: str, token: str, received_at: str) -> tuple[int, str]:
        """An unsubscribe link (GET) or RFC 8058 one-click (POST) from an e-mail."""
        from connectors.smtp import check_token

        key = check_token(self.unsubscribe_secrets[name], name, token)
        if key is None:
            self._write(name, [{"verdict": "rejected", "reason": "unsubscribe: the token is not genuine",
                                "received_at": received_at}])
            return 400, "<p>This unsubscribe link is not valid.</p>"
        self._write(name, [{"msg_id": f"unsubscribe:{key}", "status_code": "unsubscribe",
                            "status": "unsubscribed", "cst_id": "", "send_time": "",
                            "idempotency_key": key, "received_at": received_at,
                            "verdict": "accepted", "reason": ""}])
        return 200, "<p>You are unsubscribed and will get no more of these e-mails.</p>"

    def handle(self, method: str, path: str, headers, body: bytes,
               now: float | None = None) -> tuple[int, dict | str]:
        now = time.time() if now is None else now
        url = urlparse(path)
        parts = url.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "unsubscribe" and parts[1] in self.unsubscribe_secrets:
            stamp = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None).isoformat()
            return self.unsubscribe(parts[1], parse_qs(url.query).get("token", [""])[0], stamp)
        if method != "POST":
            return 405, {"code": "METHOD_NOT_ALLOWED", "message": "POST receipts here"}
        if len(parts) != 2 or parts[0] != "receipts" or parts[1] not in self.verifiers:
            return 404, {"code": "NOT_FOUND", "message": "POST /receipts/<destination with receipts:>"}
        name = parts[1]
        d = self.dests.destinations[name]
        receipts_cfg = d.webhook.receipts
        query = parse_qs(url.query)
        received_at = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None).isoformat()
        try:
            with self.lock:
                self.verifiers[name].verify(query.get("timestamp", [None])[0],
                                            query.get("nonce", [None])[0], headers.get(SIGNATURE_HEADER),
                                            now=now)
        except SignatureError as exc:
            self._write(name, [{"verdict": "rejected", "reason": f"signature: {exc}",
                                "received_at": received_at}])
            return 401, {"code": "UNAUTHORIZED", "message": str(exc)}
        try:
            items = json.loads(body)
            if not isinstance(items, list):
                raise ValueError
        except ValueError:
            self._write(name, [{"verdict": "rejected", "reason": "body is not a JSON array",
                                "received_at": received_at}])
            return 400, {"code": "BAD_REQUEST", "message": "the body must be a JSON array of receipts"}
        verdicts, rejected = [], []
        for item in items:
            item = item if isinstance(item, dict) else {}
            callback = item.get("callback_params") if isinstance(item.get("callback_params"), dict) else {}
            v = {"msg_id": str(item.get("msg_id") or ""), "status_code": str(item.get("status") or ""),
                 "cst_id": str(item.get("cst_id") or ""), "send_time": str(item.get("send_time") or ""),
                 "idempotency_key": str(callback.get("msg_key") or ""), "received_at": received_at,
                 "verdict": "accepted", "reason": ""}
            reason = ""
            if not v["msg_id"] or not v["idempotency_key"]:
                reason = "missing msg_id or callback_params.msg_key"
            elif callback.get("webhook_id") not in (name, None):
                reason = f"callback_params.webhook_id {callback.get('webhook_id')!r} is not {name}"
            elif v["status_code"] not in receipts_cfg.statuses:
                reason = (f"unknown status {v['status_code']!r}; this destination takes "
                          f"{', '.join(sorted(receipts_cfg.statuses))}")
            else:
                try:
                    sent_ms = int(callback.get("send_time") or v["send_time"])
                except (TypeError, ValueError):
                    reason = "send_time is not a millisecond timestamp"
                else:
                    if now - sent_ms / 1000 > receipts_cfg.window_hours * 3600:
                        reason = (f"late: {(now - sent_ms / 1000) / 3600:.1f} h after the send, "
                                  f"the window is {receipts_cfg.window_hours:g} h")
            if reason:
                v.update(verdict="rejected", reason=reason)
                rejected.append({"msg_id": v["msg_id"], "reason": reason})
            else:
                v["status"] = receipts_cfg.statuses[v["status_code"]]
            verdicts.append(v)
        self._write(name, verdicts)
        return 200, {"code": "OK", "accepted": len(items) - len(rejected), "rejected": rejected}


def ingest(wh: Warehouse, dests: Destinations) -> dict[str, int]:
    """Move new spool lines into delivery_receipts; counts of accepted and rejected receipts."""
    folder = spool_dir(wh.settings.home)
    totals = {"accepted": 0, "rejected": 0, "suppressed": 0}
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    with wh.connect() as conn:
        store.ensure_tables(wh, conn)
        for path in files:
            name = path.stem
            done = wh.execute(conn, f"select lines_read from {SPOOL_OFFSETS} where spool_file = %s",
                              [path.name])
            start = int(done[0][0]) if done else 0
            with path.open(encoding="utf-8") as f:
                lines = f.readlines()
            complete = [ln for ln in lines[start:] if ln.endswith("\n")]
            if not complete:
                continue
            rows = [json.loads(ln) for ln in complete]
            _insert(wh, conn, name, rows, dests, totals)
            if done:
                wh.execute(conn, f"update {SPOOL_OFFSETS} set lines_read = %s where spool_file = %s",
                           [start + len(complete), path.name])
            else:
                wh.execute(conn, f"insert into {SPOOL_OFFSETS} values (%s, %s)", [path.name, len(complete)])
    return totals


def _insert(wh: Warehouse, conn, destination: str, rows: list[dict], dests: Destinations,
            totals: dict[str, int]) -> None:
    keys = [r.get("idempotency_key") or "" for r in rows]
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
    out: dict[str, list] = {k: [] for k in ("msg_id", "idempotency_key", "cst_id", "status_code", "status",
                                            "send_time", "received_at", "verdict", "reason")}
    suppress: list[tuple[str, str]] = []
    for r in rows:
        verdict, reason = r.get("verdict", "rejected"), r.get("reason") or ""
        if verdict == "accepted" and r.get("idempotency_key") not in known:
            verdict, reason = "rejected", "no such message in the delivery log"
        send_time = None
        if (r.get("send_time") or "").isdigit():
            send_time = dt.datetime.fromtimestamp(int(r["send_time"]) / 1000, dt.UTC).replace(tzinfo=None)
        if verdict == "accepted":
            marker = (r.get("msg_id"), r.get("status_code"), send_time)
            if marker in seen:
                continue  # the same receipt again
            seen.add(marker)
            r["cst_id"] = r.get("cst_id") or known[r["idempotency_key"]]
            mapped = SUPPRESSING.get(r.get("status") or "")
            if mapped:  # the id the log sent under that key, not what the peer says (or hashed)
                suppress.append((known[r["idempotency_key"]], mapped[0]))
        totals[verdict] = totals.get(verdict, 0) + 1
        for k, v in (("msg_id", r.get("msg_id")), ("idempotency_key", r.get("idempotency_key")),
                     ("cst_id", r.get("cst_id")), ("status_code", r.get("status_code")),
                     ("status", r.get("status") if verdict == "accepted" else None),
                     ("send_time", send_time),
                     ("received_at", dt.datetime.fromisoformat(r["received_at"])),
                     ("verdict", verdict), ("reason", reason or None)):
            out[k].append(v)
    n = len(out["verdict"])
    if n:
        table = pa.table({"destination": pa.array([destination] * n, pa.string()),
                          **{k: pa.array(v, pa.timestamp("us") if k in ("send_time", "received_at")
                                         else pa.string()) for k, v in out.items()}})
        wh.insert_arrow(conn, RECEIPTS, table)
    if suppress and destination in dests.destinations:
        from orchestration.delivery.suppression import insert_entries

        d = dests.destinations[destination]
        id_type = dests.id_type(destination)
        for reason in {r for _, r in suppress}:
            channel = "*" if reason == "complaint" else d.channel
            values = [cst for cst, r in suppress if r == reason and cst]
            totals["suppressed"] += insert_entries(wh, conn, id_type, values, reason, channel,
                                                   f"receipt:{destination}")
