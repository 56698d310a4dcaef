"""Write a report folder from run results: matrix, charts, capability report, exports."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.claims import Claims
from bench.report import capabilities, charts, html, matrix, summary
from bench.report import groups as grouping
from bench.report import runs as runs_md
from bench.report.groups import CommonLoad, Group
from bench.results import stats
from bench.results.collect import Run
from bench.results.thresholds import DEFAULT_SEED

FORMATS = ("md", "html", "csv", "parquet", "json", "junit")
PNG_WIDTH = 1200


@dataclass
class Report:
    """What a report holds before it is written."""

    runs: list[Run]
    groups: list[Group]
    common: CommonLoad
    columns: dict[str, list[Run]]
    platforms: list[str]
    cells: list[matrix.Cell]
    capabilities: list[capabilities.CapabilityStatus]
    summaries: list[summary.PlatformSummary]
    claims: Claims | None
    generated_at: str
    charts: list[charts.Chart] = field(default_factory=list)

    @property
    def used(self) -> dict[str, list[Run]]:
        """Included runs per group title: what the charts draw, never pooled."""
        return {f"{g.id} {g.key.column}": g.used for g in self.groups if g.used}


def assemble(runs: Sequence[Run], claims: Claims | None, *, seed: int = DEFAULT_SEED) -> Report:
    """Everything the writers need, computed once (seeded: the same inputs, the same report)."""
    rng = np.random.default_rng(seed)
    groups = grouping.build(runs)
    common = grouping.common_load(groups)
    cells = matrix.build_cells(groups, common, claims, rng)
    platforms = matrix.platforms_of(groups, claims)
    columns = {c: [r for g in gs for r in g.runs] for c, gs in grouping.columns(groups).items()}
    caps = capabilities.statuses(columns, cells)
    summaries = summary.summarise(platforms, groups, cells, caps, claims)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Report(list(runs), groups, common, columns, platforms, cells, caps, summaries,
                  claims, now)


def operation_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Per group and operation: percentiles of the merged histograms, summed counts."""
    out = []
    for group in groups:
        measured = group.measured
        for op in dict.fromkeys(op for r in measured for op in r.operations()):
            entries = [r.operations()[op] for r in measured if op in r.operations()]
            hist = stats.buckets([e["histograms"]["intended"] for e in entries])
            p50, p99, p999 = (hist.percentiles([50, 99, 99.9]) if hist.total
                              else (0.0, 0.0, 0.0))
            out.append({
                "group": group.id, "platform": group.key.column, "operation": op,
                "runs": len(entries),
                "count": sum(int(e["count"]) for e in entries),
                "errors": sum(int(e["errors"]) for e in entries),
                "throughput": float(np.median([e["throughput"] for e in entries])),
                "p50_ms": float(p50), "p99_ms": float(p99), "p99_9_ms": float(p999),
            })
    return out


def _claims_line(report: Report) -> str:
    return report.claims.source_line if report.claims else "no claims file"


def _operations_markdown(ops: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Mixed workload per operation", "",
             "Per group (never pooled across groups): latency from the intended send time, "
             "percentiles of the histograms merged over the group's valid runs; throughput is "
             "the median over runs.", "",
             "| group | platform | operation | runs | requests | errors | p50 ms | p99 ms "
             "| p99.9 ms | req/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {o['group']} | {o['platform']} | {o['operation']} | {o['runs']} | "
              f"{o['count']:,} | {o['errors']:,} | {matrix.fmt(o['p50_ms'])} | "
              f"{matrix.fmt(o['p99_ms'])} | {matrix.fmt(o['p99_9_ms'])} | "
              f"{matrix.fmt(o['throughput'])} |" for o in ops]
    return [*lines, ""]


