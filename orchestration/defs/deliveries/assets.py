"""One Dagster asset per destination file, downstream of the audience it delivers, so the UI
shows raw tables → models → audiences → deliveries as one graph.

- `deliveries_on_new_version` (a sensor) starts a delivery when an audience that an `on_change`
  destination reads materializes a new version;
- hourly, daily, weekly and monthly destinations run on schedules;
- a materialization carries the run's counts, a preview of what was sent and a funnel chart.

Every destination's asset runs in the `deliveries` pool, and a failing channel fails only its own
asset: the others in the same run go on.
"""


import json

import dagster as dg
import pandas as pd

from openaudience.core.errors import UserError
from openaudience.core.settings import load_settings
from openaudience.delivery.source import Destinations, load_destinations
from openaudience.delivery.spec import CRONS
from orchestration.defs.audiences.assets import asset_key as audience_key
from orchestration.metadata import owners, png_markdown, sparkline
from orchestration.resources import WarehouseResource

GROUP = "deliveries"
POOL = "deliveries"
FUNNEL = ("planned", "suppressed", "capped", "skipped", "sent", "failed", "pending")


def asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def _funnel_png(counts: dict[str, int], name: str) -> dg.MetadataValue:
    import altair as alt

    df = pd.DataFrame({"stage": list(FUNNEL), "members": [counts.get(k, 0) for k in FUNNEL]})
    chart = alt.Chart(df, title=f"{name}: this run").mark_bar().encode(
        x=alt.X("members:Q", title="members"), y=alt.Y("stage:N", sort=list(FUNNEL), title=None),
        tooltip=["stage", "members"]).properties(width=420, height=180)
    return png_markdown(chart, name)


def delivery_metadata(summary, name: str) -> dict[str, dg.MetadataValue]:
    """What a delivery run shows in the UI, from a Dagster run or from `oa deliver`."""
    metadata = {k: dg.MetadataValue.int(summary.counts.get(k, 0)) for k in FUNNEL}
    metadata.update({
        "status": dg.MetadataValue.text(summary.status),
        "run_id": dg.MetadataValue.text(summary.run_id),
        "audience_version": dg.MetadataValue.int(summary.audience_version),
        "funnel_bars": sparkline([summary.counts.get(k, 0) for k in FUNNEL], f"{name}: {', '.join(FUNNEL)}",
                                 bars=True),
        "funnel": _funnel_png(summary.counts, name),
    })
    if summary.error:
        metadata["warning"] = dg.MetadataValue.text(summary.error)
    return metadata


