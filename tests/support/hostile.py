"""What every hostile-input test asserts: the command was refused with exit code 2 and a message
that names the thing, printed without a traceback, and nothing in the warehouse changed."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

from openaudience.core.warehouse import Warehouse, qualified


def assert_refused(done: subprocess.CompletedProcess, *needles: str) -> str:
    """The command exited 2, printed no traceback, and its output holds every needle."""
    out = (done.stdout or "") + (done.stderr or "")
    assert done.returncode == 2, f"exit {done.returncode}, expected 2:\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in the output:\n{out[-4000:]}"
    return out


def table_counts(wh: Warehouse, schemas: Iterable[str] | None = None) -> dict[str, int]:
    """Row counts of every table of the warehouse (or of `schemas`), by schema.table: compare the
    counts before and after a refused command to prove it wrote nothing."""
    if wh.engine == "duckdb" and not wh.settings.duckdb_path.exists():
        return {}
    rows = wh.query(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')")
    wanted = set(schemas) if schemas is not None else None
    out = {}
    with wh.connect(read_only=wh.engine == "duckdb") as conn:
        for schema, table in sorted(rows):
            if wanted is None or schema in wanted:
                sql = f"select count(*) from {qualified(schema, table)}"
                out[f"{schema}.{table}"] = int(wh.execute(conn, sql)[0][0])
    return out


def oa_in_process(args: Iterable[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """`oa ARGS` through the script's entry point (`cli.main`) in this process, with `env` as its
    whole OA_/PG environment (the rest of this process's environment kept): one import for many
    commands. A traceback would surface here as the exception itself."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OA_", "PG", "DAGSTER_HOME"))}
    return run_main(args, {**keep, **env})


def run_main(args: Iterable[str], env: Mapping[str, str]) -> subprocess.CompletedProcess:
    """`oa ARGS` through `cli.main` in this process with `env` as the whole environment, its output
    captured, as `subprocess.run([oa, *args], env=env)` would give it, but without a new Python,
    its imports (Great Expectations, Dagster, dbt) and a parse of the project each time.
    The environment, `sys.argv` and the CLI's process-wide lock state are put back after it;
    an exception `main` lets through (a traceback in a real run) is raised here."""
    from openaudience.cli import app as cli

    args = [str(a) for a in args]
    saved_env, saved_argv = dict(os.environ), sys.argv
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["oa", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["oa", *args], code, out.getvalue(), err.getvalue())
