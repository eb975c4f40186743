"""`oa report`: self-contained HTML reports with charts (RFM, AIPL, pivot, audience)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from openaudience.cli.common import console, parse_date

report_app = typer.Typer(no_args_is_help=True,
                         help="Self-contained HTML reports with charts (RFM, AIPL, pivot).")


def _report_path(out: Path | None, name: str) -> Path:
    from openaudience.core.settings import load_settings

    return out or load_settings().home / "reports" / name


@report_app.command("rfm")
def report_rfm(
    name: Annotated[str, typer.Argument(help="RFM model, e.g. rfm_default.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """RFM analysis of one model: core metrics, the eight user types, bubble charts, trend."""
    print(write_rfm_report(name, out))


def write_rfm_report(name: str, out: Path | None = None) -> Path:
    from openaudience.analysis import report
    from openaudience.analysis.rfm import analyse_rfm
    from openaudience.core.report import slug, write
    from openaudience.core.warehouse import Warehouse

    with console.status(f"analysing RFM model {name}"):
        page = report.rfm_page(analyse_rfm(Warehouse(reader=True), name))
    return write(page, _report_path(out, f"rfm_{slug(name)}.html"))


@report_app.command("aipl")
def report_aipl(
    name: Annotated[str, typer.Argument(help="AIPL model, e.g. default.")],
    start: Annotated[str, typer.Option(help="First day of the flow (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day of the flow (YYYY-MM-DD).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """AIPL flow between two days: stage counts, conversions, churn, and the 30-day trend."""
    print(write_aipl_report(name, parse_date(start, "--start"), parse_date(end, "--end"), out))


def write_aipl_report(name: str, start: dt.date, end: dt.date, out: Path | None = None) -> Path:
    from openaudience.analysis import report
    from openaudience.analysis.aipl import analyse_aipl
    from openaudience.core.report import slug, write
    from openaudience.core.warehouse import Warehouse

    with console.status(f"analysing AIPL model {name}"):
        page = report.aipl_page(analyse_aipl(Warehouse(reader=True), name, start, end))
    return write(page, _report_path(out, f"aipl_{slug(name)}_{start}_{end}.html"))


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
    from openaudience.analysis import report
    from openaudience.analysis.pivot import pivot_tags
    from openaudience.core.report import slug, write
    from openaudience.core.warehouse import Warehouse

    with console.status(f"pivoting {len(tags)} tag(s)"):
        page = report.pivot_page(pivot_tags(Warehouse(reader=True), tags, exclude_null), exclude_null)
    return write(page, _report_path(out, f"pivot_{slug('_'.join(tags))}.html"))


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
    from openaudience.analysis import report
    from openaudience.analysis.audience import analyse_audience
    from openaudience.core.report import slug, write
    from openaudience.core.warehouse import Warehouse

    with console.status(f"analysing audience {name}"):
        page = report.audience_page(analyse_audience(Warehouse(reader=True), name, version, rfm_model))
    return write(page, _report_path(out, f"audience_{slug(name)}.html"))


@report_app.command("journey")
def report_journey(
    name: Annotated[str, typer.Argument(help="Journey name (its file's stem).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """A journey as a self-contained HTML report: the flow with people per step and branch, each
    send's funnel, the holdout's lift on the goal, the cycles."""
    path = write_journey_report(name, out)
    console.print(f"journey report: {path}", soft_wrap=True)


def write_journey_report(name: str, out: Path | None = None) -> Path:
    from openaudience.core.errors import UserError
    from openaudience.core.report import slug, write
    from openaudience.core.warehouse import Warehouse
    from openaudience.journeys.engine import journey_row
    from openaudience.journeys.report import journey_page
    from openaudience.journeys.source import Plan

    wh = Warehouse(reader=True)
    row = journey_row(wh, name)
    if row is None:
        raise UserError(f"journey {name} has not been started: nothing to report yet "
                        f"(`oa journey simulate {name}` shows what it would do)")
    with console.status(f"reporting journey {name}"):
        page = journey_page(wh, Plan.from_json(row["definition"]), row)
    return write(page, _report_path(out, f"journey_{slug(name)}.html"))
