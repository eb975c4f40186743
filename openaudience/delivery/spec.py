"""Destination files as typed models. One file in destinations/ sends one audience to one
channel:

    name: crm_coupon_webhook
    description: Shanghai big spenders get the summer coupon in the CRM.
    owner: crm
    audience: shanghai_big_spenders
    channel: webhook
    id_type: mobile           # default: the audience's id type
    id_form: raw              # raw, md5, sha256 or aes (with aes_key_env)
    mode: diff                # diff: only members added/removed since the last delivery; full
    schedule: on_change       # on_change (every new audience version), manual, hourly, daily,
                              # weekly or monthly
    batch_size: 100
    rate_limit: 2000          # members per second; 0 for no limit
    concurrency: 4            # batches in flight
    variables:
      city: {tag: city, if_missing: default, default: "your city"}
    webhook:
      url_env: OA_CRM_WEBHOOK_URL
      secret_env: OA_CRM_WEBHOOK_SECRET
      params: {coupon: SUMMER25, text: "Hello from ${city}"}

Credentials are named by environment variable only (``*_env``); their values never enter a
file, a log or the warehouse. Files whose name starts with ``_`` are not destinations:
``_policies.yml`` holds the frequency caps shared by every destination.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.http import METADATA_ADDRESSES
from openaudience.core.settings import PROJECT_ROOT

AD_CHANNELS = ("tencent_ads", "ocean_engine", "baidu_ads", "meta_ads", "google_ads")
CHANNELS = ("webhook", "file", "kafka", "email", "sms", *AD_CHANNELS)
CHANNEL_DEFAULTS: dict[str, dict] = {
    "tencent_ads": {"batch_size": 100_000, "retries": {"max_backoff_s": 300}},
    "ocean_engine": {"batch_size": 100_000, "concurrency": 1},
    "baidu_ads": {"batch_size": 300_000, "concurrency": 1},
    "meta_ads": {"batch_size": 10_000},
    "google_ads": {"batch_size": 10_000, "concurrency": 1},
}
"""What a channel's destinations get when the file does not say: each ad-platform batch is one
upload and some platforms count uploads against a daily quota (Ocean Engine: 50 updates a day)
or refuse concurrent jobs on one list (Google); Tencent's minute limit blocks for 5 minutes."""
SCHEDULES = ("on_change", "manual", "hourly", "daily", "weekly", "monthly", "journey")
CRONS = {"hourly": "0 * * * *", "daily": "30 3 * * *", "weekly": "30 3 * * 1",
         "monthly": "30 3 1 * *"}
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_VAR = re.compile(r"\$\{([^}]*)\}")


ENDPOINT_FIELDS = ("url", "base_url", "token_url")
"""Settings (and, with `_env`, variables) that hold a URL this process connects to."""
HOST_FIELDS = ("smtp_host",)
SERVER_LIST_FIELDS = ("bootstrap_servers",)
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog",
                            "metadata.tencentyun.com", "instance-data", "instance-data.ec2.internal"})
EXPORT_ROOTS_VARIABLE = "OA_EXPORT_ROOTS"
"""Absolute folders (separated by os.pathsep) outside OA_HOME that file and SMS phone-file
destinations may write into; set by whoever runs the installation, never by a project file."""


def _home(environ: Mapping[str, str] | None = None) -> Path:
    """OA_HOME as the settings read it (openaudience/core/settings.py), symbolic links resolved."""
    env = os.environ if environ is None else environ
    return Path(env.get("OA_HOME") or PROJECT_ROOT / ".openaudience").expanduser().resolve()


def export_roots(environ: Mapping[str, str] | None = None) -> tuple[list[Path], list[str]]:
    """The folders OA_EXPORT_ROOTS allows (resolved), and its entries that are not absolute."""
    env = os.environ if environ is None else environ
    roots, wrong = [], []
    for entry in (env.get(EXPORT_ROOTS_VARIABLE) or "").split(os.pathsep):
        if entry.strip():
            path = Path(entry.strip()).expanduser()
            roots.append(path.resolve()) if path.is_absolute() else wrong.append(entry)
    return roots, wrong


