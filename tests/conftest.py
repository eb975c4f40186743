"""Shared fixtures: a throwaway PostgreSQL cluster, a small generated data set, and helpers that
run the real loader and the real dbt build against DuckDB or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from openaudience.core.settings import PROJECT_ROOT, Settings, load_settings
from openaudience.core.warehouse import Warehouse
from tests.support.postgres import PostgresCluster, start_cluster

END_DATE = dt.date(2026, 6, 30)
AS_OF = "2026-06-29"
ENGINES = ("duckdb", "postgres")
DBT = str(Path(sys.executable).with_name("dbt"))
OA = str(Path(sys.executable).with_name("oa"))


@pytest.fixture(scope="session")
def pg_cluster():
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@dataclass
class Target:
    """One warehouse the tests can load into and build: its env, settings and helpers."""

    name: str
    env: dict[str, str]
    build_log: str = ""

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings)

    def dbt(self, *args: str, as_of: str | None = AS_OF, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [DBT, *args, "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT)]
        if as_of:
            cmd += ["--vars", json.dumps({"as_of": as_of})]
        env = {**self.env, **self.settings.dbt_env()}
        done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"dbt {' '.join(args)} failed on {self.name}:\n"
                                 f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
        return done

    def oa(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([OA, *args], env=self.env, cwd=PROJECT_ROOT, capture_output=True,
                              text=True)


def point_process_at(target: Target, monkeypatch, dagster_home: Path, keep: tuple[str, ...] = ()) -> None:
    """Make this process's environment that of `target` (importing orchestration.definitions
    exports the default warehouse's variables), with its own DAGSTER_HOME; variables starting
    with a prefix in `keep` stay."""
    for key in list(os.environ):
        if key.startswith(("OA_", "PG")) and not (keep and key.startswith(keep)):
            monkeypatch.delenv(key)
    for key, value in {**target.env, **target.settings.dbt_env()}.items():
        if key.startswith(("OA_", "PG")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))


def make_target(name: str, tmp_path: Path, pg_cluster: PostgresCluster | None, db: str) -> Target:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OA_", "PG", "DAGSTER_HOME"))}
    env["OA_HOME"] = str(tmp_path / "home")
    env["OA_TARGET"] = name
    if name == "postgres":
        assert pg_cluster is not None
        env.update(pg_cluster.reset_database(db))
    return Target(name=name, env=env)


def build_both_engines(data: Path, pg_cluster: PostgresCluster, tmp_path_factory,
                       db: str) -> dict[str, Target]:
    """Both engines loaded from the same files and built (dbt build) with the same as-of date."""
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.raw.loading import load_file

    targets = {}
    for engine in ENGINES:
        target = make_target(engine, tmp_path_factory.mktemp(engine), pg_cluster, db)
        for table in LOAD_ORDER:
            load_file(target.warehouse, table, data / f"{table}.parquet")
        target.build_log = target.dbt("build").stdout
        targets[engine] = target
    return targets


AIPL_HISTORY_START = "2026-06-22"


@pytest.fixture(scope="session")
def built_engines(small_demo, pg_cluster, tmp_path_factory) -> dict[str, Target]:
    """The small data set built on both engines once per session, with eight days of AIPL
    history (through the `oa aipl backfill` CLI), so a 7-day AIPL flow has both its ends, and
    model outputs (synthetic scores and recommendations) for the audiences that read them.
    Tests that change it put it back."""
    from tests.support.ml_outputs import write_ml_outputs

    targets = build_both_engines(small_demo, pg_cluster, tmp_path_factory, "built_engines")
    for target in targets.values():
        done = target.oa("aipl", "backfill", "--start", AIPL_HISTORY_START, "--end", AS_OF)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        write_ml_outputs(target.warehouse)  # what the audiences reading model outputs read
    return targets


@pytest.fixture(params=ENGINES)
def target(request, tmp_path) -> Target:
    """A fresh, empty warehouse of each engine (a new DuckDB file; a new PostgreSQL database)."""
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    db = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[-50:].lower()
    return make_target(request.param, tmp_path, cluster, db)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small generated data set (Parquet), made once per test session."""
    from openaudience.demo.generator import DemoConfig, generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, DemoConfig(users=2_000, days=180, seed=7, end_date=END_DATE, chunk_users=1_000))
    return out


@pytest.fixture(scope="session")
def signal_engines(pg_cluster, tmp_path_factory) -> dict[str, Target]:
    """30,000 generated people over a year (the generator plants a repurchase signal), built on
    both engines once per session: enough for honest validation numbers of the models."""
    from openaudience.demo.generator import DemoConfig, generate

    data = tmp_path_factory.mktemp("signal")
    generate(data, DemoConfig(users=30_000, days=365, seed=5, end_date=END_DATE, chunk_users=15_000))
    return build_both_engines(data, pg_cluster, tmp_path_factory, "signal_engines")


# Fixtures that build the dbt project (once per session or module): a test that uses one is part
# of `make test` but not of `make test-fast`, the edit loop's unit, compile and in-memory checks.
BUILDS = frozenset({"built_engines", "signal_engines", "built", "examples_built", "delivered_audiences",
                    "evaluators", "shop", "ui"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BUILDS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# OA_TEST_TIMES=FILE: each test module's wall-clock seconds (setup, call and teardown; a session
# fixture's build counts for the first module that asks for it), written as JSON at the end, for
# the per-module table of docs/benchmarks.md.
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if os.environ.get("OA_TEST_TIMES"):
        module = report.nodeid.split("::", 1)[0]
        _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("OA_TEST_TIMES")
    if path and _MODULE_SECONDS:
        ordered = dict(sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1]))
        Path(path).write_text(json.dumps({k: round(v, 1) for k, v in ordered.items()}, indent=1) + "\n")
