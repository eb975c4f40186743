"""Building audiences: evaluate, save a version, keep the last N.

A build evaluates many audiences together (``batch_query``: one scan of user_tags and one of
fct_behaviors per layer, a layer being audiences that do not read each other), writes each
audience's members as a new version in ``audiences.audience_members`` and its statistics in
``audiences.audience_versions``, and drops versions past the audience's ``snapshots``. All of it
happens in one transaction: a failure leaves every audience at its previous version.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyarrow as pa
from sqlglot import exp

from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse, WarehouseBusy, qualified
from openaudience.segments.compiler import (
    AUDIENCE_SCHEMA,
    MEMBERS_TABLE,
    UPLOADS_TABLE,
    VERSIONS_TABLE,
    Relations,
    Requirement,
    batch_query,
    limited,
    to_sql,
)
from openaudience.segments.source import Project

MEMBERS = qualified(AUDIENCE_SCHEMA, MEMBERS_TABLE)
VERSIONS = qualified(AUDIENCE_SCHEMA, VERSIONS_TABLE)
UPLOADS = qualified(AUDIENCE_SCHEMA, UPLOADS_TABLE)


@dataclass
class BuildResult:
    audience: str
    version: int
    size: int
    added: int
    removed: int
    dropped: int
    matched: int
    definition_hash: str
    built_at: dt.datetime
    seconds: float = 0.0


@dataclass
class BuildReport:
    results: list[BuildResult] = field(default_factory=list)
    passes: int = 0
    seconds: float = 0.0           # everything, commit included
    evaluate_seconds: float = 0.0  # the evaluation queries alone


def stage_uploads(wh: Warehouse, conn, project: Project, requirements: list[Requirement]) -> None:
    """Load each upload list the build reads once; a list is keyed by its content's digest."""
    by_digest = {u.digest: u for u in project.uploads.values()}
    for req in requirements:
        if req.kind != "upload":
            continue
        if wh.execute(conn, f"select count(*) from {UPLOADS} where upload = %s", [req.name])[0][0]:
            continue
        upload = by_digest[req.name]
        if wh.reader:
            raise UserError(f"the upload list {upload.file} is not in the warehouse snapshot this command "
                            "reads while another process writes; try again when it is done")
        n = len(upload.ids)
        wh.insert_arrow(conn, UPLOADS, pa.table({
            "upload": pa.array([upload.digest] * n), "id_type": pa.array([upload.id_type] * n),
            "id_value": pa.array(upload.ids)}))


