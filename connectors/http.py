"""HTTP client helpers every HTTP connector shares: a pooled session, the statuses worth a retry,
Retry-After, and one request whose transport failures and retryable statuses become
`TransientError`.

Endpoints come from destination files, which anyone who may open a pull request writes, so the
requests are guarded against server-side request forgery where the checks of the file cannot
see: redirects are never followed (a 3xx is refused, naming its status), every address a host
name resolves to is checked before connecting and the peer's address again once connected (a
name that resolves to a link-local or cloud-metadata address is refused unless the destination
allows private networks), and a reply's body reaches an error message only as a short,
sanitised excerpt."""

from __future__ import annotations

import email.utils
import ipaddress
import re
import socket
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from connectors.base import Connector, TransientError

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})  # other 4xx/5xx: refused for good
METADATA_ADDRESSES = frozenset({ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.0.23", "100.100.100.200", "fd00:ec2::254")})
"""Cloud instance-metadata services (AWS, ECS, GCP, Tencent Cloud, Alibaba Cloud): a request to
one from a server hands out the machine's cloud credentials."""
EXCERPT_CHARS = 80


class RefusedRequest(TransientError):
    """A request this process will not complete: a redirect, or a peer on a link-local or
    cloud-metadata address. Retrying does not help; callers turn it into a refusal of the batch
    (it is a TransientError only so that a caller that does not handle it retries and stops
    instead of crashing). `code` is what a refused member's outcome records: `HTTP 302`, or
    `forbidden_address`."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ForbiddenAddress(Exception):
    """Raised while connecting: the host resolves to an address no destination may reach. Not
    an OSError, so that urllib3 neither retries it nor hides it."""


def address_problem(address: str) -> str | None:
    """Why this process must not connect to the IP `address` (as a resolver or a socket gives
    it), or None: link-local addresses (169.254.0.0/16, fe80::/10) and metadata services, an
    IPv4 address written as IPv6 included."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    if ip in METADATA_ADDRESSES:
        return f"{ip}, a cloud metadata service"
    if ip.is_link_local:
        return f"{ip}, a link-local address"
    return None


class _GuardedConnection:
    """Refuses, before connecting, a host any of whose addresses is forbidden, and after
    connecting a peer whose address is (a resolver that answers differently the second time)."""

    def _new_conn(self):
        try:
            infos = socket.getaddrinfo(self._dns_host, self.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            infos = []  # urllib3 resolves again and reports the failure its own way
        for info in infos:
            problem = address_problem(info[4][0])
            if problem:
                raise ForbiddenAddress(f"{self.host} resolves to {problem}")
        sock = super()._new_conn()
        try:
            problem = address_problem(sock.getpeername()[0])
        except OSError:
            problem = None
        if problem:
            sock.close()
            raise ForbiddenAddress(f"{self.host} connected to {problem}")
        return sock


class _GuardedHTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An adapter whose direct connections refuse link-local and metadata addresses, unless
    `allow_private_network`. (Through a proxy the environment names, the proxy connects.)"""

    def __init__(self, allow_private_network: bool = False, **kwargs) -> None:
        self.allow_private_network = allow_private_network
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        if not self.allow_private_network:
            self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool,
                                                       "https": _GuardedHTTPSPool}


def pooled_session(connections: int, allow_private_network: bool = False) -> requests.Session:
    """A session keeping up to `connections` connections alive (one per batch in flight), its
    connections guarded (see GuardedAdapter); retries are the sync engine's, so the adapter
    makes none."""
    session = requests.Session()
    adapter = GuardedAdapter(allow_private_network, pool_connections=1,
                             pool_maxsize=max(connections, 1), max_retries=0)
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


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of a peer's text, quoted, white space collapsed, control
    characters escaped, and `[` and `<` written as \\x5b and \\x3c: safe in a log, a terminal
    (rich markup) or a web page."""
    short = re.sub(r"\s+", " ", text[:limit * 4]).strip()
    quoted = repr(short[:limit]).replace("[", "\\x5b").replace("<", "\\x3c")
    return quoted + ("..." if len(short) > limit else "")


def clean(text: str, limit: int) -> str:
    """A peer's short field (an error code, a message) for our records: control characters
    replaced by spaces, at most `limit` characters."""
    short = "".join(c if c.isprintable() else " " for c in text[:limit + 1])
    return short[:limit] + ("..." if len(short) > limit else "")


def reply_excerpt(reply: requests.Response, limit: int = EXCERPT_CHARS) -> str:
    """The start of a reply's body as `excerpt` shows it."""
    return excerpt(reply.content[:limit * 4].decode("utf-8", "replace"), limit)


def _guard(session: requests.Session, url: str) -> None:
    """A session not made by `pooled_session` gets guarded adapters (private networks refused)."""
    if not isinstance(session.get_adapter(url), GuardedAdapter):
        for prefix in ("http://", "https://"):
            session.mount(prefix, GuardedAdapter(max_retries=0))


def send(session: requests.Session, method: str, url: str, who: str, timeout_s: float,
         retry: frozenset[int] = RETRY_STATUSES, **kwargs) -> requests.Response:
    """One request, never following a redirect. No reply, a reset or a status in `retry` raise
    TransientError (naming `who`, with the peer's Retry-After); a redirect or a forbidden peer
    address raise RefusedRequest; any other reply is returned."""
    kwargs["allow_redirects"] = False
    try:
        _guard(session, url)
        reply = session.request(method, url, timeout=timeout_s, **kwargs)
    except ForbiddenAddress as exc:
        raise RefusedRequest(f"{who}: refused to connect: {exc}; a destination may reach it only if "
                             "its file sets allow_private_network: true", "forbidden_address") from None
    except requests.Timeout:
        raise TransientError(f"{who}: no reply within {timeout_s:g} s") from None
    except requests.RequestException as exc:  # refused, reset, a broken chunked body, ...
        raise TransientError(f"{who}: connection failed: {type(exc).__name__}") from None
    if 300 <= reply.status_code < 400:
        reply.close()
        raise RefusedRequest(f"{who}: HTTP {reply.status_code}, a redirect, which is not followed; "
                             "set the destination's endpoint to the final address",
                             f"HTTP {reply.status_code}")
    if reply.status_code in retry:
        raise TransientError(f"{who}: HTTP {reply.status_code}",
                             retry_after_seconds(reply.headers.get("Retry-After")))
    return reply


class HttpConnector(Connector):
    """A connector over HTTP: a pooled session from `open` to `close`, sized by its settings'
    `concurrency` (the batches in flight), private networks as its settings'
    `allow_private_network` says."""

    session: requests.Session | None = None

    def open(self) -> None:
        self.session = pooled_session(self.settings.concurrency, self.settings.allow_private_network)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
