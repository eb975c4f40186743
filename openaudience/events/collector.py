"""The event collector: an ASGI app (served by uvicorn, `oa events serve`) that takes the
reporting contract of spec D §7.3 and appends what it accepts to the event log before it answers.

    POST /events        (or /RecieveEventMessage)  {"eventMessageModelListStr": "[...]"}
    POST /identities    (or /RecieveUserMessage)   {"customerMessageModelListStr": "[...]"}
    GET  /health

With a Kafka topic (`oa events serve --kafka-topic`), a reader thread appends the topic's events
through the same writer (openaudience/events/topic.py).

Order of the checks, cheapest first, so nobody without a key makes us read or store anything:
the path and method; a Content-Length no larger than OA_EVENTS_MAX_BYTES (411, 413); the
channel named by X-OA-Key, a timestamp within 5 minutes and the signature over the headers
(401, errorCode ES0110000002); only then the body, which must be the length declared and the
SHA-256 signed (413, 401); then the JSON and the batch (400); then each message on its own.

The answer is the contract's `{success, errorCode, errorDesc, traceId}`, plus `accepted` (new
messages stored), `duplicates` (messages the log already held: a retry) and `errors` (one per
refused message: its index, errorCode and errorDesc). A batch with refused messages still keeps
its good ones and answers success false. 200 means every accepted message is on disk (fsync).

Appends go through one writer task: requests that arrive while a write is under way are written
together with one fsync (group commit), which is what keeps the answer fast under load.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from connectors.events import (
    DIGEST_HEADER,
    KEY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_matches,
)
from openaudience.core.errors import UserError
from openaudience.events import messages as m
from openaudience.events.log import EventLog
from openaudience.events.source import Registry

MAX_SKEW_S = 300
ROUTES = {"/events": "events", "/RecieveEventMessage": "events",
          "/identities": "identities", "/RecieveUserMessage": "identities"}
FIELDS = {"events": "eventMessageModelListStr", "identities": "customerMessageModelListStr"}
_HEX64 = frozenset("0123456789abcdef")
log = logging.getLogger("oa.events")


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused_messages: int = 0
    refused_requests: int = 0
    started: float = field(default_factory=time.time)


class Collector:
    """The ASGI app. `keys`: app_key -> the channel's signing key (from the environment)."""

    def __init__(self, registry: Registry, keys: dict[str, str], event_log: EventLog,
                 max_bytes: int, reader=None) -> None:
        self.registry, self.keys, self.log, self.max_bytes = registry, keys, event_log, max_bytes
        self.reader = reader  # a TopicReader (events from Kafka), run beside the HTTP requests
        self._reader_thread: threading.Thread | None = None
        self.counters = Counters()
        self._queue: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="event-log")
        self._missing_warned: set[str] = set()

    # -- the writer ------------------------------------------------------------------------------
    async def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop())
        if self.reader is not None:
            loop = asyncio.get_running_loop()
            self.reader.store = lambda records: asyncio.run_coroutine_threadsafe(
                self.store(records), loop).result()
            self._reader_thread = threading.Thread(target=self._read_topic, name="event-topic", daemon=True)
            self._reader_thread.start()

    def _read_topic(self) -> None:
        try:
            self.reader.run()
        except Exception as exc:  # noqa: BLE001 - said, and the HTTP side keeps serving
            log.error("the Kafka reader stopped: %s", exc)

    async def _stop(self) -> None:
        if self._reader_thread is not None:
            self.reader.stop.set()
            await asyncio.get_running_loop().run_in_executor(None, self._reader_thread.join, 10)
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            pending = [first]
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._pool, self.log.append_many,
                                                     [records for records, _ in pending])
            except Exception as exc:  # a full disk, an I/O error: every waiting request hears it
                log.error("the event log could not be written: %s", exc)
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(pending, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def store(self, records: list[dict]):
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((records, future))
        return await future

    # -- HTTP ------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self._start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        trace = secrets.token_hex(16)
        status, body = await self._handle(scope, receive, trace)
        payload = orjson.dumps({"success": False, "errorCode": None, "errorDesc": None, **body,
                                "traceId": trace})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _handle(self, scope, receive, trace: str) -> tuple[int, dict]:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            c = self.counters
            return 200, {"success": True, "records": self.log.records, "requests": c.requests,
                         "accepted": c.accepted, "duplicates": c.duplicates,
                         "refused_messages": c.refused_messages, "refused_requests": c.refused_requests,
                         "up_seconds": round(time.time() - c.started, 1)}
        kind = ROUTES.get(path)
        if kind is None:
            return 404, _error(m.BAD_REQUEST, f"no such endpoint; POST {', '.join(ROUTES)}")
        if method != "POST":
            return 405, _error(m.BAD_REQUEST, "use POST")
        self.counters.requests += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        if not length.isdigit() or len(length) > 12:
            return self._refused(411, m.BAD_REQUEST, "a Content-Length is required")
        if int(length) > self.max_bytes:
            return self._refused(413, m.BODY_TOO_LARGE, f"the body is larger than {self.max_bytes:,} bytes "
                                                        "(OA_EVENTS_MAX_BYTES); send at most 100 messages")
        app_key = headers.get(KEY_HEADER.lower(), "")
        channel = self.registry.channels.get(app_key)
        if channel is None:
            return self._refused(401, *m.AUTH_FAILED)
        key = self.keys.get(app_key)
        if not key:
            if app_key not in self._missing_warned:
                self._missing_warned.add(app_key)
                log.warning("channel %s has no key: set %s in the collector's environment", app_key,
                            channel.key_env)
            return self._refused(503, m.UNAVAILABLE, "this channel is not accepting events now")
        ts, nonce = headers.get(TIMESTAMP_HEADER.lower(), ""), headers.get(NONCE_HEADER.lower(), "")
        digest, signature = headers.get(DIGEST_HEADER.lower(), ""), headers.get(SIGNATURE_HEADER.lower(), "")
        if not (ts.isdigit() and len(ts) <= 12 and abs(time.time() - int(ts)) <= MAX_SKEW_S
                and 0 < len(nonce) <= 128 and len(digest) == 64 and set(digest) <= _HEX64
                and signature_matches(key, app_key, ts, nonce, digest, signature)):
            return self._refused(401, *m.AUTH_FAILED)
        raw = await _read_body(receive, int(length))
        if raw is None:
            return self._refused(413, m.BODY_TOO_LARGE, "the body is longer than its Content-Length")
        if hashlib.sha256(raw).hexdigest() != digest:
            return self._refused(401, *m.AUTH_FAILED)
        try:
            items = m.batch(orjson.loads(raw), FIELDS[kind])
        except orjson.JSONDecodeError:
            return self._refused(400, m.BAD_REQUEST, "the body is not JSON")
        except ValueError as exc:
            code = m.BATCH_TOO_LARGE if "at most" in str(exc) else m.BAD_REQUEST
            return self._refused(400, code, str(exc))
        judge = m.judge_events if kind == "events" else m.judge_identities
        judged = judge(items, self.registry, app_key)
        try:
            stored = await self.store(judged.records) if judged.records else None
        except OSError:  # the writer logged why (a full disk, an I/O error); nothing was stored
            return self._refused(503, m.UNAVAILABLE, "the event log cannot be written now; retry later")
        accepted = stored.stored if stored else 0
        duplicates = stored.duplicates if stored else 0
        c = self.counters
        c.accepted += accepted
        c.duplicates += duplicates
        c.refused_messages += len(judged.errors)
        answer = {"accepted": accepted, "duplicates": duplicates, "errors": judged.errors}
        if judged.errors:
            return 200, {**answer, "errorCode": m.BAD_MESSAGE,
                         "errorDesc": f"{len(judged.errors)} of {len(items)} messages refused (see errors); "
                                      "the others are stored"}
        return 200, {**answer, "success": True}

    def _refused(self, status: int, code: str, desc: str) -> tuple[int, dict]:
        self.counters.refused_requests += 1
        return status, _error(code, desc)


def _error(code: str, desc: str) -> dict:
    return {"errorCode": code, "errorDesc": desc}


async def _read_body(receive, length: int) -> bytes | None:
    """The body, or None when it runs past `length` (what was declared, and checked)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > length:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def keys_from_environment(registry: Registry, environ=os.environ) -> tuple[dict[str, str], list[str]]:
    """Each channel's key from its key_env; and the variables that are not set (those channels
    answer 503 until they are)."""
    keys, missing = {}, []
    for app_key, channel in registry.channels.items():
        value = environ.get(channel.key_env, "")
        if value:
            keys[app_key] = value
        else:
            missing.append(channel.key_env)
    return keys, missing


def serve(registry: Registry, event_log: EventLog, host: str, port: int, max_bytes: int,
          reader=None) -> None:
    """Run the collector until interrupted (SIGINT, SIGTERM); with `reader`, it also appends the
    events of a Kafka topic."""
    import uvicorn

    keys, missing = keys_from_environment(registry)
    for name in missing:
        log.warning("%s is not set: its channel's requests are answered 503", name)
    app = Collector(registry, keys, event_log, max_bytes, reader)
    config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
                            access_log=False, log_level="warning", backlog=2048)
    uvicorn.Server(config).run()


def spawn(env: dict[str, str], seconds: float = 60.0) -> tuple[subprocess.Popen, int]:
    """`oa events serve` in a process (and session) of its own on a free loopback port, once it
    accepts connections: for the demo and the benchmark. UserError with its last words when it
    does not start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    oa = str(Path(sys.executable).with_name("oa"))
    proc = subprocess.Popen([oa, "events", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                why = proc.communicate()[1][-1000:] if proc.poll() is not None else "no answer"
                if proc.poll() is None:
                    stop(proc)
                raise UserError(f"the event collector did not start: {why}") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """Stop a spawned collector (SIGTERM: it finishes the writes under way)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)
