"""What every ad-platform audience sync shares.

An ad-platform destination keeps one audience on the platform (a Tencent customer file audience,
an Ocean Engine data source, a Baidu crowd, a Meta custom audience, a Google Customer Match list)
equal to an OpenAudience audience: each batch of the sync engine becomes one upload of adds and,
when the batch holds some, one of removes. Uploads are sets on the platform side, so a batch sent
again after a crash adds or removes the same ids again and changes nothing: the engine's
idempotency keys make a rerun send only what was not acknowledged, and the platform makes a repeat
harmless.

Platform replies fall in three kinds, and each connector maps its own error codes onto them:

- rate limits, timeouts, 5xx: `TransientError` (retried with backoff; Retry-After honoured);
- bad credentials, an unknown account or audience: `PlatformConfigError`, which stops the run
  (the rest stays pending; fix the configuration and deliver again);
- anything else the platform refuses: a failed `Outcome` for the members of that upload (dead
  letters, replayable). Where a platform answers a wrong token with HTTP 200 and an error code
  we cannot tell apart from other refusals, the engine's breaker stops the run after
  `breaker_failures` batches refused whole.

"Sent" means the platform accepted the upload; every platform here matches the ids later, on
its side, and reports how many matched in its own interface.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import requests

from connectors.base import ConnectorConfigError, Member, Outcome, TransientError
from connectors.http import HttpConnector, RefusedRequest, reply_excerpt, send


class PlatformConfigError(ConnectorConfigError):
    """The platform refused the credentials, the account or the audience: no retry will help."""


@dataclass(frozen=True)
class AdSettings:
    """One destination's platform settings; `secrets` holds the values of the environment
    variables the destination file names (never logged)."""

    destination: str
    base_url: str
    account_id: str
    audience_id: str
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    concurrency: int = 4
    allow_private_network: bool = False
    """Connect even where the platform's host resolves to a link-local or metadata address."""


class AudienceSync(HttpConnector):
    """An ad-platform audience kept equal to an OpenAudience audience, batch by batch."""

    platform = "ad platform"

    def __init__(self, settings: AdSettings) -> None:
        self.settings = settings
        self.session: requests.Session | None = None
        self.notes: list[str] = []

    def deliver(self, batch: list[Member], batch_no: int) -> list[Outcome]:
        if self.session is None:
            self.open()
        done: list[Outcome] = []
        for op in ("add", "remove"):
            part = [m for m in batch if m.op == op]
            if not part:
                continue
            try:
                done += self.upload(op, part, batch_no)
            except TransientError as exc:  # the adds went through: a retry sends the removes only
                exc.partial = [*done, *exc.partial]
                raise
        return done

    @abstractmethod
    def upload(self, op: str, members: list[Member], batch_no: int) -> list[Outcome]:
        """Add or remove `members` (all of one op) on the platform audience."""

    # -- helpers for the platforms ----------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + "/" + path.lstrip("/")

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One HTTP request; transport failures, 429 and 5xx raise TransientError (unless
        `retry=` names other statuses)."""
        return self.send(method, self.url(path), self.platform, **kwargs)

    def send(self, method: str, url: str, who: str, **kwargs) -> requests.Response:
        """One request to `url` (connectors.http.send); a redirect or a forbidden address stops the
        run: the destination's endpoint is wrong, and no retry will help."""
        assert self.session is not None
        try:
            return send(self.session, method, url, who, self.settings.timeout_s, **kwargs)
        except RefusedRequest as exc:
            raise self.config_error(f"the request ({exc})") from None

    def json_of(self, reply: requests.Response) -> Any:
        """The reply's JSON; a reply that is not JSON may be a proxy's error page: retried."""
        try:
            return reply.json()
        except ValueError:
            raise TransientError(f"{self.platform}: HTTP {reply.status_code} with a body that is "
                                 f"not JSON: {reply_excerpt(reply)}") from None

    def config_error(self, what: str) -> PlatformConfigError:
        return PlatformConfigError(f"destination {self.settings.destination}: {self.platform} "
                                   f"refused {what}; fix the destination file or its credentials, "
                                   f"then run `oa deliver {self.settings.destination}` again to resume")

    @staticmethod
    def failed(members: list[Member], code: str, message: str) -> list[Outcome]:
        return [Outcome(m.key, False, code, message[:300]) for m in members]

    @staticmethod
    def sent(members: list[Member], external_id: str = "") -> list[Outcome]:
        return [Outcome(m.key, True, "OK", external_id=external_id) for m in members]


def compact(value: Any) -> str:
    """JSON without spaces, as the platforms' examples are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
