"""One Dagster asset per audience file, built by one subsettable multi-asset so that a refresh
of many audiences is one batch evaluation. Each asset depends on what its YAML reads (user_tags,
fct_behaviors, an RFM model, aipl_daily, a table, other audiences), so the lineage is true and an
audience refreshes after its inputs. Refreshes share the `audience_refresh` concurrency pool:
past its limit (OA_AUDIENCE_CONCURRENCY, default 3, 1-10) runs queue instead of failing.

An audience's `refresh:` is its automation condition (`refresh_condition`), evaluated by the
automation sensor of definitions.py: `daily` after the nightly refresh updated what it reads,
`hourly` and a cron on their cron; an audience read by scheduled ones refreshes with them, as
Quick Audience does; `manual` only when asked."""


import datetime as dt
import hashlib
from functools import reduce
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from openaudience.core.errors import UserError
from openaudience.core.settings import load_settings
from openaudience.segments.engine import build, versions
from openaudience.segments.source import AudienceErrors, Project, load_project
from orchestration.metadata import owners, png_markdown, sparkline
from orchestration.resources import WarehouseResource

POOL = "audience_refresh"
GROUP = "audiences"
PREVIEW_ROWS = 10


def asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


AIPL_KEY = dg.AssetKey(["marts", "aipl_daily"])


def _deps(project: Project, name: str) -> list[dg.AssetKey]:
    deps = {dg.AssetKey(["marts", "user_tags"])}
    for _, cond in project.audiences[name].condition().walk():
        kind = cond.kind
        if kind == "behavior":
            deps.add(dg.AssetKey(["marts", "fct_behaviors"]))
        elif kind == "rfm":
            deps.add(dg.AssetKey(["marts", cond.rfm.model]))
        elif kind == "aipl":
            deps.add(AIPL_KEY)
        elif kind == "audience":
            deps.add(asset_key(cond.audience.name))
        elif kind in ("upload", "table"):
            deps.add(dg.AssetKey(["marts", "dim_identities"]))
            if kind == "table":
                deps.add(dg.AssetKey(list(cond.table.schema_table)))
        elif kind == "score":
            deps.add(dg.AssetKey(["ml", "repurchase_scores"]))
        elif kind == "recommended":
            deps.add(dg.AssetKey(["ml", "recommendations"]))
    return sorted(deps, key=lambda k: k.to_user_string())



def audience_specs(project: Project, timezone: str = "Asia/Shanghai") -> list[dg.AssetSpec]:
    specs = []
    cadences = refresh_cadences(project)
    for name in project.order:
        audience = project.audiences[name]
        specs.append(dg.AssetSpec(
            key=asset_key(name),
            # an audience reads the latest day of aipl_daily: only that partition is its input
            deps=[dg.AssetDep(key, partition_mapping=dg.LastPartitionMapping()) if key == AIPL_KEY
                  else key for key in _deps(project, name)],
            group_name=GROUP,
            description=audience.description or None,
            owners=owners(audience.owner),
            kinds={"sql"},
            tags={"refresh": _tag_value(audience.refresh), "id_type": audience.id_type},
            metadata={"file": dg.MetadataValue.path(f"audiences/{project.paths[name].name}"),
                      "refresh": audience.refresh, "snapshots": audience.snapshots},
            automation_condition=refresh_condition(cadences.get(name, set()), timezone),
            skippable=True,
        ))
    return specs


def refresh_cadences(project: Project) -> dict[str, set[str]]:
    """Per audience, the `refresh:` values it must follow: its own and those of every audience
    that reads it (directly or through others), `manual` left out."""
    out: dict[str, set[str]] = {}
    for name in project.order:
        refresh = project.audiences[name].refresh
        if refresh == "manual":
            continue
        for upstream in project.upstream([name]):
            out.setdefault(upstream, set()).add(refresh)
    return out


def _after_inputs_update() -> dg.AutomationCondition:
    """`refresh: daily`: eager on what the audience reads from the warehouse (models, model
    outputs, tables), ignoring other audiences, so an audience read by an hourly one does not
    make a daily reader hourly; audiences a daily one reads refresh in the same evaluation."""
    updated = dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.groups(GROUP))
    return (dg.AutomationCondition.eager().replace("any_deps_updated", updated)
            .with_label("refresh: daily (after its inputs update)"))


def _on_cron(cron: str, timezone: str, label: str) -> dg.AutomationCondition:
    """`hourly` or a cron: each tick of the cron in OA_TIMEZONE, once nothing it reads is being
    built or missing. Not AutomationCondition.on_cron, which also waits until every input updated
    after the tick: inputs the nightly job updates once a day would hold an hourly audience to
    once a day and move a 03:00 weekly refresh to the next night."""
    return (dg.AutomationCondition.cron_tick_passed(cron, timezone).since_last_handled()
            & ~dg.AutomationCondition.any_deps_missing()
            & ~dg.AutomationCondition.any_deps_in_progress()
            & ~dg.AutomationCondition.in_progress()).with_label(label)


def refresh_condition(cadences: set[str], timezone: str) -> dg.AutomationCondition | None:
    """The automation condition for a set of `refresh:` values (None: manual only)."""
    parts = []
    for refresh in sorted(cadences):
        if refresh == "daily":
            parts.append(_after_inputs_update())
        elif refresh == "hourly":
            parts.append(_on_cron("0 * * * *", timezone, "refresh: hourly"))
        else:
            parts.append(_on_cron(refresh, timezone, f"refresh: {refresh} ({timezone})"))
    if len(parts) < 2:
        return parts[0] if parts else None
    return reduce(lambda a, b: a | b, parts).with_label(" or ".join(str(p.get_label()) for p in parts))


