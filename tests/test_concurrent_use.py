"""Commands side by side on the embedded warehouse, as an installation runs them: the Dagster UI
up, the receipt endpoint up, a nightly build holding the DuckDB file, a delivery started during
it. Readers answer from the published snapshot; writers wait with a message and then proceed;
nothing crashes on DuckDB's lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from connectors.webhook_receiver import WebhookReceiver
from openaudience.core.locks import lock_file
from openaudience.delivery import store
from tests.conftest import AS_OF, OA, Target
from tests.support.postgres import free_port

SECRET = "side-by-side-secret"
DESTINATION = "crm_coupon_webhook"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _held(path: Path) -> bool:
    """Whether a writer holds the warehouse now: our lock file is taken exclusively. (A probe
    through DuckDB itself could take DuckDB's lock at the moment the writer opens the file.)"""
    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _get(url: str, timeout: float = 10) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


class GatedReceiver(WebhookReceiver):
    """A webhook receiver that holds every message until the test opens the gate: the delivery
    keeps the warehouse (retrying past its timeout) for as long as the test needs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.arrived = threading.Event()

    def handle(self, method: str, path: str, headers, body: bytes):
        if method == "POST":
            self.arrived.set()
            self.gate.wait(timeout=120)
        return super().handle(method, path, headers, body)


@pytest.mark.slow
def test_readers_answer_and_writers_wait_while_a_build_holds_the_warehouse(built_engines, tmp_path):
    source = built_engines["duckdb"]
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(source.settings.duckdb_path, home / "warehouse.duckdb")
    receiver = GatedReceiver(secret=SECRET).start()
    target = Target(name="duckdb", env={
        **source.env, "OA_HOME": str(home), "OA_LOCK_WAIT": "600",
        "OA_CRM_WEBHOOK_URL": receiver.url, "OA_CRM_WEBHOOK_SECRET": SECRET,
        "DAGSTER_HOME": str(tmp_path / "dagster")})
    (tmp_path / "dagster").mkdir()
    shutil.copyfile(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster" / "dagster.yaml")
    warehouse = home / "warehouse.duckdb"
    # the copy starts as if this destination had never delivered (a diff with nothing new would
    # send nothing), whatever other tests of this worker did on the shared build
    wh = target.warehouse
    with wh.connect() as conn:
        wh.ensure_schema(conn)
        for table in (store.RUNS, store.LOG, store.STATE, store.DEAD):
            wh.execute(conn, f"delete from {table} where destination = %s", [DESTINATION])

    # the delivery's audience, built by a writing command, which also publishes the snapshot
    done = target.oa("audience", "build", "shanghai_big_spenders", "--as-of", AS_OF)
    assert done.returncode == 0, done.stderr
    assert target.settings.snapshot_path.exists()

    ui_port, receipt_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []

    def start(*cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(cmd, env=target.env, cwd=Path(__file__).parents[1], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(p)
        return p

    try:
        ui = start(DAGSTER, "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1",
                   "-p", str(ui_port))
        endpoint = start(OA, "deliver", "receive", "--port", str(receipt_port))
        _wait_http(f"http://127.0.0.1:{receipt_port}/", 60)
        _wait_http(f"http://127.0.0.1:{ui_port}/server_info", 120)

        build = start(OA, "build", "--select", "+user_tags", "--as-of", AS_OF)
        deadline = time.monotonic() + 120
        while not _held(warehouse):
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the build never took the warehouse"
            time.sleep(0.2)
        delivery = start(OA, "deliver", DESTINATION)

        # while the build (then the delivery) holds the file: every reader answers, from the
        # snapshot, and says whose work it waits out
        before = target.settings.snapshot_path.stat().st_mtime
        for args in (("status",), ("audience", "list"), ("audience", "count", "top_spenders")):
            done = target.oa(*args)
            assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
            assert "Traceback" not in done.stderr
            assert "reading its snapshot" in done.stderr, (args, done.stderr)
            assert "(oa build" in done.stderr or "(oa deliver" in done.stderr, (args, done.stderr)
        assert _get(f"http://127.0.0.1:{ui_port}/server_info") == 200
        assert _get(f"http://127.0.0.1:{receipt_port}/") < 500

        out, err = build.communicate(timeout=600)
        assert build.returncode == 0, out[-3000:] + err[-3000:]
        assert target.settings.snapshot_path.stat().st_mtime > before, "the build published no snapshot"

        # then the delivery, which waited, takes the warehouse; readers answer beside it too
        if not receiver.arrived.wait(240):
            os.killpg(delivery.pid, 15)  # what it printed says where it stands
            out, err = delivery.communicate(timeout=60)
            pytest.fail(f"the delivery never started sending (exit {delivery.returncode}):\n"
                        f"{out[-3000:]}\n{err[-3000:]}")
        readers = [start(OA, *args) for args in (("deliver", "status"),
                                                   ("audience", "preview", "top_spenders", "--rows", "5"))]
        for reader in readers:
            out, err = reader.communicate(timeout=300)
            assert reader.returncode == 0 and "Traceback" not in err, (reader.args, err[-2000:])
            assert "reading its snapshot" in err and "(oa deliver" in err, (reader.args, err)
        assert delivery.poll() is None, "the delivery ended before the readers were done"
        receiver.gate.set()
        out, err = delivery.communicate(timeout=600)
        assert delivery.returncode == 0, out[-3000:] + err[-3000:]
        assert "waiting for the warehouse" in err and "oa build" in err, err
        assert "Traceback" not in err
        assert len(receiver.state.accepted) > 0
        # the UI and the endpoint are still up and answering after all of it
        assert ui.poll() is None and endpoint.poll() is None
        assert _get(f"http://127.0.0.1:{ui_port}/server_info") == 200
        done = target.oa("deliver", "status")
        assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.communicate()
        receiver.stop()
