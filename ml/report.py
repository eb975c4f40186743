"""The repurchase model's report: what it saw, how it was validated, and how good it is against
the baselines. One self-contained HTML page, and the same charts as PNG for Dagster."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from openaudience.core.report import Page, chart_png, write


def top_share_chart(top: pd.DataFrame) -> alt.Chart:
    rows = []
    for r in top.itertuples():
        for measure in ("precision", "recall"):
            rows.append({"group": r.group, "measure": measure, "who": "model",
                         "value": getattr(r, measure)})
            rows.append({"group": r.group, "measure": measure, "who": "random group",
                         "value": getattr(r, f"random_{measure}")})
    return alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        x=alt.X("who:N", title=None), y=alt.Y("value:Q", axis=alt.Axis(format="%"), title=None),
        color=alt.Color("who:N", title=None), column=alt.Column("group:N", title=None),
        row=alt.Row("measure:N", title=None),
        tooltip=["group", "measure", "who", alt.Tooltip("value:Q", format=".1%")],
    ).properties(width=110, height=140, title="Precision and recall of the top groups vs random groups")


def calibration_chart(cal: pd.DataFrame) -> alt.LayerChart:
    line = alt.Chart(cal).mark_line(point=True).encode(
        x=alt.X("predicted:Q", title="predicted probability", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("observed:Q", title="observed share who bought", scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("predicted:Q", format=".2f"), alt.Tooltip("observed:Q", format=".2f")])
    diagonal = alt.Chart(pd.DataFrame({"predicted": [0, 1], "observed": [0, 1]})).mark_line(
        strokeDash=[4, 4], color="#999").encode(x="predicted:Q", y="observed:Q")
    return (diagonal + line).properties(width=360, height=300,
                                        title="Calibration (deciles of the validation set)")


def importance_chart(imp: pd.DataFrame, top: int = 10) -> alt.Chart:
    return alt.Chart(imp.head(top)).mark_bar().encode(
        x=alt.X("importance:Q", title="drop in validation AUC when shuffled"),
        y=alt.Y("feature:N", sort="-x", title=None),
        tooltip=["feature", alt.Tooltip("importance:Q", format=".4f")],
    ).properties(width=420, height=24 * min(top, len(imp)), title="Top features by permutation importance")


def score_histogram(scores: np.ndarray, title: str) -> alt.Chart:
    edges = np.linspace(0, 1, 21)
    counts, _ = np.histogram(np.clip(scores, 0, 1), bins=edges)
    at_least = counts[::-1].cumsum()[::-1]
    df = pd.DataFrame({"from": edges[:-1], "to": edges[1:], "users": counts, "at_least": at_least})
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("from:Q", bin="binned", title="probability of buying again within the horizon"),
        x2="to:Q", y=alt.Y("users:Q", title="people"),
        tooltip=[alt.Tooltip("from:Q", format=".2f", title="score from"),
                 alt.Tooltip("users:Q", format=",", title="people at this score"),
                 alt.Tooltip("at_least:Q", format=",", title="people at or above it")],
    ).properties(width=520, height=220, title=title)


def charts(training, scores: np.ndarray | None = None) -> dict[str, alt.TopLevelMixin]:
    out = {"top_groups": top_share_chart(training.top_shares),
           "calibration": calibration_chart(training.calibration),
           "importance": importance_chart(training.importance),
           "validation_scores": score_histogram(training.validation_scores, "Validation scores")}
    if scores is not None:
        out["scores"] = score_histogram(scores, "Scores at the as-of date")
    return out


def page(training, scoring=None) -> Page:
    c = training.config
    m = training.metrics
    p = Page(f"Repurchase model, version {training.version}",
             f"buys again within {c.horizon_days} days; trained on cutoffs "
             f"{', '.join(training.cutoffs['train'])} ({training.rows['train']:,} rows), validated on "
             f"{', '.join(training.cutoffs['validate'])} ({training.rows['validate']:,} people)"
             + (f"; learnt from {training.source}" if getattr(training, "source", "") else ""))
    p.metrics({"AUC": f"{m['model']['auc']:.3f}", "PR-AUC": f"{m['model']['pr_auc']:.3f}",
               "top 25% precision": f"{m['model']['precision_top25']:.1%}",
               "random group": f"{m['model']['random_precision_top25']:.1%}",
               "lift, top 5%": f"{m['model']['lift_top5']:.2f}×"})
    for w in training.warnings + getattr(training, "cautions", []):
        p.note("Warning: " + w)
    chosen = getattr(training, "chosen", "gboost")
    p.heading("Against the baselines, on the same validation people")
    p.note(f"model: the chosen candidate ({chosen}, chosen by AUC on the "
           f"{getattr(training, 'chosen_on', '') or 'training cutoffs'}). gboost: gradient boosting, "
           "calibrated on whole training cutoffs left out in turn; logistic: logistic regression on "
           "standardised features; bgnbd: the buy-till-you-die model fitted at each cutoff "
           f"(on the training cutoffs together: r={training.bgnbd.r:.3g}, α={training.bgnbd.alpha:.3g}, "
           f"a={training.bgnbd.a:.3g}, b={training.bgnbd.b:.3g}), ranking by expected purchases; "
           "heuristic: recent and frequent buyers first. All but the heuristic also see BG/NBD's "
           "expected purchases and P(alive) as features.")
    table = pd.DataFrame([{"model": name, **{k: v for k, v in values.items() if k not in ("brier", "ece")}}
                          for name, values in m.items()])
    p.table(table, {"auc": ".3f", "pr_auc": ".3f", "precision_top25": ".1%",
                    "random_precision_top25": ".1%", "lift_top5": ".2f"})
    if getattr(training, "selection", None):
        p.note("AUC where the model was chosen: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                             training.selection.items()))
    p.heading("Precision and recall against a random group of the same size (the manual's chart)")
    p.chart(top_share_chart(training.top_shares))
    p.table(training.top_shares, {"users": ",", "precision": ".1%", "recall": ".1%",
                                  "random_precision": ".1%", "random_recall": ".1%", "lift": ".2f"})
    p.heading("Calibration")
    p.note("Predicted probability against the share who really bought, per decile of the "
           "validation scores; the dashed line is perfect calibration."
           + (f" Brier score {m['model']['brier']:.3f}; expected calibration error "
              f"{m['model']['ece']:.3f} (the mean gap, weighted by decile)." if "ece" in m["model"] else ""))
    p.chart(calibration_chart(training.calibration))
    p.heading("What the model relies on")
    p.chart(importance_chart(training.importance))
    p.heading("Scores")
    p.chart(score_histogram(training.validation_scores, "Validation scores"))
    if scoring is not None:
        p.note(f"{scoring.users:,} predictable people scored as of {scoring.as_of} with version "
               f"{scoring.version}.")
        p.chart(score_histogram(scoring.scores, "Scores at the as-of date"))
        for w in scoring.warnings:
            p.note("Warning: " + w)
    return p


def write_report(training, folder: Path, scoring=None) -> Path:
    return write(page(training, scoring), folder / f"repurchase_v{training.version:04d}.html")


def pngs(training, scoring=None) -> dict[str, bytes]:
    return {name: chart_png(chart) for name, chart in
            charts(training, scoring.scores if scoring is not None else None).items()}


# -- recommendation -------------------------------------------------------------------------------
def recommend_metrics_chart(test: pd.DataFrame) -> alt.Chart:
    long = test.melt(id_vars=["model"], value_vars=["hr@3", "hr@10", "recall@3", "recall@10", "ndcg@3",
                                                      "ndcg@10"], var_name="metric")
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("model:N", title=None, sort=["popularity", "cosine", "ease", "ease_recency"]),
        y=alt.Y("value:Q", title=None), color=alt.Color("model:N", title=None),
        column=alt.Column("metric:N", title=None),
        tooltip=["model", "metric", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=80, height=180, title="The last purchase day after the cutoff, full ranking")


def association_chart(nodes: pd.DataFrame, graph: pd.DataFrame) -> alt.LayerChart:
    """The top products by purchases and their strongest links, on a circle: circle size is
    purchases, line darkness the link weight (0-1)."""
    n = len(nodes)
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pos = nodes.assign(x=np.cos(angle), y=np.sin(angle))
    where = pos.set_index("item_id")[["x", "y"]]
    edges = graph.assign(x=where.loc[graph["from"], "x"].to_numpy(),
                         y=where.loc[graph["from"], "y"].to_numpy(),
                         x2=where.loc[graph["to"], "x"].to_numpy(), y2=where.loc[graph["to"], "y"].to_numpy())
    axis = alt.Axis(labels=False, ticks=False, grid=False, title=None, domain=False)
    lines = alt.Chart(edges).mark_rule().encode(
        x=alt.X("x:Q", axis=axis), y=alt.Y("y:Q", axis=axis), x2="x2:Q", y2="y2:Q",
        opacity=alt.Opacity("weight:Q", scale=alt.Scale(domain=[0, 1]), legend=None),
        strokeWidth=alt.value(2),
        tooltip=["from", "to", alt.Tooltip("weight:Q", format=".2f")])
    points = alt.Chart(pos).mark_circle().encode(
        x="x:Q", y="y:Q", size=alt.Size("purchases:Q", legend=None),
        color=alt.Color("top:N", title="top 10 by purchases"), tooltip=["item_id", "purchases"])
    labels = alt.Chart(pos).mark_text(dy=-12, fontSize=10).encode(x="x:Q", y="y:Q", text="item_id:N")
    return (lines + points + labels).properties(width=460, height=460,
                                                title="Top products and their strongest co-purchase links")


def recommend_charts(training) -> dict[str, alt.TopLevelMixin]:
    return {"metrics": recommend_metrics_chart(training.test),
            "association": association_chart(training.nodes, training.graph)}


def recommend_page(training, tasks=()) -> Page:
    name, params = training.chosen
    p = Page(f"Recommendation model, version {training.version}",
             f"{training.people:,} buyers and {training.products:,} products in the lookback window up to "
             f"{training.as_of}; chosen: {name} {params}")
    test = training.test.set_index("model")
    p.metrics({"HR@10": f"{test.loc[name, 'hr@10']:.3f}",
               "best sellers HR@10": f"{test.loc['popularity', 'hr@10']:.3f}",
               "NDCG@10": f"{test.loc[name, 'ndcg@10']:.3f}",
               "recall@10": f"{test.loc[name, 'recall@10']:.3f}",
               "HR@10, bought included": f"{test.loc[name, 'hr@10 incl']:.3f}"})
    for w in training.warnings:
        p.note("Warning: " + w)
    p.heading("Against the best sellers")
    p.note("Each model is fitted on every purchase up to a cutoff and nothing after it. The people "
           "judged bought before and after the cutoff: the products of their last purchase day after "
           "it are held out, and what they bought before that day is their history. Each model ranks "
           "every product. HR@K: a held-out product in the top K; recall@K: the share of held-out "
           "products there; NDCG@K: higher when they rank higher. "
           + _exclusion_note(getattr(training, "exclude", "auto")))
    p.chart(recommend_metrics_chart(training.test))
    fmt = {c: ".3f" for c in training.test.columns if "@" in c}
    p.table(training.test, fmt)
    p.heading("Tuning, on the window before")
    p.note("The hyper-parameters and the model are chosen here, by NDCG@10, so the table above "
           "judges them on purchases they were not chosen on.")
    p.table(training.tuning, fmt)
    p.heading("Product associations")
    p.chart(association_chart(training.nodes, training.graph))
    p.table(training.graph, {"weight": ".2f"})
    if tasks:
        p.heading("Tasks")
        p.table(pd.DataFrame([t.__dict__ for t in tasks]))
    return p


def _exclusion_note(policy) -> str:
    what = {True: "every product the person bought", False: "nothing",
            "auto": "the products the person bought that their buyers rarely buy again (exclude_purchased: "
                    "auto)"}[policy]
    return (f"The ranking leaves out {what}, as the tasks do, and those products held out are not "
            "counted; the columns marked 'incl' rank every product.")


def write_recommend_report(training, folder: Path, tasks=()) -> Path:
    return write(recommend_page(training, tasks), folder / f"recommend_v{training.version:04d}.html")
