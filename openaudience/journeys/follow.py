"""Following the event log: what makes event-triggered journeys react within seconds.

`follow_once` is one pass: ingest what the collector logged since the last pass (the people
whose events trigger a running event journey enter it in the same transaction), then tick the
event journeys (their sends go out, their behaviour branches settle). `oa events follow` runs
passes until stopped, a fraction of a second apart while events flow; the Dagster job
`events_ingest` runs one pass per sensor tick, so either keeps event journeys moving.

Between passes the warehouse is free: a DuckDB build or delivery takes its turn (the pass
waits for it with a message, then goes on), and PostgreSQL runs both side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse
from openaudience.events.ingest import Ingested, ingest
from openaudience.journeys import engine, live
from openaudience.journeys.sql import EVENT_TRIGGERED, JOURNEYS, REAL_ONLY

CHUNK = 5_000
"""Events a pass takes at most: at 500 a second a pass keeps up, and a backlog is worked off in
passes of this size, each followed by the sends it made due."""


@dataclass
class Pass:
    ingested: Ingested
    ticks: list = field(default_factory=list)     # engine.JourneyTick of the event journeys
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(int(a.get("sent", 0)) for t in self.ticks for a in t.actions if a.get("kind") == "send")

    @property
    def busy(self) -> bool:
        """Whether this pass did anything (the next one follows at once)."""
        return bool(self.ingested.events or self.ingested.identities or self.sent
                    or any(t.moved for t in self.ticks))


def event_journeys(wh: Warehouse) -> list[str]:
    """The running event-triggered journeys."""
    wh = wh.state
    with wh.session() as conn:
        if not wh.table_exists("journeys", "journeys", conn):
            return []
        rows = wh.execute(conn, f"select journey from {JOURNEYS} where status in ('running', 'pending') "
                                f"and {EVENT_TRIGGERED} and {REAL_ONLY} order by journey")
    return [r[0] for r in rows]


def refuse_beside_spark(ctx: engine.Context) -> None:
    """Following moves event-triggered journeys, which do not run beside a Spark warehouse."""
    if ctx.spark is not None:
        raise UserError(f"there is nothing to follow: {engine.EVENTS_ON_SPARK}; `oa events ingest` (or "
                        "Dagster's events_ingest) stores the events for the next build")


def follow_once(ctx: engine.Context, home: Path) -> Pass:
    refuse_beside_spark(ctx)
    started = time.monotonic()
    done = ingest(ctx.wh, home, on_events=live.enter, max_chunks=1, chunk_lines=CHUNK)
    names = event_journeys(ctx.wh)
    ticks = engine.tick(ctx, names) if names else []
    return Pass(done, ticks, time.monotonic() - started)


def follow(ctx: engine.Context, home: Path, interval: float = 0.5, stop: threading.Event | None = None,
           seconds: float | None = None, on_pass: Callable[[Pass], None] | None = None) -> int:
    """Passes until `stop` is set or `seconds` have gone by; a busy pass is followed at once, an
    idle one after `interval` seconds. Returns the number of passes."""
    stop = stop or threading.Event()
    deadline = None if seconds is None else time.monotonic() + seconds
    passes = 0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        result = follow_once(ctx, home)
        passes += 1
        if on_pass:
            on_pass(result)
        if not result.busy:
            stop.wait(interval)
    return passes
