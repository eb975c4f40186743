"""The nightly refresh: check the raw tables, build every model and today's AIPL day, at 02:00
local time."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import dagster as dg

from orchestration.defs.raw.assets import RAW_CHECKS

JOB = "nightly_refresh"


def nightly_definitions(warehouse_models: dg.AssetsDefinition, aipl_days: dg.AssetsDefinition,
                        timezone: str, target: str) -> tuple:
    """The job and its schedule. The job holds the daily-partitioned aipl_daily, so a run names a
    day: the schedule asks for the day it runs on, in OA_TIMEZONE (`oa nightly` does the same)."""
    job = dg.define_asset_job(
        name=JOB,
        description="Validate the raw tables (GX), then dbt build: staging, identity, marts, tags, "
                    "and the run's day of aipl_daily. Audiences and model outputs follow by their "
                    "automation conditions.",
        selection=dg.AssetSelection.assets(warehouse_models, aipl_days)
        | dg.AssetSelection.checks(*RAW_CHECKS),
        tags={"openaudience/warehouse": target},
    )

    @dg.schedule(name="nightly_refresh_schedule", job=job, cron_schedule="0 2 * * *",
                 execution_timezone=timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Every night at 02:00 in OA_TIMEZONE (default Asia/Shanghai), for that "
                             "day's partition of aipl_daily.")
    def nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.astimezone(ZoneInfo(timezone)).date()
        return dg.RunRequest(partition_key=day.isoformat())

    return job, nightly_schedule
