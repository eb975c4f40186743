"""``oa``: the one command line of OpenAudience.

Errors a user can cause (``UserError``) are printed without a traceback and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ml.cli import ml_app
from orchestration.delivery.cli import deliver_app, suppress_app
from orchestration.errors import UserError, ValidationFailed

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="OpenAudience: warehouse-native customer data platform.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (figures go to docs/benchmarks.md).")
app.add_typer(bench_app, name="bench")
report_app = typer.Typer(no_args_is_help=True,
                         help="Self-contained HTML reports with charts (RFM, AIPL, pivot).")
app.add_typer(report_app, name="report")
audience_app = typer.Typer(no_args_is_help=True,
                           help="Audiences: YAML segments in audiences/, compiled to SQL.")
app.add_typer(audience_app, name="audience")
aipl_app = typer.Typer(no_args_is_help=True, help="AIPL stages per day (the aipl_daily model).")
app.add_typer(aipl_app, name="aipl")
app.add_typer(deliver_app, name="deliver")
app.add_typer(suppress_app, name="suppress")
app.add_typer(ml_app, name="ml")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths and messages stay whole when piped


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                    transient=False)


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
    from orchestration.demo_data import DemoConfig, generate

    end = _parse_date(end_date, "--end-date") if end_date else dt.date.today()
    if users < 1 or days < 1:
        raise UserError("--users and --days must be at least 1")
    config = DemoConfig(users=users, days=days, seed=seed, end_date=end)
    counts = _generate(generate, out, config)
    _print_counts(f"Demo data in {out}", counts)


def _generate(generate, out: Path, config) -> dict[str, int]:
    with _progress() as progress:
        task = progress.add_task("generating users", total=config.users)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done)

        return generate(out, config, progress=report)


def _parse_date(value: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag} must be a date like 2026-06-30, not {value!r}") from None


def _print_counts(title: str, counts: dict[str, int]) -> None:
    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


@app.command("load")
def load(
    table: Annotated[str, typer.Argument(help="Raw table, e.g. customers.")],
    file: Annotated[Path, typer.Argument(help="CSV (.csv, .csv.gz) or Parquet file.")],
    mode: Annotated[str, typer.Option(help="append or replace.")] = "append",
    quarantine: Annotated[bool, typer.Option(
        "--quarantine", help="Load the good rows; park bad rows in raw.raw_quarantine.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Let --mode replace empty the table with a file of no rows.")] = False,
) -> None:
    """Validate a file against the raw table's contract and load it in one transaction."""
    result = _load_one(table, file, mode, quarantine, force)
    console.print(f"[green]loaded[/green] {result.rows_loaded:,} rows into raw.{table}"
                  + (f", [yellow]{result.rows_quarantined:,} quarantined[/yellow] "
                     "(see raw.raw_quarantine)" if result.rows_quarantined else ""))


def _load_one(table: str, file: Path, mode: str, quarantine: bool, force: bool = False):
    from orchestration.loading import format_report, load_file
    from orchestration.warehouse import Warehouse

    warehouse = Warehouse()
    with _progress() as progress:
        task = progress.add_task(f"loading {table}", total=None)
        result = load_file(warehouse, table, file, mode=mode, quarantine=quarantine, force=force,
                           progress=lambda n: progress.advance(task, n))
        progress.update(task, total=result.rows_read, completed=result.rows_read)
    if result.rows_quarantined:  # the file's values: printed as they are, never as markup
        console.print(format_report(result), markup=False, highlight=False)
    return result


