"""Audience analysis: a built audience against the whole population, tag by tag.

For every tag of the catalogue (enum, text with few values, numeric in the population's bins,
multi-value split into values) the share of the audience and of the population holding each
value, and the TGI, round(audience share / population share × 100): 100 is parity, above 100
over-represented. Tags whose value distribution differs most are found with a chi-square test
of independence (audience vs the rest of the population, values incl. empty) and ranked by
p-value, then by Cramér's V (with a million people many p-values are 0). Multi-value tags count
a person once per value, which breaks the test's assumptions, so they get TGI but no test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy.stats import chi2_contingency

from openaudience.analysis.catalog import Catalog, require_table
from openaudience.analysis.pivot import MULTI_VALUE_LIMIT, NULL_LABEL, TEXT_LIMIT, _fmt, nice_step
from openaudience.core.errors import UserError
from openaudience.core.warehouse import Warehouse, qident, split_values
from openaudience.segments.engine import MEMBERS, latest, versions

TOP_TAGS = 10


@dataclass
class TagComparison:
    tag: str
    label: str
    tag_type: str
    values: pd.DataFrame      # value, audience, population, audience_share, population_share, tgi
    chi2: float | None
    dof: int | None
    p_value: float | None
    cramers_v: float | None


@dataclass
class AudienceAnalysis:
    name: str
    version: int
    built_at: object
    as_of: object
    size: int
    population: int
    tags: list[TagComparison]
    top: pd.DataFrame          # the TOP_TAGS most significant tags
    rfm_model: str | None
    rfm: pd.DataFrame | None   # segment, label, audience, population, shares, tgi
    history: pd.DataFrame


def tgi(audience_share: float, population_share: float) -> int | None:
    if not population_share:
        return None
    return int(math.floor(audience_share / population_share * 100 + 0.5))


def _compare(df: pd.DataFrame, size: int, population: int) -> pd.DataFrame:
    df = df.copy()
    df["audience_share"] = df["audience"] / size if size else 0.0
    df["population_share"] = df["population"] / population if population else 0.0
    df["tgi"] = [tgi(a, p) for a, p in zip(df["audience_share"], df["population_share"], strict=True)]
    return df


def _test(df: pd.DataFrame, size: int) -> tuple[float, int, float, float] | None:
    table = pd.DataFrame({"in": df["audience"], "out": df["population"] - df["audience"]})
    table = table[(table["in"] + table["out"]) > 0]
    if len(table) < 2 or table["in"].sum() == 0 or table["out"].sum() == 0:
        return None
    chi2, p, dof, _ = chi2_contingency(table.to_numpy(), correction=False)
    n = table.to_numpy().sum()
    v = math.sqrt(chi2 / (n * (min(table.shape) - 1))) if n else 0.0
    return float(chi2), int(dof), float(p), float(v)


def analyse_audience(wh: Warehouse, name: str, version: int | None = None,
                     rfm_model: str | None = "rfm_default",
                     catalog: Catalog | None = None) -> AudienceAnalysis:
    catalog = catalog or Catalog.load()
    users = catalog.relation("user_tags")
    require_table(wh, users, "user_tags")
    kept = versions(wh, name)
    built = latest(wh, name) if version is None else next((v for v in kept if v["version"] == version), None)
    if built is None:
        raise UserError(f"audience {name!r} has no built version"
                        + (f" {version} (kept: {[v['version'] for v in kept]})" if version
                           else f"; run oa audience build {name}"))
    v = int(built["version"])
    joined = (f"{users} as t left join (select one_id as member from {MEMBERS} where audience = %s "
              f"and version = %s) as m on m.member = t.one_id")
    params = [name, v]
    cat = wh.query_df(f"select tag_name, label, tag_type, delimiter from {catalog.relation('tag_catalogue')}")
    with wh.connect() as conn:  # one connection for the hundred-odd small queries
        counts = {}
        for row in cat.itertuples(index=False):
            counts[row.tag_name] = _tag_counts(lambda sql, p: wh.execute(conn, sql, p), wh.engine,
                                               joined, params, row)
        population, size = (int(x) for x in wh.execute(
            conn, f"select count(*), count(m.member) from {joined}", params)[0])
    tags: list[TagComparison] = []
    for row in cat.itertuples(index=False):
        df = counts[row.tag_name]
        if df is None:
            continue
        df = _compare(df, size, population)
        test = None if row.tag_type == "multi_value" else _test(df, size)
        chi2, dof, p, cv = test if test else (None, None, None, None)
        tags.append(TagComparison(row.tag_name, row.label, row.tag_type, df, chi2, dof, p, cv))
    tested = [t for t in tags if t.p_value is not None]
    tested.sort(key=lambda t: (t.p_value, -t.cramers_v))
    top = pd.DataFrame([{"tag": t.tag, "label": t.label, "chi2": t.chi2, "dof": t.dof,
                         "p_value": t.p_value, "cramers_v": t.cramers_v,
                         "most_over_represented": _most_over(t.values)}
                        for t in tested[:TOP_TAGS]])
    rfm = None
    if rfm_model:
        rfm = _rfm(wh, catalog, rfm_model, name, v, size, population)
    history = pd.DataFrame(versions(wh, name, kept_only=False))
    return AudienceAnalysis(name, v, built["built_at"], built["as_of"], size, population, tags, top,
                            rfm_model if rfm is not None else None, rfm, history)


def _most_over(df: pd.DataFrame) -> str:
    ranked = df[df["audience"] > 0].dropna(subset=["tgi"]).sort_values("tgi", ascending=False)
    if ranked.empty:
        return ""
    top = ranked.iloc[0]
    return f"{top['value']} (TGI {int(top['tgi'])})"


def _tag_counts(query, engine: str, joined: str, params: list, row) -> pd.DataFrame | None:
    col = f"t.{qident(row.tag_name)}"
    if row.tag_type == "multi_value":
        split = split_values(engine, col)
        rows = query(f"select trim(v), count(distinct one_id), count(distinct member) from "
                        f"(select t.one_id, m.member, {split} as v from {joined} where {col} is not null) "
                        f"as x where trim(v) <> '' group by trim(v)",
                        [str(row.delimiter or ","), *params])
        if len(rows) > MULTI_VALUE_LIMIT:
            return None
        df = pd.DataFrame(rows, columns=["value", "population", "audience"])
    elif row.tag_type == "numeric":
        lo, hi = query(f"select min({col}), max({col}) from {joined}", params)[0]
        if lo is None:
            return None
        step = nice_step(float(hi) - float(lo))
        start = math.floor(float(lo) / step) * step
        bucket = f"floor(({col} - {float(start)!r}) / {float(step)!r})"
        rows = query(f"select {bucket}, count(*), count(m.member) from {joined} "
                        f"where {col} is not null group by {bucket} order by 1", params)
        df = pd.DataFrame([(f"[{_fmt(start + int(b) * step)}, {_fmt(start + (int(b) + 1) * step)})",
                            p, a) for b, p, a in rows], columns=["value", "population", "audience"])
    elif row.tag_type in ("enum", "text"):
        rows = query(f"select {col}, count(*), count(m.member) from {joined} "
                        f"where {col} is not null group by {col}", params)
        if row.tag_type == "text" and len(rows) > TEXT_LIMIT:
            return None
        df = pd.DataFrame([(str(v), p, a) for v, p, a in rows],
                          columns=["value", "population", "audience"])
        df = df.sort_values(["population", "value"], ascending=[False, True])
    else:
        return None  # dates: a month per value says little about an audience
    nulls = query(f"select count(*), count(m.member) from {joined} where {col} is null", params)[0]
    if nulls[0]:
        df = pd.concat([df, pd.DataFrame([{"value": NULL_LABEL, "population": nulls[0],
                                           "audience": nulls[1]}])], ignore_index=True)
    df[["population", "audience"]] = df[["population", "audience"]].astype("int64")
    return df.reset_index(drop=True)


def _rfm(wh: Warehouse, catalog: Catalog, model: str, name: str, version: int, size: int,
         population: int) -> pd.DataFrame | None:
    models = catalog.rfm_models()
    if model not in models:
        raise UserError(f"unknown RFM model {model!r} (one of {', '.join(models)})")
    relation = models[model].relation
    if not wh.table_exists(*relation.replace('"', "").split(".")):
        return None
    rows = wh.query(f"select s.rfm_segment, s.label, s.sort_order, count(r.one_id), count(m.one_id) "
                    f"from {catalog.relation('rfm_segments')} as s "
                    f"left join {relation} as r on r.rfm_segment = s.rfm_segment "
                    f"left join (select one_id from {MEMBERS} where audience = %s and version = %s) as m "
                    f"on m.one_id = r.one_id group by s.rfm_segment, s.label, s.sort_order "
                    f"order by s.sort_order", [name, version])
    df = pd.DataFrame(rows, columns=["segment", "label", "sort_order", "population", "audience"])
    scored = int(df["audience"].sum())
    df = _compare(df.drop(columns="sort_order"), size, population)
    df.attrs["not_scored"] = size - scored
    return df