def folder_outside(path: Path, home: Path, environ: Mapping[str, str] | None = None) -> str | None:
    """Why an output folder (absolute; resolved here, symbolic links followed) may not be written,
    or None: it must lie inside `home` (OA_HOME) or a folder OA_EXPORT_ROOTS names."""
    try:
        real = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symbolic link loop
        return f"{path} is not a usable folder ({exc})"
    roots, wrong = export_roots(environ)
    if real.is_relative_to(home) or any(real.is_relative_to(root) for root in roots):
        return None
    shown = f"{path}" if real == path else f"{path} (which leads to {real})"
    hint = (f"; {EXPORT_ROOTS_VARIABLE} has {', '.join(map(repr, wrong))}, which is not an absolute "
            "folder" if wrong else "")
    return (f"the folder {shown} is outside OA_HOME ({home}); write inside OA_HOME, or let whoever "
            f"runs OpenAudience add the folder to {EXPORT_ROOTS_VARIABLE} (absolute folders separated "
            f"by {os.pathsep!r}){hint}")


def _output_folder(value: str) -> str:
    """A file destination's (or SMS phone files') folder: relative to OA_HOME without `..`, or
    absolute inside OA_HOME or an OA_EXPORT_ROOTS folder. Symbolic links are followed again when
    a delivery writes (openaudience.delivery.channels)."""
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ValueError(f"folder {value[:80]!r} is not a usable folder name")
    path = Path(value)
    if ".." in path.parts:
        raise ValueError(f"folder {value} climbs out with '..'; give a folder inside OA_HOME "
                         "(relative to it), or an absolute folder")
    if path.is_absolute():
        problem = folder_outside(path, _home())
        if problem:
            raise ValueError(problem)
    return value


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host names literally, in every spelling a resolver accepts (`2852039166`,
    `0xa9.0xfe.0xa9.0xfe`, `::ffff:169.254.169.254`), or None for a name."""
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fA-FxX.]+", host):
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.ipv4_mapped or ip.sixtofour or ip
    return ip


def host_problem(host: str, allow_private_network: bool = False) -> str | None:
    """Why this process must not connect to `host`, or None. Refused: link-local addresses and
    cloud metadata services, where a destination file could read the machine's credentials
    (server-side request forgery), unless the file sets allow_private_network. Loopback and
    private networks stay allowed: a CRM in the same network is common. Names are checked here
    as written; the HTTP connectors check the addresses a name resolves to when they connect
    (connectors.http), and never follow a redirect."""
    if not host:
        return "it names no host"
    if allow_private_network:
        return None
    name = host.strip("[]").rstrip(".").lower()
    ip = _address(name)
    if name in METADATA_NAMES or ip in METADATA_ADDRESSES:
        what = "a cloud metadata service"
    elif ip is not None and ip.is_link_local:
        what = "a link-local address"
    else:
        return None
    return (f"the host {host} is {what}; a destination may not reach it unless its file sets "
            "allow_private_network: true")


def endpoint_problem(url: str, allow_private_network: bool = False) -> str | None:
    """Why `url` is no endpoint this process may call, or None. The message shows the scheme and
    the host, never the rest, which may hold a token."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}:" if parts.scheme else "no scheme"
        return f"it must start with http:// or https:// (it has {shown})"
    return host_problem(host, allow_private_network)


def servers_problem(servers: str, allow_private_network: bool = False) -> str | None:
    """Why a `host:port,host:port` list holds a server this process must not reach, or None."""
    for server in servers.split(","):
        server = server.strip().split("://", 1)[-1]
        try:
            host = urlsplit("//" + server).hostname or ""
        except ValueError:
            return f"{server!r} is not host:port"
        problem = host_problem(host, allow_private_network)
        if problem:
            return problem
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (e.g. OA_CRM_WEBHOOK_SECRET); "
                         "put credentials in the environment and name the variable here")
    return value


class Variable(Strict):
    """A `${name}` in a parameter, filled per member from a tag of user_tags, or (`event:`) from
    an attribute of the event that started the person's event-triggered journey."""

    tag: str | None = None
    event: str | None = None
    if_missing: Literal["skip", "default"] = "skip"
    default: str | None = None

    @model_validator(mode="after")
    def _default(self) -> Variable:
        if (self.tag is None) == (self.event is None):
            raise ValueError("a variable reads a tag (tag: NAME) or an attribute of the triggering event "
                             "(event: ATTRIBUTE), one of the two")
        if self.if_missing == "default" and self.default is None:
            raise ValueError("if_missing: default needs a default: value")
        if self.if_missing == "skip" and self.default is not None:
            raise ValueError("default: is used only with if_missing: default")
        return self


