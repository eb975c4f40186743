"""`oa deliver` and `oa suppress`: deliveries from the command line.

    oa deliver crm_coupon_webhook [--dry-run] [--force]    # or --all
    oa deliver status [DESTINATION]
    oa deliver replay DESTINATION
    oa deliver validate
    oa suppress add --id-type mobile --reason unsubscribe [--channel webhook] (--file F | IDS...)
    oa suppress list
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from openaudience.core.errors import UserError

console = Console()


class _DeliverGroup(TyperGroup):
    """`oa deliver NAME` is `oa deliver send NAME`; the other words are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["send", *args]
        return super().parse_args(ctx, args)


deliver_app = typer.Typer(cls=_DeliverGroup, no_args_is_help=True,
                          help="Deliver audiences to the channels of destinations/*.yml: "
                               "`oa deliver NAME [--dry-run]` or `oa deliver --all`, and the "
                               "commands below.")
suppress_app = typer.Typer(no_args_is_help=True,
                           help="The suppression list: ids no delivery may message.")


def _destinations():
    from openaudience.delivery.source import load_destinations

    return load_destinations()


def run_deliveries(names: list[str], dry_run: bool = False, force: bool = False,
                   trigger: str = "manual", wh=None, out: Console | None = None) -> list:
    """Deliver each destination in turn with a progress bar; one channel failing does not stop
    the others. Returns every run summary."""
    from openaudience.delivery.engine import deliver

    out = out or console
    dests = _destinations()
    summaries, errors = [], []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out, disable=dry_run) as bar:
        for name in names:
            task = bar.add_task(f"deliver {name}", total=None)

            def step(_name: str, done: int, total: int, task=task) -> None:
                bar.update(task, completed=done, total=total)

            try:
                summaries += deliver(dests, name, wh=wh, dry_run=dry_run, force=force, trigger=trigger,
                                     progress=step)
            except UserError as exc:
                errors.append(f"{name}: {exc}")
    print_summaries(summaries, out)
    if not dry_run and summaries:
        from orchestration.observe import report_deliveries

        report_deliveries(summaries, warn=lambda text: out.print(f"[yellow]note[/yellow]: {escape(text)}"))
    for s in summaries:
        if s.error:
            out.print(f"[yellow]{s.destination}[/yellow]: {escape(s.error)}", soft_wrap=True)
    if errors:
        raise UserError("\n".join(errors))
    return summaries


def print_summaries(summaries: list, out: Console | None = None) -> None:
    out = out or console
    if not summaries:
        out.print("nothing to deliver: every destination has its audience's latest version")
        return
    table = Table(title="Deliveries")
    cols = ("destination", "v", "status", "planned", "sent", "failed", "held", "pending")
    widest = max(len(s.destination) for s in summaries)
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:3] else "right",
                         min_width=widest if col == "destination" else None,
                         no_wrap=col in ("destination", "status"))
    for s in summaries:
        c = s.counts
        status = s.status + (" (resumed)" if s.resumed and not s.dry_run else "")
        colour = {"succeeded": "green", "partial": "yellow", "stopped": "red"}.get(s.status, "cyan")
        held = c.get("suppressed", 0) + c.get("capped", 0) + c.get("skipped", 0)
        table.add_row(s.destination, str(s.audience_version), f"[{colour}]{status}[/{colour}]",
                      *(f"{n:,}" for n in (c.get("planned", 0), c.get("sent", 0), c.get("failed", 0),
                                           held, c.get("pending", 0))))
    table.caption = ("v: audience version; planned: changes since the last delivery; held: "
                     "suppressed, capped or skipped")
    out.print(table)
    for s in summaries:
        if s.dry_run and s.preview:
            preview = Table(title=f"{s.destination}: first {len(s.preview)} of what would be sent")
            for col in ("op", "one_id", "id", "variables"):
                preview.add_column(col)
            for row in s.preview:
                preview.add_row(*(escape(str(row[k])) for k in ("op", "one_id", "id", "variables")))
            out.print(preview)


