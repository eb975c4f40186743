"""A fault-injecting HTTP proxy for delivery tests: in front of a real receiver it answers some
requests itself with a 500 or a 429 + Retry-After (the receiver never sees them), and forwards
others but then loses the answer, by resetting the connection or by answering after the
client's timeout (the receiver has acted; the sender does not know). The rest pass through.
The draws come from a seeded generator, and every fault is counted."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class FaultProxy:
    def __init__(self, upstream: str, fault_rate: float = 0.2, seed: int = 1,
                 late_s: float = 1.5, retry_after: str = "1") -> None:
        self.upstream = upstream.rstrip("/")
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter = Counter()
        self.fault_rate = fault_rate
        self.late_s = late_s
        self.retry_after = retry_after
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.draw()
                if fault == "500":
                    return self.reply(500, b'{"code": "ERROR"}')
                if fault == "429":
                    return self.reply(429, b'{"code": "SLOW_DOWN"}', {"Retry-After": proxy.retry_after})
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                answer = requests.post(proxy.upstream + self.path.removeprefix("/hook"), data=body,
                                       headers=headers, timeout=10)
                if fault == "reset":
                    # RST instead of an answer: the receiver acted, the sender sees a reset
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return None
                if fault == "late":
                    time.sleep(proxy.late_s)
                self.reply(answer.status_code, answer.content,
                           {k: v for k, v in answer.headers.items() if k.lower() == "retry-after"})
                return None

            def reply(self, status: int, data: bytes, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def draw(self) -> str:
        with self.lock:
            if self.down:
                self.faults["500"] += 1
                return "500"
            r = self.rng.random()
            if r >= self.fault_rate:
                self.faults["ok"] += 1
                return "ok"
            fault = ("500", "429", "reset", "late")[int(r / self.fault_rate * 4)]
            self.faults[fault] += 1
            return fault

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