class Receipts(Strict):
    """Receipts the integrator posts back: accepted within `window_hours` of the send, with one
    of the configured status codes mapped to delivered, failed, opened, clicked or unsubscribed."""

    window_hours: float = Field(72, gt=0, le=24 * 30)
    statuses: dict[str, Literal["delivered", "failed", "opened", "clicked", "unsubscribed",
                                "complained"]]

    @field_validator("statuses")
    @classmethod
    def _some(cls, value: dict) -> dict:
        if not value:
            raise ValueError("give at least one status code, e.g. {'200': delivered}")
        return value


class WebhookBlock(Strict):
    url: str | None = None
    url_env: str | None = None
    secret_env: str | None = None
    timeout_s: float = Field(10, gt=0, le=120)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    receipts: Receipts | None = None

    _names = field_validator("url_env", "secret_env")(_env_name)

    @model_validator(mode="after")
    def _check(self) -> WebhookBlock:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give the endpoint as url: (a literal) or url_env: (a variable name), "
                             "one of them")
        if self.url is not None and not re.match(r"https?://", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        if self.receipts is not None and self.secret_env is None:
            raise ValueError("receipts: needs secret_env: (the variable holding the shared secret): "
                             "the endpoint takes only receipts signed with it, or anyone could post "
                             "unsubscribes and complaints")
        return self

    def uses(self) -> set[str]:
        """The variables its parameters name as ${name}."""
        return {name for value in self.params.values() if isinstance(value, str)
                for name in _VAR.findall(value)}


class FileBlock(Strict):
    folder: str = "exports"
    """Where run folders go: relative to OA_HOME, or absolute inside OA_HOME or OA_EXPORT_ROOTS."""
    format: Literal["csv", "parquet"] = "csv"
    spreadsheet_safe: bool = True
    """CSV of raw ids: an id a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets
    a leading `'`; false writes ids exactly, for a consumer that is no spreadsheet."""

    _folder = field_validator("folder")(_output_folder)


class KafkaBlock(Strict):
    """One JSON message per member change on `topic`, keyed by the id."""

    bootstrap_servers: str | None = None
    bootstrap_servers_env: str | None = None
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username_env: str | None = None
    password_env: str | None = None
    timeout_s: float = Field(30, gt=0, le=600)

    _names = field_validator("bootstrap_servers_env", "username_env", "password_env")(_env_name)

    @model_validator(mode="after")
    def _check(self) -> KafkaBlock:
        if (self.bootstrap_servers is None) == (self.bootstrap_servers_env is None):
            raise ValueError("give the brokers as bootstrap_servers: or bootstrap_servers_env:, one of them")
        if self.security_protocol.startswith("SASL") and not (self.username_env and self.password_env
                                                              and self.sasl_mechanism):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                             "username_env and password_env")
        return self


class EmailBlock(Strict):
    """E-mail over SMTP. `subject`, `html` and `text` are Jinja2 templates over the member's
    variables plus `unsubscribe_url`; `html`/`text` may instead name a file (`html_file`,
    `text_file`) relative to destinations/."""

    smtp_host: str | None = None
    smtp_host_env: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username_env: str | None = None
    password_env: str | None = None
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    from_name: str = ""
    reply_to: str | None = None
    subject: str
    html: str | None = None
    html_file: str | None = None
    text: str | None = None
    text_file: str | None = None
    unsubscribe_url: str = Field(pattern=r"^https?://")
    """Where the unsubscribe link goes; `{token}` in it is replaced by the member's token."""
    unsubscribe_secret_env: str
    """Signs the unsubscribe tokens, so that nobody can unsubscribe someone else."""
    unsubscribe_mailto: str | None = None
    timeout_s: float = Field(30, gt=0, le=600)

    _names = field_validator("smtp_host_env", "username_env", "password_env",
                             "unsubscribe_secret_env")(_env_name)

    @model_validator(mode="after")
    def _check(self) -> EmailBlock:
        if (self.smtp_host is None) == (self.smtp_host_env is None):
            raise ValueError("give the server as smtp_host: or smtp_host_env:, one of them")
        if not (self.html or self.html_file or self.text or self.text_file):
            raise ValueError("give a body: html:, html_file:, text: or text_file:")
        if self.html and self.html_file or self.text and self.text_file:
            raise ValueError("give each body once: html: or html_file:, text: or text_file:")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("SMTP login needs both username_env and password_env")
        if "{token}" not in self.unsubscribe_url:
            raise ValueError("unsubscribe_url must contain {token}, the member's unsubscribe token")
        return self


