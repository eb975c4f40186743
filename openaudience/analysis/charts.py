"""Vega-Lite charts (through Altair) for the analyses. Each function returns an Altair chart;
``report`` embeds them in HTML or renders them to PNG."""

from __future__ import annotations

import altair as alt
import pandas as pd

from openaudience.analysis.aipl import STAGE_NAMES, AiplFlow
from openaudience.analysis.pivot import TagDistribution
from openaudience.analysis.rfm import BUBBLES, RfmAnalysis

WIDTH = 560
STAGE_COLOURS = {"awareness": "#9ecae1", "interest": "#4292c6", "purchase": "#f16913",
                 "loyalty": "#a63603", "none": "#bdbdbd"}


def _stage_scale(with_none: bool = True) -> alt.Scale:
    names = [n for n in STAGE_COLOURS if with_none or n != "none"]
    return alt.Scale(domain=names, range=[STAGE_COLOURS[n] for n in names])


# -- RFM -----------------------------------------------------------------------------------------
def rfm_segments(analysis: RfmAnalysis, measure: str = "users") -> alt.Chart:
    titles = {"users": "Users", "amount": "Amount", "frequency": "Purchases"}
    df = analysis.segments[["label", "rfm_code", "sort_order", "users", "share", "amount",
                            "frequency", "per_capita_amount", "per_capita_frequency"]]
    return alt.Chart(df, title=f"RFM user types by {titles[measure].lower()}").mark_bar().encode(
        x=alt.X(f"{measure}:Q", title=titles[measure]),
        y=alt.Y("label:N", sort=alt.SortField("sort_order"), title=None),
        color=alt.Color("rfm_code:N", legend=None),
        tooltip=[alt.Tooltip("label:N", title="type"), alt.Tooltip("rfm_code:N", title="code"),
                 alt.Tooltip("users:Q", format=","), alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("per_capita_amount:Q", format=",.2f", title="amount per user"),
                 alt.Tooltip("per_capita_frequency:Q", format=".2f", title="purchases per user")],
    ).properties(width=WIDTH)


def rfm_bubble(analysis: RfmAnalysis, key: str) -> alt.Chart:
    x, y, size, title = BUBBLES[key]
    names = {"r_score": "R score", "f_score": "F score", "m_score": "M score"}
    df = analysis.bubbles[key]
    return alt.Chart(df, title=f"{key}: {title}").mark_circle(opacity=0.75).encode(
        x=alt.X("x:O", title=names[x]),
        y=alt.Y("y:O", title=names[y], sort="descending"),
        size=alt.Size("size:Q", title=f"mean {names[size]}", scale=alt.Scale(zero=False)),
        color=alt.Color("users:Q", title="users", scale=alt.Scale(scheme="blues")),
        tooltip=[alt.Tooltip("x:O", title=names[x]), alt.Tooltip("y:O", title=names[y]),
                 alt.Tooltip("size:Q", format=".2f", title=f"mean {names[size]}"),
                 alt.Tooltip("users:Q", format=","),
                 alt.Tooltip("per_capita_amount:Q", format=",.2f", title="amount per user"),
                 alt.Tooltip("per_capita_frequency:Q", format=".2f", title="purchases per user")],
    ).properties(width=260, height=220)


def rfm_trend(analysis: RfmAnalysis) -> alt.Chart | None:
    if analysis.trend is None or analysis.trend.empty:
        return None
    long = analysis.trend.melt(id_vars="day", value_vars=["amount", "users"], var_name="metric")
    return alt.Chart(long, title="Daily transactions of the model's users").mark_line().encode(
        x=alt.X("day:T", title=None),
        y=alt.Y("value:Q", title=None),
        row=alt.Row("metric:N", title=None),
        tooltip=[alt.Tooltip("day:T"), alt.Tooltip("metric:N"), alt.Tooltip("value:Q", format=",.2f")],
    ).properties(width=WIDTH, height=120).resolve_scale(y="independent")


# -- AIPL ----------------------------------------------------------------------------------------
def aipl_counts(flow: AiplFlow) -> alt.Chart:
    df = flow.stages.melt(id_vars=["stage", "stage_name"], value_vars=["start", "end"],
                          var_name="day", value_name="users")
    df["day"] = df["day"].map({"start": str(flow.start), "end": str(flow.end)})
    order = list(STAGE_NAMES.values())
    return alt.Chart(df, title="Users per stage").mark_bar().encode(
        x=alt.X("stage_name:N", sort=order, title=None),
        xOffset=alt.XOffset("day:N"),
        y=alt.Y("users:Q", title="users"),
        color=alt.Color("day:N", title="day"),
        tooltip=["stage_name:N", "day:N", alt.Tooltip("users:Q", format=",")],
    ).properties(width=WIDTH, height=220)


