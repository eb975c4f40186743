"""The reporting contract of spec D §7.3, checked message by message.

A behaviour-event batch (`RecieveEventMessage`, field `eventMessageModelListStr`) and a
user-identity batch (`RecieveUserMessage`, `customerMessageModelListStr`) are JSON arrays of at
most 100 messages. Each message is judged alone: a good one becomes a record for the event log,
a bad one an error naming its index, field and what is wrong, and the good ones of the batch are
kept either way.

A behaviour event is identified by `eventId` when the reporter sends one (our extension: a
retry then carries its id), and otherwise by the hash of what it says (code, channel, person,
time in ms and attributes): the same event reported twice is stored once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from openaudience.events.source import Registry

MAX_BATCH = 100
ID_CHARS = 256                      # customerId, an id value, an attribute value
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
EARLIEST_MS = 946_684_800_000       # 2000-01-01
FUTURE_MS = 24 * 3600 * 1000        # an event may be reported at most a day ahead of our clock
IDMAPPING = {                       # the 12 idMapping values -> our id types (seeds/id_types.csv)
    "oneid": "member_id", "email": "email", "mobile": "mobile", "taobao_id": "taobao_id",
    "taobao_nick": "taobao_nick", "imei": "imei", "idfa": "idfa", "mac_org": "mac",
    "weibo_id_org": "weibo_id", "alipay_id": "alipay_id", "open_id": "openid", "union_id": "unionid",
}
# error codes of the answer: the contract documents ES0110000002 (authentication); the others
# follow its form
AUTH_FAILED = ("ES0110000002", "authentication failed")
BAD_REQUEST = "ES0110000001"
BATCH_TOO_LARGE = "ES0110000003"
BODY_TOO_LARGE = "ES0110000004"
BAD_MESSAGE = "ES0110000005"
UNAVAILABLE = "ES0110000006"


@dataclass
class Judged:
    records: list[dict]             # the good messages as event-log records
    errors: list[dict]              # {index, errorCode, errorDesc} per bad message


def _text(value: Any, field: str, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"{field} is required")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, not {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise ValueError(f"{field} is empty")
    if len(value) > ID_CHARS:
        raise ValueError(f"{field} is longer than {ID_CHARS} characters")
    if not value.isprintable():
        raise ValueError(f"{field} holds control characters")
    return value


def _version(value: Any) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value != 1:
        raise ValueError(f"v must be 1 (the model version), not {str(value)[:20]!r}")
    return value


def batch(body: Any, field: str) -> list:
    """The message list of a request body: `{field: "<JSON array>"}` as the OpenAPI sends it (the
    field is a string), `{field: [...]}`, or the array itself. ValueError says what is wrong."""
    items = body.get(field) if isinstance(body, dict) else body
    if isinstance(items, str):
        try:
            items = json.loads(items)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{field} is not a JSON array ({str(exc)[:80]})") from None
    if not isinstance(items, list):
        raise ValueError(f"the body must carry {field}: a JSON array of messages")
    if not items:
        raise ValueError(f"{field} is empty")
    if len(items) > MAX_BATCH:
        raise ValueError(f"{len(items)} messages in one batch; at most {MAX_BATCH}")
    return items


def event_id(code: str, app_key: str, customer: str, at_ms: int, attrs: dict[str, str]) -> str:
    canon = json.dumps([code, app_key, customer, at_ms, sorted(attrs.items())], ensure_ascii=False,
                       separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


def judge_events(items: list, registry: Registry, signer: str, now_ms: int | None = None) -> Judged:
    """Each behaviour-event message checked against the registry; `signer` is the app_key whose
    key signed the request (an event of another channel is refused)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    records, errors = [], []
    for i, m in enumerate(items):
        try:
            records.append(_event(m, registry, signer, now_ms))
        except ValueError as exc:
            errors.append({"index": i, "errorCode": BAD_MESSAGE, "errorDesc": str(exc)})
    return Judged(records, errors)


