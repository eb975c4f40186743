"""The tables that live on a Spark warehouse, beside dbt's models.

A Spark warehouse has no transactions, so the operational tables (versions, deliveries,
journeys, the migrations) live in the state store (`Settings.state`, made by `migrations`). On
Spark live what the data path reads and writes in bulk:

- the raw contracts, the load history and the quarantine (the loader stages and swaps);
- audience members, partitioned by audience and version: a new version is a new partition, a
  pruned one a dropped partition, and the version's row in the state store is written last, so
  a reader never sees members without their version;
- uploaded id lists and the models' outputs (scores, recommendations, pools), which audiences
  join;
- copies of the state tables dbt reads as sources (delivery runs, log and receipts; the
  collector's events, identity links and definitions), refreshed from the state store before
  each build (`mirror_sources`).

Tables are Parquet (docs/scaling.md says why); created when missing, like the baseline
migration, and checked for their columns.
"""

from __future__ import annotations

from typing import Any

from openaudience.core.errors import ConfigError
from openaudience.core.schema import operational as op
from openaudience.core.schema.raw import RAW_SCHEMA, RAW_TABLES
from openaudience.core.sql import qident, qualified

# (table, partition columns)
SPARK_TABLES: tuple[tuple[op.Table, tuple[str, ...]], ...] = (
    (op.LOAD_HISTORY, ()),
    (op.QUARANTINE, ()),
    (op.AUDIENCE_MEMBERS, ("audience", "version")),
    (op.AUDIENCE_UPLOADS, ()),
    (op.REPURCHASE_SCORES, ()),
    (op.RECOMMENDATIONS, ()),
    (op.POOL_ITEMS, ()),
)
MIRRORED: tuple[op.Table, ...] = (
    op.DELIVERY_RUNS, op.DELIVERY_LOG, op.DELIVERY_RECEIPTS,
    op.EVENTS, op.EVENT_IDENTITIES, op.EVENT_DEFINITIONS,
)


def _ddl(wh, table: op.Table, partitioned_by: tuple[str, ...] = ()) -> str:
    # partition columns go last, as Spark stores them
    columns = [c for c in table.columns if c.name not in partitioned_by] + \
              [c for p in partitioned_by for c in table.columns if c.name == p]
    body = ", ".join(f"{qident(c.name)} {wh.sql_type(c.type)}" for c in columns)
    return f"create table if not exists {table.relation} ({body}){wh.table_format(partitioned_by)}"


def ensure_spark_tables(wh, conn) -> None:
    """Create the Spark-side tables that are missing, then check the columns of all of them."""
    schemas = {RAW_SCHEMA} | {t.schema for t, _ in SPARK_TABLES} | {t.schema for t in MIRRORED}
    for schema in sorted(schemas):
        wh.execute(conn, f"create database if not exists {qident(schema)}")
    for table in RAW_TABLES.values():
        if not wh.table_exists(RAW_SCHEMA, table.name):
            wh.execute(conn, wh.create_table_sql(qualified(RAW_SCHEMA, table.name), table,
                                                 kind="table if not exists"))
    for table, parts in SPARK_TABLES:
        if not wh.table_exists(table.schema, table.name):
            wh.execute(conn, _ddl(wh, table, parts))
    for table in MIRRORED:
        if not wh.table_exists(table.schema, table.name):
            wh.execute(conn, _ddl(wh, table))
    problems = []
    for table in [t for t, _ in SPARK_TABLES] + list(MIRRORED):
        have = {f.name for f in conn.spark.table(table.relation.replace('"', "")).schema.fields}
        missing = [c for c in table.column_names if c not in have]
        if missing:
            problems.append(f"{table.schema}.{table.name} lacks {', '.join(missing)}")
    if problems:
        raise ConfigError("the Spark warehouse's tables differ from this release's: " + "; ".join(problems)
                          + ". Drop them to have them made again, empty")


def mirror_sources(wh, conn: Any, batch_rows: int = 200_000) -> dict[str, int]:
    """Copy the state tables dbt reads as sources to Spark, whole (insert overwrite: a build sees
    the state as it was when this ran). Returns rows copied per table."""
    copied = {}
    for table in MIRRORED:
        cols = ", ".join(qident(c) for c in table.column_names)
        stage = f"{table.schema}.{table.name}__mirror"
        wh.execute(conn, f"drop table if exists {stage}")
        wh.execute(conn, _ddl(wh, op.Table(table.schema, table.name + "__mirror", table.columns, table.doc)))
        rows = 0
        with wh.state.connect() as state_conn:
            sql = f"select {cols} from {table.relation}"
            for batch in wh.state.arrow_batches(state_conn, sql, batch_rows=batch_rows):
                wh.insert_arrow(conn, stage, batch)
                rows += batch.num_rows
        wh.execute(conn, f"insert overwrite table {table.relation} select {cols} from {stage}")
        wh.execute(conn, f"drop table {stage}")
        copied[f"{table.schema}.{table.name}"] = rows
    return copied