def check_inputs(wh: Warehouse, conn, requirements: list[Requirement], building: set[str]) -> None:
    """Every input a query reads exists, so a missing one is an error, not an empty audience."""
    problems = []
    for req in requirements:
        if req.kind == "audience" and req.name not in building:
            with wh.state_connection(conn) as state_conn:
                rows = wh.state.execute(state_conn, f"select version from {VERSIONS} "
                                                    "where audience = %s and kept", [req.name])
            kept = sorted(r[0] for r in rows)
            if not kept:
                problems.append(f"audience {req.name!r} has no built version; build it first "
                                f"(oa audience build {req.name})")
            elif req.detail and int(req.detail) not in kept:
                problems.append(f"audience {req.name!r} keeps versions {kept}, not {req.detail}")
        elif req.kind == "relation":
            schema, table = req.name.split(".")
            if not wh.table_exists(schema, table, conn):
                problems.append(f"{req.name} does not exist yet (behaviour conditions on the events of "
                                "events/*.yml read it, with the events that arrived since the build); "
                                "run `oa build`")
        elif req.kind == "table":
            schema, table = req.name.split(".")
            names = wh.columns(schema, table, conn)
            if not names:
                problems.append(f"table {req.name} does not exist")
                continue
            if names != ["user_unique_id"]:
                problems.append(f"table {req.name} must have exactly one column, user_unique_id; "
                                f"it has {', '.join(names)}")
                continue
            rel = qualified(schema, table)
            total, distinct, nulls = wh.execute(
                conn, f"select count(*), count(distinct user_unique_id), "
                      f"count(*) - count(user_unique_id) from {rel}")[0]
            if nulls or total != distinct:
                problems.append(f"table {req.name}: user_unique_id must be unique and never NULL "
                                f"({nulls} NULL, {total - nulls - distinct} duplicate)")
        elif req.kind in ("ml_scores", "ml_task", "ml_pool"):
            table = {"ml_scores": "repurchase_scores", "ml_task": "recommendations",
                     "ml_pool": "pool_items"}[req.kind]
            exists = wh.table_exists("ml", table, conn)
            column = {"ml_task": "task", "ml_pool": "pool"}.get(req.kind)
            rows = (wh.execute(conn, f"select count(*) from ml.{table}"
                                     + (f" where {column} = %s" if column else ""),
                               [req.name] if column else [])[0][0] if exists else 0)
            if not rows:
                problems.append({"ml_scores": "ml.repurchase_scores is empty; train and score the "
                                              "repurchase model first (oa ml train repurchase)",
                                 "ml_task": f"recommendation task {req.name!r} has not run; run it "
                                            f"first (oa ml recommend {req.name})",
                                 "ml_pool": f"product pool {req.name!r} has not been written to "
                                            f"ml.pool_items; run the recommendation tasks first "
                                            f"(oa ml recommend)"}[req.kind])
        elif req.kind == "aipl_date":
            rows = wh.execute(conn, "select count(*) from " + qualified("marts", "aipl_daily")
                              + " where aipl_model = %s and stat_date = %s",
                              [req.name, dt.date.fromisoformat(req.detail)])
            if not rows[0][0]:
                problems.append(f"aipl_daily has no {req.name} stages on {req.detail}; compute that "
                                f"day with oa aipl backfill --start {req.detail} --end {req.detail}")
    if problems:
        raise UserError("cannot build: " + "; ".join(dict.fromkeys(problems)))


def _pinned(project: Project) -> set[tuple[str, int]]:
    """Versions other audience files name explicitly: kept past `snapshots`."""
    pinned = set()
    for audience in project.audiences.values():
        for leaf in audience.condition().leaves("audience"):
            if leaf.version is not None:
                pinned.add((leaf.name, leaf.version))
    return pinned


def build(project: Project, names: list[str], today: dt.date, *, wh: Warehouse | None = None,
          trigger: str = "manual", batch: bool = True,
          progress: Callable[[str, int, int], None] | None = None) -> BuildReport:
    """Build `names` (in dependency order) as new versions. `batch=False` evaluates each
    audience with its own query (for comparison). `progress(name, done, total)` is called as
    audiences finish."""
    wh = wh or Warehouse()
    relations = Relations()
    started = time.perf_counter()
    names = [n for n in project.order if n in set(names)]
    layers = project.layers(names) if batch else [[n] for n in names]
    report = BuildReport()
    pinned = _pinned(project)
    built_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with wh.connect() as conn, wh.state_connection(conn) as state_conn:
        wh.ensure_schema(conn)
        done: set[str] = set()
        for layer in layers:
            t0 = time.perf_counter()
            audiences = [project.audiences[n] for n in layer]
            relations = state_relations(wh, state_conn, relations)
            query, requirements = batch_query(audiences, project.catalog, today, relations,
                                              project.upload_digests())
            check_inputs(wh, conn, requirements, done)
            stage_uploads(wh, conn, project, requirements)
            # a temporary table: in memory on DuckDB, never logged on PostgreSQL; a scratch
            # Parquet table on Spark
            t1 = time.perf_counter()
            batch_rel = wh.temporary_table_as(conn, "oa_audience_batch",
                                              to_sql(query, wh.engine, pretty=False))
            report.evaluate_seconds += time.perf_counter() - t1
            report.passes += 1
            results = _save_layer(wh, conn, state_conn, project, audiences, batch_rel, today, built_at,
                                  trigger, relations, pinned)
            seconds = (time.perf_counter() - t0) / len(audiences)
            for result in results:
                result.seconds = seconds
                report.results.append(result)
                done.add(result.audience)
                if progress:
                    progress(result.audience, len(report.results), len(names))
            wh.execute(conn, f"drop table if exists {batch_rel}")
    report.seconds = time.perf_counter() - started
    return report


