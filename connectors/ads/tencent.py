"""Tencent Ads (腾讯广告) customer-file audiences through the Marketing API.

Each upload is ``POST {base}/custom_audience_files/add?access_token=..&timestamp=..&nonce=..``
as multipart/form-data: ``account_id``, ``audience_id`` (a CUSTOMER_FILE audience),
``user_id_type``, ``operation_type`` (APPEND for adds, REDUCE for removes) and ``file``, a text
file of one id a line. The reply is the API's envelope ``{"code": 0, "message": "", "data":
{"custom_audience_file_id": ...}}``; ``timestamp`` is unix seconds and ``nonce`` is unique per
request, as the API requires of every call.

Id types and their hashing, as the platform's file guide gives them (its worked examples are in
the tests): HASH_IMEI is the MD5 of the lower-case IMEI, HASH_IDFA the MD5 of the upper-case IDFA
with its hyphens, HASH_MOBILE_PHONE the MD5 of the bare 11-digit number (no +86),
SHA256_MOBILE_PHONE its SHA-256, HASH_OAID the MD5 of the OAID as it is. There is no plain
mobile type, so a phone goes as md5 or sha256.

Error codes: 11008 and 11016-11019 are rate limits and 30000-30099 system errors (both retried);
the documented minute limit blocks for five minutes, so a minute-limit reply asks to wait 300 s
(and a Tencent destination's retries wait up to 300 s by default). Any other non-zero code
refuses the upload's members for good.
"""

from __future__ import annotations

import secrets
import time

from connectors.ads.common import AudienceSync
from connectors.base import Capabilities, Member, Outcome, TransientError
from connectors.http import reply_excerpt
from connectors.identifiers import hashed, normalise

DEFAULT_BASE_URL = "https://api.e.qq.com/v1.3"
USER_ID_TYPES = {
    ("imei", "raw"): "IMEI", ("imei", "md5"): "HASH_IMEI",
    ("idfa", "raw"): "IDFA", ("idfa", "md5"): "HASH_IDFA",
    ("mobile", "md5"): "HASH_MOBILE_PHONE", ("mobile", "sha256"): "SHA256_MOBILE_PHONE",
    ("oaid", "raw"): "OAID", ("oaid", "md5"): "HASH_OAID",
    ("unionid", "raw"): "WX_UNIONID",
}
RATE_LIMIT_CODES = {11008, 11016, 11017, 11018, 11019}


def _forms(table: dict[tuple[str, str], object]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for id_type, form in table:
        out[id_type] = (*out.get(id_type, ()), form)
    return out


class TencentAdsConnector(AudienceSync):
    platform = "Tencent Ads"
    capabilities = Capabilities(channel="tencent_ads", id_forms=_forms(USER_ID_TYPES),
                                supports_removals=True, is_message=False,
                                max_batch_size=1_000_000)

    @classmethod
    def prepare_id(cls, id_type: str, value: str, form: str, region: str = "CN") -> str:
        if id_type == "oaid":  # the platform hashes the OAID as it is, case and all
            text = str(value).strip()
            return hashed(text, form) if text else normalise(id_type, text)
        return super().prepare_id(id_type, value, form, region)

    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        s = self.settings
        user_id_type = USER_ID_TYPES[(members[0].id_type, s.options["id_form"])]
        query = {"access_token": s.secrets["access_token"], "timestamp": str(int(time.time())),
                 "nonce": secrets.token_hex(16)}
        fields = {"account_id": str(s.account_id), "audience_id": str(s.audience_id),
                  "user_id_type": user_id_type,
                  "operation_type": "APPEND" if op == "add" else "REDUCE"}
        content = ("\n".join(m.id_value for m in members) + "\n").encode("utf-8")
        name = f"{s.destination}-{batch_no:05d}-{op}.txt"
        reply = self.request("POST", "custom_audience_files/add", params=query, data=fields,
                             files={"file": (name, content, "text/plain")})
        if reply.status_code in (401, 403):
            raise self.config_error(f"the access token (HTTP {reply.status_code})")
        answer = self.json_of(reply)
        code = answer.get("code") if isinstance(answer, dict) else None
        if not isinstance(code, int):
            raise TransientError(f"Tencent Ads: a reply without the envelope's code: {reply_excerpt(reply)}")
        message = str(answer.get("message_cn") or answer.get("message") or "")
        if code == 0:
            data = answer.get("data") or {}
            return self.sent(members, str(data.get("custom_audience_file_id", "")))
        if code in RATE_LIMIT_CODES:
            raise TransientError(f"Tencent Ads rate limit {code}: {message}",
                                 300.0 if code == 11017 else None)
        if 30000 <= code <= 30099:
            raise TransientError(f"Tencent Ads system error {code}: {message}")
        return self.failed(members, str(code), message)
