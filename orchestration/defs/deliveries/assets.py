"""One Dagster asset per destination file, downstream of the audience it delivers, so the UI
shows raw tables → models → audiences → deliveries as one graph.

- `deliveries_on_new_version` (a sensor) starts a delivery when an audience that an `on_change`
  destination reads materializes a new version;
- hourly, daily, weekly and monthly destinations run on schedules;
- a materialization carries the run's counts, a preview of what was sent and a funnel chart.

Every destination's asset runs in the `deliveries` pool, and a failing channel fails only its own
asset: the others in the same run go on.
"""


import base64
import json

import dagster as dg
import pandas as pd

from orchestration.defs.audiences.assets import asset_key as audience_key
from orchestration.delivery.source import Destinations, load_destinations
from orchestration.delivery.spec import CRONS
from orchestration.errors import UserError
from orchestration.resources import WarehouseResource
from orchestration.settings import load_settings

GROUP = "deliveries"
POOL = "deliveries"
FUNNEL = ("planned", "suppressed", "capped", "skipped", "sent", "failed", "pending")


def asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def _funnel_png(counts: dict[str, int], name: str) -> dg.MetadataValue:
    import altair as alt

    from orchestration.analysis.report import chart_png

    df = pd.DataFrame({"stage": list(FUNNEL), "members": [counts.get(k, 0) for k in FUNNEL]})
    chart = alt.Chart(df, title=f"{name}: this run").mark_bar().encode(
        x=alt.X("members:Q", title="members"), y=alt.Y("stage:N", sort=list(FUNNEL), title=None),
        tooltip=["stage", "members"]).properties(width=420, height=180)
    png = chart_png(chart)
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")


def _delivery_asset(dests: Destinations, name: str) -> dg.AssetsDefinition:
    d = dests.destinations[name]

    @dg.asset(key=asset_key(name), deps=[audience_key(d.audience)], group_name=GROUP, pool=POOL,
              description=d.description or f"Deliver {d.audience} to {d.channel}.",
              owners=[d.owner if "@" in d.owner else f"team:{d.owner}"] if d.owner else [],
              kinds={d.channel}, tags={"channel": d.channel, "schedule": d.schedule},
              metadata={"file": dg.MetadataValue.path(f"destinations/{dests.paths[name].name}"),
                        "audience": d.audience, "mode": d.mode, "id_form": d.id_form})
    def delivery(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        from orchestration.delivery.engine import deliver

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
        metadata = {k: dg.MetadataValue.int(last.counts.get(k, 0)) for k in FUNNEL}
        metadata.update({
            "status": dg.MetadataValue.text(last.status),
            "run_id": dg.MetadataValue.text(last.run_id),
            "audience_version": dg.MetadataValue.int(last.audience_version),
            "funnel": _funnel_png(last.counts, name),
        })
        if last.error:
            metadata["warning"] = dg.MetadataValue.text(last.error)
        return dg.MaterializeResult(metadata=metadata)

    return delivery


def delivery_definitions() -> dg.Definitions:
    """Destination assets, a job each, schedules for periodic ones and the on-change sensor. A
    destination folder with errors fails loading with the same messages as `oa deliver validate`."""
    from orchestration.delivery.source import DestinationErrors

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
        assets.append(_delivery_asset(dests, name))
        if d.schedule == "on_change":
            on_change.setdefault(d.audience, []).append(name)
        elif d.schedule in CRONS:
            job = dg.define_asset_job(f"deliver_{name}", selection=[asset_key(name)], tags=tags,
                                      executor_def=executor)
            jobs.append(job)
            schedules.append(dg.ScheduleDefinition(
                name=f"deliver_{name}_schedule", job=job, cron_schedule=CRONS[d.schedule],
                execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"schedule: {d.schedule}"))
    if not assets:
        return dg.Definitions()
    all_job = dg.define_asset_job("deliveries", selection=dg.AssetSelection.groups(GROUP), tags=tags,
                                  executor_def=executor,
                                  description="Deliver destinations (each asset one destination).")
    jobs.append(all_job)
    sensors = []
    if on_change:
        @dg.sensor(name="deliveries_on_new_version", job=all_job, minimum_interval_seconds=30,
                   default_status=dg.DefaultSensorStatus.RUNNING,
                   description="Deliver on_change destinations when their audience has a new version.")
        def deliveries_on_new_version(context: dg.SensorEvaluationContext):
            cursor = json.loads(context.cursor) if context.cursor else {}
            requests = []
            for audience, names in sorted(on_change.items()):
                records = context.instance.fetch_materializations(audience_key(audience), limit=1).records
                if not records:
                    continue
                storage_id = records[0].storage_id
                if cursor.get(audience) == storage_id:
                    continue
                cursor[audience] = storage_id
                requests.append(dg.RunRequest(run_key=f"{audience}:{storage_id}",
                                              asset_selection=[asset_key(n) for n in names],
                                              tags={"audience": audience}))
            context.update_cursor(json.dumps(cursor, sort_keys=True))
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
    from orchestration.delivery.receipts import ingest, spool_dir

    @dg.op(name="ingest_receipts", description="Spooled receipts into delivery.delivery_receipts.")
    def ingest_receipts(context: dg.OpExecutionContext, warehouse: WarehouseResource):
        totals = ingest(warehouse.get(), load_destinations(dests.folder, dests.audiences))
        context.log.info(f"receipts: {totals}")
        context.add_output_metadata({k: dg.MetadataValue.int(v) for k, v in totals.items()})
        return totals["accepted"]

    @dg.op(name="poll_sms_reports", description="SMS sendDetails for batches waiting for reports.")
    def poll_sms_reports(context: dg.OpExecutionContext, warehouse: WarehouseResource, after):
        from orchestration.delivery.sms_reports import poll

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
