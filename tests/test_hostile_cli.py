"""Every `oa` command against a warehouse it cannot use: empty, held by another process, or an
unreachable PostgreSQL. Each answers (exit 0) or refuses with one message (exit 2); none ends in
a traceback, and a refusal names what is wrong.

The commands run in this process (through `main`, as the `oa` script does) so the whole table
costs one import; a traceback would surface here as the exception itself and fail the test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.hostile import oa_in_process

AUDIENCE = "top_spenders"
DESTINATION = "crm_coupon_webhook"
CHANNEL = {"OA_CRM_WEBHOOK_URL": "http://127.0.0.1:9/hook", "OA_CRM_WEBHOOK_SECRET": "s3cret"}

# (arguments, touches the warehouse). `build`, `nightly` and `aipl backfill` run dbt: they are
# checked where they refuse before dbt starts (locked, unreachable), which is the fast path.
COMMANDS: list[tuple[tuple[str, ...], bool]] = [
    (("status",), True),
    (("audience", "list"), True),
    (("audience", "count", AUDIENCE), True),
    (("audience", "preview", AUDIENCE), True),
    (("audience", "explain", AUDIENCE, "p1"), True),
    (("audience", "diff", AUDIENCE), True),
    (("audience", "export", AUDIENCE, "--out", "{tmp}/export.csv"), True),
    (("audience", "build", AUDIENCE), True),
    (("audience", "validate"), False),
    (("audience", "sql", AUDIENCE), False),
    (("report", "rfm", "rfm_default", "--out", "{tmp}/rfm.html"), True),
    (("report", "pivot", "--tags", "gender", "--out", "{tmp}/pivot.html"), True),
    (("report", "audience", AUDIENCE, "--out", "{tmp}/aud.html"), True),
    (("load", "customers", "{tmp}/customers.csv"), True),
    (("load-dir", "{tmp}/files"), True),
    (("deliver", "status"), True),
    (("deliver", DESTINATION, "--dry-run"), True),
    (("deliver", "replay", DESTINATION), True),
    (("deliver", "receipts"), True),
    (("deliver", "validate"), False),
    (("suppress", "add", "--id-type", "mobile", "--reason", "unsubscribe", "13800000000"), True),
    (("suppress", "list"), True),
    (("ml", "models"), True),
    (("ml", "pools"), True),
    (("ml", "score", "repurchase"), True),
    (("ml", "activate", "repurchase", "1"), True),
    (("events", "ingest"), True),
    (("events", "validate"), False),
]
DBT_COMMANDS: list[tuple[str, ...]] = [
    ("build", "--as-of", "2026-06-29"),
    ("aipl", "backfill", "--start", "2026-06-01", "--end", "2026-06-02"),
]


def run_oa(args: tuple[str, ...], env: dict[str, str], tmp: Path) -> tuple[int, str]:
    """`oa ARGS` in this process with `env` as its OA_/PG environment: (exit code, output)."""
    done = oa_in_process((a.format(tmp=tmp) for a in args), env)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "files").mkdir()
    csv = ("customer_id,mobile,email,gender,birth_date,city,member_level,registered_at\n"
           "c1,13800000001,a@example.com,F,1990-01-01,Shanghai,gold,2026-01-01 10:00:00\n")
    (tmp_path / "customers.csv").write_text(csv)
    (tmp_path / "files" / "customers.csv").write_text(csv)
    return tmp_path


def _check(results: list[tuple[tuple[str, ...], int, str]], must_say: str | None) -> None:
    problems = []
    for args, code, out in results:
        if code not in (0, 2) or "Traceback" in out:
            problems.append(f"oa {' '.join(args)}: exit {code}\n{out[-1500:]}")
        elif must_say and code == 2 and must_say not in out and "problem(s)" not in out:
            problems.append(f"oa {' '.join(args)}: refused without saying {must_say!r}:\n{out[-800:]}")
    assert not problems, "\n\n".join(problems)


def test_every_command_on_an_empty_warehouse(tmp_path, files):
    env = {"OA_HOME": str(tmp_path / "home"), "OA_TARGET": "duckdb"}
    results = []
    for args, _ in COMMANDS:
        code, out = run_oa(args, env, files)
        results.append((args, code, out))
    _check(results, None)
    # a reader on a warehouse that does not exist says how to make one
    said = {args: (code, out) for args, code, out in results}
    code, out = said[("audience", "list")]
    assert code == 2 and "make demo" in out, out


@pytest.fixture
def held(tmp_path):
    """The embedded warehouse held for writing by another process for the test's duration."""
    path = tmp_path / "home" / "warehouse.duckdb"
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        conn = duckdb.connect({str(path)!r})
        conn.execute("create table if not exists t (a int)")
        print("held", flush=True)
        time.sleep(300)
        """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield path, holder.pid
    holder.kill()
    holder.wait()


def test_every_command_while_another_process_holds_the_warehouse(tmp_path, files, held):
    path, pid = held
    env = {"OA_HOME": str(tmp_path / "home"), "OA_TARGET": "duckdb", "OA_LOCK_WAIT": "0.2", **CHANNEL}
    results = []
    started = time.monotonic()
    for args, touches in COMMANDS + [(a, True) for a in DBT_COMMANDS]:
        code, out = run_oa(args, env, files)
        results.append((args, code, out))
        if touches and code == 2 and "problem(s)" not in out:
            assert f"in use by PID {pid}" in out, (args, out[-1500:])
            assert "--wait" in out, (args, out)
    _check(results, f"in use by PID {pid}")
    # every refusal came after the configured wait, not after a hang
    assert time.monotonic() - started < 120


def test_every_command_against_an_unreachable_postgres(tmp_path, files):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"OA_HOME": str(tmp_path / "home"), "OA_TARGET": "postgres",
           "OA_PG_DSN": f"postgresql://oa:secret-pw@127.0.0.1:{port}/cdp", **CHANNEL}
    results = []
    for args, touches in COMMANDS + [(a, True) for a in DBT_COMMANDS]:
        code, out = run_oa(args, env, files)
        results.append((args, code, out))
        assert "secret-pw" not in out, (args, out)
        if touches and code == 2 and "problem(s)" not in out:
            assert f"cannot connect to PostgreSQL at oa@127.0.0.1:{port}/cdp" in out, (args, out[-1500:])
    _check(results, "cannot connect to PostgreSQL")


@pytest.mark.parametrize("name, value, says", [
    ("OA_DUCKDB_MEMORY_LIMIT", "3GB'; attach '{tmp}/x' as x; --", "give a memory size"),
    ("OA_DELIVERY_MEMORY_LIMIT", "lots", "give a memory size"),
    ("OA_TIMEZONE", "Mars/Olympus", "is not a time zone"),
    ("OA_LOCK_WAIT", "soon", "OA_LOCK_WAIT='soon'"),
    ("OA_READ_SNAPSHOT", "maybe", "give on or off"),
    ("OA_AUDIENCE_CONCURRENCY", "0", "whole number from 1"),
    ("OA_PG_DSN", "postgresql://u@h:99999/db", "port a number from 1 to 65535"),
    ("OA_PG_DSN", "not a dsn", "OA_PG_DSN must be"),
    ("PGPORT", "fivefourthreetwo", "PGPORT='fivefourthreetwo'"),
    ("OA_HOME", "{tmp}/a-file", "this is a file, not a folder"),
    ("OA_DUCKDB_PATH", "{tmp}", "this is a folder"),
])
def test_a_bad_setting_names_its_variable(tmp_path, name, value, says):
    (tmp_path / "a-file").write_text("x")
    env = {"OA_HOME": str(tmp_path / "home"), name: value.format(tmp=tmp_path)}
    if name in ("OA_PG_DSN", "PGPORT"):
        env.update({"OA_TARGET": "postgres", "PGDATABASE": "cdp"})
    code, out = run_oa(("status",), env, tmp_path)
    assert code == 2 and "Traceback" not in out, out
    assert name in out and says in out, out
    assert not (tmp_path / "x").exists()


def test_user_text_with_markup_is_printed_as_written(tmp_path):
    """A value a user wrote, echoed in an error, is printed literally: rich markup in it neither
    crashes the CLI nor styles the message."""
    env = {"OA_HOME": str(tmp_path / "home")}
    code, out = run_oa(("audience", "count", "[/x][bold]nobody"), env, tmp_path)
    assert code == 2 and "Traceback" not in out
    assert "[/x][bold]nobody" in out


def test_git_revision_cannot_become_an_option(tmp_path):
    """`--against` is a revision, never an option of git: `--output=FILE` writes no file, and
    the user hears that the revision does not exist."""
    from openaudience.core.errors import UserError
    from openaudience.segments.review import project_at

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    with pytest.raises(UserError, match="--against --output=") as caught:
        project_at(f"--output={victim}")
    assert "not a valid object name" in str(caught.value)
    assert victim.read_text() == "keep me"
