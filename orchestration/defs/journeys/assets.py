"""One Dagster asset per journey file, downstream of the audience it enters (and of what its
sends' destinations are), so the UI shows audiences → journeys with their state.

Materializing a journey's asset is one tick of it (`oa journey tick NAME`): due cycles start,
everyone whose wait or branch is due moves, sends go out through the delivery engine. Its
metadata: status, people per step, the sub-tasks' counts, the flow drawn as a chart and, with a
holdout, the lift.

- `journeys_due` (a sensor, every minute) requests a tick of the running journeys that have
  something due: a cycle to start, people whose time has come, or a send to resume;
- a periodic journey has a schedule of its own (its `trigger.schedule`) that ticks it when a cycle
  is due.

Both run from the start: a journey does nothing until someone starts it (`oa journey start`), which
is the consent to send. Ticks run in the `journeys` pool, one at a time per journey.
"""


import datetime as dt
import json

import dagster as dg

from openaudience.core.errors import UserError
from openaudience.core.settings import load_settings
from orchestration.defs.audiences.assets import asset_key as audience_key
from orchestration.metadata import owners, png_markdown
from orchestration.resources import WarehouseResource

GROUP = "journeys"
POOL = "journeys"


def asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def journey_metadata(wh, name: str, report=None) -> dict[str, dg.MetadataValue]:
    """What a journey shows in the UI after a tick (from Dagster or from `oa journey`)."""
    from openaudience.journeys import engine
    from openaudience.journeys.report import flow_chart, lift
    from openaudience.journeys.source import Plan

    row = engine.journey_row(wh, name)
    if row is None:
        return {"status": dg.MetadataValue.text("not started")}
    plan = Plan.from_json(row["definition"])
    counts = engine.node_counts(wh, name)
    acts = engine.actions(wh, name)
    cycles = engine.cycles(wh, name)
    metadata: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(row["status"]),
        "cycles": dg.MetadataValue.int(len(cycles)),
        "entered": dg.MetadataValue.int(sum(c["entered"] for c in cycles)),
        "inside": dg.MetadataValue.int(sum(c["waiting"] for c in counts.values())),
        "sent": dg.MetadataValue.int(sum(int(a.get("sent") or 0) for a in acts)),
        "people_per_step": dg.MetadataValue.md(_steps_table(plan, counts)),
        "flow": png_markdown(flow_chart(plan, counts, acts), f"{name}: people per step"),
    }
    if row["next_cycle_at"] is not None:
        metadata["next_cycle_at_utc"] = dg.MetadataValue.text(str(row["next_cycle_at"]))
    if row["error"]:
        metadata["error"] = dg.MetadataValue.text(row["error"])
    result = lift(wh, plan)
    if result is not None:
        metadata["lift"] = dg.MetadataValue.text(result.overall.verdict())
    if report is not None:
        metadata["moved_this_tick"] = dg.MetadataValue.json(report.moved)
        if report.notes:
            metadata["notes"] = dg.MetadataValue.text("\n".join(report.notes))
    return metadata


