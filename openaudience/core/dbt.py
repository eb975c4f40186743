"""dbt from our commands: the environment profiles.yml reads, a manifest kept current, and
`dbt build` in this process with a progress bar fed by dbt's own events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openaudience.core.settings import PROJECT_ROOT, load_settings


def apply_environment() -> None:
    """Export what dbt's profiles.yml reads (target, DuckDB path, PG* from OA_PG_DSN)."""
    os.environ.update(load_settings().dbt_env())


MANIFEST = PROJECT_ROOT / "target" / "manifest.json"
_SOURCES = ("models", "macros", "seeds", "tests/dbt")


def _newest_source_mtime() -> float:
    newest = (PROJECT_ROOT / "dbt_project.yml").stat().st_mtime
    for folder in _SOURCES:
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml", ".csv"):
                newest = max(newest, path.stat().st_mtime)
    return newest


def ensure_manifest() -> Path:
    """Parse the project when the manifest is missing or older than any model, macro or seed."""
    if manifest_is_current():
        return MANIFEST
    apply_environment()
    dbt = Path(sys.executable).with_name("dbt")
    cmd = [str(dbt) if dbt.exists() else "dbt", "parse", "--quiet",
           "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{done.stdout}\n{done.stderr}")
    return MANIFEST


def manifest_is_current() -> bool:
    """True when the manifest exists and no model, macro or seed is newer (a cheap check, no dbt)."""
    return MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime()


def require_manifest() -> Path:
    """The parsed manifest, without running dbt: for code that must not start dbt (the Dagster
    code location loads it; `make ui` and the commands that run jobs prepare it first)."""
    from openaudience.core.errors import UserError

    if not MANIFEST.exists():
        raise UserError("the dbt manifest target/manifest.json is missing: `make ui` prepares it, "
                        "or run `.venv/bin/python -m orchestration.prepare` (it runs `dbt parse`)")
    return MANIFEST


@dataclass
class BuildOutcome:
    success: bool
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        parts = [f"{n} {status}" for status, n in sorted(self.counts.items())]
        text = ", ".join(parts) or "nothing ran"
        if self.failures:
            text += "; failed: " + ", ".join(self.failures[:10])
        return text


def dbt_args(command: str, select: str | None = None, as_of: str | None = None,
             extra_vars: dict[str, str] | None = None) -> list[str]:
    args = [command, "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT)]
    if select:
        args += ["--select", select]
    dbt_vars = {**({"as_of": as_of} if as_of else {}), **(extra_vars or {})}
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    return args


@contextmanager
def holding_warehouse() -> Iterator[None]:
    """For a dbt run: on DuckDB, hold the warehouse's writer lock from before dbt opens the file
    until it is done (waiting with a message while another process holds it), so no reader or
    writer of ours slips in between; on PostgreSQL, refuse at once with our message when the
    server cannot be reached, instead of dbt's error after its start-up; on Spark, start this
    process's session (dbt-spark's session method takes it) and copy the state tables dbt reads
    to Spark. Either way the operational tables are brought to this release first: dbt reads some
    of them as sources."""
    from openaudience.core import locks
    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import Warehouse

    settings = load_settings()

    def ensure() -> None:  # the tables dbt's sources read exist (an earlier release's warehouse gains them)
        wh = Warehouse(settings)
        with wh.session() as conn, wh.transaction(conn):
            wh.ensure_schema(conn)

    if settings.target == "spark":
        # this process's Spark session (local mode, or the cluster's) before dbt asks for one,
        # and the state tables dbt reads copied to Spark
        from openaudience.core.schema.spark import mirror_sources, refresh_event_people

        wh = Warehouse(settings)
        with wh.session() as conn:
            wh.ensure_schema(conn)
            mirror_sources(wh, conn)
        yield
        with wh.session() as conn:  # the people of the events event journeys read, as this build knows them
            refresh_event_people(wh, conn)
        return
    if settings.target != "duckdb":
        ensure()
        yield
        return
    with locks.exclusive(settings.duckdb_path, settings.lock_wait, what="to build"):
        ensure()  # and wait out a process that skips our lock file
        yield
        locks.note_write()


def dbt_main() -> None:
    """`oa-dbt ARGS`: `dbt ARGS` in this process after what our own builds do first: on Spark,
    start the session (local mode admits one process at a time) and copy the state tables dbt
    reads. Dagster runs it as its dbt executable beside a Spark warehouse; its output is dbt's
    (JSON lines when asked), its exit code dbt's."""
    from dbt.cli.main import dbtRunner

    from openaudience.core.errors import UserError

    apply_environment()
    try:
        with holding_warehouse():
            result = dbtRunner().invoke(sys.argv[1:])
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    sys.exit(0 if result.success else (1 if result.exception is None else 2))


def release_dbt_duckdb() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open in this process after an in-process run,
    so the file is whole on disk and this process can open it again with its own settings."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    env = DuckDBConnectionManager._ENV
    if env is not None:
        env.close()
        DuckDBConnectionManager._ENV = None


LIVE_VIEWS = ("fct_events_live", "fct_behaviors_live")
"""Views over tables and views dbt rebuilds. PostgreSQL drops a view with what it reads when dbt
replaces that (DROP ... CASCADE): a build of part of the project can take them away."""


def missing_live_views(settings=None) -> list[str]:
    from openaudience.core.warehouse import Warehouse

    wh = Warehouse(settings)
    if not wh.table_exists("marts", "fct_behaviors"):
        return []  # never built: the first build makes them
    return [v for v in LIVE_VIEWS if not wh.table_exists("marts", v)]


def restore_live_views(settings=None) -> list[str]:
    """Create the live views again when a partial build dropped them; the ones it made."""
    from dbt.cli.main import dbtRunner

    from openaudience.core.errors import UserError

    missing = missing_live_views(settings)
    if missing:
        apply_environment()
        try:
            result = dbtRunner().invoke([*dbt_args("run", " ".join(missing)), "--quiet"])
        finally:
            release_dbt_duckdb()
        if not result.success:
            raise UserError(f"the views {', '.join(missing)} could not be made again: "
                            f"{result.exception or 'see logs/dbt.log'}")
    return missing


def run_dbt_build(select: str | None = None, as_of: str | None = None,
                  console: Console | None = None,
                  extra_vars: dict[str, str] | None = None) -> BuildOutcome:
    from dbt.cli.main import dbtRunner

    apply_environment()
    console = console or Console()
    with holding_warehouse(), Progress(TextColumn("[bold]dbt build"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("", total=None)

        def on_event(event) -> None:
            name = event.info.name
            if name == "LogStartLine":
                progress.update(task, total=event.data.total,
                                description=event.data.node_info.node_name)
            elif name == "NodeFinished":
                progress.advance(task)

        try:
            result = dbtRunner(callbacks=[on_event]).invoke(
                [*dbt_args("build", select, as_of, extra_vars), "--quiet"])
        finally:
            release_dbt_duckdb()
        if select and result.success:  # a part of the project: the live views may have gone with it
            restore_live_views()
    outcome = BuildOutcome(success=bool(result.success))
    if result.exception is not None:
        outcome.failures.append(str(result.exception))
    for node in getattr(result.result, "results", None) or []:
        status = str(node.status)
        outcome.counts[status] = outcome.counts.get(status, 0) + 1
        if status in ("error", "fail"):
            outcome.failures.append(node.node.name)
    return outcome
