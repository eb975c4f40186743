"""RFM analysis: core metrics, the eight user types, the three bubble charts and the daily trend."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from openaudience.analysis.catalog import Catalog, RfmModel, require_table, sql_date
from openaudience.core.warehouse import Warehouse

# The manual's three consumption-distribution charts: (x, y, bubble size).
BUBBLES = {
    "MF-R": ("f_score", "m_score", "r_score",
             "Spending power: frequency × amount, sized by recency score"),
    "MR-F": ("r_score", "m_score", "f_score",
             "Spending potential: recency × amount, sized by frequency score"),
    "RF-M": ("f_score", "r_score", "m_score",
             "Spending spread: frequency × recency, sized by monetary score"),
}


@dataclass
class RfmAnalysis:
    model: RfmModel
    as_of: dt.date | None
    core: dict[str, float]
    comparisons: dict[str, float]
    segments: pd.DataFrame
    bubbles: dict[str, pd.DataFrame]
    trend: pd.DataFrame | None
    samples: pd.DataFrame


def _per_capita(df: pd.DataFrame) -> pd.DataFrame:
    users = df["users"].where(df["users"] > 0)
    df["per_capita_amount"] = (df["amount"] / users).fillna(0.0)
    df["per_capita_frequency"] = (df["frequency"] / users).fillna(0.0)
    return df


def analyse_rfm(warehouse: Warehouse, name: str, catalog: Catalog | None = None) -> RfmAnalysis:
    catalog = catalog or Catalog.load()
    model = catalog.rfm_model(name)
    require_table(warehouse, model.relation, f"RFM model {name}")
    segments_seed = catalog.relation("rfm_segments")

    head = warehouse.query_df(
        f"select count(*) as users, sum(monetary) as amount, sum(frequency) as frequency, "
        f"max(as_of_date) as as_of, max(r_comparison) as r_comparison, "
        f"max(f_comparison) as f_comparison, max(m_comparison) as m_comparison "
        f"from {model.relation}")
    row = head.iloc[0]
    users = int(row["users"] or 0)
    amount = float(row["amount"] or 0)
    frequency = float(row["frequency"] or 0)
    as_of = pd.Timestamp(row["as_of"]).date() if pd.notna(row["as_of"]) else None
    core = {
        "transacting_users": users,
        "amount": amount,
        "frequency": frequency,
        "per_capita_amount": amount / users if users else 0.0,
        "per_capita_frequency": frequency / users if users else 0.0,
    }
    comparisons = {k: float(row[f"{k}_comparison"]) if pd.notna(row[f"{k}_comparison"]) else float("nan")
                   for k in ("r", "f", "m")}

    segments = warehouse.query_df(f"""
        select g.rfm_code, g.rfm_segment, g.label, g.sort_order,
               count(r.one_id) as users,
               coalesce(sum(r.monetary), 0) as amount,
               coalesce(sum(r.frequency), 0) as frequency
        from {segments_seed} as g
        left join {model.relation} as r on r.rfm_code = g.rfm_code
        group by g.rfm_code, g.rfm_segment, g.label, g.sort_order
        order by g.sort_order""")
    segments = segments.astype({"users": "int64", "amount": "float64", "frequency": "float64"})
    segments["share"] = segments["users"] / users if users else 0.0
    segments = _per_capita(segments)

    bubbles = {}
    for key, (x, y, size, _title) in BUBBLES.items():
        df = warehouse.query_df(f"""
            select {x} as x, {y} as y, avg({size}) as size, count(*) as users,
                   sum(monetary) as amount, sum(frequency) as frequency
            from {model.relation}
            group by {x}, {y}
            order by {x}, {y}""")
        df = df.astype({"x": "int64", "y": "int64", "size": "float64", "users": "int64",
                        "amount": "float64", "frequency": "float64"})
        bubbles[key] = _per_capita(df)

    trend = None
    if model.input == "transactions" and as_of is not None:
        orders = catalog.relation("fct_orders")
        since = (f" and o.ordered_date > {sql_date(as_of - dt.timedelta(days=model.window_days))}"
                 if model.window_days else "")
        trend = warehouse.query_df(f"""
            select o.ordered_date as day, count(distinct o.one_id) as users,
                   count(*) as orders, sum(o.total_amount) as amount
            from {orders} as o
            inner join {model.relation} as r on r.one_id = o.one_id
            where o.is_paid and o.total_amount is not null
              and o.ordered_date <= {sql_date(as_of)}{since}
            group by o.ordered_date
            order by o.ordered_date""")
        trend = trend.astype({"users": "int64", "orders": "int64", "amount": "float64"})
        trend["day"] = pd.to_datetime(trend["day"])

    samples = warehouse.query_df(f"""
        select rfm_segment, one_id, recency_days, frequency, monetary, r_score, f_score, m_score
        from (
            select r.*, row_number() over (
                partition by r.rfm_segment order by r.monetary desc, r.one_id) as pick
            from {model.relation} as r
        ) as ranked
        where pick <= 5
        order by rfm_segment, pick""")
    return RfmAnalysis(model, as_of, core, comparisons, segments, bubbles, trend, samples)
