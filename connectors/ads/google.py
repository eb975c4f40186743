"""Google Ads Customer Match user lists through the Google Ads API (REST).

Each upload is one offline user data job: ``POST {base}/customers/{cid}/offlineUserDataJobs:create``
(``{"job": {"type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {"userList":
"customers/{cid}/userLists/{id}", "consent": {...}}}}``; consent on jobs that add), then
``POST {base}/{job}:addOperations`` with ``{"operations": [{"create" | "remove": {"userIdentifiers":
[{"hashedEmail" | "hashedPhoneNumber" | "mobileId" | "thirdPartyUserId": ...}]}}],
"enablePartialFailure": true}``, then ``POST {base}/{job}:run``. Every call carries
``Authorization: Bearer``, ``developer-token`` and, through a manager account,
``login-customer-id``. The access token comes from the OAuth refresh token
(``grant_type=refresh_token`` at `token_url`), fetched at the start of a run and again once
when the API answers 401.

With partial failure on, ``partialFailureError.details[].errors[].location.fieldPathElements``
name the operations refused (``{"fieldName": "operations", "index": i}``): those members fail,
the others are sent. A job per upload means a batch sent again after a crash is a new job adding
the same people, which Customer Match treats as no change. Jobs on one list go one at a time
(a Google destination's concurrency is 1 by default; CONCURRENT_MODIFICATION is retried).
"Sent" means Google accepted and started the job, which it processes over the next hours.

Normalisation and hashing, as Google documents them for Customer Match: e-mail trimmed and
lower-cased (no removal of dots), phones in E.164 with the plus, both SHA-256 in lower-case hex;
mobile ids and the brand's member id (thirdPartyUserId, for CRM-id lists) as they are.

Quota errors (HTTP 429, RESOURCE_EXHAUSTED) are retried after the ``retryDelay`` they give;
401/403 and ``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`` stop the run: since April 2026
Customer Match takes uploads only from allowlisted developer tokens.
"""

from __future__ import annotations

import re
import threading

from connectors.ads.common import AudienceSync
from connectors.ads.meta import e164
from connectors.base import Capabilities, Member, Outcome, TransientError
from connectors.http import RETRY_STATUSES
from connectors.identifiers import hashed

