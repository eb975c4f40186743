"""The analysis reports: RFM, AIPL, tag pivots and audiences as self-contained HTML pages
(`core/report.py` renders them)."""

from __future__ import annotations

from openaudience.analysis import charts
from openaudience.analysis.aipl import AiplFlow
from openaudience.analysis.pivot import TagDistribution
from openaudience.analysis.rfm import BUBBLES, RfmAnalysis
from openaudience.core.report import Page


def _money(x: float) -> str:
    return f"{x:,.2f}"


def rfm_page(a: RfmAnalysis) -> Page:
    m = a.model
    window = f"last {m.window_days} days" if m.window_days else "all history"
    page = Page(f"RFM analysis: {m.name}",
                f"{m.input} input, {window}, as of {a.as_of}; comparison values R "
                f"{a.comparisons['r']:.2f}, F {a.comparisons['f']:.2f}, M {a.comparisons['m']:.2f}")
    page.heading("Core metrics")
    page.metrics({
        "transacting users": f"{a.core['transacting_users']:,}",
        "amount": _money(a.core["amount"]),
        "amount per user": _money(a.core["per_capita_amount"]),
        "purchases per user": f"{a.core['per_capita_frequency']:.2f}",
    })
    page.chart(charts.rfm_trend(a))
    page.heading("User types")
    page.chart(charts.rfm_segments(a, "users"))
    page.chart(charts.rfm_segments(a, "amount"))
    seg = a.segments[["label", "rfm_code", "users", "share", "amount", "frequency",
                      "per_capita_amount", "per_capita_frequency"]]
    page.table(seg, {"users": ",", "share": ".1%", "amount": ",.2f", "frequency": ",.0f",
                     "per_capita_amount": ",.2f", "per_capita_frequency": ".2f"})
    page.heading("Consumption distribution")
    for key in BUBBLES:
        page.chart(charts.rfm_bubble(a, key))
    page.heading("Sample users per type")
    page.note("The five highest spenders of each type.")
    page.table(a.samples, {"monetary": ",.2f"})
    return page


def aipl_page(f: AiplFlow) -> Page:
    page = Page(f"AIPL flow: {f.model.name}", f"{f.start} to {f.end}. {f.model.description}")
    page.heading("Stages")
    page.chart(charts.aipl_counts(f))
    page.heading("Conversion, retention and churn")
    page.chart(charts.aipl_flow(f))
    cols = ["stage_name", "start", "end", "change", "retained", "to_A", "to_I", "to_P", "to_L",
            "churned", "churn_rate", "identity_holds"]
    page.table(f.stages[cols], {"churn_rate": ".1%"})
    page.note("For every stage X: users in X at the start = retained + converted to each other "
              "stage + churned (in no stage at the end); identity_holds checks it.")
    page.heading("Trend")
    page.chart(charts.aipl_trend(f))
    return page


def pivot_page(dists: list[TagDistribution], exclude_null: bool) -> Page:
    page = Page("Pivot analysis", f"{len(dists)} tag(s) over user_tags; null filter "
                f"{'on' if exclude_null else 'off'}")
    for d in dists:
        page.heading(f"{d.label} ({d.tag}, {d.tag_type})")
        page.note(f"{d.value_count} values, {d.nulls:,} users without a value; "
                  f"shown as {d.chart.replace('_', ' ')}.")
        page.chart(charts.pivot_chart(d), scroll=d.chart == "scroll_bar")
        page.table(d.values, {"users": ",", "share": ".1%"})
    return page


def audience_page(a) -> Page:
    """The audience analysis (openaudience.analysis.audience.AudienceAnalysis)."""
    page = Page(f"Audience analysis: {a.name}",
                f"version {a.version}, built {a.built_at:%Y-%m-%d %H:%M} UTC as of {a.as_of}; "
                f"compared with all {a.population:,} people in user_tags")
    page.metrics({"members": f"{a.size:,}", "population": f"{a.population:,}",
                  "share of population": f"{a.size / a.population:.2%}" if a.population else "–",
                  "tags compared": str(len(a.tags))})
    if len(a.history) > 1:
        page.chart(charts.audience_size_history(a.history, a.name))
    page.heading(f"The {len(a.top)} most significant tags")
    page.note("Chi-square test of independence between membership and the tag's values (empty "
              "included), ranked by p-value, then by Cramér's V. TGI = round(audience share / "
              "population share × 100); above 100 the value is over-represented.")
    if not a.top.empty:
        page.table(a.top, {"chi2": ",.1f", "p_value": ".3g", "cramers_v": ".3f"})
    by_tag = {t.tag: t for t in a.tags}
    for tag in a.top["tag"] if not a.top.empty else []:
        t = by_tag[tag]
        page.heading(f"{t.label} ({t.tag}, {t.tag_type})")
        page.chart(charts.audience_vs_population(t.values, f"{t.label}: audience vs population"),
                   scroll=len(t.values) > 10)
        page.table(t.values, {"audience": ",", "population": ",", "audience_share": ".1%",
                              "population_share": ".1%"})
    if a.rfm is not None:
        page.heading(f"RFM composition ({a.rfm_model})")
        not_scored = a.rfm.attrs.get("not_scored", 0)
        page.note(f"{not_scored:,} member(s) have no RFM type in {a.rfm_model} (no purchase in its "
                  "window); shares are of all members and of the whole population.")
        rfm = a.rfm.rename(columns={"label": "type"})
        page.chart(charts.audience_vs_population(rfm, "RFM types", "type"))
        page.table(a.rfm, {"audience": ",", "population": ",", "audience_share": ".1%",
                           "population_share": ".1%"})
    others = [t for t in a.tags if t.tag not in set(a.top["tag"] if not a.top.empty else [])]
    if others:
        page.heading("Other tags")
        page.note("Multi-value tags (a person counts once per value, so no test) and tags "
                  "outside the top ten.")
        for t in others:
            chart = charts.audience_vs_population(t.values, f"{t.label} ({t.tag})")
            page.chart(chart, scroll=len(t.values) > 10)
    return page
