"""The suppression list: ids that a channel, or every channel ("*"), may not message.

Entries come from unsubscribes, "T" replies, complaints, bounces, a blacklist or consent
withdrawn. A delivery checks them when it plans: an id on the list, or any id of the same person
(through dim_identities), stops the message and the log says which reason did.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from connectors.identifiers import IdError, normalise
from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse
from openaudience.delivery import store
from openaudience.delivery.channels import CHANNEL_NAMES
from openaudience.segments.spec import ID_TYPES


def read_ids(path: Path, id_type: str) -> list[str]:
    """One id per line (blank lines and # comments skipped); a bad line names its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    ids, problems = [], []
    for number, line in enumerate(lines, start=1):
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        try:
            ids.append(normalise(id_type, value))
        except IdError as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise UserError("nothing was added; fix these lines:\n" + "\n".join(problems[:5]) + more)
    return ids


def add(wh: Warehouse, id_type: str, ids: list[str], reason: str, channel: str = "*",
        source: str = "cli") -> int:
    """Add ids in one transaction; ids already listed for the same channel and reason are kept once."""
    if reason not in store.SUPPRESSION_REASONS:
        raise UserError(f"reason {reason!r} is not one of {', '.join(store.SUPPRESSION_REASONS)}")
    if channel != "*" and channel not in CHANNEL_NAMES:
        raise UserError(f"channel {channel!r} is not one of {', '.join(CHANNEL_NAMES)} or *")
    if id_type not in ID_TYPES:
        raise UserError(f"id type {id_type!r} is not one of {', '.join(ID_TYPES)}")
    try:
        values = sorted({normalise(id_type, v) for v in ids})
    except IdError as exc:
        raise UserError(f"nothing was added: {exc}") from None
    wh = wh.state  # the suppression list is operational state
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        return insert_entries(wh, conn, id_type, values, reason, channel, source)


def insert_entries(wh: Warehouse, conn, id_type: str, values: list[str], reason: str, channel: str,
                   source: str) -> int:
    """Insert the values not yet listed for this id type, channel and reason; how many were new."""
    known = {r[0] for r in wh.execute(conn, f"select id_value from {store.SUPPRESSION} where "
                                            "id_type = %s and channel = %s and reason = %s",
                                      [id_type, channel, reason])}
    fresh = sorted({v for v in values if v not in known})
    n = len(fresh)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    wh.insert_arrow(conn, store.SUPPRESSION, pa.table({
        "id_type": pa.array([id_type] * n, pa.string()), "id_value": pa.array(fresh, pa.string()),
        "channel": pa.array([channel] * n, pa.string()), "reason": pa.array([reason] * n, pa.string()),
        "source": pa.array([source] * n, pa.string()),
        "created_at": pa.array([now] * n, pa.timestamp("us"))}))
    return n


def summary(wh: Warehouse) -> list[tuple]:
    with wh.connect() as conn:
        if not wh.table_exists(store.SCHEMA, "suppression_list", conn):
            return []  # nothing suppressed yet
        return wh.execute(conn, f"select channel, id_type, reason, count(*), max(created_at) from "
                                f"{store.SUPPRESSION} group by channel, id_type, reason order by 1, 2, 3")
