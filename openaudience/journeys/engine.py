"""The journey engine: cycles, people's positions, and moving them through the tree.

State lives in the warehouse (`core/schema/operational.py`, schema `journeys`):

- `journeys`: one row per started journey: status, the definition it runs (stored when it
  started: editing the file afterwards changes nothing that runs), when its next cycle starts;
- `journey_cycles`: one row per cycle (execution record) with the audience version it read;
- `journey_positions`: one row per person, node and cycle: arrived_at, due_at (when the node acts
  on them), state (waiting, sending, done, stopped) and the branch they left by;
- `journey_entries`: one row per person and journey, for the re-entry policy;
- `journey_actions`: one row per execution of an action node (a sub-task) with its counts;
- `journey_node_counts`: per finished cycle, people per node and branch (positions are purged
  OA_JOURNEY_DETAIL_DAYS after a cycle ends).

`tick` starts the cycles that are due and acts on every position whose due time has come, node
by node, each step one transaction: the people due at a node move to the node their branch leads
to (arriving now, or at a time branch's time) and leave the node `done`. Everything but a send is
one statement per branch, whatever the number of people.

A send is three steps. (1) One transaction plans a delivery run of the people due at the node
(through the delivery engine, so suppression, frequency caps and the id rules apply; the key is
md5(destination|journey|name|cycle|node|op|id)) and marks them `sending` with the run's id.
(2) The run is sent by the delivery engine, with its batches, retries, rate limit and recorded
acknowledgements. (3) One transaction moves the run's people on. A process killed anywhere
leaves either nothing (before 1) or `sending` people and a run the next tick resumes: the
delivery engine sends only what was not acknowledged, so nobody is sent twice from one node of
one cycle, and nobody is skipped.

Beside a Spark warehouse the journey tables live in the state store (`Warehouse.state`), where
every statement above runs as it does on DuckDB and PostgreSQL; what Spark holds is read there and
copied over a batch at a time: a cycle's entrants (the audience version's members), each due
person's branch at a behaviour or tag branch (computed on Spark against the behaviours and tags,
the people due uploaded as a temporary view), and a send's members with their ids and variables
(the delivery engine's plan). A generated audience's members are written to Spark's members table.
Event-triggered journeys keep their events in the state store; each ingest sends the new ones to
Spark, whose marts.fct_events_live names their people, and those come back to the store, where
entries, counts and behaviour windows are computed (journeys/live.py).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from openaudience.core.errors import UserError
from openaudience.core.schema import operational as op
from openaudience.core.warehouse import Warehouse, qident, qualified
from openaudience.journeys import clock
from openaudience.journeys.source import ROOT, JourneyErrors, Journeys, Node, Plan
from openaudience.journeys.spec import MAX_WAIT_DAYS, Schedule
from openaudience.journeys.sql import (
    CYCLES,
    ENTRIES,
    JOURNEYS,
    POS,
    REAL_ONLY,
    SIMULATION,
    bucket,
    bucket_sql,
    hash_name,
    lit,
)

ACTIONS = op.JOURNEY_ACTIONS.relation
NODE_COUNTS = op.JOURNEY_NODE_COUNTS.relation
ROUTE = "oa_journey_route"
ENTRANTS = "oa_journey_entrants"  # beside Spark: a cycle's entrants, copied into the state store
DUE = "oa_journey_due"            # beside Spark: the people a step reads, as a view of its session
FCT_BEHAVIORS = qualified("marts", "fct_behaviors")
LIVE_EVENTS = ("marts", "fct_events_live")
ACTIVE = ("running", "pending", "paused")
STATUSES = ("incomplete", "not_started", "pending", "running", "paused", "stopped", "completed", "failed")
GENERATED_KEPT = 5  # versions of a generated audience whose members are kept (as audiences' snapshots)
MAX_PASSES = 500
Progress = Callable[[str], None]


class JourneyBusy(UserError):
    """Another process advances this journey now."""


def _due(j: str, node: str, cycle: int, now: dt.datetime, table: str = "") -> str:
    t = f"{table}." if table else ""
    return (f"{t}journey = {lit(j)} and {t}node = {lit(node)} and {t}cycle = {lit(cycle)} "
            f"and {t}state = 'waiting' and {t}due_at <= {lit(now)}")


# -- the run-time context ------------------------------------------------------------------------
@dataclass
class Context:
    """What a journey operation runs with. Given a Spark warehouse, `wh` becomes its state store
    (where the journey tables are and every transaction runs) and `spark` the warehouse."""

    wh: Warehouse
    journeys: Journeys
    dests: object
    project: object
    environ: Mapping[str, str] | None = None
    progress: Progress | None = None
    simulate: bool = False
    would_send: dict = field(default_factory=dict)  # (cycle, node) -> counts, when simulating
    spark: Warehouse | None = None

    def __post_init__(self) -> None:
        if self.wh.state is not self.wh:
            self.spark, self.wh = self.wh, self.wh.state

    @property
    def tz(self) -> str:
        return self.wh.settings.timezone

    def say(self, text: str) -> None:
        if self.progress:
            self.progress(text)


@dataclass
class JourneyTick:
    journey: str
    status: str
    cycles_started: list[int] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)        # node -> people who left it
    actions: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""


def _now() -> dt.datetime:
    return clock.utc_now()


def _row(wh: Warehouse, conn, journey: str) -> dict | None:
    cols = ("journey", "status", "definition", "definition_hash", "file", "audience", "periodic",
            "started_at", "next_cycle_at", "end_at", "finished_at", "error", "cycles", "created_at")
    rows = wh.execute(conn, f"select {', '.join(cols)} from {JOURNEYS} where journey = %s", [journey])
    return dict(zip(cols, rows[0], strict=True)) if rows else None


def _running(wh: Warehouse, conn, besides: str | None = None) -> int:
    """Journeys running now (simulations aside), other than `besides`."""
    sql = f"select count(*) from {JOURNEYS} where status = 'running' and {REAL_ONLY}"
    if besides is None:
        return int(wh.execute(conn, sql)[0][0])
    return int(wh.execute(conn, sql + " and journey <> %s", [besides])[0][0])


def _set(wh: Warehouse, conn, journey: str, **values) -> None:
    values["updated_at"] = _now()
    sets = ", ".join(f"{k} = %s" for k in values)
    wh.execute(conn, f"update {JOURNEYS} set {sets} where journey = %s", [*values.values(), journey])


def _lock(wh: Warehouse, conn, journey: str) -> bool:
    """One process advances a journey at a time: an advisory lock on PostgreSQL (DuckDB's file
    admits one writer anyway). False when another process holds it."""
    if wh.engine != "postgres":
        return True
    got = wh.execute(conn, "select pg_try_advisory_lock(hashtext(%s))", ["oa-journey:" + journey])[0][0]
    conn.commit()
    return bool(got)


def _unlock(wh: Warehouse, conn, journey: str) -> None:
    if wh.engine == "postgres":
        wh.execute(conn, "select pg_advisory_unlock(hashtext(%s))", ["oa-journey:" + journey])
        conn.commit()


def _end_at_utc(plan: Plan, tz: str) -> dt.datetime | None:
    end = plan.journey.end_at
    return clock.to_utc(end, tz) if end else None


def _first_cycle_at(plan: Plan, now: dt.datetime, tz: str) -> dt.datetime | None:
    """When the first cycle starts; None for an event-triggered journey (people enter as their
    events arrive, each ingest's entrants a cycle of their own)."""
    if plan.journey.trigger.is_event:
        return None
    schedule = plan.journey.trigger.schedule
    if not isinstance(schedule, Schedule):
        return now
    return clock.next_cycle(schedule, now - dt.timedelta(seconds=1), tz, anchor_utc=now)


# -- operations ------------------------------------------------------------------------------------
def start(ctx: Context, name: str, now: dt.datetime | None = None) -> str:
    """Start a journey whose file is complete: `running`, or `pending` while
    OA_JOURNEY_MAX_RUNNING others run. Returns the status."""
    plan = ctx.journeys.get(name)  # JourneyErrors: the file is incomplete
    now = now or _now()
    wh = ctx.wh
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
            row = _row(wh, conn, name)
            if row is not None:
                raise UserError(_started_message(name, row))
            live_from = ctx.spark or wh
            if plan.journey.trigger.is_event and not live_from.table_exists(
                    "marts", LIVE_EVENTS[1], None if ctx.spark else conn):
                raise UserError(f"journey {name} reads the collected events from marts.{LIVE_EVENTS[1]}, "
                                "which the warehouse does not have yet; run `oa build` first")
            running = _running(wh, conn)
            status = "running" if running < wh.settings.journey_max_running else "pending"
            path = ctx.journeys.paths[name]
            wh.execute(conn, f"""
                insert into {JOURNEYS} (journey, status, definition, definition_hash, file, audience,
                    periodic, created_at, started_at, next_cycle_at, end_at, updated_at, cycles)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)""",
                       [name, status, plan.to_json(), plan.digest, path.name, plan.journey.trigger.label,
                        plan.journey.trigger.periodic, now, now if status == "running" else None,
                        _first_cycle_at(plan, now, ctx.tz) if status == "running" else None,
                        _end_at_utc(plan, ctx.tz), now])
    return status


def _started_message(name: str, row: dict) -> str:
    status = row["status"]
    if status in ACTIVE:
        return (f"journey {name} was started already ({status}); see `oa journey status {name}`; "
                f"a changed copy runs as a new journey: `oa journey copy {name} NEW_NAME`")
    if status == "failed":
        return f"journey {name} failed ({row['error']}); fix the cause and `oa journey resume {name}`"
    return (f"journey {name} has run ({status}); a journey runs once: to run it again, copy it as a new "
            f"journey: `oa journey copy {name} NEW_NAME`")


def pause(ctx: Context, name: str) -> str:
    """No new cycle starts and nothing is sent until resumed; people keep their places (their
    waits go on counting, and what fell due meanwhile runs on resume)."""
    return _transition(ctx, name, ("running", "pending"), "paused")


def resume(ctx: Context, name: str, now: dt.datetime | None = None) -> str:
    """A paused or failed journey runs again (or waits as pending for a free place); a periodic
    one's next cycle is its next scheduled time from now (missed cycles are not made up)."""
    now = now or _now()
    wh = ctx.wh
    with wh.session() as conn, wh.transaction(conn):
        wh.ensure_schema(conn)
        row = _require(wh, conn, name)
        if row["status"] not in ("paused", "failed"):
            raise UserError(f"journey {name} is {row['status']}; only a paused or failed journey resumes")
        plan = Plan.from_json(row["definition"])
        running = _running(wh, conn, besides=name)
        status = "running" if running < wh.settings.journey_max_running else "pending"
        updates: dict = {"status": status, "error": None}
        if status == "running" and row["started_at"] is None:
            updates["started_at"] = now
        if plan.journey.trigger.periodic and (row["cycles"] or row["next_cycle_at"] is not None):
            updates["next_cycle_at"] = clock.next_cycle(plan.journey.trigger.schedule, now, ctx.tz,
                                                        anchor_utc=row["started_at"] or now)
        elif row["next_cycle_at"] is None and not row["cycles"]:
            updates["next_cycle_at"] = _first_cycle_at(plan, now, ctx.tz)
        _set(wh, conn, name, **updates)
    return status


def stop(ctx: Context, name: str, now: dt.datetime | None = None) -> str:
    """Stop for good: people still inside leave (`stopped`), no cycle starts again. A send in
    flight is cancelled where it stands (what was acknowledged stays sent)."""
    now = now or _now()
    wh = ctx.wh
    with wh.session() as conn:
        if not _lock(wh, conn, name):
            raise JourneyBusy(f"journey {name} is being advanced by another process; stop it when that "
                              "is done (or wait and retry)")
        try:
            with wh.transaction(conn):
                wh.ensure_schema(conn)
                row = _require(wh, conn, name)
                if row["status"] in ("stopped", "completed"):
                    raise UserError(f"journey {name} is {row['status']} already")
                from openaudience.delivery import store

                runs = [r[0] for r in wh.execute(conn, f"select distinct run_id from {POS} "
                                                       "where journey = %s and state = 'sending'", [name])]
                for run_id in runs:
                    wh.execute(conn, f"update {store.RUNS} set status = 'cancelled', finished_at = %s, "
                                     "error = %s where run_id = %s and status in ('running', 'stopped')",
                               [now, f"journey {name} was stopped", run_id])
                    wh.execute(conn, f"update {ACTIONS} set status = 'cancelled', finished_at = %s "
                                     "where run_id = %s", [now, run_id])
                wh.execute(conn, f"update {POS} set state = 'stopped', left_at = %s where journey = %s "
                                 "and state in ('waiting', 'sending')", [now, name])
                wh.execute(conn, f"update {CYCLES} set status = 'stopped', finished_at = %s "
                                 "where journey = %s and status = 'running'", [now, name])
                _set(wh, conn, name, status="stopped", finished_at=now, next_cycle_at=None)
        finally:
            _unlock(wh, conn, name)
    return "stopped"


def _transition(ctx: Context, name: str, allowed: tuple[str, ...], to: str) -> str:
    wh = ctx.wh
    with wh.session() as conn, wh.transaction(conn):
        wh.ensure_schema(conn)
        row = _require(wh, conn, name)
        if row["status"] not in allowed:
            raise UserError(f"journey {name} is {row['status']}; {to} applies to a "
                            f"{' or '.join(allowed)} journey")
        _set(wh, conn, name, status=to)
    return to


def _require(wh: Warehouse, conn, name: str) -> dict:
    row = _row(wh, conn, name)
    if row is None:
        raise UserError(f"journey {name} has not been started; start it with `oa journey start {name}`")
    return row


# -- the tick ---------------------------------------------------------------------------------------
def tick(ctx: Context, names: list[str] | None = None, now: dt.datetime | None = None) -> list[JourneyTick]:
    """Start due cycles and advance every person whose time has come, for every running journey
    (or those named). A journey another process is advancing is skipped with a note."""
    now = now or _now()
    wh = ctx.wh
    out: list[JourneyTick] = []
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
            _promote_pending(wh, conn, now)
            only = "" if ctx.simulate else f" and {REAL_ONLY}"
            rows = wh.execute(conn, f"select journey from {JOURNEYS} where status = 'running'{only} "
                                    "order by journey")
        for (name,) in rows:
            if names and name not in names:
                continue
            report = JourneyTick(name, "running")
            if not _lock(wh, conn, name):
                report.notes.append("being advanced by another process; skipped this time")
                out.append(report)
                continue
            try:
                _tick_one(ctx, conn, name, now, report)
            except UserError as exc:
                report.status, report.error = "failed", str(exc)
                with wh.transaction(conn):
                    _set(wh, conn, name, status="failed", error=str(exc)[:2000])
            finally:
                _unlock(wh, conn, name)
            out.append(report)
        with wh.transaction(conn):
            _promote_pending(wh, conn, now)
    return out


def _promote_pending(wh: Warehouse, conn, now: dt.datetime) -> None:
    running = _running(wh, conn)
    free = wh.settings.journey_max_running - int(running)
    if free <= 0:
        return
    waiting = wh.execute(conn, "select journey, definition, started_at, cycles, next_cycle_at "
                               f"from {JOURNEYS} "
                               "where status = 'pending' "
                               "order by created_at, journey")
    for name, definition, started_at, cycles, next_at in waiting[:free]:
        updates = {"status": "running", "started_at": started_at or now}
        if not cycles and next_at is None:  # its first cycle, from when it gets its place
            updates["next_cycle_at"] = _first_cycle_at(Plan.from_json(definition), now, wh.settings.timezone)
        _set(wh, conn, name, **updates)


def _tick_one(ctx: Context, conn, name: str, now: dt.datetime, report: JourneyTick) -> None:
    wh = ctx.wh
    with wh.transaction(conn):
        row = _require(wh, conn, name)
    if row["status"] != "running":
        report.status = row["status"]
        return
    plan = Plan.from_json(row["definition"])
    current = ctx.journeys.plans.get(name)
    if name in ctx.journeys.problems or (current is not None and current.digest != row["definition_hash"]):
        report.notes.append(f"journeys/{row['file']} changed since the journey started; it runs as it was "
                            "started (a started journey cannot be edited): restore the file, or copy it "
                            f"as a new journey with `oa journey copy {name} NEW_NAME`")
    end_at = row["end_at"]
    next_at = row["next_cycle_at"]
    if plan.journey.trigger.is_event:
        from openaudience.journeys import live

        live.settle_behaviors(ctx, conn, plan, now)
    # people whose time has come move first, so that a person whose last step ends as a new cycle
    # starts is outside the journey by then (and may enter again, by the re-entry policy)
    _advance(ctx, conn, plan, now, report)
    if report.error:
        return
    if next_at is not None and next_at <= now and (end_at is None or next_at < end_at):
        cycle = _start_cycle(ctx, conn, plan, row, next_at, now)
        report.cycles_started.append(cycle)
        _advance(ctx, conn, plan, now, report)
    elif next_at is not None and end_at is not None and next_at >= end_at:
        with wh.transaction(conn):
            _set(wh, conn, name, next_cycle_at=None)
    if end_at is not None and end_at <= now and not plan.journey.trigger.periodic:
        with wh.transaction(conn):
            n = wh.execute(conn, f"select count(*) from {POS} where journey = %s and state = 'waiting'",
                           [name])[0][0]
            if n:
                wh.execute(conn, f"update {POS} set state = 'stopped', left_at = %s where journey = %s "
                                 "and state = 'waiting'", [now, name])
                report.notes.append(f"end_at passed: {n:,} people still waiting left the journey")
    _close_cycles(ctx, conn, plan, now, report)


def _start_cycle(ctx: Context, conn, plan: Plan, row: dict, scheduled: dt.datetime,
                 now: dt.datetime) -> int:
    """One transaction: the audience's latest version enters (minus people still inside and
    those the re-entry policy keeps out), with the holdout drawn; the next cycle is scheduled."""
    from openaudience.segments.engine import MEMBERS, VERSIONS

    wh, name, j = ctx.wh, plan.name, plan.journey
    audience = j.trigger.audience
    with wh.transaction(conn):
        got = wh.execute(conn, f"select max(version) from {VERSIONS} where audience = %s and kept",
                         [audience])
        version = got[0][0] if got else None
        if version is None:
            maker = ctx.project.external.get(audience) if hasattr(ctx.project, "external") else None
            how = (f"journey {maker} generates it when people reach its generate_audience step" if maker
                   else f"build it with `oa audience build {audience}`")
            raise UserError(f"audience {audience} has no built version; {how}")
        cycle = int(row["cycles"] or 0) + 1
        held = "false"
        if j.holdout is not None:
            draw = bucket_sql(wh.engine, lit(hash_name(name) + ":holdout:") + " || m.one_id")
            held = f"{draw} < {int(round(j.holdout.percent * 100))}"
        reentry = j.trigger.reentry
        if reentry == "once":
            keep_out = (f"exists (select 1 from {ENTRIES} e where e.journey = {lit(name)} "
                        "and e.one_id = m.one_id)")
        elif reentry == "every_cycle":
            keep_out = "false"
        else:
            since = now - dt.timedelta(days=reentry.after_days)
            keep_out = (f"exists (select 1 from {ENTRIES} e where e.journey = {lit(name)} "
                        "and e.one_id = m.one_id "
                        f"and e.last_entered_at > {lit(since)})")
        inside = (f"exists (select 1 from {POS} q where q.journey = {lit(name)} and q.one_id = m.one_id "
                  "and q.state in ('waiting', 'sending'))")
        members = (f"select one_id, min(id_value) as id_value from {MEMBERS} "
                   f"where audience = {lit(audience)} "
                   f"and version = {lit(int(version))} group by one_id")
        if ctx.spark is not None:  # the members are on Spark: copied here, a batch at a time
            with ctx.spark.connect() as sconn:
                wh.pull(conn, ENTRANTS, [("one_id", "text"), ("id_value", "text")], sconn, members)
            members = f"select one_id, id_value from {ENTRANTS}"
        total = wh.execute(conn, f"select count(*) from ({members}) as m")[0][0]
        wh.execute(conn, f"""
            insert into {POS} (journey, cycle, node, one_id, id_value, held_out, arrived_at, due_at, state)
            select {lit(name)}, {lit(cycle)}, {lit(ROOT)}, m.one_id, m.id_value, {held}, {lit(now)},
                {lit(now)}, 'waiting'
            from ({members}) as m where not ({keep_out}) and not ({inside})""")
        entered, held_out = wh.execute(conn, "select count(*), "
                                             "coalesce(sum(case when held_out then 1 else 0 end), 0) "
                                             f"from {POS} where journey = %s and cycle = %s and node = %s",
                                       [name, cycle, ROOT])[0]
        wh.execute(conn, f"""
            insert into {ENTRIES} (journey, one_id, first_cycle, last_cycle, last_entered_at, entries)
            select journey, one_id, cycle, cycle, arrived_at, 1 from {POS}
            where journey = {lit(name)} and cycle = {lit(cycle)} and node = {lit(ROOT)}
            on conflict (journey, one_id) do update set last_cycle = excluded.last_cycle,
                last_entered_at = excluded.last_entered_at, entries = {ENTRIES}.entries + 1""")
        wh.execute(conn, f"""
            insert into {CYCLES} (journey, cycle, status, audience_version, scheduled_at, started_at,
                entered, held_out, not_reentered)
            values (%s, %s, 'running', %s, %s, %s, %s, %s, %s)""",
                   [name, cycle, int(version), scheduled, now, int(entered), int(held_out),
                    int(total) - int(entered)])
        if ctx.spark is not None:
            wh.execute(conn, f"drop table {ENTRANTS}")
        next_at = None
        if j.trigger.periodic:
            next_at = clock.next_cycle(j.trigger.schedule, max(scheduled, now), ctx.tz,
                                       anchor_utc=row["started_at"] or scheduled)
        _set(wh, conn, name, cycles=cycle, next_cycle_at=next_at)
    ctx.say(f"{name}: cycle {cycle}: {int(entered):,} entered ({int(held_out):,} held out) from "
            f"{audience} v{version}")
    return cycle


def _advance(ctx: Context, conn, plan: Plan, now: dt.datetime, report: JourneyTick) -> None:
    """Act on every due position, node by node in tree order, until nothing is due."""
    wh, name = ctx.wh, plan.name
    order = {node_id: i for i, node_id in enumerate(plan.nodes)}
    for _ in range(MAX_PASSES):
        with wh.transaction(conn):
            sending = wh.execute(conn, f"select distinct cycle, node, run_id from {POS} where journey = %s "
                                       "and state = 'sending'", [name])
            due = wh.execute(conn, f"select cycle, node, count(*) from {POS} where journey = %s and "
                                   "state = 'waiting' and due_at <= %s group by cycle, node", [name, now])
        if not sending and not due:
            return
        for cycle, node_id, run_id in sorted(sending, key=lambda r: (order.get(r[1], 0), r[0])):
            _finish_send(ctx, conn, plan, plan.nodes[node_id], int(cycle), run_id, now, report)
            if report.error:
                return
        for cycle, node_id, _n in sorted(due, key=lambda r: (order.get(r[1], 0), r[0])):
            node = plan.nodes[node_id]
            _act(ctx, conn, plan, node, int(cycle), now, report)
            if report.error:
                return
        if any(r.get("status") == "stopped" for r in report.actions):
            return  # a send waits for its channel: the next tick resumes it
    raise UserError(f"journey {name}: people still due after {MAX_PASSES} passes; this is a bug")


def _act(ctx: Context, conn, plan: Plan, node: Node, cycle: int, now: dt.datetime,
         report: JourneyTick) -> None:
    kind = node.kind
    if kind == "send":
        _send(ctx, conn, plan, node, cycle, now, report)
        return
    with ctx.wh.transaction(conn):
        if kind == "generate_audience":
            _generate(ctx, conn, plan, node, cycle, now, report)
        if kind in ("start", "wait", "generate_audience", "end"):
            moved = _move(ctx, conn, plan, node, cycle, now, [(None, node.child("next"), now)])
        elif kind == "copy_branch":
            moved = _move(ctx, conn, plan, node, cycle, now,
                          [(None, child, now) for _, child in node.children], record="copied")
        elif kind == "time_branch":
            moved = _move(ctx, conn, plan, node, cycle, now, _time_targets(ctx, node, now), record="copied")
        else:
            _route(ctx, conn, plan, node, cycle, now)
            branches = _branch_names(node)
            moved = _move(ctx, conn, plan, node, cycle, now,
                          [(b, node.child(b), now) for b in branches], routed=True)
    report.moved[node.id] = report.moved.get(node.id, 0) + moved


def _branch_names(node: Node) -> list[str]:
    c = node.config
    if node.kind == "behavior_branch":
        return ["did", "did_not"]
    names = [b["name"] for b in c.get("branches", [])]
    if node.kind in ("tag_branch", "result_branch"):
        names.append("other")
    return names


def _time_targets(ctx: Context, node: Node, now: dt.datetime) -> list[tuple]:
    out = []
    for b in node.config["branches"]:
        if "at" in b:
            when = clock.next_time_of_day(now, b["at"], ctx.tz)
        else:
            from openaudience.journeys.spec import Duration

            when = now + Duration(**b["after"]).delta
        out.append((b["name"], node.child(b["name"]), when))
    return out


def _child_due(ctx: Context, plan: Plan, child_id: str, arrive: dt.datetime) -> dt.datetime:
    """When a node acts on people who arrive at `arrive`."""
    from openaudience.journeys.spec import Duration

    node = plan.nodes[child_id]
    c = node.config
    if node.kind == "wait":
        if "until" in c:
            until = clock.to_utc(dt.datetime.fromisoformat(c["until"]), ctx.tz)
            return max(arrive, until)
        return arrive + Duration(**{k: c[k] for k in ("minutes", "hours", "days", "weeks") if k in c}).delta
    if node.kind == "result_branch":
        return arrive + Duration(**c["after"]).delta
    if node.kind == "behavior_branch" and c.get("look", "ahead") == "ahead":
        return arrive + node.body.window_delta
    return arrive


def _move(ctx: Context, conn, plan: Plan, node: Node, cycle: int, now: dt.datetime,
          targets: list[tuple[str | None, str | None, dt.datetime]], routed: bool = False,
          record: str | None = None) -> int:
    """People due at `node` arrive at each target (branch, child, arrival time); then they leave
    `node` done, with the branch they took. `routed`: ROUTE holds each person's branch."""
    wh, name = ctx.wh, plan.name
    due = _due(name, node.id, cycle, now, "p")
    join = f" join {ROUTE} r on r.one_id = p.one_id" if routed else ""
    for branch, child, arrive in targets:
        if child is None:
            continue
        where = due + (f" and r.branch = {lit(branch)}" if routed else "")
        wh.execute(conn, f"""
            insert into {POS} (journey, cycle, node, one_id, id_value, held_out, arrived_at, due_at, state)
            select p.journey, p.cycle, {lit(child)}, p.one_id, p.id_value, p.held_out, {lit(arrive)},
                   {lit(_child_due(ctx, plan, child, arrive))}, 'waiting'
            from {POS} p{join} where {where}""")
    moved = wh.execute(conn, f"select count(*) from {POS} p where {due}")[0][0]
    if routed:
        wh.execute(conn, f"update {POS} as p set state = 'done', left_at = {lit(now)}, branch = r.branch "
                         f"from {ROUTE} r where r.one_id = p.one_id and {due}")
    else:
        wh.execute(conn, f"update {POS} as p set state = 'done', left_at = {lit(now)}, "
                         f"branch = {lit(record)} where {due}")
    return int(moved)


# -- routing: each person's branch in ROUTE (one_id, branch) -------------------------------------
def _route(ctx: Context, conn, plan: Plan, node: Node, cycle: int, now: dt.datetime) -> None:
    wh = ctx.wh
    due = _due(plan.name, node.id, cycle, now, "p")
    if node.kind == "random_branch":
        key = f"{lit(hash_name(plan.name) + ':' + node.id + ':')} || p.one_id"
        b = bucket_sql(wh.engine, key)
        cases, edge = [], 0
        for branch in node.config["branches"]:
            edge += int(round(branch["percent"] * 100))
            cases.append(f"when {b} < {edge} then {lit(branch['name'])}")
        last = lit(node.config["branches"][-1]["name"])
        select = f"select p.one_id, case {' '.join(cases)} else {last} end as branch " \
                 f"from {POS} p where {due}"
    elif node.kind == "behavior_branch" and plan.journey.trigger.is_event:
        from openaudience.journeys import live

        select = live.behavior_route(ctx, conn, plan, node, due)
    elif node.kind in ("behavior_branch", "tag_branch"):
        people = f"select p.one_id, p.arrived_at, p.due_at from {POS} p where {due}"
        if ctx.spark is not None:
            _route_on_spark(ctx, conn, node, people, now)
            return
        select = (_behavior_route(wh.engine, node, people) if node.kind == "behavior_branch"
                  else _tag_route(ctx, wh, conn, conn, node, people, now))
    elif node.kind == "result_branch":
        select = _result_route(ctx, plan, node, cycle, due)
    else:
        raise AssertionError(node.kind)
    wh.execute(conn, f"drop table if exists {ROUTE}")
    wh.execute(conn, f"create temporary table {ROUTE} as {select}")


def _route_on_spark(ctx: Context, conn, node: Node, people: str, now: dt.datetime) -> None:
    """A behaviour or tag branch beside a Spark warehouse: the people due (`people`, a query of
    the state store: one_id, arrived_at, due_at) go to Spark as a temporary view, their branch is
    computed there against the behaviours or the tags, and ROUTE (one_id, branch) is filled from
    it a batch at a time."""
    wh, spark = ctx.wh, ctx.spark
    due = pa.schema([("one_id", pa.string()), ("arrived_at", pa.timestamp("us")),
                     ("due_at", pa.timestamp("us"))])
    with spark.connect() as sconn, sconn.view(DUE, wh.arrow_batches(conn, people), due):
        uploaded = f"select * from {DUE}"
        select = (_behavior_route(spark.engine, node, uploaded) if node.kind == "behavior_branch"
                  else _tag_route(ctx, spark, sconn, conn, node, uploaded, now))
        wh.pull(conn, ROUTE, [("one_id", "text"), ("branch", "text")], sconn, select)


def _qualify(e: exp.Expression, table: str) -> exp.Expression:
    return e.transform(lambda n: exp.column(n.name, table=table, quoted=True) if isinstance(n, exp.Column)
                       else n)


def _behavior_route(engine: str, node: Node, people: str) -> str:
    """The route of the people due (`people`: one_id, arrived_at, due_at) at a behaviour branch:
    `did` when their behaviours in the branch's window meet its count and amount."""
    from openaudience.conditions.leaves import AT_LEAST_ONCE
    from openaudience.conditions.sql import and_
    from openaudience.journeys.spec import BehaviorSplit

    body: BehaviorSplit = node.body
    leaf = body.leaf()
    rows = _qualify(leaf.rows(), "b").sql(dialect=engine)
    if body.look == "ahead":
        window = "b.occurred_at >= p.arrived_at and b.occurred_at < p.due_at"
    else:
        start = f"p.arrived_at - interval '{int(body.window_delta.total_seconds())} seconds'"
        window = f"b.occurred_at >= {start} and b.occurred_at < p.arrived_at"
    checks = [(body.count or AT_LEAST_ONCE).sql(exp.column("n", table="t"))]
    if body.amount:
        checks.append(body.amount.sql(exp.column("amount", table="t")))
    test = and_(checks).sql(dialect=engine)
    totals = (f"select p.one_id, coalesce(sum(b.behavior_count), 0) as n, "
              f"coalesce(sum(b.behavior_amount), 0) as amount from ({people}) as p "
              f"left join {FCT_BEHAVIORS} b on b.one_id = p.one_id and {rows} and {window} "
              "group by p.one_id")
    return f"select t.one_id, case when {test} then 'did' else 'did_not' end as branch from ({totals}) as t"


def _tag_route(ctx: Context, wh: Warehouse, conn, state_conn, node: Node, people: str,
               now: dt.datetime) -> str:
    """The route of the people due (`people`) at a tag branch: the first branch whose condition
    holds, compiled as an audience for `wh` (the warehouse, whose connection is `conn`; the
    state store's, `state_conn`, names the audience versions a condition reads)."""
    from openaudience.conditions import to_sql
    from openaudience.journeys.spec import TagSplit
    from openaudience.segments.compiler import Relations, batch_query
    from openaudience.segments.engine import check_inputs, state_relations
    from openaudience.segments.spec import Audience

    body: TagSplit = node.body
    audiences = [Audience(name=f"b{i}", where=b.where) for i, b in enumerate(body.branches)]
    today = clock.to_local(now, ctx.tz).date()
    relations = state_relations(wh, state_conn, Relations())
    query, requirements = batch_query(audiences, ctx.project.catalog, today, relations)
    check_inputs(wh, conn, requirements, set())
    sql = to_sql(query, wh.engine, pretty=False)
    cases = " ".join(f"when q.m{i} then {lit(b.name)}" for i, b in enumerate(body.branches))
    return (f"select p.one_id, case {cases} else 'other' end as branch from ({people}) as p "
            f"left join ({sql}) as q on q.one_id = p.one_id")


def _result_route(ctx: Context, plan: Plan, node: Node, cycle: int, due: str) -> str:
    from openaudience.delivery import store

    send_id = plan.parent_of(node.id)
    send = plan.nodes[send_id]
    d = ctx.dests.destinations.get(send.config["destination"])
    feedback = d is not None and (d.channel == "sms" or (d.channel == "webhook" and d.webhook is not None
                                                        and d.webhook.receipts is not None))
    log_status = ("case when l.status = 'pending' then 'sent' else l.status end" if ctx.simulate
                  else "l.status")
    flags = (f"select p.one_id, max({log_status}) as log_status, "
             + ", ".join(f"max(case when r.status = '{s}' then 1 else 0 end) as {s}"
                         for s in ("delivered", "failed", "opened", "clicked"))
             + f" from {POS} p join {POS} s on s.journey = p.journey and s.cycle = p.cycle "
               f"and s.node = {lit(send_id)} and s.one_id = p.one_id "
               f"left join {store.LOG} l on l.run_id = s.run_id and l.one_id = p.one_id and l.op = 'add' "
               f"left join {store.RECEIPTS} r on r.idempotency_key = l.idempotency_key "
               f"and r.destination = l.destination and r.verdict = 'accepted' "
               f"where {due} group by p.one_id")
    heard = "(t.delivered + t.failed + t.opened + t.clicked) > 0"
    success = ("(t.delivered > 0 or t.opened > 0 or t.clicked > 0"
               + ("" if feedback else " or (t.log_status = 'sent' and t.failed = 0)") + ")")
    test = {
        "clicked": "t.clicked > 0",
        "opened": "(t.opened > 0 or t.clicked > 0)",
        "success": success,
        "failure": f"((t.log_status = 'failed' or t.failed > 0) and not {success})",
        "no_feedback": f"(t.log_status = 'sent' and not {heard})" if feedback else "false",
    }
    cases = " ".join(f"when {test[b['result']]} then {lit(b['name'])}" for b in node.config["branches"])
    return f"select t.one_id, case {cases} else 'other' end as branch from ({flags}) as t"


# -- actions ---------------------------------------------------------------------------------------
def _generate(ctx: Context, conn, plan: Plan, node: Node, cycle: int, now: dt.datetime,
              report: JourneyTick) -> None:
    """The people due here (held-out people excepted) join this cycle's version of the audience."""
    from openaudience.segments.engine import MEMBERS, VERSIONS

    wh, name = ctx.wh, plan.name
    audience = node.config["name"]
    due = _due(name, node.id, cycle, now, "p")
    if ctx.simulate:  # counted, not written
        people, held = wh.execute(conn, "select count(*), "
                                        "coalesce(sum(case when p.held_out then 1 else 0 end), 0) "
                                        f"from {POS} p where {due}")[0]
        wh.execute(conn, f"insert into {ACTIONS} (subtask_id, journey, cycle, node, kind, audience, status, "
                         "people, held_out, started_at, finished_at) values (%s, %s, %s, %s, "
                         "'generate_audience', %s, 'simulated', %s, %s, %s, %s)",
                   [uuid.uuid4().hex, name, cycle, node.id, audience, int(people), int(held), now, now])
        report.actions.append({"node": node.id, "kind": "generate_audience", "audience": audience,
                               "version": None, "people": int(people), "status": "simulated"})
        return
    existing = wh.execute(conn, f"select subtask_id, audience_version from {ACTIONS} where journey = %s and "
                                "cycle = %s and node = %s", [name, cycle, node.id])
    if existing:
        subtask, version = existing[0][0], int(existing[0][1])
    else:
        subtask = uuid.uuid4().hex
        version = int(wh.execute(conn, f"select coalesce(max(version), 0) from {VERSIONS} "
                                       "where audience = %s", [audience])[0][0]) + 1
        wh.execute(conn, f"insert into {VERSIONS} (audience, version, definition_hash, built_at, as_of, "
                         "id_type, size, added, removed, dropped, matched, trigger, kept, compiled_sql) "
                         "values (%s, %s, %s, %s, %s, 'one_id', 0, 0, 0, 0, 0, 'journey', true, '')",
                   [audience, version, f"journey:{name}:{node.id}", now, clock.to_local(now, ctx.tz).date()])
        wh.execute(conn, f"insert into {ACTIONS} (subtask_id, journey, cycle, node, kind, audience, "
                         "audience_version, status, started_at) values (%s, %s, %s, %s, 'generate_audience', "
                         "%s, %s, 'succeeded', %s)", [subtask, name, cycle, node.id, audience, version, now])
        # like a built audience's snapshots: the members of the last GENERATED_KEPT versions stay
        old = [r[0] for r in wh.execute(conn, f"select version from {VERSIONS} where audience = %s and kept "
                                              "order by version desc", [audience])][GENERATED_KEPT:]
        for v in old:
            if ctx.spark is None:
                wh.execute(conn, f"delete from {MEMBERS} where audience = %s and version = %s", [audience, v])
            else:
                with ctx.spark.connect() as sconn:
                    ctx.spark.delete_partition(sconn, MEMBERS, {"audience": audience, "version": v})
            wh.execute(conn, f"update {VERSIONS} set kept = false where audience = %s and version = %s",
                       [audience, v])
    joining = f"select distinct p.one_id from {POS} p where {due} and not p.held_out"
    if ctx.spark is None:
        wh.execute(conn, f"""
            insert into {MEMBERS} (audience, version, one_id, id_type, id_value)
            select {lit(audience)}, {lit(version)}, g.one_id, 'one_id', g.one_id from ({joining}) as g
            where not exists (select 1 from {MEMBERS} m where m.audience = {lit(audience)}
                and m.version = {lit(version)} and m.one_id = g.one_id)""")
        size = wh.execute(conn, f"select count(*) from {MEMBERS} where audience = %s and version = %s",
                          [audience, version])[0][0]
    else:
        size = _generate_on_spark(ctx, conn, audience, version, joining, fresh=not existing)
    people, held = wh.execute(conn, "select count(*), "
                                    "coalesce(sum(case when p.held_out then 1 else 0 end), 0) "
                                    f"from {POS} p where {due}")[0]
    wh.execute(conn, f"update {VERSIONS} set size = %s, matched = %s, added = %s "
                     "where audience = %s and version = %s",
               [size, size, size, audience, version])
    wh.execute(conn, f"update {ACTIONS} set people = people + %s, held_out = held_out + %s, finished_at = %s "
                     "where subtask_id = %s", [int(people), int(held), now, subtask])
    report.actions.append({"node": node.id, "kind": "generate_audience", "audience": audience,
                           "version": version, "people": int(people), "status": "succeeded"})


def _generate_on_spark(ctx: Context, conn, audience: str, version: int, joining: str, fresh: bool) -> int:
    """Beside a Spark warehouse: the people of `joining` (a query of the state store) join the
    version's partition of Spark's members table, uploaded as a temporary view. Written before
    the state store's transaction commits the version's row, so no reader sees the version
    without them; a `fresh` version's partition is emptied first (what an attempt that rolled
    back left there). Returns the version's size."""
    from openaudience.segments.engine import MEMBERS

    spark, spec = ctx.spark, {"audience": audience, "version": version}
    with spark.connect() as sconn:
        spark.ensure_schema(sconn)
        if fresh:
            spark.delete_partition(sconn, MEMBERS, spec)
        with sconn.view(DUE, ctx.wh.arrow_batches(conn, joining), pa.schema([("one_id", pa.string())])):
            spark.execute(sconn, f"""
                insert into {MEMBERS} (audience, version, one_id, id_type, id_value)
                select %s, %s, g.one_id, 'one_id', g.one_id from {DUE} g
                where not exists (select 1 from {MEMBERS} m where m.audience = %s and m.version = %s
                    and m.one_id = g.one_id)""", [audience, version, audience, version])
        size = spark.execute(sconn, f"select count(*) from {MEMBERS} where audience = %s and version = %s",
                             [audience, version])
    return int(size[0][0])


def _send(ctx: Context, conn, plan: Plan, node: Node, cycle: int, now: dt.datetime,
          report: JourneyTick) -> None:
    """Step 1 of a send: plan the delivery run and mark its people `sending`; then steps 2-3."""
    from openaudience.delivery import engine as delivery
    from openaudience.delivery import store

    wh, name = ctx.wh, plan.name
    dname = node.config["destination"]
    if dname not in ctx.dests.destinations:
        raise UserError(f"node {node.id}: destination {dname} is gone from destinations/; restore it and "
                        f"`oa journey resume {name}`")
    d = ctx.dests.get(dname) if ctx.simulate else ctx.dests.ready(dname, ctx.environ)
    due = _due(name, node.id, cycle, now)
    run_id = uuid.uuid4().hex
    event = plan.journey.trigger.is_event
    audience = plan.journey.trigger.audience if not event else d.audience
    audience_id_type = (ctx.project.audiences[audience].id_type
                        if audience in ctx.project.audiences and not event else "one_id")
    with wh.transaction(conn):
        people, held = wh.execute(conn, "select count(*), "
                                        "coalesce(sum(case when held_out then 1 else 0 end), 0) "
                                        f"from {POS} where {due}")[0]
        version = wh.execute(conn, f"select audience_version from {CYCLES} where journey = %s and cycle = %s",
                             [name, cycle])[0][0]
        sendable = int(people) - int(held)
        counts: dict[str, int] = {}
        if sendable:
            source = (f"select one_id, id_value from {POS} where journey = %s and node = %s and cycle = %s "
                      "and state = 'waiting' and due_at <= %s and not held_out", [name, node.id, cycle, now])
            names = ["one_id", "id_value"]
            if event:
                from openaudience.journeys import live

                source = live.send_source(wh, d, name, node.id, cycle, now)
                names += list(live.event_variables(d))
            with _send_source(ctx, conn, source, names) as (source, members_from):
                counts = delivery._plan(wh, conn, ctx.dests, d, int(version), run_id, "journey",
                                        source=source, audience=audience, audience_id_type=audience_id_type,
                                        key_prefix=f"{d.name}|journey|{name}|{cycle}|{node.id}|",
                                        mode="full", event_values=event, members_from=members_from)
            if ctx.simulate:  # planned, never sent: no delivery resumes a simulated run
                wh.execute(conn, f"update {store.RUNS} set status = 'simulated' where run_id = %s", [run_id])
        wh.execute(conn, f"insert into {ACTIONS} (subtask_id, journey, cycle, node, kind, destination, "
                         "channel, run_id, audience, audience_version, status, people, held_out, "
                         "started_at) values "
                         "(%s, %s, %s, %s, 'send', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                   [run_id, name, cycle, node.id, d.name, d.channel, run_id if sendable else None, audience,
                    int(version), "running" if sendable else "succeeded", int(people), int(held), now])
        wh.execute(conn, f"update {POS} set state = 'sending', run_id = %s where {due}", [run_id])
        if ctx.simulate:
            ctx.would_send[(cycle, node.id)] = counts
    ctx.say(f"{name}: {node.id}: sending {sendable:,} to {d.name} ({d.channel}); {int(held):,} held out")
    _finish_send(ctx, conn, plan, node, cycle, run_id, now, report)


