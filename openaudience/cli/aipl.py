"""`oa aipl backfill`: AIPL stages for past days (the aipl_daily model)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from openaudience.cli.common import console, parse_date
from openaudience.core.errors import UserError

aipl_app = typer.Typer(no_args_is_help=True, help="AIPL stages per day (the aipl_daily model).")


@aipl_app.command("backfill")
def aipl_backfill(
    start: Annotated[str, typer.Option(help="First day to compute (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day to compute (YYYY-MM-DD).")],
) -> None:
    """Compute (or recompute) aipl_daily for every day from --start to --end, then test it."""
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    outcome = backfill_aipl(first, last)
    console.print(f"[green]aipl_daily {first} to {last}[/green]: {outcome.summary}")


def backfill_aipl(first: dt.date, last: dt.date):
    from openaudience.core.dbt import run_dbt_build

    if first > last:
        raise UserError(f"--start {first} is after --end {last}")
    if (last - first).days > 366:
        raise UserError("backfill at most 367 days at a time")
    outcome = run_dbt_build(select="aipl_daily+", console=console, as_of=last.isoformat(),
                            extra_vars={"aipl_start": first.isoformat(), "aipl_end": last.isoformat()})
    if not outcome.success:
        raise UserError(f"aipl_daily backfill failed: {outcome.summary}")
    return outcome