def _delivery_asset(dests: Destinations, name: str) -> dg.AssetsDefinition:
    d = dests.destinations[name]

    @dg.asset(key=asset_key(name), deps=[audience_key(d.audience)], group_name=GROUP, pool=POOL,
              description=d.description or f"Deliver {d.audience} to {d.channel}.",
              owners=owners(d.owner),
              kinds={d.channel}, tags={"channel": d.channel, "schedule": d.schedule},
              metadata={"file": dg.MetadataValue.path(f"destinations/{dests.paths[name].name}"),
                        "audience": d.audience, "mode": d.mode, "id_form": d.id_form})
    def delivery(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        from openaudience.delivery.engine import deliver

        trigger = "sensor" if context.run.tags.get("dagster/sensor_name") else (
            "schedule" if context.run.tags.get("dagster/schedule_name") else "manual")

        def progress(_name: str, done: int, total: int) -> None:
            if total and (done == total or done % max(total // 10, 1) < d.batch_size):
                context.log.info(f"{name}: {done:,}/{total:,} members")

        summaries = deliver(load_destinations(dests.folder, dests.audiences), name,
                            wh=warehouse.get(), trigger=trigger, progress=progress)
        if not summaries:
            context.log.info(f"{name}: audience {d.audience}'s latest version was delivered already")
            return dg.MaterializeResult(metadata={"status": "nothing new"})
        last = summaries[-1]
        for s in summaries:
            context.log.info(f"{name}: run {s.run_id} {s.status} {json.dumps(s.counts)}")
        if last.status == "stopped":
            raise dg.Failure(description=f"{name}: {last.error}",
                             metadata={k: dg.MetadataValue.int(v) for k, v in last.counts.items()})
        return dg.MaterializeResult(metadata=delivery_metadata(last, name))

    return delivery


def delivery_definitions() -> dg.Definitions:
    """Destination assets, a job each, schedules for periodic ones and the on-change sensor. A
    destination folder with errors fails loading with the same messages as `oa deliver validate`."""
    from openaudience.delivery.source import DestinationErrors

    settings = load_settings()
    try:
        dests = load_destinations()
    except DestinationErrors as exc:
        raise UserError(f"destinations/ has errors:\n{exc}") from None
    tags = {"openaudience/warehouse": settings.target}
    # an embedded DuckDB file admits one writing process: its deliveries run one after another
    executor = dg.in_process_executor if settings.target == "duckdb" else None
    assets, jobs, schedules = [], [], []
    on_change: dict[str, list[str]] = {}
    for name in sorted(dests.destinations):
        d = dests.destinations[name]
        if d.schedule == "journey":  # sent by journeys only: no asset that would deliver its audience
            continue
        assets.append(_delivery_asset(dests, name))
        if d.schedule == "on_change":
            on_change.setdefault(d.audience, []).append(name)
        elif d.schedule in CRONS:
            job = dg.define_asset_job(f"deliver_{name}", selection=[asset_key(name)], tags=tags,
                                      executor_def=executor)
            jobs.append(job)
            schedules.append(dg.ScheduleDefinition(  # stopped until an operator starts it
                name=f"deliver_{name}_schedule", job=job, cron_schedule=CRONS[d.schedule],
                execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.STOPPED,
                description=f"schedule: {d.schedule}. Sends messages: starts stopped; start it in the "
                            "UI (Automation) when the destination is ready."))
    if not assets:
        return dg.Definitions()
    all_job = dg.define_asset_job("deliveries", selection=dg.AssetSelection.groups(GROUP), tags=tags,
                                  executor_def=executor,
                                  description="Deliver destinations (each asset one destination).")
    jobs.append(all_job)
    sensors = []
    if on_change:
        @dg.sensor(name="deliveries_on_new_version", job=all_job, minimum_interval_seconds=30,
                   default_status=dg.DefaultSensorStatus.STOPPED,
                   description="Deliver on_change destinations when their audience has a new version. "
                               "Sends messages: starts stopped; once started, it delivers the versions "
                               "built from then on (`oa deliver NAME` sends the current one).")
        def deliveries_on_new_version(context: dg.SensorEvaluationContext):
            # The cursor holds when the sensor was last started and, per audience, the newest
            # version it has seen. Started (the first time, or again after a stop), it only notes
            # where each audience is: what was built while it was off is not sent as a backlog. An
            # audience new to it is noted the same way. A version built from the command line
            # (`oa audience build` reports it to the instance) counts like one built here.
            state = json.loads(context.cursor) if context.cursor else {}
            started = context.last_sensor_start_time
            baseline = "audiences" not in state or state.get("started") != started
            seen = {} if baseline else dict(state["audiences"])
            requests = []
            for audience, names in sorted(on_change.items()):
                records = context.instance.fetch_materializations(audience_key(audience), limit=1).records
                if not records:
                    continue
                storage_id = records[0].storage_id
                known = audience in seen
                if seen.get(audience) == storage_id:
                    continue
                seen[audience] = storage_id
                if known:
                    requests.append(dg.RunRequest(run_key=f"{audience}:{storage_id}",
                                                  asset_selection=[asset_key(n) for n in names],
                                                  tags={"audience": audience}))
            for audience in on_change:
                seen.setdefault(audience, None)  # noted, even before its first version
            context.update_cursor(json.dumps({"started": started, "audiences": seen}, sort_keys=True))
            if baseline:
                return dg.SkipReason("started: audience versions built from now on are delivered")
            return requests

        sensors.append(deliveries_on_new_version)
    if any(d.webhook is not None and d.webhook.receipts is not None or d.email is not None
           or d.sms is not None for d in dests.destinations.values()):
        receipts_job, receipts_sensor = _receipt_definitions(dests, settings, tags)
        jobs.append(receipts_job)
        sensors.append(receipts_sensor)
        if any(d.sms is not None for d in dests.destinations.values()):
            schedules.append(dg.ScheduleDefinition(
                name="delivery_reports_schedule", job=receipts_job, cron_schedule="*/15 * * * *",
                execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Every 15 minutes: SMS delivery reports, and any spooled receipts."))
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors)


def _receipt_definitions(dests: Destinations, settings, tags: dict):
    """A job that loads spooled receipts, and a sensor that runs it when the spool grew."""
    from openaudience.delivery.receipts import ingest, spool_dir

    @dg.op(name="ingest_receipts", description="Spooled receipts into delivery.delivery_receipts.")
    def ingest_receipts(context: dg.OpExecutionContext, warehouse: WarehouseResource):
        totals = ingest(warehouse.get(), load_destinations(dests.folder, dests.audiences))
        context.log.info(f"receipts: {totals}")
        context.add_output_metadata({k: dg.MetadataValue.int(v) for k, v in totals.items()})
        return totals["accepted"]

    @dg.op(name="poll_sms_reports", description="SMS sendDetails for batches waiting for reports.")
    def poll_sms_reports(context: dg.OpExecutionContext, warehouse: WarehouseResource, after):
        from openaudience.delivery.sms_reports import poll

        totals = poll(warehouse.get(), load_destinations(dests.folder, dests.audiences))
        context.add_output_metadata({k: dg.MetadataValue.int(v) for k, v in totals.items()})

    @dg.job(name="delivery_receipts", tags=tags,
            description="Load the receipts the endpoint spooled, then poll SMS delivery reports.")
    def delivery_receipts():
        poll_sms_reports(ingest_receipts())

    @dg.sensor(name="delivery_receipts_sensor", job=delivery_receipts, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Load receipts when `oa deliver receive` has spooled new ones.")
    def delivery_receipts_sensor(context: dg.SensorEvaluationContext):
        folder = spool_dir(settings.home)
        sizes = {p.name: p.stat().st_size for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}
        if not sizes or json.dumps(sizes, sort_keys=True) == (context.cursor or ""):
            return dg.SkipReason("no new receipts")
        context.update_cursor(json.dumps(sizes, sort_keys=True))
        return dg.RunRequest(run_key=f"receipts:{sum(sizes.values())}")

    return delivery_receipts, delivery_receipts_sensor
