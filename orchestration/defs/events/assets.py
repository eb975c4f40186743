"""Real-time events in Dagster: `events/events`, the events and identity messages the collector
logged, moved into the warehouse (`oa events ingest`); the `events_ingest_sensor` runs it within a
minute of the log growing. The collector itself (`oa events serve`) is a long-running process
beside Dagster: it needs no warehouse, so it answers while a build holds the DuckDB file."""


import json

import dagster as dg

from orchestration.resources import WarehouseResource

EVENTS = dg.AssetKey(["events", "events"])
IDENTITY_LINKS = dg.AssetKey(["events", "identity_links"])
DEFINITIONS = dg.AssetKey(["events", "event_definitions"])


def ingest_metadata(done) -> dict[str, dg.MetadataValue]:
    """What an ingest moved (a Dagster run's, or `oa events ingest`'s reported to the instance)."""
    return {"new_events": dg.MetadataValue.int(done.events),
            "journey_entries": dg.MetadataValue.int(sum(done.entered.values())),
            "new_identity_links": dg.MetadataValue.int(done.identities),
            "already_there": dg.MetadataValue.int(done.already),
            "unreadable_lines": dg.MetadataValue.int(done.unreadable),
            "log_position": dg.MetadataValue.text(f"{done.segment}:{done.offset}")}


def _advance_event_journeys(context, wh, done) -> None:
    """The event journeys the ingest entered people into move on in the same run (their sends
    go out), each shown on its journeys/<name> asset. `oa events follow` does the same within
    seconds; this keeps them moving when only Dagster runs."""
    from openaudience.delivery.source import load_destinations
    from openaudience.journeys.engine import Context, tick
    from openaudience.journeys.follow import event_journeys
    from openaudience.journeys.source import load_journeys
    from openaudience.segments.source import load_project
    from orchestration.defs.journeys.assets import asset_key, journey_metadata

    names = event_journeys(wh)
    if not names:
        return
    project = load_project()
    dests = load_destinations(audiences=project)
    ctx = Context(wh, load_journeys(project=project, dests=dests), dests, project, progress=context.log.info)
    for report in tick(ctx, names):
        for note in report.notes:
            context.log.warning(f"{report.journey}: {note}")
        if report.error:
            context.log.error(f"{report.journey} failed: {report.error}")
        context.log_event(dg.AssetMaterialization(asset_key=asset_key(report.journey),
                                                  metadata=journey_metadata(wh, report.journey, report)))
    for name, n in done.entered.items():
        context.log.info(f"{name}: {n:,} entered from the new events")


def event_definitions() -> dg.Definitions:
    from openaudience.core.settings import load_settings
    from openaudience.events.log import log_dir, segments

    settings = load_settings()

    @dg.multi_asset(
        name="events_ingest_tables", group_name="events",
        specs=[dg.AssetSpec(EVENTS, group_name="events",
                            description="Behaviour events the collector took (events/*.yml defines "
                                        "them), each once, moved from the event log "
                                        "(OA_HOME/events/log) from where the last ingest stopped."),
               dg.AssetSpec(IDENTITY_LINKS, group_name="events",
                            description="The ids each identity message links to its reporter."),
               dg.AssetSpec(DEFINITIONS, group_name="events",
                            description="The event definitions as the collector served them.")])
    def events_tables(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        from openaudience.events.ingest import ingest
        from openaudience.journeys.live import enter

        wh = warehouse.get()
        done = ingest(wh, settings.home, on_events=enter,
                      progress=lambda o: context.log.info(f"{o.events:,} events, {o.identities:,} identity "
                                                          "links so far"))
        _advance_event_journeys(context, wh, done)
        yield dg.MaterializeResult(asset_key=EVENTS, metadata=ingest_metadata(done))
        yield dg.MaterializeResult(asset_key=IDENTITY_LINKS,
                                   metadata={"new_identity_links": dg.MetadataValue.int(done.identities)})
        yield dg.MaterializeResult(asset_key=DEFINITIONS)

    ingest_job = dg.define_asset_job("events_ingest", selection=[EVENTS, IDENTITY_LINKS, DEFINITIONS],
                                     description="Move the event log into the warehouse.")

    @dg.sensor(name="events_ingest_sensor", job=ingest_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Ingest events when the collector's log has grown.")
    def events_ingest_sensor(context: dg.SensorEvaluationContext):
        sizes = {p.name: p.stat().st_size for p in segments(log_dir(settings.home))}
        if not sizes or json.dumps(sizes, sort_keys=True) == (context.cursor or ""):
            return dg.SkipReason("the event log has not grown")
        context.update_cursor(json.dumps(sizes, sort_keys=True))
        return dg.RunRequest(run_key=f"events:{sum(sizes.values())}")

    return dg.Definitions(assets=[events_tables], jobs=[ingest_job], sensors=[events_ingest_sensor])