@contextmanager
def _send_source(ctx: Context, conn, source: tuple[str, list], names: list[str]
                 ) -> Iterator[tuple[tuple[str, list], Warehouse | None]]:
    """The people a send plans for, where the delivery engine reads its members: `source` itself
    (a query of positions); beside a Spark warehouse, those people uploaded to Spark as a
    temporary view for the block, so that their ids, variables and suppression are resolved there
    as for an audience's delivery. `names`: the source's columns, all text (one_id, id_value and
    an event journey's event variables, ev_<name>). Yields (source, the warehouse to read it from
    or None)."""
    if ctx.spark is None:
        yield source, None
        return
    people = pa.schema([(n, pa.string()) for n in names])
    with ctx.spark.connect() as sconn, sconn.view(DUE, ctx.wh.arrow_batches(conn, *source), people):
        yield (f"select {', '.join(qident(n) for n in names)} from {DUE}", []), ctx.spark


def _finish_send(ctx: Context, conn, plan: Plan, node: Node, cycle: int, run_id: str, now: dt.datetime,
                 report: JourneyTick) -> None:
    """Steps 2 and 3: send (or resume) the run, then move its people on."""
    from openaudience.delivery import engine as delivery
    from openaudience.delivery import store

    wh, name = ctx.wh, plan.name
    with wh.transaction(conn):
        action = wh.execute(conn, f"select run_id, destination from {ACTIONS} where subtask_id = %s",
                            [run_id])
        run = wh.execute(conn, f"select status from {store.RUNS} where run_id = %s", [run_id])
    real_run = bool(action and action[0][0])
    status = "succeeded"
    error = ""
    if real_run and not ctx.simulate and run and run[0][0] in ("running", "stopped"):
        dname = action[0][1]
        if dname not in ctx.dests.destinations:
            raise UserError(f"node {node.id}: destination {dname} is gone from destinations/; restore it and "
                            f"`oa journey resume {name}`")
        d = ctx.dests.ready(dname, ctx.environ)
        try:
            delivery._lock(wh, conn, d.name)
        except UserError as exc:
            report.notes.append(f"{node.id}: {exc}; the send resumes on the next tick")
            report.actions.append({"node": node.id, "kind": "send", "status": "stopped", "run_id": run_id})
            return
        try:
            summary = delivery._execute(wh, conn, ctx.dests, d, run_id, None, ctx.environ,
                                        resumed=run[0][0] == "stopped")
        finally:
            if wh.engine == "postgres":
                wh.execute(conn, "select pg_advisory_unlock(hashtext(%s))", ["oa-delivery:" + d.name])
                conn.commit()
        status, error = summary.status, summary.error
    elif real_run and run:
        status = run[0][0] if not ctx.simulate else "would_send"
    counts = {}
    if real_run and run:
        with wh.transaction(conn):
            row = wh.execute(conn, f"select {', '.join(store.RUN_COUNTS)} from {store.RUNS} "
                                   "where run_id = %s", [run_id])
            counts = dict(zip(store.RUN_COUNTS, (int(x) for x in row[0]), strict=True)) if row else {}
    if status == "stopped":
        with wh.transaction(conn):
            wh.execute(conn, f"update {ACTIONS} set status = 'stopped', error = %s where subtask_id = %s",
                       [error[:2000], run_id])
        report.notes.append(f"{node.id}: the send stopped ({error}); it resumes on the next tick")
        report.actions.append({"node": node.id, "kind": "send", "status": "stopped", "run_id": run_id,
                               **counts})
        return
    with wh.transaction(conn):
        sets = ", ".join(f"{k} = %s" for k in counts)
        wh.execute(conn, f"update {ACTIONS} set status = %s, finished_at = %s, error = %s"
                         + (f", {sets}" if sets else "") + " where subtask_id = %s",
                   [status, now, error[:2000] or None, *counts.values(), run_id])
        child = node.child("next")
        if child is not None:
            arrive = now
            wh.execute(conn, f"""
                insert into {POS}
                    (journey, cycle, node, one_id, id_value, held_out, arrived_at, due_at, state)
                select journey, cycle, {lit(child)}, one_id, id_value, held_out, {lit(arrive)},
                       {lit(_child_due(ctx, plan, child, arrive))}, 'waiting'
                from {POS} where journey = {lit(name)} and node = {lit(node.id)} and cycle = {lit(cycle)}
                    and state = 'sending' and run_id = {lit(run_id)}""")
        moved = wh.execute(conn, f"select count(*) from {POS} where journey = %s and node = %s "
                                 "and cycle = %s and state = 'sending' and run_id = %s",
                           [name, node.id, cycle, run_id])[0][0]
        wh.execute(conn, f"update {POS} set state = 'done', left_at = %s where journey = %s "
                         "and node = %s and cycle = %s and state = 'sending' and run_id = %s",
                   [now, name, node.id, cycle, run_id])
    report.moved[node.id] = report.moved.get(node.id, 0) + int(moved)
    report.actions.append({"node": node.id, "kind": "send", "status": status, "run_id": run_id, **counts})


