"""The leaf registry, and the leaves every domain shares: tag and behavior.

A kind of condition is one class: a pydantic model of its YAML, with `kind` (the key it is
written under), `compile(ctx)` (a sqlglot boolean that is never NULL), `describe()` (the line
`explain` prints), `requirements(ctx)` (what the warehouse must hold first) and `check(loc,
env, report)` (the checks against what the project declares: tags, behaviour types, models).
Defining the class registers it; a domain (audiences, AIPL rules, pools) names the kinds it
allows."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from sqlglot import exp

from openaudience.conditions.context import Context, Requirement
from openaudience.conditions.operators import ALL_TAG_OPS, COMPARE_OPS, DAY_OPS, NO_VALUE_OPS, OPS_BY_TYPE
from openaudience.conditions.sql import COMPARE, and_, contains, lit, never_null, or_
from openaudience.core.yaml_files import as_date, suggest

MAX_VALUES = 200
MAX_DAYS = 36_500
"""A relative date window on a tag (last_days, before_days_ago) reaches back at most a hundred
years: beyond it the date arithmetic leaves the calendar, and no customer data is that old."""
MAX_BEHAVIOR_DAYS = 3660
"""A behaviour window's last_days: ten years of events is already a scan of the whole table."""
# the kinds of object a behaviour is about: the raw contract's (openaudience/core/schema/raw.py,
# not imported here to keep pyarrow out of compiling; a test keeps the two equal)
OBJECT_ATTRIBUTES = ("product", "category", "brand", "page")

