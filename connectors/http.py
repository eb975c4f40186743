"""HTTP client helpers every HTTP connector shares: a pooled session, the statuses worth a retry,
Retry-After, and one request whose transport failures and retryable statuses become
`TransientError`."""

from __future__ import annotations

import email.utils
import time

import requests
from requests.adapters import HTTPAdapter

from connectors.base import Connector, TransientError

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})  # other 4xx/5xx: refused for good


def pooled_session(connections: int) -> requests.Session:
    """A session keeping up to `connections` connections alive (one per batch in flight);
    retries are the sync engine's, so the adapter makes none."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(connections, 1), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def send(session: requests.Session, method: str, url: str, who: str, timeout_s: float,
         retry: frozenset[int] = RETRY_STATUSES, **kwargs) -> requests.Response:
    """One request. No reply, a reset or a status in `retry` raise TransientError (naming `who`,
    with the peer's Retry-After); any other reply is returned."""
    try:
        reply = session.request(method, url, timeout=timeout_s, **kwargs)
    except requests.Timeout:
        raise TransientError(f"{who}: no reply within {timeout_s:g} s") from None
    except requests.RequestException as exc:  # refused, reset, a broken chunked body, ...
        raise TransientError(f"{who}: connection failed: {type(exc).__name__}") from None
    if reply.status_code in retry:
        raise TransientError(f"{who}: HTTP {reply.status_code}",
                             retry_after_seconds(reply.headers.get("Retry-After")))
    return reply


class HttpConnector(Connector):
    """A connector over HTTP: a pooled session from `open` to `close`, sized by its settings'
    `concurrency` (the batches in flight)."""

    session: requests.Session | None = None

    def open(self) -> None:
        self.session = pooled_session(self.settings.concurrency)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
