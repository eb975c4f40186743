"""From a destination file to a connector: the channel's class, its settings, and its secrets
read from the environment variables the file names."""

from __future__ import annotations

import os
from pathlib import Path

from connectors.ads import baidu, google, meta, oceanengine, tencent
from connectors.ads.common import AdSettings
from connectors.base import Capabilities, Connector
from connectors.files import FileConnector, FileSettings
from connectors.http import pooled_session
from connectors.identifiers import IdError, check_aes_key, encrypt_aes
from connectors.kafka import KafkaConnector, KafkaSettings
from connectors.sms import SmsConnector, SmsSettings
from connectors.smtp import SmtpConnector, SmtpSettings
from connectors.webhook import WebhookConnector, WebhookSettings
from openaudience.core.errors import ConfigError
from openaudience.delivery.spec import Destination, EmailBlock, folder_outside

CONNECTORS: dict[str, type[Connector]] = {
    "webhook": WebhookConnector, "file": FileConnector, "kafka": KafkaConnector,
    "email": SmtpConnector, "sms": SmsConnector, "tencent_ads": tencent.TencentAdsConnector,
    "ocean_engine": oceanengine.OceanEngineConnector, "baidu_ads": baidu.BaiduAdsConnector,
    "meta_ads": meta.MetaAdsConnector, "google_ads": google.GoogleAdsConnector}
BASE_URLS = {"tencent_ads": tencent.DEFAULT_BASE_URL, "ocean_engine": oceanengine.DEFAULT_BASE_URL,
             "baidu_ads": baidu.DEFAULT_BASE_URL, "meta_ads": meta.DEFAULT_BASE_URL,
             "google_ads": google.DEFAULT_BASE_URL}
CHANNEL_NAMES = tuple(CONNECTORS)


def capabilities(channel: str) -> Capabilities:
    return CONNECTORS[channel].capabilities


def id_preparer(d: Destination, environ=None):
    """`(id_type, value) -> the id as the destination's channel receives it`."""
    cls = CONNECTORS[d.channel]
    region = getattr(d.block, "phone_region", "CN")
    if d.id_form == "aes":
        key = _env(d.aes_key_env, d.name, os.environ if environ is None else environ)
        try:
            check_aes_key(key)
        except IdError as exc:
            raise ConfigError(f"destination {d.name}: {d.aes_key_env}: {exc}") from None

        def encrypt(id_type: str, value: str) -> str:
            return encrypt_aes(cls.prepare_id(id_type, value, "raw", region), key)

        return encrypt

    def prepare(id_type: str, value: str) -> str:
        return cls.prepare_id(id_type, value, d.id_form, region)

    return prepare


def _ad_settings(d: Destination, run: dict, environ) -> AdSettings:
    """The platform settings of an ad-platform destination, its secrets read from the environment."""
    b = d.block
    secret_fields = {"access_token": "access_token_env", "app_secret": "app_secret_env",
                     "developer_token": "developer_token_env", "client_id": "client_id_env",
                     "client_secret": "client_secret_env", "refresh_token": "refresh_token_env"}
    secrets = {key: _env(getattr(b, field), d.name, environ)
               for key, field in secret_fields.items() if getattr(b, field, None)}
    account = {"tencent_ads": "account_id", "ocean_engine": "advertiser_id", "baidu_ads": "user_name",
               "meta_ads": "audience_id", "google_ads": "customer_id"}[d.channel]
    audience = {"tencent_ads": "audience_id", "ocean_engine": "data_source_id", "baidu_ads": "crowd_name",
                "meta_ads": "audience_id", "google_ads": "user_list_id"}[d.channel]
    options = {"id_form": d.id_form, "audience_version": int(run["audience_version"]),
               "run_id": run["run_id"]}
    for name in ("custom_audience_id", "crowd_name", "user_name", "login_customer_id", "token_url"):
        if getattr(b, name, None) is not None:
            options[name] = getattr(b, name)
    if d.channel == "google_ads":
        options["consent"] = b.consent.model_dump()
    return AdSettings(destination=d.name, base_url=b.base_url or BASE_URLS[d.channel],
                      account_id=str(getattr(b, account)), audience_id=str(getattr(b, audience)),
                      secrets=secrets, options=options, timeout_s=b.timeout_s,
                      concurrency=d.concurrency, allow_private_network=d.allow_private_network)


def _env(name: str, destination: str, environ) -> str:
    value = environ.get(name, "")
    if not value:
        raise ConfigError(f"destination {destination}: the environment variable {name} is not set "
                          f"(export {name}=... before delivering)")
    return value


