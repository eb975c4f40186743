"""`ensure_schema`: the one place that creates and upgrades the tables OpenAudience writes.

A warehouse records the migrations it has had in `oa_meta.schema_migrations` (version, name,
applied_at). `ensure_schema` applies the missing ones in order, in the caller's transaction, and
then checks that every declared table has every declared column, so a table that drifted (edited
by hand, or made by a newer release) is reported by name instead of failing mid-command.

Commands that write call it once through `Warehouse.ensure_schema(conn)` (memoised per handle);
read paths never do: a reader of a warehouse that lacks a table is told to build it.

Migrations are written to be safe on any earlier state: the baseline creates each declared table
if it is missing (so a new warehouse gets the current shapes at once), and a later migration that
adds a column adds it only where it is missing. A migration is never edited once released; a new
change is a new entry at the end of `MIGRATIONS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openaudience.core.errors import ConfigError
from openaudience.core.schema import operational as op
from openaudience.core.schema.raw import RAW_SCHEMA, RAW_TABLES
from openaudience.core.sql import qident, qualified

META_SCHEMA = "oa_meta"
MIGRATIONS_TABLE = qualified(META_SCHEMA, "schema_migrations")
# PostgreSQL: concurrent commands upgrade one at a time (DuckDB has one writer anyway)
_PG_LOCK_KEY = 0x6F615F736368  # "oa_sch"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Any, Any], None]  # (warehouse, connection)


def create_table_sql(wh, table: op.Table) -> str:
    cols = []
    for c in table.columns:
        col = f"{qident(c.name)} {wh.sql_type(c.type)}"
        if not c.nullable:
            col += " not null"
        if c.default is not None:
            col += f" default {c.default}"
        cols.append(col)
    if table.primary_key:
        cols.append(f"primary key ({', '.join(qident(c) for c in table.primary_key)})")
    body = ",\n    ".join(cols)
    return f"create table if not exists {table.relation} (\n    {body}\n)"


def _create_missing(wh, conn, tables) -> None:
    for schema in dict.fromkeys(t.schema for t in tables):
        wh.execute(conn, f"create schema if not exists {qident(schema)}")
    for table in tables:
        wh.execute(conn, create_table_sql(wh, table))
        if wh.engine == "postgres":
            for index in table.indexes:
                cols = ", ".join(qident(c) for c in index.columns)
                wh.execute(conn, f"create index if not exists {qident(index.name)} "
                                 f"on {table.relation} ({cols})")


def add_missing_columns(wh, conn, table: op.Table, names: tuple[str, ...]) -> None:
    """Add the named declared columns where a table lacks them. The catalogue is asked first: on
    PostgreSQL even `add column if not exists` takes the table's exclusive lock."""
    have = table_columns(wh, conn, table.schema, table.name)
    for column in table.columns:
        if column.name in names and column.name not in have:
            # an added column is nullable whatever the declaration says: old rows have no value
            default = f" default {column.default}" if column.default is not None else ""
            wh.execute(conn, f"alter table {table.relation} add column if not exists "
                             f"{qident(column.name)} {wh.sql_type(column.type)}{default}")


def _baseline(wh, conn) -> None:
    """Release 0.1's tables: the raw contracts, and every operational table, created where missing.
    Its delivery runs gained their owner (pid, host, heartbeat_at) and its spool offsets
    `bytes_read` during 0.1; a warehouse from before gets them here."""
    wh.execute(conn, f"create schema if not exists {qident(RAW_SCHEMA)}")
    for table in RAW_TABLES.values():
        wh.execute(conn, wh.create_table_sql(qualified(RAW_SCHEMA, table.name), table))
    _create_missing(wh, conn, op.TABLES)
    add_missing_columns(wh, conn, op.DELIVERY_RUNS, ("pid", "host", "heartbeat_at"))
    add_missing_columns(wh, conn, op.RECEIPT_SPOOL_OFFSETS, ("bytes_read",))


def _journeys(wh, conn) -> None:
    """The journey state: journeys, their cycles, people's positions, entries and actions."""
    _create_missing(wh, conn, op.JOURNEY_TABLES)


def _events(wh, conn) -> None:
    """Real-time events: the events and identity messages the collector took, and the log offset."""
    _create_missing(wh, conn, op.EVENT_TABLES)


def _event_journeys(wh, conn) -> None:
    """Event-triggered journeys: each entry with its event, and the per-person counts of min_count."""
    _create_missing(wh, conn, op.EVENT_JOURNEY_TABLES)


def _events_beside_spark(wh, conn) -> None:
    """Event journeys beside a Spark warehouse: the events' people as Spark resolved them, and
    the events and links findable by when they were ingested (what goes to Spark between builds)."""
    _create_missing(wh, conn, (op.EVENTS, op.EVENT_IDENTITIES, op.EVENT_PEOPLE))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: the raw contracts and the operational tables of release 0.1", _baseline),
    Migration(2, "journeys: the state of automated marketing journeys", _journeys),
    Migration(3, "events: real-time events and identity messages", _events),
    Migration(4, "event journeys: entries with their events, min_count counts", _event_journeys),
    Migration(5, "events beside Spark: the events' people, the events by when they were ingested",
              _events_beside_spark),
)
LATEST = MIGRATIONS[-1].version