def aipl_flow(flow: AiplFlow) -> alt.Chart:
    rows = []
    for r in flow.stages.itertuples():
        rows.append({"from": r.stage_name, "to": r.stage_name, "kind": "retained", "users": r.retained})
        for y, name in STAGE_NAMES.items():
            if y != r.stage:
                rows.append({"from": r.stage_name, "to": name, "kind": "converted",
                             "users": getattr(r, f"to_{y}")})
        rows.append({"from": r.stage_name, "to": "none", "kind": "churned", "users": r.churned})
    df = pd.DataFrame(rows)
    return alt.Chart(df, title=f"Where {flow.start}'s users are on {flow.end}").mark_bar().encode(
        x=alt.X("users:Q", stack="zero", title="users"),
        y=alt.Y("from:N", sort=list(STAGE_NAMES.values()), title=f"stage on {flow.start}"),
        color=alt.Color("to:N", scale=_stage_scale(), title=f"stage on {flow.end}"),
        order=alt.Order("kind:N"),
        tooltip=["from:N", "to:N", "kind:N", alt.Tooltip("users:Q", format=",")],
    ).properties(width=WIDTH, height=200)


def aipl_trend(flow: AiplFlow) -> alt.Chart:
    df = flow.trend.assign(stage_name=flow.trend["stage"].map(STAGE_NAMES))
    return alt.Chart(df, title="Daily users per stage").mark_line(point=True).encode(
        x=alt.X("stat_date:T", title=None),
        y=alt.Y("users:Q", title="users"),
        color=alt.Color("stage_name:N", scale=_stage_scale(with_none=False), title="stage"),
        tooltip=[alt.Tooltip("stat_date:T", title="day"), "stage_name:N",
                 alt.Tooltip("users:Q", format=",")],
    ).properties(width=WIDTH, height=220)


# -- pivot ---------------------------------------------------------------------------------------
def pivot_chart(dist: TagDistribution) -> alt.Chart:
    df = dist.values.assign(rank=range(len(dist.values)))
    tooltip = [alt.Tooltip("value:N", title=dist.label), alt.Tooltip("users:Q", format=","),
               alt.Tooltip("share:Q", format=".1%")]
    title = f"{dist.label} ({dist.tag})"
    if dist.chart == "pie":
        return alt.Chart(df, title=title).mark_arc(innerRadius=40).encode(
            theta=alt.Theta("users:Q"),
            color=alt.Color("value:N", sort=alt.SortField("rank"), title=dist.label),
            order=alt.Order("rank:Q"),
            tooltip=tooltip,
        ).properties(width=260, height=260)
    if dist.chart == "bar":
        return alt.Chart(df, title=title).mark_bar().encode(
            x=alt.X("value:N", sort=alt.SortField("rank"), title=None),
            y=alt.Y("users:Q", title="users"),
            color=alt.Color("value:N", legend=None),
            tooltip=tooltip,
        ).properties(width=WIDTH, height=240)
    # many values: horizontal bars in a scrolling box (see report.SCROLL)
    return alt.Chart(df, title=title).mark_bar().encode(
        y=alt.Y("value:N", sort=alt.SortField("rank"), title=None),
        x=alt.X("users:Q", title="users"),
        tooltip=tooltip,
    ).properties(width=WIDTH - 120, height=max(200, 18 * len(df)))


# -- audiences -----------------------------------------------------------------------------------
def audience_size_history(history: pd.DataFrame, name: str) -> alt.Chart:
    """Size per build (columns version, built_at, size, added, removed)."""
    df = history[["version", "built_at", "size", "added", "removed"]].assign(
        built_at=pd.to_datetime(history["built_at"]))
    base = alt.Chart(df, title=f"{name}: size by build")
    tooltip = [alt.Tooltip("version:Q"), alt.Tooltip("built_at:T", format="%Y-%m-%d %H:%M"),
               alt.Tooltip("size:Q", format=","), alt.Tooltip("added:Q", format=",", title="+"),
               alt.Tooltip("removed:Q", format=",", title="−")]
    line = base.mark_line(point=True).encode(
        x=alt.X("built_at:T", title="built at"), y=alt.Y("size:Q", title="members"),
        tooltip=tooltip)
    return line.properties(width=WIDTH, height=220)


def audience_vs_population(values: pd.DataFrame, title: str, value_col: str = "value") -> alt.Chart:
    """Shares of each value in the audience and in the population, side by side, TGI on hover."""
    long = values.melt(id_vars=[value_col, "tgi", "audience", "population"],
                       value_vars=["audience_share", "population_share"],
                       var_name="group", value_name="share")
    long["group"] = long["group"].str.replace("_share", "", regex=False)
    order = list(values[value_col])
    return alt.Chart(long, title=title).mark_bar().encode(
        y=alt.Y(f"{value_col}:N", sort=order, title=None),
        yOffset=alt.YOffset("group:N", sort=["audience", "population"]),
        x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share"),
        color=alt.Color("group:N", scale=alt.Scale(domain=["audience", "population"],
                                                   range=["#f16913", "#9ecae1"]), title=None),
        tooltip=[alt.Tooltip(f"{value_col}:N", title="value"), alt.Tooltip("group:N"),
                 alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("tgi:Q", title="TGI"),
                 alt.Tooltip("audience:Q", format=","), alt.Tooltip("population:Q", format=",")],
    ).properties(width=WIDTH)
