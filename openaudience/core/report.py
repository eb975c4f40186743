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


def write(page: Page, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page.render(), encoding="utf-8")
    tmp.replace(path)
    return path


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]
