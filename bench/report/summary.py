"""The answer a report opens with: per platform, capacity, latency at the common load,
capability verdicts and claims; then the groups of runs and the runs left out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.claims import Claims
from bench.report.capabilities import CapabilityStatus, counts
from bench.report.groups import CommonLoad, Group, excluded, fixture_text, load_text
from bench.report.matrix import Cell, brief, fmt


@dataclass(frozen=True)
class PlatformSummary:
    """One column of the matrix in a sentence's worth of figures."""

    platform: str
    capacity: str
    latency: str
    verdicts: dict[str, int]
    claims: str

    @property
    def verdict_text(self) -> str:
        return " · ".join(f"{k} {v}" for k, v in self.verdicts.items())


def _measured(cells: Sequence[Cell], column: str, row: str) -> Cell | None:
    return next((c for c in cells if c.platform == column and c.row == row
                 and c.source == "measured"), None)


def _latency(cells: Sequence[Cell], column: str, sizes: dict[str, str]) -> str:
    p50, p99 = (_measured(cells, column, f"crud.mixed.{m}") for m in ("p50", "p99"))
    if p50 is None or p99 is None:
        return "—"
    if p50.value is None or p99.value is None or p50.group is None:
        return p50.text
    return (f"p50 {fmt(p50.value)} ms, p99 {fmt(p99.value)} ms "
            f"({p50.group}, {sizes.get(p50.group, '?')})")


def _claims(cells: Sequence[Cell], column: str, platform: str, claims: Claims | None) -> str:
    mine = claims.for_platform(platform) if claims is not None else {}
    if not mine:
        return "no claims"
    checked, unchecked = [], []
    for dim in mine:
        cell = _measured(cells, column, dim)
        if cell is not None and cell.status in ("pass", "fail"):
            checked.append(f"{dim} ({cell.status})")
        else:
            unchecked.append(dim)
    if not checked:
        first = _measured(cells, column, unchecked[0])
        why = f": {brief(first.reason, 60)}" if first is not None and first.reason else ""
        return f"{len(mine)} claimed figure(s), none checked{why}"
    left = f"; not checked: {', '.join(unchecked)}" if unchecked else ""
    return f"{len(checked)} of {len(mine)} claimed figure(s) checked: {', '.join(checked)}{left}"


def summarise(
    columns: Sequence[str], groups: Sequence[Group], cells: Sequence[Cell],
    capabilities: Sequence[CapabilityStatus], claims: Claims | None,
) -> list[PlatformSummary]:
    """One summary per matrix column, in column order."""
    platform_of = {g.key.column: g.key.platform for g in groups}
    sizes = {g.id: fixture_text(g.key.customers) for g in groups}
    out = []
    for column in columns:
        capacity = _measured(cells, column, "crud.capacity")
        caps = [c for c in capabilities if c.platform == column]
        out.append(PlatformSummary(
            platform=column, capacity=capacity.text if capacity else "—",
            latency=_latency(cells, column, sizes), verdicts=counts(caps),
            claims=_claims(cells, column, platform_of.get(column, column), claims)))
    return out


def group_record(group: Group) -> dict[str, Any]:
    """A group's key, its runs and its pooled mixed-workload figures (medians over runs)."""
    k = group.key
    measured = group.measured
    lat = [r.result["overall"]["latency_ms"]["intended"] for r in measured]
    return {
        "group": group.id, "platform": k.platform, "label": k.label, "scenario": k.scenario,
        "rate": k.rate, "users": k.users, "customers": k.customers,
        "load": load_text(k.rate, k.users), "fixture_size": fixture_text(k.customers),
        "runs": len(group.used), "excluded": len(group.runs) - len(group.used),
        "p50_ms": float(np.median([x["p50"] for x in lat])) if lat else None,
        "p99_ms": float(np.median([x["p99"] for x in lat])) if lat else None,
        "achieved_rate": float(np.median([r.result["overall"]["throughput"]
                                          for r in measured])) if measured else None,
    }


def noisy_records(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Runs kept in the figures but flagged noisy, with what disturbed them."""
    return [{"run_id": run.result.get("run_id"), "source": run.source, "group": g.id,
             "platform": g.key.column, "why": why}
            for g in groups for run in g.runs
            if run.exclusion is None and (why := run.noise_note) is not None]


def excluded_records(groups: Sequence[Group]) -> list[dict[str, Any]]:
    return [{"run_id": run.result.get("run_id"), "source": run.source, "group": g.id,
             "platform": g.key.column, "why": why} for g, run, why in excluded(groups)]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def opt(value: float | None) -> str:
    return fmt(value) if value is not None else "—"


def markdown(summaries: Sequence[PlatformSummary], common: CommonLoad,
             groups: Sequence[Group]) -> str:
    """The summary table, the common load, and the note on excluded runs."""
    lines = ["## Summary", "", f"Platforms are compared at the {common.note}; capacity is "
             "the highest offered rate that held the SLO (`crmbench capacity`).", "",
             f"| platform | capacity | latency at {common.text} | capability verdicts "
             "| claims |", "|---|---|---|---|---|"]
    lines += [f"| {_md(s.platform)} | {_md(s.capacity)} | {_md(s.latency)} | "
              f"{s.verdict_text} | {_md(s.claims)} |" for s in summaries]
    lines += ["", excluded_markdown(groups)]
    return "\n".join(lines)


def excluded_markdown(groups: Sequence[Group]) -> str:
    """Every run left out of the figures and why; says so when none was."""
    left = excluded_records(groups)
    if not left:
        lines = ["**Excluded runs:** none; every run is complete and valid."]
    else:
        lines = [f"**Excluded runs ({len(left)})**, left out of every figure, chart and "
                 "verdict (shown under Runs for provenance):", ""]
        lines += [f"- `{e['run_id']}` ({_md(e['platform'])}, {e['group']}): {_md(e['why'])}"
                  for e in left]
    noisy = noisy_records(groups)
    if noisy:
        lines += ["", f"**Noisy runs ({len(noisy)})**, kept in the figures but no evidence "
                  "for a gate; read their figures with what disturbed them:", ""]
        lines += [f"- `{e['run_id']}` ({_md(e['platform'])}, {e['group']}): {_md(e['why'])}"
                  for e in noisy]
    return "\n".join(lines)


def groups_markdown(groups: Sequence[Group]) -> str:
    """Every group with its key and its own figures: nothing here is pooled across groups."""
    lines = ["| group | platform | configuration | scenario | offered load | fixture size "
             "| valid runs | excluded | p50 ms | p99 ms | achieved req/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        r = group_record(g)
        lines.append(
            f"| {r['group']} | {_md(r['platform'])} | {_md(r['label'] or '—')} | "
            f"{_md(r['scenario'])} | {r['load']} | {r['fixture_size']} | {r['runs']} | "
            f"{r['excluded']} | {opt(r['p50_ms'])} | {opt(r['p99_ms'])} | "
            f"{opt(r['achieved_rate'])} |")
    return "\n".join(lines)
