"""`oa journey`: automated marketing journeys, one YAML file each in journeys/.

    oa journey validate [FILES...]       # every rule, with file:line; exits 2 on problems
    oa journey list                      # every journey and its status
    oa journey start NAME                # running (or pending while 10 run)
    oa journey tick [NAMES...]           # start due cycles, advance everyone due
                                         # (Dagster does it every minute)
    oa journey status NAME               # cycles, node counts, sub-tasks
    oa journey pause | resume | stop NAME
    oa journey copy NAME NEW_NAME        # a started journey is changed by copying it
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from openaudience.cli.common import console, err
from openaudience.core.errors import UserError

journey_app = typer.Typer(no_args_is_help=True,
                          help="Journeys: automated marketing as YAML in journeys/ (sends, waits, "
                               "branches, holdouts), run by `oa journey tick` or Dagster.")

Name = Annotated[str, typer.Argument(help="Journey name (its file's stem).")]
At = Annotated[str | None, typer.Option("--at", help="Act as if it were this local time (OA_TIMEZONE), "
                                                     "e.g. '2026-07-01 09:00': for demos and tests.")]


def _at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    from openaudience.core.settings import load_settings
    from openaudience.journeys.clock import to_utc

    try:
        local = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise UserError("--at must be a local date and time like '2026-07-01 09:00', "
                        f"not {value!r}") from None
    if local.tzinfo is not None:
        raise UserError("--at is a local time of OA_TIMEZONE; write it without a time zone")
    return to_utc(local, load_settings().timezone)


def load(folder: Path | None = None):
    """The journeys, audiences and destinations of the project, checked."""
    from openaudience.delivery.source import load_destinations
    from openaudience.journeys.source import JOURNEY_DIR, load_journeys
    from openaudience.segments.source import load_project

    project = load_project()
    dests = load_destinations(audiences=project)
    return load_journeys(folder or JOURNEY_DIR, project, dests), project, dests


def context(progress=None):
    from openaudience.core.warehouse import Warehouse
    from openaudience.journeys.engine import Context

    journeys, project, dests = load()
    return Context(Warehouse(), journeys, dests, project, progress=progress)


@journey_app.command("validate")
def journey_validate(
    files: Annotated[list[Path] | None, typer.Argument(help="Files; default: every journeys/*.yml.")] = None,
) -> None:
    """Check journey files (for pull requests): every rule of the language, references to
    audiences, destinations and tags, with file:line. Exits 2 when a file has problems."""
    from openaudience.journeys.source import JOURNEY_DIR, journey_files

    journeys, _, _ = load()
    paths = files or journey_files(JOURNEY_DIR)
    if not paths:
        raise UserError("no journey files found in journeys/")
    stems = {Path(p).stem for p in paths}
    for p in paths:
        if Path(p).resolve().parent != JOURNEY_DIR.resolve():
            raise UserError(f"{p}: journey files live in {JOURNEY_DIR}; validate them there")
    problems = [str(p) for stem, ps in journeys.problems.items() if stem in stems for p in ps]
    changed = _changed_started(journeys, stems)
    if problems or changed:
        raise UserError(f"{len(problems) + len(changed)} problem(s):\n" + "\n".join(problems + changed))
    console.print(f"[green]{len(paths)} journey file(s) valid[/green]")


def _changed_started(journeys, stems: set[str]) -> list[str]:
    """Started journeys whose file differs from what runs: refused, with what to do."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.journeys.engine import statuses

    try:
        rows = statuses(Warehouse(reader=True), journeys)
    except UserError:
        return []
    out = []
    for r in rows:
        if r["journey"] in stems and r.get("changed") and r["status"] not in ("incomplete", "not_started"):
            out.append(f"journeys/{r.get('file') or r['journey'] + '.yml'}: journey {r['journey']} started "
                       f"{r.get('started_at') or ''} and is {r['status']}; a started journey cannot be "
                       "edited: restore the file (git checkout) or copy it as a new journey: "
                       f"oa journey copy {r['journey']} NEW_NAME")
    return out