# -- the collector's events between builds (event-triggered journeys beside Spark) ----------------
LIVE_EVENTS = qualified("marts", "fct_events_live")
CLOCK_MARGIN_SECONDS = 600
"""Rows ingested up to this long before the newest row Spark holds are sent again (and kept out
when Spark has them): two machines that ingest may disagree a little about the time."""
_KEYS = ((op.EVENT_IDENTITIES, ("message_id", "id_type", "id_value")), (op.EVENTS, ("event_id",)))


def send_new_events(wh, conn: Any, state_conn: Any) -> dict[str, int]:
    """Between builds: the events and identity links the state store took since Spark's copies
    were last brought up to date, appended to those copies, each row once, so that Spark's
    marts.fct_events_live resolves their people with the identities of the last build. `conn` is
    Spark's; `state_conn` the state store's, in its transaction (what it took a moment ago, not
    committed yet, goes too: a rollback leaves rows on Spark that the retry, which stores them
    again, finds there). Returns the rows sent per table."""
    import datetime as dt

    sent = {}
    for table, key in _KEYS:
        cols = ", ".join(qident(c) for c in table.column_names)
        newest = wh.execute(conn, f"select max(ingested_at) from {table.relation}")[0][0]
        since = None if newest is None else newest - dt.timedelta(seconds=CLOCK_MARGIN_SECONDS)
        where, params = ("where ingested_at >= %s", [since]) if since is not None else ("", [])
        batches = wh.state.arrow_batches(state_conn, f"select {cols} from {table.relation} {where}", params)
        match = " and ".join(f"t.{qident(k)} = s.{qident(k)}" for k in key)
        held = (f"(select {', '.join(qident(k) for k in key)} from {table.relation} "
                f"where ingested_at >= %s)" if since is not None else table.relation)
        picked = ", ".join(f"s.{qident(c)}" for c in table.column_names)
        with conn.view("oa_new_rows", batches, table.arrow_schema()):
            new = f"from oa_new_rows s left anti join {held} t on {match}"
            n = int(wh.execute(conn, f"select count(*) {new}", params)[0][0])
            if n:
                wh.execute(conn, f"insert into {table.relation} ({cols}) select {picked} {new}", params)
        sent[f"{table.schema}.{table.name}"] = n
    return sent


def resolve_event_people(wh, conn: Any, state_conn: Any, event_ids: list[str], now) -> int:
    """The people of `event_ids` (sent to Spark already) as Spark's marts.fct_events_live resolves
    them, written to the state store's events.event_people (null: nobody known yet). Returns the
    events whose person is known."""
    import pyarrow as pa

    ids = pa.table({"event_id": pa.array(event_ids, pa.string())})
    return _pull_people(wh, conn, state_conn, [ids], now)


def refresh_event_people(wh, conn: Any) -> int:
    """After a build: the people of the events in events.event_people resolved again (identities
    merge, an unknown customerId becomes known), as they would be in the view the journeys read
    on DuckDB and PostgreSQL. Returns the events whose person changed."""
    import datetime as dt

    state = wh.state
    if not wh.table_exists("marts", "fct_events_live"):
        return 0
    with state.connect() as state_conn:
        if not state.table_exists(op.EVENT_PEOPLE.schema, op.EVENT_PEOPLE.name, state_conn) or \
                not state.execute(state_conn, f"select 1 from {op.EVENT_PEOPLE.relation} limit 1"):
            return 0
        batches = state.arrow_batches(state_conn, f"select event_id from {op.EVENT_PEOPLE.relation}")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        return _pull_people(wh, conn, state_conn, batches, now, changed_only=True)


def _pull_people(wh, conn: Any, state_conn: Any, ids, now, changed_only: bool = False) -> int:
    import pyarrow as pa

    state = wh.state
    people = op.EVENT_PEOPLE.relation
    with conn.view("oa_event_ids", ids, pa.schema([("event_id", pa.string())])):
        state.pull(state_conn, "oa_event_people", [("event_id", "text"), ("one_id", "text")], conn,
                   f"select i.event_id, min(e.one_id) as one_id from oa_event_ids i "
                   f"left join {LIVE_EVENTS} e on e.event_id = i.event_id group by i.event_id")
    if changed_only:
        n = int(state.execute(state_conn, f"select count(*) from oa_event_people r join {people} p "
                                          "on p.event_id = r.event_id "
                                          "where p.one_id is distinct from r.one_id")[0][0])
        if n:
            state.execute(state_conn, f"update {people} as p set one_id = r.one_id, resolved_at = %s "
                                      "from oa_event_people r where r.event_id = p.event_id "
                                      "and p.one_id is distinct from r.one_id", [now])
    else:
        state.execute(state_conn, f"insert into {people} (event_id, one_id, resolved_at) "
                                  "select event_id, one_id, %s from oa_event_people "
                                  "on conflict (event_id) do update set one_id = excluded.one_id, "
                                  "resolved_at = excluded.resolved_at", [now])
        n = int(state.execute(state_conn, "select count(one_id) from oa_event_people")[0][0])
    state.execute(state_conn, "drop table oa_event_people")
    return n
