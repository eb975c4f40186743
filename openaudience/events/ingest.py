"""The event log into the warehouse: `oa events ingest`.

Reads the log from where the last ingest stopped (events.event_log_offsets), a chunk of lines at
a time, and writes each chunk's behaviour events into events.events and its identity messages
into events.identity_links, in the same transaction as the new offset: a crash between chunks
repeats nothing and skips nothing. An id the table already holds is not written again, so an
ingest that ran on a copy of the log, or a log line written twice, still gives one row.

The collector keeps writing while this runs (it needs no warehouse): ingest reads complete
lines only, and the next run takes what arrived meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from openaudience.core.schema import operational as op
from openaudience.core.warehouse import Warehouse
from openaudience.events.log import log_dir, read

CHUNK_LINES = 20_000
LOG_NAME = "events"   # the one log of an OA_HOME (the offsets table has room for more)
log = logging.getLogger("oa.events")
_STAGE = "oa_event_stage"
_LOCK = "oa-events-ingest"


class Entries(Protocol):
    entered: dict[str, int]
    limited: dict[str, int]
    unknown: dict[str, int]


OnEvents = Callable[[Warehouse, Any, list[str]], Entries]


@dataclass
class Ingested:
    events: int = 0
    entered: dict = field(default_factory=dict)   # event journey -> entries
    limited: dict = field(default_factory=dict)   # event journey -> events its trigger limit kept out
    unknown: dict = field(default_factory=dict)   # event journey -> its events of no known person
    identities: int = 0
    already: int = 0         # lines whose record the warehouse held before
    unreadable: int = 0      # lines that are no record (reported, skipped)
    segment: str = ""
    offset: int = 0


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)


def ingest(wh: Warehouse, home: Path, progress=None, chunk_lines: int = CHUNK_LINES,
           on_events: OnEvents | None = None, max_chunks: int | None = None) -> Ingested:
    """Store what the log holds past the last offset. `on_events(wh, conn, event_ids)` runs in
    the transaction that stores each chunk, with the ids of its new events: what enters people
    into event-triggered journeys (openaudience/journeys/live.py), so that entries and events
    commit together. `max_chunks`: stop after that many (a follower's pass: while events keep
    arriving, the log never ends, and the journeys must move between chunks)."""
    # beside a Spark warehouse the events are operational state, kept in the state store; what
    # enters people into event journeys there sends them on to Spark (journeys/live.py)
    wh = wh.state
    folder = log_dir(home)
    out = Ingested()
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
        _lock(wh, conn)
        try:
            _ingest(wh, conn, home, folder, out, progress, chunk_lines, on_events, max_chunks)
        finally:
            _unlock(wh, conn)
    return out


def _lock(wh: Warehouse, conn) -> None:
    """One ingest at a time: on PostgreSQL an advisory lock (waiting with a message); DuckDB's
    writer lock serialises whole sessions already."""
    if wh.engine != "postgres":
        return
    got = wh.execute(conn, "select pg_try_advisory_lock(hashtext(%s))", [_LOCK])[0][0]
    conn.commit()
    if not got:
        from openaudience.core import locks

        locks.say("waiting for another `oa events ingest` to finish")
        wh.execute(conn, "select pg_advisory_lock(hashtext(%s))", [_LOCK])
        conn.commit()


def _unlock(wh: Warehouse, conn) -> None:
    if wh.engine == "postgres":
        wh.execute(conn, "select pg_advisory_unlock(hashtext(%s))", [_LOCK])
        conn.commit()


def _ingest(wh: Warehouse, conn, home: Path, folder: Path, out: Ingested, progress, chunk_lines: int,
            on_events: OnEvents | None, max_chunks: int | None) -> None:
    _definitions(wh, conn, home)
    rows = wh.execute(conn, f"select segment, byte_offset from {op.EVENT_LOG_OFFSETS.relation} "
                            "where log = %s", [LOG_NAME])
    segment, offset = (rows[0][0], int(rows[0][1])) if rows else ("", 0)
    chunks = 0
    while max_chunks is None or chunks < max_chunks:
        chunks += 1
        lines, next_segment, next_offset = read(folder, segment, offset, chunk_lines)
        if not lines and (next_segment, next_offset) == (segment, offset):
            break
        events, identities = _records(lines, out)
        with wh.transaction(conn):
            new_ids = _insert(wh, conn, op.EVENTS, events, ("event_id",))
            out.events += len(new_ids)
            out.already += len(events["event_id"]) - len(new_ids)
            out.identities += len(_insert(wh, conn, op.EVENT_IDENTITIES, identities,
                                          ("message_id", "id_type", "id_value")))
            if on_events is not None and new_ids:
                entered = on_events(wh, conn, new_ids)
                for mine, theirs in ((out.entered, entered.entered), (out.limited, entered.limited),
                                     (out.unknown, entered.unknown)):
                    for name, n in theirs.items():
                        mine[name] = mine.get(name, 0) + n
            wh.execute(conn, f"delete from {op.EVENT_LOG_OFFSETS.relation} where log = %s", [LOG_NAME])
            wh.execute(conn, f"insert into {op.EVENT_LOG_OFFSETS.relation} (log, segment, byte_offset, "
                             "updated_at) values (%s, %s, %s, %s)",
                       [LOG_NAME, next_segment, next_offset,
                        dt.datetime.now(dt.UTC).replace(tzinfo=None)])
        segment, offset = next_segment, next_offset
        if progress:
            progress(out)
    out.segment, out.offset = segment, offset


def _records(lines: list[bytes], out: Ingested) -> tuple[dict[str, list], dict[str, list]]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    ev = {c: [] for c in op.EVENTS.column_names}
    ids = {c: [] for c in op.EVENT_IDENTITIES.column_names}
    for line in lines:
        try:
            r = json.loads(line)
            received = _ts(int(r["received"]))
            if r["kind"] == "event":
                for c, v in (("event_id", r["id"]), ("channel", r["source"]), ("event_code", r["code"]),
                             ("customer_id", r["customer_id"]), ("customer_id_type", r["customer_id_type"]),
                             ("occurred_at", _ts(int(r["at"]))),
                             ("attributes", json.dumps(r.get("attrs") or {}, ensure_ascii=False,
                                                       sort_keys=True)),
                             ("organization_id", r.get("org")), ("received_at", received),
                             ("ingested_at", now)):
                    ev[c].append(v)
            elif r["kind"] == "identity":
                for id_type, id_value in r["ids"]:
                    for c, v in (("message_id", r["id"]), ("channel", r["source"]),
                                 ("customer_id_type", r["customer_id_type"]),
                                 ("customer_id", r["customer_id"]),
                                 ("id_type", id_type), ("id_value", id_value), ("received_at", received),
                                 ("ingested_at", now)):
                        ids[c].append(v)
            else:
                raise ValueError(f"unknown kind {r['kind']!r}")
        except (ValueError, KeyError, TypeError) as exc:
            out.unreadable += 1
            log.warning("an event log line is no record (%s); skipped: %r", exc, line[:200])
    return ev, ids


def _arrow(table: op.Table, cols: dict[str, list]) -> pa.Table:
    return pa.Table.from_pydict(cols, schema=table.arrow_schema())


def _insert(wh: Warehouse, conn, table: op.Table, cols: dict[str, list], key: tuple[str, ...]) -> list:
    """The rows whose key the table does not hold yet; the first key column of the new rows.
    (Names come from the table declarations, never from a record.)"""
    first = next(iter(cols.values()))
    if not first:
        return []
    data = _arrow(table, cols)
    names = ", ".join(table.column_names)
    wh.execute(conn, f"drop table if exists {_STAGE}")
    wh.execute(conn, f"create temporary table {_STAGE} as select {names} from {table.relation} where 1 = 0")
    wh.insert_arrow(conn, _STAGE, data)
    match = " and ".join(f"t.{k} = s.{k}" for k in key)
    picked = ", ".join("s." + c for c in table.column_names)
    new = wh.execute(conn, f"insert into {table.relation} ({names}) select {picked} from {_STAGE} s "
                           f"where not exists (select 1 from {table.relation} t where {match}) "
                           f"returning {key[0]}")
    wh.execute(conn, f"drop table {_STAGE}")
    return [r[0] for r in new]


def _definitions(wh: Warehouse, conn, home: Path) -> int:
    """events.event_definitions as the collector last served them (OA_HOME/events/registry.json),
    or as events/*.yml define them when no collector ran here: what dbt types the events by."""
    from openaudience.events.source import load_events, read_applied

    applied = read_applied(home) or load_events().as_json()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    channels = applied.get("channels", {})
    rows = {c: [] for c in op.EVENT_DEFINITIONS.column_names}
    for code, event in sorted(applied.get("events", {}).items()):
        channel = channels.get(event["app_key"], {})
        for c, v in (("event_code", code), ("name", event["name"]), ("channel", event["app_key"]),
                     ("channel_name", channel.get("name", event["app_key"])),
                     ("app_type", channel.get("app_type", "third_party")),
                     ("attributes", json.dumps(event.get("attributes", {}), sort_keys=True)),
                     ("updated_at", now)):
            rows[c].append(v)
    with wh.transaction(conn):
        wh.execute(conn, f"delete from {op.EVENT_DEFINITIONS.relation}")
        if rows["event_code"]:
            wh.insert_arrow(conn, op.EVENT_DEFINITIONS.relation, _arrow(op.EVENT_DEFINITIONS, rows))
    return len(rows["event_code"])
