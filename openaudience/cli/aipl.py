"""`oa aipl compile`: the AIPL rules into SQL; `oa aipl backfill`: AIPL stages for past days
(the aipl_daily model)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from openaudience.cli.common import console, err, parse_date
from openaudience.core.errors import UserError

aipl_app = typer.Typer(no_args_is_help=True, help="AIPL stages per day (the aipl_daily model).")


@aipl_app.command("compile")
def aipl_compile(
    check: Annotated[bool, typer.Option("--check", help="Only check that the generated file is "
                                                        "current; exit 2 when it is not.")] = False,
) -> None:
    """Compile the AIPL rules of models/marts/aipl/_aipl__models.yml into SQL for every engine
    (macros/aipl/_aipl_rules.sql), which the aipl_daily model runs."""
    from openaudience.conditions.aipl import MACRO_FILE, RULES_FILE, compile_rules

    rules, changed = compile_rules(write=not check)
    models = ", ".join(m.name for m in rules.rules.models)
    if check and changed:
        raise UserError(f"{MACRO_FILE} was not made from the rules in {RULES_FILE}; run `oa aipl compile`")
    if check:
        console.print(f"[green]{MACRO_FILE}[/green] is current ({models})")
    elif changed:
        console.print(f"[green]wrote {MACRO_FILE}[/green] from {RULES_FILE} ({models})")
    else:
        err.print(f"{MACRO_FILE} was already current ({models})")


@aipl_app.command("backfill")
def aipl_backfill(
    start: Annotated[str, typer.Option(help="First day to compute (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day to compute (YYYY-MM-DD).")],
) -> None:
    """Compute (or recompute) aipl_daily for every day from --start to --end, then test it."""
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    from orchestration.observe import report_aipl_days

    outcome = backfill_aipl(first, last)
    console.print(f"[green]aipl_daily {first} to {last}[/green]: {outcome.summary}")
    # the days show as materialized partitions of marts/aipl_daily in Dagster
    report_aipl_days(first, last, warn=lambda text: err.print(f"note: {text}", markup=False))


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