def _event(m: Any, registry: Registry, signer: str, now_ms: int) -> dict:
    if not isinstance(m, dict):
        raise ValueError("a message must be a JSON object")
    customer = _text(m.get("customerId"), "customerId")
    code = _text(m.get("eventCode"), "eventCode")
    event = registry.events.get(code)
    if event is None:
        raise ValueError(f"unknown eventCode {code[:64]!r}; the events are defined in events/*.yml")
    source = _text(m.get("eventSourceCode"), "eventSourceCode", required=False) or None
    if source is not None and source != event.app_key:
        raise ValueError(f"eventSourceCode {source[:64]!r} is not the channel of {code!r} ({event.app_key})")
    if event.app_key != signer:
        raise ValueError(f"event {code!r} belongs to channel {event.app_key}; this request is signed by "
                         f"{signer}")
    at = m.get("eventTime")
    if isinstance(at, bool) or not isinstance(at, int):
        raise ValueError("eventTime must be an integer: milliseconds since 1970")
    if not EARLIEST_MS <= at <= now_ms + FUTURE_MS:
        raise ValueError(f"eventTime {at} is not a millisecond time between 2000 and tomorrow")
    raw = m.get("extendAttributes")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("extendAttributes must be an object of attribute id -> value")
    attrs: dict[str, str] = {}
    for key, value in raw.items():
        kind = event.attributes.get(key)
        if kind is None:
            known = ", ".join(sorted(event.attributes)) or "none"
            raise ValueError(f"attribute {str(key)[:64]!r} is not an attribute of {code!r} (its attributes: "
                             f"{known})")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"attribute {key!r} must be a string or a number")
        text = str(value).strip()
        if kind == "numeric":
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"attribute {key!r} is numeric; {text[:40]!r} is not a number") from None
            if not math.isfinite(number):
                raise ValueError(f"attribute {key!r} is numeric; {text[:40]!r} is not a finite number")
        elif len(text) > ID_CHARS or not text.isprintable():
            raise ValueError(f"attribute {key!r} is longer than {ID_CHARS} characters or holds control "
                             "characters")
        attrs[key] = text
    _version(m.get("v"))
    org = _text(m.get("orgnizationId", m.get("organizationId")), "orgnizationId", required=False)
    given = m.get("eventId")
    if given is not None:
        if not isinstance(given, str) or not EVENT_ID.fullmatch(given):
            raise ValueError("eventId must be 1-128 letters, digits or _ . : -")
        eid = "e:" + given
    else:
        eid = "h:" + event_id(code, event.app_key, customer, at, attrs)  # with or without eventSourceCode
    return {"id": eid, "kind": "event", "source": event.app_key, "code": code, "customer_id": customer,
            "customer_id_type": registry.channels[event.app_key].customer_id_type, "at": at, "attrs": attrs,
            "org": org}


def judge_identities(items: list, registry: Registry, signer: str) -> Judged:
    """Each user-identity message: the person (customerId, an id of the signing channel's
    customer_id_type) and the ids it is known by, mapped to our id types."""
    records, errors = [], []
    for i, m in enumerate(items):
        try:
            records.append(_identity(m, registry, signer))
        except ValueError as exc:
            errors.append({"index": i, "errorCode": BAD_MESSAGE, "errorDesc": str(exc)})
    return Judged(records, errors)


def _identity(m: Any, registry: Registry, signer: str) -> dict:
    if not isinstance(m, dict):
        raise ValueError("a message must be a JSON object")
    customer = _text(m.get("customerId"), "customerId")
    ids = m.get("customerIdList")
    if not isinstance(ids, list) or not ids:
        raise ValueError("customerIdList must be a non-empty list of {customerId, idMapping}")
    if len(ids) > 50:
        raise ValueError("customerIdList holds more than 50 ids")
    pairs: list[list[str]] = []
    for j, entry in enumerate(ids):
        if not isinstance(entry, dict):
            raise ValueError(f"customerIdList[{j}] must be an object")
        mapping = entry.get("idMapping")
        if mapping not in IDMAPPING:
            raise ValueError(f"customerIdList[{j}].idMapping {str(mapping)[:40]!r} is not one of "
                             f"{', '.join(IDMAPPING)}")
        pairs.append([IDMAPPING[mapping], _text(entry.get("customerId"), f"customerIdList[{j}].customerId")])
    _version(m.get("v"))
    kind = registry.channels[signer].customer_id_type
    canon = json.dumps([signer, customer, sorted(map(tuple, pairs))], ensure_ascii=False,
                       separators=(",", ":"))
    return {"id": "i:" + hashlib.sha256(canon.encode()).hexdigest()[:32], "kind": "identity",
            "source": signer, "customer_id": customer, "customer_id_type": kind, "ids": pairs}
