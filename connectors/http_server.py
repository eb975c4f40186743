"""A small threaded HTTP server for JSON endpoints (the reference webhook receiver, the receipt
endpoint, the ad-platform test peers): `handle(method, path, headers, body) -> (status, answer)`
for every GET, POST and DELETE; a dict or list answer is sent as JSON, a str as an HTML page. A
handler may return a third item, a dict of extra response headers (e.g. Retry-After).

A body is read only once its request has earned it: a POST or PUT must declare its
Content-Length (411 otherwise, and for chunked bodies) within `max_body` (413), and the
optional `admit(method, path, headers)` may refuse the request from its line and headers alone
(a signature, a destination that is switched off) by returning an answer. A refused body is
not read, so a client cannot make the server take in 64 MiB to learn that its signature is
wrong: the answer is sent and the connection closed, after a lingering close (RFC 9112 §9.6)
that discards at most 64 KiB for at most a second, so that the answer is not lost to a reset
while the client is still sending.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handle = Callable[[str, str, object, bytes], tuple]
Admit = Callable[[str, str, object], tuple | None]
MAX_BODY = 64 * 1024 * 1024  # a batch of 1,000 webhook messages is far below this
IDLE_TIMEOUT_S = 60.0  # a connection that sends nothing for this long is closed
LINGER_BYTES, LINGER_S = 64 * 1024, 1.0  # what a refused request's close may discard, and for how long


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request (killed, reset) is no error of the server's;
        anything else keeps its traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _length_problem(method: str, headers, max_body: int) -> tuple | None:
    """The answer to a request whose body must not be read, from its headers alone."""
    if headers.get("Transfer-Encoding"):
        return 411, {"code": "LENGTH_REQUIRED",
                     "message": "send the body with a Content-Length, not chunked"}
    raw = headers.get("Content-Length")
    if raw is None:
        if method in ("POST", "PUT"):
            return 411, {"code": "LENGTH_REQUIRED", "message": "a Content-Length header is required"}
        return None
    try:
        length = int(raw)
    except ValueError:
        length = -1
    if length < 0:
        return 400, {"code": "BAD_REQUEST", "message": f"Content-Length {raw!r} is not a byte count"}
    if length > max_body:
        return 413, {"code": "PAYLOAD_TOO_LARGE",
                     "message": f"the body is {length:,} bytes; this endpoint takes at most {max_body:,}"}
    return None


class JsonServer:
    def __init__(self, handle: Handle, host: str = "127.0.0.1", port: int = 0,
                 name: str = "oa-http", max_body: int = MAX_BODY, admit: Admit | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IDLE_TIMEOUT_S

            def log_message(self, *args) -> None:  # requests are logged by what they do
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.answer("POST")

            def do_GET(self) -> None:  # noqa: N802
                self.answer("GET")

            def do_DELETE(self) -> None:  # noqa: N802
                self.answer("DELETE")

            def answer(self, method: str) -> None:
                refused = _length_problem(method, self.headers, max_body)
                if refused is None and admit is not None:
                    refused = admit(method, self.path, self.headers)
                if refused is not None:  # answered from the headers: the body stays unread
                    self.close_connection = True
                    self.reply(*refused)
                    self.linger()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.reply(*handle(method, self.path, self.headers, body))

            def linger(self) -> None:
                """Close our side, then drop a little of what the client still sends: closing
                with unread data would reset the connection, and a reset may reach the client
                before it has read the answer."""
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                    self.connection.settimeout(LINGER_S)
                    left, until = LINGER_BYTES, time.monotonic() + LINGER_S
                    while left > 0 and time.monotonic() < until:
                        chunk = self.connection.recv(min(left, 16384))
                        if not chunk:
                            break
                        left -= len(chunk)
                except OSError:  # the client is gone or slow: nothing more to do
                    pass

            def reply(self, status: int, answer, extra: dict | None = None) -> None:
                if isinstance(answer, str):
                    data, kind = answer.encode(), "text/html; charset=utf-8"
                else:
                    data, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                for name, value in (extra or {}).items():
                    self.send_header(name, str(value))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server((host, port), Handler)
        self.name = name
        self.max_body = max_body
        self.started = False

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> JsonServer:
        threading.Thread(target=self.server.serve_forever, daemon=True, name=self.name).start()
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:  # shutdown() waits for a serve_forever that never ran
            self.server.shutdown()
            self.started = False
        self.server.server_close()
