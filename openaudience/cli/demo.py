"""`oa demo-data`, `oa demo`: the generated demo data set, and the whole nightly pipeline on it."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from openaudience.cli.aipl import backfill_aipl
from openaudience.cli.audience import print_build
from openaudience.cli.common import console, parse_date, print_counts, progress_bar
from openaudience.cli.load import load_folder
from openaudience.cli.report import (
    write_aipl_report,
    write_audience_report,
    write_pivot_report,
    write_rfm_report,
)
from openaudience.core.errors import UserError

app = typer.Typer()  # top-level commands, merged into `oa`


@app.command("demo-data")
def demo_data(
    users: Annotated[int, typer.Option(help="Customers to generate.")] = 100_000,
    days: Annotated[int, typer.Option(help="Days of orders and behaviour.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same data.")] = 42,
    out: Annotated[Path, typer.Option(help="Folder for the Parquet files.")] = Path(
        ".openaudience/demo"),
    end_date: Annotated[str | None, typer.Option(
        help="Last day + 1 of the data (YYYY-MM-DD); default today.")] = None,
) -> None:
    """Generate a deterministic, realistic demo data set as Parquet files."""
    from openaudience.demo.generator import DemoConfig, generate

    end = parse_date(end_date, "--end-date") if end_date else dt.date.today()
    if users < 1 or days < 1:
        raise UserError("--users and --days must be at least 1")
    config = DemoConfig(users=users, days=days, seed=seed, end_date=end)
    counts = _generate(generate, out, config)
    print_counts(f"Demo data in {out}", counts)


def _generate(generate, out: Path, config) -> dict[str, int]:
    with progress_bar() as progress:
        task = progress.add_task("generating users", total=config.users)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(task, completed=done)

        return generate(out, config, progress=report)


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(help="Customers to generate.")] = 100_000,
    days: Annotated[int, typer.Option(help="Days of data.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """The whole demo: generate data, load it, run the nightly job, print a summary."""
    from openaudience.cli.status import print_status
    from openaudience.core.settings import load_settings
    from openaudience.demo.generator import DemoConfig, generate
    from orchestration.launch import run_audience_job, run_nightly

    settings = load_settings()
    out = settings.home / "demo"
    config = DemoConfig(users=users, days=days, seed=seed, end_date=dt.date.today())
    console.rule("1/11 demo data")
    _generate(generate, out, config)
    console.rule("2/11 load (validated)")
    load_folder(out, "replace", quarantine=False)
    console.rule("3/11 real-time events (a burst through the collector, then ingested)")
    demo_events(out)
    console.rule("4/11 nightly_refresh")
    result = run_nightly(console)
    if not result.success:
        raise UserError(f"nightly_refresh failed (run {result.run_id}); see `make ui`")
    console.rule("5/11 AIPL history")
    today = dt.date.today()
    backfill_aipl(today - dt.timedelta(days=29), today)
    console.rule("6/11 audiences (Dagster job audiences_refresh_all) and reports")
    audience_results = refresh_all_audiences(today)
    console.rule("7/11 deliveries (Dagster job deliveries)")
    deliveries = demo_deliveries(settings.home / "demo")
    console.rule("8/11 journeys (a simulated clock: days in seconds; an event journey in real time)")
    journey_reports = demo_journeys(settings.home / "demo", today)
    journey_reports.update(demo_event_journey(settings.home / "demo"))
    console.rule("9/11 repurchase model (train, validate against the baselines, score)")
    from openaudience.cli.ml import print_training, train_repurchase

    repurchase = train_repurchase(activate=True, out=console)
    console.rule("10/11 recommendation model and tasks")
    from openaudience.cli.ml import print_recommend, train_recommend

    recommend = train_recommend(out=console)
    from orchestration.observe import report_models

    report_models(lambda text: console.print(f"note: {text}", markup=False), repurchase=repurchase[0],
                  activated=repurchase[1] is not None, report_path=repurchase[2], scoring=repurchase[1],
                  recommend=recommend[0], recommend_path=recommend[2], tasks=recommend[1])
    console.rule("11/11 audiences from the models (Dagster job audiences_from_models)")
    model_audiences = run_audience_job("audiences_from_models", today, console)
    reports = {
        "RFM": write_rfm_report("rfm_default"),
        "AIPL": write_aipl_report("default", today - dt.timedelta(days=29), today),
        "pivot": write_pivot_report(DEMO_PIVOT_TAGS),
        "audience": write_audience_report("shanghai_big_spenders"),
    }
    console.rule("summary")
    print_status(console)
    print_build(audience_results + model_audiences)
    from openaudience.cli.deliver import print_summaries

    print_summaries(deliveries, console)
    print_training(*repurchase, out=console)
    print_recommend(*recommend, out=console)
    reports.update(journey_reports)
    for kind, path in reports.items():
        console.print(f"{kind} report: {path}", soft_wrap=True)


@contextmanager
def crm_receiver(journal: Path) -> Iterator:
    """A local receiver standing in for the CRM's webhook (its messages land in `journal`), with
    OA_CRM_WEBHOOK_URL and OA_CRM_WEBHOOK_SECRET pointing at it while the block runs."""
    import secrets

    from connectors.webhook_receiver import WebhookReceiver

    secret = os.environ.get("OA_CRM_WEBHOOK_SECRET") or secrets.token_hex(16)
    receiver = WebhookReceiver(secret=secret, journal=journal).start()
    saved = {k: os.environ.get(k) for k in ("OA_CRM_WEBHOOK_URL", "OA_CRM_WEBHOOK_SECRET")}
    os.environ.update({"OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": secret})
    try:
        yield receiver
    finally:
        receiver.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def demo_deliveries(folder: Path) -> list:
    """Deliver the example destinations: the CRM webhook to a local receiver this process runs
    (its messages land in crm_webhook_received.jsonl), and the hashed file export."""
    from orchestration.launch import run_delivery_job

    journal = folder / "crm_webhook_received.jsonl"
    with crm_receiver(journal) as receiver:
        summaries = run_delivery_job(console)
    console.print(f"the demo CRM receiver accepted {len(receiver.state.accepted):,} message(s) "
                  f"({journal})", soft_wrap=True)
    return summaries


def demo_events(folder: Path, count: int = 2000) -> dict[str, int]:
    """A burst of real-time events from demo members: a collector started for the demo (its
    channels' keys made up for it), `count` app purchases, cart additions and H5 logins of the
    last hour posted in signed batches of 100, then ingested; the nightly build that follows
    makes them behaviour rows. Returns what was posted, stored and ingested."""
    import secrets
    import time

    import numpy as np
    import pyarrow.parquet as pq

    from connectors.events import EventClient
    from openaudience.core.settings import load_settings
    from openaudience.core.warehouse import Warehouse
    from openaudience.events.collector import spawn, stop
    from openaudience.events.ingest import ingest
    from openaudience.events.source import load_events
    from openaudience.journeys.live import enter

    registry = load_events()
    keys = {c.app_key: secrets.token_hex(16) for c in registry.channels.values()}
    env = {**os.environ, **{c.key_env: keys[c.app_key] for c in registry.channels.values()}}
    collector, port = spawn(env)
    try:
        members = pq.read_table(folder / "customers.parquet", columns=["customer_id"]).column(0)
        members = members.drop_null().to_pylist()
        items = pq.read_table(folder / "products.parquet", columns=["item_id"]).column(0)
        items = items.drop_null().to_pylist()
        rng = np.random.default_rng(17)
        now = int(time.time() * 1000)
        by_channel: dict[str, list[dict]] = {k: [] for k in keys}
        codes = [code for code in ("app_purchase", "app_add_to_cart", "h5_login") if code in registry.events]
        for i in range(count):
            code = codes[int(rng.integers(len(codes)))]
            attrs = ({"item_id": items[int(rng.integers(len(items)))]} if code != "h5_login"
                     else {"page": "/home"})
            if code == "app_purchase":
                attrs["amount"] = f"{float(rng.uniform(9, 500)):.2f}"
            by_channel[registry.events[code].app_key].append({
                "customerId": str(members[int(rng.integers(len(members)))]), "eventCode": code,
                "eventTime": now - int(rng.integers(0, 3_600_000)), "eventId": f"demo-{i}",
                "extendAttributes": attrs})
        stored = duplicates = 0
        started = time.perf_counter()
        for app_key, messages in by_channel.items():
            client = EventClient(f"http://127.0.0.1:{port}", app_key, keys[app_key])
            for at in range(0, len(messages), 100):
                status, answer = client.events(messages[at:at + 100])
                if status != 200 or not answer.get("success"):
                    raise UserError(f"the demo's collector refused a batch ({status}): "
                                    f"{answer.get('errorDesc')}")
                stored, duplicates = stored + answer["accepted"], duplicates + answer["duplicates"]
            client.close()
        seconds = time.perf_counter() - started
    finally:
        stop(collector)
    done = ingest(Warehouse(), load_settings().home, on_events=enter)
    console.print(f"{count:,} events posted to the collector in {seconds:.1f} s ({stored:,} stored, "
                  f"{duplicates:,} already there from an earlier demo); {done.events:,} new in "
                  "events.events, behaviour rows after the nightly build")
    return {"posted": count, "stored": stored, "ingested": done.events}


DEMO_JOURNEYS = ("cart_abandon_reminder", "welcome_offer_ab")


def demo_journeys(folder: Path, today: dt.date) -> dict[str, Path]:
    """Run the two example journeys through a local CRM receiver with a simulated clock: started
    ten days ago at 09:00, ticked then and again three days later, so the cart reminder's wait
    and behaviour branch decide on the purchases history holds. Prints their people per step;
    returns their reports."""
    from openaudience.cli.journey import context, print_steps
    from openaudience.cli.report import write_journey_report
    from openaudience.journeys import engine
    from openaudience.journeys.clock import to_utc
    from orchestration.observe import report_journeys

    journal = folder / "journeys_received.jsonl"
    ctx = context(progress=lambda text: console.print(text, markup=False, highlight=False))
    start = to_utc(dt.datetime.combine(today - dt.timedelta(days=10), dt.time(9, 0)), ctx.tz)
    with crm_receiver(journal) as receiver:
        for name in DEMO_JOURNEYS:
            if engine.journey_row(ctx.wh, name) is not None:  # an earlier demo ran them: again, afresh
                engine.forget(ctx, name)
            engine.start(ctx, name, start)
        reports = []
        for at in (start, start + dt.timedelta(days=3, minutes=1)):
            reports += engine.tick(ctx, list(DEMO_JOURNEYS), at)
    report_journeys(list(DEMO_JOURNEYS), warn=lambda text: console.print(f"note: {text}", markup=False),
                    reports=reports)
    for r in reports:
        if r.error:
            raise UserError(f"journey {r.journey} failed: {r.error}")
    out = {}
    for name in DEMO_JOURNEYS:
        print_steps(ctx.wh, name)
        out[f"journey {name}"] = write_journey_report(name)
    console.print(f"the demo CRM receiver accepted {len(receiver.state.accepted):,} journey message(s) "
                  f"({journal})", soft_wrap=True)
    return out


EVENT_JOURNEY = "app_purchase_thank_you"


def demo_event_journey(folder: Path, people: int = 50) -> dict[str, Path]:
    """The shipped event journey firing: started, then a collector takes app purchases of
    `people` demo members (ones no webhook reached this week, so the frequency cap lets the
    thank-you through) and `oa events follow`'s passes enter them and send each a thank-you
    naming what they bought, to the local CRM receiver, within seconds."""
    import secrets
    import time

    from connectors.events import EventClient
    from openaudience.cli.journey import context, print_steps
    from openaudience.cli.report import write_journey_report
    from openaudience.core.settings import load_settings
    from openaudience.events.collector import spawn, stop
    from openaudience.events.source import load_events
    from openaudience.journeys import engine
    from openaudience.journeys.follow import follow_once
    from orchestration.observe import report_journeys

    journal = folder / "event_journey_received.jsonl"
    ctx = context(progress=lambda text: console.print(text, markup=False, highlight=False))
    home = load_settings().home
    with crm_receiver(journal) as receiver:
        ctx.environ = dict(os.environ)
        if engine.journey_row(ctx.wh, EVENT_JOURNEY) is not None:  # an earlier demo ran it: afresh
            engine.forget(ctx, EVENT_JOURNEY)
        engine.start(ctx, EVENT_JOURNEY)
        week_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=7)
        members = [r[0] for r in ctx.wh.query(
            "select min(i.id_value) from marts.dim_identities i "
            "join marts.user_tags u on u.one_id = i.one_id "
            "where i.id_type = 'member_id' and u.mobile is not null and not exists (select 1 "
            "from delivery.delivery_log l where l.one_id = i.one_id and l.channel = 'webhook' "
            "and l.status = 'sent' and l.sent_at > %s) group by i.one_id order by 1 limit %s",
            [week_ago, int(people)])]
        registry = load_events()
        channel = registry.channels[registry.events["app_purchase"].app_key]
        key = secrets.token_hex(16)
        collector, port = spawn({**os.environ, channel.key_env: key})
        started = time.monotonic()
        try:
            client = EventClient(f"http://127.0.0.1:{port}", channel.app_key, key)
            now = int(time.time() * 1000)
            purchases = [{"customerId": m, "eventCode": "app_purchase", "eventTime": now,
                          "eventId": f"demo-thanks-{now}-{i}",
                          "extendAttributes": {"item_id": f"P{1000 + i}", "amount": f"{20 + i}.90"}}
                         for i, m in enumerate(members)]
            carts = [{"customerId": m, "eventCode": "app_add_to_cart", "eventTime": now + 1000,
                      "eventId": f"demo-cart-{now}-{i}", "extendAttributes": {"item_id": f"P{2000 + i}"}}
                     for i, m in enumerate(members[:10])]  # a fifth go on shopping: the cart note
            for batch in (purchases, carts):
                status, answer = client.events(batch)
                if status != 200 or not answer.get("success"):
                    raise UserError(f"the demo's collector refused the events ({status}): "
                                    f"{answer.get('errorDesc')}")
            client.close()
            ticks = []
            expected = len(purchases) + len(carts)
            while time.monotonic() - started < 60 and len(receiver.state.accepted) < expected:
                result = follow_once(ctx, home)
                ticks += result.ticks
        finally:
            stop(collector)
        seconds = time.monotonic() - started
    report_journeys([EVENT_JOURNEY], warn=lambda text: console.print(f"note: {text}", markup=False),
                    reports=[t for t in ticks if t.journey == EVENT_JOURNEY][-1:])
    print_steps(ctx.wh, EVENT_JOURNEY)
    got = len(receiver.state.accepted)
    console.print(f"{len(members)} app purchases and 10 cart additions posted; the CRM receiver had "
                  f"{got:,} message(s) (thank-yous and cart notes) {seconds:.1f} s later ({journal}); "
                  f"the journey keeps running (`oa events follow` keeps it moving; `oa journey stop "
                  f"{EVENT_JOURNEY}` ends it)", soft_wrap=True)
    return {f"journey {EVENT_JOURNEY}": write_journey_report(EVENT_JOURNEY)}


def refresh_all_audiences(today: dt.date):
    """Run the Dagster job that refreshes every audience, so the UI shows the builds."""
    from orchestration.launch import run_audience_job

    return run_audience_job("audiences_refresh_all", today, console)


DEMO_PIVOT_TAGS = ["gender", "member_level", "city", "categories_bought", "age", "registered_at"]
