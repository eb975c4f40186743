"""The one interface every channel connector implements.

A connector says what it accepts (`Capabilities`), checks a planned delivery before anything is
sent (`check`), and delivers one batch of member changes (`deliver`), answering per member. It
raises `TransientError` for what may succeed when tried again (a 500, a timeout, a reset, a 429)
and returns a failed `Outcome` for what never will (a 400, an id the channel refuses). The sync
engine (openaudience/delivery) owns retries, rate limits, the log and idempotency.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

IdForm = Literal["raw", "md5", "sha256", "aes"]
ID_FORMS: tuple[str, ...] = ("raw", "md5", "sha256", "aes")
Op = Literal["add", "remove"]


@dataclass(frozen=True)
class Capabilities:
    """What a channel accepts. `id_forms` maps each id type it takes to the forms it takes it in."""

    channel: str
    id_forms: dict[str, tuple[str, ...]]
    supports_removals: bool = False
    per_recipient_receipts: bool = False
    is_message: bool = True          # sends each member something (caps apply), vs. a list sync
    min_audience: int | None = None
    max_audience: int | None = None
    max_batch_size: int = 10_000
    one_batch: bool = False          # takes an audience in one upload (a batch is a whole list)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is slow on the hot path
class Member:
    """One change to deliver: `id_value` is already normalised and in the destination's form."""

    key: str                         # idempotency key: 32 hex, stable across retries and reruns
    one_id: str
    id_type: str
    id_value: str
    op: Op = "add"
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    key: str
    ok: bool
    code: str = ""
    message: str = ""
    external_id: str = ""


class ConnectorConfigError(Exception):
    """The destination's configuration or credentials are wrong: no retry will help. The
    delivery engine stops the run (the rest stays pending) and the CLI prints the message."""


class TransientError(Exception):
    """The batch may succeed if sent again; `retry_after` seconds if the peer said so.
    `partial` holds the outcomes of members already settled (sent, or refused for good): the
    retry sends only the others."""

    def __init__(self, message: str, retry_after: float | None = None,
                 partial: list[Outcome] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.partial = partial or []


def check_delivery(caps: Capabilities, id_type: str, id_form: str, size: int,
                   batch_size: int | None = None) -> list[str]:
    """Problems with delivering `size` members' `id_type` in `id_form` in batches of
    `batch_size`; empty when fine."""
    problems = []
    forms = caps.id_forms.get(id_type)
    if forms is None:
        problems.append(f"{caps.channel} does not take {id_type} ids; it takes "
                        f"{', '.join(sorted(caps.id_forms))}")
    elif id_form not in forms:
        problems.append(f"{caps.channel} takes {id_type} as {' or '.join(forms)}, not {id_form}")
    if caps.min_audience is not None and size < caps.min_audience:
        problems.append(f"{caps.channel} needs at least {caps.min_audience:,} members; "
                        f"this delivery has {size:,}")
    if caps.max_audience is not None and size > caps.max_audience:
        problems.append(f"{caps.channel} takes at most {caps.max_audience:,} members; "
                        f"this delivery has {size:,}")
    if caps.one_batch and batch_size is not None and size > batch_size:
        problems.append(f"{caps.channel} takes an audience in one upload, and {size:,} members "
                        f"is more than batch_size {batch_size:,}")
    return problems


class Connector(ABC):
    capabilities: Capabilities
    notes: list[str]
    """What a run should tell its user though it succeeded (e.g. a platform refused a publish)."""

    @classmethod
    def prepare_id(cls, id_type: str, value: str, form: str, region: str = "CN") -> str:
        """The id as this channel receives it: normalised, then hashed into `form`. A channel
        whose platform normalises differently (phones in E.164, say) overrides it; `region` is
        the country of phones written without a country code."""
        from connectors.identifiers import prepare

        return prepare(id_type, value, form)

    def open(self) -> None:  # noqa: B027 - an optional hook
        """Called once before the first batch of a run."""

    @abstractmethod
    def deliver(self, batch: list[Member], batch_no: int) -> list[Outcome]:
        """Send one batch; one Outcome per member, in any order. `batch_no` is fixed when the
        run is planned, so a batch resent after a crash has the same number."""

    def finish(self, summary: dict[str, int]) -> None:  # noqa: B027 - an optional hook
        """Called once after the last batch of a run that sent everything (e.g. a manifest)."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; called after every run, successful or not."""
