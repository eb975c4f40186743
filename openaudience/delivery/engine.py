"""The sync engine: plan a run, send it in batches, record every acknowledgement.

A run is planned in one transaction: the audience version's members are compared with what the
destination holds (`delivery_state`; mode `diff`) or taken whole (`full`), each change gets an
idempotency key, md5(destination|audience|version|op|id), and its status: suppressed (the
suppression list), capped (a frequency cap), skipped (a missing variable, or a removal the
channel cannot take), already sent (the key was acknowledged before), or pending. Pending rows
carry the batch number they will be sent in.

Sending reads the pending rows, sends batches through the connector on `concurrency` threads
under the rate limit and the retry policy, and commits the outcomes every 2 seconds: the log
rows, the destination's state, the dead letters and the run's counts together, so the run row
never says less than the log. The run row also names its process (pid, host) and a heartbeat
refreshed at every commit and at least every 2 seconds while batches wait on retries: `runs`
reports a `running` run whose process is gone as `interrupted`, with the command that resumes
it. A run that dies (kill -9, a lost connection) leaves its unacknowledged rows pending; the next
`deliver` resumes it before anything else, with the same keys and batches, so it sends exactly
what was not yet acknowledged. A receiver that keeps the keys it processed sees every change
once even when an acknowledgement was lost in flight.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from connectors.base import Connector, ConnectorConfigError, Member, Outcome, TransientError, check_delivery
from connectors.identifiers import IdError
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.warehouse import Warehouse, qident, qualified
from openaudience.delivery import store
from openaudience.delivery.channels import capabilities, connector_for, id_preparer
from openaudience.delivery.flow import Backoff, CircuitBreaker, RateLimiter
from openaudience.delivery.source import Destinations
from openaudience.delivery.spec import Destination
from openaudience.segments.engine import MEMBERS, VERSIONS

USER_TAGS = qualified("marts", "user_tags")
IDENTITIES = qualified("marts", "dim_identities")
PLAN = "oa_delivery_plan"
# channels that message a person (frequency caps count these); the others sync lists
MESSAGE_CHANNELS = ("webhook", "email", "sms")
RESULTS = "oa_delivery_results"
FLUSH_SECONDS = 2.0
# a running run owned by another host (where its pid cannot be checked) whose heartbeat is older
# than this is reported interrupted; its process beats every FLUSH_SECONDS while sending, but
# opening a channel or a platform's last step (a publish) may take a few minutes of retries
# without a beat. On the run's own host the heartbeat's age does not matter: its pid does.
STALE_SECONDS = 300.0
PID_START_SLACK = dt.timedelta(seconds=1)  # /proc/stat's btime is whole seconds
FETCH_ROWS = 100_000
PREVIEW_ROWS = 10
Progress = Callable[[str, int, int], None]


@dataclass
class RunSummary:
    run_id: str
    destination: str
    audience: str
    audience_version: int
    mode: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    resumed: bool = False
    dry_run: bool = False
    preview: list[dict] = field(default_factory=list)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _owner() -> tuple[int, str]:
    """This process, as a run row names its owner."""
    return os.getpid(), socket.gethostname()


class _DryRun(Exception):
    """Raised inside the planning transaction of a dry run, so that nothing stays."""


# -- planning ------------------------------------------------------------------------------------
def _json_object(engine: str, pairs: list[tuple[str, str]]) -> str:
    """A JSON object of text values (the member's variables); the two engines spell it apart."""
    if not pairs:
        return "cast(null as text)"
    args = ", ".join(f"'{name}', {expr}" for name, expr in pairs)
    return f"cast(json_object({args}) as varchar)" if engine == "duckdb" else \
        f"cast(json_build_object({args}) as text)"


def _member_select(wh: Warehouse, d: Destination, id_type: str, audience_id_type: str,
                   source: tuple[str, list], event_values: bool = False) -> tuple[str, list]:
    """The members to send with the destination's id and variables: one_id, id_value and a
    column var_<name> per variable (tags read from user_tags), with its parameters."""
    txt = wh.sql_type("text")
    params: list = []
    variables = d.variables
    needs_tags = id_type != audience_id_type or any(v.tag is not None for v in variables.values())
    id_expr = "m.id_value" if id_type == audience_id_type else f"cast(u.{qident(id_type)} as {txt})"
    var_cols = []
    for name, spec in variables.items():
        if spec.tag is not None:
            value = f"nullif(trim(cast(u.{qident(spec.tag)} as {txt})), '')"  # an empty tag is missing
        elif event_values:
            value = f"nullif(trim(cast(m.{qident('ev_' + name)} as {txt})), '')"
        else:  # no event here: the variable is missing
            value = f"cast(null as {txt})"
        if spec.if_missing == "default":
            params.append(spec.default)
            value = f"coalesce({value}, %s)"
        var_cols.append(f"{value} as {qident('var_' + name)}")
    join = f"left join {USER_TAGS} u on u.one_id = m.one_id" if needs_tags else ""
    var_list = "".join(f", {c}" for c in var_cols)
    source_sql, source_params = source
    params += source_params
    return f"select m.one_id, {id_expr} as id_value{var_list} from ({source_sql}) as m {join}", params


def _plan_statement(wh: Warehouse, d: Destination, id_type: str, audience_id_type: str,
                    caps: list, is_message: bool, removals: bool, source: tuple[str, list],
                    key_prefix: str, identities: bool = True, event_values: bool = False,
                    resolved: tuple[str, str] | None = None) -> tuple[str, list]:
    """The statement that fills the plan table and its parameters. `source` is a query of the
    members (one_id, id_value of the audience's id type) with its parameters, and with
    `event_values` a column ev_<variable> per event variable (an event journey's send);
    `key_prefix` starts every idempotency key. `resolved` (beside a Spark warehouse) names two
    tables of this store that Spark filled: the members as `_member_select` gives them, and the
    suppressed people (one_id, reason)."""
    txt = wh.sql_type("text")
    variables = d.variables
    if resolved is None:
        src, params = _member_select(wh, d, id_type, audience_id_type, source, event_values)
    else:
        src, params = f"select * from {resolved[0]}", []
    var_names = [qident("var_" + n) for n in variables]
    var_sel = "".join(f", {v}" for v in var_names)
    members = (f"select one_id, id_value{var_sel} from (select s.*, row_number() over "
               f"(partition by id_value order by one_id) as rn from ({src}) as s "
               f"where id_value is not null) as r where rn = 1")
    if d.mode == "diff":
        null_vars = "".join(f", cast(null as {txt}) as {v}" for v in var_names)
        changes = (f"select one_id, id_value, 'add' as op{var_sel} from members m where not exists "
                   f"(select 1 from {store.STATE} h where h.destination = %s and h.id_value = m.id_value) "
                   f"union all select h.one_id, h.id_value, 'remove' as op{null_vars} from {store.STATE} h "
                   f"where h.destination = %s and not exists "
                   f"(select 1 from members m where m.id_value = h.id_value)")
        params += [d.name, d.name]
    else:
        changes = f"select one_id, id_value, 'add' as op{var_sel} from members"
    ctes = [f"members as ({members})", f"changes as ({changes})"]
    ctes.append("keyed as (select md5(%s || c.op || '|' || c.id_value) as idempotency_key, c.* "
                "from changes c)")
    params.append(key_prefix)
    ctes.append(f"sup_direct as (select id_value, min(reason) as reason from {store.SUPPRESSION} "
                f"where channel in (%s, '*') and id_type = %s group by id_value)")
    params += [d.channel, id_type]
    if resolved is not None:
        ctes.append(f"sup_people as (select one_id, reason from {resolved[1]})")
    elif identities:
        ctes.append(f"sup_people as (select i.one_id, min(s.reason) as reason from {store.SUPPRESSION} s "
                    f"join {IDENTITIES} i on i.id_type = s.id_type and i.id_value = s.id_value "
                    f"where s.channel in (%s, '*') group by i.one_id)")
        params.append(d.channel)
    else:  # a warehouse dbt has not built yet: suppression by the id itself only
        ctes.append(f"sup_people as (select cast(null as {txt}) as one_id, cast(null as {txt}) as reason "
                    "where 1 = 0)")
    cap_joins, cap_cases = [], []
    if is_message:
        for i, cap in enumerate(c for c in caps if c.channel in (d.channel, "*")):
            channel_filter = (f" and channel in ({', '.join(repr(c) for c in MESSAGE_CHANNELS)})"
                              if cap.channel == "*" else " and channel = %s")
            ctes.append(f"cap{i} as (select one_id, count(*) as n from {store.LOG} where status = 'sent' "
                        f"and op = 'add' and sent_at >= %s{channel_filter} group by one_id)")
            params.append(_now() - dt.timedelta(days=cap.days))
            if cap.channel != "*":
                params.append(cap.channel)
            cap_joins.append(f"left join cap{i} on cap{i}.one_id = k.one_id")
            cap_cases.append((f"coalesce(cap{i}.n, 0) >= {int(cap.max)}", "'capped'",
                              f"'frequency cap {cap.name}'"))
    ctes.append(f"sent as (select distinct idempotency_key from {store.LOG} where status = 'sent' "
                f"and destination = %s)")
    params.append(d.name)
    cases = [("sent.idempotency_key is not null", "'already_sent'", "'already sent'")]
    if not removals:
        cases.append(("k.op = 'remove'", "'skipped'", f"'{d.channel} takes no removals'"))
    cases.append(("k.op = 'add' and coalesce(sd.reason, sp.reason) is not null", "'suppressed'",
                  "'suppressed: ' || coalesce(sd.reason, sp.reason)"))
    cases += cap_cases
    for name, spec in variables.items():
        if spec.if_missing == "skip":
            cases.append((f"k.op = 'add' and k.{qident('var_' + name)} is null", "'skipped'",
                          f"'missing variable {name}'"))
    status = "case " + " ".join(f"when {c} then {s}" for c, s, _ in cases) + " else 'pending' end"
    rule = "case " + " ".join(f"when {c} then {r}" for c, _, r in cases) + " else null end"
    vars_json = _json_object(wh.engine, [(n, f"k.{qident('var_' + n)}") for n in variables])
    select = (f"select k.idempotency_key, k.one_id, k.id_value, k.op, {vars_json} as variables, "
              f"{status} as status, {rule} as rule from keyed k "
              f"left join sent on sent.idempotency_key = k.idempotency_key "
              f"left join sup_direct sd on sd.id_value = k.id_value "
              f"left join sup_people sp on sp.one_id = k.one_id " + " ".join(cap_joins))
    sql = f"create temporary table {PLAN} as with {', '.join(ctes)} {select}"
    return sql, params


def members_source(audience: str, version: int) -> tuple[str, list]:
    """The members of an audience version, as `_plan` reads them."""
    return (f"select one_id, id_value from {MEMBERS} where audience = %s and version = %s",
            [audience, version])


def _plan(wh: Warehouse, conn, dests: Destinations, d: Destination, version: int, run_id: str,
          trigger: str, *, source: tuple[str, list] | None = None, audience: str | None = None,
          audience_id_type: str | None = None, key_prefix: str | None = None,
          mode: str | None = None, event_values: bool = False,
          members_from: Warehouse | None = None) -> dict[str, int]:
    """Fill the log with the run's changes and record the run; returns the run's counts. By
    default the run sends the destination's audience version; a journey gives its own `source`
    of members (of `audience_id_type`), the audience it names, the key prefix and mode `full`.
    `members_from`: the Spark warehouse the members are read from, into this (state) store."""
    audience = audience or d.audience
    audience_id_type = audience_id_type or dests.audiences.audiences[d.audience].id_type
    id_type = d.id_type or audience_id_type
    source = source or members_source(d.audience, version)
    if mode and mode != d.mode:
        d = d.model_copy(update={"mode": mode})
    caps = capabilities(d.channel)
    resolved, missing = None, 0
    if members_from is not None:
        resolved, missing = _pull_members(members_from, wh, conn, d, id_type, audience_id_type, source,
                                          event_values=event_values)
    sql, params = _plan_statement(wh, d, id_type, audience_id_type, dests.policies.frequency_caps,
                                  caps.is_message, caps.supports_removals, source,
                                  key_prefix or f"{d.name}|{d.audience}|{version}|",
                                  resolved is not None or wh.table_exists("marts", "dim_identities", conn),
                                  event_values, resolved)
    # the version and the log were written moments ago, in bulk
    wh.refresh_statistics(conn, [store.LOG, store.STATE] if resolved else [MEMBERS, store.LOG, store.STATE])
    wh.execute(conn, f"drop table if exists {PLAN}")
    wh.execute(conn, sql, params)
    if id_type != audience_id_type and resolved is None:
        missing = wh.execute(conn, f"select count(*) from ({source[0]}) as m left join {USER_TAGS} u "
                                   f"on u.one_id = m.one_id where u.{qident(id_type)} is null",
                             source[1])[0][0]
    counts = {k: 0 for k in store.RUN_COUNTS}
    for status, n in wh.execute(conn, f"select status, count(*) from {PLAN} group by status"):
        counts[status] = int(n)
    counts["missing_id"] = int(missing)
    counts["planned"] = sum(counts[s] for s in ("pending", "suppressed", "capped", "skipped"))
    dbl = wh.sql_type("double")
    now = _now()
    wh.execute(conn, f"""
        insert into {store.LOG} (run_id, idempotency_key, destination, channel, audience,
            audience_version, batch_no, one_id, id_type, id_value, op, variables, status, rule,
            attempts, planned_at)
        select %s, idempotency_key, %s, %s, %s, %s,
               case when status = 'pending' then cast(floor((row_number() over
                   (partition by status order by op, idempotency_key) - 1) / cast(%s as {dbl})) as bigint)
                    else -1 end,
               one_id, %s, id_value, op, variables, status, rule, 0, %s
        from {PLAN} where status <> 'already_sent'""",
               [run_id, d.name, d.channel, audience, version, d.batch_size, id_type, now])
    # removals the channel cannot take still leave the destination's state
    wh.execute(conn, f"delete from {store.STATE} where destination = %s and id_value in "
                     f"(select id_value from {PLAN} where op = 'remove' and status = 'skipped')", [d.name])
    wh.execute(conn, f"""
        insert into {store.RUNS} (run_id, destination, channel, audience, audience_version, mode,
            id_type, id_form, trigger, status, {', '.join(store.RUN_COUNTS)}, started_at, pid, host,
            heartbeat_at)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'running',
                {', '.join(['%s'] * len(store.RUN_COUNTS))}, %s, %s, %s, %s)""",
               [run_id, d.name, d.channel, audience, version, d.mode, id_type, d.id_form, trigger,
                *[counts[k] for k in store.RUN_COUNTS], now, *_owner(), now])
    wh.execute(conn, f"drop table {PLAN}")
    for table in resolved or ():
        wh.execute(conn, f"drop table if exists {table}")
    return counts


PULLED_MEMBERS, PULLED_SUPPRESSED = "oa_delivery_members", "oa_delivery_suppressed"


def _pull_members(spark: Warehouse, wh: Warehouse, conn, d: Destination, id_type: str,
                  audience_id_type: str, source: tuple[str, list], batch_rows: int = 100_000,
                  event_values: bool = False) -> tuple[tuple[str, str], int]:
    """Beside a Spark warehouse: the members with their ids and variables, and the people the
    suppression list names by any of their ids, computed on Spark and copied into temporary
    tables of the state store (a batch at a time: memory stays bounded), where the plan is made
    against the log, the state and the caps. Returns the two tables and how many members lack
    the destination's id."""
    txt = wh.sql_type("text")
    select, params = _member_select(spark, d, id_type, audience_id_type, source, event_values)
    names = ["one_id", "id_value", *("var_" + n for n in d.variables)]
    with spark.connect() as sconn:
        wh.pull(conn, PULLED_MEMBERS, [(n, "text") for n in names], sconn, select, params, batch_rows)
        missing = 0
        if id_type != audience_id_type:
            missing = int(spark.execute(sconn, f"select count(*) from ({source[0]}) as m left join "
                                               f"{USER_TAGS} u on u.one_id = m.one_id "
                                               f"where u.{qident(id_type)} is null", source[1])[0][0])
        wh.execute(conn, f"drop table if exists {PULLED_SUPPRESSED}")
        wh.execute(conn, f"create temporary table {PULLED_SUPPRESSED} (one_id {txt}, reason {txt})")
        listed = wh.execute(conn, f"select id_type, id_value, min(reason) from {store.SUPPRESSION} "
                                  "where channel in (%s, '*') group by id_type, id_value", [d.channel])
        if listed and spark.table_exists("marts", "dim_identities"):
            ids = pa.table({"id_type": pa.array([r[0] for r in listed], pa.string()),
                            "id_value": pa.array([r[1] for r in listed], pa.string()),
                            "reason": pa.array([r[2] for r in listed], pa.string())})
            with sconn.view("oa_suppressed_ids", [ids], ids.schema):
                people = spark.execute(sconn, f"select i.one_id, min(s.reason) from oa_suppressed_ids s "
                                              f"join {IDENTITIES} i on i.id_type = s.id_type "
                                              "and i.id_value = s.id_value group by i.one_id")
            if people:
                wh.insert_arrow(conn, PULLED_SUPPRESSED, pa.table({
                    "one_id": pa.array([p[0] for p in people], pa.string()),
                    "reason": pa.array([p[1] for p in people], pa.string())}))
    return (PULLED_MEMBERS, PULLED_SUPPRESSED), missing


# -- sending -------------------------------------------------------------------------------------
@dataclass
class _BatchResult:
    batch_no: int
    rows: list[tuple]              # (key, one_id, id_value, op, variables)
    outcomes: list[Outcome]
    attempts: int
    exhausted: str = ""            # the last transient error when every retry failed


def _send_batch(connector: Connector, prepare, id_type: str, backoff: Backoff,
                limiter: RateLimiter, batch_no: int, rows: list[tuple]) -> _BatchResult:
    members, invalid = [], []
    for key, one_id, id_value, op, variables in rows:
        try:
            value = prepare(id_type, id_value)
        except IdError as exc:
            invalid.append(Outcome(key, False, "invalid_id", str(exc)))
            continue
        members.append(Member(key=key, one_id=one_id, id_type=id_type, id_value=value, op=op,
                              variables=json.loads(variables) if variables else {}))
    if not members:
        return _BatchResult(batch_no, rows, invalid, 0)
    settled: dict[str, Outcome] = {}
    remaining = members

    def attempt() -> list[Outcome]:
        nonlocal remaining
        limiter.acquire(len(remaining))  # retries count against the rate limit too
        try:
            return connector.deliver(remaining, batch_no)
        except TransientError as exc:  # keep what was settled; the retry sends the rest
            settled.update((o.key, o) for o in exc.partial)
            remaining = [m for m in remaining if m.key not in settled]
            if not remaining:
                return []
            raise

    try:
        outcomes, attempts = backoff.call(attempt)
    except TransientError as exc:
        return _BatchResult(batch_no, rows, [*invalid, *settled.values()],
                            getattr(exc, "attempts", backoff.max_attempts), exhausted=str(exc))
    return _BatchResult(batch_no, rows, [*invalid, *settled.values(), *outcomes], attempts)


def _refused_whole(r: _BatchResult) -> str:
    """A batch whose every member the channel refused with one and the same code: what a wrong
    credential or a deleted audience looks like on platforms that answer 200 with an error
    code. It counts against the breaker, so the run stops instead of dead-lettering everyone."""
    codes = {o.code for o in r.outcomes if not o.ok}
    if len(r.outcomes) < len(r.rows) or len(codes) != 1 or any(o.ok for o in r.outcomes) \
            or codes == {"invalid_id"}:
        return ""
    first = next(o for o in r.outcomes if not o.ok)
    return f"every member refused with {first.code}: {first.message}"[:300]


def _beat(wh: Warehouse, conn, run_id: str, sent: int = 0, failed: int = 0) -> None:
    """The run row follows the log: the outcomes just recorded move from pending to sent or
    failed, and the heartbeat says the owner is alive. Call it in the transaction that records
    them, so the row never counts what the log does not hold."""
    wh.execute(conn, f"update {store.RUNS} set sent = sent + %s, failed = failed + %s, "
                     "pending = pending - %s, heartbeat_at = %s where run_id = %s",
               [sent, failed, sent + failed, _now(), run_id])


def _flush(wh: Warehouse, conn, d: Destination, run: dict, results: list[_BatchResult]) -> None:
    """Record outcomes in one transaction: log rows, the destination's state, dead letters and
    the run's counts; with nothing to record, only the heartbeat."""
    if not results:
        with wh.transaction(conn):
            _beat(wh, conn, run["run_id"])
        return
    now = _now()
    cols: dict[str, list] = {k: [] for k in ("idempotency_key", "one_id", "id_value", "op", "variables",
                                            "status", "attempts", "error", "sent_at", "external_id")}
    for r in results:
        by_key = {o.key: o for o in r.outcomes}
        for key, one_id, id_value, op, variables in r.rows:
            o = by_key.get(key)
            if o is None:  # the batch gave up on transient errors, or the breaker stopped it
                status, error, ext = ("pending", _clean(r.exhausted or "not acknowledged"), "")
            elif o.ok:
                status, error, ext = "sent", "", o.external_id
            else:
                status, error, ext = "failed", _clean(f"{o.code}: {o.message}".strip(": ")), o.external_id
            for k, v in (("idempotency_key", key), ("one_id", one_id), ("id_value", id_value),
                         ("op", op), ("variables", variables), ("status", status),
                         ("attempts", r.attempts), ("error", error or None),
                         ("sent_at", now if status == "sent" else None), ("external_id", ext or None)):
                cols[k].append(v)
    table = pa.table({**{k: pa.array(v, pa.string()) for k, v in cols.items()
                         if k not in ("attempts", "sent_at")},
                      "attempts": pa.array(cols["attempts"], pa.int64()),
                      "sent_at": pa.array(cols["sent_at"], pa.timestamp("us"))})
    with wh.transaction(conn):
        wh.execute(conn, f"drop table if exists {RESULTS}")
        txt, big, ts = wh.sql_type("text"), wh.sql_type("integer"), wh.sql_type("timestamp")
        wh.execute(conn, f"create temporary table {RESULTS} (idempotency_key {txt}, one_id {txt}, "
                         f"id_value {txt}, op {txt}, variables {txt}, status {txt}, error {txt}, "
                         f"external_id {txt}, attempts {big}, sent_at {ts})")
        wh.insert_arrow(conn, RESULTS, table.select(["idempotency_key", "one_id", "id_value", "op",
                                                     "variables", "status", "error", "external_id",
                                                     "attempts", "sent_at"]))
        if table.num_rows >= 1_000:  # an upload-sized batch: joined to the log by its statistics
            wh.refresh_statistics(conn, [RESULTS])
        wh.execute(conn, f"""
            update {store.LOG} as l set status = r.status, attempts = l.attempts + r.attempts,
                error = r.error, sent_at = r.sent_at, external_id = r.external_id
            from {RESULTS} r where l.run_id = %s and l.idempotency_key = r.idempotency_key""",
                   [run["run_id"]])
        wh.execute(conn, f"delete from {store.STATE} where destination = %s and id_value in "
                         f"(select id_value from {RESULTS} where status = 'sent')", [d.name])
        wh.execute(conn, f"insert into {store.STATE} (destination, id_value, one_id, audience_version, "
                         f"delivered_at) select %s, id_value, one_id, %s, sent_at from {RESULTS} "
                         f"where status = 'sent' and op = 'add'", [d.name, run["audience_version"]])
        wh.execute(conn, f"""
            insert into {store.DEAD} (run_id, idempotency_key, destination, one_id, id_type, id_value,
                op, variables, attempts, error, failed_at)
            select %s, r.idempotency_key, %s, r.one_id, %s, r.id_value, r.op, r.variables,
                   l.attempts, r.error, %s
            from {RESULTS} r join {store.LOG} l on l.run_id = %s and l.idempotency_key = r.idempotency_key
            where r.status = 'failed'""", [run["run_id"], d.name, run["id_type"], now, run["run_id"]])
        wh.execute(conn, f"drop table {RESULTS}")
        _beat(wh, conn, run["run_id"], cols["status"].count("sent"), cols["status"].count("failed"))


def _clean(text: str) -> str:
    """An error text safe for both engines (PostgreSQL text holds no NUL) and short."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:500]


def _pending_windows(wh: Warehouse, conn, run_id: str, batch_size: int):
    """The run's pending rows, a window of batches at a time: (batch_no, rows)."""
    lo, hi = wh.execute(conn, f"select min(batch_no), max(batch_no) from {store.LOG} "
                              "where run_id = %s and status = 'pending'", [run_id])[0]
    if lo is None:
        return
    step = max(1, FETCH_ROWS // max(batch_size, 1))
    start = int(lo)
    while start <= int(hi):
        rows = wh.execute(conn, f"select batch_no, idempotency_key, one_id, id_value, op, variables "
                                f"from {store.LOG} where run_id = %s and status = 'pending' and "
                                f"batch_no >= %s and batch_no < %s order by batch_no, idempotency_key",
                          [run_id, start, start + step])
        batch: list[tuple] = []
        current = None
        for b, *row in rows:
            if current is not None and b != current:
                yield current, batch
                batch = []
            current = b
            batch.append(tuple(row))
        if batch:
            yield current, batch
        start += step


def _send_run(wh: Warehouse, conn, d: Destination, run: dict, home: Path, folder: Path,
              progress: Progress | None, environ) -> tuple[str, str]:
    """Send a run's pending rows; (final status, error)."""
    if run["id_form"] != d.id_form:  # the file changed since the run was planned
        d = d.model_copy(update={"id_form": run["id_form"]})
    prepare = id_preparer(d, environ)
    connector = connector_for(d, run, home, folder, environ)
    backoff = Backoff(d.retries.max_attempts, d.retries.initial_backoff_s, d.retries.max_backoff_s)
    limiter = RateLimiter(d.rate_limit)
    breaker = CircuitBreaker(d.breaker_failures)
    total = wh.execute(conn, f"select count(*) from {store.LOG} where run_id = %s and status = 'pending'",
                       [run["run_id"]])[0][0]
    done = 0
    buffered: list[_BatchResult] = []
    last_flush = time.monotonic()
    stopped = ""
    errors: list[Exception] = []  # from a worker: raised after what was acknowledged is recorded
    notes: list[str] = []
    try:
        try:
            connector.open()
        except TransientError as exc:
            return "stopped", (f"could not reach the channel ({exc}); run `oa deliver {d.name}` "
                               "again to resume")
        with ThreadPoolExecutor(max_workers=d.concurrency, thread_name_prefix=f"oa-{d.name}") as pool:
            in_flight: set[Future] = set()
            windows = _pending_windows(wh, conn, run["run_id"], d.batch_size)

            def tick() -> None:
                """Every FLUSH_SECONDS: record the batches that finished, or at least beat."""
                nonlocal in_flight, last_flush
                if time.monotonic() - last_flush < FLUSH_SECONDS:
                    return
                finished = {f for f in in_flight if f.done()}
                in_flight -= finished
                collect(finished)
                _flush(wh, conn, d, run, buffered)
                buffered.clear()
                last_flush = time.monotonic()

            def drain(limit: int) -> None:
                """Wait until at most `limit` batches are in flight; batches may sit in retry
                backoff for minutes, so the wait wakes up to record and beat."""
                nonlocal in_flight
                while len(in_flight) > limit:
                    finished, in_flight = wait(in_flight, timeout=FLUSH_SECONDS,
                                               return_when=FIRST_COMPLETED)
                    collect(finished)
                    tick()

            def collect(futures) -> None:
                nonlocal done, stopped
                for f in futures:
                    try:
                        r: _BatchResult = f.result()
                    except Exception as exc:  # noqa: BLE001 - raised again once the rest is recorded
                        errors.append(exc)
                        stopped = stopped or f"stopped: {exc}"
                        continue
                    refused = _refused_whole(r)
                    breaker.record(not (r.exhausted or refused), r.exhausted or refused)
                    buffered.append(r)
                    done += len(r.rows)
                    if breaker.open and not stopped:
                        stopped = (f"stopped after {breaker.streak} consecutive batches failed every "
                                   f"retry or were refused whole (last: {breaker.last_error}); the rest "
                                   f"is pending: run "
                                   f"`oa deliver {d.name}` again to resume")
                if progress:
                    progress(d.name, done, total)

            for batch_no, rows in windows:
                if stopped:
                    break
                drain(d.concurrency * 2 - 1)
                if stopped:
                    break
                in_flight.add(pool.submit(_send_batch, connector, prepare, run["id_type"], backoff,
                                          limiter, batch_no, rows))
                tick()
            drain(0)
        _flush(wh, conn, d, run, buffered)
        buffered.clear()
        if errors:
            raise errors[0]
        counts = _recount(wh, conn, run["run_id"])
        if not stopped and counts["pending"] == 0:
            try:
                connector.finish({k: counts[k] for k in ("sent", "failed", "suppressed", "capped",
                                                         "skipped")})
            except (TransientError, UserError, ConnectorConfigError) as exc:  # all members recorded
                notes.append(f"the run's last step failed: {exc}")
    finally:
        connector.close()
    notes += getattr(connector, "notes", [])
    if stopped:
        return "stopped", stopped
    if counts["pending"]:
        return "stopped", (f"{counts['pending']:,} member(s) failed every retry and are pending: run "
                           f"`oa deliver {d.name}` again to resume")
    if counts["failed"]:
        return "partial", "; ".join([f"{counts['failed']:,} member(s) failed for good; see "
                                     f"`oa deliver status {d.name}` and `oa deliver replay {d.name}`",
                                     *notes])
    return "succeeded", "; ".join(notes)


def _recount(wh: Warehouse, conn, run_id: str) -> dict[str, int]:
    rows = wh.execute(conn, f"select status, count(*) from {store.LOG} where run_id = %s group by status",
                      [run_id])
    found = {s: int(n) for s, n in rows}
    return {s: found.get(s, 0) for s in ("pending", "sent", "failed", "suppressed", "capped", "skipped")}


def _claim(wh: Warehouse, conn, run_id: str) -> None:
    """Make this process the run's owner, and its counts the log's: a resumed run's row was
    left by a process that died, or by a version that wrote counts only at the end."""
    with wh.transaction(conn):
        counts = _recount(wh, conn, run_id)
        wh.execute(conn, f"update {store.RUNS} set status = 'running', pid = %s, host = %s, "
                         "heartbeat_at = %s, sent = %s, failed = %s, pending = %s where run_id = %s",
                   [*_owner(), _now(), counts["sent"], counts["failed"], counts["pending"], run_id])


def _finish_run(wh: Warehouse, conn, run_id: str, status: str, error: str) -> dict[str, int]:
    with wh.transaction(conn):
        counts = _recount(wh, conn, run_id)
        now = _now()
        wh.execute(conn, f"update {store.RUNS} set status = %s, error = %s, finished_at = %s, "
                         "heartbeat_at = %s, sent = %s, failed = %s, pending = %s where run_id = %s",
                   [status, error or None, now, now, counts["sent"], counts["failed"], counts["pending"],
                    run_id])
        row = wh.execute(conn, f"select {', '.join(store.RUN_COUNTS)} from {store.RUNS} where run_id = %s",
                         [run_id])[0]
    return dict(zip(store.RUN_COUNTS, (int(x) for x in row), strict=True))


# -- the public operations ----------------------------------------------------------------------
def _run_row(wh: Warehouse, conn, run_id: str) -> dict:
    cols = ("run_id", "destination", "audience", "audience_version", "mode", "id_type", "id_form",
            "trigger")
    row = wh.execute(conn, f"select {', '.join(cols)} from {store.RUNS} where run_id = %s", [run_id])[0]
    return dict(zip(cols, row, strict=True))


def _lock(wh: Warehouse, conn, name: str) -> None:
    """One delivery of a destination at a time: DuckDB's file lock admits one process; on
    PostgreSQL an advisory lock held for the session."""
    if wh.engine != "postgres":
        return
    got = wh.execute(conn, "select pg_try_advisory_lock(hashtext(%s))", ["oa-delivery:" + name])[0][0]
    conn.commit()
    if not got:
        raise UserError(f"destination {name} is being delivered by another process; wait for it")


def _bound_memory(wh: Warehouse, conn) -> None:
    """A delivery holds at most a window of rows in Python; DuckDB gets its own smaller budget
    (OA_DELIVERY_MEMORY_LIMIT, default 512MB) and spills past it, so memory stays flat as the
    audience grows."""
    if wh.engine == "duckdb":
        # checked by the settings; a parameter all the same, never text in the statement
        wh.execute(conn, "set memory_limit = %s", [wh.settings.delivery_memory_limit])


def _latest_version(wh: Warehouse, conn, audience: str) -> int:
    rows = wh.execute(conn, f"select max(version) from {VERSIONS} where audience = %s and kept", [audience])
    if not rows or rows[0][0] is None:
        raise UserError(f"audience {audience} has no built version; build it first "
                        f"(oa audience build {audience})")
    return int(rows[0][0])


def _check_channel(wh: Warehouse, conn, dests: Destinations, d: Destination, version: int) -> None:
    """The channel's limits, before anything is planned or sent."""
    size = wh.execute(conn, f"select size from {VERSIONS} where audience = %s and version = %s",
                      [d.audience, version])[0][0]
    problems = check_delivery(capabilities(d.channel), dests.id_type(d.name), d.id_form, int(size),
                              d.batch_size)
    if problems:
        raise UserError(f"cannot deliver {d.name} (audience {d.audience} version {version}): "
                        + "; ".join(problems) + "; nothing was sent")


def deliver(dests: Destinations, name: str, *, wh: Warehouse | None = None, dry_run: bool = False,
            trigger: str = "manual", force: bool = False, progress: Progress | None = None,
            environ=None) -> list[RunSummary]:
    """Resume the destination's unfinished runs, then deliver the audience's latest version
    (unless that version was delivered already and `force` is off)."""
    wh = wh or Warehouse()
    members_from = None
    if wh.state is not wh:  # Spark: members are read there; runs, log and state live beside it
        members_from, wh = wh, wh.state
    if dests.get(name).schedule == "journey":
        raise UserError(f"destination {name} has schedule: journey: only journeys send through it "
                        f"(their people, at their steps); it is never delivered on its own")
    d = dests.get(name) if dry_run else dests.ready(name, environ)  # credentials before any run
    summaries: list[RunSummary] = []
    with wh.session() as conn:
        _bound_memory(wh, conn)
        with wh.transaction(conn):
            wh.ensure_schema(conn)
        _lock(wh, conn, d.name)
        unfinished = [r[0] for r in wh.execute(
            conn, f"select run_id from {store.RUNS} where destination = %s and status in "
                  "('running', 'stopped') order by started_at", [d.name])]
        if dry_run:
            return _dry_run(wh, conn, dests, d, unfinished, trigger, members_from)
        for run_id in unfinished:
            summaries.append(_execute(wh, conn, dests, d, run_id, progress, environ, resumed=True))
            if summaries[-1].status == "stopped":
                return summaries
        with wh.transaction(conn):
            version = _latest_version(wh, conn, d.audience)
            delivered = wh.execute(conn, f"select count(*) from {store.RUNS} where destination = %s and "
                                         "audience_version = %s and status in ('succeeded', 'partial') "
                                         "and trigger not in ('replay', 'journey')", [d.name, version])[0][0]
        if delivered and not force:
            return summaries
        with wh.transaction(conn):
            _check_channel(wh, conn, dests, d, version)
            run_id = uuid.uuid4().hex
            _plan(wh, conn, dests, d, version, run_id, trigger, members_from=members_from)
        summaries.append(_execute(wh, conn, dests, d, run_id, progress, environ))
    return summaries


def _execute(wh: Warehouse, conn, dests: Destinations, d: Destination, run_id: str, progress,
             environ, resumed: bool = False) -> RunSummary:
    started = time.perf_counter()
    run = _run_row(wh, conn, run_id)
    _claim(wh, conn, run_id)
    try:
        status, error = _send_run(wh, conn, d, run, wh.settings.home, dests.folder, progress, environ)
    except (UserError, ConnectorConfigError) as exc:  # e.g. a missing credential: the run waits
        _finish_run(wh, conn, run_id, "stopped", str(exc))
        if isinstance(exc, ConnectorConfigError):  # the connector's refusal, as our callers know it
            raise ConfigError(str(exc)) from None
        raise
    counts = _finish_run(wh, conn, run_id, status, error)
    return RunSummary(run_id=run_id, destination=d.name, audience=run["audience"],
                      audience_version=int(run["audience_version"]), mode=run["mode"], status=status,
                      counts=counts, seconds=time.perf_counter() - started, error=error,
                      resumed=resumed)


def _dry_run(wh: Warehouse, conn, dests: Destinations, d: Destination, unfinished: list[str],
             trigger: str, members_from: Warehouse | None = None) -> list[RunSummary]:
    """What a delivery would send: the plan computed and rolled back, with its first rows."""
    out: list[RunSummary] = []
    for run_id in unfinished:
        run = _run_row(wh, conn, run_id)
        out.append(RunSummary(run_id=run_id, destination=d.name, audience=run["audience"],
                              audience_version=int(run["audience_version"]), mode=run["mode"],
                              status="would resume", counts=_recount(wh, conn, run_id), resumed=True,
                              dry_run=True, preview=_preview(wh, conn, run_id, run["id_type"], d)))
    try:
        with wh.transaction(conn):
            version = _latest_version(wh, conn, d.audience)
            _check_channel(wh, conn, dests, d, version)
            run_id = "dry-run-" + uuid.uuid4().hex[:8]
            counts = _plan(wh, conn, dests, d, version, run_id, trigger, members_from=members_from)
            preview = _preview(wh, conn, run_id, dests.id_type(d.name), d)
            out.append(RunSummary(run_id=run_id, destination=d.name, audience=d.audience,
                                  audience_version=version, mode=d.mode, status="would send",
                                  counts=counts, dry_run=True, preview=preview))
            raise _DryRun
    except _DryRun:
        pass
    return out


def _preview(wh: Warehouse, conn, run_id: str, id_type: str, d: Destination) -> list[dict]:
    rows = wh.execute(conn, f"select op, one_id, id_value, variables from {store.LOG} where run_id = %s "
                            f"and status = 'pending' order by batch_no, idempotency_key "
                            f"limit {PREVIEW_ROWS}", [run_id])
    out = []
    try:
        prepare = id_preparer(d)
    except (UserError, ConnectorConfigError) as exc:  # e.g. the aes key is not in this environment
        return [{"op": "", "one_id": "", "id": f"(cannot show the ids: {exc})", "variables": ""}]
    for op, one_id, id_value, variables in rows:
        try:
            sent = prepare(id_type, id_value)
        except IdError as exc:
            sent = f"(invalid: {exc})"
        out.append({"op": op, "one_id": one_id, "id": sent, "variables": variables or ""})
    return out


def replay(dests: Destinations, name: str, *, wh: Warehouse | None = None,
           progress: Progress | None = None, environ=None) -> RunSummary | None:
    """Send the destination's dead letters again, with their keys, as a run of their own."""
    wh = (wh or Warehouse()).state
    d = dests.ready(name, environ)  # credentials before a replay run is recorded
    with wh.session() as conn:
        with wh.transaction(conn):
            wh.ensure_schema(conn)
        _lock(wh, conn, d.name)
        with wh.transaction(conn):
            open_letters = wh.execute(conn, f"select run_id from {store.DEAD} where destination = %s "
                                            "and replayed_at is null order by failed_at desc", [d.name])
            if not open_letters:
                return None
            source = _run_row(wh, conn, open_letters[0][0])
            run_id = uuid.uuid4().hex
            dbl = wh.sql_type("double")
            # each open dead letter once, unless its id was delivered since (the destination
            # holds it, or its key was sent) or is suppressed now
            wh.execute(conn, f"""
                insert into {store.LOG} (run_id, idempotency_key, destination, channel, audience,
                    audience_version, batch_no, one_id, id_type, id_value, op, variables, status,
                    rule, attempts, planned_at)
                select %s, x.idempotency_key, %s, %s, %s, %s,
                       cast(floor((row_number() over (order by x.idempotency_key) - 1)
                                  / cast(%s as {dbl})) as bigint),
                       x.one_id, x.id_type, x.id_value, x.op, x.variables, 'pending', 'replay', 0, %s
                from (select idempotency_key, min(one_id) as one_id, min(id_type) as id_type,
                             min(id_value) as id_value, min(op) as op, min(variables) as variables
                      from {store.DEAD} where destination = %s and replayed_at is null
                      group by idempotency_key) as x
                where not exists (select 1 from {store.LOG} l where l.destination = %s and
                                  l.idempotency_key = x.idempotency_key and l.status = 'sent')
                  and not (x.op = 'add' and exists (select 1 from {store.STATE} h
                           where h.destination = %s and h.id_value = x.id_value))
                  and not (x.op = 'add' and exists (select 1 from {store.SUPPRESSION} s
                           where s.id_type = x.id_type and s.id_value = x.id_value
                           and s.channel in (%s, '*')))""",
                       [run_id, d.name, d.channel, source["audience"], source["audience_version"],
                        d.batch_size, _now(), d.name, d.name, d.name, d.channel])
            n = wh.execute(conn, f"select count(*) from {store.LOG} where run_id = %s", [run_id])[0][0]
            # every open letter is settled now: replayed, or no longer to be sent
            wh.execute(conn, f"update {store.DEAD} set replayed_at = %s where destination = %s and "
                             "replayed_at is null", [_now(), d.name])
            if not n:
                return None
            counts = [0] * len(store.RUN_COUNTS)
            counts[store.RUN_COUNTS.index("planned")] = int(n)
            wh.execute(conn, f"""
                insert into {store.RUNS} (run_id, destination, channel, audience, audience_version,
                    mode, id_type, id_form, trigger, status, {', '.join(store.RUN_COUNTS)}, started_at,
                    pid, host, heartbeat_at)
                values (%s, %s, %s, %s, %s, %s, %s, %s, 'replay', 'running',
                        {', '.join(['%s'] * len(store.RUN_COUNTS))}, %s, %s, %s, %s)""",
                       [run_id, d.name, d.channel, source["audience"], source["audience_version"],
                        source["mode"], source["id_type"], d.id_form, *counts, _now(), *_owner(), _now()])
        return _execute(wh, conn, dests, d, run_id, progress, environ)


def runs(wh: Warehouse, destination: str | None = None, limit: int = 50) -> list[dict]:
    """The latest runs, newest first, with their counts. A `running` run whose process is gone
    is `interrupted`; `resume` holds the command that resumes an unfinished run."""
    wh = wh.state
    cols = ("run_id", "destination", "channel", "audience", "audience_version", "mode", "trigger",
            "status", *store.RUN_COUNTS, "started_at", "finished_at", "error")
    with wh.connect() as conn:
        if not wh.table_exists(store.SCHEMA, "delivery_runs", conn):  # before any delivery
            return []
        where = "where destination = %s" if destination else ""
        rows = wh.execute(conn, f"select {', '.join(cols)}, {store.run_owner_select(wh, conn)} "
                                f"from {store.RUNS} {where} order by started_at desc limit {int(limit)}",
                          [destination] if destination else [])
    cols += tuple(name for name, _ in store.RUN_OWNER)
    out, now = [dict(zip(cols, r, strict=True)) for r in rows], _now()
    for r in out:
        if r["status"] == "running" and not _owner_alive(r["pid"], r["host"], r["heartbeat_at"], now):
            r["status"] = "interrupted"
        r["resume"] = f"oa deliver {r['destination']}" if r["status"] in ("interrupted", "stopped") else ""
    return out


def _owner_alive(pid: int | None, host: str | None, heartbeat_at: dt.datetime | None,
                 now: dt.datetime) -> bool:
    """Whether a running run's process still sends it. On this host: its pid is alive and that
    process started before the run's last heartbeat (a process that started later has the pid
    of an owner that died), however old the heartbeat, since opening a channel or a publish may
    take minutes without one. On another host: its heartbeat is within STALE_SECONDS."""
    if heartbeat_at is None:
        return False
    if pid is not None and host == socket.gethostname():
        return _pid_alive(int(pid), heartbeat_at)
    return (now - heartbeat_at).total_seconds() <= STALE_SECONDS


def _pid_alive(pid: int, heartbeat_at: dt.datetime) -> bool:
    """A process that exists, is no zombie (a killed child its parent has not reaped), and
    started no later than the heartbeat its owner wrote (the same clock: the same host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    try:  # after the ")" that ends the command come field 3 (state) ... field 22 (starttime)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state, ticks = fields[0], int(fields[19])  # starttime: clock ticks after boot
    except (OSError, IndexError, ValueError):  # no /proc (not Linux): kill(0) has answered
        return True
    if state in ("Z", "X"):
        return False
    started = _started_at(ticks)
    return started is None or started <= heartbeat_at + PID_START_SLACK


def _started_at(ticks: int) -> dt.datetime | None:
    """A process's start (UTC) from its starttime in clock ticks after boot, or None."""
    try:
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return dt.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), dt.UTC).replace(tzinfo=None)
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def dead_letters(wh: Warehouse, destination: str) -> int:
    wh = wh.state
    with wh.connect() as conn:
        if not wh.table_exists(store.SCHEMA, "delivery_dead_letters", conn):
            return 0
        return int(wh.execute(conn, f"select count(*) from {store.DEAD} where destination = %s and "
                                    "replayed_at is null", [destination])[0][0])