@journey_app.command("list")
def journey_list() -> None:
    """Every journey file and started journey with its status (spec §5.2)."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.journeys.engine import statuses

    journeys, _, _ = load()
    table = Table(title="journeys")
    for c in ("journey", "status", "audience", "cycles", "entered", "inside", "next cycle (UTC)", "note"):
        table.add_column(c, justify="right" if c in ("cycles", "entered", "inside") else "left",
                         no_wrap=c in ("journey", "status"), overflow="fold")
    for r in statuses(Warehouse(reader=True), journeys):
        plan = journeys.plans.get(r["journey"])
        audience = r.get("audience") or (plan.journey.trigger.label if plan else "")
        note = ""
        if r["problems"]:
            note = f"{len(r['problems'])} problem(s): oa journey validate"
        elif r.get("changed"):
            note = "file changed since start"
        elif r.get("error"):
            note = r["error"][:80]
        table.add_row(r["journey"], r["status"], audience, str(r.get("cycles") or ""),
                      f"{r.get('entered', 0):,}" if "entered" in r else "",
                      f"{r.get('inside', 0):,}" if "inside" in r else "",
                      str(r.get("next_cycle_at") or ""), escape(note))
    console.print(table)


@journey_app.command("start")
def journey_start(name: Name, at: At = None) -> None:
    """Start a complete journey: running (its first cycle at the next tick, or at its schedule's
    first time), or pending while OA_JOURNEY_MAX_RUNNING journeys run."""
    from openaudience.journeys.engine import start

    status = start(context(), name, _at(at))
    console.print(f"journey {name}: {status}" + (" (waiting for a free place)" if status == "pending" else
                                                  "; `oa journey tick` (or Dagster's sensor) runs it"))
    _observe([name])


@journey_app.command("pause")
def journey_pause(name: Name) -> None:
    """Pause: no new cycle, no sends; people keep their places until `resume`."""
    from openaudience.journeys.engine import pause

    console.print(f"journey {name}: {pause(context(), name)}")
    _observe([name])


@journey_app.command("resume")
def journey_resume(name: Name, at: At = None) -> None:
    """Resume a paused or failed journey."""
    from openaudience.journeys.engine import resume

    console.print(f"journey {name}: {resume(context(), name, _at(at))}")
    _observe([name])


@journey_app.command("stop")
def journey_stop(name: Name, at: At = None) -> None:
    """Stop for good: people inside leave the journey; it cannot be restarted (copy it)."""
    from openaudience.journeys.engine import stop

    console.print(f"journey {name}: {stop(context(), name, _at(at))}")
    _observe([name])


@journey_app.command("tick")
def journey_tick(
    names: Annotated[list[str] | None, typer.Argument(help="Journeys; default: every running one.")] = None,
    at: At = None,
) -> None:
    """Start the cycles that are due and move everyone whose wait or branch is due."""
    from openaudience.journeys.engine import tick

    ctx = context(progress=lambda text: err.print(escape(text), highlight=False))
    reports = tick(ctx, names or None, _at(at))
    if not reports:
        console.print("no running journeys")
    failed = []
    for r in reports:
        moved = ", ".join(f"{node} {n:,}" for node, n in r.moved.items()) or "nobody due"
        cycles = f"; cycle {', '.join(map(str, r.cycles_started))} started" if r.cycles_started else ""
        console.print(f"{r.journey}: {r.status}{cycles}; moved: {moved}")
        for a in r.actions:
            if a["kind"] == "send":
                console.print(f"  {a['node']}: {a['status']}: sent {a.get('sent', 0):,}, "
                              f"failed {a.get('failed', 0):,}, "
                              f"suppressed {a.get('suppressed', 0):,}, capped {a.get('capped', 0):,}")
            else:
                console.print(f"  {a['node']}: audience {a['audience']} v{a['version']}: "
                              f"{a['people']:,} people")
        for note in r.notes:
            err.print(f"[yellow]note[/yellow]: {escape(r.journey)}: {escape(note)}", highlight=False)
        if r.error:
            failed.append(f"{r.journey}: {r.error}")
    _observe([r.journey for r in reports], reports)
    if failed:
        raise UserError("journey failed: " + "; ".join(failed) + " (fix it, then `oa journey resume NAME`)")


@journey_app.command("status")
def journey_status(name: Name) -> None:
    """A journey's status, cycles (execution records), people per node and sub-tasks."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.journeys import engine

    journeys, _, _ = load()
    wh = Warehouse(reader=True)
    row = engine.journey_row(wh, name)
    if row is None:
        plan = journeys.get(name)
        console.print(f"journey {name}: not started ({len(plan.nodes) - 1} steps, audience "
                      f"{plan.journey.trigger.label}); `oa journey start {name}`")
        return
    from openaudience.journeys.source import Plan

    plan = Plan.from_json(row["definition"])
    error = f" ({escape(row['error'])})" if row["error"] else ""
    console.print(f"[bold]{name}[/bold]: {row['status']}" + error)
    current = journeys.plans.get(name)
    if current is None or current.digest != row["definition_hash"]:
        err.print(f"[yellow]note[/yellow]: journeys/{row['file']} changed since the journey started; "
                  "it runs as started. Copy it as a new journey to run the change: "
                  f"oa journey copy {name} NEW_NAME")
    cyc = engine.cycles(wh, name)
    if cyc:
        t = Table(title="cycles")
        for c in ("cycle", "status", "audience version", "started", "finished", "entered", "held out",
                  "kept out (re-entry)"):
            t.add_column(c)
        for c in cyc:
            t.add_row(str(c["cycle"]), c["status"], str(c["audience_version"]), str(c["started_at"]),
                      str(c["finished_at"] or ""), f"{c['entered']:,}", f"{c['held_out']:,}",
                      f"{c['not_reentered']:,}")
        console.print(t)
    print_steps(wh, name, plan)
    acts = engine.actions(wh, name)
    if acts:
        t = Table(title="sub-tasks (one per action execution)")
        for c in ("cycle", "step", "target", "status", "people", "held out", "sent", "failed", "suppressed",
                  "capped", "skipped"):
            t.add_column(c, no_wrap=c == "step", overflow="fold")
        for a in acts:
            target = (f"{a['destination']} ({a['channel']})" if a["kind"] == "send"
                      else f"audience {a['audience']} v{a['audience_version']}")
            t.add_row(str(a["cycle"]), a["node"], target, a["status"], f"{a['people']:,}",
                      f"{a['held_out']:,}", f"{a['sent']:,}", f"{a['failed']:,}", f"{a['suppressed']:,}",
                      f"{a['capped']:,}", f"{a['skipped']:,}")
        console.print(t)


