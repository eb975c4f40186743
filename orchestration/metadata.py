"""Asset metadata, one way for every asset: charts as PNG images (markdown with a data URI), the
RFM and AIPL charts of the dbt models, and owners as Dagster wants them."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import dagster as dg

from openaudience.analysis import charts
from openaudience.analysis.aipl import TREND_DAYS, analyse_aipl
from openaudience.analysis.catalog import Catalog
from openaudience.analysis.rfm import analyse_rfm
from openaudience.core.report import chart_png
from openaudience.core.warehouse import Warehouse


def png_markdown(chart: Any, title: str) -> dg.MetadataValue:
    """A Vega-Lite chart as a PNG in markdown: the one form charts take in the Dagster UI."""
    data = base64.b64encode(chart_png(chart)).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


def sparkline(values: list[float], title: str, bars: bool = False) -> dg.MetadataValue:
    """A small SVG chart in markdown, kept under the 1,000 characters the Dagster UI shows
    inline (longer markdown, like the PNG charts, waits behind "Show Markdown"): the line of the
    last 40 values, or one bar per value."""
    values = [float(v) for v in values][-40:] or [0.0]
    width, height, pad = 240, 44, 3
    top = max(values) or 1.0
    step = (width - 2 * pad) / max(len(values) - (0 if bars else 1), 1)

    def y(v: float) -> int:
        return round(height - pad - (height - 2 * pad) * v / top)

    if bars:
        marks = "".join(f'<rect x="{round(pad + i * step)}" y="{y(v)}" width="{max(round(step) - 2, 1)}" '
                        f'height="{height - pad - y(v)}"/>' for i, v in enumerate(values))
        body = f'<g fill="#4f43dd">{marks}</g>'
    else:
        points = " ".join(f"{round(pad + i * step)},{y(v)}" for i, v in enumerate(values))
        body = f'<polyline fill="none" stroke="#4f43dd" stroke-width="2" points="{points}"/>'
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{body}</svg>'
    data = base64.b64encode(svg.encode("ascii")).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/svg+xml;base64,{data})")


def owners(owner: str) -> list[str]:
    """A file's `owner` as Dagster's owners: an e-mail address as it is, a team as `team:<name>`
    (written `crm` or `team:crm`)."""
    if not owner:
        return []
    return [owner if "@" in owner or owner.startswith("team:") else f"team:{owner}"]


def chart_metadata(warehouse: Warehouse, catalog: Catalog, node: dict[str, Any]) -> dict[str, Any]:
    """Metadata with charts for one dbt model node, or {} for models without charts."""
    meta = node.get("config", {}).get("meta") or {}
    if "rfm" in meta:
        a = analyse_rfm(warehouse, node["name"], catalog)
        return {
            "rfm_users": dg.MetadataValue.int(int(a.core["transacting_users"])),
            "rfm_segments_chart": png_markdown(charts.rfm_segments(a), "RFM user types"),
            "rfm_mf_r_chart": png_markdown(charts.rfm_bubble(a, "MF-R"), "MF-R"),
            "rfm_mr_f_chart": png_markdown(charts.rfm_bubble(a, "MR-F"), "MR-F"),
            "rfm_rf_m_chart": png_markdown(charts.rfm_bubble(a, "RF-M"), "RF-M"),
        }
    if "aipl" in meta:
        out: dict[str, Any] = {}
        for name, model in catalog.aipl_models().items():
            rows = warehouse.query(f"select min(stat_date), max(stat_date) from {model.relation} "
                                   f"where aipl_model = %s", [name])
            first, last = rows[0] if rows else (None, None)
            if last is None:
                continue
            end = _as_date(last)
            start = max(_as_date(first), end - dt.timedelta(days=TREND_DAYS - 1))
            flow = analyse_aipl(warehouse, name, start, end, catalog)
            out[f"aipl_{name}_trend_chart"] = png_markdown(charts.aipl_trend(flow), f"AIPL {name}")
            out[f"aipl_{name}_flow_chart"] = png_markdown(charts.aipl_flow(flow), f"AIPL {name} flow")
        return out
    return {}


def _as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else (
        value.date() if isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value)))
