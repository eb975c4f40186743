"""Spark as the warehouse: the session this process shares with dbt-spark, and a connection
with the calls the rest of the code makes of DuckDB's (``execute`` with ``%s`` parameters).

Local mode runs Spark in this process (pyspark bundles it; Java 17 must be installed): tables
are Parquet files under ``OA_HOME/spark/warehouse`` and the catalog is an embedded Derby
metastore beside them, which one process opens at a time (openaudience.core.locks orders them,
as for the DuckDB file). With ``SPARK_REMOTE`` set, the session is a Spark Connect client of a
cluster, whose catalog and storage are the cluster's (docs/scaling.md).

dbt-spark's ``session`` method calls ``SparkSession.builder.getOrCreate()``: it gets the session
made here, so dbt and our own statements run in one Spark application.

Spark has no transactions: what must be all-or-nothing is written aside and then swapped in
(the loader's stage tables, an audience version's partition); the operational tables, which need
transactions, live in the state store (``Settings.state``).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from openaudience.core import locks
from openaudience.core.errors import ConfigError, UserError
from openaudience.core.settings import Settings

_LOCK = threading.Lock()
_SESSION: Any = None
_SESSION_KEY: tuple | None = None


def java_problem() -> str | None:
    """Why local mode cannot start (no Java 17+ on the PATH or JAVA_HOME), or None."""
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) \
        if os.environ.get("JAVA_HOME") else shutil.which("java")
    if java is None:
        return ("Spark's local mode needs Java 17: install it (Debian: apt-get install "
                "openjdk-17-jre-headless) or set JAVA_HOME")
    return None


def session(settings: Settings) -> Any:
    """The Spark session for `settings`, made once per process; other settings (another
    warehouse) stop it and start a new one: a JVM hosts one local Spark application."""
    global _SESSION, _SESSION_KEY
    key = (settings.spark_remote, settings.spark_master, str(settings.spark_dir), settings.timezone)
    with _LOCK:
        if _SESSION is not None:
            if key != _SESSION_KEY:
                stop()
            else:
                return _SESSION
        _SESSION = _start(settings)
        _SESSION_KEY = key
        return _SESSION


def stop() -> None:
    """Stop this process's Spark session; in local mode also its JVM, so that the embedded
    metastore is closed and another process (a dbt that Dagster starts) can open the warehouse.
    The next `session()` starts a new one."""
    global _SESSION, _SESSION_KEY
    if _SESSION is None:
        return
    session_, key = _SESSION, _SESSION_KEY
    _SESSION, _SESSION_KEY = None, None
    session_.stop()
    if key[0]:  # a Spark Connect client: the cluster stays
        return
    import subprocess

    from pyspark import SparkContext

    gateway = SparkContext._gateway
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        try:
            gateway.shutdown()
        except Exception:  # noqa: BLE001, S110 - the JVM may be gone already
            pass
        if proc is not None:  # the JVM exits when its stdin closes
            try:
                proc.stdin.close()
                proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None
    from pathlib import Path

    locks.let_go(Path(key[2]) / "metastore_db")


def metastore(settings: Settings):
    return settings.spark_dir / "metastore_db"


def _start(settings: Settings) -> Any:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("OA_TARGET=spark needs pyspark: install the project with its spark "
                          "extra (pip install 'openaudience[spark]')") from None
    builder = SparkSession.builder.appName("openaudience")
    if settings.spark_remote:
        try:
            return builder.remote(settings.spark_remote).getOrCreate()
        except Exception as exc:  # noqa: BLE001 - grpc and Spark raise many kinds; the reason matters
            raise ConfigError(f"cannot reach the Spark cluster at {settings.spark_remote_safe()}: "
                              f"{_first_line(exc)}; check SPARK_REMOTE") from None
    problem = java_problem()
    if problem:
        raise ConfigError(problem)
    home = settings.spark_dir
    home.mkdir(parents=True, exist_ok=True)
    # the embedded metastore admits one process, from its first statement until that process
    # ends: the next waits here with a message naming the holder
    locks.hold_for_process(metastore(settings), settings.lock_wait, "Spark's local catalog")
    conf = {
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        # the catalog: an embedded Derby metastore beside the tables (one process at a time)
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home} -Duser.timezone=UTC "
                                         f"-Dlog4j2.configurationFile={_quiet_logging(home)}",
        # timestamps are wall-clock times in the project's zone, as DuckDB and PostgreSQL hold them
        "spark.sql.session.timeZone": "UTC",
        # two cores: a few shuffle partitions beat the default 200 tiny ones
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    if settings.spark_event_log:  # benchmarks: what each statement shuffled (bench/pipeline.py)
        conf.update({"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(settings.spark_event_log)})
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    for k, v in conf.items():
        builder = builder.config(k, v)
    try:
        spark = builder.enableHiveSupport().getOrCreate()
    except Exception as exc:  # noqa: BLE001 - the JVM's start-up can fail in many ways
        raise ConfigError(f"Spark's local mode did not start: {_first_line(exc)}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


_LOG4J = """# Spark's own logging in local mode: errors only (its warnings go to the log of a command
# that has its own progress and messages); written by openaudience/core/spark.py
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n%ex
"""


def _quiet_logging(home) -> str:
    path = home / "log4j2.properties"
    if not path.exists() or path.read_text() != _LOG4J:
        path.write_text(_LOG4J)
    return str(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


class Result:
    """What ``SparkConnection.execute`` returns: rows on demand, like DuckDB's relation."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self.description = ([(f.name, f.dataType.simpleString()) for f in frame.schema.fields]
                            if frame is not None and frame.schema.fields else None)

    def fetchall(self) -> list[tuple]:
        return [tuple(_python(v) for v in row) for row in self.frame.collect()]