DEFAULT_BASE_URL = "https://googleads.googleapis.com/v26"
IDENTIFIERS = {"email": "hashedEmail", "mobile": "hashedPhoneNumber", "idfa": "mobileId",
               "member_id": "thirdPartyUserId"}
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _retry_delay(answer: dict) -> float | None:
    """The quota error's retryDelay ("60s"), if any."""
    for detail in (answer.get("error") or {}).get("details") or []:
        for err in detail.get("errors") or [] if isinstance(detail, dict) else []:
            delay = ((err.get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay")
            if isinstance(delay, str) and _DELAY.match(delay):
                return float(_DELAY.match(delay).group(1))
    return None


def _failed_indexes(status: dict) -> dict[int, str]:
    """Operation index -> message, from a partialFailureError."""
    out: dict[int, str] = {}
    for detail in status.get("details") or []:
        for err in (detail.get("errors") or []) if isinstance(detail, dict) else []:
            for element in ((err.get("location") or {}).get("fieldPathElements") or []):
                if element.get("fieldName") == "operations" and isinstance(element.get("index"), int):
                    out.setdefault(element["index"], str(err.get("message") or "refused"))
                    break
    return out


class GoogleAdsConnector(AudienceSync):
    platform = "Google Ads"
    capabilities = Capabilities(channel="google_ads",
                                id_forms={"email": ("sha256",), "mobile": ("sha256",),
                                          "idfa": ("raw",), "member_id": ("raw",)},
                                supports_removals=True, is_message=False, max_batch_size=100_000)

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self._token = ""
        self._token_lock = threading.Lock()

    @classmethod
    def prepare_id(cls, id_type: str, value: str, form: str, region: str = "CN") -> str:
        if id_type == "mobile":
            return hashed(e164(value, region), form)
        return super().prepare_id(id_type, value, form, region)

    def open(self) -> None:
        super().open()
        self._refresh(None)

    def _refresh(self, stale: str | None) -> None:
        """A new access token, unless another thread already replaced `stale`."""
        with self._token_lock:
            if stale is not None and self._token != stale:
                return
            s = self.settings.secrets
            reply = self.send("POST", self.settings.options["token_url"], "Google OAuth",
                              data={"grant_type": "refresh_token", "client_id": s["client_id"],
                                    "client_secret": s["client_secret"],
                                    "refresh_token": s["refresh_token"]})
            answer = self.json_of(reply)
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if reply.status_code != 200 or not token:
                raise self.config_error(f"the OAuth refresh token ({answer.get('error', reply.status_code)}"
                                        f": {answer.get('error_description', '')})")
            self._token = token

    def _call(self, path: str, body: dict) -> dict:
        s = self.settings
        for attempt in (1, 2):
            token = self._token
            headers = {"Authorization": f"Bearer {token}", "developer-token": s.secrets["developer_token"]}
            if s.options.get("login_customer_id"):
                headers["login-customer-id"] = s.options["login_customer_id"]
            # a 429 is read below, for the retryDelay in its body
            reply = self.request("POST", path, json=body, headers=headers, retry=RETRY_STATUSES - {429})
            if reply.status_code == 401 and attempt == 1:
                self._refresh(token)
                continue
            break
        answer = self.json_of(reply)
        answer = answer if isinstance(answer, dict) else {}
        error = answer.get("error") or {}
        text = f"{error.get('status', reply.status_code)}: {str(error.get('message', ''))[:200]}"
        if reply.status_code == 429 or error.get("status") == "RESOURCE_EXHAUSTED":
            raise TransientError(f"Google Ads quota: {text}", _retry_delay(answer))
        if reply.status_code >= 500:
            raise TransientError(f"Google Ads: HTTP {reply.status_code}")
        if reply.status_code in (401, 403) or "NOT_ALLOWLISTED" in str(answer):
            raise self.config_error(f"the credentials or the account ({text})")
        if "CONCURRENT_MODIFICATION" in str(answer):  # another job on the list: later
            raise TransientError(f"Google Ads: {text}")
        if reply.status_code != 200:
            raise _Refused(text)
        return answer

    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        s = self.settings
        cid = s.account_id
        metadata: dict = {"userList": f"customers/{cid}/userLists/{s.audience_id}"}
        if op == "add":
            metadata["consent"] = {"adUserData": s.options["consent"]["ad_user_data"],
                                   "adPersonalization": s.options["consent"]["ad_personalization"]}
        field = IDENTIFIERS[members[0].id_type]
        verb = "create" if op == "add" else "remove"
        operations = [{verb: {"userIdentifiers": [{field: m.id_value}]}} for m in members]
        try:
            job = self._call(f"customers/{cid}/offlineUserDataJobs:create",
                             {"job": {"type": "CUSTOMER_MATCH_USER_LIST",
                                      "customerMatchUserListMetadata": metadata}})["resourceName"]
            added = self._call(f"{job}:addOperations", {"operations": operations,
                                                        "enablePartialFailure": True})
            refused = _failed_indexes(added.get("partialFailureError") or {})
            if len(refused) == len(members):  # nothing to run
                return [Outcome(m.key, False, "REFUSED", refused[i][:300]) for i, m in enumerate(members)]
            self._call(f"{job}:run", {})
        except _Refused as exc:
            return self.failed(members, "REFUSED", str(exc))
        except KeyError:
            raise TransientError("Google Ads: the job reply has no resourceName") from None
        return [Outcome(m.key, False, "REFUSED", refused[i][:300]) if i in refused
                else Outcome(m.key, True, "OK", external_id=job) for i, m in enumerate(members)]


class _Refused(Exception):
    """A 4xx other than auth and quota: the request itself was refused."""
