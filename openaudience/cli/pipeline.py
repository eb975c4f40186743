"""`oa build`, `oa nightly`, `oa status`: dbt and the nightly job, and what the warehouse holds."""

from __future__ import annotations

from typing import Annotated

import typer

from openaudience.cli.common import console, parse_date
from openaudience.core.errors import UserError

app = typer.Typer()  # top-level commands, merged into `oa`


@app.command("build")
def build(
    select: Annotated[str | None, typer.Option(help="dbt selection, e.g. marts.")] = None,
    as_of: Annotated[str | None, typer.Option(help="As-of date for the tag windows.")] = None,
) -> None:
    """dbt build (seeds, models, tests) on the configured warehouse, with progress."""
    from openaudience.core.dbt import run_dbt_build

    if as_of:
        parse_date(as_of, "--as-of")
    outcome = run_dbt_build(select=select, as_of=as_of, console=console)
    if not outcome.success:
        raise UserError(f"dbt build failed: {outcome.summary}")
    console.print(f"[green]dbt build passed[/green]: {outcome.summary}")


@app.command("nightly")
def nightly() -> None:
    """Run the nightly_refresh Dagster job in this process (no daemon needed)."""
    from orchestration.launch import run_nightly

    result = run_nightly(console)
    if not result.success:
        raise UserError(f"nightly_refresh failed (run {result.run_id}); see `make ui` for the run")


@app.command("status")
def status() -> None:
    """Where the warehouse is, what is loaded, what is built."""
    from openaudience.cli.status import print_status

    print_status(console)