def matrix_markdown(report: Report) -> str:
    """matrix.md: the summary first, then the matrix, the groups, runs and operations."""
    df = matrix.frame(report.cells)
    ops = operation_rows(report.groups)
    lines = [
        "# crmbench comparative matrix", "",
        f"Generated {report.generated_at} from {len(report.runs)} run result(s) in "
        f"{len(report.groups)} group(s).", "",
        summary.markdown(report.summaries, report.common, report.groups), "",
        "## Matrix", "",
        "Each measured cell comes from one group of runs (named after the figure: "
        "see Groups): the median of its valid runs, with a bootstrap 95% interval in "
        "brackets when there are several. Mixed-workload rows are taken at the common "
        f"load ({report.common.text}). Rows marked **claimed** quote "
        f"{_claims_line(report)}: never measured here and never merged with measurements.",
        "", matrix.markdown_table(df, report.platforms), "",
        "## Groups", "",
        "Runs are pooled only within a group: same platform, configuration label, "
        "scenario, offered load (rate and users) and fixture size.", "",
        summary.groups_markdown(report.groups), "",
        "## Runs: provenance and validity", "", runs_md.markdown(report.groups), "",
    ]
    if ops:
        lines += _operations_markdown(ops)
    return "\n".join(lines)


def results_json(report: Report) -> dict[str, Any]:
    """results.json: the report's figures in machine-readable form (no histograms)."""
    return {
        "crmbench_report": 1,
        "generated_at": report.generated_at,
        "claims_source": _claims_line(report),
        "platforms": report.platforms,
        "common_load": {"rate": report.common.rate, "users": report.common.users,
                        "note": report.common.note},
        "summary": [{**asdict(s), "verdicts": s.verdicts} for s in report.summaries],
        "groups": [summary.group_record(g) for g in report.groups],
        "excluded": summary.excluded_records(report.groups),
        "noisy": summary.noisy_records(report.groups),
        "runs": runs_md.summaries(report.groups),
        "matrix": matrix.frame(report.cells).to_dicts(),
        "operations": operation_rows(report.groups),
        "capabilities": capabilities.records(report.capabilities),
    }


def export_png(chart_list: Sequence[charts.Chart], folder: Path) -> tuple[list[Path], str]:
    """PNG of every chart through kaleido and a local Chromium; says why when it cannot."""
    try:
        import kaleido  # type: ignore[import-untyped]
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return [], "PNG export skipped: kaleido is not installed (pip install kaleido)"
    if Chromium.find_browser(skip_local=False) is None:
        return [], ("PNG export skipped: no Chromium or Chrome browser found (Debian: "
                    "apt-get install chromium; or set BROWSER_PATH)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{c.key}.png" for c in chart_list]
    specs = [{"fig": c.figure.to_dict(), "path": str(p),
              "opts": {"format": "png", "width": PNG_WIDTH,
                       "height": c.figure.layout.height or charts.HEIGHT}}
             for c, p in zip(chart_list, paths, strict=True)]
    # MathJax would be fetched from a CDN; the charts use no TeX.
    kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False})
    return paths, f"wrote {len(paths)} PNG charts to {folder}"


def write(
    report: Report, out: Path, formats: Sequence[str], *, png: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> list[Path]:
    """Write the requested formats into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, data: str | bytes) -> None:
        path = out / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        written.append(path)

    df = matrix.frame(report.cells)
    names = report.claims.names if report.claims else {}
    if "md" in formats:
        put("matrix.md", matrix_markdown(report))
        put("capabilities.md", capabilities.markdown(report.capabilities, report.columns, names))
    if "csv" in formats:
        df.write_csv(out / "matrix.csv")
        written.append(out / "matrix.csv")
    if "parquet" in formats:
        df.write_parquet(out / "matrix.parquet")
        written.append(out / "matrix.parquet")
    if "json" in formats:
        put("results.json", json.dumps(results_json(report), indent=1, default=str) + "\n")
    if "junit" in formats:
        put("capabilities.xml", capabilities.junit(report.capabilities, report.columns))
    if "html" in formats or png:
        report.charts = charts.all_charts(report.used, report.cells, report.platforms,
                                          report.claims, columns={
                                              c: [r for r in runs if r.exclusion is None]
                                              for c, runs in report.columns.items()})
    if "html" in formats:
        put("report.html", html.page(report, df, _claims_line(report)))
    if png:
        pngs, message = export_png(report.charts, out / "charts")
        written += pngs
        say(message)
    return written
