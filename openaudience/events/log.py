"""The event log: where the collector puts every accepted message before it answers.

Append-only segment files under OA_HOME/events/log/ (`0000000001.jsonl`, ...), one JSON record
per line. A write is followed by fsync before anyone is told `success`, so a crash after the
answer loses nothing; a crash in the middle of a write leaves at most a torn last line, which
the next writer cuts off (nobody was told that line was stored). Records carry an id (the
event's, or its content hash): the writer keeps every id it holds and drops a record it already
has, so a retried batch is stored once, across restarts too.

Why files and not the warehouse: the collector must answer in milliseconds while a nightly build
holds the DuckDB file for minutes (DuckDB has one writer), and an fsync'd append is the cheapest
durable write there is. `oa events ingest` (and its Dagster sensor) moves the log into the
warehouse from the offset it stopped at, in the same transaction as the offset.

One writer per log: `EventLog.open` takes the folder's lock and says who holds it otherwise.
Readers (the ingest) need no lock: they read complete lines only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from openaudience.core.errors import UserError

SEGMENT_BYTES = 64 * 1024 * 1024
SUFFIX = ".jsonl"


def log_dir(home: Path) -> Path:
    return home / "events" / "log"


def segments(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{SUFFIX}") if p.stem.isdigit()) if folder.is_dir() else []


def _digest(record_id: str) -> bytes:
    return hashlib.blake2b(record_id.encode("utf-8"), digest_size=16).digest()


class LogBusy(UserError):
    pass


@dataclass
class Appended:
    stored: int
    duplicates: int


class EventLog:
    """The writer. Not thread-safe: one thread (the collector's writer) appends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._seen: set[bytes] = set()
        self.segment: Path | None = None
        self.size = 0
        self.records = 0

    @classmethod
    def open(cls, folder: Path) -> EventLog:
        log = cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise LogBusy(f"another collector ({holder}) writes {folder}; stop it, or give this one "
                          "another OA_HOME") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()}".encode(), 0)
        log._lock_fd = fd
        log._recover()
        return log

    def _recover(self) -> None:
        """Read every segment's ids; cut a torn last line off the newest segment."""
        files = segments(self.folder)
        for path in files:
            with path.open("rb") as fh:
                good = 0
                for line in fh:
                    if not line.endswith(b"\n"):
                        break
                    try:
                        self._seen.add(_digest(json.loads(line)["id"]))
                    except (ValueError, KeyError, TypeError):
                        pass  # an unreadable line the ingest will report; it holds no id
                    good += len(line)
                    self.records += 1
            if good < path.stat().st_size:
                if path != files[-1]:
                    raise UserError(f"{path} ends in a torn line, but it is not the newest segment; "
                                    "move it away and start the collector again")
                with path.open("r+b") as fh:
                    fh.truncate(good)
                    os.fsync(fh.fileno())
        self.segment = files[-1] if files else self.folder / f"{1:010d}{SUFFIX}"
        self._fd = os.open(self.segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self._fd).st_size

    def __contains__(self, record_id: str) -> bool:
        return _digest(record_id) in self._seen

    def append(self, records: list[dict]) -> Appended:
        """Store the records not stored before (by id), durably: they are on disk when this
        returns."""
        return self.append_many([records])[0]

    def append_many(self, batches: list[list[dict]]) -> list[Appended]:
        """`append` for several requests' batches with one write and one fsync (group commit):
        what each batch stored and what it already had."""
        lines: list[str] = []
        out: list[Appended] = []
        now = int(time.time() * 1000)
        fresh: set[bytes] = set()
        for records in batches:
            stored = dupes = 0
            for r in records:
                d = _digest(r["id"])
                if d in self._seen or d in fresh:
                    dupes += 1
                    continue
                fresh.add(d)
                stored += 1
                lines.append(json.dumps({**r, "received": now}, ensure_ascii=False, separators=(",", ":")))
            out.append(Appended(stored, dupes))
        if lines:
            data = ("\n".join(lines) + "\n").encode("utf-8")
            if self.size and self.size + len(data) > SEGMENT_BYTES:
                self._rotate()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fsync(self._fd)
            except OSError:
                # nothing of this write counts: cut it off, so that a retry is not a duplicate line
                os.ftruncate(self._fd, self.size)
                raise
            self.size += len(data)
            self.records += len(lines)
            self._seen.update(fresh)
        return out

    def _rotate(self) -> None:
        os.close(self._fd)
        self.segment = self.folder / f"{int(self.segment.stem) + 1:010d}{SUFFIX}"
        self._fd = os.open(self.segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = 0
        fd = os.open(self.folder, os.O_RDONLY)  # the new file's name is durable too
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def read(folder: Path, segment: str, offset: int, max_lines: int) -> tuple[list[bytes], str, int]:
    """Up to `max_lines` complete lines of one segment from byte `offset` on (the first segment
    when `segment` is empty; the next one once this one is read to its end and a newer one
    exists): the lines, and the segment and offset after them."""
    files = segments(folder)
    names = [p.name for p in files]
    if not files:
        return [], segment, offset
    if segment not in names:
        # the first read, or the log no longer has where the last one stopped (it was replaced,
        # or its old segments removed): from the start of what there is; a reader that stores
        # by event id (the ingest) writes nothing twice
        segment, offset = names[0], 0
    while True:
        lines: list[bytes] = []
        path = folder / segment
        if offset > path.stat().st_size:  # a shorter file under the same name: read it again
            offset = 0
        with path.open("rb") as fh:
            fh.seek(offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # being written: a later read takes it
                offset += len(line)
                lines.append(line)
                if len(lines) >= max_lines:
                    break
            at_end = fh.tell() >= path.stat().st_size and not lines
        later = [n for n in names if n > segment]
        if lines or not at_end or not later:
            return lines, segment, offset
        segment, offset = later[0], 0
