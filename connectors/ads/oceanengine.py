"""Ocean Engine (巨量引擎) DMP data sources through the open API (``open_api/2/dmp/...``).

An upload is two calls, each with the ``Access-Token`` header:

1. ``POST dmp/data_source/file/upload/`` (multipart: ``advertiser_id``, ``file_signature`` = the
   file's MD5 in hex, ``file``) answers ``data.file_path``;
2. ``POST dmp/data_source/update/`` (JSON: ``advertiser_id``, ``data_source_id``,
   ``operation_type`` 1 to add or 2 to delete, ``data_format`` 0 = protobuf,
   ``file_storage_type`` 0 = API, ``file_paths``).

The file is a zip holding one text file whose every line is the base64 of one serialised
``DmpData`` message (``repeated IdItem idList = 1``; at most 10,000 ids a line), each ``IdItem``
carrying ``dataType = 2`` (IMEI 0, IDFA 1, IMEI_MD5 4, IDFA_MD5 5, MOBILE_HASH_SHA256 6, OAID 7,
OAID_MD5 8) and ``id = 3``, lower case. The messages are written here with the protobuf wire
format directly (two varints and two strings; no generated code needed); the tests read them
back with the protobuf runtime.

At the end of a run, ``POST dmp/custom_audience/publish/`` republishes the audience built on the
data source (when the destination names ``custom_audience_id``): the platform keeps serving the
old members until then, and allows one publish a day, so a refused publish is a note on the run.
Replies are ``{"code": 0, "message": "OK", "request_id": ..., "data": {...}}``; any other code
refuses the upload. The
platform allows 50 updates of a data source a day, hence the large default batch (100,000).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile

from connectors.ads.common import AudienceSync
from connectors.base import Capabilities, Member, Outcome, TransientError
from connectors.http import reply_excerpt

DEFAULT_BASE_URL = "https://ad.oceanengine.com/open_api"
DATA_TYPES = {
    ("imei", "raw"): 0, ("imei", "md5"): 4, ("idfa", "raw"): 1, ("idfa", "md5"): 5,
    ("mobile", "sha256"): 6, ("oaid", "raw"): 7, ("oaid", "md5"): 8,
}
IDS_PER_LINE = 10_000
# Read from the codes of TikTok's Business API, which shares this API's design (40100: too many
# requests; 40102, 40104, 40105: the token expired, is empty, is invalid; 50000 and up: system
# errors, retried); any other non-zero code refuses the upload's members.
AUTH_CODES = {40102, 40104, 40105}
RATE_LIMIT_CODES = {40100}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def dmp_data(data_type: int, ids: list[str]) -> bytes:
    """One serialised DmpData: idList (field 1) of IdItem{dataType (2, varint), id (3, string)}."""
    out = bytearray()
    for value in ids:
        raw = value.encode("utf-8")
        item = b"\x10" + _varint(data_type) + b"\x1a" + _varint(len(raw)) + raw
        out += b"\x0a" + _varint(len(item)) + item
    return bytes(out)


def dmp_file(data_type: int, ids: list[str], name: str) -> bytes:
    """The zip to upload: one text file, a base64 DmpData of up to 10,000 ids a line."""
    lines = [base64.b64encode(dmp_data(data_type, ids[i:i + IDS_PER_LINE])).decode("ascii")
             for i in range(0, len(ids), IDS_PER_LINE)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, "\n".join(lines) + "\n")
    return buffer.getvalue()


class OceanEngineConnector(AudienceSync):
    platform = "Ocean Engine"
    capabilities = Capabilities(channel="ocean_engine",
                                id_forms={"imei": ("raw", "md5"), "idfa": ("raw", "md5"),
                                          "mobile": ("sha256",), "oaid": ("raw", "md5")},
                                supports_removals=True, is_message=False, max_batch_size=1_000_000)

    @classmethod
    def prepare_id(cls, id_type: str, value: str, form: str, region: str = "CN") -> str:
        return super().prepare_id(id_type, value, form, region).lower()  # ids are lower case

    def _call(self, path: str, **kwargs) -> dict:
        headers = {"Access-Token": self.settings.secrets["access_token"]}
        reply = self.request("POST", path, headers=headers, **kwargs)
        if reply.status_code in (401, 403):
            raise self.config_error(f"the access token (HTTP {reply.status_code})")
        answer = self.json_of(reply)
        if not isinstance(answer, dict) or not isinstance(answer.get("code"), int):
            raise TransientError(f"Ocean Engine: a reply without the envelope's code: {reply_excerpt(reply)}")
        code = answer["code"]
        if code in AUTH_CODES:
            raise self.config_error(f"the access token (code {code}: {answer.get('message')})")
        if code in RATE_LIMIT_CODES:
            raise TransientError(f"Ocean Engine rate limit {code}: {answer.get('message')}", 1.0)
        if code >= 50000:  # the platform's system errors
            raise TransientError(f"Ocean Engine system error {code}: {answer.get('message')}")
        return answer

    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        s = self.settings
        data_type = DATA_TYPES[(members[0].id_type, s.options["id_form"])]
        name = f"{s.destination}-{batch_no:05d}-{op}"
        content = dmp_file(data_type, [m.id_value for m in members], name + ".txt")
        answer = self._call("2/dmp/data_source/file/upload/",
                            data={"advertiser_id": str(s.account_id),
                                  "file_signature": hashlib.md5(content).hexdigest()},
                            files={"file": (name + ".zip", content, "application/zip")})
        if answer["code"] != 0:
            return self.failed(members, str(answer["code"]), str(answer.get("message") or ""))
        path = str((answer.get("data") or {}).get("file_path") or "")
        if not path:
            raise TransientError("Ocean Engine: the file upload answered no data.file_path")
        body = {"advertiser_id": int(s.account_id), "data_source_id": str(s.audience_id),
                "operation_type": 1 if op == "add" else 2, "data_format": 0,
                "file_storage_type": 0, "file_paths": [path]}
        answer = self._call("2/dmp/data_source/update/", json=body)
        if answer["code"] != 0:
            return self.failed(members, str(answer["code"]), str(answer.get("message") or ""))
        return self.sent(members, str(answer.get("request_id") or ""))

    def finish(self, summary: dict[str, int]) -> None:
        """Publish the audience. The platform allows one publish a day: a refusal is a note on
        the run (every change is in the data source; the next run's publish, or one in the
        platform, makes it live), not a failure."""
        audience = self.settings.options.get("custom_audience_id")
        if not audience:
            return
        if self.session is None:
            self.open()
        body = {"advertiser_id": int(self.settings.account_id), "custom_audience_id": int(audience)}
        answer = self._call("2/dmp/custom_audience/publish/", json=body)
        if answer["code"] != 0:
            self.notes.append(f"every change reached data source {self.settings.audience_id}, but "
                              f"Ocean Engine did not publish audience {audience} (code "
                              f"{answer['code']}: {answer.get('message')}); it serves the old "
                              "members until the next run's publish or one in the platform")
