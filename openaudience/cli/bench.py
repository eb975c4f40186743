"""`oa bench`: the benchmarks whose figures go to docs/benchmarks.md."""

from __future__ import annotations

from typing import Annotated

import typer

from openaudience.cli.common import console
from openaudience.core.errors import UserError

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (figures go to docs/benchmarks.md).")


@bench_app.command("build")
def bench_build(
    users: Annotated[int, typer.Option(help="Customers in the generated data.")] = 1_000_000,
    days: Annotated[int, typer.Option(help="Days of data.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Generate and load N users, then time a full dbt build and record peak memory."""
    from openaudience.bench.pipeline import bench_build as run

    run(users=users, days=days, seed=seed, console=console)


@bench_app.command("models")
def bench_models(
    transactions: Annotated[int, typer.Option(help="Synthetic paid orders for RFM.")] = 20_000_000,
    users: Annotated[int, typer.Option(help="People the orders belong to.")] = 1_000_000,
) -> None:
    """Time RFM over N transactions and AIPL for one day over the `bench build` warehouse."""
    from openaudience.bench.pipeline import bench_models as run

    run(transactions=transactions, users=users, console=console)


@bench_app.command("ml")
def bench_ml() -> None:
    """Train and score the repurchase model and the recommender over the `bench build` warehouse."""
    from openaudience.bench.pipeline import bench_ml as run

    run(console=console)


@bench_app.command("audiences")
def bench_audiences(
    count: Annotated[int, typer.Option(help="Synthetic audiences to build.")] = 100,
    singles: Annotated[bool, typer.Option(help="Also build each audience on its own.")] = True,
) -> None:
    """Build N synthetic audiences over the `bench build` warehouse: batch vs one query each."""
    from openaudience.bench.pipeline import bench_audiences as run

    run(count=count, console=console, singles=singles)


@bench_app.command("deliveries")
def bench_deliveries(
    sizes: Annotated[str, typer.Option(help="Audience sizes, comma-separated.")] = "100000,1000000",
) -> None:
    """Members/s to Kafka (tansu) and to a batched webhook, and peak memory per audience size."""
    from openaudience.bench.deliveries import bench_deliveries as run

    try:
        numbers = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--sizes {sizes!r}: give whole numbers separated by commas") from None
    run(numbers, console=console)


@bench_app.command("journeys")
def bench_journeys(
    sends: Annotated[bool, typer.Option("--sends/--no-sends",
                                        help="Send through a file export (or generate an audience).")] = True,
) -> None:
    """A 3-step journey over every person of the `bench build` warehouse: the tick that advances
    everyone through a wait, a behaviour branch and a send, timed; state rows per person and step."""
    from openaudience.bench.journeys import bench_journeys as run

    run(console=console, send=sends)


@bench_app.command("events")
def bench_events(
    rate: Annotated[int, typer.Option(min=1, help="Events offered per second.")] = 5000,
    batch: Annotated[int, typer.Option(min=1, max=100, help="Events per request.")] = 10,
    seconds: Annotated[float, typer.Option(min=1, help="How long to offer them.")] = 30.0,
) -> None:
    """Sustained ingest through the collector: events stored per second and the answer latency
    (p50/p95/p99) at an offered rate, and that the log holds exactly what was answered."""
    from openaudience.bench.events import bench_events as run

    run(console=console, rate=rate, batch=batch, seconds=seconds)


@bench_app.command("event-journeys")
def bench_event_journeys(
    rate: Annotated[int, typer.Option(min=1, help="App purchases posted per second.")] = 500,
    seconds: Annotated[float, typer.Option(min=1, help="How long to post them.")] = 30.0,
    batch: Annotated[int, typer.Option(min=1, max=100, help="Events per request.")] = 10,
) -> None:
    """Event -> action: an event-triggered journey's webhook message, from the event posted to
    the collector to the message arriving (p50/p95/p99), with collector and follower running as
    they do in production, on a copy of the DuckDB warehouse of `make demo`."""
    from openaudience.bench.event_journeys import bench_event_journeys as run

    run(console=console, rate=rate, seconds=seconds, batch=batch)
