"""`oa events`: real-time events, defined in events/*.yml and reported to the collector.

    oa events validate                   # the definitions, and the management rules against
                                         # what the collector last served; exits 2 on problems
    oa events serve [--host H] [--port P]  # the collector (POST /events, /identities)
    oa events ingest                     # the event log into the warehouse
    oa events follow [--interval S]      # ingest and move event-triggered journeys, continuously
    oa events status                     # the log, and what the warehouse holds
"""

from __future__ import annotations

from typing import Annotated

import typer

from openaudience.cli.common import console, err
from openaudience.core.errors import UserError

events_app = typer.Typer(no_args_is_help=True,
                         help="Real-time events: definitions in events/*.yml, the collector that takes "
                              "them (`oa events serve`), and their way into the warehouse.")


def _registry():
    from openaudience.events.source import load_events

    return load_events()


def _used() -> dict[str, list[str]]:
    """The events journeys/ triggers or branches on: they cannot be removed."""
    from openaudience.journeys.source import used_events

    return used_events()


@events_app.command("validate")
def events_validate() -> None:
    """Check every events/*.yml: fields, codes and app_keys unique over all files, attribute
    types; and the management rules (names change, attributes are only added) against what the
    collector last served. Exits 2 listing every problem."""
    from openaudience.core.settings import load_settings
    from openaudience.events.source import changes, read_applied

    registry = _registry()
    refused = changes(registry, read_applied(load_settings().home), _used())
    if refused:
        raise UserError(f"{len(refused)} change(s) the management rules refuse:\n" + "\n".join(refused))
    console.print(f"[green]{len(registry.events)} event(s) of {len(registry.channels)} channel(s) valid"
                  "[/green]")


@events_app.command("serve")
def events_serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8700,
    kafka_topic: Annotated[str | None, typer.Option(help="Also read events from this Kafka topic "
                                                         "(JSON lines of the same model).")] = None,
    kafka_bootstrap: Annotated[str, typer.Option(help="The Kafka brokers (host:port,...).")] = (
        "127.0.0.1:9092"),
    kafka_channel: Annotated[str | None, typer.Option(help="The channel (app_key) the topic's events "
                                                           "belong to.")] = None,
) -> None:
    """Run the event collector until interrupted: the reporting contract (POST /events,
    /identities), each request signed with its channel's key (key_env in events/*.yml), every
    accepted message on disk (OA_HOME/events/log) before the answer."""
    from openaudience.core.settings import load_settings
    from openaudience.events.collector import serve
    from openaudience.events.log import EventLog, log_dir
    from openaudience.events.source import apply

    settings = load_settings()
    registry = _registry()
    refused = apply(registry, settings.home, _used())
    if refused:
        raise UserError(f"{len(refused)} change(s) the management rules refuse:\n" + "\n".join(refused))
    reader = None
    if kafka_topic:
        from openaudience.events.topic import TopicReader

        if not kafka_channel:
            raise UserError("--kafka-topic needs --kafka-channel: the app_key its events belong to")
        reader = TopicReader(kafka_bootstrap, kafka_topic, kafka_channel, registry, settings.home,
                             store=None)
    event_log = EventLog.open(log_dir(settings.home))
    try:
        also = f" and the Kafka topic {kafka_topic}" if kafka_topic else ""
        err.print(f"collecting events at http://{host}:{port}{also} ({len(registry.events)} event(s) of "
                  f"{len(registry.channels)} channel(s); {event_log.records:,} in the log); Ctrl-C to stop",
                  highlight=False)
        serve(registry, event_log, host, port, settings.events_max_bytes, reader)
    finally:
        event_log.close()


