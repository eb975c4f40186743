"""Baidu (百度营销) feed crowds through the Baidu marketing API's JSON envelope.

Every call is ``POST {base}/{Service}/{method}`` with ``{"header": {"userName", "accessToken"},
"body": {...}}`` and answers ``{"header": {"status", "desc", "failures": [{"code", "message"}],
"quota", "rquota"}, "body": {"data": [...]}}``: status 0 is success, 1 partial, 2 failed, 3 a
system error (retried).

A crowd is created whole, from a file: ``CrowdFeedService/addCrowdFeed`` with ``{"crowdFeedType":
{"crowdName", "crowdType", "content"}}``, ``content`` being the Base64 of a text file of one id a
line (at least 5,000 ids, at most 10 MB: about 300,000 MD5 ids) and ``crowdType`` 1 IDFA, 2 IMEI,
4 phone MD5, 5 IDFA MD5, 6 IMEI MD5. There is no call that adds to or removes from a crowd, so
a Baidu destination delivers in full mode: each run pushes the audience as a new crowd, as Quick
Audience's one-shot Baidu push does (an account holds at most 50 crowds). The audience goes in
one upload (an audience larger than `batch_size`, at most 300,000, is refused before anything
is sent). An upload sent again after a lost reply makes a second crowd with the same ids.

The body and its codes follow Baidu's feed-crowd documentation; the service path on
api.baidu.com (``json/feed/v1``) is the one the other feed services use.
"""

from __future__ import annotations

import base64
import time

from connectors.ads.common import AudienceSync, compact
from connectors.base import Capabilities, Member, Outcome, TransientError
from connectors.http import reply_excerpt

DEFAULT_BASE_URL = "https://api.baidu.com/json/feed/v1"
CROWD_TYPES = {("idfa", "raw"): 1, ("imei", "raw"): 2, ("mobile", "md5"): 4, ("idfa", "md5"): 5,
               ("imei", "md5"): 6}
MIN_CROWD = 5_000
MAX_CONTENT = 10 * 1024 * 1024


class BaiduAdsConnector(AudienceSync):
    platform = "Baidu"
    capabilities = Capabilities(channel="baidu_ads",
                                id_forms={"idfa": ("raw", "md5"), "imei": ("raw", "md5"),
                                          "mobile": ("md5",)},
                                supports_removals=False, is_message=False, min_audience=MIN_CROWD,
                                max_batch_size=300_000, one_batch=True)

    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        s = self.settings
        if len(members) < MIN_CROWD:
            return self.failed(members, "TOO_SMALL",
                               f"a Baidu crowd needs at least {MIN_CROWD:,} ids; this batch has "
                               f"{len(members):,} (raise batch_size above the audience size)")
        content = ("\n".join(m.id_value for m in members) + "\n").encode("utf-8")
        if len(content) > MAX_CONTENT:
            return self.failed(members, "TOO_LARGE", f"{len(content):,} bytes is above Baidu's 10 MB "
                                                     "crowd file; lower batch_size")
        name = s.options["crowd_name"].replace("{version}", str(s.options["audience_version"])) \
            .replace("{date}", time.strftime("%Y%m%d"))
        request = {"header": {"userName": s.options["user_name"], "accessToken": s.secrets["access_token"]},
                   "body": {"crowdFeedType": {"crowdName": name,
                                              "crowdType": CROWD_TYPES[(members[0].id_type,
                                                                        s.options["id_form"])],
                                              "content": base64.b64encode(content).decode("ascii")}}}
        reply = self.request("POST", "CrowdFeedService/addCrowdFeed", data=compact(request).encode("utf-8"),
                             headers={"Content-Type": "application/json;charset=UTF-8"})
        if reply.status_code in (401, 403):
            raise self.config_error(f"the user name or access token (HTTP {reply.status_code})")
        answer = self.json_of(reply)
        header = answer.get("header") if isinstance(answer, dict) else None
        if not isinstance(header, dict) or not isinstance(header.get("status"), int):
            raise TransientError(f"Baidu: a reply without header.status: {reply_excerpt(reply)}")
        failures = header.get("failures") or []
        message = "; ".join(f"{f.get('code')}: {f.get('message')}" for f in failures if isinstance(f, dict))
        status = header["status"]
        if status == 0:
            data = (answer.get("body") or {}).get("data") or [{}]
            return self.sent(members, str(data[0].get("crowdId", "")))
        if status == 3:
            raise TransientError(f"Baidu system error: {message or header.get('desc')}")
        codes = {str(f.get("code")) for f in failures if isinstance(f, dict)}
        return self.failed(members, ",".join(sorted(codes)) or str(status),
                           message or str(header.get("desc")))
