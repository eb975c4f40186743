"""The Dagster code location: every domain's definitions merged into one.

Importing this module does no work: `dg dev`, `dagster` and the webserver find `code_location`
(a `@dg.definitions` function) and call it when they load the location. It reads the dbt manifest
that `make ui` (or the command running a job) prepared, the audience and destination files, and
the settings; it never runs dbt and never changes the environment (the resources give dbt its
variables when a run starts). `defs` (`from orchestration.definitions import defs`) is the same
Definitions, built on first use.
"""

from __future__ import annotations

import os
from functools import cache

import dagster as dg

AUTOMATION_SENSOR = "audience_and_model_refresh"


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """The one sensor that evaluates the automation conditions: audiences (their `refresh:`) and
    the model outputs (after their inputs). It starts running, like the sensors and schedules it
    replaces: refreshing an audience or scores sends nothing; a new version reaches a channel
    only through `deliveries_on_new_version` or a `deliver_*` schedule, which start stopped.
    It targets no delivery, and no delivery asset has a condition."""
    from openaudience.core.settings import load_settings
    from orchestration.defs.audiences.assets import GROUP
    from orchestration.defs.ml.assets import MODEL_OUTPUTS

    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.groups(GROUP) | dg.AssetSelection.assets(*MODEL_OUTPUTS),
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags={"openaudience/warehouse": load_settings().target},
        minimum_interval_seconds=60,
        description="Refresh audiences by their `refresh:` (daily: after the nightly refresh "
                    "updated what they read; hourly and cron: on their cron) and score and recommend "
                    "after their inputs update. Sends nothing: deliveries have their own, stopped, "
                    "sensor and schedules.")


def build_definitions() -> dg.Definitions:
    """Raw tables, dbt models (and the daily AIPL partitions), the nightly job, audiences,
    deliveries, models, journeys, events, the automation sensor, and the resources."""
    from openaudience.core.settings import load_settings
    from orchestration.defs.audiences.assets import audience_definitions
    from orchestration.defs.dbt.assets import dbt_definitions
    from orchestration.defs.deliveries.assets import delivery_definitions
    from orchestration.defs.events.assets import event_definitions
    from orchestration.defs.journeys.assets import journey_definitions
    from orchestration.defs.ml.assets import ml_definitions
    from orchestration.defs.nightly.jobs import nightly_definitions
    from orchestration.defs.raw.assets import RAW_ASSETS, RAW_CHECKS
    from orchestration.resources import dbt_resource, warehouse_resource

    settings = load_settings()
    warehouse_models, aipl_days = dbt_definitions(settings.timezone)
    nightly_refresh, nightly_schedule = nightly_definitions(warehouse_models, aipl_days,
                                                            settings.timezone, settings.target)
    core = dg.Definitions(
        assets=[*RAW_ASSETS, warehouse_models, aipl_days],
        asset_checks=RAW_CHECKS,
        jobs=[nightly_refresh],
        schedules=[nightly_schedule],
        sensors=[automation_sensor()],
        resources={"dbt": dbt_resource(), "warehouse": warehouse_resource()},
    )
    return dg.Definitions.merge(core, audience_definitions(), delivery_definitions(), ml_definitions(),
                                journey_definitions(), event_definitions())


@dg.definitions
def code_location() -> dg.Definitions:
    """What `make ui` (`dg dev`) loads, read afresh on each load (the UI's reload included)."""
    return build_definitions()


def _cached() -> dg.Definitions:
    # built again when the settings the definitions depend on change (tests move between
    # warehouses in one process); the resources' EnvVar fields follow which variables are set
    from orchestration.resources import VARIABLES

    key = tuple(os.environ.get(v) for v in ("OA_TARGET", "OA_TIMEZONE", "OA_HOME")) + tuple(
        bool(os.environ.get(v)) for v in VARIABLES.values())
    return _build(key)


@cache
def _build(_key: tuple) -> dg.Definitions:
    return build_definitions()


def __getattr__(name: str) -> dg.Definitions:
    if name == "defs":
        return _cached()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
