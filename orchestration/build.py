"""dbt build in this process, with a progress bar fed by dbt's own events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.dbt_project import apply_environment
from orchestration.settings import PROJECT_ROOT


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
    server cannot be reached, instead of dbt's error after its start-up."""
    from orchestration import locks
    from orchestration.settings import load_settings
    from orchestration.warehouse import Warehouse

    settings = load_settings()
    if settings.target != "duckdb":
        with Warehouse(settings).session():
            pass
        yield
        return
    with locks.exclusive(settings.duckdb_path, settings.lock_wait, what="to build"):
        with Warehouse(settings).session():  # and wait out a process that skips our lock file
            pass
        yield
        locks.note_write()


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
    outcome = BuildOutcome(success=bool(result.success))
    if result.exception is not None:
        outcome.failures.append(str(result.exception))
    for node in getattr(result.result, "results", None) or []:
        status = str(node.status)
        outcome.counts[status] = outcome.counts.get(status, 0) + 1
        if status in ("error", "fail"):
            outcome.failures.append(node.node.name)
    return outcome
