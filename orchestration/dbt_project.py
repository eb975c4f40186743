"""The dbt project as Dagster sees it; `core.dbt.ensure_manifest` keeps its manifest current."""

from __future__ import annotations

from dagster_dbt import DbtProject

from openaudience.core.settings import PROJECT_ROOT

DBT_PROJECT = DbtProject(project_dir=PROJECT_ROOT, profiles_dir=PROJECT_ROOT)
