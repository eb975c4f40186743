"""Pivot analysis: the distribution of chosen tags over user_tags.

Enum and text tags count each value; multi-value tags are split on their delimiter (allowed up
to 50 distinct values, as in the manual); numeric tags fall into about ten equal-width bins with
round edges; dates are counted by month. The chart follows the number of values: up to 5 a
pie, 6 to 10 a bar chart, more a scrollable bar chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from openaudience.analysis.catalog import Catalog, require_table
from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse, qident

MULTI_VALUE_LIMIT = 50
TEXT_LIMIT = 50
NUMERIC_BINS = 10
NULL_LABEL = "(empty)"


@dataclass
class TagDistribution:
    tag: str
    label: str
    tag_type: str
    values: pd.DataFrame  # value, users, share (in chart order)
    users: int            # users the shares are of (all, or those with a value under the null
                          # filter); a multi-value user counts once per value, so shares may sum past 1
    nulls: int            # users with no value
    chart: str            # pie | bar | scroll_bar

    @property
    def value_count(self) -> int:
        return len(self.values)


def chart_kind(n_values: int) -> str:
    if n_values <= 5:
        return "pie"
    if n_values <= 10:
        return "bar"
    return "scroll_bar"


def nice_step(span: float, bins: int = NUMERIC_BINS) -> float:
    """A 1, 2 or 5 times a power of ten step that cuts `span` into at most about `bins` bins."""
    if span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"


def _catalogue(warehouse: Warehouse, catalog: Catalog) -> pd.DataFrame:
    seed = catalog.relation("tag_catalogue")
    return warehouse.query_df(f"select tag_name, label, tag_type, delimiter from {seed}")


def pivot_tags(warehouse: Warehouse, tags: list[str], exclude_null: bool = False,
               catalog: Catalog | None = None) -> list[TagDistribution]:
    catalog = catalog or Catalog.load()
    relation = catalog.relation("user_tags")
    require_table(warehouse, relation, "user_tags")
    known = _catalogue(warehouse, catalog).set_index("tag_name")
    unknown = [t for t in tags if t not in known.index]
    if unknown:
        raise UserError(f"unknown tag(s): {', '.join(unknown)}; tags are listed in "
                        "seeds/tag_catalogue.csv")
    if not tags:
        raise UserError("choose at least one tag, e.g. --tags gender,city,member_level")
    total = int(warehouse.query(f"select count(*) from {relation}")[0][0])
    return [_distribution(warehouse, relation, total, tag, known.loc[tag], exclude_null)
            for tag in tags]


def _distribution(warehouse: Warehouse, relation: str, total: int, tag: str, meta: pd.Series,
                  exclude_null: bool) -> TagDistribution:
    col = qident(tag)
    tag_type = str(meta["tag_type"])
    nulls = int(warehouse.query(f"select count(*) from {relation} where {col} is null")[0][0])

    if tag_type == "multi_value":
        delimiter = str(meta["delimiter"] or ",")
        split = warehouse.split_values(col)
        rows = warehouse.query(
            f"select trim(v) as value, count(distinct one_id) as users "
            f"from (select one_id, {split} as v from {relation} where {col} is not null) as x "
            f"where trim(v) <> '' group by trim(v)", [delimiter])
        if len(rows) > MULTI_VALUE_LIMIT:
            raise UserError(f"tag {tag!r} has {len(rows)} distinct values after splitting; pivot "
                            f"analysis takes multi-value tags with at most {MULTI_VALUE_LIMIT}")
        df = pd.DataFrame(rows, columns=["value", "users"]).sort_values(
            ["users", "value"], ascending=[False, True])
    elif tag_type == "numeric":
        lo, hi = warehouse.query(f"select min({col}), max({col}) from {relation}")[0]
        if lo is None:
            df = pd.DataFrame(columns=["value", "users"])
        else:
            step = nice_step(float(hi) - float(lo))
            start = math.floor(float(lo) / step) * step
            # numbers from min/max, written as literals so the select and group by match
            bucket = f"floor(({col} - {float(start)!r}) / {float(step)!r})"
            rows = warehouse.query(f"select {bucket} as bin, count(*) from {relation} "
                                   f"where {col} is not null group by {bucket} order by 1")
            df = pd.DataFrame(
                [{"value": f"[{_fmt(start + int(b) * step)}, {_fmt(start + (int(b) + 1) * step)})",
                  "users": int(n), "order": int(b)} for b, n in rows], columns=["value", "users", "order"])
            df = df.sort_values("order").drop(columns="order")
    elif tag_type == "date":
        rows = warehouse.query(
            f"select cast(date_trunc('month', {col}) as date) as month, count(*) from {relation} "
            f"where {col} is not null group by cast(date_trunc('month', {col}) as date) order by 1")
        df = pd.DataFrame([{"value": pd.Timestamp(m).strftime("%Y-%m"), "users": int(n)}
                           for m, n in rows], columns=["value", "users"])
    else:  # enum and text
        rows = warehouse.query(f"select {col}, count(*) from {relation} where {col} is not null "
                               f"group by {col}")
        if tag_type == "text" and len(rows) > TEXT_LIMIT:
            raise UserError(f"tag {tag!r} is free text with {len(rows)} distinct values; pivot "
                            f"analysis takes text tags with at most {TEXT_LIMIT}")
        df = pd.DataFrame([(str(v), int(n)) for v, n in rows], columns=["value", "users"])
        df = df.sort_values(["users", "value"], ascending=[False, True])
        if exclude_null:
            # the manual's null filter also drops the placeholder value "unknown"
            df = df[df["value"].str.lower() != "unknown"]

    df["users"] = df["users"].astype("int64")
    if not exclude_null and nulls:
        df = pd.concat([df, pd.DataFrame([{"value": NULL_LABEL, "users": nulls}])], ignore_index=True)
    base = total - nulls if exclude_null else total
    df["share"] = df["users"] / base if base else 0.0
    df = df.reset_index(drop=True)
    return TagDistribution(tag=tag, label=str(meta["label"]), tag_type=tag_type, values=df,
                           users=base, nulls=nulls,
                           chart=chart_kind(len(df)))
