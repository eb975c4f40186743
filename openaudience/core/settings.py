"""The one place that decides the environment: which warehouse, where local state lives.

``OA_TARGET`` picks the warehouse: ``duckdb`` (default, a file under ``.openaudience/``),
``postgres`` (standard ``PG*`` variables, or one ``OA_PG_DSN`` that is split into them) or
``spark`` (in this process in local mode, or a cluster through ``SPARK_REMOTE``). A Spark
warehouse keeps the operational state (deliveries, journeys, versions) in a store with real
transactions beside it: ``OA_STATE_TARGET``, a DuckDB file (default) or PostgreSQL.

Every ``OA_*`` setting is checked here, once, with a message that names the variable and what it
must be; nothing read from the environment is ever formatted into SQL or a shell command.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openaudience.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("duckdb", "postgres", "spark")
STATE_TARGETS = ("duckdb", "postgres")
_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|[KMGT]i?B)", re.I)
_PG_KEYS = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
            "dbname": "PGDATABASE"}


def _dsn_to_pg_env(dsn: str) -> dict[str, str]:
    """Split a ``postgresql://user:password@host:port/dbname`` DSN into libpq variables."""
    if "://" not in dsn:
        # key=value form: libpq understands it, but dbt needs the parts.
        words = dsn.split()
        if not words or any("=" not in w for w in words):
            raise ConfigError("OA_PG_DSN must be postgresql://user:password@host:port/db "
                              "(or libpq key=value pairs such as 'host=db port=5432 dbname=cdp')")
        parts = dict(w.split("=", 1) for w in words)
        return {_PG_KEYS[k]: v for k, v in parts.items() if k in _PG_KEYS}
    try:
        url = urlparse(dsn)
        port = url.port
    except ValueError:
        raise ConfigError("OA_PG_DSN is not a valid URL: give postgresql://user:password@host:port/db "
                          "(the port a number from 1 to 65535)") from None
    if url.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"OA_PG_DSN must start with postgresql:// (got scheme {url.scheme!r})"
        )
    env = {}
    if url.hostname:
        env["PGHOST"] = url.hostname
    if port == 0:
        raise ConfigError("OA_PG_DSN: the port must be a number from 1 to 65535")
    if port is not None:
        env["PGPORT"] = str(port)
    if url.username:
        env["PGUSER"] = unquote(url.username)
    if url.password:
        env["PGPASSWORD"] = unquote(url.password)
    if url.path.strip("/"):
        env["PGDATABASE"] = url.path.strip("/")
    return env