# -- cycles end ---------------------------------------------------------------------------------------
def _close_cycles(ctx: Context, conn, plan: Plan, now: dt.datetime, report: JourneyTick) -> None:
    """Cycles nobody is inside any more end (their counts kept per node and branch); a journey
    with no open cycle and none to come completes. Set-based: an event-triggered journey has a
    cycle per ingest that entered anyone, thousands a day."""
    wh, name = ctx.wh, plan.name
    with wh.transaction(conn):
        ended = (f"select c.cycle from {CYCLES} c where c.journey = {lit(name)} and c.status = 'running' "
                 f"and not exists (select 1 from {POS} q where q.journey = c.journey and q.cycle = c.cycle "
                 "and q.state in ('waiting', 'sending'))")
        closing = [r[0] for r in wh.execute(conn, ended)]
        if closing:
            wh.execute(conn, "drop table if exists oa_journey_closing")
            wh.execute(conn, f"create temporary table oa_journey_closing as {ended}")
            wh.execute(conn, f"""
                insert into {NODE_COUNTS} (journey, cycle, node, branch, people, held_out)
                select p.journey, p.cycle, p.node, p.branch, count(*),
                       sum(case when p.held_out then 1 else 0 end)
                from {POS} p join oa_journey_closing k on k.cycle = p.cycle
                where p.journey = %s group by p.journey, p.cycle, p.node, p.branch""", [name])
            wh.execute(conn, f"update {CYCLES} set status = 'completed', finished_at = %s where journey = %s "
                             "and cycle in (select cycle from oa_journey_closing)", [now, name])
            wh.execute(conn, "drop table oa_journey_closing")
        keep_since = now - dt.timedelta(days=wh.settings.journey_detail_days)
        wh.execute(conn, f"delete from {POS} where journey = %s and cycle in (select cycle from {CYCLES} "
                         "where journey = %s and status <> 'running' and finished_at < %s)",
                   [name, name, keep_since])
        row = _require(wh, conn, name)
        still_open = wh.execute(conn, f"select count(*) from {CYCLES} where journey = %s "
                                      "and status = 'running'", [name])[0][0]
        if plan.journey.trigger.is_event:  # people keep arriving until it ends
            more = row["end_at"] is None or row["end_at"] > now
            done = not still_open and not more
        else:
            more = row["next_cycle_at"] is not None and (row["end_at"] is None
                                                         or row["next_cycle_at"] < row["end_at"])
            done = not still_open and row["cycles"] and not more
        if row["status"] == "running" and done:
            _set(wh, conn, name, status="completed", finished_at=now)
            report.status = "completed"


