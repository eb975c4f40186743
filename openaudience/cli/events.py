"""`oa events`: real-time events, defined in events/*.yml and reported to the collector.

    oa events validate                   # the definitions, and the management rules against
                                         # what the collector last served; exits 2 on problems
    oa events serve [--host H] [--port P]  # the collector (POST /events, /identities)
    oa events ingest                     # the event log into the warehouse
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


@events_app.command("validate")
def events_validate() -> None:
    """Check every events/*.yml: fields, codes and app_keys unique over all files, attribute
    types; and the management rules (names change, attributes are only added) against what the
    collector last served. Exits 2 listing every problem."""
    from openaudience.core.settings import load_settings
    from openaudience.events.source import changes, read_applied

    registry = _registry()
    refused = changes(registry, read_applied(load_settings().home))
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
    refused = apply(registry, settings.home)
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

    settings = load_settings()
    with Progress(SpinnerColumn(), TextColumn("ingest {task.description}"), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("", total=None)
        done = ingest(Warehouse(settings), settings.home,
                      progress=lambda o: bar.update(task, description=f"{o.events:,} events, "
                                                                      f"{o.identities:,} identity links"))
    from orchestration.observe import report_events_ingest

    report_events_ingest(done, warn=lambda text: console.print(f"[yellow]note[/yellow]: {text}"))
    console.print(f"{done.events:,} new event(s) and {done.identities:,} identity link(s) into "
                  f"events.events and events.identity_links ({done.already:,} already there, "
                  f"{done.unreadable:,} unreadable line(s)); the log is read to {done.segment or '-'}:"
                  f"{done.offset:,}")