LEAVES: dict[str, type[Leaf]] = {}
"""Every kind of leaf by the key it is written under, in the order defined."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Leaf(Strict):
    """A condition that is not a group. Subclasses set `kind` and are registered by it."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            if kind in LEAVES or kind in ("all", "any", "not"):
                raise TypeError(f"condition kind {kind!r} is defined twice")
            LEAVES[kind] = cls

    def compile(self, ctx: Context) -> exp.Expression:
        raise NotImplementedError(self.kind)

    def describe(self) -> str:
        raise NotImplementedError(self.kind)

    def requirements(self, ctx: Context) -> list[Requirement]:
        return []

    def check(self, loc: tuple, env: Any, report) -> None:
        """Reports (loc, message) for what the project does not declare; `loc` is the leaf's."""


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


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite number, not a boolean: infinity cannot be compared in SQL."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TagLeaf(Leaf):
    """`{name: city, in: [Shanghai]}`: one tag, one operator and its value."""

    model_config = ConfigDict(json_schema_extra=_tag_schema)
    kind: ClassVar[str] = "tag"

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
            raise ValueError(f"unknown operator {op!r}{suggest(str(op), ALL_TAG_OPS)} "
                             f"(one of {', '.join(ALL_TAG_OPS)})")
        return {"name": data["name"], "op": op, "value": data[op]}

    def values(self) -> list[Any]:
        return list(self.value) if isinstance(self.value, list | tuple) else [self.value]

    # -- checks against the tag catalogue -------------------------------------------------------
    def check(self, loc: tuple, env: Any, report) -> None:
        tag_type = env.tags.get(self.name)
        noun = getattr(env, "tag_noun", "tag")
        if tag_type is None:
            report((*loc, "name"), f"unknown {noun} {self.name!r}{suggest(self.name, env.tags)}")
            return
        allowed = OPS_BY_TYPE.get(tag_type, ())
        if self.op not in allowed:
            report((*loc, self.op), f"operator {self.op!r} does not apply to {tag_type} "
                                    f"{getattr(env, 'op_noun', 'tag')} "
                                    f"{self.name!r} (use {', '.join(allowed)})")
            return
        delimiter = (getattr(env, "delimiters", None) or {}).get(self.name) or ","
        self._check_value(tag_type, (*loc, self.op), report, delimiter)

    def _check_value(self, tag_type: str, loc: tuple, report, delimiter: str) -> None:
        """The operator's value fits the tag's type, so compiling cannot fail on it: numbers are
        finite, dates exist, `between` runs low to high, windows stay within MAX_DAYS, and a
        multi-value condition names single elements."""
        op, value = self.op, self.value
        if op in NO_VALUE_OPS:
            if value not in (True, None):
                report(loc, f"{op} takes no value (write {op}: true)")
            return
        if op == "between":
            _check_between(value, tag_type, loc, report)
            return
        if op in DAY_OPS:
            if not (is_int(value) and 1 <= value <= MAX_DAYS):
                report(loc, f"{op} takes a whole number of days from 1 to {MAX_DAYS:,} (a hundred years), "
                            f"not {value!r}")
            return
        if op in COMPARE_OPS:
            if tag_type == "date":
                if as_date(value) is None:  # here: the warehouse's cast would fail at the first query
                    report(loc, f"{op} on a date tag takes a date written YYYY-MM-DD, not {value!r}")
            elif not is_number(value):
                report(loc, f"{op} on a numeric tag takes a number, not {value!r}")
            return
        values = self.values()
        if not values:
            report(loc, f"{op} takes at least one value")
        if len(values) > MAX_VALUES:
            report(loc, f"{len(values)} values; a condition takes at most {MAX_VALUES}")
        if any(not isinstance(v, str | int | float) or isinstance(v, bool) for v in values):
            report(loc, "values must be strings or numbers")
        elif op in ("contains_any", "contains_all"):
            _check_elements(values, self.name, delimiter, loc, report)

    # -- SQL ------------------------------------------------------------------------------------
    def compile(self, ctx: Context) -> exp.Expression:
        column = ctx.tag(self.name)
        op, tag_type = self.op, ctx.tag_types[self.name]
        if op == "is_null":
            return exp.Is(this=column, expression=exp.Null())
        if op == "is_not_null":
            return exp.not_(exp.Is(this=column, expression=exp.Null()))
        negated = op.startswith("not_")
        base = op.removeprefix("not_")
        if tag_type == "date":
            day = exp.cast(column, "DATE")
            if op == "between":
                lo, hi = (as_date(v) for v in self.value)  # checked: both dates
                e = exp.Between(this=day, low=lit(lo), high=lit(hi))
            elif op in COMPARE:
                e = COMPARE[op](this=day, expression=lit(as_date(self.value)))
            elif op == "last_days":
                e = exp.and_(exp.GT(this=day, expression=ctx.days_ago(self.value)),
                             exp.LTE(this=day.copy(), expression=ctx.today_sql()))
            elif op == "before_days_ago":
                e = exp.LTE(this=day, expression=ctx.days_ago(self.value))
            else:
                start = ctx.week_start() if op == "this_week" else ctx.month_start()
                e = exp.Between(this=day, low=start, high=ctx.today_sql())
            return never_null(e)
        if op in COMPARE:
            return never_null(COMPARE[op](this=column, expression=lit(self.value)))
        if op == "between":
            return never_null(exp.Between(this=column, low=lit(self.value[0]), high=lit(self.value[1])))
        values = [str(v) for v in self.values()]
        if base == "in":
            e = exp.In(this=column, expressions=[lit(v) for v in values])
        elif base == "equals":
            e = or_([exp.EQ(this=column.copy(), expression=lit(v)) for v in values])
        elif base == "contains":
            e = or_([contains(column.copy(), lit(v)) for v in values])
        elif base == "starts_with":
            e = or_([exp.EQ(this=exp.Left(this=column.copy(), expression=exp.Literal.number(len(v))),
                            expression=lit(v)) for v in values])
        elif base == "ends_with":
            e = or_([exp.EQ(this=exp.Right(this=column.copy(), expression=exp.Literal.number(len(v))),
                            expression=lit(v)) for v in values])
        elif op in ("contains_any", "contains_all"):
            d = ctx.delimiters.get(self.name) or ","
            wrapped = exp.DPipe(this=exp.DPipe(this=lit(d), expression=column), expression=lit(d))
            parts = [contains(wrapped.copy(), lit(f"{d}{v}{d}")) for v in values]
            e = or_(parts) if op == "contains_any" else and_(parts)
        else:
            raise AssertionError(f"operator {op} reached the compiler unchecked")
        e = never_null(e)
        return exp.not_(e) if negated else e

    def describe(self) -> str:
        if self.value in (None, True):
            return f"tag {self.name} {self.op}"
        return f"tag {self.name} {self.op} {self.value!r}"


class AttributeLeaf(TagLeaf):
    """`{name: item_id, in: [P001]}`: an attribute of the event that triggers a journey (its
    type, text or numeric, from events/*.yml), with the tag operators of that type."""

    kind: ClassVar[str] = "attribute"

    def describe(self) -> str:
        if self.value in (None, True):
            return f"attribute {self.name} {self.op}"
        return f"attribute {self.name} {self.op} {self.value!r}"