# -- reading state ------------------------------------------------------------------------------------
def statuses(wh: Warehouse, journeys: Journeys) -> list[dict]:
    """Every journey: the files (incomplete, not_started) and the started ones, with their counts."""
    wh = wh.state  # beside a Spark warehouse the journey tables are in its state store
    rows: dict[str, dict] = {}
    if _have(wh, "journeys"):
        with wh.connect(read_only=True) as conn:
            cols = ("journey", "status", "definition_hash", "file", "audience", "started_at", "next_cycle_at",
                    "finished_at", "error", "cycles")
            for r in wh.execute(conn, f"select {', '.join(cols)} from {JOURNEYS} where {REAL_ONLY}"):
                rows[r[0]] = dict(zip(cols, r, strict=True))
            for journey, waiting in wh.execute(conn, f"select journey, count(*) from {POS} where state in "
                                                     "('waiting', 'sending') group by journey"):
                if journey in rows:
                    rows[journey]["inside"] = int(waiting)
            for journey, entered in wh.execute(conn, f"select journey, sum(entered) from {CYCLES} "
                                                     "group by journey"):
                if journey in rows:
                    rows[journey]["entered"] = int(entered or 0)
    out = []
    names = sorted(set(journeys.plans) | set(journeys.problems) | set(rows))
    for name in names:
        row = rows.get(name)
        plan = journeys.plans.get(name)
        if row is None:
            status = "incomplete" if name in journeys.problems else "not_started"
            out.append({"journey": name, "status": status, "changed": False,
                        "problems": [str(p) for p in journeys.problems.get(name, [])]})
            continue
        changed = plan is None or plan.digest != row["definition_hash"]
        out.append({**row, "changed": changed, "inside": row.get("inside", 0),
                    "entered": row.get("entered", 0),
                    "problems": [str(p) for p in journeys.problems.get(name, [])]})
    return out