def email_templates(block: EmailBlock, folder: Path) -> tuple[str | None, str | None]:
    """The html and text bodies, read from their files where the block names files."""
    def read(inline: str | None, file: str | None) -> str | None:
        if file is None:
            return inline
        path = folder / file
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the e-mail template ({exc.strerror})") from None

    return read(block.html, block.html_file), read(block.text, block.text_file)


def connector_for(d: Destination, run: dict, home: Path, folder: Path, environ=None) -> Connector:
    """The connector for one run (`run`: its run_id, audience and audience_version)."""
    environ = os.environ if environ is None else environ
    if d.channel == "webhook":
        w = d.webhook
        url = w.url or _env(w.url_env, d.name, environ)
        secret = _env(w.secret_env, d.name, environ) if w.secret_env else ""
        return WebhookConnector(WebhookSettings(url=url, secret=secret, params=dict(w.params),
                                                timeout_s=w.timeout_s, batch_size=d.batch_size,
                                                concurrency=d.concurrency, webhook_id=d.name,
                                                allow_private_network=d.allow_private_network),
                                task_id=run["run_id"])
    if d.channel == "file":
        block = d.file_block
        target = output_folder(d, block.folder, home, environ)
        return FileConnector(FileSettings(folder=target, format=block.format, id_form=d.id_form,
                                          spreadsheet_safe=block.spreadsheet_safe), run["run_id"])
    if d.channel == "kafka":
        k = d.kafka
        client: dict[str, str] = {"security.protocol": k.security_protocol}
        if k.sasl_mechanism:
            client.update({"sasl.mechanism": k.sasl_mechanism,
                           "sasl.username": _env(k.username_env, d.name, environ),
                           "sasl.password": _env(k.password_env, d.name, environ)})
        return KafkaConnector(KafkaSettings(
            bootstrap_servers=k.bootstrap_servers or _env(k.bootstrap_servers_env, d.name, environ),
            topic=k.topic, audience=run["audience"], version=int(run["audience_version"]),
            destination=d.name, timeout_s=k.timeout_s, client=client))
    if d.channel == "email":
        e = d.email
        html, text = email_templates(e, folder)
        return SmtpConnector(SmtpSettings(
            host=e.smtp_host or _env(e.smtp_host_env, d.name, environ), port=e.smtp_port,
            from_address=e.from_address, from_name=e.from_name, reply_to=e.reply_to,
            subject=e.subject, html=html, text=text, destination=d.name,
            unsubscribe_url=e.unsubscribe_url, unsubscribe_mailto=e.unsubscribe_mailto,
            unsubscribe_secret=_env(e.unsubscribe_secret_env, d.name, environ),
            starttls=e.starttls, timeout_s=e.timeout_s,
            username=_env(e.username_env, d.name, environ) if e.username_env else None,
            password=_env(e.password_env, d.name, environ) if e.password_env else None))
    if d.channel == "sms":
        sms = SmsConnector(sms_settings(d, home, environ), run["run_id"])
        sms.session.close()  # a guarded session, private networks as the destination allows
        sms.session = pooled_session(1, d.allow_private_network)
        return sms
    if d.channel in BASE_URLS:
        return CONNECTORS[d.channel](_ad_settings(d, run, environ))
    raise ConfigError(f"destination {d.name}: no connector for channel {d.channel!r}")


def output_folder(d: Destination, folder: str, home: Path, environ=None) -> Path:
    """`folder/<destination>` (folder relative to OA_HOME, or absolute), symbolic links resolved;
    ConfigError unless it lies inside OA_HOME or a folder OA_EXPORT_ROOTS names. The destination
    file was checked when loaded; this checks again where a link may since lead elsewhere."""
    environ = os.environ if environ is None else environ
    base = Path(folder)
    target = (base if base.is_absolute() else home / base) / d.name
    problem = folder_outside(target, home.resolve(), environ)
    if problem:
        raise ConfigError(f"destination {d.name}: {problem}")
    return target.resolve()


def sms_settings(d: Destination, home: Path, environ=None) -> SmsSettings:
    environ = os.environ if environ is None else environ
    m, files = d.sms, d.sms.phone_files
    return SmsSettings(
        base_url=m.base_url or _env(m.base_url_env, d.name, environ), platform_name=m.platform_name,
        sign_name=m.sign_name, template_code=m.template_code, template_params=dict(m.template_params),
        phone_folder=output_folder(d, files.folder, home, environ),
        phone_base_url=(files.base_url or _env(files.base_url_env, d.name, environ)).rstrip("/")
        + f"/{d.name}",
        destination=d.name, success_code=m.success_code, timeout_s=m.timeout_s,
        token=_env(m.token_env, d.name, environ) if m.token_env else "")