def table_columns(wh, conn, schema: str, table: str) -> set[str]:
    rows = wh.execute(conn, "select column_name from information_schema.columns "
                            "where table_schema = %s and table_name = %s", [schema, table])
    return {r[0] for r in rows}


def applied_version(wh, conn) -> int:
    """The newest migration this warehouse has had; 0 when it has none (new, or from release 0.1)."""
    if not table_columns(wh, conn, META_SCHEMA, "schema_migrations"):
        return 0
    return int(wh.execute(conn, f"select coalesce(max(version), 0) from {MIGRATIONS_TABLE}")[0][0])


def ensure_schema(wh, conn, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """`upgrade`, returning the migration versions applied (empty when it was current)."""
    return upgrade(wh, conn, migrations)[0]


def upgrade(wh, conn, migrations: tuple[Migration, ...] = MIGRATIONS) -> tuple[list[int], bool]:
    """Apply the migrations this warehouse lacks, make any declared table that is missing (a
    table dropped by hand is made again, empty), then check every declared column. Returns the
    versions applied and whether anything was changed.

    A current warehouse costs two catalogue queries and takes no lock, so concurrent writers on
    PostgreSQL never queue behind each other here; an upgrade takes an advisory lock (released
    with the caller's transaction) and looks again, so two processes upgrade once."""
    latest = migrations[-1].version
    current = applied_version(wh, conn)
    if current > latest:
        raise ConfigError(f"the warehouse has schema version {current}, newer than this release knows "
                          f"({latest}): upgrade OpenAudience, or point OA_WAREHOUSE at another warehouse")
    found = _found_columns(wh, conn)
    if current == latest and not any(_missing_tables(found)):
        _check_columns(found)
        return [], False
    if wh.engine == "postgres":
        wh.execute(conn, "select pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
        current = applied_version(wh, conn)
    applied = []
    if current < latest:
        wh.execute(conn, f"create schema if not exists {qident(META_SCHEMA)}")
        wh.execute(conn, f"create table if not exists {MIGRATIONS_TABLE} (version {wh.sql_type('integer')} "
                         f"not null primary key, name {wh.sql_type('text')} not null, "
                         f"applied_at {wh.sql_type('timestamp')} not null)")
        for migration in migrations:
            if migration.version <= current:
                continue
            migration.apply(wh, conn)
            wh.execute(conn, f"insert into {MIGRATIONS_TABLE} (version, name, applied_at) "
                             "values (%s, %s, %s)",
                       [migration.version, migration.name, dt.datetime.now(dt.UTC).replace(tzinfo=None)])
            applied.append(migration.version)
    found = _found_columns(wh, conn)
    missing_raw, missing = _missing_tables(found)
    if missing_raw or missing:  # dropped by hand since: made again, empty
        for table in missing_raw:
            wh.execute(conn, f"create schema if not exists {qident(RAW_SCHEMA)}")
            wh.execute(conn, wh.create_table_sql(qualified(RAW_SCHEMA, table.name), table))
        _create_missing(wh, conn, missing)
        found = _found_columns(wh, conn)
    _check_columns(found)
    return applied, bool(applied or missing_raw or missing)


def _found_columns(wh, conn) -> dict[tuple[str, str], set[str]]:
    """(schema, table) -> its columns, for the schemas the declared tables live in."""
    schemas = sorted({t.schema for t in op.TABLES} | {RAW_SCHEMA})
    marks = ", ".join(["%s"] * len(schemas))
    found: dict[tuple[str, str], set[str]] = {}
    for schema, name, column in wh.execute(
            conn, "select table_schema, table_name, column_name from information_schema.columns "
                  f"where table_schema in ({marks})", schemas):
        found.setdefault((schema, name), set()).add(column)
    return found


def _missing_tables(found) -> tuple[list, list[op.Table]]:
    """The raw contract tables and the declared operational tables the warehouse lacks."""
    raw = [t for t in RAW_TABLES.values() if (RAW_SCHEMA, t.name) not in found]
    return raw, [t for t in op.TABLES if (t.schema, t.name) not in found]


def _check_columns(found) -> None:
    """Every declared table has every declared column; otherwise say which and what to do."""
    problems = []
    for table in op.TABLES:
        missing = [c for c in table.column_names if c not in found.get((table.schema, table.name), set())]
        if missing:
            problems.append(f"{table.schema}.{table.name} lacks {', '.join(missing)}")
    if problems:
        raise ConfigError("the warehouse's operational tables differ from this release's: "
                          + "; ".join(problems) + ". They were changed outside OpenAudience: restore them "
                          "from a backup, or drop them to have them made again, empty (their history is "
                          "lost)")
