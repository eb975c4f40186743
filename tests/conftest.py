"""Shared fixtures: a throwaway PostgreSQL cluster, a small generated data set, and helpers that
run the real loader and the real dbt build against DuckDB or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Each pytest-xdist worker has a core: the models' OpenMP and BLAS threads, one per core by
# default, would otherwise contend with the other worker's (a booster's predictions several
# times slower). Set before numpy and scikit-learn load; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

import pytest  # noqa: E402

from openaudience.core.settings import PROJECT_ROOT, Settings, load_settings
from openaudience.core.warehouse import Warehouse
from tests.support import dbt_runner
from tests.support.dbt_runner import DbtRun
from tests.support.postgres import PostgresCluster, start_cluster

END_DATE = dt.date(2026, 6, 30)
AS_OF = "2026-06-29"
ENGINES = ("duckdb", "postgres")
DBT = str(Path(sys.executable).with_name("dbt"))
OA = str(Path(sys.executable).with_name("oa"))


WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


class _SharedCluster:
    """Under pytest-xdist, the controller starts one PostgreSQL cluster for all workers (so a
    database built by one worker can be the template of every worker's copy) and stops it
    after the last worker."""

    cluster: PostgresCluster | None = None

    def pytest_configure_node(self, node) -> None:
        if self.cluster is None:
            self.cluster = start_cluster()
        node.workerinput["oa_pg_cluster"] = json.dumps({"root": str(self.cluster.root),
                                                        "port": self.cluster.port})

    def pytest_unconfigure(self, config) -> None:
        if self.cluster is not None:
            self.cluster.stop()


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        # An xdist worker: its dbt and `oa` subprocesses write their own target/ and logs/ (two
        # workers' dbt would otherwise write one partial-parse file and one manifest at once);
        # the manifest the code location reads stays target/manifest.json, made by the controller.
        os.environ["DBT_TARGET_PATH"] = str(PROJECT_ROOT / "target" / "pytest" / WORKER)
        os.environ["DBT_LOG_PATH"] = str(PROJECT_ROOT / "logs" / "pytest" / WORKER)
    elif config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None):
        from openaudience.core.dbt import ensure_manifest

        ensure_manifest()
        config.pluginmanager.register(_SharedCluster(), "openaudience-shared-postgres")


@pytest.fixture(scope="session")
def pg_cluster(request):
    shared = getattr(request.config, "workerinput", {}).get("oa_pg_cluster")
    if shared:  # the controller's (see _SharedCluster): not ours to stop
        info = json.loads(shared)
        yield PostgresCluster(root=Path(info["root"]), port=info["port"])
        return
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

    def dbt(self, *args: str, as_of: str | None = AS_OF, check: bool = True,
            in_process: bool = True) -> subprocess.CompletedProcess | DbtRun:
        """`dbt <args>` on this warehouse: in this process from a manifest parsed once per engine
        (tests/support/dbt_runner.py), or as a subprocess (`in_process=False`) for output that
        only the command line prints."""
        args = (*args, "--vars", json.dumps({"as_of": as_of})) if as_of else args
        env = {**self.env, **self.settings.dbt_env()}
        if in_process:
            done = dbt_runner.run(self.name, list(args), env)
        else:
            cmd = [DBT, *args, "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT)]
            done = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"dbt {' '.join(args)} failed on {self.name}:\n"
                                 f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
        if "--select" in args and args[0] in ("build", "run") and done.returncode == 0:
            # as `oa build --select` does: a part rebuilt on PostgreSQL drops the live views over it
            from openaudience.core.dbt import missing_live_views

            missing = missing_live_views(self.settings)
            if missing:
                self.dbt("run", "--select", " ".join(missing), as_of=as_of)
        return done

    def oa(self, *args: str, script: bool = False) -> subprocess.CompletedProcess:
        """`oa <args>` on this warehouse: through the CLI's `main` in this process (one import of
        Great Expectations, Dagster and dbt per worker, not one per command), or as the installed
        script in a process of its own (`script=True`) where the process is what is tested."""
        if script:
            return subprocess.run([OA, *args], env=self.env, cwd=PROJECT_ROOT, capture_output=True,
                                  text=True)
        from tests.support.hostile import run_main

        return run_main(args, self.env)


def point_process_at(target: Target, monkeypatch, dagster_home: Path, keep: tuple[str, ...] = ()) -> None:
    """Make this process's environment that of `target` (OA_* and PG* variables replaced, so none
    of another warehouse's is left), with its own DAGSTER_HOME; variables starting with a prefix
    in `keep` stay."""
    for key in list(os.environ):
        if key.startswith(("OA_", "PG")) and not (keep and key.startswith(keep)):
            monkeypatch.delenv(key)
    for key, value in {**target.env, **target.settings.dbt_env()}.items():
        if key.startswith(("OA_", "PG")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))


def make_target(name: str, tmp_path: Path, pg_cluster: PostgresCluster | None, db: str,
                template: str | None = None) -> Target:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OA_", "PG", "DAGSTER_HOME"))}
    env["OA_HOME"] = str(tmp_path / "home")
    env["OA_TARGET"] = name
    if name == "postgres":
        assert pg_cluster is not None
        env.update(pg_cluster.reset_database(db, template))
    return Target(name=name, env=env)


def build_both_engines(data: Path, pg_cluster: PostgresCluster | None, root: Path, db: str,
                       then: Callable[[Target], None] | None = None,
                       engines: tuple[str, ...] = ENGINES, command: str = "build",
                       as_of: str = AS_OF) -> dict[str, str]:
    """Both engines (or `engines`) loaded from the same files and built (`dbt build`, or
    NO_TESTS for a data set whose models other tests already hold to their data tests) with the same
    as-of date (AS_OF, the day before the data end, unless `as_of`), under `root/<engine>` and in
    the PostgreSQL database `db`; `then` finishes each. Returns each engine's build log."""
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.raw.loading import load_file

    logs = {}
    for engine in engines:
        target = make_target(engine, root / engine, pg_cluster, db)
        for table in LOAD_ORDER:
            load_file(target.warehouse, table, data / f"{table}.parquet")
        logs[engine] = target.dbt(*command.split(), as_of=as_of).stdout
        if then is not None:
            then(target)
    return logs