def _steps_table(plan, counts: dict) -> str:
    lines = ["| step | kind | reached | waiting | held out | left by |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for node in plan.nodes.values():
        c = counts.get(node.id, {"reached": 0, "waiting": 0, "held_out": 0, "branches": {}})
        left = ", ".join(f"{b} {n:,}" for b, n in c["branches"].items())
        lines.append(f"| {node.id} | {node.kind} | {c['reached']:,} | {c['waiting']:,} "
                     f"| {c['held_out']:,} | {left} |")
    return "\n".join(lines)


def _journey_asset(journeys, dests, name: str) -> dg.AssetsDefinition:
    plan = journeys.plans[name]
    j = plan.journey
    event = j.trigger.is_event
    deps = [dg.AssetKey(["events", "events"]) if event else audience_key(j.trigger.audience)]
    for node in plan.actions():
        d = dests.destinations.get(node.config["destination"]) if node.kind == "send" else None
        if d is not None and d.schedule != "journey":
            deps.append(dg.AssetKey(["deliveries", node.config["destination"]]))
    schedule = (f"as {j.trigger.event} events arrive" if event
                else j.trigger.schedule.describe() if j.trigger.periodic else "once")

    @dg.asset(key=asset_key(name), deps=deps, group_name=GROUP, pool=POOL,
              description=(j.description or f"Journey {name}.").strip(), owners=owners(j.owner),
              kinds={"journey"},
              tags={"schedule": "event" if event else "periodic" if j.trigger.periodic else "once"},
              metadata={"file": dg.MetadataValue.path(f"journeys/{journeys.paths[name].name}"),
                        "audience" if not event else "event": j.trigger.label, "schedule": schedule,
                        "steps": len(plan.nodes) - 1})
    def journey(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        from openaudience.delivery.source import load_destinations
        from openaudience.journeys.engine import Context, tick
        from openaudience.journeys.source import load_journeys
        from openaudience.segments.source import load_project

        project = load_project()
        current_dests = load_destinations(audiences=project)
        ctx = Context(warehouse.get(), load_journeys(journeys.folder, project, current_dests), current_dests,
                      project, progress=context.log.info)
        reports = tick(ctx, [name])
        if not reports:
            row_status = _status(ctx.wh, name)
            context.log.info(f"{name}: {row_status}; nothing to do")
            return dg.MaterializeResult(metadata={"status": dg.MetadataValue.text(row_status)})
        report = reports[0]
        for note in report.notes:
            context.log.warning(f"{name}: {note}")
        if report.error:
            raise dg.Failure(description=f"{name}: {report.error}")
        return dg.MaterializeResult(metadata=journey_metadata(ctx.spark or ctx.wh, name, report))

    return journey


def _status(wh, name: str) -> str:
    from openaudience.journeys.engine import journey_row

    row = journey_row(wh, name)
    return row["status"] if row else "not started"


def journey_definitions() -> dg.Definitions:
    """Journey assets, the tick job, the due sensor and a schedule per periodic journey. A journey
    file with problems is left out (its asset would run a definition that is not valid) and named
    in the sensor's description; `oa journey validate` lists its problems."""
    from openaudience.delivery.source import DestinationErrors, load_destinations
    from openaudience.journeys.source import JOURNEY_DIR, load_journeys
    from openaudience.segments.source import load_project

    settings = load_settings()
    try:
        project = load_project()
        dests = load_destinations(audiences=project)
    except DestinationErrors as exc:
        raise UserError(f"destinations/ has errors:\n{exc}") from None
    journeys = load_journeys(JOURNEY_DIR, project, dests)
    if not journeys.plans:
        return dg.Definitions()
    tags = {"openaudience/warehouse": settings.target}
    executor = dg.in_process_executor if settings.target == "duckdb" else None
    assets = [_journey_asset(journeys, dests, name) for name in sorted(journeys.plans)]
    job = dg.define_asset_job("journeys_tick", selection=dg.AssetSelection.groups(GROUP), tags=tags,
                              executor_def=executor,
                              description="Tick journeys: start due cycles, move everyone due, send.")
    schedules = []
    for name in sorted(journeys.plans):
        trigger = journeys.plans[name].journey.trigger
        if trigger.periodic:
            schedules.append(dg.ScheduleDefinition(
                name=f"journey_{name}_cycles", job=job, cron_schedule=trigger.schedule.cron_expression(),
                execution_timezone=settings.timezone, tags={"journey": name},
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"Cycles of journey {name} ({trigger.schedule.describe()}): ticks it when "
                            "a cycle is due. Does nothing until the journey is started (oa journey start)."))
    incomplete = sorted(journeys.problems)

    @dg.sensor(name="journeys_due", job=job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Every minute: tick the running journeys that have something due (a cycle, "
                           "people whose wait or branch is due, a send to resume). Journeys act only once "
                           "started (oa journey start)."
                           + (f" Left out for problems: {', '.join(incomplete)} (oa journey validate)."
                              if incomplete else ""))
    def journeys_due(context: dg.SensorEvaluationContext):
        from openaudience.core.warehouse import Warehouse
        from openaudience.journeys.engine import due_journeys

        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name="journeys_tick", statuses=[
                dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]), limit=1)
        if active:
            return dg.SkipReason(f"a tick is in progress (run {active[0].run_id[:8]})")
        try:
            due = due_journeys(Warehouse(reader=True))
        except UserError as exc:  # no warehouse yet, or busy without a snapshot
            return dg.SkipReason(str(exc))
        due = [n for n in due if n in journeys.plans]
        if not due:
            return dg.SkipReason("nothing due")
        minute = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M")
        key = json.dumps({"due": due, "at": minute}, sort_keys=True)
        return dg.RunRequest(run_key=key, asset_selection=[asset_key(n) for n in due])

    return dg.Definitions(assets=assets, jobs=[job], schedules=schedules, sensors=[journeys_due])
