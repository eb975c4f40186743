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