def shared_build(name: str, tmp_path_factory, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """`build(folder)` once per test run, whichever pytest-xdist worker asks first (the others
    wait for it); returns the folder and what `build` returned. A failed build is not retried:
    every worker fails with its message."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if WORKER != "main" else base  # xdist: the workers' common parent
    folder, outcome = shared / f"shared-{name}", shared / f"shared-{name}.json"
    with FileLock(str(shared / f"shared-{name}.lock")):
        if not outcome.exists():
            folder.mkdir(exist_ok=True)
            try:
                outcome.write_text(json.dumps({"ok": True, "info": build(folder)}))
            except BaseException as exc:
                outcome.write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
                raise
    done = json.loads(outcome.read_text())
    if not done["ok"]:
        pytest.fail(f"the shared build {name} failed in another worker: {done['error']}")
    return folder, done["info"]


def copy_engines(name: str, folder: Path, info: dict, pg_cluster: PostgresCluster | None,
                 tmp_path_factory, engines: tuple[str, ...] = ENGINES, copy: str = "") -> dict[str, Target]:
    """This worker's own copy of a shared build: the DuckDB home folder copied, the PostgreSQL
    database made from the built one as a template. `copy` names a second copy of the same
    build in one worker."""
    targets = {}
    label = f"{name}{'_' + copy if copy else ''}"
    for engine in engines:
        dest = tmp_path_factory.mktemp(f"{label}-{engine}")
        if (folder / engine / "home").exists():  # a PostgreSQL build may write nothing there
            shutil.copytree(folder / engine / "home", dest / "home")
        target = make_target(engine, dest, pg_cluster, f"{label}_{WORKER}", template=f"{name}_template")
        target.build_log = info["logs"][engine]
        targets[engine] = target
    return targets


def own_copy_of_built(built_engines: dict[str, Target], pg_cluster, tmp_path_factory, copy: str
                      ) -> dict[str, Target]:
    """A module's own copy of `built_engines`, for tests that change what it holds."""
    folder = tmp_path_factory.getbasetemp()
    folder = (folder.parent if WORKER != "main" else folder) / "shared-built_engines"
    info = {"logs": {engine: target.build_log for engine, target in built_engines.items()}}
    return copy_engines("built_engines", folder, info, pg_cluster, tmp_path_factory, copy=copy)


AIPL_HISTORY_START = "2026-06-22"
# seeds and models without the data and unit tests
NO_TESTS = "build --exclude resource_type:test resource_type:unit_test"


@pytest.fixture(scope="session")
def built_engines(small_demo, pg_cluster, tmp_path_factory) -> dict[str, Target]:
    """The small data set built on both engines once per test run (each xdist worker gets its
    own copy), with eight days of AIPL history (through the `oa aipl backfill` CLI), so a 7-day
    AIPL flow has both its ends, and model outputs (synthetic scores and recommendations) for
    the audiences that read them. Tests that change it put it back."""
    from tests.support.ml_outputs import write_ml_outputs

    def finish(target: Target) -> None:
        done = target.oa("aipl", "backfill", "--start", AIPL_HISTORY_START, "--end", AS_OF)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        write_ml_outputs(target.warehouse)  # what the audiences reading model outputs read

    folder, info = shared_build("built_engines", tmp_path_factory, lambda root: {"logs": build_both_engines(
        small_demo, pg_cluster, root, "built_engines_template", finish)})
    return copy_engines("built_engines", folder, info, pg_cluster, tmp_path_factory)


@pytest.fixture(params=ENGINES)
def target(request, tmp_path) -> Target:
    """A fresh, empty warehouse of each engine (a new DuckDB file; a new PostgreSQL database)."""
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    # one database name for every fresh warehouse (made anew for each test), so that the
    # in-process dbt parses the project once for all of them
    db = "t_fresh_" + os.environ.get("PYTEST_XDIST_WORKER", "main")
    return make_target(request.param, tmp_path, cluster, db)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Path:
    """A small generated data set (Parquet), made once per test run. Read it, never change it."""
    from openaudience.demo.generator import DemoConfig, generate

    def build(root: Path) -> dict:
        generate(root, DemoConfig(users=2_000, days=180, seed=7, end_date=END_DATE, chunk_users=1_000))
        return {}

    return shared_build("small_demo", tmp_path_factory, build)[0]


@pytest.fixture(scope="session")
def signal(tmp_path_factory) -> Target:
    """30,000 generated people over a year (the generator plants a repurchase signal), built on
    DuckDB once per test run (a copy per xdist worker): enough for honest validation numbers of
    the models. What the models read is the same on PostgreSQL (`ml_engines` proves it on the
    small data set), so the model quality is judged once."""
    from openaudience.demo.generator import DemoConfig, generate

    def build(root: Path) -> dict:
        data = root / "data"
        generate(data, DemoConfig(users=30_000, days=365, seed=5, end_date=END_DATE, chunk_users=15_000))
        # the data tests hold on built_engines; here only the models' numbers matter, as of the
        # day the data end
        return {"logs": build_both_engines(data, None, root, "", engines=("duckdb",), command=NO_TESTS,
                                           as_of=END_DATE.isoformat())}

    folder, info = shared_build("signal", tmp_path_factory, build)
    return copy_engines("signal", folder, info, None, tmp_path_factory, engines=("duckdb",))["duckdb"]


@pytest.fixture(scope="session")
def buyers(tmp_path_factory) -> Target:
    """12,000 people over two years who buy by habit, by season and by category, with no BG/NBD
    structure (tests/support/buyers.py): orders and order lines only, no behaviour events. Built
    on DuckDB (what the models read) once per test run, a copy per xdist worker."""
    from openaudience.raw.loading import load_file
    from tests.support import buyers as shop

    def build(root: Path) -> dict:
        files = shop.generate(root / "data")
        target = make_target("duckdb", root / "duckdb", None, "")
        for table in ("customers", "products", "orders", "order_items"):
            load_file(target.warehouse, table, files[table])
        done = target.dbt(*NO_TESTS.split(), "--select", "+ml_repurchase_features",
                          as_of=shop.END.isoformat())
        return {"logs": {"duckdb": done.stdout}}

    folder, info = shared_build("buyers", tmp_path_factory, build)
    return copy_engines("buyers", folder, info, None, tmp_path_factory, engines=("duckdb",))["duckdb"]


@pytest.fixture(scope="module")
def ml_engines(built_engines, pg_cluster, tmp_path_factory) -> dict[str, Target]:
    """A module's own copy of `built_engines`, for tests that train, activate and score models
    (which would replace the model outputs other modules' audiences read)."""
    folder = tmp_path_factory.getbasetemp()
    folder = (folder.parent if WORKER != "main" else folder) / "shared-built_engines"
    info = {"logs": {engine: target.build_log for engine, target in built_engines.items()}}
    return copy_engines("built_engines", folder, info, pg_cluster, tmp_path_factory, copy="ml")


# Fixtures that build the dbt project (once per session or module): a test that uses one is part
# of `make test` but not of `make test-fast`, the edit loop's unit, compile and in-memory checks.
BUILDS = frozenset({"built_engines", "signal", "ml_engines", "buyers", "built", "examples_built",
                    "delivered_audiences", "evaluators", "shop", "ui"})


# Each module's seconds in the last measured run (`OA_TEST_TIMES=tests/module_seconds.json make
# test`): the longest modules start first, so that with a module per worker (`--dist loadfile`)
# the run does not end waiting for one long module that started last.
MODULE_SECONDS = json.loads((Path(__file__).parent / "module_seconds.json").read_text())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BUILDS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    typical = sorted(MODULE_SECONDS.values())[len(MODULE_SECONDS) // 2] if MODULE_SECONDS else 0
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.nodeid.split("::", 1)[0], typical))


