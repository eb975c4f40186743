"""The Dagster code location: every domain's definitions merged into one."""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from openaudience.core.dbt import apply_environment
from orchestration.dbt_project import DBT_PROJECT
from orchestration.defs.audiences.assets import audience_definitions
from orchestration.defs.dbt.assets import warehouse_models
from orchestration.defs.deliveries.assets import delivery_definitions
from orchestration.defs.ml.assets import ml_definitions
from orchestration.defs.nightly.jobs import nightly_refresh, nightly_schedule
from orchestration.defs.raw.assets import RAW_ASSETS, RAW_CHECKS
from orchestration.resources import WarehouseResource

apply_environment()


def _core() -> dg.Definitions:
    """Raw tables, dbt models and the nightly job (one Definitions at module scope: `defs`)."""
    return dg.Definitions(
        assets=[*RAW_ASSETS, warehouse_models],
        asset_checks=RAW_CHECKS,
        jobs=[nightly_refresh],
        schedules=[nightly_schedule],
        resources={
            "dbt": DbtCliResource(
                project_dir=DBT_PROJECT,
                profiles_dir=str(DBT_PROJECT.profiles_dir),
                # the dbt installed beside this Python, so no activated virtualenv is needed
                dbt_executable=str(Path(sys.executable).with_name("dbt")),
            ),
            "warehouse": WarehouseResource(),
        },
    )


defs = dg.Definitions.merge(_core(), audience_definitions(nightly_refresh), delivery_definitions(),
                            ml_definitions(nightly_refresh))