@deliver_app.command("send", hidden=True)
def send(
    names: Annotated[list[str] | None, typer.Argument(help="Destination names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every destination.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would be sent; send nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Deliver even if the latest version was delivered already.")] = False,
) -> None:
    """Deliver destinations: resume unfinished runs, then send the latest audience version."""
    dests = _destinations()
    chosen = (sorted(n for n, d in dests.destinations.items() if d.schedule != "journey") if all_
              else (names or []))
    if not chosen:
        raise UserError("name a destination (oa deliver NAME) or give --all")
    for name in chosen:
        dests.get(name)
    summaries = run_deliveries(chosen, dry_run=dry_run, force=force)
    if any(s.status == "stopped" for s in summaries):
        raise UserError("a delivery stopped before the end; run the same command again to resume")


@deliver_app.command("status")
def status(
    destination: Annotated[str | None, typer.Argument(help="One destination; default: all.")] = None,
    limit: Annotated[int, typer.Option(help="Runs to show.")] = 20,
) -> None:
    """The latest delivery runs with their counts, and the open dead letters."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.engine import dead_letters, runs

    wh = Warehouse(reader=True)
    rows = runs(wh, destination, limit)
    table = Table(title="Delivery runs" + (f" of {destination}" if destination else ""),
                  caption="held back: suppressed, capped or skipped; see delivery.delivery_log")
    cols = ("started", "destination", "v", "status", "sent", "failed", "held back", "pending")
    for col in cols:  # a status whole: "interrupted" must never read "interrupt…"
        table.add_column(col, justify="left" if col in cols[:4] else "right", no_wrap=col == "status",
                         min_width=len("interrupted") if col == "status" else None)
    colours = {"succeeded": "green", "partial": "yellow", "stopped": "red", "interrupted": "red"}
    for r in rows:
        held = r["suppressed"] + r["capped"] + r["skipped"]
        colour = colours.get(r["status"], "cyan")
        table.add_row(f"{r['started_at']:%m-%d %H:%M}", escape(r["destination"]), str(r["audience_version"]),
                      f"[{colour}]{escape(r['status'])}[/{colour}]"
                      + ("" if r["trigger"] == "manual" else f" ({escape(r['trigger'])})"),
                      *(f"{n:,}" for n in (r["sent"], r["failed"], held, r["pending"])))
    console.print(table)
    for r in rows:
        if r["status"] == "interrupted":
            console.print(_interrupted(r), soft_wrap=True)
    names = [destination] if destination else sorted({r["destination"] for r in rows})
    latest = {}
    for r in rows:  # newest first: each destination's latest run, and what it said
        latest.setdefault(r["destination"], r)
    for name in names:
        if name in latest and latest[name]["error"] and latest[name]["status"] != "interrupted":
            # the error quotes peers' replies and files' text: printed as text, never as markup
            console.print(f"[yellow]{escape(name)}[/yellow] ({escape(latest[name]['status'])}): "
                          f"{escape(latest[name]['error'])}", soft_wrap=True)
        n = dead_letters(wh, name)
        if n:
            console.print(f"{escape(name)}: {n:,} dead letter(s); send them again with "
                          f"`oa deliver replay {escape(name)}`")


def _interrupted(r: dict) -> str:
    """What a user needs about a run whose process died: what it had done, and how to go on."""
    beat = f"{r['heartbeat_at']:%Y-%m-%d %H:%M:%S} UTC" if r["heartbeat_at"] else "never"
    owner = f"process {r['pid']} on {escape(str(r['host']))}" if r["pid"] is not None else "its process"
    return (f"[red]{escape(r['destination'])}[/red]: run {escape(r['run_id'])} was interrupted ({owner} "
            f"is gone; last heartbeat {beat}) after {r['sent']:,} sent, {r['failed']:,} failed; "
            f"{r['pending']:,} pending. Resume it with `{escape(r['resume'])}`")


@deliver_app.command("replay")
def replay_cmd(destination: Annotated[str, typer.Argument(help="Destination name.")]) -> None:
    """Send the destination's dead letters again (with their idempotency keys)."""
    from openaudience.delivery.engine import replay

    summary = replay(_destinations(), destination)
    if summary is None:
        console.print(f"{destination}: no dead letters")
        return
    print_summaries([summary])