def node_counts(wh: Warehouse, journey: str, cycle: int | None = None) -> dict[str, dict]:
    """Per node: people who reached it, are waiting, left by each branch, and held out; over the
    journey's cycles (or one), from the positions kept and the counts of purged cycles."""
    wh = wh.state
    out: dict[str, dict] = {}
    if not _have(wh, "journey_positions"):
        return out

    def add(node: str, state: str | None, branch: str | None, n: int, held: int) -> None:
        c = out.setdefault(node, {"reached": 0, "waiting": 0, "held_out": 0, "branches": {}, "stopped": 0})
        c["reached"] += n
        c["held_out"] += held
        if state in ("waiting", "sending"):
            c["waiting"] += n
        elif state == "stopped":
            c["stopped"] += n
        elif branch:
            c["branches"][branch] = c["branches"].get(branch, 0) + n

    where, params = "journey = %s", [journey]
    if cycle is not None:
        where, params = where + " and cycle = %s", [journey, cycle]
    with wh.connect(read_only=True) as conn:
        kept = {r[0] for r in wh.execute(conn, f"select distinct cycle from {POS} where {where}", params)}
        for node, state, branch, n, held in wh.execute(
                conn, "select node, state, branch, count(*), sum(case when held_out then 1 else 0 end) "
                      f"from {POS} where {where} group by node, state, branch", params):
            add(node, state, branch, int(n), int(held or 0))
        for c, node, branch, n, held in wh.execute(
                conn, f"select cycle, node, branch, people, held_out from {NODE_COUNTS} where {where}",
                params):
            if c not in kept:
                add(node, "done", branch, int(n), int(held or 0))
    return out


