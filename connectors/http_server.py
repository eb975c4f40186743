"""A small threaded HTTP server for JSON endpoints (the reference webhook receiver, the receipt
endpoint, the ad-platform test peers): `handle(method, path, headers, body) -> (status, answer)`
for every GET, POST and DELETE; a dict or list answer is sent as JSON, a str as an HTML page. A
handler may return a third item, a dict of extra response headers (e.g. Retry-After)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handle = Callable[[str, str, object, bytes], tuple]
MAX_BODY = 64 * 1024 * 1024  # a batch of 1,000 webhook messages is far below this


class JsonServer:
    def __init__(self, handle: Handle, host: str = "127.0.0.1", port: int = 0,
                 name: str = "oa-http") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # requests are logged by what they do
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.answer("POST")

            def do_GET(self) -> None:  # noqa: N802
                self.answer("GET")

            def do_DELETE(self) -> None:  # noqa: N802
                self.answer("DELETE")

            def answer(self, method: str) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    status, answer = 400, {"code": "BAD_REQUEST",
                                           "message": f"Content-Length must be 0 to {MAX_BODY} bytes"}
                    extra = {}
                    self.close_connection = True
                else:
                    body = self.rfile.read(length)
                    status, answer, *rest = handle(method, self.path, self.headers, body)
                    extra = rest[0] if rest else {}
                if isinstance(answer, str):
                    data, kind = answer.encode(), "text/html; charset=utf-8"
                else:
                    data, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, str(value))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.name = name
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