class PhoneFiles(Strict):
    folder: str = "sms_files"
    """Where the phone files are written: relative to OA_HOME, or absolute inside OA_HOME or
    OA_EXPORT_ROOTS."""
    base_url: str | None = None
    base_url_env: str | None = None
    """Where the platform fetches them (a bucket or an HTTP server over `folder`)."""

    _names = field_validator("base_url_env")(_env_name)
    _folder = field_validator("folder")(_output_folder)

    @model_validator(mode="after")
    def _check(self) -> PhoneFiles:
        if (self.base_url is None) == (self.base_url_env is None):
            raise ValueError("give the files' address as base_url: or base_url_env:, one of them")
        return self


class SmsBlock(Strict):
    """The third-party SMS platform contract: sendBatch with a phone file, sendDetails reports."""

    base_url: str | None = None
    base_url_env: str | None = None
    platform_name: str
    token_env: str | None = None
    sign_name: str = Field(min_length=1)
    template_code: str = Field(min_length=1)
    template_params: dict[str, str] = Field(default_factory=dict)
    success_code: str = "OK"
    phone_files: PhoneFiles
    timeout_s: float = Field(30, gt=0, le=600)

    _names = field_validator("base_url_env", "token_env")(_env_name)

    @model_validator(mode="after")
    def _check(self) -> SmsBlock:
        if (self.base_url is None) == (self.base_url_env is None):
            raise ValueError("give the platform as base_url: or base_url_env:, one of them")
        if self.base_url is not None and not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https://")
        return self


class AdBlock(Strict):
    base_url: str | None = None
    """The platform's API root (with its version); the default is the platform's own."""
    timeout_s: float = Field(60, gt=0, le=600)

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://", value):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return value


class TencentAdsBlock(AdBlock):
    """A customer-file audience of the Tencent Ads Marketing API (custom_audience_files/add)."""

    account_id: int = Field(ge=1)
    audience_id: int = Field(ge=1)
    """The CUSTOMER_FILE audience to keep (create it in the platform, or custom_audiences/add)."""
    access_token_env: str

    _names = field_validator("access_token_env")(_env_name)


class OceanEngineBlock(AdBlock):
    """An Ocean Engine DMP data source (dmp/data_source/update), published after each run."""

    advertiser_id: int = Field(ge=1)
    data_source_id: str = Field(pattern=r"^\d+$")
    custom_audience_id: int | None = Field(None, ge=1)
    """The data source's audience: published after a run that changed it (one publish a day)."""
    access_token_env: str

    _names = field_validator("access_token_env")(_env_name)


class BaiduAdsBlock(AdBlock):
    """A Baidu feed crowd (CrowdFeedService.addCrowdFeed): each run uploads the whole audience as
    a new crowd named `crowd_name`, in which ``{version}`` and ``{date}`` (YYYYMMDD) are the
    audience version and the day of the run (a run of more than one batch adds " #2", ...)."""

    user_name: str = Field(min_length=1)
    access_token_env: str
    crowd_name: str = Field(min_length=1, max_length=40)

    _names = field_validator("access_token_env")(_env_name)

    @field_validator("crowd_name")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        unknown = set(re.findall(r"\{([^}]*)\}", value)) - {"version", "date"}
        if unknown:
            raise ValueError(f"crowd_name may use {{version}} and {{date}}, not "
                             f"{', '.join('{' + u + '}' for u in sorted(unknown))}")
        return value


class MetaAdsBlock(AdBlock):
    """A Meta customer-file custom audience (POST/DELETE /{audience_id}/users)."""

    audience_id: str = Field(pattern=r"^\d+$")
    access_token_env: str
    app_secret_env: str | None = None
    """Signs each call with appsecret_proof when the app requires it."""
    phone_region: str = Field("CN", pattern=r"^[A-Z]{2}$")
    """Phones without a country code are read as numbers of this country (ISO 3166 alpha-2)."""

    _names = field_validator("access_token_env", "app_secret_env")(_env_name)


class GoogleConsent(Strict):
    ad_user_data: Literal["GRANTED", "DENIED", "UNSPECIFIED"] = "GRANTED"
    ad_personalization: Literal["GRANTED", "DENIED", "UNSPECIFIED"] = "GRANTED"


