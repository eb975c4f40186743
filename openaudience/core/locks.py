"""Who may use the embedded DuckDB file now: an advisory lock beside it (`<file>.lock`).

DuckDB lets one process write a file and, while it does, no other process read it; a process
that tries gets an error. So every process of ours agrees first, on a lock file of its own:

- a writer holds it exclusively from before it opens the file until after it closed it — a dbt
  build for the whole build, so nothing slips in between our check and dbt's own open — and
  writes into it who it is ("PID 4711 (oa build)"), which the others print while they wait;
- a reader holds it shared while it reads the live file, or, when a writer holds it, reads the
  published snapshot instead (`openaudience.core.warehouse.publish_snapshot`) without waiting.

The lock is an `flock`: the kernel drops it when its holder exits, however it exits, so a
killed command never leaves the warehouse locked. Within one process it is re-entrant.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from openaudience.core.errors import UserError

_guard = threading.Lock()
_held: dict[str, list[int]] = {}  # lock file -> [fd, depth] held exclusively by this process
_taking: dict[str, threading.Lock] = {}  # one thread of this process takes a lock file at a time
_keep = False  # hold a writer lock, once taken, until release_kept() (one command per process)
_said: set[str] = set()
_wrote = False  # this process wrote an embedded warehouse (the CLI then publishes its snapshot)
POLL_S = 0.2


class WarehouseBusy(UserError):
    """Another process holds the embedded warehouse and this one could not wait for it."""


def say(message: str) -> None:
    """One line on stderr, once per command: what a command waits for or reads instead."""
    if message not in _said:
        _said.add(message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def note_write() -> None:
    """Record that this process wrote the warehouse (by its own handle, or dbt's in-process)."""
    global _wrote
    _wrote = True


def wrote() -> bool:
    return _wrote


def forget_writes() -> None:
    """Start a command with nothing written (the CLI runs one command per process, tests many)."""
    global _wrote
    _wrote = False


def start_command() -> None:
    """A new command in this process: nothing written, nothing said yet (a second command in
    the same process names whose work it waits out or reads around again)."""
    forget_writes()
    _said.clear()


def lock_file(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


def command_of(argv: list[str]) -> str:
    """A command line shown to other users, without its values: `oa deliver crm_webhook`, not
    the options and paths after it (they may hold secrets)."""
    if argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        argv = argv[2:] if argv[1] == "-m" else argv[1:]
    if not argv or argv[0].startswith("-"):  # python -c '…': the code is nobody's business
        return "python"
    words = [os.path.basename(argv[0])]
    for word in argv[1:4]:
        if word.startswith("-") or "=" in word or "/" in word or len(word) > 40:
            break
        words.append(word)
    return " ".join(words)


def holder_from_pid(pid: str) -> str:
    """'PID 123 (oa build)' from the process table; 'PID 123' if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"PID {pid}"
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return f"PID {pid} ({command_of(argv)})" if argv else f"PID {pid}"


def holder_from_duckdb(error: str) -> str:
    """The holder named by DuckDB's lock error (a process that did not take our lock file)."""
    match = re.search(r"\(PID (\d+)\)", error)
    return holder_from_pid(match.group(1)) if match else "another process"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "other commands reading it"


def _acquire(fd: int, mode: int, path: Path, wait: float | None, what: str) -> None:
    """flock(fd, mode), waiting up to `wait` seconds (None: as long as it takes) with a message."""
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(path)
        waited = time.monotonic() - started
        if wait is not None and waited >= wait:
            raise WarehouseBusy(
                f"the warehouse {path.with_suffix('')} is in use by {holder}"
                + (f" (waited {waited:.0f} s)" if waited >= 1 else "")
                + "; wait for it to finish, or rerun with --wait to queue behind it")
        say(f"waiting for the warehouse ({what}): it is in use by {holder} "
            + ("(Ctrl-C to stop)" if wait is None else f"(up to {wait:g} s; Ctrl-C to stop)"))
        time.sleep(POLL_S)


def holds(db: Path) -> bool:
    """Whether this process holds the writer lock of `db`."""
    with _guard:
        return str(lock_file(db)) in _held


def keep_until_done() -> None:
    """From now on, a writer lock this process takes is kept when its block ends, until
    `release_kept()`: a command that wrote keeps the warehouse until it has published its
    snapshot, so no writer that queued behind it slips in before the snapshot is whole."""
    global _keep
    _keep = True


def release_kept() -> None:
    """Let go of every writer lock kept by `keep_until_done` (and stop keeping)."""
    global _keep
    _keep = False
    with _guard:
        for key, entry in list(_held.items()):
            if entry[1] == 0:
                del _held[key]
                _release(entry[0])


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # nobody holds it now: the next waiter must not name us
    except OSError:
        pass
    os.close(fd)  # closing the descriptor releases the flock


def _enter(path: Path, wait: float | None, what: str) -> str:
    """Take the writer lock of a lock file, or one more level of the one this process holds."""
    key = str(path)
    with _guard:
        taking = _taking.setdefault(key, threading.Lock())
    with taking:  # another thread of ours taking it meanwhile would wait on our own lock
        with _guard:
            entry = _held.get(key)
            if entry is not None:
                entry[1] += 1
                return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(fd, fcntl.LOCK_EX, path, wait, what)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"PID {os.getpid()} ({command_of(sys.argv)})".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        with _guard:
            _held[key] = [fd, 1]
    return key


@contextmanager
def exclusive(db: Path, wait: float | None, what: str = "to write") -> Iterator[None]:
    """Hold the writer lock of `db` for the block (re-entrant within this process)."""
    key = _enter(lock_file(db), wait, what)
    try:
        yield
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0 and not _keep:
                del _held[key]
                _release(entry[0])


def hold_for_process(db: Path, wait: float | None, what: str) -> None:
    """Take the writer lock of `db` for the rest of this process (or until `let_go`): for a
    store that, once opened, stays open as long as the process lives (Spark's embedded
    metastore). Re-entrant: a second call does nothing."""
    key = str(lock_file(db))
    with _guard:
        if key in _held and _held[key][1] > 0:
            return
    _enter(lock_file(db), wait, what)


def let_go(db: Path) -> None:
    """Release what `hold_for_process` took."""
    key = str(lock_file(db))
    with _guard:
        entry = _held.pop(key, None)
    if entry is not None:
        _release(entry[0])


@contextmanager
def shared(db: Path, wait: float | None, fallback: bool) -> Iterator[str | None]:
    """Hold the reader lock of `db` for the block and yield None; or, when a writer holds the
    warehouse and `fallback` is allowed, take no lock and yield the writer's name, so the caller
    reads the snapshot instead of waiting. Inside this process's own write, yields None."""
    if holds(db):
        yield None
        return
    path = lock_file(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            holder = None
        except BlockingIOError:
            holder = _holder(path)
            if not fallback:
                _acquire(fd, fcntl.LOCK_SH, path, wait, "to read")
                holder = None
        yield holder
    finally:
        os.close(fd)
