"""Audience files as typed models. The YAML shape:

    name: big_spenders_shanghai
    description: ...
    owner: crm-team
    id_type: mobile
    refresh: daily
    snapshots: 7
    where:
      all:
        - tag: {name: city, in: [Shanghai]}
        - tag: {name: spend_90d, ">=": 1000}
        - not: {behavior: {did: purchase, last_days: 30}}

Every condition compiles to a boolean that is never NULL: a leaf on a missing value is false,
so `not:` of it is true; negative operators (not_in, not_equals, ...) are the `not:` of their
positive twin; a person with no behaviour rows has count 0 and amount 0.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_TYPES = ("one_id", "member_id", "mobile", "email", "openid", "unionid", "imei", "idfa",
            "oaid")
MAX_VALUES = 200

TEXT_OPS = ("equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with",
            "not_starts_with", "not_ends_with")
COMPARE_OPS = ("=", "!=", ">", ">=", "<", "<=")
OPS_BY_TYPE = {
    "enum": ("in", "not_in", "is_null", "is_not_null"),
    "text": (*TEXT_OPS, "is_null", "is_not_null"),
    "multi_value": ("contains_all", "contains_any", "is_null", "is_not_null"),
    "numeric": (*COMPARE_OPS, "between", "is_null", "is_not_null"),
    "date": ("between", "last_days", "this_week", "this_month", "before_days_ago", "is_null",
             "is_not_null"),
}
ALL_TAG_OPS = tuple(dict.fromkeys(op for ops in OPS_BY_TYPE.values() for op in ops))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _tag_schema(schema: dict[str, Any]) -> None:
    """The YAML shape, {name, <operator>: value}, rather than the parsed fields."""
    schema.clear()
    schema.update({
        "type": "object",
        "description": "One tag, one operator and its value, e.g. {name: city, in: [Shanghai]}. "
                       "Operators by tag type: " + "; ".join(
                           f"{t}: {', '.join(ops)}" for t, ops in OPS_BY_TYPE.items()),
        "required": ["name"],
        "properties": {"name": {"type": "string"}, **{op: {} for op in ALL_TAG_OPS}},
        "additionalProperties": False,
        "minProperties": 2,
        "maxProperties": 2,
    })


def _threshold_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({
        "type": "object",
        "description": 'One comparison, e.g. {">=": 2}.',
        "propertyNames": {"enum": list(COMPARE_OPS)},
        "additionalProperties": {"type": "number"},
        "minProperties": 1,
        "maxProperties": 1,
    })


class TagLeaf(Strict):
    """`{name: city, in: [Shanghai]}`: one tag, one operator and its value."""

    model_config = ConfigDict(json_schema_extra=_tag_schema)

    name: str
    op: str
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a tag condition is a mapping such as {name: city, in: [Shanghai]}")
        data = dict(data)
        if "name" not in data:
            raise ValueError("a tag condition needs name")
        ops = [k for k in data if k != "name"]
        if len(ops) != 1:
            raise ValueError(f"a tag condition has exactly one operator besides name, got {ops or 'none'}")
        op = ops[0]
        if op not in ALL_TAG_OPS:
            raise ValueError(f"unknown operator {op!r} (one of {', '.join(ALL_TAG_OPS)})")
        return {"name": data["name"], "op": op, "value": data[op]}

    def values(self) -> list[Any]:
        return list(self.value) if isinstance(self.value, list | tuple) else [self.value]


class Threshold(Strict):
    model_config = ConfigDict(json_schema_extra=_threshold_schema)

    op: Literal["=", "!=", ">", ">=", "<", "<="]
    value: float

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1 and "op" not in data:
            (op, value), = data.items()
            return {"op": op, "value": value}
        return data


class Window(Strict):
    """Relative (last_days) or absolute (between two dates), both inclusive of their end."""

    last_days: int | None = Field(default=None, ge=1, le=3660)
    between: tuple[dt.date, dt.date] | None = None

    @model_validator(mode="after")
    def _one(self) -> Window:
        if (self.last_days is None) == (self.between is None):
            raise ValueError("give the window as last_days or as between: [start, end]")
        if self.between and self.between[0] > self.between[1]:
            raise ValueError("between: the start date is after the end date")
        return self


class BehaviorLeaf(Strict):
    """`{did: purchase, channels: [app], last_days: 30, count: {">=": 2}}`; `did_not` negates."""

    did: str | None = None
    did_not: str | None = None
    channels: list[str] | None = None
    object_attribute: str | None = None
    object_values: list[str] | None = Field(default=None, max_length=MAX_VALUES)
    last_days: int | None = Field(default=None, ge=1, le=3660)
    between: tuple[dt.date, dt.date] | None = None
    count: Threshold | None = None
    amount: Threshold | None = None

    @model_validator(mode="after")
    def _check(self) -> BehaviorLeaf:
        if (self.did is None) == (self.did_not is None):
            raise ValueError("a behaviour condition names its type with did: or did_not:")
        Window(last_days=self.last_days, between=self.between)
        return self

    @property
    def event_type(self) -> str:
        return self.did or self.did_not or ""


class RfmLeaf(Strict):
    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    segments: list[str] | None = None
    min_scores: dict[Literal["r", "f", "m"], int] | None = None

    @model_validator(mode="after")
    def _one(self) -> RfmLeaf:
        if (self.segments is None) == (self.min_scores is None):
            raise ValueError("an rfm condition takes segments: [...] or min_scores: {r: .., f: .., m: ..}")
        return self


class AiplLeaf(Strict):
    model: str
    stages: list[Literal["A", "I", "P", "L"]]


class Condition(Strict):
    """Exactly one of: all, any, not, tag, behavior, rfm, aipl."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Annotated[Condition | None, Field(alias="not")] = None
    tag: TagLeaf | None = None
    behavior: BehaviorLeaf | None = None
    rfm: RfmLeaf | None = None
    aipl: AiplLeaf | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k in ("all", "any", "not_", "tag", "behavior", "rfm", "aipl")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            names = [g.rstrip("_") for g in given]
            raise ValueError("each condition is exactly one of all, any, not, tag, behavior, rfm, "
                             f"aipl; got {', '.join(names) or 'none'}")
        for key in ("all", "any"):
            if getattr(self, key) == []:
                raise ValueError(f"{key}: needs at least one condition")
        return self

    @property
    def kind(self) -> str:
        for k in ("all", "any", "not_", "tag", "behavior", "rfm", "aipl"):
            if getattr(self, k) is not None:
                return k.rstrip("_")
        raise AssertionError("validated condition without a kind")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an audience file (docs/audience.schema.json)."""
    schema = Audience.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "OpenAudience audience file"
    return schema


class Audience(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    owner: str = ""
    id_type: str = "one_id"
    refresh: str = "manual"
    snapshots: int = Field(default=5, ge=1, le=100)
    where: Condition

    @field_validator("id_type")
    @classmethod
    def _id_type(cls, value: str) -> str:
        if value not in ID_TYPES:
            raise ValueError(f"id_type {value!r} is not one of {', '.join(ID_TYPES)}")
        return value

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: str) -> str:
        if value in ("manual", "hourly", "daily") or len(value.split()) == 5:
            return value
        raise ValueError("refresh is manual, hourly, daily or a five-field cron expression")
