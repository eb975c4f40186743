"""From a destination file to a connector: the channel's class, its settings, and its secrets
read from the environment variables the file names."""

from __future__ import annotations

import os
from pathlib import Path

from connectors.base import Capabilities, Connector
from connectors.files import FileConnector, FileSettings
from connectors.webhook import WebhookConnector, WebhookSettings
from orchestration.delivery.spec import Destination
from orchestration.errors import ConfigError

CONNECTORS: dict[str, type[Connector]] = {"webhook": WebhookConnector, "file": FileConnector}
CHANNEL_NAMES = tuple(CONNECTORS)


def capabilities(channel: str) -> Capabilities:
    return CONNECTORS[channel].capabilities


def _env(name: str, destination: str, environ) -> str:
    value = environ.get(name, "")
    if not value:
        raise ConfigError(f"destination {destination}: the environment variable {name} is not set "
                          f"(export {name}=... before delivering)")
    return value


def connector_for(d: Destination, run_id: str, home: Path, environ=None) -> Connector:
    environ = os.environ if environ is None else environ
    if d.channel == "webhook":
        w = d.webhook
        assert w is not None
        url = w.url or _env(w.url_env, d.name, environ)
        secret = _env(w.secret_env, d.name, environ) if w.secret_env else ""
        return WebhookConnector(WebhookSettings(url=url, secret=secret, params=dict(w.params),
                                                timeout_s=w.timeout_s, batch_size=d.batch_size,
                                                concurrency=d.concurrency, webhook_id=d.name),
                                task_id=run_id)
    if d.channel == "file":
        block = d.file_block
        folder = Path(block.folder)
        folder = (folder if folder.is_absolute() else home / folder) / d.name
        return FileConnector(FileSettings(folder=folder, format=block.format, id_form=d.id_form), run_id)
    raise ConfigError(f"destination {d.name}: no connector for channel {d.channel!r}")
