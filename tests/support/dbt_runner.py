"""dbt in the test process, for the tests' own builds.

A `dbt` subprocess pays Python's start-up, dbt's imports and, whenever the warehouse differs from
the previous call's (every fresh test warehouse does: dbt folds the connection into its
partial-parse check), a full parse of the project. Here the project is parsed once per engine
and database per test process (the `target` fixture's fresh warehouses share one name) and every
later build runs from a copy of that manifest, in this process, with
its own target path per engine and worker. What the tests check of the CLI's own dbt runs still
goes through `oa` subprocesses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openaudience.core.settings import PROJECT_ROOT

_MANIFESTS: dict[tuple[str, str], Any] = {}  # (engine, database) -> parsed
_MANIFEST_COMMANDS = frozenset({"build", "run", "test", "seed", "compile"})


@dataclass
class DbtRun:
    """What a `subprocess.run` of dbt would have given the tests: a return code and the log."""

    returncode: int
    stdout: str
    stderr: str = ""


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ is `env` inside the block (dbt reads profiles.yml's env_var() from it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def target_path(engine: str) -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return PROJECT_ROOT / "target" / "pytest" / f"{worker}-{engine}"


def _project_args(engine: str) -> list[str]:
    return ["--project-dir", str(PROJECT_ROOT), "--profiles-dir", str(PROJECT_ROOT),
            "--target-path", str(target_path(engine))]


def run(engine: str, args: list[str], env: Mapping[str, str]) -> DbtRun:
    """`dbt <args>` against the warehouse `env` points at; the manifest is reused when the
    command is one that runs nodes of this project."""
    from dbt.cli.main import dbtRunner

    from openaudience.core.dbt import release_dbt_duckdb

    lines: list[str] = []

    def on_event(event) -> None:
        if event.info.level in ("info", "warn", "error") and event.info.msg:
            lines.append(str(event.info.msg))

    command = next((a for a in args if not a.startswith("-")), "")
    argv = [*args, *_project_args(engine)]
    with environment(env):
        try:
            manifest = None
            if command in _MANIFEST_COMMANDS:
                # dbt writes the database into every node at parse: one manifest per database
                database = env.get("PGDATABASE", "") if engine == "postgres" else \
                    Path(env.get("OA_DUCKDB_PATH", "warehouse.duckdb")).stem
                key = (engine, database)
                if key not in _MANIFESTS:
                    parsed = dbtRunner().invoke(["parse", "--quiet", *_project_args(engine)])
                    if not parsed.success:
                        return DbtRun(1, "\n".join(lines), f"dbt parse failed: {parsed.exception}")
                    _MANIFESTS[key] = parsed.result
                # a run writes compiled code into the nodes it runs: each run gets its own copy
                manifest = _MANIFESTS[key].deepcopy()
            result = dbtRunner(manifest=manifest, callbacks=[on_event]).invoke(argv)
        finally:
            release_dbt_duckdb()
    error = "" if result.exception is None else f"{type(result.exception).__name__}: {result.exception}"
    return DbtRun(0 if result.success else 1, "\n".join(lines), error)
