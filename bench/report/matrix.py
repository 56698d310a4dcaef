"""The comparative matrix: dimensions x platforms, measured cells and separate claimed cells.

Built as a long-form polars frame (one row per dimension, column and source), from which
matrix.md, matrix.csv and matrix.parquet are written. A column is a platform with its
configuration label. A measured cell comes from one group of runs (named in the cell):
the median of its valid repetitions with a bootstrap 95% interval when there are several.
Mixed-workload cells are taken at the common load; claimed cells come only from the
claims file and are never merged with measurements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from bench.claims import Claim, Claims
from bench.report.groups import CommonLoad, Group, at_load, columns
from bench.results import stats
from bench.results.collect import Run, status_of

NO_PROBE = "no probe result"
BRIEF_CHARS = 90
NO_RUN = "no run result"
NO_CAPACITY = "no capacity result (crmbench capacity)"


@dataclass(frozen=True)
class Row:
    """A matrix row: a dimension id and which figure of it is shown."""

    dimension: str
    label: str
    unit: str
    metric: str = "value"

    @property
    def key(self) -> str:
        return self.dimension if self.metric == "value" else f"{self.dimension}.{self.metric}"


ROWS: tuple[Row, ...] = (
    Row("agent.latency", "agent latency", "ms"),
    Row("cdp.event_delay", "event delay", "ms"),
    Row("pack.enable_time", "pack enable time", "s"),
    Row("workflow.max_nodes", "workflow max nodes", "nodes"),
    Row("sla.granularity", "SLA granularity", "level"),
    Row("crud.mixed", "mixed workload p50", "ms", "p50"),
    Row("crud.mixed", "mixed workload p99", "ms", "p99"),
    Row("crud.mixed", "mixed workload throughput", "req/s", "throughput"),
    Row("crud.capacity", "capacity at the SLO", "req/s"),
)


@dataclass(frozen=True)
class Cell:
    """One entry of the matrix (measured or claimed) with the text shown for it."""

    row: str
    label: str
    dimension: str
    platform: str
    source: str
    status: str
    text: str
    unit: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    reason: str | None = None
    invalid: bool = False
    group: str | None = None


def fmt(value: float) -> str:
    """Three significant figures at most, thousands separated."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if value == 0 or abs(value) >= 1:
        return f"{value:.2f}"
    # Small values keep three significant figures: 0.0017 s, not 0.00 s.
    return f"{value:.3g}"


def figure_text(
    value: float, unit: str, low: float | None, high: float | None, n: int, extra: str = ""
) -> str:
    """``13.4 ms [12.9, 14.1] (5 runs)``; no interval from a single run."""
    text = f"{fmt(value)} {unit}".strip()
    if n >= 2 and low is not None and high is not None:
        text += f" [{fmt(low)}, {fmt(high)}]"
    return f"{text}{extra} ({n} run{'s' if n != 1 else ''})"


def unmeasured_reason(runs: Sequence[Run]) -> str:
    """Why a platform has no figure at all: no run, or why its runs could not measure."""
    if not runs:
        return NO_RUN
    reasons = [r.result.get("abort_reason") for r in runs if not r.measured]
    found = [str(x) for x in reasons if x]
    if found and len(found) == len(runs):
        return found[0]
    if all(r.exclusion for r in runs):
        return f"every run excluded: {runs[0].exclusion}"
    return NO_PROBE


def _summarise(
    values: list[float], rng: np.random.Generator
) -> tuple[float, float | None, float | None]:
    if len(values) < 2:
        return values[0], None, None
    low, high = stats.interval(stats.boot_median(values, rng))
    return float(np.median(values)), low, high


def _blank(row: Row, platform: str) -> Cell:
    return Cell(row=row.key, label=row.label, dimension=row.dimension, platform=platform,
                source="measured", status="not-measured", text="", unit=row.unit)


def brief(reason: str, limit: int = BRIEF_CHARS) -> str:
    """A reason short enough for a cell: up to its first parenthesis, clipped."""
    head = reason.split(" (", 1)[0]
    return head if len(head) <= limit else head[: limit - 1] + "…"


def _not_measured(cell: Cell, reason: str) -> Cell:
    return replace(cell, status="not-measured", text=f"not-measured: {brief(reason)}",
                   reason=reason, value=None, low=None, high=None)


def _mixed_cell(row: Row, column: str, group: Group, rng: np.random.Generator) -> Cell:
    used = group.measured
    values = [
        float(r.result["overall"]["throughput"]) if row.metric == "throughput"
        else float(r.result["overall"]["latency_ms"]["intended"][row.metric])
        for r in used
    ]
    value, low, high = _summarise(values, rng)
    text = figure_text(value, row.unit, low, high, len(values)) + f" · {group.id}"
    return replace(_blank(row, column), status="pass", text=text, value=value, low=low,
                   high=high, n=len(values), group=group.id)