@deliver_app.command("validate")
def validate() -> None:
    """Check every destination file (for pull requests): exits 2 listing every problem."""
    dests = _destinations()
    console.print(f"[green]{len(dests.destinations)} destination file(s) valid[/green]")


@suppress_app.command("add")
def suppress_add(
    id_type: Annotated[str, typer.Option(help="Id type of the values, e.g. mobile, email, one_id.")],
    reason: Annotated[str, typer.Option(help="unsubscribe, t_reply, complaint, blacklist, consent, bounce.")],
    values: Annotated[list[str] | None, typer.Argument(help="Ids to suppress.")] = None,
    file: Annotated[Path | None, typer.Option(help="A text file with one id per line.")] = None,
    channel: Annotated[str, typer.Option(help="One channel, or * for every channel.")] = "*",
) -> None:
    """Add ids to the suppression list (all or nothing)."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.suppression import add, read_ids

    ids = list(values or [])
    if file is not None:
        ids += read_ids(file, id_type)
    if not ids:
        raise UserError("give ids as arguments or --file")
    n = add(Warehouse(), id_type, ids, reason, channel, source="cli")
    console.print(f"{n:,} id(s) suppressed for {channel} ({reason})")


@suppress_app.command("list")
def suppress_list() -> None:
    """The suppression list by channel, id type and reason."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.suppression import summary

    table = Table(title="Suppression list")
    for col in ("channel", "id type", "reason", "ids", "latest"):
        table.add_column(col, justify="right" if col == "ids" else "left")
    for channel, id_type, reason, n, latest in summary(Warehouse(reader=True)):
        table.add_row(channel, id_type, reason, f"{n:,}",
                      f"{latest:%Y-%m-%d %H:%M}" if isinstance(latest, dt.datetime) else str(latest))
    console.print(table)


@deliver_app.command("receive")
def receive(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8780,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for every interface.")] = "127.0.0.1",
) -> None:
    """Run the receipt endpoint (POST /receipts/<destination>, and /unsubscribe/<destination> for
    e-mail links) until interrupted."""
    import signal
    import time

    from openaudience.core.settings import load_settings
    from openaudience.delivery.receipts import ReceiptServer

    dests = _destinations()
    try:
        server = ReceiptServer(dests, load_settings().home, port=port, host=host).start()
    except OSError as exc:  # the port is taken, the address is not this machine's, OA_HOME is read-only
        raise UserError(f"cannot start the receipt endpoint on {host}:{port}: {exc}; choose another "
                        "--port or --host, or make OA_HOME writable") from None
    for warning in server.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    names = ", ".join(server.names) or "none (no destination has receipts: or an e-mail channel)"
    console.print(f"receipts at {server.url}/<destination>, unsubscribe links at "
                  f"{server.url.removesuffix('/receipts')}/unsubscribe/<destination>, for {names}; "
                  f"bodies up to {server.http.max_body:,} bytes (OA_RECEIPT_MAX_BYTES); Ctrl-C to stop",
                  soft_wrap=True)
    # stop cleanly on Ctrl-C even when started with SIGINT ignored (a background job), and on
    # SIGTERM (a service manager)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


@deliver_app.command("receipts")
def receipts_cmd() -> None:
    """Load the receipts the endpoint spooled into delivery.delivery_receipts."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.receipts import ingest

    totals = ingest(Warehouse(), _destinations())
    console.print(f"{totals['accepted']:,} receipt(s) accepted, {totals['rejected']:,} rejected, "
                  f"{totals['suppressed']:,} id(s) added to the suppression list")


@deliver_app.command("poll")
def poll_cmd() -> None:
    """Fetch SMS delivery reports (sendDetails) for sent batches still waiting for them."""
    from openaudience.core.warehouse import Warehouse
    from openaudience.delivery.sms_reports import poll

    errors: list[str] = []
    t = poll(Warehouse(), _destinations(), errors=errors)
    console.print(f"SMS reports: {t['delivered']:,} delivered, {t['failed']:,} failed "
                  f"({t['timed_out']:,} of them without a report in 72 h), {t['waiting']:,} still waiting")
    for e in errors:
        console.print(f"[yellow]not read, tried again at the next poll:[/yellow] {escape(e)}", soft_wrap=True)