@journey_app.command("copy")
def journey_copy(name: Name,
                 new_name: Annotated[str, typer.Argument(help="The new journey's name.")]) -> None:
    """Copy a journey file under a new name: how a started journey is changed."""
    from openaudience.core.yaml_files import line_of, read_yaml
    from openaudience.journeys.source import JOURNEY_DIR, JourneyErrors, journey_files
    from openaudience.journeys.spec import NAME

    if not re.match(NAME, new_name) or len(new_name) > 80:
        raise UserError(f"{new_name!r} is not a journey name: lower-case letters, digits and _, starting "
                        "with a letter, at most 80 characters")
    source = next((p for p in journey_files(JOURNEY_DIR) if p.stem == name), None)
    if source is None:
        raise UserError(f"no journeys/{name}.yml")
    target = JOURNEY_DIR / f"{new_name}.yml"
    if target.exists():
        raise UserError(f"{target} exists already; choose another name")
    _, lines = read_yaml(source, JourneyErrors)
    text = source.read_text(encoding="utf-8").splitlines(keepends=True)
    at = line_of(lines, ("name",)) - 1
    text[at] = re.sub(r"^(\s*name\s*:\s*).*?(\s*(#.*)?)$", lambda m: f"{m.group(1)}{new_name}{m.group(2)}",
                      text[at].rstrip("\n")) + "\n"
    target.write_text("".join(text), encoding="utf-8")
    console.print(f"copied journeys/{source.name} to journeys/{target.name}; edit it, then "
                  f"`oa journey start {new_name}`")


