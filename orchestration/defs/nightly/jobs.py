"""The nightly refresh: check the raw tables, build every model, at 02:00 local time."""

from __future__ import annotations

import dagster as dg

from openaudience.core.settings import load_settings
from orchestration.defs.dbt.assets import warehouse_models
from orchestration.defs.raw.assets import RAW_CHECKS

SETTINGS = load_settings()

nightly_refresh = dg.define_asset_job(
    name="nightly_refresh",
    description="Validate the raw tables (GX), then dbt build: staging, identity, marts, tags. "
                "Later capabilities (models, audiences, deliveries) attach to this job.",
    selection=dg.AssetSelection.assets(warehouse_models)
    | dg.AssetSelection.checks(*RAW_CHECKS),
    tags={"openaudience/warehouse": SETTINGS.target},
)

nightly_schedule = dg.ScheduleDefinition(
    name="nightly_refresh_schedule",
    job=nightly_refresh,
    cron_schedule="0 2 * * *",
    execution_timezone=SETTINGS.timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 02:00 in OA_TIMEZONE (default Asia/Shanghai).",
)
