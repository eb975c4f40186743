"""The one place that decides the environment: which warehouse, where local state lives.

``OA_TARGET`` picks the warehouse: ``duckdb`` (default, a file under ``.openaudience/``) or
``postgres`` (standard ``PG*`` variables, or one ``OA_PG_DSN`` that is split into them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from orchestration.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("duckdb", "postgres")


def _dsn_to_pg_env(dsn: str) -> dict[str, str]:
    """Split a ``postgresql://user:password@host:port/dbname`` DSN into libpq variables."""
    if "://" not in dsn:
        # key=value form: libpq understands it, but dbt needs the parts.
        parts = dict(p.split("=", 1) for p in dsn.split() if "=" in p)
        mapping = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER",
                   "password": "PGPASSWORD", "dbname": "PGDATABASE"}
        return {mapping[k]: v for k, v in parts.items() if k in mapping}
    url = urlparse(dsn)
    if url.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"OA_PG_DSN must start with postgresql:// (got scheme {url.scheme!r})"
        )
    env = {}
    if url.hostname:
        env["PGHOST"] = url.hostname
    if url.port:
        env["PGPORT"] = str(url.port)
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

    @property
    def is_postgres(self) -> bool:
        return self.target == "postgres"

    def pg_dsn(self) -> str:
        """A libpq key=value DSN built from the PG* variables (never logged: it has the password)."""
        keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user",
                "PGPASSWORD": "password", "PGDATABASE": "dbname"}
        return " ".join(f"{keys[k]}={v}" for k, v in self.pg_env.items() if k in keys)

    def describe(self) -> str:
        """Where the warehouse is, safe to print (no password)."""
        if self.is_postgres:
            e = self.pg_env
            return (f"postgres {e.get('PGUSER', '')}@{e.get('PGHOST', 'localhost')}:"
                    f"{e.get('PGPORT', '5432')}/{e.get('PGDATABASE', '')}")
        return f"duckdb {self.duckdb_path}"

    def dbt_env(self) -> dict[str, str]:
        """Environment for a dbt subprocess: the target and its connection variables."""
        env = {"OA_TARGET": self.target, "OA_DUCKDB_PATH": str(self.duckdb_path),
               "OA_DUCKDB_MEMORY_LIMIT": self.duckdb_memory_limit}
        env.update(self.pg_env)
        return env


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    target = env.get("OA_TARGET", "duckdb").strip().lower() or "duckdb"
    if target not in TARGETS:
        raise ConfigError(f"OA_TARGET={target!r} is not a warehouse; use one of: {', '.join(TARGETS)}")
    home = Path(env.get("OA_HOME", PROJECT_ROOT / ".openaudience")).resolve()
    duckdb_path = Path(env.get("OA_DUCKDB_PATH", home / "warehouse.duckdb")).resolve()
    pg_env = {k: env[k] for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE") if env.get(k)}
    if env.get("OA_PG_DSN"):
        pg_env.update(_dsn_to_pg_env(env["OA_PG_DSN"]))
    if target == "postgres" and "PGDATABASE" not in pg_env:
        raise ConfigError(
            "OA_TARGET=postgres needs a database: set OA_PG_DSN=postgresql://user:pass@host:port/db "
            "or the PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE variables"
        )
    raw_concurrency = env.get("OA_AUDIENCE_CONCURRENCY", "3").strip() or "3"
    if not (raw_concurrency.isdigit() and 1 <= int(raw_concurrency) <= 10):
        raise ConfigError(f"OA_AUDIENCE_CONCURRENCY={raw_concurrency!r}: give a whole number from 1 "
                          "to 10 (audience refreshes that may run at once; more queue)")
    return Settings(
        target=target,
        home=home,
        duckdb_path=duckdb_path,
        pg_env=pg_env,
        timezone=env.get("OA_TIMEZONE", "Asia/Shanghai"),
        duckdb_memory_limit=env.get("OA_DUCKDB_MEMORY_LIMIT", "3GB"),
        audience_concurrency=int(raw_concurrency),
    )