def print_steps(wh, name: str, plan=None) -> None:
    """A journey's people per step: reached, waiting, held out, and the branches they left by."""
    from openaudience.journeys import engine
    from openaudience.journeys.source import Plan

    if plan is None:
        plan = Plan.from_json(engine.journey_row(wh, name)["definition"])
    counts = engine.node_counts(wh, name)
    t = Table(title=f"{name}: people per step")
    for c in ("step", "kind", "reached", "waiting", "held out", "left by"):
        t.add_column(c, no_wrap=c in ("step", "kind"), overflow="fold")
    for node in plan.nodes.values():
        c = counts.get(node.id, {"reached": 0, "waiting": 0, "held_out": 0, "branches": {}})
        left = ", ".join(f"{b} {n:,}" for b, n in c["branches"].items())
        t.add_row(node.id, node.kind, f"{c['reached']:,}", f"{c['waiting']:,}", f"{c['held_out']:,}", left)
    console.print(t)


def _observe(names: list[str], reports=None) -> None:
    """What the command did, shown on the journeys' assets in Dagster."""
    from orchestration.observe import report_journeys

    if not names:
        return

    report_journeys(names, warn=lambda text: err.print(f"[yellow]note[/yellow]: {escape(text)}"),
                    reports=reports)


@journey_app.command("simulate")
def journey_simulate(
    name: Name,
    as_of: Annotated[str, typer.Option("--as-of", help="The day it would have started (09:00 local).")],
    days: Annotated[int, typer.Option(help="Days of history to run it over (at most up to now).")] = 30,
    out: Annotated[Path | None, typer.Option(help="HTML report to write.")] = None,
) -> None:
    """Run a journey file against history without sending anything: people per step and branch,
    what each send would send after suppression and caps, and how many converted (the goal, as
    history has it). Writes the same report as a real run, marked simulated."""
    from openaudience.cli.common import parse_date
    from openaudience.cli.report import _report_path
    from openaudience.core.report import slug, write
    from openaudience.core.settings import load_settings
    from openaudience.journeys import engine
    from openaudience.journeys.clock import to_utc
    from openaudience.journeys.report import journey_page

    if not 1 <= days <= 366:
        raise UserError("--days must be from 1 to 366")
    day = parse_date(as_of, "--as-of")
    start_at = to_utc(dt.datetime.combine(day, dt.time(9, 0)), load_settings().timezone)
    ctx = context(progress=lambda text: err.print(escape(text), highlight=False))
    try:
        result = engine.simulate(ctx, name, start_at, start_at + dt.timedelta(days=days))
        page = journey_page(ctx.spark or ctx.wh, result.plan, result.row, simulated=True)
        counts = engine.node_counts(ctx.wh, result.plan.name)
        acts = engine.actions(ctx.wh, result.plan.name)
    finally:
        engine.drop_simulation(ctx, name)
    path = write(page, _report_path(out, f"journey_{slug(name)}_simulated.html"))
    table = Table(title=f"{name}, simulated from {day} ({result.ticks} steps of the clock)")
    for c in ("step", "kind", "reached", "held out", "left by"):
        table.add_column(c)
    for node in result.plan.nodes.values():
        c = counts.get(node.id, {"reached": 0, "held_out": 0, "branches": {}})
        left = ", ".join(f"{b} {n:,}" for b, n in c["branches"].items())
        table.add_row(node.id, node.kind, f"{c['reached']:,}", f"{c['held_out']:,}", left)
    console.print(table)
    for a in acts:
        if a["kind"] == "send":
            console.print(f"{a['node']} ({a['destination']}, {a['channel']}): would send {a['pending']:,}; "
                          f"suppressed {a['suppressed']:,}, capped {a['capped']:,}, "
                          f"skipped {a['skipped']:,}, "
                          f"held out {a['held_out']:,}")
    if result.still_inside:
        console.print(f"{result.still_inside:,} people would still be inside at {result.ended_at} (UTC)")
    console.print(f"report: {path}", soft_wrap=True)


@journey_app.command("report")
def journey_report(
    name: Name,
    out: Annotated[Path | None, typer.Option(help="HTML file to write.")] = None,
) -> None:
    """The journey's HTML report (as `oa report journey NAME`): the flow with people per step,
    each send's funnel, the holdout's lift, the cycles."""
    from openaudience.cli.report import write_journey_report

    console.print(f"journey report: {write_journey_report(name, out)}", soft_wrap=True)