# OA_TEST_TIMES=FILE: each test module's seconds (setup, call and teardown, summed over the
# workers; a shared build counts for the first module that asks for it), written as JSON at the
# end, for the per-module table of docs/benchmarks.md.
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if os.environ.get("OA_TEST_TIMES"):
        module = report.nodeid.split("::", 1)[0]
        _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("OA_TEST_TIMES")
    if path and _MODULE_SECONDS and not hasattr(session.config, "workerinput"):  # xdist: the controller
        ordered = dict(sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1]))
        Path(path).write_text(json.dumps({k: round(v, 1) for k, v in ordered.items()}, indent=1) + "\n")


@pytest.fixture(scope="module")
def journey_audiences(built_engines):
    """The audiences the journeys (shipped and examples) enter, built on both engines as of the
    data's date; the project they belong to."""
    from openaudience.segments.engine import build
    from openaudience.segments.source import load_project

    project = load_project()
    for target in built_engines.values():
        build(project, ["cart_abandoners", "new_members_this_month", "shanghai_big_spenders"],
              dt.date.fromisoformat(AS_OF), wh=target.warehouse)
    return project


@pytest.fixture(scope="module")
def broker():
    """A Kafka-protocol broker (tansu) on loopback for the module's tests."""
    from tests.support.kafka import start_broker

    b = start_broker()
    yield b
    b.stop()