def state_relations(wh: Warehouse, state_conn, relations: Relations) -> Relations:
    """`relations`, with every audience's latest version read from the state store when that is
    not the warehouse (Spark): a query there cannot read the versions table."""
    if wh.state is wh:
        return relations
    rows = wh.state.execute(state_conn, f"select audience, max(version) from {VERSIONS} group by audience")
    return replace(relations, latest_versions=tuple((name, int(v)) for name, v in rows))


def _n(e: exp.Expression) -> exp.Expression:
    """1 when `e` holds, else 0 (a portable count_if)."""
    return exp.Case().when(e, exp.Literal.number(1)).else_(exp.Literal.number(0))


def _save_layer(wh: Warehouse, conn, state_conn, project: Project, audiences: list, batch_rel: str,
                today: dt.date, built_at: dt.datetime, trigger: str, relations: Relations,
                pinned: set[tuple[str, int]]) -> list[BuildResult]:
    """Write a new version of every audience of one evaluated layer, with a fixed number of
    statements whatever the number of audiences: one scan for the counts, one insert of all
    members, one comparison with the previous versions. Members go to the warehouse, versions to
    the operational store (the same one except on Spark, where members are written first)."""
    batch_table = exp.to_table(batch_rel.replace('"', ""))

    def t() -> exp.Expression:
        return exp.alias_(batch_table.copy(), "t", table=True)

    def flag(i: int) -> exp.Column:
        return exp.column(f"m{i}", table="t", quoted=True)

    def id_col(a) -> exp.Column:
        return exp.column(a.id_type, table="t", quoted=True)

    counts = []
    for i, a in enumerate(audiences):
        has_id = exp.not_(exp.Is(this=id_col(a), expression=exp.Null()))
        counts += [exp.func("SUM", _n(flag(i))), exp.func("SUM", _n(exp.and_(flag(i), has_id)))]
    row = wh.execute(conn, to_sql(exp.select(*counts).from_(t()), wh.engine, pretty=False))[0]
    matched = [int(row[2 * i] or 0) for i in range(len(audiences))]
    with_id = [int(row[2 * i + 1] or 0) for i in range(len(audiences))]

    previous = dict(wh.state.execute(state_conn, f"select audience, max(version) from {VERSIONS} "
                                                 "group by audience"))
    version = {a.name: int(previous.get(a.name) or 0) + 1 for a in audiences}
    if wh.engine == "spark":  # what a build that died before its version rows left behind
        for a in audiences:
            wh.delete_partition(conn, MEMBERS, {"audience": a.name, "version": version[a.name]})

    parts = []
    for i, a in enumerate(audiences):
        chosen = exp.select(exp.Literal.string(a.name).as_("audience"),
                            exp.Literal.number(version[a.name]).as_("version"),
                            exp.Literal.string(a.id_type).as_("id_type"),
                            exp.column("one_id", table="t", quoted=True).as_("one_id"),
                            exp.cast(id_col(a), "TEXT").as_("id_value")).from_(t()).where(flag(i))
        if a.limit:
            chosen = limited(chosen, a.limit, id_col(a)).subquery(f"l{i}")
            chosen = exp.select(exp.Star()).from_(chosen)
        else:
            chosen = chosen.where(exp.not_(exp.Is(this=id_col(a), expression=exp.Null())))
        parts.append(chosen)
    union = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    wh.execute(conn, f"insert into {MEMBERS} (audience, version, id_type, one_id, id_value) "
                     f"{to_sql(union, wh.engine, pretty=False)}")

    changes = _changes(wh, conn, [(a.name, version[a.name], previous.get(a.name)) for a in audiences])
    results = []
    for i, a in enumerate(audiences):
        size = min(with_id[i], a.limit.size) if a.limit else with_id[i]
        added, removed = changes.get(a.name, (size, 0))
        sql = to_sql(project.compile(a.name, today, relations).query, wh.engine)
        definition_hash = project.definition_hash(a.name)
        wh.state.execute(state_conn, f"insert into {VERSIONS} (audience, version, definition_hash, "
                                     "built_at, as_of, id_type, size, added, removed, dropped, matched, "
                                     "trigger, kept, compiled_sql) values "
                                     "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true, %s)",
                         [a.name, version[a.name], definition_hash, built_at, today, a.id_type, size, added,
                          removed, matched[i] - with_id[i], matched[i], trigger, sql])
        _prune(wh, conn, state_conn, a, {v for (n, v) in pinned if n == a.name})
        results.append(BuildResult(audience=a.name, version=version[a.name], size=size, added=added,
                                   removed=removed, dropped=matched[i] - with_id[i], matched=matched[i],
                                   definition_hash=definition_hash, built_at=built_at))
    return results


