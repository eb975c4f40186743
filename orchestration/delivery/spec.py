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

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
SCHEDULES = ("on_change", "manual", "hourly", "daily", "weekly", "monthly")
CRONS = {"hourly": "0 * * * *", "daily": "30 3 * * *", "weekly": "30 3 * * 1",
         "monthly": "30 3 1 * *"}
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_VAR = re.compile(r"\$\{([^}]*)\}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (e.g. OA_CRM_WEBHOOK_SECRET); "
                         "put credentials in the environment and name the variable here")
    return value


class Variable(Strict):
    """A `${name}` in a parameter, filled per member from a tag of user_tags."""

    tag: str
    if_missing: Literal["skip", "default"] = "skip"
    default: str | None = None

    @model_validator(mode="after")
    def _default(self) -> Variable:
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
        return self

    def uses(self) -> set[str]:
        """The variables its parameters name as ${name}."""
        return {name for value in self.params.values() if isinstance(value, str)
                for name in _VAR.findall(value)}


class FileBlock(Strict):
    folder: str = "exports"
    """Where run folders go: relative to OA_HOME, or absolute."""
    format: Literal["csv", "parquet"] = "csv"


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
    """Where the phone files are written: relative to OA_HOME, or absolute."""
    base_url: str | None = None
    base_url_env: str | None = None
    """Where the platform fetches them (a bucket or an HTTP server over `folder`)."""

    _names = field_validator("base_url_env")(_env_name)

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
    schedule: Literal["on_change", "manual", "hourly", "daily", "weekly", "monthly"] = "on_change"
    batch_size: int = Field(100, ge=1, le=1_000_000)
    rate_limit: float = Field(0, ge=0)
    concurrency: int = Field(4, ge=1, le=32)
    retries: Retries = Retries()
    breaker_failures: int = Field(5, ge=1, le=1000)
    """Consecutive batches failing after every retry that stop the run (the rest stays pending)."""
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
