"""The dbt project as Dagster sees it, and the one function that keeps its manifest current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster_dbt import DbtProject

from orchestration.settings import PROJECT_ROOT, load_settings

DBT_PROJECT = DbtProject(project_dir=PROJECT_ROOT, profiles_dir=PROJECT_ROOT)
MANIFEST = Path(DBT_PROJECT.manifest_path)
_SOURCES = ("models", "macros", "seeds", "tests/dbt")


def apply_environment() -> None:
    """Export what dbt's profiles.yml reads (target, DuckDB path, PG* from OA_PG_DSN)."""
    os.environ.update(load_settings().dbt_env())


def _newest_source_mtime() -> float:
    newest = (PROJECT_ROOT / "dbt_project.yml").stat().st_mtime
    for folder in _SOURCES:
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.suffix in (".sql", ".yml", ".yaml", ".csv"):
                newest = max(newest, path.stat().st_mtime)
    return newest


def ensure_manifest() -> Path:
    """Parse the project when the manifest is missing or older than any model, macro or seed."""
    if MANIFEST.exists() and MANIFEST.stat().st_mtime >= _newest_source_mtime():
        return MANIFEST
    apply_environment()
    dbt = Path(sys.executable).with_name("dbt")
    cmd = [str(dbt) if dbt.exists() else "dbt", "parse", "--quiet",
           "--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"dbt parse failed:\n{done.stdout}\n{done.stderr}")
    return MANIFEST
