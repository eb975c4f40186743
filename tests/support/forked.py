"""`oa` in a process of its own on the code of another project folder, started warm.

Some tests run the CLI on a copy of the project (its own audiences/ and destinations/ beside the
code, as a user's checkout has them). A new Python per command pays for importing pandas,
DuckDB, Arrow, Dagster and the rest, about five seconds each time; here a fork server imports
them once per test process and forks a child per command. The child is a process of its own, as
`python -c "from openaudience.cli import main; main()"` run in the folder would be: the folder's
code (not this checkout's) is imported fresh, the environment is exactly the one given, and
its exit code and output are the command's. An exception `main` lets through is printed as
Python prints it, so a test can tell a traceback from a message.

Nothing here imports `openaudience` at module level: the fork server must not hold this
checkout's copy of it.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

# third-party packages the CLI imports; each costs the fork server once, not each command
PRELOAD = ["pandas", "pyarrow", "pyarrow.parquet", "duckdb", "psycopg2", "sqlglot", "pydantic", "yaml",
           "rich.console", "typer", "jinja2.sandbox", "requests", "dagster"]
_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _CONTEXT = context
    return _CONTEXT


def _main(project: str, args: list[str], env: dict[str, str], out: str, err: str) -> None:
    """The child: the project's own `openaudience.cli.main`, run as its script runs it."""
    import traceback

    stdout, stderr = open(out, "w", encoding="utf-8"), open(err, "w", encoding="utf-8")
    os.dup2(stdout.fileno(), 1)
    os.dup2(stderr.fileno(), 2)
    sys.stdout, sys.stderr = stdout, stderr
    os.chdir(project)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, project)
    sys.argv = ["oa", *args]
    code = 0
    try:
        from openaudience.cli import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would print and exit with
        traceback.print_exc()
        code = 1
    finally:
        stdout.flush()
        stderr.flush()
    sys.exit(code)


def run_in(project: Path, env: Mapping[str, str], args: Iterable[str],
           timeout: float = 600) -> subprocess.CompletedProcess:
    """`oa ARGS` in a process of its own, in `project` and on its code, with `env` as the whole
    environment; as `subprocess.run(..., capture_output=True, text=True)` would return it."""
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory(prefix="oa-forked-") as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        child = _context().Process(target=_main, args=(str(project), args, dict(env), out, err))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["oa", *args], timeout)
        with open(out, encoding="utf-8", errors="replace") as f_out, \
                open(err, encoding="utf-8", errors="replace") as f_err:
            return subprocess.CompletedProcess(["oa", *args], child.exitcode, f_out.read(), f_err.read())
