"""Run the nightly_refresh job in-process against the local Dagster instance."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from rich.console import Console

from openaudience.core.settings import PROJECT_ROOT, load_settings


@dataclass
class NightlyResult:
    success: bool
    run_id: str
    checks_passed: int
    checks_failed: list[str]
    materialized: int


def ensure_dagster_home(configure: bool = True) -> str:
    """DAGSTER_HOME defaults to .openaudience/dagster, with the project's dagster.yaml in it.
    `configure`: also bring its dagster.yaml and the audience pool's limit up to date (what
    `make ui` and the commands that run jobs do); without it, an instance that exists is used as
    it is (what commands that only report to it do)."""
    home = os.environ.get("DAGSTER_HOME") or str(load_settings().home / "dagster")
    os.makedirs(home, exist_ok=True)
    target = os.path.join(home, "dagster.yaml")
    source = PROJECT_ROOT / "dagster.yaml"
    if not os.path.exists(target) or (configure and open(target).read() != source.read_text()):
        shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = home
    if configure:
        apply_pool_limits()
    return home


def apply_pool_limits() -> None:
    """Set the pools' limits on the instance: audience refreshes (OA_AUDIENCE_CONCURRENCY), and
    journey ticks one at a time."""
    import dagster as dg

    from orchestration.defs.audiences.assets import POOL
    from orchestration.defs.journeys.assets import POOL as JOURNEY_POOL

    with dg.DagsterInstance.get() as instance:
        for pool, limit in ((POOL, load_settings().audience_concurrency), (JOURNEY_POOL, 1)):
            if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
                instance.event_log_storage.set_concurrency_slots(pool, limit)


def definitions():
    """The code location's definitions, for a command about to run a job: the dbt manifest is
    brought up to date first (`dbt parse` when a model, macro or seed changed)."""
    from openaudience.core.dbt import ensure_manifest

    ensure_manifest()
    from orchestration.definitions import defs

    return defs


def run_nightly(console: Console | None = None) -> NightlyResult:
    """The nightly job for today (in OA_TIMEZONE): its partition of aipl_daily is today."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    import dagster as dg

    console = console or Console()
    ensure_dagster_home()
    job = definitions().resolve_job_def("nightly_refresh")
    today = dt.datetime.now(ZoneInfo(load_settings().timezone)).date()
    with console.status("nightly_refresh: GX checks on raw tables, then dbt build ..."):
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            partition_key=today.isoformat(),
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


def run_audience_job(job_name: str, today, console: Console | None = None) -> list:
    """Run an audience job in-process; the latest version of each audience it built."""
    from types import SimpleNamespace

    import dagster as dg

    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.engine import versions

    console = console or Console()
    ensure_dagster_home()
    job = definitions().resolve_job_def(job_name)
    with console.status(f"{job_name}: evaluating audiences in one batch ..."):
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            run_config={"ops": {"audiences": {"config": {"as_of": today.isoformat()}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip() if failure else "see `make ui`"
        from openaudience.core.errors import UserError

        raise UserError(f"{job_name} failed (run {result.run_id}): {reason}")
    built = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()
             for e in [e.event_specific_data.materialization]}
    latest = {}
    for v in versions(Warehouse()):
        if v["audience"] in built:
            latest.setdefault(v["audience"], v)
    return [SimpleNamespace(**v) for _, v in sorted(latest.items())]


def run_delivery_job(console: Console | None = None) -> list:
    """Run the `deliveries` job in-process (every destination); the delivery runs it made."""
    import dagster as dg

    from openaudience.core.errors import UserError
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.engine import RunSummary, runs
    from openaudience.delivery.store import RUN_COUNTS

    console = console or Console()
    ensure_dagster_home()
    job = definitions().resolve_job_def("deliveries")
    with console.status("deliveries: every destination ..."):
        result = job.execute_in_process(
            instance=dg.DagsterInstance.get(), raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip() if failure else "see `make ui`"
        raise UserError(f"deliveries failed (run {result.run_id}): {reason}")
    made = {e.event_specific_data.materialization.metadata["run_id"].value
            for e in result.get_asset_materialization_events()
            if "run_id" in e.event_specific_data.materialization.metadata}
    return [RunSummary(run_id=r["run_id"], destination=r["destination"], audience=r["audience"],
                       audience_version=r["audience_version"], mode=r["mode"], status=r["status"],
                       counts={k: r[k] for k in RUN_COUNTS}, error=r["error"] or "")
            for r in sorted(runs(Warehouse()), key=lambda r: r["destination"]) if r["run_id"] in made]