class GoogleAdsBlock(AdBlock):
    """A Google Ads Customer Match user list, through offline user data jobs."""

    customer_id: str = Field(pattern=r"^\d{10}$")
    user_list_id: str = Field(pattern=r"^\d+$")
    login_customer_id: str | None = Field(None, pattern=r"^\d{10}$")
    """The manager account, when access goes through one (10 digits, no dashes)."""
    developer_token_env: str
    client_id_env: str
    client_secret_env: str
    refresh_token_env: str
    token_url: str = Field("https://oauth2.googleapis.com/token", pattern=r"^https?://")
    consent: GoogleConsent = GoogleConsent()
    phone_region: str = Field("CN", pattern=r"^[A-Z]{2}$")

    _names = field_validator("developer_token_env", "client_id_env", "client_secret_env",
                             "refresh_token_env")(_env_name)


class Retries(Strict):
    max_attempts: int = Field(6, ge=1, le=20)
    initial_backoff_s: float = Field(0.5, gt=0, le=60)
    max_backoff_s: float = Field(30, gt=0, le=600)


class Destination(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    owner: str = ""
    audience: str
    channel: Literal["webhook", "file", "kafka", "email", "sms", "tencent_ads", "ocean_engine",
                     "baidu_ads", "meta_ads", "google_ads"]
    id_type: str | None = None
    id_form: Literal["raw", "md5", "sha256", "aes"] = "raw"
    aes_key_env: str | None = None
    """With id_form: aes, the variable holding the organisation's 16-character key."""
    mode: Literal["diff", "full"] = "diff"
    schedule: Literal["on_change", "manual", "hourly", "daily", "weekly", "monthly", "journey"] = "on_change"
    """When the audience is delivered; `journey`: never on its own, only by the journeys that send
    through it (its audience is then what its variables and id type are checked against)."""
    batch_size: int = Field(100, ge=1, le=1_000_000)
    rate_limit: float = Field(0, ge=0)
    concurrency: int = Field(4, ge=1, le=32)
    retries: Retries = Retries()
    breaker_failures: int = Field(5, ge=1, le=1000)
    """Consecutive batches failing after every retry that stop the run (the rest stays pending)."""
    allow_private_network: bool = False
    """Let the channel's endpoints be link-local or cloud-metadata addresses (169.254.0.0/16,
    fe80::/10, metadata.google.internal, ...), which are refused otherwise: as written in the file
    or the variable, and as a host name resolves when an HTTP channel connects."""
    variables: dict[str, Variable] = Field(default_factory=dict)
    """Per-member values from user_tags: ${name} in webhook params, {{ name }} in e-mail templates."""
    webhook: WebhookBlock | None = None
    file: FileBlock | None = None
    kafka: KafkaBlock | None = None
    email: EmailBlock | None = None
    sms: SmsBlock | None = None
    tencent_ads: TencentAdsBlock | None = None
    ocean_engine: OceanEngineBlock | None = None
    baidu_ads: BaiduAdsBlock | None = None
    meta_ads: MetaAdsBlock | None = None
    google_ads: GoogleAdsBlock | None = None

    @model_validator(mode="before")
    @classmethod
    def _channel_defaults(cls, data):
        if isinstance(data, dict) and data.get("channel") in CHANNEL_DEFAULTS:
            defaults = CHANNEL_DEFAULTS[data["channel"]]
            data = {**{k: v for k, v in defaults.items() if k != "retries"}, **data}
            if "retries" in defaults and isinstance(data.get("retries", {}), dict):
                data["retries"] = {**defaults["retries"], **data.get("retries", {})}
        return data

    _aes_name = field_validator("aes_key_env")(_env_name)

    @model_validator(mode="after")
    def _aes(self) -> Destination:
        if (self.id_form == "aes") != (self.aes_key_env is not None):
            raise ValueError("id_form: aes needs aes_key_env (the variable holding the 16-character "
                             "key), and aes_key_env is used only with id_form: aes")
        return self

    @property
    def block(self):
        """The channel's block (file: the defaults when the file has none)."""
        return self.file_block if self.channel == "file" else getattr(self, self.channel)

    @property
    def file_block(self) -> FileBlock:
        return self.file or FileBlock()


class FrequencyCap(Strict):
    """At most `max` messages per person on `channel` (or "*": all channels) in `days` days,
    counted over every destination."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    channel: str
    max: int = Field(ge=1)
    days: int = Field(ge=1, le=365)


class Policies(Strict):
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