def _tag_value(refresh: str) -> str:
    """Tag values allow letters, digits, -, _ and .: a cron becomes cron-<digest>."""
    if refresh in ("manual", "hourly", "daily"):
        return refresh
    return "cron-" + hashlib.sha1(refresh.encode()).hexdigest()[:8]


class AudienceRefreshConfig(dg.Config):
    as_of: str = ""
    """Date relative windows end on (YYYY-MM-DD); default today in OA_TIMEZONE."""


def refresh_date(as_of: str = "") -> dt.date:
    if as_of:
        try:
            return dt.date.fromisoformat(as_of)
        except ValueError:
            raise UserError(f"as_of {as_of!r} is not a date (YYYY-MM-DD)") from None
    return dt.datetime.now(ZoneInfo(load_settings().timezone)).date()


def _history_chart(history: list[dict], name: str) -> dg.MetadataValue | None:
    from openaudience.analysis.charts import audience_size_history

    if not history:
        return None
    df = pd.DataFrame(history)[["version", "built_at", "size", "added", "removed"]]
    return png_markdown(audience_size_history(df, name), f"{name} size")


def audience_metadata(wh, r, today: dt.date) -> dict[str, dg.MetadataValue]:
    """What a built version shows in the UI, from a Dagster run or from `oa audience build`."""
    history = list(reversed(versions(wh, r.audience, kept_only=False)))
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(r.size),
        "version": dg.MetadataValue.int(r.version),
        "size": dg.MetadataValue.int(r.size),
        "added": dg.MetadataValue.int(r.added),
        "removed": dg.MetadataValue.int(r.removed),
        "dropped_missing_id": dg.MetadataValue.int(r.dropped),
        "as_of": dg.MetadataValue.text(today.isoformat()),
        "definition_hash": dg.MetadataValue.text(r.definition_hash),
        "preview": _preview(wh, r.audience, r.version),
    }
    if history:
        metadata["size_history"] = sparkline([h["size"] for h in history], f"{r.audience} size")
    chart = _history_chart(history, r.audience)
    if chart is not None:
        metadata["size_history_chart"] = chart
    return metadata


def _preview(wh, name: str, version: int) -> dg.MetadataValue:
    from connectors.identifiers import mask
    from openaudience.segments.engine import MEMBERS

    rows = wh.query(f"select one_id, id_type, id_value from {MEMBERS} where audience = %s and "
                    f"version = %s order by one_id limit {PREVIEW_ROWS}", [name, version])
    lines = ["| one_id | id_type | id_value (masked) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {mask(b, c)} |" for a, b, c in rows]  # no contact data in the UI
    return dg.MetadataValue.md("\n".join(lines))


def build_audience_assets(project: Project, timezone: str = "Asia/Shanghai") -> dg.AssetsDefinition:
    @dg.multi_asset(specs=audience_specs(project, timezone), can_subset=True, name="audiences",
                    pool=POOL, description="Refresh the selected audiences in one batch.")
    def audiences(context: dg.AssetExecutionContext, config: AudienceRefreshConfig,
                  warehouse: WarehouseResource):
        names = [key.path[-1] for key in context.selected_asset_keys]
        today = refresh_date(config.as_of)
        tags = context.run.tags  # the automation sensor's runs count as a sensor's
        trigger = "schedule" if tags.get("dagster/schedule_name") else (
            "sensor" if tags.get("dagster/sensor_name") or tags.get("dagster/from_automation_condition")
            else "manual")
        wh = warehouse.get()

        def progress(name: str, done: int, total: int) -> None:
            context.log.info(f"audience {name} built ({done}/{total})")

        report = build(project, names, today, wh=wh, trigger=trigger, progress=progress)
        context.log.info(f"{len(report.results)} audiences in {report.passes} batch pass(es), "
                         f"{report.seconds:.1f} s")
        for r in report.results:
            yield dg.MaterializeResult(asset_key=asset_key(r.audience),
                                       metadata=audience_metadata(wh, r, today))

    return audiences


def _refresh_jobs(project: Project, target: str) -> list:
    """Jobs to refresh by hand (the UI's launchpad, `oa demo`): every audience that reads no model
    output, and those that do (with the audiences they read). Cadences are automation conditions."""
    tags = {"openaudience/warehouse": target}
    from_models = [n for n in project.order if project.reads_models(n)]
    rest = [asset_key(n) for n in project.order if n not in from_models]
    jobs = [dg.define_asset_job(
        "audiences_refresh_all", selection=dg.AssetSelection.assets(*rest), tags=tags,
        description="Refresh every audience that reads no model output (batch), e.g. from the UI or "
                    "`oa demo`; audiences_from_models refreshes the others, after the models ran.")]
    if from_models:
        jobs.append(dg.define_asset_job(
            "audiences_from_models", selection=dg.AssetSelection.assets(
                *[asset_key(n) for n in project.upstream(from_models)]), tags=tags,
            description="Refresh the audiences that read repurchase scores or recommendations "
                        "(and those they read)."))
    return jobs


def audience_definitions() -> dg.Definitions:
    """The audience assets, with their refresh as automation conditions, and the jobs to refresh
    them by hand. An audience folder with errors fails loading the code location with the same
    messages as `oa audience validate`."""
    settings = load_settings()
    try:
        project = load_project()
    except AudienceErrors as exc:
        raise UserError(f"audiences/ has errors:\n{exc}") from None
    assets = build_audience_assets(project, settings.timezone)
    return dg.Definitions(assets=[assets], jobs=_refresh_jobs(project, settings.target))
