"""A reference receiver for the webhook contract: the integrator's side, as a small HTTP server.

It checks the signature (when it has the secret), accepts one message or an array of them,
acts on each idempotency key (``callback_params.msg_key``) once and answers a repeat with OK
without acting again, and keeps what it accepted in memory and, optionally, in a JSON-lines
file. `make demo` runs one as the CRM; the tests run it behind a fault-injecting proxy, or
slowed down (`delay_s`, the time a real system takes to act) to kill a sender mid-run. It is
also the smallest correct implementation to copy into a first-party system.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from connectors.http_server import JsonServer
from connectors.webhook import SIGNATURE_HEADER, SignatureError, SignatureVerifier


@dataclass
class ReceiverState:
    accepted: dict[str, dict] = field(default_factory=dict)   # msg_key -> the message
    seen: Counter = field(default_factory=Counter)            # msg_key -> times received
    requests: int = 0
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookReceiver:
    def __init__(self, secret: str = "", port: int = 0, journal: Path | None = None,
                 host: str = "127.0.0.1", refuse: Callable[[dict], str | None] | None = None,
                 delay_s: float = 0.0) -> None:
        """`refuse(message)` may return an error code for a message the system will not take;
        `delay_s` is how long each request takes before the receiver acts and answers."""
        self.state = ReceiverState()
        self.refuse = refuse
        self.delay_s = delay_s
        self.verifier = SignatureVerifier(secret) if secret else None
        self.journal = journal
        self.http = JsonServer(self.handle, host, port, name="oa-webhook-receiver")

    @property
    def url(self) -> str:
        return self.http.base_url + "/hook"

    def start(self) -> WebhookReceiver:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        """One request: stats (GET), or messages (POST) checked, acted on once per key, answered."""
        if method == "GET" and urlparse(path).path.endswith("/stats"):
            with self.state.lock:
                return 200, {"accepted": len(self.state.accepted), "requests": self.state.requests,
                             "repeats": sum(self.state.seen.values()) - len(self.state.seen)}
        if method != "POST":
            return 405, {"code": "METHOD_NOT_ALLOWED", "message": "POST messages here", "requestId": ""}
        with self.state.lock:
            self.state.requests += 1
        if self.verifier is not None:
            query = parse_qs(urlparse(path).query)
            try:
                with self.state.lock:
                    self.verifier.verify(query.get("timestamp", [None])[0], query.get("nonce", [None])[0],
                                         headers.get(SIGNATURE_HEADER))
            except SignatureError as exc:
                with self.state.lock:
                    self.state.rejected += 1
                return 401, {"code": "UNAUTHORIZED", "message": str(exc), "requestId": ""}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"code": "BAD_REQUEST", "message": "body is not JSON", "requestId": ""}
        if self.delay_s:
            time.sleep(self.delay_s)
        messages = payload if isinstance(payload, list) else [payload]
        results, fresh = [], []
        with self.state.lock:
            for message in messages:
                message = message if isinstance(message, dict) else {}
                callback = message.get("callback_params")
                profile = message.get("user_profile")
                key = str((callback if isinstance(callback, dict) else {}).get("msg_key") or "")
                target = (profile if isinstance(profile, dict) else {}).get("target_id")
                if not key or not target:
                    results.append({"msg_key": key, "code": "BAD_MESSAGE",
                                    "message": "needs user_profile.target_id and callback_params.msg_key"})
                    continue
                self.state.seen[key] += 1
                refused = self.refuse(message) if self.refuse else None
                if refused:
                    results.append({"msg_key": key, "code": refused, "message": "refused"})
                    continue
                if key not in self.state.accepted:
                    self.state.accepted[key] = message
                    fresh.append(message)
                results.append({"msg_key": key, "code": "OK"})
            if self.journal is not None and fresh:
                with self.journal.open("a", encoding="utf-8") as f:
                    for message in fresh:
                        f.write(json.dumps(message, ensure_ascii=False) + "\n")
        if all(r["code"] == "OK" for r in results):
            return 200, {"code": "OK", "message": "", "requestId": ""}
        if not isinstance(payload, list):
            return 200, {"code": results[0]["code"], "message": results[0]["message"], "requestId": ""}
        return 200, {"code": "PARTIAL", "results": results, "requestId": ""}


def main() -> None:
    """`python -m connectors.webhook_receiver --port 8765 [--secret-env NAME]`: serve until killed;
    GET /stats answers how many messages it accepted."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret-env", default="", help="variable holding the shared secret")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="time each request takes")
    args = parser.parse_args()
    receiver = WebhookReceiver(secret=os.environ.get(args.secret_env, "") if args.secret_env else "",
                               port=args.port, delay_s=args.delay_ms / 1000).start()
    print(receiver.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
