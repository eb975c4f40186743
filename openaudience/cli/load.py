"""`oa load`, `oa load-dir`: files into the raw tables, validated (see docs/loading.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from openaudience.cli.common import console, err, print_counts, progress_bar
from openaudience.core.errors import UserError

app = typer.Typer()  # top-level commands, merged into `oa`


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
    from openaudience.core.warehouse import Warehouse
    from openaudience.raw.loading import format_report, load_file

    warehouse = Warehouse()
    with progress_bar() as progress:
        task = progress.add_task(f"loading {table}", total=None)
        result = load_file(warehouse, table, file, mode=mode, quarantine=quarantine, force=force,
                           progress=lambda n: progress.advance(task, n))
        progress.update(task, total=result.rows_read, completed=result.rows_read)
    if result.rows_quarantined:  # the file's values: printed as they are, never as markup
        console.print(format_report(result), markup=False, highlight=False)
    _report(warehouse, [result])
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
    counts = load_folder(folder, mode, quarantine, force)
    print_counts(f"Loaded from {folder}", counts)


def load_folder(folder: Path, mode: str, quarantine: bool, force: bool = False) -> dict[str, int]:
    """One transaction for the whole folder: a refused file leaves every table as it was."""
    from openaudience.core.schema.raw import LOAD_ORDER
    from openaudience.core.warehouse import Warehouse
    from openaudience.raw.loading import format_report, load_files

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
    with progress_bar() as progress:
        tasks = {name: progress.add_task(f"loading {name}", total=None) for name, _ in files}
        warehouse = Warehouse()
        results = load_files(warehouse, files, mode=mode, quarantine=quarantine, force=force,
                             progress=lambda name, n: progress.advance(tasks[name], n))
    for result in results:
        if result.rows_quarantined:
            console.print(format_report(result), markup=False, highlight=False)
    _report(warehouse, results)
    return {result.table: result.rows_loaded for result in results}


def _report(warehouse, results) -> None:
    """The loads as materializations of the raw assets, so the Dagster UI shows them."""
    from orchestration.observe import report_loads

    report_loads(warehouse, results, warn=lambda text: err.print(f"note: {text}"))
