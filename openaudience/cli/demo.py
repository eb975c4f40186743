"""`oa demo-data`, `oa demo`: the generated demo data set, and the whole nightly pipeline on it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from openaudience.cli.aipl import backfill_aipl
from openaudience.cli.audience import print_build
from openaudience.cli.common import console, parse_date, print_counts, progress_bar
from openaudience.cli.load import load_folder
from openaudience.cli.report import (
    write_aipl_report,
    write_audience_report,
    write_pivot_report,
    write_rfm_report,
)
from openaudience.core.errors import UserError

app = typer.Typer()  # top-level commands, merged into `oa`


@app.command("demo-data")
def demo_data(
    users: Annotated[int, typer.Option(help="Customers to generate.")] = 100_000,
    days: Annotated[int, typer.Option(help="Days of orders and behaviour.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 42,
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path(
        ".openaudience/demo"),
    end_date: Annotated[str | None, typer.Option(
        help="Last day + 1 of the data (YYYY-MM-DD); default today.")] = None,
) -> None:
    """Generate a deterministic, realistic demo data set as Parquet files."""
    from openaudience.demo.generator import DemoConfig, generate

    end = parse_date(end_date, "--end-date") if end_date else dt.date.today()
    if users < 1 or days < 1:
        raise UserError("--users and --days must be at least 1")
    config = DemoConfig(users=users, days=days, seed=seed, end_date=end)
    counts = _generate(generate, out, config)
    print_counts(f"Demo data in {out}", counts)


def _generate(generate, out: Path, config) -> dict[str, int]:
    with progress_bar() as progress:
        task = progress.add_task("generating users", total=config.users)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done)

        return generate(out, config, progress=report)


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(help="Customers to generate.")] = 100_000,
    days: Annotated[int, typer.Option(help="Days of data.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """The whole demo: generate data, load it, run the nightly job, print a summary."""
    from openaudience.cli.status import print_status
    from openaudience.core.settings import load_settings
    from openaudience.demo.generator import DemoConfig, generate
    from orchestration.launch import run_audience_job, run_nightly

    settings = load_settings()
    out = settings.home / "demo"
    config = DemoConfig(users=users, days=days, seed=seed, end_date=dt.date.today())
    console.rule("1/9 demo data")
    _generate(generate, out, config)
    console.rule("2/9 load (validated)")
    load_folder(out, "replace", quarantine=False)
    console.rule("3/9 nightly_refresh")
    result = run_nightly(console)
    if not result.success:
        raise UserError(f"nightly_refresh failed (run {result.run_id}); see `make ui`")
    console.rule("4/9 AIPL history")
    today = dt.date.today()
    backfill_aipl(today - dt.timedelta(days=29), today)
    console.rule("5/9 audiences (Dagster job audiences_refresh_all) and reports")
    audience_results = refresh_all_audiences(today)
    console.rule("6/9 deliveries (Dagster job deliveries)")
    deliveries = demo_deliveries(settings.home / "demo")
    console.rule("7/9 repurchase model (train, validate against the baselines, score)")
    from openaudience.cli.ml import print_training, train_repurchase

    repurchase = train_repurchase(activate=True, out=console)
    console.rule("8/9 recommendation model and tasks")
    from openaudience.cli.ml import print_recommend, train_recommend

    recommend = train_recommend(out=console)
    from orchestration.observe import report_models

    report_models(lambda text: console.print(f"note: {text}", markup=False), repurchase=repurchase[0],
                  activated=repurchase[1] is not None, report_path=repurchase[2], scoring=repurchase[1],
                  recommend=recommend[0], recommend_path=recommend[2], tasks=recommend[1])
    console.rule("9/9 audiences from the models (Dagster job audiences_from_models)")
    model_audiences = run_audience_job("audiences_from_models", today, console)
    reports = {
        "RFM": write_rfm_report("rfm_default"),
        "AIPL": write_aipl_report("default", today - dt.timedelta(days=29), today),
        "pivot": write_pivot_report(DEMO_PIVOT_TAGS),
        "audience": write_audience_report("shanghai_big_spenders"),
    }
    console.rule("summary")
    print_status(console)
    print_build(audience_results + model_audiences)
    from openaudience.cli.deliver import print_summaries

    print_summaries(deliveries, console)
    print_training(*repurchase, out=console)
    print_recommend(*recommend, out=console)
    for kind, path in reports.items():
        console.print(f"{kind} report: {path}", soft_wrap=True)


def demo_deliveries(folder: Path) -> list:
    """Deliver the example destinations: the CRM webhook to a local receiver this process runs
    (its messages land in crm_webhook_received.jsonl), and the hashed file export."""
    import secrets

    from connectors.webhook_receiver import WebhookReceiver
    from orchestration.launch import run_delivery_job

    secret = os.environ.get("OA_CRM_WEBHOOK_SECRET") or secrets.token_hex(16)
    journal = folder / "crm_webhook_received.jsonl"
    receiver = WebhookReceiver(secret=secret, journal=journal).start()
    saved = {k: os.environ.get(k) for k in ("OA_CRM_WEBHOOK_URL", "OA_CRM_WEBHOOK_SECRET")}
    os.environ.update({"OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret})
    try:
        summaries = run_delivery_job(console)
    finally:
        receiver.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    console.print(f"the demo CRM receiver accepted {len(receiver.state.accepted):,} message(s) "
                  f"({journal})", soft_wrap=True)
    return summaries


def refresh_all_audiences(today: dt.date):
    """Run the Dagster job that refreshes every audience, so the UI shows the builds."""
    from orchestration.launch import run_audience_job

    return run_audience_job("audiences_refresh_all", today, console)


DEMO_PIVOT_TAGS = ["gender", "member_level", "city", "categories_bought", "age", "registered_at"]