def actions(wh: Warehouse, journey: str) -> list[dict]:
    wh = wh.state
    if not _have(wh, "journey_actions"):
        return []
    from openaudience.delivery import store

    cols = ("subtask_id", "cycle", "node", "kind", "destination", "channel", "run_id", "audience",
            "audience_version", "status", "people", "held_out", *store.RUN_COUNTS, "started_at",
            "finished_at", "error")
    with wh.connect(read_only=True) as conn:
        rows = wh.execute(conn, f"select {', '.join(cols)} from {ACTIONS} where journey = %s "
                                "order by started_at, node", [journey])
    return [dict(zip(cols, r, strict=True)) for r in rows]


def cycles(wh: Warehouse, journey: str) -> list[dict]:
    wh = wh.state
    if not _have(wh, "journey_cycles"):
        return []
    cols = ("cycle", "status", "audience_version", "scheduled_at", "started_at", "finished_at", "entered",
            "held_out", "not_reentered")
    with wh.connect(read_only=True) as conn:
        rows = wh.execute(conn, f"select {', '.join(cols)} from {CYCLES} where journey = %s order by cycle",
                          [journey])
    return [dict(zip(cols, r, strict=True)) for r in rows]


# -- simulation ------------------------------------------------------------------------------------
@dataclass
class Simulation:
    plan: Plan                  # the simulated plan (named SIMULATION + name)
    started_at: dt.datetime
    ended_at: dt.datetime
    ticks: int
    still_inside: int           # people the simulation left waiting when it reached its end
    row: dict


