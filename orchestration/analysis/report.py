"""Self-contained HTML reports and PNG charts.

A report is one HTML file: the Vega, Vega-Lite and vega-embed libraries are inlined (from
vl-convert, so nothing is fetched when the page is opened), followed by each chart's spec. PNGs
come from the same specs, rendered without a browser.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import altair as alt
import pandas as pd
import vl_convert as vlc

from orchestration.analysis import charts
from orchestration.analysis.aipl import AiplFlow
from orchestration.analysis.pivot import TagDistribution
from orchestration.analysis.rfm import BUBBLES, RfmAnalysis

# the Vega-Lite version Altair writes specs for, rendered by the same version in vl-convert
VL_VERSION = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


@cache
def _bundle() -> str:
    return vlc.javascript_bundle(vl_version=VL_VERSION)


def chart_png(chart: alt.TopLevelMixin, scale: float = 1.5) -> bytes:
    return vlc.vegalite_to_png(chart.to_dict(), vl_version=VL_VERSION, scale=scale)


@dataclass
class Page:
    title: str
    subtitle: str = ""
    parts: list[str] = field(default_factory=list)
    specs: dict[str, dict] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str) -> None:
        self.parts.append(f"<p class='note'>{html.escape(text)}</p>")

    def metrics(self, items: dict[str, str]) -> None:
        cells = "".join(f"<div class='metric'><div class='value'>{html.escape(v)}</div>"
                        f"<div class='label'>{html.escape(k)}</div></div>" for k, v in items.items())
        self.parts.append(f"<div class='metrics'>{cells}</div>")

    def chart(self, chart: alt.TopLevelMixin | None, scroll: bool = False) -> None:
        if chart is None:
            return
        chart_id = f"chart{len(self.specs) + 1}"
        self.specs[chart_id] = chart.to_dict()
        box = " scroll" if scroll else ""
        self.parts.append(f"<div class='chart{box}' id='{chart_id}'></div>")

    def table(self, df: pd.DataFrame, formats: dict[str, str] | None = None) -> None:
        formats = formats or {}
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
        body = []
        for row in df.itertuples(index=False):
            cells = []
            for col, value in zip(df.columns, row, strict=True):
                fmt = formats.get(col)
                if value is None or (not isinstance(value, str) and pd.isna(value)):
                    text = "–"
                else:
                    text = format(value, fmt) if fmt else str(value)
                cells.append(f"<td>{html.escape(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def render(self) -> str:
        generated = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        specs = json.dumps(self.specs).replace("</", "<\\/")
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(self.title)}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }}
  h1 {{ margin-bottom: 0.2rem; }} h2 {{ margin-top: 2.2rem; border-bottom: 1px solid #ddd; }}
  .subtitle, .note, footer {{ color: #666; }}
  .metrics {{ display: flex; gap: 1rem; flex-wrap: wrap; }}
  .metric {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 140px; }}
  .metric .value {{ font-size: 1.4rem; font-weight: 600; }} .metric .label {{ color: #666; }}
  .chart {{ margin: 1rem 0; }} .chart.scroll {{ max-height: 420px; overflow-y: auto; }}
  table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
  th, td {{ border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }}
  th:first-child, td:first-child {{ text-align: left; }}
</style>
<script type="text/javascript">
{_bundle()}
</script>
</head>
<body>
<h1>{html.escape(self.title)}</h1>
<p class="subtitle">{html.escape(self.subtitle)}</p>
{chr(10).join(self.parts)}
<footer><p>OpenAudience report, generated {generated}.</p></footer>
<script type="text/javascript">
  const specs = {specs};
  for (const [id, spec] of Object.entries(specs)) {{
    vegaEmbed('#' + id, spec, {{renderer: 'svg', actions: false}}).catch(console.error);
  }}
</script>
</body>
</html>
"""


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
    """The audience analysis (orchestration.analysis.audience.AudienceAnalysis)."""
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


def write(page: Page, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page.render(), encoding="utf-8")
    tmp.replace(path)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]
