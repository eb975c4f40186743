"""`oa audience`: audiences as YAML segments in audiences/, compiled to SQL, built as versions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from openaudience.cli.common import console, err, parse_date, progress_bar
from openaudience.core.errors import UserError

audience_app = typer.Typer(no_args_is_help=True,
                           help="Audiences: YAML segments in audiences/, compiled to SQL.")


@audience_app.command("validate")
def audience_validate(
    files: Annotated[list[Path] | None, typer.Argument(help="Files; default: every audiences/*.yml.")] = None,
) -> None:
    """Check audience files (for pull requests): exits 2 and lists every problem with its line.
    References, set-operation id types, cycles and depth are checked across the folder."""
    from openaudience.segments.source import AUDIENCE_DIR, AudienceErrors, audience_files, load_project

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

    return parse_date(as_of, "--as-of") if as_of else refresh_date()


def _project():
    from openaudience.segments.source import load_project

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
    from openaudience.core.settings import load_settings
    from openaudience.segments.compiler import DIALECTS, to_sql

    dialect = dialect or load_settings().target
    if dialect not in DIALECTS:
        raise UserError(f"--dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
    print(to_sql(_project().compile(name, _as_of(as_of)).query, dialect))


@audience_app.command("count")
def audience_count(name: Name, as_of: AsOf = None) -> None:
    """Members of the audience now, without saving them; and how many lack its id type."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.evaluate import count_members

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
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.review import preview

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
    from openaudience.core.warehouse import Warehouse

    project = _project()
    for name in names or []:
        project.audience(name)
    chosen = project.upstream(names) if names else project.order
    today, wh = _as_of(as_of), Warehouse()
    results = build_audiences(project, chosen, today, wh, batch=not one_by_one)
    print_build(results)
    from orchestration.observe import report_audience_builds

    report_audience_builds(wh, results, today, warn=lambda text: err.print(f"note: {text}"))


def build_audiences(project, names: list[str], today: dt.date, wh, batch: bool = True):
    from openaudience.segments.engine import build

    with progress_bar() as bar:
        task = bar.add_task("audiences", total=len(names))

        def step(name: str, done: int, total: int) -> None:
            bar.update(task, completed=done, description=f"audience {name}")

        report = build(project, names, today, wh=wh, batch=batch, progress=step)
    console.print(f"{len(report.results)} audience(s) built in {report.seconds:.1f} s "
                  f"({report.passes} evaluation pass(es)), as of {today}")
    return report.results


def print_build(results) -> None:
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
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.engine import versions

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
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.review import diff

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

    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.review import explain

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
    from openaudience.core.warehouse import Warehouse
    from openaudience.segments.review import export

    v, written, missing = export(Warehouse(reader=True), _project(), name, out, id_type, hash_, version, raw)
    console.print(f"{name} version {v}: {written:,} id(s) written to {out}"
                  + (f"; {missing:,} member(s) without that id left out" if missing else ""),
                  soft_wrap=True)
