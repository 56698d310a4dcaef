"""Provenance and validity of each run, as every report format shows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report.groups import Group, fixture_text
from bench.results.collect import Run


def run_summary(run: Run, group: str | None = None) -> dict[str, Any]:
    """Where, on what and how a run was measured, and whether it can be trusted."""
    r = run.result
    machine = r.get("machine_info") or {}
    commit = r.get("commit_info") or {}
    target = r.get("target") or {}
    scenario = run.scenario
    load = r.get("load") or {}
    overhead = (r.get("harness_overhead") or {}).get("latency_ms", {}).get("intended")
    sha = str(commit.get("commit") or "unknown")[:12]
    return {
        "source": run.source,
        "platform": run.platform,
        "run_id": r.get("run_id"),
        "started_at": r.get("started_at"),
        "target": target.get("url"),
        "platform_version": target.get("platform_version"),
        "commit": f"{sha}{' (dirty)' if commit.get('dirty') else ''}",
        "machine": (f"{machine.get('cpu_model', '?')}, {machine.get('logical_cores', '?')} cores, "
                    f"{int(machine.get('memory_total_bytes', 0)) / 2**30:.0f} GiB, "
                    f"{machine.get('os', '?')}, Python {machine.get('python_version', '?')}"),
        "scenario": f"{scenario.get('name', '?')} ({scenario.get('profile', '?')}): "
                    + load_text(scenario),
        "achieved_rate": load.get("achieved_rate"),
        "fixtures": str((r.get("fixtures") or {}).get("manifest_sha256") or "none")[:12],
        "fixture_size": fixture_text(run.customers),
        "label": run.label,
        "group": group,
        "complete": bool(r.get("complete")),
        "valid": bool(r.get("valid")),
        "problem": run.problem,
        "excluded": run.exclusion,
        "harness_overhead_ms": (
            {"p50": overhead.get("p50"), "p99": overhead.get("p99")} if overhead else None
        ),
    }


def load_text(scenario: dict[str, Any]) -> str:
    """The load a scenario offered, or that it offered none (probes only)."""
    if scenario.get("workload") is False:
        return "probes only, no load"
    return f"{scenario.get('users', '?')} users, {scenario.get('rate', '?')} req/s"


def validity_text(summary: dict[str, Any]) -> str:
    """``valid``, or why the run is left out of the figures."""
    return "valid" if summary["excluded"] is None else f"excluded: {summary['excluded']}"


def overhead_text(summary: dict[str, Any]) -> str:
    """Harness overhead of the run, or a dash when it was not measured."""
    ho = summary["harness_overhead_ms"]
    return f"p50 {ho['p50']:.3f} ms, p99 {ho['p99']:.3f} ms" if ho else "—"


def target_text(summary: dict[str, Any]) -> str:
    """Target URL, platform version and server configuration label."""
    label = f"; configuration {summary['label']}" if summary["label"] else ""
    return f"{summary['target']} ({summary['platform_version'] or 'version unknown'}{label})"


HEADERS = ["group", "platform", "configuration", "run", "started", "commit", "target",
           "scenario", "fixtures", "machine", "validity", "harness overhead"]


def cells(summary: dict[str, Any]) -> list[str]:
    """A run's row of the provenance table (plain text)."""
    s = summary
    target = f"{s['target']} ({s['platform_version'] or 'version unknown'})"
    return [s["group"] or "—", s["platform"], s["label"] or "— (no --label)", str(s["run_id"]),
            str(s["started_at"]), s["commit"], target, s["scenario"],
            f"{s['fixture_size']} (manifest {s['fixtures']})", s["machine"], validity_text(s),
            overhead_text(s)]


def summaries(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """Every run's summary, group by group."""
    return [run_summary(run, g.id) for g in groups for run in g.runs]


def markdown(groups: Sequence[Group]) -> str:
    """The runs as a Markdown table: group, provenance and validity."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for s in summaries(groups):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(s)) + " |")
    return "\n".join(lines)
