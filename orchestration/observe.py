"""What a command did, in the Dagster instance, so the UI shows it.

Commands that change state outside a Dagster run (`oa load`, `oa audience build`, `oa deliver`,
`oa ml train|score|recommend`)
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
