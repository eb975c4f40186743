"""sqlglot building blocks shared by every condition kind. Values only ever enter a tree as
sqlglot literals, which the generator quotes and escapes for the dialect."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "spark": "spark", "trino": "trino",
            "snowflake": "snowflake", "bigquery": "bigquery"}
COMPARE = {"=": exp.EQ, "!=": exp.NEQ, ">": exp.GT, ">=": exp.GTE, "<": exp.LT, "<=": exp.LTE}


def lit(value) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    return exp.Literal.string(str(value))


def col(name: str, table: str | None = "t") -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def never_null(e: exp.Expression) -> exp.Expression:
    return exp.func("COALESCE", exp.paren(e, copy=False), exp.false())


def or_(parts: list[exp.Expression]) -> exp.Expression:
    return exp.or_(*parts) if len(parts) > 1 else parts[0]


def and_(parts: list[exp.Expression]) -> exp.Expression:
    return exp.and_(*parts) if len(parts) > 1 else parts[0]


def contains(haystack: exp.Expression, needle: exp.Expression) -> exp.Expression:
    """Whether `needle` occurs in `haystack`, by position: `%` and `_` are plain characters."""
    return exp.GT(this=exp.StrPosition(this=haystack, substr=needle), expression=exp.Literal.number(0))


def to_sql(query: exp.Expression, dialect: str, pretty: bool = True) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (one of {', '.join(DIALECTS)})")
    return query.sql(dialect=DIALECTS[dialect], pretty=pretty)