def _no_mixed(row: Row, column: str, groups: Sequence[Group], common: CommonLoad) -> Cell:
    runs = [r for g in groups for r in g.runs]
    base = _blank(row, column)
    if not any(g.measured for g in groups):
        return _not_measured(base, unmeasured_reason(runs))
    held = ", ".join(dict.fromkeys(f"{g.key.rate:,.6g} req/s" for g in groups
                                   if g.measured and g.key.rate is not None))
    if common.rate is None:
        return _not_measured(base, f"no common load; valid runs at {held}")
    return _not_measured(base, f"no valid run at {common.text}; valid runs at {held}")


def _entries(runs: Sequence[Run], dim: str) -> list[dict[str, Any]]:
    return [e for r in runs if (e := r.dimension(dim)) is not None]


def _probe_group(groups: Sequence[Group], dim: str, common: CommonLoad) -> Group | None:
    """The group a probe cell comes from: the one at the common load, else the fullest."""
    having = [g for g in groups if _entries(g.used, dim)]
    if not having:
        return None
    at_common = [g for g in having if common.load is not None and g.key.load == common.load]
    return at_common[0] if at_common else max(having, key=lambda g: len(_entries(g.used, dim)))


def _probe_cell(row: Row, column: str, groups: Sequence[Group], common: CommonLoad,
                rng: np.random.Generator) -> Cell:
    group = _probe_group(groups, row.dimension, common)
    if group is None:
        runs = [r for g in groups for r in g.runs]
        cell = _probe_figure(row, column, runs, rng)
        if _entries(runs, row.dimension) and cell.status in ("pass", "fail"):
            left_out = next(r.exclusion for r in runs if r.dimension(row.dimension))
            return _not_measured(cell, f"only in excluded runs: {left_out}")
        return cell
    cell = _probe_figure(row, column, group.used, rng)
    shown = f"{cell.text} · {group.id}" if cell.status in ("pass", "fail") else cell.text
    return replace(cell, text=shown, group=group.id)


