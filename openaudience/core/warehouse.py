"""Warehouse access for the Python side (loading, checks, status): DuckDB or PostgreSQL.

dbt owns the models; this module only creates and fills the raw layer and reads results.

Connections are short-lived because an embedded DuckDB file admits one writing process at a
time. Processes agree on it through the lock file of `openaudience.core.locks`: a writer waits for
it with a message naming the holder (``OA_LOCK_WAIT``; ``oa --wait`` waits as long as it
takes); a reader (``Warehouse(..., reader=True)``) does not wait but reads the snapshot the last
writing command published (``publish_snapshot``). See docs/architecture.md, "Concurrent use".
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from openaudience.core import locks
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.locks import WarehouseBusy
from openaudience.core.schema.raw import RAW_SCHEMA, RawTable
from openaudience.core.settings import Settings, load_settings
from openaudience.core.sql import qident, qualified

_SQL_TYPES = {
    "duckdb": {"text": "VARCHAR", "integer": "BIGINT", "double": "DOUBLE", "date": "DATE",
               "timestamp": "TIMESTAMP", "decimal": "DECIMAL(18,2)",  # schema/raw.py MONEY_*
               "boolean": "BOOLEAN"},
    "postgres": {"text": "TEXT", "integer": "BIGINT", "double": "DOUBLE PRECISION",
                 "date": "DATE", "timestamp": "TIMESTAMP", "decimal": "NUMERIC(18,2)",
                 "boolean": "BOOLEAN"},
    "spark": {"text": "STRING", "integer": "BIGINT", "double": "DOUBLE", "date": "DATE",
              "timestamp": "TIMESTAMP", "decimal": "DECIMAL(18,2)", "boolean": "BOOLEAN"},
}

_LOCK_CONFLICT = "Could not set lock"


class Warehouse:
    """A thin handle on the configured warehouse."""

    def __init__(self, settings: Settings | None = None, reader: bool = False) -> None:
        """`reader`: this handle only reads; on DuckDB it opens the file read-only and, while
        another process writes, reads the published snapshot instead of waiting."""
        self.settings = settings or load_settings()
        self.engine = self.settings.target
        self.reader = reader
        self._schema_ensured = False
        self._read_from: str | None = None  # "live" or "snapshot": one command reads one of them
        self._state: Warehouse | None = None
        self._beside: Warehouse | None = None

    @property
    def state(self) -> Warehouse:
        """The handle on the operational tables (deliveries, journeys, versions, the schema's
        migrations): this warehouse on DuckDB and PostgreSQL; beside a Spark warehouse, the
        store with transactions that OA_STATE_TARGET names."""
        if self.engine != "spark":
            return self
        if self._state is None:
            self._state = Warehouse(self.settings.state, reader=self.reader)
            self._state._beside = self
        return self._state

    @property
    def beside(self) -> Warehouse | None:
        """For the state store beside a Spark warehouse, that warehouse; else None."""
        if self.settings.beside != "spark":
            return None
        if self._beside is None:
            from dataclasses import replace

            self._beside = Warehouse(replace(self.settings, target="spark", beside=""), reader=self.reader)
        return self._beside

    @contextmanager
    def state_connection(self, conn: Any) -> Iterator[Any]:
        """A connection to the operational store inside a transaction: `conn` itself (already
        in one) when the warehouse keeps them; else one of the state store's own."""
        if self.state is self:
            yield conn
            return
        with self.state.connect() as state_conn:
            yield state_conn

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A DB-API connection inside one transaction: committed on success, rolled back on error."""
        with self.session(read_only) as conn, self.transaction(conn):
            yield conn

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Any]:
        """A connection for work in several transactions, each opened with `transaction`."""
        if self.engine == "duckdb":
            with self._duckdb(read_only or self.reader) as conn:
                yield conn
            return
        if self.engine == "spark":
            from openaudience.core import spark

            yield spark.SparkConnection(spark.session(self.settings))
            return
        conn = self._open_pg()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _duckdb(self, read_only: bool) -> Iterator[Any]:
        """The DuckDB file under our lock: exclusive to write; shared to read, or the snapshot
        while another process writes."""
        path, settings = self.settings.duckdb_path, self.settings
        if read_only and not path.exists():
            raise UserError(f"there is no warehouse at {path} yet: run `make demo`, or load data with "
                            "`oa load TABLE FILE` and build it with `oa build`")
        if not read_only:
            with locks.exclusive(path, settings.lock_wait):
                conn = self._connect(path, read_only=False)
                locks.note_write()
                try:
                    yield conn
                finally:
                    conn.close()
            return
        if locks.holds(path):  # this process writes it: DuckDB allows one configuration per file
            with self._duckdb(read_only=False) as conn:
                yield conn
            return
        snapshot = settings.snapshot_path
        if self._read_from == "snapshot":  # stay on it: a mix of two states could disagree
            conn = self._read_snapshot(snapshot, None)
            try:
                yield conn
            finally:
                conn.close()
            return
        # a handle that read the live file waits for a writer rather than switch to an older state
        fallback = settings.read_snapshot and snapshot.exists() and self._read_from is None
        with locks.shared(path, settings.lock_wait, fallback) as writer:
            if writer is None:
                conn = self._connect(path, read_only=True, snapshot=snapshot if fallback else None)
            else:
                conn = self._read_snapshot(snapshot, writer)
            self._read_from = "snapshot" if writer is not None or self._read_from == "snapshot" else "live"
            try:
                yield conn
            finally:
                conn.close()

    def _config(self) -> dict[str, Any]:
        # the same budget dbt gets (profiles.yml); big loads spill to disk past it. Passed as
        # configuration, never formatted into SQL.
        return {"memory_limit": self.settings.duckdb_memory_limit, "preserve_insertion_order": False}

    def _read_snapshot(self, snapshot, writer: str | None) -> Any:
        """The read snapshot; `writer` (who holds the live file) is named in a note, once."""
        import duckdb

        if writer is not None:
            at = dt.datetime.fromtimestamp(snapshot.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
            locks.say(f"note: the warehouse is in use by {writer}; reading its snapshot of {at}")
        writer = writer or "another process"
        try:
            return duckdb.connect(str(snapshot), read_only=True, config=self._config())
        except duckdb.Error as exc:
            raise UserError(f"the warehouse is in use by {writer} and its snapshot {snapshot} cannot be "
                            f"read ({str(exc).splitlines()[0]}); try again when it is done") from None

    def _connect(self, path, read_only: bool, snapshot=None) -> Any:
        """duckdb.connect, waiting while a process that does not take our lock file holds the
        file (a DuckDB shell, a notebook); a reader then reads the snapshot if there is one."""
        import duckdb

        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only, config=self._config())
            except duckdb.IOException as exc:
                if _LOCK_CONFLICT not in str(exc):
                    first = str(exc).splitlines()[0]
                    raise UserError(f"the warehouse file {path} cannot be opened ({first}); "
                                    "check OA_DUCKDB_PATH") from None
                holder = locks.holder_from_duckdb(str(exc))
            except duckdb.Error as exc:
                raise ConfigError(f"the warehouse file {path} cannot be opened: {str(exc).splitlines()[0]}; "
                                  "check OA_DUCKDB_PATH and OA_DUCKDB_MEMORY_LIMIT") from None
            if snapshot is not None:
                self._read_from = "snapshot"
                return self._read_snapshot(snapshot, holder)
            waited, limit = time.monotonic() - started, self.settings.lock_wait
            if limit is not None and waited >= limit:
                raise WarehouseBusy(f"the warehouse {path} is in use by {holder}; wait for it to finish, "
                                    "or rerun with --wait to queue behind it")
            locks.say(f"waiting for the warehouse: it is in use by {holder} (Ctrl-C to stop)")
            time.sleep(locks.POLL_S)

    def _open_pg(self) -> Any:
        import psycopg2

        try:
            return psycopg2.connect(self.settings.pg_dsn(), connect_timeout=10)
        except psycopg2.OperationalError as exc:
            reason = (str(exc).strip().splitlines() or ["no answer"])[-1]
            where = self.settings.describe().removeprefix("postgres ")
            raise ConfigError(f"cannot connect to PostgreSQL at {where}: {reason}; check OA_PG_DSN "
                              "or PGHOST, PGPORT, PGUSER, PGPASSWORD, "
                              "PGDATABASE, and that the server is running") from None

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[Any]:
        """Commit what the block did, or roll it back if it raised. Spark has no transactions:
        its writers stage and swap instead."""
        if _is_spark(conn):
            yield conn
            return
        duck = _is_duckdb(conn)
        if duck:
            conn.execute("begin transaction")
        try:
            yield conn
            conn.execute("commit") if duck else conn.commit()
        except BaseException:
            try:
                conn.execute("rollback") if duck else conn.rollback()
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise

    @staticmethod
    def execute(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """Run one statement; ``%s`` placeholders work on both engines."""
        if hasattr(conn, "cursor") and not _is_duckdb(conn):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        if params:
            sql = sql.replace("%s", "?")
        result = conn.execute(sql, list(params) if params else None)  # DuckDB, or our Spark connection
        return result.fetchall() if result.description else []

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self.connect() as conn:
            return self.execute(conn, sql, params)

    def query_df(self, sql: str) -> pd.DataFrame:
        with self.connect() as conn:
            if _is_duckdb(conn):
                return conn.execute(sql).df()
            if _is_spark(conn):
                return conn.execute(sql).frame.toPandas()
            with conn.cursor() as cur:
                cur.execute(sql)
                cols = [d[0] for d in cur.description]
                return pd.DataFrame(cur.fetchall(), columns=cols)

    def iter_batches(self, sql: str, batch_rows: int = 250_000) -> Iterator[pd.DataFrame]:
        """Stream a query's result in DataFrames of at most ``batch_rows`` rows."""
        with self.connect() as conn:
            if _is_duckdb(conn):
                reader = conn.sql(sql).to_arrow_reader(batch_rows)
                for batch in reader:
                    yield batch.to_pandas()
                return
            if _is_spark(conn):
                for batch in conn.arrow_batches(sql, batch_rows):
                    yield batch.to_pandas()
                return
            with conn.cursor(name="oa_stream") as cur:
                cur.itersize = batch_rows
                cur.execute(sql)
                cols = None
                while True:
                    rows = cur.fetchmany(batch_rows)
                    if cols is None:
                        cols = [d[0] for d in cur.description]
                    if not rows:
                        break
                    yield pd.DataFrame(rows, columns=cols)

    def arrow_batches(self, conn: Any, sql: str, params: Sequence[Any] | None = None,
                      batch_rows: int = 100_000) -> Iterator[pa.Table]:
        """A query's rows on `conn`, in its transaction, as Arrow tables of at most `batch_rows`
        rows: read as they are consumed (a server-side cursor on PostgreSQL), never all at once.
        Read them all before the next statement on `conn`: DuckDB streams them from it."""
        if _is_spark(conn):
            for batch in conn.arrow_batches(sql, batch_rows, params):
                yield pa.Table.from_batches([batch])
            return
        if _is_duckdb(conn):
            relation = conn.sql(sql.replace("%s", "?"), params=list(params)) if params else conn.sql(sql)
            for batch in relation.to_arrow_reader(batch_rows):
                yield pa.Table.from_batches([batch])
            return
        with conn.cursor(name="oa_batches") as cur:
            cur.itersize = batch_rows
            cur.execute(sql, params)
            names = None
            while True:
                rows = cur.fetchmany(batch_rows)
                names = names or [d[0] for d in cur.description]
                if not rows:
                    return
                yield pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})

    def pull(self, conn: Any, table: str, columns: Sequence[tuple[str, str]], source: Any, sql: str,
             params: Sequence[Any] | None = None, batch_rows: int = 100_000) -> int:
        """`sql`'s rows, run on another warehouse's connection `source` (Spark, beside which this
        is the state store), copied into a new temporary table `table` of `conn` a batch at a
        time, so memory holds one batch whatever the size. `columns`: (name, type) pairs, the
        types as `sql_type` names. Returns the number of rows."""
        arrow = {"text": pa.string(), "integer": pa.int64(), "double": pa.float64(),
                 "timestamp": pa.timestamp("us"), "date": pa.date32(), "boolean": pa.bool_()}
        self.execute(conn, f"drop table if exists {table}")
        self.execute(conn, f"create temporary table {table} ("
                           + ", ".join(f"{qident(n)} {self.sql_type(t)}" for n, t in columns) + ")")
        schema = pa.schema([pa.field(n, arrow[t]) for n, t in columns])
        rows = 0
        for batch in self.arrow_batches(source, sql, params, batch_rows):
            self.insert_arrow(conn, table, batch.select(schema.names).cast(schema))
            rows += batch.num_rows
        return rows

    # -- metadata ----------------------------------------------------------------------------
    def table_exists(self, schema: str, table: str, conn: Any | None = None) -> bool:
        if self.engine == "spark":
            from openaudience.core import spark

            return spark.table_exists(spark.session(self.settings), schema, table)
        sql = ("select count(*) from information_schema.tables "
               "where table_schema = %s and table_name = %s")
        if conn is not None:
            return self.execute(conn, sql, [schema, table])[0][0] > 0
        return self.query(sql, [schema, table])[0][0] > 0

    def columns(self, schema: str, table: str, conn: Any | None = None) -> list[str]:
        """The table's column names in order; empty when there is no such table."""
        if self.engine == "spark":
            from openaudience.core import spark

            session = spark.session(self.settings)
            if not spark.table_exists(session, schema, table):
                return []
            return [f.name for f in session.table(f"`{schema}`.`{table}`").schema.fields]
        sql = ("select column_name from information_schema.columns where table_schema = %s "
               "and table_name = %s order by ordinal_position")
        args = [schema, table]
        rows = self.execute(conn, sql, args) if conn is not None else self.query(sql, args)
        return [r[0] for r in rows]

    def temporary_table_as(self, conn: Any, name: str, sql: str) -> str:
        """`sql`'s result as a table for this connection's work, dropped by the caller: a
        temporary table (in memory on DuckDB, never logged on PostgreSQL), or on Spark a scratch
        Parquet table (Spark's temporary views are recomputed at each read). Returns its name."""
        if self.engine == "spark":
            relation = qualified(RAW_SCHEMA, name)
            self.execute(conn, f"drop table if exists {relation}")
            self.execute(conn, f"create table {relation} using parquet as {sql}")
            return relation
        self.execute(conn, f"drop table if exists {name}")
        self.execute(conn, f"create temporary table {name} as {sql}")
        return name

    def delete_partition(self, conn: Any, relation: str, spec: dict[str, str | int]) -> None:
        """Delete the rows whose columns equal `spec`: on Spark, where the table is partitioned
        by exactly them, the partition is dropped (Parquet tables have no DELETE)."""
        if self.engine != "spark":
            where = " and ".join(f"{qident(k)} = %s" for k in spec)
            self.execute(conn, f"delete from {relation} where {where}", list(spec.values()))
            return
        parts = ", ".join(f"{qident(k)} = {_spark_literal(v)}" for k, v in spec.items())
        self.execute(conn, f"alter table {relation} drop if exists partition ({parts})")

    def row_count(self, schema: str, table: str, conn: Any | None = None) -> int:
        sql = f"select count(*) from {qualified(schema, table)}"
        if conn is not None:
            return int(self.execute(conn, sql)[0][0])
        return int(self.query(sql)[0][0])

    def row_counts(self, relations: list[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
        """Row counts of (schema, table) pairs in one connection; None for a missing table."""
        out: dict[tuple[str, str], int | None] = {}
        with self.connect() as conn:
            for schema, table in relations:
                out[(schema, table)] = (self.row_count(schema, table, conn)
                                        if self.table_exists(schema, table, conn) else None)
        return out

    def refresh_statistics(self, conn: Any, relations: Sequence[str]) -> None:
        """PostgreSQL: ANALYZE `relations` (qualified names), so the planner sees rows written
        moments ago; autovacuum gets there only later, and a plan made for an "empty" table
        (nested loops over thousands of rows) turns seconds into minutes. ANALYZE samples a
        bounded number of rows, so it stays cheap on big tables. DuckDB keeps its statistics
        as it writes: nothing to do."""
        if self.engine == "postgres" and relations:
            self.execute(conn, f"analyze {', '.join(relations)}")

    def split_values(self, column: str) -> str:
        return split_values(self.engine, column)

    def sql_type(self, column_type: str) -> str:
        return _SQL_TYPES[self.engine][column_type]

    # -- raw layer ---------------------------------------------------------------------------
    def create_table_sql(self, target: str, table: RawTable, extra_columns: str = "",
                         kind: str = "table if not exists") -> str:
        cols = ",\n    ".join(f"{qident(c.name)} {self.sql_type(c.type)}" for c in table.columns)
        if extra_columns:
            cols += ",\n    " + extra_columns
        return f"create {kind} {target} (\n    {cols}\n){self.table_format()}"

    def table_format(self, partitioned_by: Sequence[str] = ()) -> str:
        """The clause after a CREATE TABLE's columns: on Spark, Parquet (and its partitions)."""
        if self.engine != "spark":
            return ""
        parts = f" partitioned by ({', '.join(qident(c) for c in partitioned_by)})" if partitioned_by else ""
        return f" using parquet{parts}"

    def scratch_table(self, name: str) -> tuple[str, str]:
        """(relation, create kind) for a table that lives only inside the current transaction.

        PostgreSQL: a temporary table. DuckDB: a real table in the raw schema, because DuckDB
        keeps temporary tables in memory while a big uncommitted append to a real table is
        written to disk; it is dropped before commit, and a rollback removes it with the rest.
        """
        if self.engine == "postgres":
            return qident(name), "temporary table"
        return qualified(RAW_SCHEMA, name), "table"

    def delete_rows(self, conn: Any, relation: str, column: str, values: Sequence[Any]) -> None:
        """Delete the rows of `relation` whose `column` is one of `values` (all of one type).
        Spark's Parquet tables have no DELETE: the table is written again without them, aside
        and then renamed over it."""
        values = list(dict.fromkeys(values))
        if not values:
            return
        if self.engine != "spark":
            for start in range(0, len(values), 1000):
                part = values[start:start + 1000]
                self.execute(conn, f"delete from {relation} where {qident(column)} in "
                                   f"({', '.join(['%s'] * len(part))})", part)
            return
        gone = pa.table({"v": pa.array(values)})
        conn.spark.createDataFrame(gone.to_pandas()).createOrReplaceTempView("oa_rows_gone")
        try:
            self._rewrite(conn, relation, f"{qident(column)} not in (select v from oa_rows_gone) "
                                          f"or {qident(column)} is null")
        finally:
            conn.spark.catalog.dropTempView("oa_rows_gone")

    def _rewrite(self, conn: Any, relation: str, keep: str) -> None:
        """Spark: `relation` again with the rows where `keep` holds (same columns and format)."""
        kept = relation[:-1] + '__kept"' if relation.endswith('"') else relation + "__kept"
        self.execute(conn, f"drop table if exists {kept}")
        self.execute(conn, f"create table {kept} using parquet as select * from {relation} where {keep}")
        self.execute(conn, f"drop table {relation}")
        self.execute(conn, f"alter table {kept} rename to {relation}")

    def empty_table(self, conn: Any, relation: str) -> None:
        """Every row of `relation` deleted (TRUNCATE on Spark, which has no DELETE)."""
        verb = "truncate table" if self.engine == "spark" else "delete from"
        self.execute(conn, f"{verb} {relation}")

    def ensure_schema(self, conn: Any) -> None:
        """Create or upgrade the tables OpenAudience writes (`core/schema/migrations.py`), once
        per handle; commands that write call it before their first write, readers never."""
        if self._schema_ensured:
            return
        if self.reader:
            raise RuntimeError("a read-only handle cannot create or upgrade tables")  # a bug
        from openaudience.core.schema.migrations import upgrade

        if self.engine == "spark":  # the operational store, then the tables that live on Spark
            from openaudience.core.schema.spark import ensure_spark_tables

            with self.state.connect() as state_conn:
                self.state.ensure_schema(state_conn)
            ensure_spark_tables(self, conn)
            self._schema_ensured = True
            return

        # Remembered only when nothing was changed: changes made in the caller's transaction are
        # undone if it rolls back, and the next call must make them again.
        _, changed = upgrade(self, conn)
        self._schema_ensured = not changed

    def insert_arrow(self, conn: Any, target_sql: str, table: pa.Table) -> None:
        """Bulk-insert an Arrow table whose columns match ``target_sql``'s column order."""
        if table.num_rows == 0:
            return
        cols = ", ".join(qident(n) for n in table.column_names)
        if _is_spark(conn):
            conn.insert_arrow(target_sql, table)
            return
        if _is_duckdb(conn):
            # a replacement scan of the local variable: register()/unregister() kept every
            # batch alive until the transaction ended (~50 MB per 250k rows)
            _oa_insert_batch = table  # noqa: F841 - read by name by DuckDB
            conn.execute(f"insert into {target_sql} ({cols}) select {cols} from _oa_insert_batch")
            return
        buf = io.BytesIO()
        pacsv.write_csv(table, buf, write_options=pacsv.WriteOptions(include_header=False))
        buf.seek(0)
        with conn.cursor() as cur:
            cur.copy_expert(f"copy {target_sql} ({cols}) from stdin with (format csv)", buf)


def split_values(engine: str, column: str) -> str:
    """SQL that makes one row per part of a delimited text `column` (in a select list), the
    delimiter a bound parameter (one ``%s``); Spark's split takes a pattern, so it is quoted."""
    if engine == "duckdb":
        return f"unnest(string_split({column}, %s))"
    if engine == "spark":
        return f"explode(split({column}, concat('\\\\Q', %s, '\\\\E')))"
    return f"unnest(string_to_array({column}, %s))"


def publish_snapshot(settings: Settings) -> bool:
    """Copy the embedded warehouse to its read snapshot, for readers while a writer holds it.

    Done under the writer lock (so nobody writes or reads the live file meanwhile), after a
    checkpoint (so the file holds every commit and there is no WAL to copy), into a temporary
    file that is then renamed over the snapshot: a reader sees the old snapshot or the new one.
    False when another process holds the warehouse now (it publishes when it is done) or
    snapshots are off (OA_READ_SNAPSHOT=off).
    """
    import duckdb

    path, snapshot = settings.duckdb_path, settings.snapshot_path
    if settings.target != "duckdb" or not settings.read_snapshot or not path.exists():
        return False
    try:
        with locks.exclusive(path, wait=0, what="to publish its snapshot"):
            conn = duckdb.connect(str(path), config=Warehouse(settings)._config())
            try:
                conn.execute("checkpoint")
            finally:
                conn.close()
            for stale in snapshot.parent.glob(snapshot.name + ".*.tmp"):  # left by a killed copy
                stale.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(dir=snapshot.parent, prefix=snapshot.name + ".", suffix=".tmp")
            os.close(fd)
            try:
                shutil.copyfile(path, tmp)
                os.chmod(tmp, path.stat().st_mode & 0o777)  # readable by whoever reads the warehouse
                snapshot.with_name(snapshot.name + ".wal").unlink(missing_ok=True)
                os.replace(tmp, snapshot)
            finally:
                Path(tmp).unlink(missing_ok=True)
    except locks.WarehouseBusy:
        return False  # another process has it now: it publishes when it is done
    except duckdb.Error as exc:
        locks.say(f"warning: the read snapshot was not refreshed ({str(exc).splitlines()[0]})")
        return False
    except OSError as exc:  # a full disk, say: the command itself succeeded
        locks.say(f"warning: the read snapshot {snapshot} was not refreshed ({exc.strerror or exc}); "
                  "readers see an older one while another command writes")
        return False
    return True


def _spark_literal(value: str | int) -> str:
    """A partition value as a Spark literal (partition specs take no bound parameters)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"a partition value is text or a whole number, not {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _is_spark(conn: Any) -> bool:
    return type(conn).__name__ == "SparkConnection"


def _is_duckdb(conn: Any) -> bool:
    return type(conn).__module__.startswith("duckdb") or type(conn).__name__ == "DuckDBPyConnection"
