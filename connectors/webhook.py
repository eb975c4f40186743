"""The custom channel (webhook) of Quick Audience, to the contract's letter, plus batching.

Each request is a POST to ``{url}?timestamp=<unix s>&nonce=<32 chars>`` with the header
``X-QA-Hmac-Signature``: hex HMAC-SHA256, keyed by the shared secret, over the secret, the
timestamp and the nonce sorted as strings and joined with all white space removed (the empty
string when the webhook has no secret). The body is one member:

    {"user_profile": {"target_type": "MOBILE", "target_id": "13800000000"},
     "params": {"coupon": "SUMMER", "text": "Hello ${city}", "vars": {"city": "Shanghai"}},
     "callback_params": {"task_id": "<run id>", "webhook_id": "<destination>",
                         "send_time": "<ms>", "msg_key": "<idempotency key>"}}

and success is a reply ``{"code": "OK"}``. Every value is sent as a string. ``msg_key`` (also sent
as the ``Idempotency-Key`` header) is ours: the same member change always carries the same key,
so a receiver that keeps the keys it has processed never acts twice on a retry.

With ``batch_size`` above 1 (an OpenAudience extension) the body is a JSON array of such objects
and the reply is ``{"code": "OK"}`` for all of them, or ``{"code": "PARTIAL", "results":
[{"msg_key": ..., "code": "OK" | <error>, "message": ...}]}`` member by member.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode

import requests

from connectors.base import ID_FORMS, Capabilities, Member, Outcome, TransientError
from connectors.http import HttpConnector, RefusedRequest, clean, reply_excerpt, send

SIGNATURE_HEADER = "X-QA-Hmac-Signature"
ECHO_CHARS = 64  # of a peer's value quoted back in an error
WIRE_ID_TYPES = {
    "one_id": "ONEID", "mobile": "MOBILE", "email": "EMAIL", "taobao_id": "TAOBAO_ID",
    "taobao_nick": "TAOBAO_NICK", "alipay_id": "ALIPAY_ID", "weibo_id": "WEIBO_ID_ORG",
    "imei": "IMEI", "idfa": "IDFA", "imsi": "IMSI", "oaid": "OAID", "mac": "MAC_ORG",
    "unionid": "UNION_ID", "openid": "OPEN_ID", "member_id": "MEMBER_ID",
}
_SPACE = re.compile(r"\s+")
_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII only: int() also takes "١٢", "1_2" and 4,000 digits
# The signature ignores white space, so a nonce must have none: "n0nce" and "n0nce " would sign
# alike and pass a replay check that compares them as strings.
_NONCE = re.compile(r"[0-9A-Za-z_-]{1,128}")


def sign(secret: str, timestamp: str, nonce: str) -> str:
    """The contract's signature: hex HMAC-SHA256(secret, sorted([secret, ts, nonce]) joined)."""
    if not secret:
        return ""
    message = _SPACE.sub("", "".join(sorted([secret, str(timestamp), str(nonce)])))
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), sha256).hexdigest()


def signature_matches(secret: str, timestamp: str, nonce: str, signature: str | None) -> bool:
    """Whether `signature` is the contract's signature of the request. Never with an empty secret:
    its signature is the empty string, which anyone can send."""
    if not secret or not signature or not _NONCE.fullmatch(nonce or "") \
            or not _SECONDS.fullmatch(timestamp or ""):
        return False
    return hmac.compare_digest(sign(secret, timestamp, nonce).encode(),
                               signature.encode("utf-8", "replace"))


def unix_seconds(timestamp: str) -> int | None:
    """A request's `timestamp` as unix seconds: at most 12 ASCII digits, or None."""
    return int(timestamp) if _SECONDS.fullmatch(timestamp) else None


def new_nonce() -> str:
    return secrets.token_hex(16)


class SignatureError(Exception):
    """A request whose signature, timestamp or nonce does not hold; the message says which."""