def _capacity_text(entries: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """``at least `` before a capacity the generator limited, ``at <SLO>`` after it."""
    least = "at least " if any(e.get("at_least") for e in entries) else ""
    slo = next((str(e["slo"]) for e in entries if e.get("slo")), "")
    return least, f" at {slo}" if slo else ""


def _probe_figure(row: Row, platform: str, runs: Sequence[Run],
                  rng: np.random.Generator) -> Cell:
    entries = _entries(runs, row.dimension)
    by_status: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_status.setdefault(status_of(entry), []).append(entry)
    unit = next((str(e["unit"]) for e in entries if e.get("unit")), row.unit)
    base = replace(_blank(row, platform), unit=unit)
    if "fail" in by_status:
        entry = by_status["fail"][0]
        reason = str(entry.get("reason") or "the probe failed")
        shown = entry.get("value")
        figure = f" ({shown} {unit})" if shown is not None else ""
        return replace(base, status="fail", text=f"fail{figure}: {brief(reason)}", reason=reason,
                       n=len(entries))
    passed = by_status.get("pass", [])
    numbers = [float(e["value"]) for e in passed
               if isinstance(e.get("value"), int | float) and not isinstance(e["value"], bool)]
    if numbers:
        value, low, high = _summarise(numbers, rng)
        # The headline is the probe's (p50 for latencies); its tail belongs beside it.
        p99s = [float(e["p99"]) for e in passed
                if isinstance(e.get("p99"), int | float) and not isinstance(e["p99"], bool)]
        extra = f", p99 {fmt(float(np.median(p99s)))} {unit}" if p99s else ""
        least, slo = _capacity_text(passed)
        return replace(base, status="pass", value=value, low=low, high=high,
                       n=len(numbers),
                       text=least + figure_text(value, unit, low, high, len(numbers),
                                                extra + slo))
    if passed:
        level = Counter(str(e.get("value")) for e in passed).most_common(1)[0][0]
        plural = "s" if len(passed) != 1 else ""
        return replace(base, status="pass", text=f"{level} ({len(passed)} run{plural})",
                       n=len(passed))
    if "unsupported" in by_status:
        why = by_status["unsupported"][0].get("reason")
        return replace(base, status="unsupported", text="unsupported",
                       reason=str(why) if why else None)
    reasons = [str(e["reason"]) for e in by_status.get("not-measured", []) if e.get("reason")]
    return _not_measured(base, reasons[0] if reasons else unmeasured_reason(runs))


def _claim_cell(row: Row, claim: Claim) -> Cell:
    note = f" ({claim.note})" if claim.note else ""
    numeric = isinstance(claim.value, int | float)
    # A claim is quoted as published, not rounded like a measurement.
    shown = f"{claim.value:,} {row.unit}" if numeric else str(claim.value)
    return Cell(row=row.key, label=row.label, dimension=row.dimension, platform=claim.platform,
                source="claimed", status="claimed", text=f"claimed: {shown}{note}",
                unit=row.unit, value=float(claim.value) if numeric else None,
                reason=claim.note)


def platforms_of(groups: Sequence[Group], claims: Claims | None) -> list[str]:
    """Columns with results first (in input order), then platforms only claimed."""
    names = list(columns(groups))
    if claims is not None:
        measured = {g.key.platform for g in groups}
        names += [p for p in claims.names if p not in measured and p not in names]
    return names


def row_label(row: Row, common: CommonLoad) -> str:
    """A mixed-workload row names the load it is taken at."""
    return f"{row.label} at {common.text}" if row.dimension == "crud.mixed" else row.label


def _measured_cell(row: Row, column: str, mine: Sequence[Group], common: CommonLoad,
                   rng: np.random.Generator) -> Cell:
    if row.dimension != "crud.mixed":
        cell = _probe_cell(row, column, mine, common, rng)
    elif found := at_load(mine, common.load):
        cell = _mixed_cell(row, column, found[0], rng)
        if len(found) > 1:
            others = ", ".join(g.id for g in found[1:])
            cell = replace(cell, text=f"{cell.text} (also at this load: {others})")
    else:
        cell = _no_mixed(row, column, mine, common)
    if row.dimension == "crud.capacity" and cell.reason == NO_PROBE:
        cell = _not_measured(cell, NO_CAPACITY)
    return replace(cell, label=row_label(row, common))


def build_cells(
    groups: Sequence[Group], common: CommonLoad, claims: Claims | None,
    rng: np.random.Generator,
) -> list[Cell]:
    """Every measured cell of every row and column, then the claimed cells."""
    cells: list[Cell] = []
    by_column = columns(groups)
    names = platforms_of(groups, claims)
    platform = {c: gs[0].key.platform for c, gs in by_column.items()}
    for row in ROWS:
        for column in names:
            cells.append(_measured_cell(row, column, by_column.get(column, []), common, rng))
        if claims is not None and row.metric == "value":
            for column in names:
                claim = claims.for_platform(platform.get(column, column)).get(row.dimension)
                if claim is not None:
                    cells.append(replace(_claim_cell(row, claim), platform=column))
    return cells


def frame(cells: Sequence[Cell]) -> pl.DataFrame:
    """The long-form matrix (one row per cell) for CSV, Parquet and JSON."""
    schema = {
        "row": pl.String, "label": pl.String, "dimension": pl.String, "platform": pl.String,
        "source": pl.String, "status": pl.String, "text": pl.String, "unit": pl.String,
        "value": pl.Float64, "low": pl.Float64, "high": pl.Float64, "n": pl.Int64,
        "reason": pl.String, "invalid": pl.Boolean, "group": pl.String,
    }
    return pl.DataFrame([asdict(c) for c in cells], schema=schema, orient="row")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def wide(df: pl.DataFrame, platforms: Sequence[str]) -> pl.DataFrame:
    """Rows = (dimension, source), columns = platforms; cells are the shown texts."""
    pivoted = df.pivot(on="platform", index=["row", "label", "source"], values="text",
                       aggregate_function="first", maintain_order=True)
    missing = [pl.lit(None, pl.String).alias(p) for p in platforms if p not in pivoted.columns]
    return pivoted.with_columns(missing).select(["row", "label", "source", *platforms])


def markdown_table(df: pl.DataFrame, platforms: Sequence[str]) -> str:
    """The matrix as a Markdown table; claimed rows are marked and set in italics."""
    lines = [
        "| dimension | source | " + " | ".join(platforms) + " |",
        "|---|---|" + "---|" * len(platforms),
    ]
    for rec in wide(df, platforms).iter_rows(named=True):
        claimed = rec["source"] == "claimed"
        cells = []
        for p in platforms:
            text = rec[p]
            if text is None:
                cells.append("—")
            else:
                cells.append(f"_{_md(text)}_" if claimed else _md(text))
        label = "" if claimed else rec["label"]
        source = "**claimed** (not measured)" if claimed else "measured"
        lines.append(f"| {label} | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
