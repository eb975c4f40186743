"""Audience → sqlglot expression tree → SQL in a dialect.

Values only ever enter the tree as sqlglot literals, which the generator quotes and escapes for
the dialect; no value is pasted into SQL text. Every leaf is a boolean that is never NULL (see
spec.py for the NULL rules), so `not:` is the plain complement.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlglot import exp

from orchestration.segments.spec import Audience, BehaviorLeaf, Condition, TagLeaf, Threshold

DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "spark": "spark", "trino": "trino",
            "snowflake": "snowflake", "bigquery": "bigquery"}
COMPARE = {"=": exp.EQ, "!=": exp.NEQ, ">": exp.GT, ">=": exp.GTE, "<": exp.LT, "<=": exp.LTE}


@dataclass(frozen=True)
class Relations:
    schema: str = "marts"

    def table(self, name: str) -> exp.Table:
        return exp.table_(name, db=self.schema, quoted=True)


@dataclass
class _Context:
    today: dt.date
    relations: Relations
    tag_types: dict[str, str]
    delimiters: dict[str, str] = field(default_factory=dict)
    ctes: list[exp.CTE] = field(default_factory=list)
    joins: list[tuple[str, exp.Expression]] = field(default_factory=list)


def _lit(value) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    return exp.Literal.string(str(value))


def _col(name: str, table: str = "t") -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def _never_null(e: exp.Expression) -> exp.Expression:
    return exp.func("COALESCE", exp.paren(e, copy=False), exp.false())


def _or(parts: list[exp.Expression]) -> exp.Expression:
    return exp.or_(*parts) if len(parts) > 1 else parts[0]


def _and(parts: list[exp.Expression]) -> exp.Expression:
    return exp.and_(*parts) if len(parts) > 1 else parts[0]


def _contains(haystack: exp.Expression, needle: exp.Expression) -> exp.Expression:
    return exp.GT(this=exp.StrPosition(this=haystack, substr=needle), expression=exp.Literal.number(0))


def _tag(leaf: TagLeaf, ctx: _Context) -> exp.Expression:
    col = _col(leaf.name)
    op, tag_type = leaf.op, ctx.tag_types[leaf.name]
    if op == "is_null":
        return exp.Is(this=col, expression=exp.Null())
    if op == "is_not_null":
        return exp.not_(exp.Is(this=col, expression=exp.Null()))
    negated = op.startswith("not_")
    base = op.removeprefix("not_")
    if tag_type == "date":
        day = exp.cast(col, "DATE")
        if op == "between":
            lo, hi = (dt.date.fromisoformat(str(v)) for v in leaf.value)
            e = exp.Between(this=day, low=_lit(lo), high=_lit(hi))
        elif op == "last_days":
            e = exp.and_(exp.GT(this=day, expression=_lit(ctx.today - dt.timedelta(days=leaf.value))),
                         exp.LTE(this=day, expression=_lit(ctx.today)))
        elif op == "before_days_ago":
            e = exp.LTE(this=day, expression=_lit(ctx.today - dt.timedelta(days=leaf.value)))
        else:
            start = (ctx.today - dt.timedelta(days=ctx.today.weekday()) if op == "this_week"
                     else ctx.today.replace(day=1))
            e = exp.Between(this=day, low=_lit(start), high=_lit(ctx.today))
        return _never_null(e)
    if op in COMPARE:
        return _never_null(COMPARE[op](this=col, expression=_lit(leaf.value)))
    if op == "between":
        return _never_null(exp.Between(this=col, low=_lit(leaf.value[0]), high=_lit(leaf.value[1])))
    values = [str(v) for v in leaf.values()]
    if base == "in":
        e = exp.In(this=col, expressions=[_lit(v) for v in values])
    elif base == "equals":
        e = _or([exp.EQ(this=col, expression=_lit(v)) for v in values])
    elif base == "contains":
        e = _or([_contains(col, _lit(v)) for v in values])
    elif base == "starts_with":
        e = _or([exp.EQ(this=exp.Left(this=col, expression=exp.Literal.number(len(v))),
                        expression=_lit(v)) for v in values])
    elif base == "ends_with":
        e = _or([exp.EQ(this=exp.Right(this=col, expression=exp.Literal.number(len(v))),
                        expression=_lit(v)) for v in values])
    elif op in ("contains_any", "contains_all"):
        d = ctx.delimiters.get(leaf.name) or ","
        wrapped = exp.DPipe(this=exp.DPipe(this=_lit(d), expression=col), expression=_lit(d))
        parts = [_contains(wrapped, _lit(f"{d}{v}{d}")) for v in values]
        e = _or(parts) if op == "contains_any" else _and(parts)
    else:
        raise AssertionError(f"operator {op} reached the compiler unchecked")
    e = _never_null(e)
    return exp.not_(e) if negated else e


def _threshold(value: exp.Expression, t: Threshold) -> exp.Expression:
    number = int(t.value) if float(t.value).is_integer() else t.value
    return COMPARE[t.op](this=value, expression=_lit(number))


def _behavior(leaf: BehaviorLeaf, ctx: _Context) -> exp.Expression:
    name = f"b{len(ctx.ctes)}"
    filters = [exp.EQ(this=_col("event_type", None), expression=_lit(leaf.event_type))]
    day = _col("behavior_date", None)
    if leaf.last_days:
        filters += [exp.GT(this=day, expression=_lit(ctx.today - dt.timedelta(days=leaf.last_days))),
                    exp.LTE(this=day, expression=_lit(ctx.today))]
    else:
        filters.append(exp.Between(this=day, low=_lit(leaf.between[0]), high=_lit(leaf.between[1])))
    if leaf.channels:
        filters.append(exp.In(this=_col("channel", None), expressions=[_lit(c) for c in leaf.channels]))
    if leaf.object_attribute:
        filters.append(exp.EQ(this=_col("object_attribute", None), expression=_lit(leaf.object_attribute)))
    if leaf.object_values:
        filters.append(exp.In(this=_col("object_value", None),
                              expressions=[_lit(v) for v in leaf.object_values]))
    query = (exp.select(_col("one_id", None),
                        exp.alias_(exp.func("SUM", _col("behavior_count", None)), "n"),
                        exp.alias_(exp.func("SUM", _col("behavior_amount", None)), "amount"))
             .from_(ctx.relations.table("fct_behaviors"))
             .where(_and(filters))
             .group_by(_col("one_id", None)))
    ctx.ctes.append(exp.CTE(this=query, alias=exp.TableAlias(this=exp.to_identifier(name))))
    ctx.joins.append((name, exp.EQ(this=_col("one_id", name), expression=_col("one_id"))))
    zero = exp.Literal.number(0)
    count = leaf.count or Threshold(op=">=", value=1)
    checks = [_threshold(exp.func("COALESCE", _col("n", name), zero), count)]
    if leaf.amount:
        checks.append(_threshold(exp.func("COALESCE", _col("amount", name), zero), leaf.amount))
    e = _and(checks)
    return exp.not_(exp.paren(e)) if leaf.did_not else e


def _member_of(query: exp.Select) -> exp.Expression:
    return _col("one_id").isin(query=query)


def _condition(cond: Condition, ctx: _Context) -> exp.Expression:
    kind = cond.kind
    if kind == "all":
        return exp.paren(_and([_condition(c, ctx) for c in cond.all]))
    if kind == "any":
        return exp.paren(_or([_condition(c, ctx) for c in cond.any]))
    if kind == "not":
        return exp.not_(exp.paren(_condition(cond.not_, ctx)))
    if kind == "tag":
        return _tag(cond.tag, ctx)
    if kind == "behavior":
        return _behavior(cond.behavior, ctx)
    if kind == "rfm":
        leaf = cond.rfm
        if leaf.segments is not None:
            where = exp.In(this=_col("rfm_segment", None), expressions=[_lit(s) for s in leaf.segments])
        else:
            where = _and([exp.GTE(this=_col(f"{k}_score", None), expression=_lit(v))
                          for k, v in sorted(leaf.min_scores.items())])
        rfm = ctx.relations.table(leaf.model)
        return _member_of(exp.select(_col("one_id", None)).from_(rfm).where(where))
    if kind == "aipl":
        leaf = cond.aipl
        table = ctx.relations.table("aipl_daily")
        model = exp.EQ(this=_col("aipl_model", None), expression=_lit(leaf.model))
        up_to_today = exp.LTE(this=_col("stat_date", None), expression=_lit(ctx.today))
        latest = (exp.select(exp.func("MAX", _col("stat_date", None))).from_(table.copy())
                  .where(exp.and_(model.copy(), up_to_today)))
        where = exp.and_(model, exp.In(this=_col("stage", None), expressions=[_lit(s) for s in leaf.stages]),
                         exp.EQ(this=_col("stat_date", None), expression=latest.subquery()))
        return _member_of(exp.select(_col("one_id", None)).from_(table).where(where))
    raise AssertionError(kind)


def audience_query(audience: Audience, tag_types: dict[str, str], today: dt.date,
                   relations: Relations | None = None,
                   delimiters: dict[str, str] | None = None) -> exp.Select:
    """One row per member: one_id and the audience's id (NULL when the member lacks it).
    `delimiters` gives multi-value tags their separator (default ',')."""
    ctx = _Context(today=today, relations=relations or Relations(), tag_types=tag_types,
                   delimiters=delimiters or {})
    predicate = _condition(audience.where, ctx)
    id_col = _col("one_id") if audience.id_type == "one_id" else _col(audience.id_type)
    query = exp.select(_col("one_id"), exp.alias_(id_col, "id_value")).from_(
        exp.alias_(ctx.relations.table("user_tags"), "t", table=True))
    for name, on in ctx.joins:
        query = query.join(exp.to_identifier(name), on=on, join_type="left")
    query = query.where(predicate)
    for cte in ctx.ctes:
        query = query.with_(cte.alias, as_=cte.this)
    return query


def to_sql(query: exp.Expression, dialect: str, pretty: bool = True) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (one of {', '.join(DIALECTS)})")
    return query.sql(dialect=DIALECTS[dialect], pretty=pretty)
