"""The embedded warehouse's lock file between real processes: who holds it, who waits, who reads
the snapshot instead, and that a killed holder never leaves it locked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from openaudience.core import locks
from openaudience.core.locks import WarehouseBusy


@pytest.fixture
def holder(tmp_path):
    """Another process holding the writer lock of tmp_path/warehouse.duckdb until killed."""
    db = tmp_path / "warehouse.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from openaudience.core import locks
        with locks.exclusive(Path({str(db)!r}), None):
            print("held", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield db, proc
    proc.kill()
    proc.wait()


def test_a_writer_waits_then_refuses_naming_the_holder(holder):
    db, proc = holder
    started = time.monotonic()
    with pytest.raises(WarehouseBusy, match=rf"in use by PID {proc.pid} \(python\).*--wait"):
        with locks.exclusive(db, wait=0.5):
            pass
    assert time.monotonic() - started >= 0.5


def test_a_reader_is_sent_to_the_snapshot_instead_of_waiting(holder):
    db, proc = holder
    with locks.shared(db, wait=0.5, fallback=True) as writer:
        assert writer == f"PID {proc.pid} (python)"
    with pytest.raises(WarehouseBusy):  # no snapshot to fall back on: it waits, then refuses
        with locks.shared(db, wait=0.3, fallback=False):
            pass


def test_a_killed_holder_leaves_nothing_locked(holder):
    db, proc = holder
    proc.kill()
    proc.wait()
    started = time.monotonic()
    with locks.exclusive(db, wait=5):
        assert time.monotonic() - started < 1
        assert locks.lock_file(db).read_text().startswith(f"PID {__import__('os').getpid()} ")
    assert locks.lock_file(db).read_text() == ""  # the next waiter names nobody stale


def test_a_kept_lock_is_held_until_released_and_is_reentrant_across_threads(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    locks.keep_until_done()
    try:
        with locks.exclusive(db, wait=1):
            inner: list[bool] = []
            t = threading.Thread(target=lambda: inner.append(_enter_and_leave(db)))
            t.start()
            t.join(10)
            assert inner == [True]  # a second thread of this process does not wait on us
        assert locks.holds(db)  # kept after the block: the command has not published yet
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from pathlib import Path
            from openaudience.core import locks
            with locks.exclusive(Path({str(db)!r}), 0.3):
                pass
            """)], capture_output=True, text=True)
        assert other.returncode != 0 and "in use by PID" in other.stderr
    finally:
        locks.release_kept()
    assert not locks.holds(db)
    with locks.exclusive(db, wait=0):
        pass


def _enter_and_leave(db) -> bool:
    with locks.exclusive(db, wait=1):
        return True
