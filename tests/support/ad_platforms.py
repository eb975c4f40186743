"""Local peers for the ad-platform connectors, each speaking its platform's audience-upload
contract and checking every request against it: the path, the auth, the fields, the id type
and the form of every id (hex digests of the right length, lower case where the platform says
so). A request that breaks the contract is answered as the platform would and recorded in
`violations`, which a test asserts empty. Each peer keeps the audience's members as a set, so a
test compares what the platform holds with what the audience is.

`throttle(n)` answers the next n uploads with the platform's rate-limit reply."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import io
import itertools
import json
import re
import threading
import time
import zipfile
from urllib.parse import parse_qs, urlsplit

from connectors.http_server import JsonServer

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")
UUID_UPPER = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
UUID_LOWER = re.compile(UUID_UPPER.pattern.replace("A-F", "a-f"))


def form_parts(headers, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data as {name: (filename, bytes)}, parsed by the e-mail package."""
    head = f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("not multipart/form-data")
    out = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = (part.get_filename(), part.get_payload(decode=True))
    return out


class Peer:
    """What the five peers share: the server, the members, violations and throttling."""

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.violations: list[str] = []
        self.uploads: list[dict] = []
        self.lock = threading.Lock()
        self.throttled = 0
        self.refuse: set[str] = set()
        self.http = JsonServer(self.guarded).start()

    @property
    def url(self) -> str:
        return self.http.base_url

    def throttle(self, n: int) -> None:
        self.throttled = n

    def take_throttle(self) -> bool:
        with self.lock:
            if self.throttled > 0:
                self.throttled -= 1
                return True
            return False

    def violation(self, text: str):
        with self.lock:
            self.violations.append(text)
        return self.refused(text)

    def apply(self, op: str, ids: list[str], **info) -> None:
        with self.lock:
            (self.members.update if op == "add" else self.members.difference_update)(ids)
            self.uploads.append({"op": op, "n": len(ids), **info})

    def guarded(self, method, path, headers, body):
        try:
            return self.handle(method, path, headers, body)
        except Exception as exc:  # noqa: BLE001 - a malformed request is a violation, not a crash
            return self.violation(f"{path}: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        self.http.stop()


# -- Tencent Ads ----------------------------------------------------------------------------------
TENCENT_FORMATS = {"HASH_MOBILE_PHONE": HEX32, "SHA256_MOBILE_PHONE": HEX64, "HASH_IMEI": HEX32,
                   "HASH_IDFA": HEX32, "HASH_OAID": HEX32, "IMEI": re.compile(r"[0-9a-z]{14,15}"),
                   "IDFA": UUID_UPPER, "OAID": re.compile(r"\S+"), "WX_UNIONID": re.compile(r"\S+")}


class TencentAds(Peer):
    def __init__(self, account_id: int, audience_id: int, token: str) -> None:
        self.account_id, self.audience_id, self.token = account_id, audience_id, token
        self.nonces: set[str] = set()
        super().__init__()

    def refused(self, text: str):
        return 200, {"code": 11001, "message": text, "message_cn": text}

    def handle(self, method, path, headers, body):
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method != "POST" or url.path != "/custom_audience_files/add":
            return self.violation(f"unexpected {method} {url.path}")
        if query.get("access_token") != self.token:
            return 200, {"code": 11002, "message": "access_token is invalid"}
        if abs(time.time() - int(query.get("timestamp", 0))) > 300:
            return self.violation("timestamp more than 300 s from now")
        nonce = query.get("nonce", "")
        if not 0 < len(nonce) <= 32 or nonce in self.nonces:
            return self.violation(f"nonce {nonce!r} missing, too long or used before")
        self.nonces.add(nonce)
        if self.take_throttle():
            return 200, {"code": 11017, "message": "minute limit reached"}
        parts = form_parts(headers, body)
        fields = {k: v[1].decode() for k, v in parts.items() if k != "file"}
        if (fields.get("account_id"), fields.get("audience_id")) != (str(self.account_id),
                                                                     str(self.audience_id)):
            return self.violation(f"account/audience {fields.get('account_id')}/{fields.get('audience_id')}")
        kind, operation = fields.get("user_id_type"), fields.get("operation_type")
        if kind not in TENCENT_FORMATS or operation not in ("APPEND", "REDUCE"):
            return self.violation(f"user_id_type {kind!r} / operation_type {operation!r}")
        filename, content = parts["file"]
        if not filename or not filename.endswith((".txt", ".csv", ".zip")):
            return self.violation(f"file name {filename!r}")
        ids = content.decode().split("\n")
        ids = ids[:-1] if ids and ids[-1] == "" else ids
        bad = [i for i in ids if not TENCENT_FORMATS[kind].fullmatch(i)]
        if bad:
            return self.violation(f"{len(bad)} ids are not {kind}, e.g. {bad[0]!r}")
        self.apply("add" if operation == "APPEND" else "remove", ids, user_id_type=kind)
        return 200, {"code": 0, "message": "", "data": {"custom_audience_file_id": len(self.uploads)}}


# -- Ocean Engine ---------------------------------------------------------------------------------
def dmp_message_class():
    """DmpData from the platform's .proto, built with the protobuf runtime (no generated code)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="toutiao_dmp_test.proto", package="toutiao.dmp",
                                           syntax="proto2")
    item = f.message_type.add(name="IdItem")
    enum = item.enum_type.add(name="DataType")
    for name, number in (("IMEI", 0), ("IDFA", 1), ("UID", 2), ("IMEI_MD5", 4), ("IDFA_MD5", 5),
                         ("MOBILE_HASH_SHA256", 6), ("OAID", 7), ("OAID_MD5", 8)):
        enum.value.add(name=name, number=number)
    t = descriptor_pb2.FieldDescriptorProto
    item.field.add(name="timestamp", number=1, type=t.TYPE_UINT32, label=t.LABEL_OPTIONAL)
    item.field.add(name="dataType", number=2, type=t.TYPE_ENUM, label=t.LABEL_REQUIRED,
                   type_name=".toutiao.dmp.IdItem.DataType")
    item.field.add(name="id", number=3, type=t.TYPE_STRING, label=t.LABEL_REQUIRED)
    item.field.add(name="tags", number=4, type=t.TYPE_STRING, label=t.LABEL_REPEATED)
    data = f.message_type.add(name="DmpData")
    data.field.add(name="idList", number=1, type=t.TYPE_MESSAGE, label=t.LABEL_REPEATED,
                   type_name=".toutiao.dmp.IdItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("toutiao.dmp.DmpData"))


OCEAN_FORMATS = {0: re.compile(r"[0-9a-z]{14,15}"), 1: UUID_LOWER, 4: HEX32, 5: HEX32, 6: HEX64,
                 7: re.compile(r"[0-9a-f-]+"), 8: HEX32}


class OceanEngine(Peer):
    def __init__(self, advertiser_id: int, data_source_id: str, audience_id: int, token: str) -> None:
        self.advertiser_id, self.data_source_id, self.audience_id = advertiser_id, data_source_id, audience_id
        self.token = token
        self.files: dict[str, tuple[int, list[str]]] = {}
        self.published = 0
        self.publish_limit = 1_000  # publishes allowed (the platform: one a day)
        self.DmpData = dmp_message_class()
        super().__init__()

    def refused(self, text: str):
        return 200, {"code": 40002, "message": text, "request_id": "r"}

    def ok(self, **data):
        return 200, {"code": 0, "message": "OK", "request_id": f"req{len(self.uploads)}", "data": data}

    def handle(self, method, path, headers, body):
        if headers.get("Access-Token") != self.token:
            return 200, {"code": 40105, "message": "access token is invalid", "request_id": "r"}
        if method != "POST":
            return self.violation(f"unexpected {method} {path}")
        if path == "/2/dmp/data_source/file/upload/":
            if self.take_throttle():
                return 200, {"code": 40100, "message": "too many requests", "request_id": "r"}
            parts = form_parts(headers, body)
            if parts["advertiser_id"][1].decode() != str(self.advertiser_id):
                return self.violation("advertiser_id")
            content = parts["file"][1]
            if parts["file_signature"][1].decode() != hashlib.md5(content).hexdigest():
                return self.violation("file_signature is not the file's md5")
            ids, kinds = [], set()
            with zipfile.ZipFile(io.BytesIO(content)) as z:
                for name in z.namelist():
                    for line in z.read(name).decode().splitlines():
                        data = self.DmpData.FromString(base64.b64decode(line, validate=True))
                        if not 0 < len(data.idList) <= 10_000:
                            return self.violation(f"a line holds {len(data.idList)} ids")
                        for item in data.idList:
                            kinds.add(item.dataType)
                            ids.append(item.id)
            if len(kinds) != 1:
                return self.violation(f"data types {kinds} in one file")
            kind = kinds.pop()
            bad = [i for i in ids if not OCEAN_FORMATS[kind].fullmatch(i)]
            if bad:
                return self.violation(f"{len(bad)} ids are not of data type {kind}, e.g. {bad[0]!r}")
            path_id = f"dmp/file/{len(self.files)}"
            self.files[path_id] = (kind, ids)
            return self.ok(file_path=path_id)
        request = json.loads(body)
        if path == "/2/dmp/data_source/update/":
            expected = {"advertiser_id": self.advertiser_id, "data_source_id": self.data_source_id,
                        "data_format": 0, "file_storage_type": 0}
            if any(request.get(k) != v for k, v in expected.items()) or \
                    request.get("operation_type") not in (1, 2):
                return self.violation(f"update request {request}")
            for p in request["file_paths"]:
                if p not in self.files:
                    return self.violation(f"unknown file path {p}")
                kind, ids = self.files[p]
                self.apply("add" if request["operation_type"] == 1 else "remove", ids, data_type=kind)
            return self.ok()
        if path == "/2/dmp/custom_audience/publish/":
            if request != {"advertiser_id": self.advertiser_id, "custom_audience_id": self.audience_id}:
                return self.violation(f"publish request {request}")
            if self.published >= self.publish_limit:
                return 200, {"code": 40003, "message": "publish is allowed once a day", "request_id": "r"}
            self.published += 1
            return self.ok()
        return self.violation(f"unexpected path {path}")


# -- Baidu ----------------------------------------------------------------------------------------
BAIDU_FORMATS = {1: UUID_UPPER, 2: re.compile(r"[0-9a-z]{14,15}"), 4: HEX32, 5: HEX32, 6: HEX32}


class BaiduAds(Peer):
    def __init__(self, user_name: str, token: str) -> None:
        self.user_name, self.token = user_name, token
        self.crowds: dict[str, list[str]] = {}
        super().__init__()

    def refused(self, text: str):
        return 200, {"header": {"status": 2, "desc": "failure", "failures": [{"code": 400, "message": text}]},
                     "body": {"data": []}}

    def handle(self, method, path, headers, body):
        if method != "POST" or path != "/CrowdFeedService/addCrowdFeed":
            return self.violation(f"unexpected {method} {path}")
        request = json.loads(body)
        header = request["header"]
        if header.get("userName") != self.user_name or header.get("accessToken") != self.token:
            return 200, {"header": {"status": 2, "desc": "failure",
                                    "failures": [{"code": 8904, "message": "invalid token"}]}}
        if self.take_throttle():
            return 200, {"header": {"status": 3, "desc": "system busy", "failures": []}}
        crowd = request["body"]["crowdFeedType"]
        content = base64.b64decode(crowd["content"], validate=True)
        if len(content) > 10 * 1024 * 1024:
            return self.violation("content above 10 MB")
        ids = content.decode().splitlines()
        kind = crowd["crowdType"]
        if kind not in BAIDU_FORMATS or len(ids) < 5000:
            return self.violation(f"crowdType {kind} with {len(ids)} ids")
        bad = [i for i in ids if not BAIDU_FORMATS[kind].fullmatch(i)]
        if bad:
            return self.violation(f"{len(bad)} ids are not crowdType {kind}, e.g. {bad[0]!r}")
        with self.lock:
            self.crowds[crowd["crowdName"]] = ids
        self.apply("add", ids, crowd=crowd["crowdName"])
        data = [{"crowdId": 1000 + len(self.crowds), "crowdName": crowd["crowdName"]}]
        return 200, {"header": {"status": 0, "desc": "success", "failures": [], "quota": 1, "rquota": 999},
                     "body": {"data": data}}


# -- Meta -----------------------------------------------------------------------------------------
META_FORMATS = {"EMAIL_SHA256": HEX64, "PHONE_SHA256": HEX64, "MOBILE_ADVERTISER_ID": UUID_LOWER,
                "EXTERN_ID": re.compile(r"\S+")}


class MetaAds(Peer):
    def __init__(self, audience_id: str, token: str, app_secret: str = "") -> None:
        self.audience_id, self.token, self.app_secret = audience_id, token, app_secret
        self.sessions: dict[int, str] = {}  # session id -> the payload it carried
        super().__init__()

    def refused(self, text: str):
        return 400, {"error": {"message": text, "type": "OAuthException", "code": 100,
                               "fbtrace_id": "t"}}

    def handle(self, method, path, headers, body):
        if method != "POST" or path != f"/{self.audience_id}/users":
            return self.violation(f"unexpected {method} {path}")
        if "application/x-www-form-urlencoded" not in headers.get("Content-Type", ""):
            return self.violation("the body is not form-encoded")
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("access_token") != self.token:
            return 400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException",
                                   "code": 190, "fbtrace_id": "t"}}
        if self.app_secret:
            proof = hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()
            if form.get("appsecret_proof") != proof:
                return self.violation("appsecret_proof does not match")
        if self.take_throttle():
            return 400, {"error": {"message": "User request limit reached", "type": "OAuthException",
                                   "code": 80003, "is_transient": True, "fbtrace_id": "t"}}, \
                {"X-Business-Use-Case-Usage": json.dumps(
                    {"1": [{"type": "CUSTOM_AUDIENCE", "estimated_time_to_regain_access": 0}]})}
        payload, session = json.loads(form["payload"]), json.loads(form["session"])
        schema, data = payload["schema"], payload["data"]
        if schema not in META_FORMATS or not 0 < len(data) <= 10_000:
            return self.violation(f"schema {schema!r} with {len(data)} ids")
        if not (isinstance(session.get("session_id"), int) and session["session_id"] > 0
                and session.get("batch_seq") == 1 and session.get("last_batch_flag") is True):
            return self.violation(f"session {session}")
        bad = [i for i in data if not isinstance(i, str) or not META_FORMATS[schema].fullmatch(i)]
        if bad:
            return self.violation(f"{len(bad)} ids are not {schema}, e.g. {bad[0]!r}")
        op = "remove" if form.get("method") == "DELETE" else "add"
        with self.lock:  # a finished session may be retried as it was, never reused
            earlier = self.sessions.setdefault(session["session_id"], op + form["payload"])
        if earlier != op + form["payload"]:
            return self.violation(f"session {session['session_id']} was used for another upload")
        self.apply(op, data, schema=schema)
        return 200, {"audience_id": self.audience_id, "session_id": session["session_id"],
                     "num_received": len(data), "num_invalid_entries": 0, "invalid_entry_samples": {}}


# -- Google Ads -----------------------------------------------------------------------------------
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"
GOOGLE_FORMATS = {"hashedEmail": HEX64, "hashedPhoneNumber": HEX64, "mobileId": re.compile(r"\S+"),
                  "thirdPartyUserId": re.compile(r"\S+")}


class GoogleAds(Peer):
    def __init__(self, customer_id: str, user_list_id: str, developer_token: str, client_id: str,
                 client_secret: str, refresh_token: str, login_customer_id: str | None = None) -> None:
        self.customer_id, self.user_list_id = customer_id, user_list_id
        self.developer_token, self.login_customer_id = developer_token, login_customer_id
        self.client = (client_id, client_secret, refresh_token)
        self.tokens: set[str] = set()
        self.counter = itertools.count(1)
        self.jobs: dict[str, dict] = {}
        self.refreshes = 0
        self.expire_at_job: int | None = None  # the access tokens expire when this job is asked for
        super().__init__()

    def refused(self, text: str):
        return 400, {"error": {"code": 400, "message": text, "status": "INVALID_ARGUMENT"}}

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def handle(self, method, path, headers, body):
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            client = (form.get("client_id"), form.get("client_secret"), form.get("refresh_token"))
            if form.get("grant_type") != "refresh_token" or client != self.client:
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
            token = f"ya29.{next(self.counter)}"
            with self.lock:
                self.tokens.add(token)
                self.refreshes += 1
            return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer",
                         "scope": "https://www.googleapis.com/auth/adwords"}
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                   "status": "UNAUTHENTICATED"}}
        if headers.get("developer-token") != self.developer_token:
            return 403, {"error": {"code": 403, "message": "developer token not approved",
                                   "status": "PERMISSION_DENIED"}}
        if self.login_customer_id and headers.get("login-customer-id") != self.login_customer_id:
            return self.violation("login-customer-id missing or wrong")
        request = json.loads(body or b"{}")
        prefix = f"/customers/{self.customer_id}/offlineUserDataJobs"
        if method != "POST" or not path.startswith(prefix):
            return self.violation(f"unexpected {method} {path}")
        if path == prefix + ":create":
            if self.expire_at_job is not None and len(self.jobs) + 1 >= self.expire_at_job:
                self.expire_at_job = None
                self.expire_tokens()
                return 401, {"error": {"code": 401, "message": "Request had invalid authentication "
                                       "credentials.", "status": "UNAUTHENTICATED"}}
            if self.take_throttle():
                quota = {"errorCode": {"quotaError": "RESOURCE_EXHAUSTED"}, "message": "Too many requests",
                         "details": {"quotaErrorDetails": {"retryDelay": "1s"}}}
                return 429, {"error": {"code": 429, "message": "Resource has been exhausted",
                                       "status": "RESOURCE_EXHAUSTED",
                                       "details": [{"@type": FAILURE_TYPE, "errors": [quota]}]}}
            job = request["job"]
            meta = job["customerMatchUserListMetadata"]
            if job["type"] != "CUSTOMER_MATCH_USER_LIST" or \
                    meta["userList"] != f"customers/{self.customer_id}/userLists/{self.user_list_id}":
                return self.violation(f"job {job}")
            name = f"customers/{self.customer_id}/offlineUserDataJobs/{next(self.counter)}"
            with self.lock:
                self.jobs[name] = {"consent": meta.get("consent"), "ops": [], "ran": False}
            return 200, {"resourceName": name}
        name, _, verb = path[1:].rpartition(":")
        job = self.jobs.get(name)
        if job is None or job["ran"]:
            return self.violation(f"{verb} on unknown or finished job {name}")
        if verb == "addOperations":
            if request.get("enablePartialFailure") is not True:
                return self.violation("enablePartialFailure is not true")
            operations = request["operations"]
            if sum(len(next(iter(o.values()))["userIdentifiers"]) for o in operations) > 100_000:
                return self.violation("more than 100,000 identifiers in one request")
            failures = []
            for i, operation in enumerate(operations):
                [(kind, data)] = operation.items()
                [identifier] = data["userIdentifiers"]
                [(field, value)] = identifier.items()
                if kind not in ("create", "remove") or not GOOGLE_FORMATS[field].fullmatch(value):
                    return self.violation(f"operation {operation}")
                if kind == "create" and job["consent"] != {"adUserData": "GRANTED",
                                                           "adPersonalization": "GRANTED"}:
                    return self.violation(f"a create job with consent {job['consent']}")
                if value in self.refuse:
                    failures.append({"errorCode": {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"},
                                     "message": "The SHA256 encoded value is malformed.",
                                     "location": {"fieldPathElements": [
                                         {"fieldName": "operations", "index": i}, {"fieldName": kind},
                                         {"fieldName": "user_identifiers", "index": 0}]}})
                else:
                    job["ops"].append((kind, value, field))
            answer = {}
            if failures:
                answer["partialFailureError"] = {"code": 3, "message": "partial failure",
                                                 "details": [{"@type": FAILURE_TYPE, "errors": failures}]}
            return 200, answer
        if verb == "run":
            job["ran"] = True
            for kind in ("create", "remove"):
                ids = [v for k, v, _ in job["ops"] if k == kind]
                if ids:
                    self.apply("add" if kind == "create" else "remove", ids, job=name)
            return 200, {"name": f"customers/{self.customer_id}/operations/{name.rsplit('/', 1)[1]}"}
        return self.violation(f"unexpected verb {verb}")