@events_app.command("ingest")
def events_ingest() -> None:
    """Move what the collector logged since the last ingest into events.events and
    events.identity_links (each message once), from where the last ingest stopped."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import Warehouse
    from openaudience.events.ingest import ingest
    from openaudience.journeys.live import enter

    settings = load_settings()
    with Progress(SpinnerColumn(), TextColumn("ingest {task.description}"), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("", total=None)
        done = ingest(Warehouse(settings), settings.home, on_events=enter,
                      progress=lambda o: bar.update(task, description=f"{o.events:,} events, "
                                                                      f"{o.identities:,} identity links"))
    from orchestration.observe import report_events_ingest

    report_events_ingest(done, warn=lambda text: console.print(f"[yellow]note[/yellow]: {text}"))
    console.print(f"{done.events:,} new event(s) and {done.identities:,} identity link(s) into "
                  f"events.events and events.identity_links ({done.already:,} already there, "
                  f"{done.unreadable:,} unreadable line(s)); the log is read to {done.segment or '-'}:"
                  f"{done.offset:,}")
    _entries(done)
    if done.entered:
        console.print("their journeys move on at the next `oa journey tick` (or run `oa events follow`)")


def _entries(done) -> None:
    """What an ingest did to event-triggered journeys."""
    from rich.markup import escape

    for name in sorted(set(done.entered) | set(done.limited) | set(done.unknown)):
        parts = [f"{done.entered.get(name, 0):,} entered"]
        if done.limited.get(name):
            parts.append(f"{done.limited[name]:,} event(s) past the trigger limit")
        if done.unknown.get(name):
            parts.append(f"{done.unknown[name]:,} event(s) of people the warehouse does not know yet "
                         "(the next build resolves them)")
        console.print(f"  journey {escape(name)}: {'; '.join(parts)}", highlight=False)


@events_app.command("follow")
def events_follow(
    interval: Annotated[float, typer.Option(min=0.05, max=60, help="Seconds between passes while "
                                                                  "nothing arrives.")] = 0.5,
    seconds: Annotated[float | None, typer.Option(min=0, help="Stop after this long (default: run "
                                                                 "until Ctrl-C).")] = None,
) -> None:
    """Keep event-triggered journeys moving: ingest what the collector logged, enter the people
    whose events trigger a running event journey, send their messages; again a fraction of a
    second later, until interrupted. Run it beside `oa events serve`."""
    import datetime as dt
    import time

    from openaudience.cli.journey import context
    from openaudience.core import locks
    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import WarehouseBusy
    from openaudience.events.ingest import Ingested
    from openaudience.journeys.follow import follow
    from orchestration.observe import report_events_ingest, report_journeys

    locks.release_kept()  # each pass takes the warehouse and lets go: builds and deliveries run between
    settings = load_settings()
    ctx = context()
    window = {"ingested": Ingested(), "journeys": set(), "at": time.monotonic()}

    def flush() -> None:
        """What the last minute of passes did, shown in Dagster (one materialization a minute,
        not one per pass)."""
        total, names = window["ingested"], sorted(window["journeys"])
        warn = lambda text: err.print(f"[yellow]note[/yellow]: {text}", highlight=False)  # noqa: E731
        if total.events or total.identities:
            report_events_ingest(total, warn=warn)
        if names:
            report_journeys(names, warn=warn)
        window.update(ingested=Ingested(segment=total.segment, offset=total.offset), journeys=set(),
                      at=time.monotonic())

    def on_pass(result) -> None:
        done, total = result.ingested, window["ingested"]
        total.events += done.events
        total.identities += done.identities
        total.already += done.already
        total.unreadable += done.unreadable
        total.segment, total.offset = done.segment, done.offset
        acted = [t for t in result.ticks if t.moved or t.actions or t.error]
        window["journeys"].update(t.journey for t in acted)
        if done.events or done.identities or acted:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            console.print(f"{stamp} {done.events:,} event(s), {done.identities:,} identity link(s) in "
                          f"{result.seconds:.2f} s", highlight=False)
            _entries(done)
            for t in acted:
                sends = [a for a in t.actions if a.get("kind") == "send"]
                total = {k: sum(int(a.get(k, 0)) for a in sends)
                         for k in ("sent", "failed", "suppressed", "capped", "skipped", "missing_id")}
                more = "".join(f", {k.replace('_', ' ')} {n:,}" for k, n in total.items()
                               if n and k != "sent")
                moved = sum(t.moved.values())
                console.print(f"  journey {t.journey}: moved {moved:,}, sent {total['sent']:,}{more}",
                              highlight=False)
                for note in t.notes:
                    err.print(f"[yellow]note[/yellow]: {t.journey}: {note}", highlight=False)
                if t.error:
                    err.print(f"[red]error[/red]: journey {t.journey} failed: {t.error} (fix it, then "
                              f"`oa journey resume {t.journey}`)", highlight=False)
        if time.monotonic() - window["at"] >= 60:
            flush()

    err.print(f"following the event log of {settings.home} every {interval:g} s while idle; Ctrl-C to stop",
              highlight=False)
    started = time.monotonic()
    try:
        while True:
            left = None if seconds is None else seconds - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            try:
                follow(ctx, settings.home, interval, seconds=left, on_pass=on_pass, release_spark=True)
                break
            except WarehouseBusy as exc:
                err.print(f"[yellow]note[/yellow]: {exc}; trying again in {max(interval, 5):g} s",
                          highlight=False)
                time.sleep(max(interval, 5))
            except UserError as exc:  # what a person fixes meanwhile (a view to rebuild, a key to set)
                err.print(f"[red]error[/red]: {exc}; trying again in 30 s", highlight=False)
                time.sleep(30)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        flush()
