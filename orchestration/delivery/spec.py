"""Destination files as typed models. One file in destinations/ sends one audience to one
channel:

    name: crm_coupon_webhook
    description: Shanghai big spenders get the summer coupon in the CRM.
    owner: crm
    audience: shanghai_big_spenders
    channel: webhook
    id_type: mobile           # default: the audience's id type
    id_form: raw              # raw, md5 or sha256
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

CHANNELS = ("webhook", "file", "kafka", "email", "sms")
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


class Retries(Strict):
    max_attempts: int = Field(6, ge=1, le=20)
    initial_backoff_s: float = Field(0.5, gt=0, le=60)
    max_backoff_s: float = Field(30, gt=0, le=600)


class Destination(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    owner: str = ""
    audience: str
    channel: Literal["webhook", "file", "kafka", "email", "sms"]
    id_type: str | None = None
    id_form: Literal["raw", "md5", "sha256"] = "raw"
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