@app.command("load-dir")
def load_dir(
    folder: Annotated[Path, typer.Argument(help="Folder with <table>.parquet or <table>.csv files.")],
    mode: Annotated[str, typer.Option(help="append or replace.")] = "replace",
    quarantine: Annotated[bool, typer.Option("--quarantine")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Let --mode replace empty a table with a file of no rows.")] = False,
) -> None:
    """Load every raw table file found in a folder (e.g. the demo data), all or none."""
    counts = _load_folder(folder, mode, quarantine, force)
    _print_counts(f"Loaded from {folder}", counts)


def _load_folder(folder: Path, mode: str, quarantine: bool, force: bool = False) -> dict[str, int]:
    """One transaction for the whole folder: a refused file leaves every table as it was."""
    from orchestration.loading import format_report, load_files
    from orchestration.raw_tables import LOAD_ORDER
    from orchestration.warehouse import Warehouse

    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = []
    for name in LOAD_ORDER:
        found = [folder / f"{name}{s}" for s in (".parquet", ".csv", ".csv.gz")
                 if (folder / f"{name}{s}").exists()]
        if found:
            files.append((name, found[0]))
    if not files:
        raise UserError(f"{folder}: no raw table files (expected e.g. customers.parquet)")
    with _progress() as progress:
        tasks = {name: progress.add_task(f"loading {name}", total=None) for name, _ in files}
        results = load_files(Warehouse(), files, mode=mode, quarantine=quarantine, force=force,
                             progress=lambda name, n: progress.advance(tasks[name], n))
    for result in results:
        if result.rows_quarantined:
            console.print(format_report(result), markup=False, highlight=False)
    return {result.table: result.rows_loaded for result in results}


@app.command("build")
def build(
    select: Annotated[str | None, typer.Option(help="dbt selection, e.g. marts.")] = None,
    as_of: Annotated[str | None, typer.Option(help="As-of date for the tag windows.")] = None,
) -> None:
    """dbt build (seeds, models, tests) on the configured warehouse, with progress."""
    from orchestration.build import run_dbt_build

    if as_of:
        _parse_date(as_of, "--as-of")
    outcome = run_dbt_build(select=select, as_of=as_of, console=console)
    if not outcome.success:
        raise UserError(f"dbt build failed: {outcome.summary}")
    console.print(f"[green]dbt build passed[/green]: {outcome.summary}")


@app.command("nightly")
def nightly() -> None:
    """Run the nightly_refresh Dagster job in this process (no daemon needed)."""
    from orchestration.run_nightly import run_nightly

    result = run_nightly(console)
    if not result.success:
        raise UserError(f"nightly_refresh failed (run {result.run_id}); see `make ui` for the run")


@app.command("status")
def status() -> None:
    """Where the warehouse is, what is loaded, what is built."""
    from orchestration.status import print_status

    print_status(console)


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(help="Customers to generate.")] = 100_000,
    days: Annotated[int, typer.Option(help="Days of data.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """The whole demo: generate data, load it, run the nightly job, print a summary."""
    from orchestration.demo_data import DemoConfig, generate
    from orchestration.run_nightly import run_audience_job, run_nightly
    from orchestration.settings import load_settings
    from orchestration.status import print_status

    settings = load_settings()
    out = settings.home / "demo"
    config = DemoConfig(users=users, days=days, seed=seed, end_date=dt.date.today())
    console.rule("1/9 demo data")
    _generate(generate, out, config)
    console.rule("2/9 load (validated)")
    _load_folder(out, "replace", quarantine=False)
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
    from ml.cli import print_training, train_repurchase

    repurchase = train_repurchase(activate=True, out=console)
    console.rule("8/9 recommendation model and tasks")
    from ml.cli import print_recommend, train_recommend

    recommend = train_recommend(out=console)
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
    _print_build(audience_results + model_audiences)
    from orchestration.delivery.cli import print_summaries

    print_summaries(deliveries, console)
    print_training(*repurchase, out=console)
    print_recommend(*recommend, out=console)
    for kind, path in reports.items():
        console.print(f"{kind} report: {path}", soft_wrap=True)


def demo_deliveries(folder: Path) -> list:
    """Deliver the example destinations: the CRM webhook to a local receiver this process runs
    (its messages land in crm_webhook_received.jsonl), and the hashed file export."""
    import os
    import secrets

    from connectors.webhook_receiver import WebhookReceiver
    from orchestration.run_nightly import run_delivery_job

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
    from orchestration.run_nightly import run_audience_job

    return run_audience_job("audiences_refresh_all", today, console)


DEMO_PIVOT_TAGS = ["gender", "member_level", "city", "categories_bought", "age", "registered_at"]


def _report_path(out: Path | None, name: str) -> Path:
    from orchestration.settings import load_settings

    return out or load_settings().home / "reports" / name


@report_app.command("rfm")
def report_rfm(
    name: Annotated[str, typer.Argument(help="RFM model, e.g. rfm_default.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """RFM analysis of one model: core metrics, the eight user types, bubble charts, trend."""
    print(write_rfm_report(name, out))


def write_rfm_report(name: str, out: Path | None = None) -> Path:
    from orchestration.analysis import report
    from orchestration.analysis.rfm import analyse_rfm
    from orchestration.warehouse import Warehouse

    with console.status(f"analysing RFM model {name}"):
        page = report.rfm_page(analyse_rfm(Warehouse(reader=True), name))
    return report.write(page, _report_path(out, f"rfm_{report.slug(name)}.html"))


@report_app.command("aipl")
def report_aipl(
    name: Annotated[str, typer.Argument(help="AIPL model, e.g. default.")],
    start: Annotated[str, typer.Option(help="First day of the flow (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day of the flow (YYYY-MM-DD).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """AIPL flow between two days: stage counts, conversions, churn, and the 30-day trend."""
    print(write_aipl_report(name, _parse_date(start, "--start"), _parse_date(end, "--end"), out))


def write_aipl_report(name: str, start: dt.date, end: dt.date, out: Path | None = None) -> Path:
    from orchestration.analysis import report
    from orchestration.analysis.aipl import analyse_aipl
    from orchestration.warehouse import Warehouse

    with console.status(f"analysing AIPL model {name}"):
        page = report.aipl_page(analyse_aipl(Warehouse(reader=True), name, start, end))
    return report.write(page, _report_path(out, f"aipl_{report.slug(name)}_{start}_{end}.html"))


@report_app.command("pivot")
def report_pivot(
    tags: Annotated[str, typer.Option(help="Comma-separated tags, e.g. gender,city,age.")],
    exclude_null: Annotated[bool, typer.Option(
        "--exclude-null", help="Leave out users with no value (and the value 'unknown').")] = False,
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """Distribution of chosen tags over user_tags, one chart per tag."""
    print(write_pivot_report([t.strip() for t in tags.split(",") if t.strip()], exclude_null, out))


def write_pivot_report(tags: list[str], exclude_null: bool = False, out: Path | None = None) -> Path:
    from orchestration.analysis import report
    from orchestration.analysis.pivot import pivot_tags
    from orchestration.warehouse import Warehouse

    with console.status(f"pivoting {len(tags)} tag(s)"):
        page = report.pivot_page(pivot_tags(Warehouse(reader=True), tags, exclude_null), exclude_null)
    return report.write(page, _report_path(out, f"pivot_{report.slug('_'.join(tags))}.html"))


@report_app.command("audience")
def report_audience(
    name: Annotated[str, typer.Argument(help="Audience name (built with oa audience build).")],
    version: Annotated[int | None, typer.Option(help="A kept version; default: the latest.")] = None,
    rfm_model: Annotated[str, typer.Option(help="RFM model for the composition.")] = "rfm_default",
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """An audience against the population: TGI per tag value, the ten most significant tags
    (chi-square), the RFM composition and the size history."""
    print(write_audience_report(name, version, rfm_model, out))


def write_audience_report(name: str, version: int | None = None, rfm_model: str = "rfm_default",
                          out: Path | None = None) -> Path:
    from orchestration.analysis import report
    from orchestration.analysis.audience import analyse_audience
    from orchestration.warehouse import Warehouse

    with console.status(f"analysing audience {name}"):
        page = report.audience_page(analyse_audience(Warehouse(reader=True), name, version, rfm_model))
    return report.write(page, _report_path(out, f"audience_{report.slug(name)}.html"))


@aipl_app.command("backfill")
def aipl_backfill(
    start: Annotated[str, typer.Option(help="First day to compute (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day to compute (YYYY-MM-DD).")],
) -> None:
    """Compute (or recompute) aipl_daily for every day from --start to --end, then test it."""
    first, last = _parse_date(start, "--start"), _parse_date(end, "--end")
    outcome = backfill_aipl(first, last)
    console.print(f"[green]aipl_daily {first} to {last}[/green]: {outcome.summary}")


def backfill_aipl(first: dt.date, last: dt.date):
    from orchestration.build import run_dbt_build

    if first > last:
        raise UserError(f"--start {first} is after --end {last}")
    if (last - first).days > 366:
        raise UserError("backfill at most 367 days at a time")
    outcome = run_dbt_build(select="aipl_daily+", console=console, as_of=last.isoformat(),
                            extra_vars={"aipl_start": first.isoformat(), "aipl_end": last.isoformat()})
    if not outcome.success:
        raise UserError(f"aipl_daily backfill failed: {outcome.summary}")
    return outcome


@audience_app.command("validate")
def audience_validate(
    files: Annotated[list[Path] | None, typer.Argument(help="Files; default: every audiences/*.yml.")] = None,
) -> None:
    """Check audience files (for pull requests): exits 2 and lists every problem with its line.
    References, set-operation id types, cycles and depth are checked across the folder."""
    from orchestration.segments.source import AUDIENCE_DIR, AudienceErrors, audience_files, load_project

    paths = files or audience_files()
    if not paths:
        raise UserError("no audience files found in audiences/")
    outside = [p for p in paths if p.resolve().parent != AUDIENCE_DIR.resolve()]
    try:
        load_project(AUDIENCE_DIR, files=outside)
    except AudienceErrors as exc:
        raise UserError(f"{len(exc.problems)} problem(s):\n{exc}") from None
    console.print(f"[green]{len(paths)} audience file(s) valid[/green]")


def _as_of(as_of: str | None) -> dt.date:
    from orchestration.defs.audiences.assets import refresh_date

    return _parse_date(as_of, "--as-of") if as_of else refresh_date()


def _project():
    from orchestration.segments.source import load_project

    return load_project()


AsOf = Annotated[str | None, typer.Option(help="Date relative windows end on; default today (OA_TIMEZONE).")]
Name = Annotated[str, typer.Argument(help="Audience name (its file's stem).")]


@audience_app.command("sql")
def audience_sql(
    name: Name,
    dialect: Annotated[str, typer.Option(help="duckdb, postgres, spark, trino, snowflake, bigquery.")] = "",
    as_of: AsOf = None,
) -> None:
    """Print the audience's SQL (default: the configured warehouse's dialect)."""
    from orchestration.segments.compiler import DIALECTS, to_sql
    from orchestration.settings import load_settings

    dialect = dialect or load_settings().target
    if dialect not in DIALECTS:
        raise UserError(f"--dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
    print(to_sql(_project().compile(name, _as_of(as_of)).query, dialect))


@audience_app.command("count")
def audience_count(name: Name, as_of: AsOf = None) -> None:
    """Members of the audience now, without saving them; and how many lack its id type."""
    from orchestration.segments.evaluate import count_members
    from orchestration.warehouse import Warehouse

    project = _project()
    audience = project.audience(name)
    members, with_id = count_members(Warehouse(reader=True), project, name, _as_of(as_of))
    console.print(f"{name}: {members:,} members; {with_id:,} with {audience.id_type} "
                  f"({members - with_id:,} dropped for a missing {audience.id_type})"
                  + (f"; limit keeps at most {audience.limit.size:,}" if audience.limit else ""))


@audience_app.command("preview")
def audience_preview(
    name: Name,
    as_of: AsOf = None,
    rows: Annotated[int, typer.Option(help="Members to show.")] = 100,
) -> None:
    """Show members of the live definition with their id and tags, without saving anything."""
    from orchestration.segments.review import preview
    from orchestration.warehouse import Warehouse

    df = preview(Warehouse(reader=True), _project(), name, _as_of(as_of), rows)
    table = Table(title=f"{name}: {len(df)} member(s) shown")
    for col in df.columns:
        table.add_column(str(col), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(Text(_cell(v)) for v in row))
    console.print(table)


def _cell(value) -> str:
    """A table cell for any value pandas hands back: None, NaN, NA and NaT are empty."""
    import pandas as pd

    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):  # lists, arrays: not a missing scalar
        pass
    return str(value)


@audience_app.command("build")
def audience_build(
    names: Annotated[list[str] | None, typer.Argument(help="Audiences; default: all.")] = None,
    as_of: AsOf = None,
    one_by_one: Annotated[bool, typer.Option(help="One query per audience instead of a batch.")] = False,
) -> None:
    """Build audiences as new versions (with the audiences they read, first), in one batch."""
    from orchestration.warehouse import Warehouse

    project = _project()
    for name in names or []:
        project.audience(name)
    chosen = project.upstream(names) if names else project.order
    results = build_audiences(project, chosen, _as_of(as_of), Warehouse(), batch=not one_by_one)
    _print_build(results)


def build_audiences(project, names: list[str], today: dt.date, wh, batch: bool = True):
    from orchestration.segments.engine import build

    with _progress() as bar:
        task = bar.add_task("audiences", total=len(names))

        def step(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, description=f"audience {name}")

        report = build(project, names, today, wh=wh, batch=batch, progress=step)
    console.print(f"{len(report.results)} audience(s) built in {report.seconds:.1f} s "
                  f"({report.passes} evaluation pass(es)), as of {today}")
    return report.results


def _print_build(results) -> None:
    table = Table(title="Audiences built")
    for col in ("audience", "version", "size", "+added", "−removed", "dropped (no id)"):
        table.add_column(col, justify="left" if col == "audience" else "right")
    for r in results:
        table.add_row(r.audience, str(r.version), f"{r.size:,}", f"+{r.added:,}", f"−{r.removed:,}",
                      f"{r.dropped:,}")
    console.print(table)


@audience_app.command("list")
def audience_list() -> None:
    """Every audience file with its latest build and whether the file changed since."""
    from orchestration.segments.engine import versions
    from orchestration.warehouse import Warehouse

    project = _project()
    built: dict[str, dict] = {}
    for v in versions(Warehouse(reader=True)):
        built.setdefault(v["audience"], v)
    table = Table(title=f"{len(project.order)} audience(s) in audiences/")
    for col in ("audience", "kind", "id type", "refresh", "owner", "version", "size", "built at",
                "status"):
        table.add_column(col, justify="right" if col in ("version", "size") else "left")
    for name in sorted(project.order):
        a, b = project.audiences[name], built.get(name)
        if b is None:
            status = "[yellow]never built[/yellow]"
        elif b["definition_hash"] != project.definition_hash(name):
            status = "[yellow]changed since build[/yellow]"
        else:
            status = "[green]current[/green]"
        table.add_row(name, (a.set_op or "where") + (" + limit" if a.limit else ""), a.id_type,
                      Text(a.refresh), Text(a.owner), str(b["version"]) if b else "",
                      f"{b['size']:,}" if b else "", f"{b['built_at']:%Y-%m-%d %H:%M}" if b else "",
                      status)
    console.print(table)


@audience_app.command("diff")
def audience_diff(
    name: Name,
    against: Annotated[str | None, typer.Option(help="A git revision; default: the built version.")] = None,
    as_of: AsOf = None,
) -> None:
    """+N/−M members between the built version (or the definition at --against REV) and the
    working-tree definition, both evaluated now; nothing is saved."""
    from orchestration.segments.review import diff
    from orchestration.warehouse import Warehouse

    d = diff(Warehouse(reader=True), _project(), name, _as_of(as_of), against)
    if d.definition_diff:
        console.print(d.definition_diff, highlight=False, markup=False)
    console.print(f"{name}: {d.before} → working tree: [green]+{d.added:,}[/green] "
                  f"[red]−{d.removed:,}[/red] ({d.old_size:,} → {d.new_size:,} members)")
    for label, sample in (("added", d.added_sample), ("removed", d.removed_sample)):
        if sample:
            console.print(f"  {label}, e.g.: {', '.join(sample)}", highlight=False)


@audience_app.command("explain")
def audience_explain(
    name: Name,
    one_id: Annotated[str, typer.Argument(help="The person's one_id.")],
    as_of: AsOf = None,
) -> None:
    """Each condition of the audience, true or false for one person."""
    from rich.markup import escape

    from orchestration.segments.review import explain
    from orchestration.warehouse import Warehouse

    project = _project()
    lines = explain(Warehouse(reader=True), project, name, one_id, _as_of(as_of))
    for line in lines:
        mark = "[green]✓ true [/green]" if line.value else "[red]✗ false[/red]"
        console.print(f"{mark} {'  ' * line.depth}{escape(line.text)}", highlight=False)
    verdict = "meets" if lines[0].value else "does not meet"
    note = " (the limit is applied after)" if project.audiences[name].limit else ""
    console.print(f"{one_id} {verdict} the conditions of {name}{note}")


@audience_app.command("export")
def audience_export(
    name: Name,
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    id_type: Annotated[str | None, typer.Option(help="Id to export; default: the audience's.")] = None,
    hash_: Annotated[str, typer.Option("--hash", help="none, md5 or sha256 (hex of the value).")] = "none",
    version: Annotated[int | None, typer.Option(help="A kept version; default: the latest.")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Ids exactly as stored, for machines: no leading ' on ids a spreadsheet "
                      "would run as formulas (=, +, -, @).")] = False,
) -> None:
    """Write a built version's ids to a CSV file."""
    from orchestration.segments.review import export
    from orchestration.warehouse import Warehouse

    v, written, missing = export(Warehouse(reader=True), _project(), name, out, id_type, hash_, version, raw)
    console.print(f"{name} version {v}: {written:,} id(s) written to {out}"
                  + (f"; {missing:,} member(s) without that id left out" if missing else ""),
                  soft_wrap=True)


@bench_app.command("build")
def bench_build(
    users: Annotated[int, typer.Option(help="Customers in the generated data.")] = 1_000_000,
    days: Annotated[int, typer.Option(help="Days of data.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate and load N users, then time a full dbt build and record peak memory."""
    from orchestration.bench import bench_build as run

    run(users=users, days=days, seed=seed, console=console)


@bench_app.command("models")
def bench_models(
    transactions: Annotated[int, typer.Option(help="Synthetic paid orders for RFM.")] = 20_000_000,
    users: Annotated[int, typer.Option(help="People the orders belong to.")] = 1_000_000,
) -> None:
    """Time RFM over N transactions and AIPL for one day over the `bench build` warehouse."""
    from orchestration.bench import bench_models as run

    run(transactions=transactions, users=users, console=console)


@bench_app.command("ml")
def bench_ml() -> None:
    """Train and score the repurchase model and the recommender over the `bench build` warehouse."""
    from orchestration.bench import bench_ml as run

    run(console=console)


@bench_app.command("audiences")
def bench_audiences(
    count: Annotated[int, typer.Option(help="Synthetic audiences to build.")] = 100,
) -> None:
    """Build N synthetic audiences over the `bench build` warehouse: batch vs one query each."""
    from orchestration.bench import bench_audiences as run

    run(count=count, console=console)


@bench_app.command("deliveries")
def bench_deliveries(
    sizes: Annotated[str, typer.Option(help="Audience sizes, comma-separated.")] = "100000,1000000",
) -> None:
    """Members/s to Kafka (tansu) and to a batched webhook, and peak memory per audience size."""
    from orchestration.delivery.bench import bench_deliveries as run

    try:
        numbers = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--sizes {sizes!r}: give whole numbers separated by commas") from None
    run(numbers, console=console)


def main() -> None:
    """Run `oa`; turn every failure a user can cause into one message and exit code 2."""
    argv = sys.argv[1:]
    if "--wait" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        argv.remove("--wait")  # accepted anywhere: `oa deliver crm --wait`, `oa --wait load ...`
        os.environ["OA_LOCK_WAIT"] = "forever"
    from orchestration import locks

    locks.forget_writes()
    locks.keep_until_done()  # a command that wrote keeps the warehouse until its snapshot is out
    try:
        app(args=argv, standalone_mode=False)
        _publish_snapshot()
    except ValidationFailed as exc:
        err.print(f"[red]rejected:[/red] {escape(str(exc))}", highlight=False)
        if exc.report:
            err.print(exc.report, highlight=False, markup=False)
        sys.exit(2)
    except UserError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # usage errors (typer ships its own copy of click's exceptions)
        names = {c.__name__ for c in type(exc).__mro__}
        if "ClickException" in names:
            exc.show()
            sys.exit(exc.exit_code)
        if "Exit" in names:
            sys.exit(exc.exit_code)
        missing = _missing_relation(exc)
        if missing:
            err.print(f"[red]error:[/red] {escape(missing)}", highlight=False)
            sys.exit(2)
        raise
    finally:
        locks.release_kept()


def _publish_snapshot() -> None:
    """After a command that wrote the embedded warehouse, refresh the snapshot readers use while
    another command holds the file."""
    from orchestration.locks import wrote
    from orchestration.settings import load_settings

    if wrote():
        from orchestration.warehouse import publish_snapshot

        publish_snapshot(load_settings())


def _missing_relation(exc: Exception) -> str | None:
    """The message for a command run before the warehouse has what it reads (an empty
    warehouse, a model not built yet): DuckDB's catalog error or PostgreSQL's undefined table."""
    kind = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if kind in ("CatalogException", "UndefinedTable", "InvalidSchemaName"):
        match = re.search(r'(?:Table with name|Schema with name|relation|schema) "?([\w.]+)"? does not exist',
                          text)
        what = f"table {match.group(1)}" if match else "a table this command reads"
        return (f"the warehouse has no {what} yet: load data and build first "
                "(`make demo`, or `oa load ...` then `oa build`)")
    return None


if __name__ == "__main__":
    main()
