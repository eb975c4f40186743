"""SMS through Quick Audience's third-party SMS platform contract (its REST SPEC).

A batch is one `POST {prefix}/sms/sendBatch` with ``{outId, phoneOssUrl, signName,
templateCode, templateParam}``: the phones go in a text file, one 11-digit number a line,
written under `phone_folder` and fetched by the platform from `phone_base_url` (an object-store
bucket or any HTTP server over that folder). ``outId`` is the destination, the run and the batch
number, so a batch sent again after a crash carries the same ``outId``, which the platform keeps
to send once. Success is the configured code (the contract names none; "OK" by default, as the
webhook contract), with ``platformName`` equal to the configured name.

Delivery reports come from `POST {prefix}/sms/sendDetails` (``{outId, currentPage, pageSize
(1-1000), startDate, endDate}``, at most 30 days apart), page by page: ``sendStatus`` 2 is
delivered, 1 failed; a number with no report 72 hours after the send counts as failed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from connectors.base import Capabilities, Connector, ConnectorConfigError, Member, Outcome, TransientError
from connectors.http import send

PAGE_SIZE = 1000
REPORT_TIMEOUT = dt.timedelta(hours=72)


class SmsContractError(Exception):
    """A reply that breaks the contract; the message says how."""


@dataclass(frozen=True)
class SmsSettings:
    base_url: str
    platform_name: str
    sign_name: str
    template_code: str
    phone_folder: Path
    phone_base_url: str
    destination: str
    template_params: dict[str, str] = field(default_factory=dict)
    success_code: str = "OK"
    token: str = ""
    timeout_s: float = 30.0


def out_id(destination: str, run_id: str, batch_no: int) -> str:
    return f"{destination}-{run_id[:12]}-{batch_no:05d}"


class SmsConnector(Connector):
    capabilities = Capabilities(
        channel="sms",
        id_forms={"mobile": ("raw",)},
        supports_removals=False,
        per_recipient_receipts=True,
        is_message=True,
        max_batch_size=100_000,
    )

    def __init__(self, settings: SmsSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        headers = {"Content-Type": "application/json"}
        if s.token:
            headers["Authorization"] = f"Bearer {s.token}"
        reply = send(self.session, "POST", s.base_url.rstrip("/") + path, f"SMS platform {path}",
                     s.timeout_s, headers=headers, data=json.dumps(body, ensure_ascii=False).encode("utf-8"))
        if reply.status_code in (401, 403):
            raise ConnectorConfigError(
                f"destination {s.destination}: the SMS platform refused the credentials "
                f"(HTTP {reply.status_code} from {path})")
        try:
            answer = reply.json()
        except ValueError:
            raise TransientError(f"HTTP {reply.status_code} from {path} with a body that is not JSON: "
                                 f"{reply.text[:120]!r}") from None
        if not isinstance(answer, dict):
            raise SmsContractError(f"{path} answered {type(answer).__name__} JSON, not an object "
                                   f"(HTTP {reply.status_code})")
        if answer.get("platformName") != s.platform_name:
            raise SmsContractError(f"{path} answered platformName {answer.get('platformName')!r} "
                                   f"(HTTP {reply.status_code}), not the configured {s.platform_name!r}")
        answer["_http"] = reply.status_code
        return answer

    def deliver(self, batch: list[Member], batch_no: int = 0) -> list[Outcome]:
        s = self.settings
        oid = out_id(s.destination, self.run_id, batch_no)
        s.phone_folder.mkdir(parents=True, exist_ok=True)
        target = s.phone_folder / f"{oid}.txt"
        temporary = target.with_name("." + target.name + ".tmp")
        temporary.write_text("".join(f"{m.id_value}\n" for m in batch), encoding="ascii")
        os.replace(temporary, target)
        body = {"outId": oid, "phoneOssUrl": f"{s.phone_base_url.rstrip('/')}/{target.name}",
                "signName": s.sign_name, "templateCode": s.template_code,
                "templateParam": json.dumps(s.template_params, ensure_ascii=False)}
        try:
            answer = self._post("/sms/sendBatch", body)
        except SmsContractError as exc:
            return [Outcome(m.key, False, "contract", str(exc)) for m in batch]
        if answer["_http"] >= 400 or str(answer.get("code")) != s.success_code:
            message = f"{answer.get('code')}: {answer.get('message') or ''}".strip(": ")
            return [Outcome(m.key, False, str(answer.get("code") or answer["_http"]), message)
                    for m in batch]
        biz = str(answer.get("bizId") or "")
        return [Outcome(m.key, True, s.success_code, external_id=f"{oid}|{biz}") for m in batch]

    def details(self, oid: str, sent_at: dt.datetime) -> list[dict[str, Any]]:
        """Every delivery report of one batch, page by page."""
        start = sent_at - dt.timedelta(minutes=5)
        end = min(sent_at + dt.timedelta(days=29), dt.datetime.now(dt.UTC).replace(tzinfo=None)
                  + dt.timedelta(minutes=5))
        out, page = [], 1
        while True:
            answer = self._post("/sms/sendDetails", {
                "outId": oid, "currentPage": page, "pageSize": PAGE_SIZE,
                "startDate": start.strftime("%Y-%m-%d %H:%M"), "endDate": end.strftime("%Y-%m-%d %H:%M")})
            rows = answer.get("sendDetailDTOs") or []
            if not isinstance(rows, list):
                raise SmsContractError("sendDetails answered sendDetailDTOs that is not a list")
            out += rows
            total = int(answer.get("totalCount") or 0)
            if not rows or len(out) >= total:
                return out
            page += 1