def simulate(ctx: Context, name: str, start_at: dt.datetime, until: dt.datetime | None = None,
             max_ticks: int = 2000) -> Simulation:
    """Run a journey file against history without sending: from `start_at`, the clock jumps from
    one due time to the next until nobody is inside, `until`, or the present. Sends are planned
    (suppression and caps count) and never sent. The state stays under SIMULATION + name for the
    caller's report; `drop_simulation` removes it."""
    from openaudience.journeys.source import build_plan
    from openaudience.journeys.spec import Journey

    plan = ctx.journeys.get(name)
    if plan.journey.trigger.is_event:
        raise UserError(f"journey {name} is triggered by events as they arrive; a simulation replays an "
                        "audience against history. Start it and watch `oa journey status` instead")
    key = SIMULATION + name
    data = {**plan.data, "name": key}
    sim = build_plan(Journey.model_validate(data), data)
    wh = ctx.wh
    present = _now()
    until = min(until or present, present)
    if start_at > until:
        raise UserError(f"the simulation would start at {start_at} (UTC), after {until}: "
                        "simulate a past date")
    ctx.simulate = True
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
            _drop(wh, conn, key)
            wh.execute(conn, f"""
                insert into {JOURNEYS} (journey, status, definition, definition_hash, file, audience,
                    periodic, created_at, started_at, next_cycle_at, end_at, updated_at, cycles)
                values (%s, 'running', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0)""",
                       [key, sim.to_json(), plan.digest, ctx.journeys.paths[name].name,
                        plan.journey.trigger.audience, plan.journey.trigger.periodic, present, start_at,
                        _first_cycle_at(sim, start_at, ctx.tz), _end_at_utc(sim, ctx.tz), present])
    now, ticks = start_at, 0
    while ticks < max_ticks:
        reports = tick(ctx, [key], now)
        ticks += 1
        if reports and reports[0].error:
            raise UserError(f"the simulation of {name} stopped at {now} (UTC): {reports[0].error}")
        with wh.session() as conn, wh.transaction(conn):
            row = _require(wh, conn, key)
            waiting = wh.execute(conn, f"select min(due_at) from {POS} where journey = %s "
                                       "and state = 'waiting'", [key])[0][0]
        if row["status"] != "running":
            break
        upcoming = [t for t in (waiting, row["next_cycle_at"]) if t is not None]
        if not upcoming:
            break
        following = max(min(upcoming), now + dt.timedelta(seconds=1))
        if following > until:
            break
        now = following
    with wh.session() as conn, wh.transaction(conn):
        row = _require(wh, conn, key)
        inside = wh.execute(conn, f"select count(*) from {POS} where journey = %s and state in ('waiting', "
                                  "'sending')", [key])[0][0]
    return Simulation(sim, start_at, now, ticks, int(inside), row)


