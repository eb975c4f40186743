"""Event-triggered journeys: people enter as their events arrive (docs/journeys.md, "Event
triggers"; spec D §2.1-2.3, §3.3).

- `enter` runs inside the transaction in which `oa events ingest` stores a chunk of new events
  (openaudience/events/ingest.py): the events that match a running event journey's trigger
  (code, attribute condition) and whose person is known (marts.fct_events_live) count toward
  `min_count`, and each person enters as often as the trigger `limit` allows. Entries, counts
  and the stored events commit together, and one ingest runs at a time (a lock), so a limit
  holds however many of one person's events arrive at once, and a crash repeats nothing.
  Each ingest's entrants form cycles of their own: a person's k-th entry of one ingest is in
  the k-th new cycle, so that one person never holds two places at one node of one cycle.
- `settle_behaviors` lets people at a behaviour branch who did the event go on at once (the
  branch would say `did` at the end of the window anyway); the others wait the window out.
- `behavior_route` and `send_source` are what the engine reads for event journeys: the live
  events, and the triggering event's attributes as the sends' event variables.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from openaudience.conditions import Context as ConditionContext
from openaudience.conditions import compile_condition
from openaudience.core.errors import UserError
from openaudience.core.schema import operational as op
from openaudience.core.warehouse import Warehouse, qident, qualified
from openaudience.journeys.source import ROOT, Node, Plan
from openaudience.journeys.sql import (
    CYCLES,
    ENTRIES,
    EVENT_TRIGGERED,
    JOURNEYS,
    POS,
    REAL_ONLY,
    bucket,
    hash_name,
    lit,
)

LIVE = qualified("marts", "fct_events_live")
BESIDE_SPARK = (f"(select ev.event_id, ev.event_code as event_type, ev.received_at, ev.attributes, p.one_id "
                f"from {op.EVENTS.relation} ev "
                f"left join {op.EVENT_PEOPLE.relation} p on p.event_id = ev.event_id)")
"""What the journeys read for marts.fct_events_live in the state store beside a Spark warehouse:
the events it keeps, with the people Spark resolved (openaudience/core/schema/spark.py)."""
ENTRIES_BY_EVENT = op.JOURNEY_EVENT_ENTRIES.relation
COUNTS = op.JOURNEY_EVENT_COUNTS.relation
NEW = "oa_new_events"


@dataclass
class Entered:
    """What one ingest chunk did to the event journeys."""

    entered: dict[str, int] = field(default_factory=dict)       # journey -> entries
    limited: dict[str, int] = field(default_factory=dict)       # journey -> events the limit kept out
    unknown: dict[str, int] = field(default_factory=dict)       # journey -> events of no known person


def attribute_sql(engine: str, key: str, kind: str, table: str = "e") -> str:
    """An attribute of the events' JSON as a typed column (attribute ids are validated names)."""
    name = exp.Literal.string(key).sql()
    if engine == "postgres":
        text = f"(cast({table}.attributes as json) ->> {name})"
    else:
        text = f"json_extract_string({table}.attributes, '$.' || {name})"
    return f"cast({text} as double precision)" if kind == "numeric" else text


def _attribute_types(wh: Warehouse, conn, code: str) -> dict[str, str]:
    rows = wh.execute(conn, f"select attributes from {op.EVENT_DEFINITIONS.relation} where event_code = %s",
                      [code])
    return json.loads(rows[0][0]) if rows else {}


