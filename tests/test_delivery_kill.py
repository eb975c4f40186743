"""A delivery tells the truth about itself on both engines: the run row counts what the log holds
while the run is going, a run waiting on retries keeps its heartbeat, and a run whose process was
killed is shown `interrupted` with the command that resumes it; the rerun delivers every member
exactly once. The kill test also measures the acked-but-unrecorded window: members the receiver
acknowledged that the log did not yet record as sent when the sender died (docs/benchmarks.md)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa

from connectors.http_server import JsonServer
from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.settings import PROJECT_ROOT
from openaudience.core.warehouse import Warehouse
from openaudience.delivery import store
from openaudience.delivery.engine import FLUSH_SECONDS, STALE_SECONDS, deliver, runs
from openaudience.delivery.source import load_destinations
from openaudience.segments.engine import write_version
from openaudience.segments.source import load_project
from tests.support.receiving import settled

SECRET = "kill-test-secret"
AUDIENCE = "name: people\nid_type: one_id\nwhere:\n  tag: {name: city, is_not_null: true}\n"
KILL_MEMBERS = 2_000
BATCH, CONCURRENCY, RECEIVER_DELAY_S = 10, 2, 0.05  # about 400 members a second


def _people(wh, n: int) -> list[str]:
    ids = [f"{i:05d}" for i in range(n)]
    write_version(wh, "people", "one_id", pa.table({"one_id": ["p" + i for i in ids], "id_value": ids}),
                  dt.date(2026, 6, 29), "test")
    return ids


def _folders(tmp_path: Path, name: str, destination: str) -> tuple[Path, Path]:
    a, d = tmp_path / "audiences", tmp_path / "destinations"
    a.mkdir()
    d.mkdir()
    (a / "people.yml").write_text(AUDIENCE)
    (d / f"{name}.yml").write_text(destination)
    return a, d


def _sent_keys(wh, destination: str) -> set[str]:
    return {k for (k,) in wh.query(f"select idempotency_key from {store.LOG} where destination = %s "
                                   "and status = 'sent'", [destination])}


def test_a_killed_delivery_is_interrupted_with_its_counts_and_resumes_exactly_once(target, tmp_path):
    wh = target.warehouse
    ids = _people(wh, KILL_MEMBERS)
    receiver = WebhookReceiver(secret=SECRET, delay_s=RECEIVER_DELAY_S).start()
    a, d = _folders(tmp_path, "bulk", f"name: bulk\naudience: people\nchannel: webhook\n"
                                      f"batch_size: {BATCH}\nconcurrency: {CONCURRENCY}\nwebhook:\n"
                                      f"  url: {receiver.url}\n  secret_env: OA_TEST_KILL_SECRET\n")
    env = {**target.env, "OA_TEST_KILL_SECRET": SECRET, "PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "tests.support.run_delivery", str(a), str(d), "bulk"]
    sender = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline, checked_live = time.monotonic() + 120, False
    try:
        while len(receiver.state.accepted) < KILL_MEMBERS * 0.6:
            assert sender.poll() is None, sender.communicate()
            assert time.monotonic() < deadline, "the sender made no progress"
            if target.name == "postgres" and not checked_live and len(receiver.state.accepted) > 800:
                # while it sends: one snapshot of the run row and the log agree, and it is running
                [(sent, logged)] = wh.query(f"select r.sent, (select count(*) from {store.LOG} l where "
                                            f"l.run_id = r.run_id and l.status = 'sent') from {store.RUNS} r "
                                            "where r.destination = 'bulk'")
                assert sent == logged > 0
                assert runs(wh, "bulk")[0]["status"] == "running"
                checked_live = True
            time.sleep(0.02)
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.communicate()
    acked = settled(receiver)
    recorded = _sent_keys(wh, "bulk")
    window = acked - recorded
    assert recorded and recorded <= acked  # the log never says sent what was not acknowledged
    print(f"\n[{target.name}] killed with {len(acked):,} of {KILL_MEMBERS:,} acknowledged: "
          f"{len(window):,} acknowledged but not recorded as sent (batch_size {BATCH}, concurrency "
          f"{CONCURRENCY}, receiver {RECEIVER_DELAY_S * 1000:.0f} ms a request)")

    status = target.oa("deliver", "status", "bulk")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "interrupted" in status.stdout and "running" not in status.stdout, status.stdout
    assert f"after {len(recorded):,} sent" in status.stdout, status.stdout
    assert "Resume it with `oa deliver bulk`" in status.stdout, status.stdout
    [row] = runs(wh, "bulk")
    assert (row["status"], row["sent"], row["pending"]) == ("interrupted", len(recorded),
                                                            KILL_MEMBERS - len(recorded))
    assert row["pid"] == sender.pid and row["resume"] == "oa deliver bulk"

    # what `oa deliver bulk` does: resume the interrupted run before anything else
    [rerun] = deliver(load_destinations(d, load_project(a)), "bulk", wh=wh,
                      environ={"OA_TEST_KILL_SECRET": SECRET})
    receiver.stop()
    assert (rerun.run_id, rerun.status, rerun.resumed) == (row["run_id"], "succeeded", True)
    accepted = receiver.state.accepted
    assert len(accepted) == KILL_MEMBERS
    assert sorted(m["user_profile"]["target_id"] for m in accepted.values()) == ids
    assert _sent_keys(wh, "bulk") == set(accepted)
    # exactly the acknowledged-but-unrecorded members went out twice, and were acted on once
    assert {k for k, n in receiver.state.seen.items() if n > 1} == window
    [row] = runs(wh, "bulk")
    assert (row["status"], row["sent"], row["pending"]) == ("succeeded", KILL_MEMBERS, 0)


def test_a_run_waiting_on_retries_beats_and_counts_what_it_sent(target, tmp_path):
    """The first 10 members are taken, the rest answered 429 with Retry-After: 3. While the
    batches sleep between retries the run row already counts the 10 and its heartbeat stays
    fresh, so status shows it running, not dead and not at 0 sent."""
    wh = target.warehouse
    _people(wh, 20)
    taken: list[str] = []
    lock = threading.Lock()

    def handle(method, path, headers, body):
        messages = json.loads(body)
        with lock:
            if len(taken) + len(messages) <= 10:
                taken.extend(m["callback_params"]["msg_key"] for m in messages)
                return 200, {"code": "OK"}
        return 429, {"code": "SLOW_DOWN"}, {"Retry-After": "3"}

    peer = JsonServer(handle).start()
    a, d = _folders(tmp_path, "slow", "name: slow\naudience: people\nchannel: webhook\nbatch_size: 5\n"
                                      "concurrency: 2\nbreaker_failures: 1\n"
                                      "retries: {max_attempts: 3, initial_backoff_s: 0.1, max_backoff_s: 3}\n"
                                      f"webhook:\n  url: {peer.base_url}/hook\n")
    dests = load_destinations(d, load_project(a))
    done: list = []
    sender = threading.Thread(target=lambda: done.extend(deliver(dests, "slow", wh=wh)))
    sender.start()
    seen: list[tuple] = []  # (status, sent, the log's sent, heartbeat age in s, when)
    while sender.is_alive():
        time.sleep(0.25)
        rows = runs(wh, "slow")
        if not rows or rows[0]["status"] != "running":
            continue
        [(logged,)] = wh.query(f"select count(*) from {store.LOG} where destination = 'slow' "
                               "and status = 'sent'")
        r = rows[0]
        age = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - r["heartbeat_at"]).total_seconds()
        seen.append((r["status"], r["sent"], logged, age, time.monotonic()))
    sender.join()
    peer.stop()
    waiting = [s for s in seen if s[1] == 10]
    assert waiting and waiting[-1][4] - waiting[0][4] >= 3, seen  # 3 s and more of retries watched
    assert all(sent == logged for _, sent, logged, *_ in waiting), seen
    assert max(age for *_, age, _ in waiting) <= FLUSH_SECONDS + 2, seen
    [summary] = done
    assert summary.status == "stopped" and summary.counts["sent"] == 10 and summary.counts["pending"] == 10
    [row] = runs(wh, "slow")
    assert (row["status"], row["sent"], row["resume"]) == ("stopped", 10, "oa deliver slow")


def test_a_warehouse_from_before_gets_the_owner_columns(target):
    """delivery_runs made before runs named their process: the columns are added, and a run
    left `running` by that version is shown interrupted, since nothing vouches for it."""
    wh = target.warehouse
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        for name, _ in store.RUN_OWNER:
            wh.execute(conn, f"alter table {store.RUNS} drop column {name}")
        wh.execute(conn, "drop table oa_meta.schema_migrations")  # as that version left it
        wh.execute(conn, f"insert into {store.RUNS} (run_id, destination, channel, audience, "
                         "audience_version, mode, id_type, id_form, trigger, status, started_at) values "
                         "('old', 'crm', 'webhook', 'people', 1, 'diff', 'one_id', 'raw', 'manual', "
                         "'running', %s)", [dt.datetime(2026, 6, 1)])
    # `oa deliver status` reads with a handle that migrates nothing; then a writer migrates
    for handle in (Warehouse(wh.settings, reader=True), wh):
        [row] = runs(handle)
        assert (row["status"], row["pid"], row["heartbeat_at"], row["resume"]) == \
            ("interrupted", None, None, "oa deliver crm")
    writer = Warehouse(wh.settings)  # a command that writes upgrades the schema first
    with writer.connect() as conn:
        writer.ensure_schema(conn)
    columns = {c for (c,) in wh.query("select column_name from information_schema.columns where "
                                      "table_schema = 'delivery' and table_name = 'delivery_runs'")}
    assert {name for name, _ in store.RUN_OWNER} <= columns


def _started(pid: int) -> dt.datetime:
    """When a process started (UTC), as /proc tells it."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return dt.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), dt.UTC).replace(tzinfo=None)


