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

The conditions are those of the condition language (openaudience.conditions, docs/conditions.md):
`Condition` is its model for audiences, which allow every kind; the kinds only audiences use are
in leaves.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from connectors.identifiers import audience_id_types
from openaudience.conditions import (
    ALL_TAG_OPS,
    OPS_BY_TYPE,
    BehaviorLeaf,
    Strict,
    TagLeaf,
    Threshold,
    Window,
    condition_model,
)
from openaudience.conditions.leaves import MAX_BEHAVIOR_DAYS, MAX_DAYS, MAX_VALUES, OBJECT_ATTRIBUTES
from openaudience.conditions.operators import COMPARE_OPS, TEXT_OPS
from openaudience.segments.leaves import (
    AIPL_STAGES,
    NAME,
    AiplLeaf,
    AudienceLeaf,
    RecommendedLeaf,
    RfmLeaf,
    ScoreLeaf,
    Stage,
    TableLeaf,
    UploadLeaf,
)

__all__ = ["AIPL_STAGES", "ALL_TAG_OPS", "COMPARE_OPS", "MAX_BEHAVIOR_DAYS", "MAX_DAYS", "MAX_VALUES",
           "OBJECT_ATTRIBUTES", "OPS_BY_TYPE", "TEXT_OPS", "AiplLeaf", "Audience", "AudienceLeaf",
           "BehaviorLeaf", "Condition", "Limit", "Operand", "RecommendedLeaf", "RfmLeaf", "ScoreLeaf",
           "Stage", "TableLeaf", "TagLeaf", "Threshold", "UploadLeaf", "Window", "json_schema"]

ID_TYPES = audience_id_types()  # the registry's (seeds/id_types.csv) in_audiences


_NAME = NAME
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = ({}, {}, {}, {m: i + 1 for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split())},
    {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})


def _valid_cron(value: str) -> bool:
    """Five fields of *, numbers, names, ranges, lists and steps, each within its range."""
    fields = value.split()
    if len(fields) != 5:
        return False
    for text, (lo, hi), names in zip(fields, _CRON_RANGES, _CRON_NAMES, strict=True):
        for part in text.lower().split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) >= 1):
                return False
            if base == "*":
                continue
            ends = base.split("-")
            if len(ends) > 2:
                return False
            nums = [names.get(e, int(e) if e.isdigit() else None) for e in ends]
            if any(n is None or not lo <= n <= hi for n in nums) or nums != sorted(nums):
                return False
    return True


AUDIENCE_KINDS = ("tag", "behavior", "rfm", "aipl", "audience", "upload", "table", "score",
                  "recommended")
CONDITION_KINDS = ("all", "any", "not", *AUDIENCE_KINDS)
SET_OPS = ("union", "intersect", "difference")
MAX_SET_DEPTH = 3

Condition = condition_model(
    "Condition", "audiences", AUDIENCE_KINDS,
    "Exactly one of: all, any, not, tag, behavior, rfm, aipl, audience, upload, table, score,\n"
    "recommended.")


def _operand_schema(schema: dict[str, Any]) -> None:
    """An operand is written as a plain name too."""
    as_object = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "pattern": _NAME}, as_object]


class Operand(Strict):
    """One operand of a set operation: an audience name (`big_spenders`), a kept snapshot
    (`{audience: big_spenders, version: 3}`), or a nested operation (`{intersect: [a, b]}`)."""

    model_config = ConfigDict(json_schema_extra=_operand_schema)

    audience: str | None = Field(default=None, pattern=_NAME)
    version: int | None = Field(default=None, ge=1)
    union: list[Operand] | None = Field(default=None, min_length=2, max_length=10)
    intersect: list[Operand] | None = Field(default=None, min_length=2, max_length=10)
    difference: list[Operand] | None = Field(default=None, min_length=2, max_length=10)

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        return {"audience": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one(self) -> Operand:
        given = [k for k in ("audience", *SET_OPS) if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an operand is an audience name, {audience: name, version: n}, or one "
                             f"of {', '.join(SET_OPS)}; got {', '.join(given) or 'none'}")
        if self.version is not None and self.audience is None:
            raise ValueError("version belongs with audience:")
        return self

    @property
    def op(self) -> str | None:
        return next((k for k in SET_OPS if getattr(self, k) is not None), None)


class OrderBy(Strict):
    tag: str
    direction: Literal["asc", "desc"] = "desc"


class Sample(Strict):
    seed: int = 0


class Limit(Strict):
    """Keep `size` members: the first by a tag (`order_by: {tag: spend_90d}`, descending by
    default, NULLs last, ties by one_id) or a deterministic sample (`sample: {seed: 7}`: the
    same members for the same seed and population)."""

    size: int = Field(ge=1, le=100_000_000)
    order_by: OrderBy | None = None
    sample: Sample | None = None

    @model_validator(mode="after")
    def _one(self) -> Limit:
        if (self.order_by is None) == (self.sample is None):
            raise ValueError("limit takes order_by: {tag: .., direction: desc} or sample: {seed: ..}")
        return self


def _to_condition(operand: Operand) -> Condition:
    if operand.audience is not None:
        return Condition(audience=AudienceLeaf(name=operand.audience, version=operand.version))
    parts = [_to_condition(o) for o in getattr(operand, operand.op)]
    if operand.op == "union":
        return Condition(any=parts)
    if operand.op == "intersect":
        return Condition(all=parts)
    rest = parts[1:]
    return Condition(all=[parts[0], Condition(not_=rest[0] if len(rest) == 1 else Condition(any=rest))])


class Audience(Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    owner: str = ""
    id_type: str = "one_id"
    refresh: str = "manual"
    snapshots: int = Field(default=5, ge=1, le=100)
    where: Condition | None = None
    union: list[Operand] | None = Field(default=None, min_length=2, max_length=10)
    intersect: list[Operand] | None = Field(default=None, min_length=2, max_length=10)
    difference: list[Operand] | None = Field(default=None, min_length=2, max_length=10)
    limit: Limit | None = None

    @field_validator("id_type")
    @classmethod
    def _id_type(cls, value: str) -> str:
        if value not in ID_TYPES:
            raise ValueError(f"id_type {value!r} is not one of {', '.join(ID_TYPES)}")
        return value

    @field_validator("refresh")
    @classmethod
    def _refresh(cls, value: str) -> str:
        if value in ("manual", "hourly", "daily") or _valid_cron(value):
            return value
        raise ValueError(f"refresh {value!r} is not manual, hourly, daily or a five-field cron "
                         "expression (minute hour day-of-month month day-of-week)")

    @model_validator(mode="after")
    def _body(self) -> Audience:
        given = [k for k in ("where", *SET_OPS) if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an audience has where: (a condition) or one set operation "
                             f"({', '.join(SET_OPS)}); got {', '.join(given) or 'none'}")
        return self

    @property
    def set_op(self) -> str | None:
        return next((k for k in SET_OPS if getattr(self, k) is not None), None)

    def condition(self) -> Condition:
        """The membership condition: `where`, or the set operation written as one."""
        if self.where is not None:
            return self.where
        return _to_condition(Operand(**{self.set_op: getattr(self, self.set_op)}))

    def operands(self) -> list[Operand]:
        return getattr(self, self.set_op) if self.set_op else []


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an audience file (docs/audience.schema.json)."""
    schema = Audience.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "OpenAudience audience file"
    return schema