@dataclass(frozen=True)
class Settings:
    target: str
    home: Path
    duckdb_path: Path
    pg_env: dict[str, str]
    timezone: str
    duckdb_memory_limit: str = "3GB"
    audience_concurrency: int = 3
    delivery_memory_limit: str = "512MB"
    lock_wait: float | None = 600.0
    """Seconds a command waits for the embedded warehouse held by another process (None: as
    long as it takes)."""
    read_snapshot: bool = True
    """Readers fall back to the last published snapshot while a writer holds the DuckDB file."""
    journey_max_running: int = 10
    """Journeys that may run at once (spec §1: 10); more started ones wait as `pending`."""
    journey_detail_days: int = 7
    """Days the per-person journey state of a finished cycle is kept (spec §5.4: 7 days)."""
    events_max_bytes: int = 1_048_576
    """The largest request body the event collector reads (a batch is at most 100 messages)."""
    state_target: str = ""
    """Where the operational tables live: the warehouse itself on DuckDB and PostgreSQL; beside
    a Spark warehouse, a DuckDB file or PostgreSQL (OA_STATE_TARGET)."""
    spark_remote: str = ""
    """A Spark Connect URL (SPARK_REMOTE, sc://host:15002): the cluster; empty: local mode."""
    spark_master: str = "local[2]"
    spark_driver_memory: str = "2g"
    spark_event_log: Path | None = None
    """OA_SPARK_EVENT_LOG: a folder where local mode writes Spark's event log (for benchmarks)."""
    beside: str = ""
    """In the settings of a state store (`state`), the target of the warehouse it keeps the state
    of when that is another ("spark"); empty otherwise."""

    @property
    def spark_dir(self) -> Path:
        """Local mode: the Spark warehouse's tables and its metastore live here."""
        return self.home / "spark"

    @property
    def state(self) -> Settings:
        """The settings of the operational store: these settings themselves unless the warehouse
        is Spark."""
        if self.target != "spark":
            return self
        from dataclasses import replace

        return replace(self, target=self.state_target or "duckdb", beside="spark")

    @property
    def snapshot_path(self) -> Path:
        """The read snapshot beside the DuckDB file, published after each command that wrote."""
        return self.duckdb_path.with_name(self.duckdb_path.stem + ".snapshot" + self.duckdb_path.suffix)

    @property
    def is_postgres(self) -> bool:
        return self.target == "postgres"

    def pg_dsn(self) -> str:
        """A libpq key=value DSN built from the PG* variables (never logged: it has the password)."""
        keys = {v: k for k, v in _PG_KEYS.items()}

        def quoted(value: str) -> str:  # libpq's quoting, so spaces and quotes stay in the value
            return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

        return " ".join(f"{keys[k]}={quoted(v)}" for k, v in self.pg_env.items() if k in keys)

    def describe(self) -> str:
        """Where the warehouse is, safe to print (no password)."""
        if self.target == "spark":
            where = self.spark_remote_safe() if self.spark_remote else f"local {self.spark_dir}"
            return f"spark {where} (state: {self.state.describe()})"
        if self.is_postgres:
            e = self.pg_env
            return (f"postgres {e.get('PGUSER', '')}@{e.get('PGHOST', 'localhost')}:"
                    f"{e.get('PGPORT', '5432')}/{e.get('PGDATABASE', '')}")
        return f"duckdb {self.duckdb_path}"

    def spark_remote_safe(self) -> str:
        """SPARK_REMOTE without its token or password parameters, safe to print."""
        return self.spark_remote.split(";")[0]

    def dbt_env(self) -> dict[str, str]:
        """Environment for a dbt subprocess: the target and its connection variables."""
        env = {"OA_TARGET": self.target, "OA_DUCKDB_PATH": str(self.duckdb_path),
               "OA_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit}
        env.update(self.pg_env)
        if self.spark_remote:
            env["SPARK_REMOTE"] = self.spark_remote
        return env


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """The settings from `environ` (default: the process environment), each variable checked."""
    env = os.environ if environ is None else environ
    target = env.get("OA_TARGET", "duckdb").strip().lower() or "duckdb"
    if target not in TARGETS:
        raise ConfigError(f"OA_TARGET={target!r} is not a warehouse; use one of: {', '.join(TARGETS)}")
    home = _directory(env, "OA_HOME", PROJECT_ROOT / ".openaudience")
    duckdb_path = _file(env, "OA_DUCKDB_PATH", home / "warehouse.duckdb")
    pg_env = {k: env[k] for k in _PG_KEYS.values() if env.get(k)}
    if env.get("OA_PG_DSN"):
        pg_env.update(_dsn_to_pg_env(env["OA_PG_DSN"]))
    if "PGPORT" in pg_env and not (pg_env["PGPORT"].isdigit() and 1 <= int(pg_env["PGPORT"]) <= 65535):
        raise ConfigError(f"PGPORT={pg_env['PGPORT']!r}: give the server's port, a number from 1 to 65535")
    if target == "postgres" and "PGDATABASE" not in pg_env:
        raise ConfigError(
            "OA_TARGET=postgres needs a database: set OA_PG_DSN=postgresql://user:pass@host:port/db "
            "or the PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE variables"
        )
    raw_concurrency = env.get("OA_AUDIENCE_CONCURRENCY", "3").strip() or "3"
    if not (raw_concurrency.isdigit() and 1 <= int(raw_concurrency) <= 10):
        raise ConfigError(f"OA_AUDIENCE_CONCURRENCY={raw_concurrency!r}: give a whole number from 1 "
                          "to 10 (audience refreshes that may run at once; more queue)")
    journey_max = _whole(env, "OA_JOURNEY_MAX_RUNNING", 10, 1, 1000,
                         "journeys that may run at once; more started ones wait as pending")
    detail_days = _whole(env, "OA_JOURNEY_DETAIL_DAYS", 7, 1, 3650,
                         "days a finished cycle keeps its per-person state")
    events_max_bytes = _whole(env, "OA_EVENTS_MAX_BYTES", 1_048_576, 1024, 16 * 1_048_576,
                              "bytes: the largest request body the event collector reads")
    state_target = target
    if target == "spark":
        state_target = env.get("OA_STATE_TARGET", "duckdb").strip().lower() or "duckdb"
        if state_target not in STATE_TARGETS:
            raise ConfigError(f"OA_STATE_TARGET={state_target!r}: the operational store beside a Spark "
                              f"warehouse is one of: {', '.join(STATE_TARGETS)}")
        if state_target == "postgres" and "PGDATABASE" not in pg_env:
            raise ConfigError("OA_STATE_TARGET=postgres needs a database: set OA_PG_DSN="
                              "postgresql://user:pass@host:port/db or the PG* variables")
    spark_remote = env.get("SPARK_REMOTE", "").strip()
    if spark_remote and not spark_remote.startswith("sc://"):
        raise ConfigError(f"SPARK_REMOTE={spark_remote.split(';')[0]!r}: give a Spark Connect URL, "
                          "sc://host:15002 (unset it for local mode)")
    spark_master = env.get("OA_SPARK_MASTER", "").strip() or "local[2]"
    if not re.fullmatch(r"local(\[(\*|[1-9][0-9]{0,3})\])?", spark_master):
        raise ConfigError(f"OA_SPARK_MASTER={spark_master!r}: local mode takes local, local[N] or "
                          "local[*]; a cluster is reached through SPARK_REMOTE (docs/scaling.md)")
    spark_memory = env.get("OA_SPARK_DRIVER_MEMORY", "").strip().lower() or "2g"
    if not re.fullmatch(r"[1-9][0-9]{0,5}[mg]", spark_memory):
        raise ConfigError(f"OA_SPARK_DRIVER_MEMORY={spark_memory!r}: give a size such as 2g or 1536m")
    event_log = _directory(env, "OA_SPARK_EVENT_LOG", home) if env.get("OA_SPARK_EVENT_LOG") else None
    return Settings(
        spark_event_log=event_log,
        state_target=state_target,
        spark_remote=spark_remote,
        spark_master=spark_master,
        spark_driver_memory=spark_memory,
        target=target,
        home=home,
        duckdb_path=duckdb_path,
        pg_env=pg_env,
        timezone=_timezone(env),
        duckdb_memory_limit=_size(env, "OA_DUCKDB_MEMORY_LIMIT", "3GB"),
        audience_concurrency=int(raw_concurrency),
        delivery_memory_limit=_size(env, "OA_DELIVERY_MEMORY_LIMIT", "512MB"),
        lock_wait=_lock_wait(env),
        read_snapshot=_switch(env, "OA_READ_SNAPSHOT", True),
        journey_max_running=journey_max,
        journey_detail_days=detail_days,
        events_max_bytes=events_max_bytes,
    )


def _whole(env, name: str, default: int, low: int, high: int, meaning: str) -> int:
    raw = env.get(name, "").strip() or str(default)
    if not (raw.isdigit() and low <= int(raw) <= high):
        raise ConfigError(f"{name}={raw!r}: give a whole number from {low} to {high} ({meaning})")
    return int(raw)


def _size(env, name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not _SIZE.fullmatch(value):
        raise ConfigError(f"{name}={value!r}: give a memory size such as 512MB, 3GB or 1.5GiB")
    return value


def _timezone(env) -> str:
    value = env.get("OA_TIMEZONE", "").strip() or "Asia/Shanghai"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"OA_TIMEZONE={value!r} is not a time zone: give an IANA name such as "
                          "Asia/Shanghai, Europe/Berlin or UTC") from None
    return value


def _lock_wait(env) -> float | None:
    value = env.get("OA_LOCK_WAIT", "").strip().lower() or "600"
    if value in ("forever", "inf", "infinite"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and 0 <= seconds <= 86_400):
        raise ConfigError(f"OA_LOCK_WAIT={value!r}: give the seconds a command may wait for the "
                          "warehouse (0 to 86400), or 'forever'")
    return seconds


def _switch(env, name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name}={value!r}: give on or off")


def _directory(env, name: str, default: Path) -> Path:
    """A directory the project writes into: an existing writable one, or one it can create."""
    path = Path(env.get(name) or default).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={path}: this is a file, not a folder; point {name} at a folder")
    _writable(name, path)
    return path


def _file(env, name: str, default: Path) -> Path:
    path = Path(env.get(name) or default).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"{name}={path}: this is a folder; give the path of the warehouse file in it, "
                          f"e.g. {path / 'warehouse.duckdb'}")
    _writable(name, path.parent)
    return path


def _writable(name: str, folder: Path) -> None:
    """`folder`, or the nearest folder above it that exists, can be written by this user."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{name}: {existing} is a file, so {folder} cannot be created; "
                          f"point {name} elsewhere")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {existing} is not writable by this user; point {name} at a "
                          "folder you can write, or fix its permissions")