def _check_between(value, tag_type: str, loc: tuple, report) -> None:
    if not (isinstance(value, list) and len(value) == 2):
        report(loc, "between takes two values: [low, high]")
        return
    if tag_type == "date":
        low, high = (as_date(v) for v in value)
        if low is None or high is None:
            bad = value[0] if low is None else value[1]
            report(loc, f"between on a date tag takes two dates written YYYY-MM-DD, not {bad!r}")
            return
    else:
        low, high = value
        if not (is_number(low) and is_number(high)):
            bad = high if is_number(low) else low
            report(loc, f"between on a numeric tag takes two numbers, not {bad!r}")
            return
    if low > high:
        report(loc, f"between runs from low to high; [{value[0]}, {value[1]}] is reversed: "
                    f"write [{value[1]}, {value[0]}]")


def _check_elements(values: list, tag: str, delimiter: str, loc: tuple, report) -> None:
    """Each value is one element of the tag's list: one holding the delimiter would match two
    neighbouring elements as if they were one (`app,mini_program`)."""
    for v in values:
        text = str(v)
        if text == "":
            report(loc, f"an empty value matches no element of {tag}")
        elif delimiter in text:
            parts = ", ".join(p.strip() for p in text.split(delimiter))
            report(loc, f"value {text!r} holds {tag}'s delimiter {delimiter!r}; write each element "
                        f"as its own list item: [{parts}]")


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

    def sql(self, value: exp.Expression) -> exp.Expression:
        number = int(self.value) if float(self.value).is_integer() else self.value
        return COMPARE[self.op](this=value, expression=lit(number))

    def passes_zero(self) -> bool:
        return {"=": 0 == self.value, "!=": 0 != self.value, ">": 0 > self.value, ">=": 0 >= self.value,
                "<": 0 < self.value, "<=": 0 <= self.value}[self.op]


AT_LEAST_ONCE = Threshold(op=">=", value=1)


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


class BehaviorLeaf(Leaf):
    """`{did: purchase, channels: [app], last_days: 30, count: {">=": 2}}`; `did_not` negates."""

    # (kept out of the docstring, which is the JSON Schema's description) `object_attribute:
    # category` keeps the rows about that kind of object; `object_values`, which needs it, the
    # rows about some of them. Where the counts come from is the domain's: one aggregate for
    # every audience of a batch, a window per AIPL day (Context.behavior_totals).
    kind: ClassVar[str] = "behavior"

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

    def check(self, loc: tuple, env: Any, report) -> None:
        key = "did" if self.did else "did_not"
        if self.event_type not in env.event_types:
            report((*loc, key), f"unknown behaviour type {self.event_type!r}"
                                f"{suggest(self.event_type, env.event_types)}")
        for ch in self.channels or []:
            if ch not in env.channels:
                report((*loc, "channels"), f"unknown channel {ch!r}{suggest(ch, env.channels)}")

    def rows(self) -> exp.Expression:
        """Which behaviour rows the leaf sums, the window aside (unqualified columns)."""
        test = [exp.EQ(this=exp.column("event_type", quoted=True), expression=lit(self.event_type))]
        if self.channels:
            test.append(exp.In(this=exp.column("channel", quoted=True),
                               expressions=[lit(c) for c in self.channels]))
        if self.object_attribute:
            test.append(exp.EQ(this=exp.column("object_attribute", quoted=True),
                               expression=lit(self.object_attribute)))
        if self.object_values:
            test.append(exp.In(this=exp.column("object_value", quoted=True),
                               expressions=[lit(v) for v in self.object_values]))
        return and_(test)

    def passes_without_rows(self) -> bool:
        """Whether a person with none of this behaviour meets the condition."""
        met = ((self.count or AT_LEAST_ONCE).passes_zero()
               and (self.amount is None or self.amount.passes_zero()))
        return met != bool(self.did_not)

    def compile(self, ctx: Context) -> exp.Expression:
        count, amount = ctx.behavior_totals(self)
        checks = [(self.count or AT_LEAST_ONCE).sql(count)]
        if self.amount:
            checks.append(self.amount.sql(amount))
        e = and_(checks)
        return exp.not_(exp.paren(e)) if self.did_not else e

    def describe(self) -> str:
        verb = "did" if self.did else "did not"
        parts = [f"{verb} {self.event_type}"]
        if self.channels:
            parts.append(f"in {', '.join(self.channels)}")
        if self.object_attribute:
            parts.append(f"on {self.object_attribute} in {', '.join(self.object_values)}"
                         if self.object_values else f"on any {self.object_attribute}")
        parts.append(f"in the last {self.last_days} days" if self.last_days
                     else f"between {self.between[0]} and {self.between[1]}")
        if self.count:
            parts.append(f"count {self.count.op} {self.count.value:g}")
        if self.amount:
            parts.append(f"amount {self.amount.op} {self.amount.value:g}")
        return "behavior " + " ".join(parts)
