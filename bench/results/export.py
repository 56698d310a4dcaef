"""Exports of a run set's figures for CI services.

- github-action-benchmark, tool ``customSmallerIsBetter``: a JSON array of
  ``{"name", "unit", "value", "range", "extra"}`` (latency only: smaller is better).
- Bencher Metric Format: ``{benchmark: {measure: {"value", "lower_value",
  "upper_value"}}}`` with the built-in measures ``latency`` (nanoseconds) and
  ``throughput`` (operations per second).

Values are medians of the runs' figures with a bootstrap 95% interval over runs
(:func:`bench.results.compare.estimate`); a single run's interval is the run itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.results.collect import Run
from bench.results.compare import LATENCY_METRICS, THROUGHPUT, Estimate, Side, estimate
from bench.results.thresholds import DEFAULT_SEED

NS_PER = {"ms": 1e6, "s": 1e9, "us": 1e3}


def _figures(runs: Sequence[Run], seed: int) -> list[tuple[str, str, str, Estimate, str]]:
    """(name prefix, metric, unit, estimate, method) for every operation and dimension."""
    rng = np.random.default_rng(seed)
    side = Side(list(runs))
    platform = runs[0].platform
    scenario = runs[0].scenario.get("name", "run")
    out = []
    for subject in side.subjects():
        for metric in (*LATENCY_METRICS, THROUGHPUT):
            reps = len(side.per_run(subject, metric, False)) > 1
            found, method = estimate(side, subject, metric, rng, repetitions=reps)
            if found is not None:
                unit = "req/s" if metric == THROUGHPUT else "ms"
                out.append((f"{scenario}/{platform}/{subject}", metric, unit, found, method))
    for dim in side.dimension_ids():
        unit = next((str(e["unit"]) for r in runs if (e := r.dimension(dim)) and e.get("unit")),
                    "ms")
        for metric in LATENCY_METRICS:
            reps = len(side.per_run(dim, metric, True)) > 1
            found, method = estimate(side, dim, metric, rng, dimension=True, repetitions=reps)
            if found is not None:
                out.append((f"{platform}/{dim}", metric, unit, found, method))
    return out


def github_benchmark(runs: Sequence[Run], seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """github-action-benchmark ``customSmallerIsBetter`` entries (latency percentiles)."""
    commit = str((runs[0].result.get("commit_info") or {}).get("commit") or "")[:12]
    return [
        {"name": f"{prefix} {metric}", "unit": unit, "value": round(e.value, 4),
         "range": f"[{e.low:.4g}, {e.high:.4g}] 95% CI",
         "extra": f"{e.n} run(s), {method}, commit {commit}"}
        for prefix, metric, unit, e, method in _figures(runs, seed) if metric != THROUGHPUT
    ]


def bencher_bmf(runs: Sequence[Run], seed: int = DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """Bencher Metric Format: latency percentiles in ns, throughput in operations/s."""
    out: dict[str, dict[str, Any]] = {}
    for prefix, metric, unit, e, _ in _figures(runs, seed):
        if metric == THROUGHPUT:
            out.setdefault(prefix, {})["throughput"] = {
                "value": e.value, "lower_value": e.low, "upper_value": e.high}
        elif unit in NS_PER:
            k = NS_PER[unit]
            out.setdefault(f"{prefix}/{metric}", {})["latency"] = {
                "value": e.value * k, "lower_value": e.low * k, "upper_value": e.high * k}
    return out