@dataclass
class SignatureVerifier:
    """Checks signed requests (receipts coming back, or requests at a receiver): the signature,
    the timestamp within `max_skew_s` of now, and each nonce once within that window."""

    secret: str
    max_skew_s: float = 300.0
    _seen: dict[str, float] = field(default_factory=dict)

    def verify(self, timestamp: str | None, nonce: str | None, signature: str | None,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not timestamp or not nonce:
            raise SignatureError("missing timestamp or nonce in the query string")
        if not self.secret:
            raise SignatureError("no secret to check the signature with")
        ts = unix_seconds(timestamp)
        if ts is None:
            raise SignatureError(f"timestamp {timestamp[:ECHO_CHARS]!r} is not unix seconds")
        if abs(now - ts) > self.max_skew_s:
            raise SignatureError(f"timestamp {ts} is {abs(now - ts):.0f} s from now "
                                 f"(at most {self.max_skew_s:.0f} s)")
        if not signature_matches(self.secret, timestamp, nonce, signature):
            raise SignatureError("signature does not match")
        for old, expires in list(self._seen.items()):
            if now > expires:
                del self._seen[old]
        if nonce in self._seen:
            raise SignatureError(f"nonce {nonce[:ECHO_CHARS]} was already used (replay)")
        # kept while its timestamp is still accepted
        self._seen[nonce] = ts + self.max_skew_s


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 10.0
    batch_size: int = 1
    concurrency: int = 4
    webhook_id: str = ""
    allow_private_network: bool = False
    """Connect even where the URL's host resolves to a link-local or metadata address."""


class WebhookConnector(HttpConnector):
    capabilities = Capabilities(
        channel="webhook",
        id_forms={t: ID_FORMS for t in WIRE_ID_TYPES},
        supports_removals=False,
        per_recipient_receipts=True,
        is_message=True,
        max_batch_size=1000,
    )

    def __init__(self, settings: WebhookSettings, task_id: str = "") -> None:
        self.settings = settings
        self.task_id = task_id
        self.session: requests.Session | None = None

    def message(self, member: Member, send_time_ms: int) -> dict[str, Any]:
        params = {k: str(v) for k, v in self.settings.params.items()}
        if member.variables:
            params["vars"] = {k: str(v) for k, v in member.variables.items()}
        return {
            "user_profile": {"target_type": WIRE_ID_TYPES.get(member.id_type, member.id_type.upper()),
                             "target_id": member.id_value},
            "params": params,
            "callback_params": {"task_id": self.task_id, "webhook_id": self.settings.webhook_id,
                                "send_time": str(send_time_ms), "msg_key": member.key},
        }

    def deliver(self, batch: list[Member], batch_no: int = 0) -> list[Outcome]:
        if self.session is None:
            self.open()
        now_ms = int(time.time() * 1000)
        messages = [self.message(m, now_ms) for m in batch]
        single = self.settings.batch_size <= 1 and len(batch) == 1
        body = json.dumps(messages[0] if single else messages, ensure_ascii=False).encode("utf-8")
        timestamp, nonce = str(int(time.time())), new_nonce()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   SIGNATURE_HEADER: sign(self.settings.secret, timestamp, nonce)}
        if single:
            headers["Idempotency-Key"] = batch[0].key
        separator = "&" if "?" in self.settings.url else "?"
        url = f"{self.settings.url}{separator}{urlencode({'timestamp': timestamp, 'nonce': nonce})}"
        try:
            reply = send(self.session, "POST", url, "webhook", self.settings.timeout_s, data=body,
                         headers=headers)
        except RefusedRequest as exc:  # a redirect or a forbidden address: refused, never followed
            return [Outcome(m.key, False, exc.code, str(exc)) for m in batch]
        return self._outcomes(batch, reply)

    def _outcomes(self, batch: list[Member], reply: requests.Response) -> list[Outcome]:
        status = reply.status_code
        if status >= 400:
            text = reply_excerpt(reply)
            return [Outcome(m.key, False, f"HTTP {status}", text) for m in batch]
        try:
            answer = reply.json()
            code = str(answer["code"])
        except (ValueError, KeyError, TypeError):
            raise TransientError(f"HTTP {status} with a body that is not the contract's JSON "
                                 f"{{\"code\": \"OK\"}}: {reply_excerpt(reply)}") from None
        request_id = str(answer.get("requestId") or "")
        if code == "OK":
            return [Outcome(m.key, True, "OK", external_id=request_id) for m in batch]
        if code == "PARTIAL" and isinstance(answer.get("results"), list):
            by_key = {str(r.get("msg_key")): r for r in answer["results"] if isinstance(r, dict)}
            out = []
            for m in batch:
                r = by_key.get(m.key)
                if r is None:
                    out.append(Outcome(m.key, False, "MISSING", "the PARTIAL reply does not name it"))
                else:
                    ok = str(r.get("code")) == "OK"
                    out.append(Outcome(m.key, ok, clean(str(r.get("code")), 64),
                                       clean(str(r.get("message") or ""), 300)))
            return out
        message = clean(str(answer.get("message") or ""), 300)
        return [Outcome(m.key, False, clean(code, 64), message) for m in batch]
