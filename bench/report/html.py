"""report.html: one self-contained page, plotly.js embedded once, readable offline."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Sequence
from functools import lru_cache
from html import escape
from typing import TYPE_CHECKING

import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs

from bench.report import summary as summary_md
from bench.report.capabilities import CapabilityStatus, counts
from bench.report.charts import Chart
from bench.report.groups import Group
from bench.report.matrix import wide
from bench.report.runs import HEADERS, cells, summaries

if TYPE_CHECKING:
    from bench.report.build import Report

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 24px 48px; color: #212121; }
h1 { margin-bottom: 0; } h2 { margin-top: 40px; border-bottom: 1px solid #e0e0e0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #e0e0e0; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
tr.claimed td { font-style: italic; color: #616161;
  background: repeating-linear-gradient(135deg, #fafafa 0 8px, #f0f0f0 8px 16px); }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 11px;
         font-style: normal; font-weight: 600; }
.claimed-badge { border: 1px dashed #9e9e9e; color: #616161; }
.invalid, .fail { color: #c62828; font-weight: 600; } .pass { color: #2e7d32; font-weight: 600; }
.unsupported, .not-measured { color: #757575; }
figure { margin: 24px 0; } figcaption { color: #616161; font-size: 13px; }
.note { color: #616161; font-size: 13px; }
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]],
           classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _runs_section(groups: Sequence[Group]) -> str:
    rows = []
    for s in summaries(groups):
        texts = [escape(c) for c in cells(s)]
        cls = "pass" if s["excluded"] is None else "invalid"
        at = HEADERS.index("validity")
        texts[at] = f'<span class="{cls}">{texts[at]}</span>'
        rows.append(texts)
    return "<h2 id=\"runs\">Runs: provenance and validity</h2>" + _table(HEADERS, rows)


def _summary_section(report: Report) -> str:
    rows = [[escape(x.platform), escape(x.capacity), escape(x.latency), escape(x.verdict_text),
             escape(x.claims)] for x in report.summaries]
    left = summary_md.excluded_records(report.groups)
    noisy = summary_md.noisy_records(report.groups)
    note = ("<p class=\"note\"><b>Excluded runs:</b> none; every run is complete and "
            "valid.</p>") if not left else (
        f"<p><b class=\"invalid\">Excluded runs ({len(left)})</b>, left out of every figure, "
        "chart and verdict (shown under Runs for provenance):</p><ul>"
        + "".join(f"<li><code>{escape(str(e['run_id']))}</code> ({escape(e['platform'])}, "
                  f"{e['group']}): {escape(e['why'])}</li>" for e in left) + "</ul>")
    if noisy:
        note += (f"<p><b>Noisy runs ({len(noisy)})</b>, kept in the figures but no evidence "
                 "for a gate:</p><ul>" + "".join(
                     f"<li><code>{escape(str(e['run_id']))}</code> ({escape(e['platform'])}, "
                     f"{e['group']}): {escape(e['why'])}</li>" for e in noisy) + "</ul>")
    return ("<h2 id=\"summary\">Summary</h2>"
            f"<p>Platforms are compared at the {escape(report.common.note)}; capacity is the "
            "highest offered rate that held the SLO (<code>crmbench capacity</code>).</p>"
            + _table(["platform", "capacity", f"latency at {report.common.text}",
                      "capability verdicts", "claims"], rows) + note)


def _groups_section(groups: Sequence[Group]) -> str:
    rows = []
    for g in groups:
        r = summary_md.group_record(g)
        rows.append([escape(str(x)) for x in (
            r["group"], r["platform"], r["label"] or "—", r["scenario"], r["load"],
            r["fixture_size"], r["runs"], r["excluded"], summary_md.opt(r["p50_ms"]),
            summary_md.opt(r["p99_ms"]), summary_md.opt(r["achieved_rate"]))])
    return ("<h2 id=\"groups\">Groups</h2><p class=\"note\">Runs are pooled only within a "
            "group: same platform, configuration label, scenario, offered load (rate and "
            "users) and fixture size. Matrix cells name the group they come from.</p>"
            + _table(["group", "platform", "configuration", "scenario", "offered load",
                      "fixture size", "valid runs", "excluded", "p50 ms", "p99 ms",
                      "achieved req/s"], rows))


def _matrix_section(df: pl.DataFrame, platforms: Sequence[str], claims_line: str) -> str:
    rows, classes = [], []
    for rec in wide(df, platforms).iter_rows(named=True):
        claimed = rec["source"] == "claimed"
        label = ('<span class="badge claimed-badge">CLAIMED · not measured</span>' if claimed
                 else escape(rec["label"]))
        cells = []
        for p in platforms:
            text = rec[p]
            if text is None:
                cells.append("—")
            elif text.startswith("not-measured") or text == "unsupported":
                cells.append(f'<span class="not-measured">{escape(text)}</span>')
            elif text.startswith("fail") or "⚠" in text:
                cells.append(f'<span class="invalid">{escape(text)}</span>')
            else:
                cells.append(escape(text))
        rows.append([label, *cells])
        classes.append("claimed" if claimed else "")
    return ("<h2 id=\"matrix\">Comparative matrix</h2><p class=\"note\">Measured cells: median "
            "of the platform's runs, bootstrap 95% interval in brackets when repeated. Striped "
            f"rows are claimed figures from {escape(claims_line)}: quoted, never measured "
            "here, never merged with measurements.</p>"
            + _table(["dimension", *platforms], rows, classes))


def _charts_section(charts: Sequence[Chart]) -> str:
    parts = ["<h2 id=\"charts\">Charts</h2>"]
    for chart in charts:
        height = chart.figure.layout.height or 480
        parts.append(
            f"<figure><h3>{escape(chart.title)}</h3>"
            f'<div id="chart-{chart.key}" class="plotly-graph-div" '
            f'style="height:{height}px;width:100%"></div>'
            f"<figcaption>{escape(chart.caption)}</figcaption></figure>"
        )
    return "".join(parts)


def _packed_figures(charts: Sequence[Chart]) -> str:
    """Every chart's data and layout as one gzip-compressed, base64 JSON list."""
    specs = ",".join(
        f'{{"target":"chart-{chart.key}","figure":{pio.to_json(chart.figure, validate=False)}}}'
        for chart in charts
    )
    return _pack(f"[{specs}]")


