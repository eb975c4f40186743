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

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.identifiers import audience_id_types
from openaudience.core.yaml_files import suggest

ID_TYPES = audience_id_types()  # the registry's (seeds/id_types.csv) in_audiences
MAX_VALUES = 200
MAX_DAYS = 36_500
"""A relative date window on a tag (last_days, before_days_ago) reaches back at most a hundred
years: beyond it the date arithmetic leaves the calendar, and no customer data is that old."""
MAX_BEHAVIOR_DAYS = 3660
"""A behaviour window's last_days: ten years of events is already a scan of the whole table."""

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
# the kinds of object a behaviour is about: the raw contract's (openaudience/core/schema/raw.py,
# not imported here to keep pyarrow out of compiling; a test keeps the two equal)
OBJECT_ATTRIBUTES = ("product", "category", "brand", "page")
AIPL_STAGES = ("A", "I", "P", "L")
_AIPL_NAMES = {"awareness": "A", "interest": "I", "purchase": "P", "loyalty": "L"}


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
    value: float = Field(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1 and "op" not in data:
            (op, value), = data.items()
            return {"op": op, "value": value}
        return data


class Window(Strict):
    """Relative (last_days) or absolute (between two dates), both inclusive of their end."""

    last_days: int | None = Field(default=None, ge=1, le=MAX_BEHAVIOR_DAYS)
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

    # (kept out of the docstring, which is the JSON Schema's description) `object_attribute:
    # category` keeps the rows about that kind of object; `object_values`, which needs it, the
    # rows about some of them.

    did: str | None = None
    did_not: str | None = None
    channels: list[str] | None = None
    object_attribute: str | None = None
    object_values: list[str] | None = Field(default=None, max_length=MAX_VALUES)
    last_days: int | None = Field(default=None, ge=1, le=MAX_BEHAVIOR_DAYS)
    between: tuple[dt.date, dt.date] | None = None
    count: Threshold | None = None
    amount: Threshold | None = None

    @field_validator("object_attribute")
    @classmethod
    def _object_attribute(cls, value: str | None) -> str | None:
        if value is not None and value not in OBJECT_ATTRIBUTES:
            raise ValueError(f"unknown object attribute {value!r}{suggest(value, OBJECT_ATTRIBUTES)}; "
                             f"one of {', '.join(OBJECT_ATTRIBUTES)}")
        return value

    @field_validator("object_values")
    @classmethod
    def _object_values(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # object_attribute is validated first; absent from info.data when it failed
        if value is not None and "object_attribute" in info.data and info.data["object_attribute"] is None:
            raise ValueError("object_values needs object_attribute (one of "
                             f"{', '.join(OBJECT_ATTRIBUTES)}): the kind of object the values name")
        return value

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
        if self.min_scores == {}:
            raise ValueError("min_scores needs at least one of r, f, m")
        return self


def _stage(value: Any) -> Any:
    """An AIPL stage letter, or a clear error (with the letter meant, for `p` or `purchase`)."""
    if isinstance(value, str) and value not in AIPL_STAGES:
        meant = value.upper() if value.upper() in AIPL_STAGES else _AIPL_NAMES.get(value.lower())
        hint = f" (did you mean {meant!r}?)" if meant else ""
        raise ValueError(f"unknown AIPL stage {value!r}{hint}; stages are {', '.join(AIPL_STAGES)}")
    return value


# the check runs before the Literal's, and leaves the JSON Schema an enum of the four letters
Stage = Annotated[Literal["A", "I", "P", "L"], BeforeValidator(_stage)]


class AiplLeaf(Strict):
    """`{model: default, stages: [P, L]}`: the stage on the refresh date; or a flow,
    `{model: default, from: [A], to: [P], last_days: 7}`: in a `from` stage at the start of the
    window and in a `to` stage at its end (the refresh date for last_days)."""

    model: str
    stages: list[Stage] | None = None
    from_: Annotated[list[Stage] | None, Field(alias="from")] = None
    to: list[Stage] | None = None
    last_days: int | None = Field(default=None, ge=1, le=366)
    between: tuple[dt.date, dt.date] | None = None

    @model_validator(mode="after")
    def _shape(self) -> AiplLeaf:
        flow = (self.from_, self.to, self.last_days, self.between)
        if self.stages is not None:
            if any(v is not None for v in flow):
                raise ValueError("an aipl condition takes stages: [...] or a flow (from, to and a "
                                 "window), not both")
            return self
        if self.from_ is None or self.to is None:
            raise ValueError("an aipl condition takes stages: [...], or from: [...] and to: [...] "
                             "with last_days or between")
        Window(last_days=self.last_days, between=self.between)
        return self


_NAME = r"^[a-z][a-z0-9_]{0,62}$"
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


class AudienceLeaf(Strict):
    """`{name: big_spenders}`: a member of another audience's latest built version, or of one of
    its kept snapshots with `version: 3`."""

    name: str = Field(pattern=_NAME)
    version: int | None = Field(default=None, ge=1)


class UploadLeaf(Strict):
    """`{file: uploads/vip.csv, id_type: mobile}`: people holding one of the ids in a CSV or TXT
    file (one id per line; a header line naming user_unique_id or the id type is skipped),
    found through the identity graph. The path is relative to the audience file."""

    file: str = Field(min_length=1)
    id_type: str


class TableLeaf(Strict):
    """`{name: reference.store_event_guests, id_type: member_id}`: people holding one of the ids
    in a warehouse table's single `user_unique_id` column (unique, never NULL)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,62}$")
    id_type: str = "one_id"

    @property
    def schema_table(self) -> tuple[str, str]:
        schema, table = self.name.split(".")
        return schema, table


class ScoreLeaf(Strict):
    """`{model: repurchase, min_probability: 0.6}`, `{model: repurchase, top: 5000}` or
    `{model: repurchase, top_percent: 10}`: people by their repurchase score (ml.repurchase_scores,
    written by the active model version): a probability at least this, the first `top` by rank,
    or the first `top_percent` % of everyone scored."""

    model: Literal["repurchase"] = "repurchase"
    min_probability: float | None = Field(default=None, ge=0, le=1)
    top: int | None = Field(default=None, ge=1)
    top_percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> ScoreLeaf:
        given = [k for k in ("min_probability", "top", "top_percent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a score condition takes one of min_probability, top or top_percent")
        return self


class RecommendedLeaf(Strict):
    """`{task: shanghai_beauty_picks, item: P000123}` or `{task: ..., pool: skincare_and_beauty}`:
    people whose recommendations from the task (ml/recommend.yml) include the product, or any
    product of the pool (ml/pools/), within their first `top` (default: all the task made);
    `{task: ..., min_score: 0.8}`: a preference of at least this (0-1; one-product tasks)."""

    task: str = Field(pattern=_NAME)
    item: str | None = Field(default=None, min_length=1)
    pool: str | None = Field(default=None, pattern=_NAME)
    min_score: float | None = Field(default=None, ge=0, le=1)
    top: int | None = Field(default=None, ge=1, le=10)

    @model_validator(mode="after")
    def _one(self) -> RecommendedLeaf:
        given = [k for k in ("item", "pool", "min_score") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a recommended condition takes one of item, pool or min_score")
        return self


CONDITION_KINDS = ("all", "any", "not_", "tag", "behavior", "rfm", "aipl", "audience", "upload",
                   "table", "score", "recommended")
SET_OPS = ("union", "intersect", "difference")
MAX_SET_DEPTH = 3


class Condition(Strict):
    """Exactly one of: all, any, not, tag, behavior, rfm, aipl, audience, upload, table, score,
    recommended."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    not_: Annotated[Condition | None, Field(alias="not")] = None
    tag: TagLeaf | None = None
    behavior: BehaviorLeaf | None = None
    rfm: RfmLeaf | None = None
    aipl: AiplLeaf | None = None
    audience: AudienceLeaf | None = None
    upload: UploadLeaf | None = None
    table: TableLeaf | None = None
    score: ScoreLeaf | None = None
    recommended: RecommendedLeaf | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [k for k in CONDITION_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            names = [g.rstrip("_") for g in given]
            raise ValueError("each condition is exactly one of "
                             f"{', '.join(k.rstrip('_') for k in CONDITION_KINDS)}; "
                             f"got {', '.join(names) or 'none'}")
        return self

    @field_validator("all", "any")
    @classmethod
    def _not_empty(cls, value: list[Condition] | None, info: ValidationInfo) -> list[Condition] | None:
        # an empty all: is true for everyone and an empty any: for no one: never what was meant
        if value == []:
            raise ValueError(f"{info.field_name}: needs at least one condition")
        return value

    def walk(self, path: tuple = ("where",)):
        """(path, condition) of this condition and every one below it, parents first; a path
        is the YAML location, e.g. ("where", "all", 0, "not")."""
        yield path, self
        kind = self.kind
        if kind in ("all", "any"):
            for i, child in enumerate(getattr(self, kind)):
                yield from child.walk((*path, kind, i))
        elif kind == "not":
            yield from self.not_.walk((*path, "not"))

    def leaves(self, kind: str) -> list:
        """Every leaf of one kind (tag, behavior, audience, upload, ...) in the tree."""
        return [getattr(c, kind) for _, c in self.walk() if c.kind == kind]

    @property
    def kind(self) -> str:
        for k in CONDITION_KINDS:
            if getattr(self, k) is not None:
                return k.rstrip("_")
        raise AssertionError("validated condition without a kind")


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
