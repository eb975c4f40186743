"""Run the nightly_refresh job in-process against the local Dagster instance."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from rich.console import Console

from orchestration.settings import PROJECT_ROOT, load_settings


@dataclass
class NightlyResult:
    success: bool
    run_id: str
    checks_passed: int
    checks_failed: list[str]
    materialized: int


def ensure_dagster_home() -> str:
    """DAGSTER_HOME defaults to .openaudience/dagster, with the project's dagster.yaml in it."""
    home = os.environ.get("DAGSTER_HOME") or str(load_settings().home / "dagster")
    os.makedirs(home, exist_ok=True)
    target = os.path.join(home, "dagster.yaml")
    source = PROJECT_ROOT / "dagster.yaml"
    if not os.path.exists(target) or open(target).read() != source.read_text():
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = home
    return home


def run_nightly(console: Console | None = None) -> NightlyResult:
    import dagster as dg

    console = console or Console()
    ensure_dagster_home()
    from orchestration.definitions import defs

    job = defs.resolve_job_def("nightly_refresh")
    with console.status("nightly_refresh: GX checks on raw tables, then dbt build ..."):
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    evaluations = result.get_asset_check_evaluations()
    failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed]
    outcome = NightlyResult(
        success=result.success,
        run_id=result.run_id,
        checks_passed=sum(1 for e in evaluations if e.passed),
        checks_failed=failed,
        materialized=len(result.get_asset_materialization_events()),
    )
    colour = "green" if outcome.success else "red"
    console.print(f"[{colour}]nightly_refresh {'succeeded' if outcome.success else 'failed'}"
                  f"[/{colour}]: {outcome.materialized} assets materialized, "
                  f"{outcome.checks_passed} checks passed, {len(failed)} failed"
                  + (f" ({', '.join(failed[:5])})" if failed else "")
                  + f"; run {outcome.run_id}")
    return outcome
