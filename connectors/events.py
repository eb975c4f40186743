"""The event collector's request signature, and a client that reports events to a collector.

A request names its channel (`X-OA-Key`: the channel's app_key) and is signed with that channel's
key: hex HMAC-SHA256(key, app_key \\n timestamp \\n nonce \\n sha256(body)), with the timestamp
(unix seconds), the nonce and the body's SHA-256 in headers. The collector can thus check the
signature from the headers alone, before it reads a byte of the body, and then check that the
body is the one signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

KEY_HEADER = "X-OA-Key"
TIMESTAMP_HEADER = "X-OA-Timestamp"
NONCE_HEADER = "X-OA-Nonce"
DIGEST_HEADER = "X-OA-Content-SHA256"
SIGNATURE_HEADER = "X-OA-Signature"
EVENTS_PATH = "/events"
IDENTITIES_PATH = "/identities"


def sign(key: str, app_key: str, timestamp: str, nonce: str, digest: str) -> str:
    message = "\n".join((app_key, timestamp, nonce, digest))
    return hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_matches(key: str, app_key: str, timestamp: str, nonce: str, digest: str,
                      signature: str) -> bool:
    if not key:
        return False
    return hmac.compare_digest(sign(key, app_key, timestamp, nonce, digest).encode(),
                               signature.encode("utf-8", "replace"))


def signed_headers(key: str, app_key: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(12)
    digest = hashlib.sha256(body).hexdigest()
    return {KEY_HEADER: app_key, TIMESTAMP_HEADER: ts, NONCE_HEADER: nonce, DIGEST_HEADER: digest,
            SIGNATURE_HEADER: sign(key, app_key, ts, nonce, digest), "Content-Type": "application/json"}


class EventClient:
    """Reports events and identities to a collector as one channel (its app_key and key)."""

    def __init__(self, url: str, app_key: str, key: str, timeout: float = 10.0) -> None:
        import requests

        self.url, self.app_key, self.key, self.timeout = url.rstrip("/"), app_key, key, timeout
        self.session = requests.Session()

    def _post(self, path: str, field: str, messages: list[dict]) -> tuple[int, dict]:
        body = json.dumps({field: json.dumps(messages, ensure_ascii=False)}, ensure_ascii=False).encode()
        reply = self.session.post(self.url + path, data=body, timeout=self.timeout,
                                  headers=signed_headers(self.key, self.app_key, body))
        try:
            return reply.status_code, reply.json()
        except ValueError:
            return reply.status_code, {"success": False, "errorDesc": reply.text[:200]}

    def events(self, messages: list[dict]) -> tuple[int, dict]:
        return self._post(EVENTS_PATH, "eventMessageModelListStr", messages)

    def identities(self, messages: list[dict]) -> tuple[int, dict]:
        return self._post(IDENTITIES_PATH, "customerMessageModelListStr", messages)

    def close(self) -> None:
        self.session.close()
