"""Following the event log: what makes event-triggered journeys react within seconds.

`follow_once` is one pass: ingest what the collector logged since the last pass (the people
whose events trigger a running event journey enter it in the same transaction), then tick the
event journeys (their sends go out, their behaviour branches settle). `oa events follow` runs
passes until stopped, a fraction of a second apart while events flow; the Dagster job
`events_ingest` runs one pass per sensor tick, so either keeps event journeys moving.

Between passes the warehouse is free: a DuckDB build or delivery takes its turn (the pass
waits for it with a message, then goes on), and PostgreSQL runs both side by side. Beside a
Spark warehouse, a pass with new events sends them to Spark, which names their people
(journeys/live.py); a follower in local mode lets go of its Spark session when idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


def follow_once(ctx: engine.Context, home: Path) -> Pass:
    started = time.monotonic()
    done = ingest(ctx.wh, home, on_events=live.enter, max_chunks=1, chunk_lines=CHUNK)
    names = event_journeys(ctx.wh)
    ticks = engine.tick(ctx, names) if names else []
    return Pass(done, ticks, time.monotonic() - started)


def follow(ctx: engine.Context, home: Path, interval: float = 0.5, stop: threading.Event | None = None,
           seconds: float | None = None, on_pass: Callable[[Pass], None] | None = None,
           release_spark: bool = False) -> int:
    """Passes until `stop` is set or `seconds` have gone by; a busy pass is followed at once, an
    idle one after `interval` seconds. `release_spark`: a local Spark session is stopped after an
    idle pass (the command line's follower, which runs for days). Returns the number of passes."""
    stop = stop or threading.Event()
    deadline = None if seconds is None else time.monotonic() + seconds
    passes = 0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        result = follow_once(ctx, home)
        passes += 1
        if on_pass:
            on_pass(result)
        if not result.busy:
            if release_spark:
                _release_local_spark(ctx)
            stop.wait(interval)
    return passes


def _release_local_spark(ctx: engine.Context) -> None:
    """Beside a Spark warehouse in local mode, this process's session holds the embedded catalog,
    which one process opens at a time: stopped while no events come, so that a build or a
    delivery in another process can run; the next event starts it again (a few seconds)."""
    if ctx.spark is None or ctx.spark.settings.spark_remote:
        return
    from openaudience.core import spark

    spark.stop()
