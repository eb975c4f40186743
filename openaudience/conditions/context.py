"""What a compiled condition needs from where it is used: the relations it reads, the type of
every tag, and "today", which is a literal date (an audience's refresh date) or a column (the
stat date of each AIPL day)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlglot import exp

from openaudience.conditions.sql import col, lit
from openaudience.core.schema.operational import AUDIENCE_SCHEMA


@dataclass(frozen=True)
class Relations:
    schema: str = "marts"
    audience_schema: str = AUDIENCE_SCHEMA
    ml_schema: str = "ml"
    latest_versions: tuple[tuple[str, int], ...] | None = None
    """Each audience's latest version, when the versions live apart from the members (beside a
    Spark warehouse): `{name: x}` leaves then read that version, written into the query."""

    def latest_version(self, name: str) -> int | None:
        return dict(self.latest_versions or ()).get(name)

    def ml_table(self, name: str) -> exp.Table:
        return exp.table_(name, db=self.ml_schema, quoted=True)

    def table(self, name: str) -> exp.Table:
        return exp.table_(name, db=self.schema, quoted=True)

    def audience_table(self, name: str) -> exp.Table:
        return exp.table_(name, db=self.audience_schema, quoted=True)


@dataclass(frozen=True)
class Requirement:
    """Something the warehouse must hold before the query can run: checked before a build so
    that a missing input is an error naming it, not an empty audience."""

    kind: str          # audience | upload | table | relation | aipl_date | ml_scores | ml_task | ml_pool
    name: str          # audience name, upload digest, schema.table, AIPL model, pool
    detail: str = ""   # version, upload file, id type, date


@dataclass
class Context:
    """The compile context. Domains extend it: audiences with their shared joins and behaviour
    aggregate, AIPL rules with the per-day behaviour windows."""

    today: dt.date | exp.Expression
    tag_types: dict[str, str]
    delimiters: dict[str, str] = field(default_factory=dict)
    relations: Relations = field(default_factory=Relations)
    tag_table: str = "t"
    requirements: dict[Requirement, None] = field(default_factory=dict)
    record: dict[tuple, exp.Expression] | None = None

    def require(self, kind: str, name: str, detail: str = "") -> None:
        self.requirements[Requirement(kind, name, detail)] = None

    def tag(self, name: str) -> exp.Column:
        return col(name, self.tag_table)

    @property
    def literal_today(self) -> dt.date:
        """Today as a date, for the conditions that need one (a fixed window of days)."""
        if not isinstance(self.today, dt.date):
            raise TypeError("this condition needs a fixed date for today")
        return self.today

    def today_sql(self) -> exp.Expression:
        return lit(self.today) if isinstance(self.today, dt.date) else self.today.copy()

    def days_ago(self, days: int) -> exp.Expression:
        """The day `days` before today: a literal for a date, date arithmetic for a column."""
        if isinstance(self.today, dt.date):
            return lit(self.today - dt.timedelta(days=days))
        return exp.cast(exp.DateSub(this=self.today.copy(), expression=exp.Literal.number(days),
                                    unit=exp.var("DAY")), "DATE")

    def week_start(self) -> exp.Expression:
        if isinstance(self.today, dt.date):
            return lit(self.today - dt.timedelta(days=self.today.weekday()))
        return exp.cast(exp.DateTrunc(this=self.today.copy(), unit=exp.var("WEEK")), "DATE")

    def month_start(self) -> exp.Expression:
        if isinstance(self.today, dt.date):
            return lit(self.today.replace(day=1))
        return exp.cast(exp.DateTrunc(this=self.today.copy(), unit=exp.var("MONTH")), "DATE")

    def behavior_totals(self, leaf) -> tuple[exp.Expression, exp.Expression]:
        """The count and amount of the behaviour a behaviour leaf sums, never NULL."""
        raise NotImplementedError(f"{type(self).__name__} reads no behaviour")
