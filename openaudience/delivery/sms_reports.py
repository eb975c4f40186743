"""SMS delivery reports: poll the platform's sendDetails for every sent batch still waiting
for reports, record each number's outcome as a receipt, and fail the numbers that have no
report 72 hours after the send (the manual's rule)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pyarrow as pa

from connectors.base import TransientError
from connectors.sms import REPORT_TIMEOUT, SmsConnector, SmsContractError
from openaudience.core.warehouse import Warehouse
from openaudience.delivery import store
from openaudience.delivery.channels import sms_settings
from openaudience.delivery.source import Destinations


def poll(wh: Warehouse, dests: Destinations, now: dt.datetime | None = None,
         environ=None, errors: list[str] | None = None) -> dict[str, int]:
    """Reports for every SMS destination; counts of delivered, failed and timed-out numbers.
    A batch whose reports cannot be read is counted in `errors` (its message appended to
    `errors`) and tried again at the next poll; the others are recorded."""
    wh = wh.state  # runs and receipts are operational state
    errors = [] if errors is None else errors
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    totals = {"delivered": 0, "failed": 0, "timed_out": 0, "waiting": 0, "errors": 0}
    for name, d in sorted(dests.destinations.items()):
        if d.channel != "sms":
            continue
        with wh.connect() as conn:
            wh.ensure_schema(conn)
            waiting = wh.execute(conn, f"""
                select l.run_id, l.idempotency_key, l.id_value, l.sent_at, l.external_id
                from {store.LOG} l
                where l.destination = %s and l.status = 'sent' and not exists (
                    select 1 from {store.RECEIPTS} r where r.destination = l.destination
                    and r.idempotency_key = l.idempotency_key and r.verdict = 'accepted'
                    and r.status in ('delivered', 'failed'))""", [name])
        if not waiting:
            continue
        batches: dict[str, list[tuple]] = defaultdict(list)
        for run_id, key, phone, sent_at, external in waiting:
            batches[(external or "").split("|")[0]].append((run_id, key, phone, sent_at))
        connector = SmsConnector(sms_settings(d, wh.settings.home, environ), run_id="")
        rows: list[dict] = []
        try:
            for oid, members in sorted(batches.items()):
                sent_at = min(m[3] for m in members)
                try:
                    reports = {str(r.get("phoneNum")): r for r in connector.details(oid, sent_at)
                               if isinstance(r, dict)}
                except (TransientError, SmsContractError) as exc:  # the other batches go on
                    errors.append(f"{name} {oid}: {exc}")
                    totals["errors"] += 1
                    continue
                for _run_id, key, phone, member_sent in members:
                    r = reports.get(phone)
                    state = str(r.get("sendStatus")) if r is not None else ""
                    if r is not None and (state == "2" or r.get("errCode") == "DELIVERED"):
                        status, code, reason = "delivered", str(r.get("errCode") or ""), None
                    elif state == "1":
                        status, code, reason = "failed", str(r.get("errCode") or ""), None
                    elif now - member_sent > REPORT_TIMEOUT:
                        status, code, reason = "failed", "TIMEOUT", "no report within 72 h of the send"
                        totals["timed_out"] += 1
                    else:
                        totals["waiting"] += 1
                        continue
                    totals[status] += 1
                    rows.append({"msg_id": f"{oid}:{phone}", "idempotency_key": key, "cst_id": phone,
                                 "status_code": code, "status": status, "send_time": member_sent,
                                 "reason": reason})
        finally:
            connector.close()
        if rows:
            n = len(rows)
            table = pa.table({
                "destination": pa.array([name] * n, pa.string()),
                **{k: pa.array([r[k] for r in rows], pa.string())
                   for k in ("msg_id", "idempotency_key", "cst_id", "status_code", "status")},
                "send_time": pa.array([r["send_time"] for r in rows], pa.timestamp("us")),
                "received_at": pa.array([now] * n, pa.timestamp("us")),
                "verdict": pa.array(["accepted"] * n, pa.string()),
                "reason": pa.array([r["reason"] for r in rows], pa.string())})
            with wh.connect() as conn:
                wh.insert_arrow(conn, store.RECEIPTS, table)
    return totals
