"""dbt build in this process, with a progress bar fed by dbt's own events."""

from __future__ import annotations

import json
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


def run_dbt_build(select: str | None = None, as_of: str | None = None,
                  console: Console | None = None,
                  extra_vars: dict[str, str] | None = None) -> BuildOutcome:
    from dbt.cli.main import dbtRunner

    apply_environment()
    console = console or Console()
    with Progress(TextColumn("[bold]dbt build"), BarColumn(), MofNCompleteColumn(),
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

        result = dbtRunner(callbacks=[on_event]).invoke(
            [*dbt_args("build", select, as_of, extra_vars), "--quiet"])
    outcome = BuildOutcome(success=bool(result.success))
    if result.exception is not None:
        outcome.failures.append(str(result.exception))
    for node in getattr(result.result, "results", None) or []:
        status = str(node.status)
        outcome.counts[status] = outcome.counts.get(status, 0) + 1
        if status in ("error", "fail"):
            outcome.failures.append(node.node.name)
    return outcome