def condition_sql(wh: Warehouse, conn, code: str, condition, table: str = "e") -> str:
    """A condition on event `code`'s attributes as SQL over `table` (fct_events_live rows);
    `true` when there is none. An attribute the registry no longer types reads as text."""
    if condition is None:
        return "true"
    types = _attribute_types(wh, conn, code)
    used = {leaf.name for leaf in condition.leaves("attribute")}
    kinds = {name: types.get(name, "text") for name in used}
    ctx = ConditionContext(today=dt.date.today(), tag_types=kinds, tag_table="a")
    compiled = compile_condition(condition, ctx)

    def typed(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table == "a":
            return exp.maybe_parse(attribute_sql(wh.engine, node.name, kinds[node.name], table),
                                   dialect=wh.engine)
        return node

    return compiled.transform(typed).sql(dialect=wh.engine)


def live_events(wh: Warehouse) -> str:
    """The live events (event_id, event_type, received_at, attributes, one_id) as a relation of
    `wh`, where the journey tables are."""
    return BESIDE_SPARK if wh.beside is not None else LIVE


def _running(wh: Warehouse, conn) -> list[tuple[str, str, dt.datetime, int]]:
    return wh.execute(conn, f"select journey, definition, started_at, cycles from {JOURNEYS} "
                            f"where status = 'running' and {EVENT_TRIGGERED} and {REAL_ONLY} "
                            "order by journey")


def enter(wh: Warehouse, conn, event_ids: list[str], now: dt.datetime | None = None) -> Entered:
    """Enter the people whose new events (`event_ids`, just stored) trigger a running event
    journey. Runs in the caller's transaction: `ingest(..., on_events=enter)`."""
    from openaudience.journeys.clock import utc_now

    out = Entered()
    if not event_ids:
        return out
    now = (now or utc_now()).replace(microsecond=0)  # the engine's times are whole seconds (lit)
    journeys = _running(wh, conn)
    if not journeys:
        return out
    spark = wh.beside
    if spark is not None:
        # beside Spark: the new events (and links) go to Spark's copies, where the view over them
        # resolves their people with the last build's identities; those come back to the store
        from openaudience.core.schema.spark import resolve_event_people, send_new_events

        if not spark.table_exists("marts", "fct_events_live"):
            raise UserError("marts.fct_events_live is missing on the Spark warehouse, and running event "
                            "journeys read it: run `oa build`; the events wait in the log and their "
                            "people enter then")
        with spark.connect() as sconn:
            send_new_events(spark, sconn, conn)
            resolve_event_people(spark, sconn, conn, event_ids, now)
    elif not wh.table_exists("marts", "fct_events_live", conn):
        # `oa journey start` refuses before the first build; this is a view a partial build on
        # PostgreSQL dropped. Nothing is stored (the events stay in the log) until it is back.
        raise UserError("marts.fct_events_live is missing, and running event journeys read it (a "
                        "build of part of the project on PostgreSQL drops the views over what it "
                        "rebuilds): run `oa build --select fct_events_live fct_behaviors_live`; the "
                        "events wait in the log and their people enter then")
    wh.execute(conn, f"drop table if exists {NEW}")
    wh.execute(conn, f"create temporary table {NEW} (event_id {wh.sql_type('text')})")
    wh.insert_arrow(conn, NEW, pa.table({"event_id": pa.array(event_ids, pa.string())}))
    for _name, definition, started_at, cycles in journeys:
        _enter_one(wh, conn, Plan.from_json(definition), started_at, int(cycles or 0), now, out)
    wh.execute(conn, f"drop table {NEW}")
    return out


def _enter_one(wh: Warehouse, conn, plan: Plan, started_at: dt.datetime, cycles: int, now: dt.datetime,
               out: Entered) -> None:
    name, t = plan.name, plan.journey.trigger
    test = condition_sql(wh, conn, t.event, t.attributes)
    rows = wh.execute(conn, f"""
        select e.one_id, e.event_id, e.received_at from {live_events(wh)} e
        join {NEW} n on n.event_id = e.event_id
        where e.event_type = %s and e.received_at >= %s and ({test})
        order by e.one_id, e.received_at, e.event_id""", [t.event, started_at])
    unknown = sum(1 for r in rows if r[0] is None)
    if unknown:
        out.unknown[name] = unknown
    by_person: dict[str, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for one_id, event_id, received in rows:
        if one_id is not None:
            by_person[one_id].append((event_id, received))
    if not by_person:
        return
    people = list(by_person)
    wh.execute(conn, "drop table if exists oa_event_people")
    wh.execute(conn, f"create temporary table oa_event_people (one_id {wh.sql_type('text')})")
    wh.insert_arrow(conn, "oa_event_people", pa.table({"one_id": pa.array(people, pa.string())}))
    min_count = t.min_count or 1
    pending = dict(wh.execute(conn, f"select c.one_id, c.pending from {COUNTS} c join oa_event_people x "
                                    "on x.one_id = c.one_id where c.journey = %s", [name])) \
        if min_count > 1 else {}
    if t.limit == "once":
        allowed = 1
        taken = dict(wh.execute(conn, f"select e.one_id, e.entries from {ENTRIES} e join oa_event_people x "
                                      "on x.one_id = e.one_id where e.journey = %s", [name]))
    else:
        allowed = t.limit.times
        since = now - dt.timedelta(days=t.limit.within_days)
        taken = dict(wh.execute(conn, f"select e.one_id, count(*) from {ENTRIES_BY_EVENT} e "
                                      "join oa_event_people x on x.one_id = e.one_id "
                                      "where e.journey = %s and e.entered_at > %s group by e.one_id",
                                [name, since]))
    wh.execute(conn, "drop table oa_event_people")
    holdout = plan.journey.holdout
    share = int(round(holdout.percent * 100)) if holdout is not None else 0
    entries: list[tuple[int, str, str, dt.datetime, bool]] = []   # (k, one_id, event_id, received, held)
    counts: dict[str, int] = {}
    limited = 0
    for one_id, events in by_person.items():
        n = int(pending.get(one_id, 0))
        used = int(taken.get(one_id, 0))
        k = 0
        held = share > 0 and bucket(hash_name(name) + ":holdout:" + one_id) < share
        for event_id, received in events:
            n = min(n + 1, min_count)
            if n < min_count:
                continue
            if used >= allowed:
                limited += 1
                continue
            k += 1
            used += 1
            n = 0
            entries.append((k, one_id, event_id, received, held))
        if min_count > 1:
            counts[one_id] = n
    if limited:
        out.limited[name] = limited
    if counts:
        _store_counts(wh, conn, name, counts, now)
    if not entries:
        return
    base = cycles + 1
    text, ts = pa.string(), pa.timestamp("us")
    data = pa.table({
        "journey": pa.array([name] * len(entries), text),
        "cycle": pa.array([base + k - 1 for k, *_ in entries], pa.int64()),
        "one_id": pa.array([e[1] for e in entries], text),
        "event_id": pa.array([e[2] for e in entries], text),
        "event_received_at": pa.array([e[3] for e in entries], ts),
        "entered_at": pa.array([now] * len(entries), ts),
        "held_out": pa.array([e[4] for e in entries], pa.bool_()),
    })
    wh.execute(conn, "drop table if exists oa_event_entrants")
    wh.execute(conn, f"create temporary table oa_event_entrants (journey {wh.sql_type('text')}, "
                     f"cycle {wh.sql_type('integer')}, one_id {wh.sql_type('text')}, "
                     f"event_id {wh.sql_type('text')}, event_received_at {wh.sql_type('timestamp')}, "
                     f"entered_at {wh.sql_type('timestamp')}, held_out {wh.sql_type('boolean')})")
    wh.insert_arrow(conn, "oa_event_entrants", data)
    wh.execute(conn, f"""
        insert into {ENTRIES_BY_EVENT} (journey, cycle, one_id, event_id, event_received_at, entered_at)
        select journey, cycle, one_id, event_id, event_received_at, entered_at from oa_event_entrants""")
    wh.execute(conn, f"""
        insert into {POS} (journey, cycle, node, one_id, id_value, held_out, arrived_at, due_at, state)
        select journey, cycle, %s, one_id, one_id, held_out, entered_at, entered_at, 'waiting'
        from oa_event_entrants""", [ROOT])
    wh.execute(conn, f"""
        insert into {ENTRIES} (journey, one_id, first_cycle, last_cycle, last_entered_at, entries)
        select journey, one_id, min(cycle), max(cycle), max(entered_at), count(*) from oa_event_entrants
        group by journey, one_id
        on conflict (journey, one_id) do update set last_cycle = excluded.last_cycle,
            last_entered_at = excluded.last_entered_at, entries = {ENTRIES}.entries + excluded.entries""")
    wh.execute(conn, f"""
        insert into {CYCLES} (journey, cycle, status, audience_version, scheduled_at, started_at, entered,
            held_out, not_reentered)
        select journey, cycle, 'running', 0, %s, %s, count(*), sum(case when held_out then 1 else 0 end),
            case when cycle = %s then %s else 0 end
        from oa_event_entrants group by journey, cycle""", [now, now, base, limited])
    wh.execute(conn, "drop table oa_event_entrants")
    last = base + max(k for k, *_ in entries) - 1
    wh.execute(conn, f"update {JOURNEYS} set cycles = %s, updated_at = %s where journey = %s",
               [last, now, name])
    out.entered[name] = len(entries)


def _store_counts(wh: Warehouse, conn, name: str, counts: dict[str, int], now: dt.datetime) -> None:
    data = pa.table({"journey": pa.array([name] * len(counts), pa.string()),
                     "one_id": pa.array(list(counts), pa.string()),
                     "pending": pa.array(list(counts.values()), pa.int64()),
                     "updated_at": pa.array([now] * len(counts), pa.timestamp("us"))})
    wh.execute(conn, "drop table if exists oa_event_counts")
    wh.execute(conn, f"create temporary table oa_event_counts as select * from {COUNTS} where 1 = 0")
    wh.insert_arrow(conn, "oa_event_counts", data)
    wh.execute(conn, f"""
        insert into {COUNTS} (journey, one_id, pending, updated_at)
        select journey, one_id, pending, updated_at from oa_event_counts
        on conflict (journey, one_id) do update set pending = excluded.pending,
            updated_at = excluded.updated_at""")
    wh.execute(conn, "drop table oa_event_counts")


# -- behaviour branches ---------------------------------------------------------------------------
def _window_start(plan: Plan, node: Node) -> str:
    """A branch right after the start counts from the triggering event; deeper ones from when
    the person arrived at it."""
    first = plan.parent_of(node.id) == ROOT
    return "x.event_received_at" if first else "p.arrived_at"


def _did_counts(wh: Warehouse, conn, plan: Plan, node: Node, where: str, until: str,
                since: dt.datetime | None = None) -> str:
    """Per person due at `node` (`where` over positions p), the count of the branch's events
    in its window, up to `until` (a SQL time over p); `since`, a time no window starts before,
    lets the scan of the events skip the older ones."""
    body = node.body
    test = condition_sql(wh, conn, body.event, body.attributes)
    code = exp.Literal.string(body.event).sql()
    bound = f"and e.received_at >= {lit(since)} " if since is not None else ""
    return (f"select p.one_id, count(e.event_id) as n from {POS} p "
            f"join {ENTRIES_BY_EVENT} x on x.journey = p.journey and x.cycle = p.cycle "
            f"and x.one_id = p.one_id "
            f"left join {live_events(wh)} e on e.one_id = p.one_id and e.event_type = {code} {bound}"
            f"and e.event_id <> x.event_id and e.received_at >= {_window_start(plan, node)} "
            f"and e.received_at < {until} and ({test}) "
            f"where {where} group by p.one_id")


def behavior_route(ctx, conn, plan: Plan, node: Node, due: str) -> str:
    """The route (one_id, branch) of the people due at a behaviour branch of an event journey."""
    from openaudience.conditions.leaves import AT_LEAST_ONCE

    wh = ctx.wh
    counts = _did_counts(wh, conn, plan, node, due, "p.due_at")
    check = (node.body.count or AT_LEAST_ONCE).sql(exp.column("n", table="t")).sql(dialect=wh.engine)
    return f"select t.one_id, case when {check} then 'did' else 'did_not' end as branch from ({counts}) as t"


def settle_behaviors(ctx, conn, plan: Plan, now: dt.datetime) -> None:
    """People waiting at a behaviour branch who have done enough already go on now (when more
    events could not change the answer: no count, or a count of at least / more than)."""
    from openaudience.conditions.leaves import AT_LEAST_ONCE

    wh = ctx.wh
    for node in plan.nodes.values():
        if node.kind != "behavior_branch":
            continue
        count = node.body.count or AT_LEAST_ONCE
        if count.op not in (">", ">="):
            continue
        waiting = (f"p.journey = {lit(plan.name)} and p.node = {lit(node.id)} and p.state = 'waiting' "
                   f"and p.due_at > {lit(now)}")
        with wh.transaction(conn):
            if not wh.execute(conn, f"select 1 from {POS} p where {waiting} limit 1"):
                continue  # nobody waits here: no scan of the events
            # the people waiting arrived within the window; their events a day before at most
            since = now - node.body.window_delta - dt.timedelta(days=1)
            counts = _did_counts(wh, conn, plan, node, waiting, lit(now), since)
            check = count.sql(exp.column("n", table="t")).sql(dialect=wh.engine)
            wh.execute(conn, f"""
                update {POS} set due_at = {lit(now)}
                where journey = {lit(plan.name)} and node = {lit(node.id)} and state = 'waiting'
                  and due_at > {lit(now)}
                  and one_id in (select t.one_id from ({counts}) as t where {check})""")


# -- sends ------------------------------------------------------------------------------------------
def event_variables(d) -> dict[str, str]:
    """The destination's event variables: column ev_<variable> of a send's people -> attribute."""
    return {f"ev_{var}": spec.event for var, spec in d.variables.items() if spec.event is not None}


def send_source(wh: Warehouse, d, journey: str, node: str, cycle: int, now: dt.datetime) -> tuple[str, list]:
    """The people due at a send of an event journey, with a column ev_<variable> per event
    variable of the destination: the attribute of the event that started their entry."""
    cols = "".join(f", {attribute_sql(wh.engine, attribute, 'text', 'ev')} as {qident(column)}"
                   for column, attribute in event_variables(d).items())
    sql = (f"select p.one_id, p.id_value{cols} from {POS} p "
           f"left join {ENTRIES_BY_EVENT} x on x.journey = p.journey and x.cycle = p.cycle "
           f"and x.one_id = p.one_id "
           f"left join {op.EVENTS.relation} ev on ev.event_id = x.event_id "
           "where p.journey = %s and p.node = %s and p.cycle = %s and p.state = 'waiting' "
           "and p.due_at <= %s and not p.held_out")
    return sql, [journey, node, cycle, now]

