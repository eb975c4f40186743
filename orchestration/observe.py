"""What a command did, in the Dagster instance, so the UI shows it.

Commands that change state outside a Dagster run (`oa load`, `oa audience build`, `oa deliver`,
`oa ml train|score|recommend`, `oa journey start|tick|pause|resume|stop`, `oa events ingest`)
report asset materializations to the instance in DAGSTER_HOME (default
`OA_HOME/dagster`), with the same metadata a Dagster run of the asset records: the raw table's
rows after a load, an audience's version and size, a delivery's funnel. The UI's asset pages then
show the version the warehouse holds, whoever made it, with `source: cli` to tell them apart.

Reporting never fails a command that succeeded: when the instance cannot be written, the command
says so once and the warehouse keeps what it did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

SOURCE = {"source": "cli"}


def _report(events: Callable[[], Iterable[Any]], warn: Callable[[str], None] | None) -> int:
    """Report the events `events()` makes; the number reported."""
    try:
        import dagster as dg

        from orchestration.launch import ensure_dagster_home

        ensure_dagster_home(configure=False)
        made = list(events())
        with dg.DagsterInstance.get() as instance:
            for event in made:
                instance.report_runless_asset_event(event)
        return len(made)
    except Exception as exc:  # the command's work is done; the UI only misses it
        if warn:
            warn(f"the Dagster UI will not show this ({type(exc).__name__}: {exc})")
        return 0


def report_loads(wh, results, warn: Callable[[str], None] | None = None) -> int:
    """A materialization of raw/<table> per loaded file: rows loaded and quarantined, the mode,
    the file, and the table's rows now."""
    import dagster as dg

    from openaudience.core.schema.raw import RAW_SCHEMA
    from openaudience.core.sql import qualified

    def events():
        for r in results:
            total = wh.query(f"select count(*) from {qualified(RAW_SCHEMA, r.table)}")[0][0]
            yield dg.AssetMaterialization(asset_key=dg.AssetKey([RAW_SCHEMA, r.table]), metadata={
                **SOURCE,
                "dagster/row_count": dg.MetadataValue.int(int(total)),
                "rows_loaded": dg.MetadataValue.int(r.rows_loaded),
                "rows_quarantined": dg.MetadataValue.int(r.rows_quarantined),
                "mode": dg.MetadataValue.text(r.mode),
                "file": dg.MetadataValue.path(str(r.source_file)),
                "load_id": dg.MetadataValue.text(r.load_id),
            })

    return _report(events, warn)


def report_audience_builds(wh, results, today: dt.date, warn: Callable[[str], None] | None = None) -> int:
    """A materialization of audiences/<name> per built version, as the Dagster asset records."""
    import dagster as dg

    from orchestration.defs.audiences.assets import asset_key, audience_metadata

    def events():
        for r in results:
            yield dg.AssetMaterialization(asset_key=asset_key(r.audience),
                                          metadata={**SOURCE, **audience_metadata(wh, r, today)})

    return _report(events, warn)


def report_deliveries(summaries, warn: Callable[[str], None] | None = None) -> int:
    """A materialization of deliveries/<name> per finished run (not dry runs)."""
    import dagster as dg

    from orchestration.defs.deliveries.assets import asset_key, delivery_metadata

    def events():
        for s in summaries:
            if s.dry_run:
                continue
            yield dg.AssetMaterialization(asset_key=asset_key(s.destination),
                                          metadata={**SOURCE, **delivery_metadata(s, s.destination)})

    return _report(events, warn)


def report_models(warn: Callable[[str], None] | None = None, *, repurchase=None, activated: bool = False,
                  report_path=None, scoring=None, recommend=None, recommend_path=None, tasks=None) -> int:
    """Materializations of the ml assets a command made: a repurchase or recommendation version,
    scores, recommendations."""
    import dagster as dg

    from orchestration.defs.ml import assets as ml

    def events():
        made = []
        if repurchase is not None:
            made.append((["ml", "repurchase_model"],
                         ml.repurchase_model_metadata(repurchase, activated, report_path)))
        if scoring is not None:
            made.append((["ml", "repurchase_scores"], ml.repurchase_scores_metadata(scoring)))
        if recommend is not None:
            made.append((["ml", "recommend_model"], ml.recommend_model_metadata(recommend, recommend_path)))
        if tasks:
            made.append((["ml", "recommendations"], ml.recommendations_metadata(tasks)))
        for key, metadata in made:
            yield dg.AssetMaterialization(asset_key=dg.AssetKey(key), metadata={**SOURCE, **metadata})

    return _report(events, warn)


def report_journeys(names: list[str], warn: Callable[[str], None] | None = None, reports=None) -> int:
    """A materialization of journeys/<name> per journey a command acted on (start, tick, pause,
    resume, stop), with the metadata a Dagster tick records."""
    import dagster as dg

    from openaudience.core.warehouse import Warehouse
    from orchestration.defs.journeys.assets import asset_key, journey_metadata

    by_name = {r.journey: r for r in reports or []}

    def events():
        wh = Warehouse(reader=True)
        for name in dict.fromkeys(names):
            metadata = journey_metadata(wh, name, by_name.get(name))
            yield dg.AssetMaterialization(asset_key=asset_key(name), metadata={**SOURCE, **metadata})

    return _report(events, warn)


def report_aipl_days(first: dt.date, last: dt.date, warn: Callable[[str], None] | None = None) -> int:
    """A materialization of each partition (day) of marts/aipl_daily from `first` to `last`, after
    `oa aipl backfill`, with the day's rows: the asset's partitions in the UI then show the days
    the warehouse holds, whoever computed them. Days outside the partitions (before AIPL_FIRST_DAY,
    after today) are left out."""
    import dagster as dg

    from openaudience.core.settings import load_settings
    from openaudience.core.sql import qualified
    from openaudience.core.warehouse import Warehouse
    from orchestration.defs.dbt.assets import AIPL_KEY, aipl_partitions

    def events():
        partitions = aipl_partitions(load_settings().timezone)
        valid = set(partitions.get_partition_keys())
        days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        keys = [d.isoformat() for d in days if d.isoformat() in valid]
        if not keys:
            return
        rows = {str(day): n for day, n in Warehouse().query(
            f"select stat_date, count(*) from {qualified(*AIPL_KEY.path)} "
            "where stat_date between %s and %s group by stat_date", [first, last])}
        for key in keys:
            yield dg.AssetMaterialization(asset_key=AIPL_KEY, partition=key, metadata={
                **SOURCE,
                "rows_in_days": dg.MetadataValue.int(int(rows.get(key, 0))),
                "days": dg.MetadataValue.text(f"{first} to {last}"),
            })

    return _report(events, warn)


def report_events_ingest(done, warn: Callable[[str], None] | None = None) -> int:
    """A materialization of events/events for an `oa events ingest` that moved something."""
    import dagster as dg

    from orchestration.defs.events.assets import EVENTS, ingest_metadata

    def events():
        if done.events or done.identities:
            yield dg.AssetMaterialization(asset_key=EVENTS, metadata={**SOURCE, **ingest_metadata(done)})

    return _report(events, warn)