def _changes(wh: Warehouse, conn, rows: list[tuple[str, int, int | None]]) -> dict[str, tuple[int, int]]:
    """(added, removed) one_ids of each new version against its previous one, in one query."""
    pairs = [(name, new, old) for name, new, old in rows if old]
    if not pairs:
        return {}

    def versions_of(index: int) -> exp.Expression:
        return exp.or_(*[exp.and_(exp.column("audience").eq(exp.Literal.string(name)),
                                  exp.column("version").eq(exp.Literal.number(v[index])))
                         for name, *v in pairs])

    side = "select audience, one_id from {m} where {w}"
    new = side.format(m=MEMBERS, w=versions_of(0).sql(dialect=wh.engine))
    old = side.format(m=MEMBERS, w=versions_of(1).sql(dialect=wh.engine))
    rows = wh.execute(conn, f"""
        select coalesce(n.audience, o.audience),
               sum(case when o.one_id is null then 1 else 0 end),
               sum(case when n.one_id is null then 1 else 0 end)
        from ({new}) as n full outer join ({old}) as o
          on o.audience = n.audience and o.one_id = n.one_id
        group by coalesce(n.audience, o.audience)""")
    found = {name: (int(a), int(r)) for name, a, r in rows}
    return {name: found.get(name, (0, 0)) for name, _, _ in pairs}


def _prune(wh: Warehouse, conn, state_conn, audience, pinned_versions: set[int]) -> None:
    """Past `snapshots`, a version's members go; its statistics stay for the size history."""
    kept = [r[0] for r in wh.state.execute(state_conn, f"select version from {VERSIONS} where audience = %s "
                                                       "and kept order by version desc", [audience.name])]
    for v in kept[audience.snapshots:]:
        if v not in pinned_versions:
            wh.state.execute(state_conn, f"update {VERSIONS} set kept = false where audience = %s "
                                         "and version = %s", [audience.name, v])
            wh.delete_partition(conn, MEMBERS, {"audience": audience.name, "version": v})


# -- reading built audiences -------------------------------------------------------------------
def versions(wh: Warehouse, name: str | None = None, kept_only: bool = True) -> list[dict]:
    """Versions, newest first (all audiences, or one); with kept_only those whose members are
    still held, otherwise every build's statistics."""
    wh = wh.state
    with wh.connect() as conn:
        if not wh.table_exists(AUDIENCE_SCHEMA, VERSIONS_TABLE, conn):
            return []  # nothing built yet
        clauses = (["audience = %s"] if name else []) + (["kept"] if kept_only else [])
        where = f"where {' and '.join(clauses)}" if clauses else ""
        rows = wh.execute(conn, f"select audience, version, definition_hash, built_at, as_of, id_type, "
                                f"size, added, removed, dropped, matched, trigger, kept from {VERSIONS} "
                                f"{where} order by audience, version desc", [name] if name else [])
    keys = ("audience", "version", "definition_hash", "built_at", "as_of", "id_type", "size",
            "added", "removed", "dropped", "matched", "trigger", "kept")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def latest(wh: Warehouse, name: str) -> dict | None:
    rows = versions(wh, name)
    return rows[0] if rows else None


