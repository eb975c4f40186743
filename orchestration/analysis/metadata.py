"""Charts as Dagster asset metadata: PNG images (markdown with a data URI) for the RFM model
assets and aipl_daily, so the charts of the reports also show in the Dagster UI."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import dagster as dg

from orchestration.analysis import charts
from orchestration.analysis.aipl import TREND_DAYS, analyse_aipl
from orchestration.analysis.catalog import Catalog
from orchestration.analysis.report import chart_png
from orchestration.analysis.rfm import analyse_rfm
from orchestration.warehouse import Warehouse


def png_markdown(chart: Any, title: str) -> dg.MetadataValue:
    data = base64.b64encode(chart_png(chart)).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{data})")


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
