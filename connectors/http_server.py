"""A small threaded HTTP server for JSON endpoints (the reference webhook receiver, the receipt
endpoint): `handle(path, headers, body) -> (status, answer)` for every POST."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Handle = Callable[[str, object, bytes], tuple[int, dict]]


class JsonServer:
    def __init__(self, handle: Handle, host: str = "127.0.0.1", port: int = 0,
                 name: str = "oa-http") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # requests are logged by what they do
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = handle(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.name = name

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> JsonServer:
        threading.Thread(target=self.server.serve_forever, daemon=True, name=self.name).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