def drop_simulation(ctx: Context, name: str) -> None:
    wh = ctx.wh
    with wh.session() as conn, wh.transaction(conn):
        _drop(wh, conn, SIMULATION + name)


def forget(ctx: Context, name: str) -> None:
    """Remove a journey's state and its sends' log, so that it can run again from the start (what
    `make demo` does with its example journeys on a warehouse that ran them before). Not for a
    journey people rely on: its history goes with it."""
    wh = ctx.wh
    with wh.session() as conn, wh.transaction(conn):
        wh.ensure_schema(conn)
        _drop(wh, conn, name, every_run=True)


def _drop(wh: Warehouse, conn, key: str, every_run: bool = False) -> None:
    """Every row of a simulation (or, `every_run`, of a journey): its state, its runs and their
    log."""
    from openaudience.delivery import store

    runs = [r[0] for r in wh.execute(conn, f"select run_id from {ACTIONS} where journey = %s "
                                           "and run_id is not null", [key])]
    for i in range(0, len(runs), 500):
        part = runs[i:i + 500]
        marks = ", ".join(["%s"] * len(part))
        wh.execute(conn, f"delete from {store.LOG} where run_id in ({marks})", part)
        only = "" if every_run else " and status = 'simulated'"
        wh.execute(conn, f"delete from {store.RUNS} where run_id in ({marks}){only}", part)
        wh.execute(conn, f"delete from {store.DEAD} where run_id in ({marks})", part)
    for table in (POS, CYCLES, ENTRIES, ACTIONS, NODE_COUNTS, op.JOURNEY_EVENT_ENTRIES.relation,
                  op.JOURNEY_EVENT_COUNTS.relation, JOURNEYS):
        wh.execute(conn, f"delete from {table} where journey = %s", [key])


def _have(wh: Warehouse, table: str) -> bool:
    """Whether the warehouse has a journey table (no warehouse yet: no)."""
    if wh.engine == "duckdb" and not wh.settings.duckdb_path.exists():
        return False
    return wh.table_exists(op.JOURNEY_SCHEMA, table)


def due_journeys(wh: Warehouse, now: dt.datetime | None = None) -> list[str]:
    """Journeys a tick would act on now: running ones with a cycle due, people due, or a send to
    resume, and pending ones when a place is free."""
    wh = wh.state
    now = now or _now()
    if not _have(wh, "journeys"):
        return []
    with wh.connect(read_only=True) as conn:
        rows = wh.execute(conn, f"""
            select j.journey from {JOURNEYS} j where j.status = 'running' and {REAL_ONLY} and (
                (j.next_cycle_at is not null and j.next_cycle_at <= %s)
                or exists (select 1 from {POS} p where p.journey = j.journey and (
                    p.state = 'sending' or (p.state = 'waiting' and p.due_at <= %s)))
                or (j.end_at is not null and j.end_at <= %s and exists (select 1 from {POS} p
                    where p.journey = j.journey and p.state = 'waiting')))
            order by j.journey""", [now, now, now])
        running = _running(wh, conn)
        pending = []
        if running < wh.settings.journey_max_running:
            pending = wh.execute(conn, f"select journey from {JOURNEYS} where status = 'pending' "
                                       "order by created_at, journey")
    return [r[0] for r in rows] + [r[0] for r in pending]


def journey_row(wh: Warehouse, journey: str) -> dict | None:
    wh = wh.state
    if not _have(wh, "journeys"):
        return None
    with wh.connect(read_only=True) as conn:
        return _row(wh, conn, journey)


__all__ = ["Context", "JourneyBusy", "JourneyErrors", "JourneyTick", "MAX_WAIT_DAYS", "STATUSES", "actions",
           "bucket", "bucket_sql", "cycles", "journey_row", "json", "node_counts", "pause", "resume", "start",
           "statuses", "stop", "tick"]
