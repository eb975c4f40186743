"""Dagster resources: configurable classes whose configuration is the environment.

Each field of `WarehouseResource` is one variable `openaudience.core.settings` reads. `resources()`
gives a field `dg.EnvVar(NAME)` when NAME is set where the code location loads, so the UI's
resource page names the variable the warehouse comes from and Dagster reads its value only when a
run starts: a password (`OA_PG_DSN`, `PGPASSWORD`) is never part of the definitions, the UI or a
run's config. A field left empty follows the environment of the run, as the command line does
(`load_settings`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from pydantic import Field

from openaudience.core.settings import Settings, load_settings
from openaudience.core.warehouse import Warehouse

# field -> the variable it stands for (OA_PG_DSN and PGPASSWORD hold a password: always EnvVar)
VARIABLES = {
    "target": "OA_TARGET",
    "home": "OA_HOME",
    "duckdb_path": "OA_DUCKDB_PATH",
    "pg_dsn": "OA_PG_DSN",
    "pg_host": "PGHOST",
    "pg_port": "PGPORT",
    "pg_user": "PGUSER",
    "pg_password": "PGPASSWORD",
    "pg_database": "PGDATABASE",
    "spark_remote": "SPARK_REMOTE",
    "state_target": "OA_STATE_TARGET",
}


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: DuckDB (an embedded file), PostgreSQL or Spark, as `OA_TARGET` says.

    Every field is one environment variable (its description names it); an empty field follows
    the environment of the run. The other `OA_*` settings (time zone, memory limits, lock wait)
    come from the environment of the run.
    """

    target: str = Field(default="", description="OA_TARGET: duckdb (default), postgres or spark.")
    home: str = Field(default="", description="OA_HOME: local state, the DuckDB file by default.")
    duckdb_path: str = Field(default="", description="OA_DUCKDB_PATH: the DuckDB file.")
    pg_dsn: str = Field(default="", description="OA_PG_DSN: postgresql://user:password@host:port/db "
                                                "(a secret: give it as an environment variable).")
    pg_host: str = Field(default="", description="PGHOST")
    pg_port: str = Field(default="", description="PGPORT")
    pg_user: str = Field(default="", description="PGUSER")
    pg_password: str = Field(default="", description="PGPASSWORD (a secret: give it as an "
                                                     "environment variable).")
    pg_database: str = Field(default="", description="PGDATABASE")
    spark_remote: str = Field(default="", description="SPARK_REMOTE: sc://host:15002, a Spark Connect "
                                                      "cluster (may hold a token: give it as an "
                                                      "environment variable); empty: local mode.")
    state_target: str = Field(default="", description="OA_STATE_TARGET: beside Spark, the store of "
                                                      "the operational tables: duckdb or postgres.")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """A step that wrote the embedded warehouse publishes its read snapshot when it ends."""
        from openaudience.core import locks
        from openaudience.core.warehouse import publish_snapshot

        if locks.wrote():
            publish_snapshot(self.settings())
            locks.forget_writes()

    def settings(self) -> Settings:
        """The settings of the environment, with this resource's non-empty fields over it."""
        given = {VARIABLES[name]: value for name, value in self._fields().items() if value}
        return load_settings({**os.environ, **given}) if given else load_settings()

    def get(self) -> Warehouse:
        # a scheduled run queues behind whatever holds the embedded warehouse, however long
        return Warehouse(dataclasses.replace(self.settings(), lock_wait=None))

    @contextmanager
    def dbt_environment(self) -> Iterator[Settings]:
        """While dbt runs: the variables profiles.yml reads, from these settings, in this process's
        environment (dbt's subprocess inherits it); put back as they were afterwards."""
        settings = self.settings()
        wanted = {**settings.dbt_env(), "OA_HOME": str(settings.home)}
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield settings
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _fields(self) -> dict[str, str]:
        """Each field's value; a field still an EnvVar (the resource used outside a run, where
        Dagster has not resolved it) is read from the environment now."""
        values = {name: getattr(self, name) for name in VARIABLES}
        return {name: os.environ.get(value.env_var_name, "") if isinstance(value, dg.EnvVar) else value
                for name, value in values.items()}


def warehouse_resource(environ: dict[str, str] | None = None) -> WarehouseResource:
    """The resource as the code location declares it: `dg.EnvVar(NAME)` for each variable set in
    `environ` (default: the environment), so the UI shows which variable configures it and
    Dagster reads the value when a run starts; the others follow the run's environment."""
    env = os.environ if environ is None else environ
    return WarehouseResource(**{name: dg.EnvVar(var) for name, var in VARIABLES.items()
                                if env.get(var)})


def dbt_resource(environ: dict[str, str] | None = None) -> DbtCliResource:
    """dbt as dagster-dbt runs it: the project and profiles of this repository, and the dbt
    installed beside this Python, so no activated virtualenv is needed. Beside a Spark warehouse,
    `oa-dbt`: dbt in a process that first starts the Spark session (local mode admits one
    process) and copies the state tables dbt reads (`openaudience.core.dbt.dbt_main`)."""
    from orchestration.dbt_project import DBT_PROJECT

    env = os.environ if environ is None else environ
    spark = (env.get("OA_TARGET", "").strip().lower() == "spark")
    executable = Path(sys.executable).with_name("oa-dbt" if spark else "dbt")
    return DbtCliResource(project_dir=DBT_PROJECT, profiles_dir=str(DBT_PROJECT.profiles_dir),
                          dbt_executable=str(executable))