def _pack(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), 9, mtime=0)).decode()


# plotly.js is 4.8 MB and the chart data grows with the run; gzip and base64 bring the
# page to about 2 MB. The page inflates both with the browser's own DecompressionStream
# (no network), then draws every figure.
_LOADER = """
(async () => {
  const inflate = async (id) => {
    const packed = document.getElementById(id).textContent;
    const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  };
  const script = document.createElement("script");
  script.text = await inflate("plotly-gz");
  document.head.appendChild(script);
  const config = {displaylogo: false, responsive: true};
  for (const spec of JSON.parse(await inflate("figures-gz"))) {
    Plotly.newPlot(spec.target, spec.figure.data, spec.figure.layout, config);
  }
})();
"""


@lru_cache(maxsize=1)
def _packed_plotlyjs() -> str:
    return _pack(get_plotlyjs())


def _capabilities_section(items: Sequence[CapabilityStatus]) -> str:
    parts = ["<h2 id=\"capabilities\">Capabilities</h2><p class=\"note\">Every capability id "
             "of the catalogue per platform: pass (verified on the target), fail, unsupported, "
             "or not measured with the reason.</p>"]
    platforms = list(dict.fromkeys(i.platform for i in items))
    for platform in platforms:
        mine = [i for i in items if i.platform == platform]
        tally = " · ".join(f"{k} {v}" for k, v in counts(mine).items())
        rows = [[f"<code>{escape(i.capability)}</code>",
                 f'<span class="{i.status}">{escape(i.status)}</span>',
                 escape(i.evidence or "—"), escape(i.reason or "—")] for i in mine]
        parts.append(f"<h3>{escape(platform)}</h3><p class=\"note\">{escape(tally)}</p>"
                     + _table(["capability", "status", "evidence", "reason"], rows))
    return "".join(parts)


def page(report: Report, matrix: pl.DataFrame, claims_line: str) -> str:
    """The whole report as one HTML document: the answer first, then the details."""
    charts = report.charts
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>crmbench report</title><style>{STYLE}</style>"
        "</head><body>"
        f"<h1>crmbench report</h1><p class=\"note\">Generated {escape(report.generated_at)} "
        f"from {len(report.runs)} run result(s) in {len(report.groups)} group(s).</p>"
        + _summary_section(report)
        + _matrix_section(matrix, report.platforms, claims_line)
        + _groups_section(report.groups)
        + _runs_section(report.groups)
        + _charts_section(charts)
        + _capabilities_section(report.capabilities)
        + f'<script type="application/octet-stream" id="plotly-gz">{_packed_plotlyjs()}</script>'
        + f'<script type="application/octet-stream" id="figures-gz">{_packed_figures(charts)}'
        "</script>"
        + f"<script>{_LOADER}</script></body></html>\n"
    )
