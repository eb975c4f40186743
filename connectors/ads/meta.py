"""Meta customer-file custom audiences through the Marketing API (Graph API).

Adds are ``POST {base}/{audience_id}/users`` and removes the same call with ``method=DELETE``
(the Graph API's method override: a DELETE with a body of 10,000 hashes is not something every
proxy passes), form-encoded: ``payload`` = ``{"schema": ..., "data": [...]}``, ``session`` =
``{"session_id", "batch_seq": 1, "last_batch_flag": true, "estimated_num_total"}`` (one session
per upload, its id fixed by the destination, the run, the batch and the op, so a retry is the
same session and every other upload a new one), ``access_token`` and, when the destination
names the app secret, ``appsecret_proof`` (hex HMAC-SHA256 of the token keyed by the secret).
At most 10,000 ids a request. The reply is ``{"audience_id", "session_id", "num_received",
"num_invalid_entries", "invalid_entry_samples"}``.

Normalisation and hashing, as Meta documents them: e-mail trimmed and lower-cased, then SHA-256;
phone as digits with the country code and no leading zeros or symbols (E.164 without the plus;
numbers without a country code are read in the destination's `phone_region`), then SHA-256;
mobile advertiser ids (MADID: IDFA, AAID) lower-case with their hyphens and not hashed; the
brand's member id as EXTERN_ID, not hashed.

Errors are ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``. Codes 4,
17, 613, 80000-80014 (rate limits) and any error flagged ``is_transient`` are retried, after
the wait the X-Business-Use-Case-Usage header estimates when it gives one; 190
(the token), 10 and 200-299 (permissions) stop the run; any other refuses the upload's members.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import phonenumbers

from connectors.ads.common import AudienceSync, compact
from connectors.base import Capabilities, Member, Outcome, TransientError
from connectors.http import reply_excerpt
from connectors.identifiers import IdError, hashed, normalise

DEFAULT_BASE_URL = "https://graph.facebook.com/v23.0"
SCHEMAS = {"email": "EMAIL_SHA256", "mobile": "PHONE_SHA256", "idfa": "MOBILE_ADVERTISER_ID",
           "member_id": "EXTERN_ID"}
RATE_LIMIT_CODES = {4, 17, 613, *range(80000, 80015)}


def e164(value: str, region: str) -> str:
    """A phone in E.164 (+<country><number>), or IdError when it cannot be one. The length is
    checked against the country's numbering plan, not the ranges in use (which change faster
    than the library)."""
    try:
        number = phonenumbers.parse(str(value).strip(), region)
    except phonenumbers.NumberParseException as exc:
        raise IdError(f"{value!r} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise IdError(f"{value!r} is not a possible phone number of region "
                      f"{phonenumbers.region_code_for_number(number) or region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def regain_seconds(reply) -> float | None:
    """When the account may call again, from X-Business-Use-Case-Usage (minutes), if it says."""
    try:
        usage = json.loads(reply.headers.get("X-Business-Use-Case-Usage") or "{}")
        minutes = max(float(u.get("estimated_time_to_regain_access") or 0)
                      for entries in usage.values() for u in entries)
    except (ValueError, TypeError, AttributeError):
        return None
    return minutes * 60 or None


def session_id(destination: str, run_id: str, batch_no: int, op: str) -> int:
    """A positive 63-bit id, the same for the same upload of the same run (a retry), and new for
    every other."""
    digest = hashlib.sha256(f"{destination}|{run_id}|{batch_no}|{op}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1) or 1


class MetaAdsConnector(AudienceSync):
    platform = "Meta"
    capabilities = Capabilities(channel="meta_ads",
                                id_forms={"email": ("sha256",), "mobile": ("sha256",),
                                          "idfa": ("raw",), "member_id": ("raw",)},
                                supports_removals=True, is_message=False, max_batch_size=10_000)

    @classmethod
    def prepare_id(cls, id_type: str, value: str, form: str, region: str = "CN") -> str:
        if id_type == "mobile":
            return hashed(e164(value, region).lstrip("+"), form)
        if id_type == "idfa":
            return hashed(normalise(id_type, value).lower(), form)
        return super().prepare_id(id_type, value, form, region)

    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        s = self.settings
        token = s.secrets["access_token"]
        form = {"payload": compact({"schema": SCHEMAS[members[0].id_type],
                                    "data": [m.id_value for m in members]}),
                "session": compact({"session_id": session_id(s.destination, s.options["run_id"],
                                                             batch_no, op),
                                    "batch_seq": 1, "last_batch_flag": True,
                                    "estimated_num_total": len(members)}),
                "access_token": token}
        if s.secrets.get("app_secret"):
            form["appsecret_proof"] = hmac.new(s.secrets["app_secret"].encode(), token.encode(),
                                               hashlib.sha256).hexdigest()
        if op == "remove":
            form["method"] = "DELETE"
        reply = self.request("POST", f"{s.audience_id}/users", data=form)
        answer = self.json_of(reply)
        error = answer.get("error") if isinstance(answer, dict) else None
        if reply.status_code == 200 and error is None:
            received = answer.get("num_received")
            if received != len(members):
                raise TransientError(f"Meta received {received} of {len(members)} ids; sending again")
            invalid = int(answer.get("num_invalid_entries") or 0)
            note = f"session {answer.get('session_id', '')}" + (f", {invalid} invalid" if invalid else "")
            return self.sent(members, note)
        if not isinstance(error, dict):
            raise TransientError(f"Meta: HTTP {reply.status_code} without an error object: "
                                 f"{reply_excerpt(reply)}")
        code, message = error.get("code"), str(error.get("message") or "")
        if code in RATE_LIMIT_CODES or error.get("is_transient"):
            raise TransientError(f"Meta rate limit {code}: {message}", regain_seconds(reply))
        if code == 190 or code == 10 or (isinstance(code, int) and 200 <= code <= 299):
            raise self.config_error(f"the access token or its permissions (code {code}: {message})")
        return self.failed(members, str(code), message)