def _running(wh, run_id: str, pid: int | None, host: str, heartbeat_at: dt.datetime) -> None:
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.execute(conn, f"insert into {store.RUNS} (run_id, destination, channel, audience, "
                         "audience_version, mode, id_type, id_form, trigger, status, started_at, pid, host, "
                         "heartbeat_at) values (%s, %s, 'webhook', 'people', 1, 'diff', 'one_id', 'raw', "
                         "'manual', 'running', %s, %s, %s, %s)",
                   [run_id, run_id, heartbeat_at, pid, host, heartbeat_at])


def test_a_live_owner_is_running_however_old_its_heartbeat_and_a_reused_pid_is_not(target):
    """On its own host a run is as alive as its process: a publish may go minutes without a
    beat. A pid now held by a process that started after the run's last heartbeat is another
    program's (the owner died and the pid was reused). Another host's run has only its heartbeat."""
    wh, here, now = target.warehouse, socket.gethostname(), dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # the oldest process in sight stands for an owner busy for a long while since its last beat
    old = min({1, os.getppid(), os.getpid()}, key=_started)
    _running(wh, "busy", old, here, _started(old) + dt.timedelta(seconds=0.5))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # its owner beat a minute ago, died, and this new process got its pid
        _running(wh, "reused", other.pid, here, now - dt.timedelta(seconds=60))
        _running(wh, "far_fresh", 4_000_000, "elsewhere", now - dt.timedelta(seconds=60))
        _running(wh, "far_stale", 4_000_000, "elsewhere", now - dt.timedelta(seconds=STALE_SECONDS + 60))
        status = {r["run_id"]: r["status"] for r in runs(wh)}
    finally:
        other.kill()
        other.wait()
    assert status == {"busy": "running", "reused": "interrupted", "far_fresh": "running",
                      "far_stale": "interrupted"}


def test_status_prints_a_peer_reply_as_text(target):
    """A run's error quotes what a peer answered: `oa deliver status` shows it as it is, never
    as markup (`[/x]` would crash the markup parser; `[bold]` would vanish)."""
    wh = target.warehouse
    error = "HTTP 502: [/x] upstream said [bold]no[/bold] \\[ok]"
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        wh.execute(conn, f"insert into {store.RUNS} (run_id, destination, channel, audience, "
                         "audience_version, mode, id_type, id_form, trigger, status, started_at, error) "
                         "values ('r1', 'crm', 'webhook', 'people', 1, 'diff', 'one_id', 'raw', 'manual', "
                         "'partial', %s, %s)", [dt.datetime(2026, 6, 1), error])
    done = target.oa("deliver", "status")
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in out, out
    assert f"crm (partial): {error}" in out, out
