"""Event definitions as typed models (spec D §7.2). One file in events/ is one channel (a source
that reports events) and the events it reports:

    channel:
      name: shop_app              # shown in reports
      app_key: shop-app-001       # the channel's app_key: eventSourceCode in the reporting model
      app_type: app               # app, mini_program, web or third_party
      key_env: OA_EVENTS_KEY_SHOP_APP   # the variable holding the channel's signing key
      customer_id_type: member_id # what a customerId of this channel is (an id type)
    attributes:                   # global attributes: allowed on every event of the channel
      - {id: login_user_id, name: Login user, type: text}
    events:
      - code: app_purchase        # the event code: unique over every channel
        name: Bought in the app
        attributes:               # event attributes: extendAttributes keys of this event
          - {id: item_id, name: Product ID, type: text}
          - {id: amount, name: Amount, type: numeric}

The management rules (§7.2) hold between the files and what a collector already accepted (the
registry in the warehouse): a name may change, attributes may be added, nothing else may; an
event that a journey triggers on cannot be removed (openaudience/events/source.py checks both).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

APP_TYPES = ("app", "mini_program", "web", "third_party")
ATTRIBUTE_TYPES = ("text", "numeric")
CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""An event code or app_key: it travels in every message and names files and journeys."""
ATTRIBUTE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
NAME_CHARS = 128


def _code(value: str, what: str) -> str:
    if not CODE.fullmatch(value):
        raise ValueError(f"{what} {value!r} must start with a letter and hold only letters, digits, "
                         "'_', '.' and '-' (at most 64)")
    return value


class Attribute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str = Field(min_length=1, max_length=NAME_CHARS)
    type: Literal["text", "numeric"] = "text"

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ATTRIBUTE_ID.fullmatch(value):
            raise ValueError(f"attribute id {value!r} must start with a letter and hold only letters, "
                             "digits and '_' (at most 64)")
        return value


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    name: str = Field(min_length=1, max_length=NAME_CHARS)
    attributes: list[Attribute] = Field(default_factory=list, max_length=100)

    @field_validator("code")
    @classmethod
    def _valid(cls, value: str) -> str:
        return _code(value, "event code")


class Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=NAME_CHARS)
    app_key: str
    app_type: Literal["app", "mini_program", "web", "third_party"]
    key_env: str
    customer_id_type: str = "member_id"

    @field_validator("app_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _code(value, "app_key")

    @field_validator("key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"key_env names an environment variable (A-Z, 0-9, _), not {value!r}; "
                             "the key itself never goes into a file")
        return value


class EventsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Channel
    attributes: list[Attribute] = Field(default_factory=list, max_length=100)
    events: list[Event] = Field(min_length=1, max_length=1000)