def _stage_for_reader(wh: Warehouse, project: Project, requirements: list[Requirement]) -> None:
    """A reading command whose audience reads an upload list not staged yet stages it first, if
    it can have the warehouse now; while another process writes it is refused instead of waiting."""
    uploads = [req for req in requirements if req.kind == "upload"]
    if not uploads:
        return
    with wh.connect() as conn:
        staged = (wh.table_exists(AUDIENCE_SCHEMA, UPLOADS_TABLE, conn) and {
            r[0] for r in wh.execute(conn, f"select distinct upload from {UPLOADS}")})
    missing = [req for req in uploads if not staged or req.name not in staged]
    if not missing:
        return
    writer = Warehouse(replace(wh.settings, lock_wait=0))  # a small write: no queueing for it
    try:
        with writer.connect() as conn:
            writer.ensure_schema(conn)
            stage_uploads(writer, conn, project, missing)
    except WarehouseBusy:
        by_digest = {u.digest: u.file for u in project.uploads.values()}
        files = ", ".join(sorted(by_digest.get(req.name, req.name) for req in missing))
        raise UserError(f"the upload list {files} is not in the warehouse yet, and another process "
                        "writes it now; try again when it is done (or `oa audience build` it)") from None


def ready_sql(wh: Warehouse, project: Project, name: str, today: dt.date) -> str:
    """An audience's live query for this warehouse, its inputs checked and its uploads loaded:
    for counting, previewing and diffing without saving a version."""
    relations = Relations()
    if wh.state is not wh:
        with wh.state.connect() as state_conn:
            relations = state_relations(wh, state_conn, relations)
    compiled = project.compile(name, today, relations)
    if wh.reader:  # a reader writes nothing: a short-lived writer stages what it lacks
        _stage_for_reader(wh, project, compiled.requirements)
        with wh.connect() as conn:
            check_inputs(wh, conn, compiled.requirements, set())
    else:
        with wh.connect() as conn:
            wh.ensure_schema(conn)
            check_inputs(wh, conn, compiled.requirements, set())
            stage_uploads(wh, conn, project, compiled.requirements)
    return to_sql(compiled.query, wh.engine, pretty=False)


def write_version(wh: Warehouse, audience: str, id_type: str, members: pa.Table,
                  as_of: dt.date, trigger: str = "import") -> int:
    """Save `members` (columns one_id, id_value) as the audience's next version, as a build
    would, without evaluating anything: for benchmarks and tests of what reads versions."""
    with wh.connect() as conn, wh.state_connection(conn) as state_conn:
        wh.ensure_schema(conn)
        v = int(wh.state.execute(state_conn, f"select coalesce(max(version), 0) from {VERSIONS} "
                                             "where audience = %s", [audience])[0][0]) + 1
        n = members.num_rows
        if wh.engine == "spark":
            wh.delete_partition(conn, MEMBERS, {"audience": audience, "version": v})
        wh.state.execute(state_conn, f"insert into {VERSIONS} (audience, version, definition_hash, "
                                     "built_at, as_of, id_type, size, added, removed, dropped, matched, "
                                     "trigger, kept, compiled_sql) "
                                     "values (%s, %s, 'imported', %s, %s, %s, %s, 0, 0, 0, %s, %s, true, '')",
                         [audience, v, dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0), as_of,
                          id_type, n, n, trigger])
        wh.insert_arrow(conn, MEMBERS, pa.table({
            "audience": pa.array([audience] * n, pa.string()), "version": pa.array([v] * n, pa.int64()),
            "one_id": members.column("one_id").cast(pa.string()), "id_type": pa.array([id_type] * n),
            "id_value": members.column("id_value").cast(pa.string())}))
    return v
