"""AIPL analysis: stage counts on a day, the daily trend, and the flow between two days."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from openaudience.analysis.catalog import AiplModel, Catalog, require_table, sql_date
from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse

STAGES = ("A", "I", "P", "L")
STAGE_NAMES = {"A": "awareness", "I": "interest", "P": "purchase", "L": "loyalty"}
NONE = "none"  # in no stage
TREND_DAYS = 30


@dataclass
class AiplFlow:
    model: AiplModel
    start: dt.date
    end: dt.date
    stages: pd.DataFrame       # per stage: start, end, change, retained, converted_out, churned,
                               # churn_rate, identity_holds
    conversions: pd.DataFrame  # from_stage, to_stage, users (to_stage may be 'none')
    trend: pd.DataFrame        # stat_date, stage, users for up to 30 days ending on `end`


def _computed_days(warehouse: Warehouse, model: AiplModel) -> set[dt.date]:
    rows = warehouse.query(
        f"select distinct stat_date from {model.relation} where aipl_model = %s", [model.name])
    return {pd.Timestamp(r[0]).date() for r in rows}


def _require_day(days: set[dt.date], day: dt.date, model: AiplModel, flag: str) -> None:
    if day not in days:
        have = f"{min(days)} to {max(days)}" if days else "no days"
        raise UserError(
            f"aipl_daily has no rows for model {model.name!r} on {day} ({flag}); it holds {have}. "
            f"Compute the day with: oa aipl backfill --start {day} --end {day}")


def analyse_aipl(warehouse: Warehouse, name: str, start: dt.date, end: dt.date,
                 catalog: Catalog | None = None) -> AiplFlow:
    if start > end:
        raise UserError(f"--start {start} is after --end {end}")
    catalog = catalog or Catalog.load()
    model = catalog.aipl_model(name)
    require_table(warehouse, model.relation, "aipl_daily")
    days = _computed_days(warehouse, model)
    _require_day(days, start, model, "--start")
    _require_day(days, end, model, "--end")

    # every user in a stage on either day, with the stage on each ('none' when absent)
    pairs = warehouse.query_df(f"""
        with s as (
            select one_id, stage from {model.relation}
            where aipl_model = '{model.name}' and stat_date = {sql_date(start)}
        ),
        e as (
            select one_id, stage from {model.relation}
            where aipl_model = '{model.name}' and stat_date = {sql_date(end)}
        )
        select coalesce(s.stage, '{NONE}') as from_stage, coalesce(e.stage, '{NONE}') as to_stage,
               count(*) as users
        from s
        full outer join e on e.one_id = s.one_id
        group by coalesce(s.stage, '{NONE}'), coalesce(e.stage, '{NONE}')""")
    pairs["users"] = pairs["users"].astype("int64")
    count = {(r.from_stage, r.to_stage): int(r.users) for r in pairs.itertuples()}

    rows = []
    for x in STAGES:
        n_start = sum(v for (f, _t), v in count.items() if f == x)
        n_end = sum(v for (_f, t), v in count.items() if t == x)
        retained = count.get((x, x), 0)
        converted = {y: count.get((x, y), 0) for y in STAGES if y != x}
        churned = count.get((x, NONE), 0)
        rows.append({
            "stage": x, "stage_name": STAGE_NAMES[x], "start": n_start, "end": n_end,
            "change": n_end - n_start, "retained": retained,
            "converted_out": sum(converted.values()),
            **{f"to_{y}": v for y, v in converted.items()},
            "entered": sum(v for (f, t), v in count.items() if t == x and f != x),
            "churned": churned,
            "churn_rate": churned / n_start if n_start else 0.0,
            "identity_holds": n_start == retained + sum(converted.values()) + churned,
        })
    stages = pd.DataFrame(rows)
    for y in STAGES:  # a stage does not convert to itself: empty, not NaN
        stages[f"to_{y}"] = stages[f"to_{y}"].astype("Int64")
    conversions = pairs[(pairs["from_stage"] != pairs["to_stage"]) & (pairs["from_stage"] != NONE)]
    conversions = conversions.sort_values(["from_stage", "to_stage"]).reset_index(drop=True)

    trend_start = end - dt.timedelta(days=TREND_DAYS - 1)
    trend = warehouse.query_df(f"""
        select stat_date, stage, count(*) as users
        from {model.relation}
        where aipl_model = '{model.name}'
          and stat_date >= {sql_date(trend_start)} and stat_date <= {sql_date(end)}
        group by stat_date, stage
        order by stat_date, stage""")
    trend["users"] = trend["users"].astype("int64")
    trend["stat_date"] = pd.to_datetime(trend["stat_date"])
    return AiplFlow(model, start, end, stages, conversions, trend)


def latest_day(warehouse: Warehouse, name: str, catalog: Catalog | None = None) -> dt.date | None:
    catalog = catalog or Catalog.load()
    model = catalog.aipl_model(name)
    days = _computed_days(warehouse, model)
    return max(days) if days else None