class SparkConnection:
    """The session, with ``execute(sql, params)`` (``?`` placeholders, bound by Spark) and
    transaction calls that do nothing: Spark has none."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        from pyspark.errors import PySparkException

        sql = backtick_identifiers(sql)
        try:
            frame = self.spark.sql(sql, args=list(params)) if params else self.spark.sql(sql)
        except PySparkException as exc:
            raise SparkError(_first_line(exc), sql) from None
        return Result(frame)

    def close(self) -> None:  # the session outlives a connection
        pass

    def arrow_batches(self, sql: str, batch_rows: int, params: Sequence[Any] | None = None
                      ) -> Iterator[pa.RecordBatch]:
        """A query's rows as Arrow batches of at most `batch_rows`, a partition at a time: the
        driver holds one partition, never the whole result. ``%s`` placeholders take `params`."""
        sql = backtick_identifiers(sql.replace("%s", "?") if params else sql)
        frame = self.spark.sql(sql, args=list(params)) if params else self.spark.sql(sql)
        schema = frame.schema
        names = [f.name for f in schema.fields]
        rows: list[tuple] = []
        for row in frame.toLocalIterator(prefetchPartitions=False):
            rows.append(tuple(_python(v) for v in row))
            if len(rows) >= batch_rows:
                yield _rows_to_batch(rows, names)
                rows = []
        if rows:
            yield _rows_to_batch(rows, names)

    def insert_arrow(self, target: str, table: pa.Table) -> None:
        """Append an Arrow table to `target` (columns by name, in the table's order)."""
        cols = ", ".join(f"`{n}`" for n in table.column_names)
        with self.view("oa_insert_batch", [table], table.schema):
            self.execute(f"insert into {target} ({cols}) select {cols} from oa_insert_batch")

    @contextmanager
    def view(self, name: str, batches: Iterable[pa.Table], schema: pa.Schema,
             in_memory_rows: int = 250_000) -> Iterator[str]:
        """Rows this process holds (Arrow batches of `schema`, read a batch at a time) as the
        session's temporary view `name` for the block, then dropped: how a list kept in the
        state store (suppressed ids, the people due at a journey's step) meets Spark's tables in
        one query. Up to `in_memory_rows` the rows stay in the session; past that, they go a
        batch at a time to a scratch Parquet table (dropped with the view), so the driver holds
        one batch however many there are. Yields the view's name."""
        from functools import reduce
        from uuid import uuid4

        from openaudience.core.schema.raw import RAW_SCHEMA

        struct = _spark_schema(schema)

        def union(frames: list) -> Any:
            return reduce(lambda a, b: a.unionByName(b), frames)

        frames, rows, scratch = [], 0, None
        try:
            for batch in batches:
                frames.append(self.spark.createDataFrame(batch.cast(schema).to_pandas(date_as_object=True),
                                                         schema=struct))
                rows += batch.num_rows
                if rows > in_memory_rows:
                    if scratch is None:
                        scratch = f"`{RAW_SCHEMA}`.`oa_scratch_{name}_{uuid4().hex[:12]}`"
                        self.spark.createDataFrame([], schema=struct).write.format("parquet") \
                            .saveAsTable(scratch)
                    union(frames).write.insertInto(scratch)
                    frames = []
            if scratch is not None:
                if frames:
                    union(frames).write.insertInto(scratch)
                frame = self.spark.table(scratch)
            else:
                frame = union(frames) if frames else self.spark.createDataFrame([], schema=struct)
            frame.createOrReplaceTempView(name)
            try:
                yield name
            finally:
                self.spark.catalog.dropTempView(name)
        finally:
            if scratch is not None:
                self.spark.sql(f"drop table if exists {scratch}")


def backtick_identifiers(sql: str) -> str:
    """The project's SQL quotes identifiers the standard way, "name", which Spark reads as a
    string: here they become `name`. Single-quoted literals (with '' or \\' inside) and
    backticked names pass unchanged."""
    if '"' not in sql:
        return sql
    out, i, n = [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'`":
            j = i + 1
            while j < n:
                if ch == "'" and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # a doubled quote inside
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif ch == '"':
            j, name = i + 1, []
            while j < n:
                if sql[j] == '"':
                    if j + 1 < n and sql[j + 1] == '"':
                        name.append('"')
                        j += 2
                        continue
                    break
                name.append(sql[j])
                j += 1
            out.append("`" + "".join(name).replace("`", "``") + "`")
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class SparkError(UserError):
    """A statement Spark refused, with the statement's start for the log."""

    def __init__(self, reason: str, sql: str) -> None:
        super().__init__(f"Spark refused a statement: {reason}")
        self.sql = sql


def _python(value: Any) -> Any:
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _rows_to_batch(rows: list[tuple], names: list[str]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    return pa.RecordBatch.from_arrays([pa.array(list(c)) for c in columns], names=names)


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql import types as T

    def field_type(t: pa.DataType) -> Any:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return T.StringType()
        if pa.types.is_integer(t):
            return T.LongType()
        if pa.types.is_floating(t):
            return T.DoubleType()
        if pa.types.is_decimal(t):
            return T.DecimalType(t.precision, t.scale)
        if pa.types.is_timestamp(t):
            return T.TimestampType()
        if pa.types.is_date(t):
            return T.DateType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return T.BinaryType()
        if pa.types.is_null(t):
            return T.StringType()
        raise TypeError(f"no Spark type for Arrow {t}")  # a bug: contracts name these types only

    return T.StructType([T.StructField(f.name, field_type(f.type), True) for f in schema])


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def table_exists(spark: Any, schema: str, table: str) -> bool:
    if not (_IDENT.match(schema) and _IDENT.match(table)):
        return False
    return bool(spark.catalog.tableExists(f"{schema}.{table}"))
