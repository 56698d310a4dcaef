"""Compare two sets of runs and decide the CI gate (MEASUREMENT rule 8).

Per operation (and ``overall``) the p50 and p99 latency from the intended send time and
the throughput are compared; per measured dimension (``dimensions`` of a result) its
p50 and p99. A change is a regression only when it exceeds its threshold AND is
significant at ``alpha``:

- with at least 5 repetitions on both sides: one-sided Mann-Whitney U on the per-run
  figures, medians with bootstrap 95% intervals;
- with fewer: a bootstrap from the merged HDR histograms (latency) or from the
  per-second completions of the measurement phase (throughput). It sees only the
  variation within runs, not between them, so the thresholds carry the rest.

Improvements are reported, never failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from bench.errors import UserError
from bench.results import stats
from bench.results.collect import Run
from bench.results.thresholds import DEFAULT_SEED, Thresholds

MIN_REPETITIONS = 5
LATENCY_METRICS = ("p50", "p99")
THROUGHPUT = "throughput"
Direction = Literal["smaller", "bigger"]
Verdict = Literal["regression", "improvement", "unchanged", "not significant", "untested"]


@dataclass(frozen=True)
class Estimate:
    """One side's figure: median of repetitions or a histogram percentile, with its 95% CI."""

    value: float
    low: float
    high: float
    n: int
    boot: stats.FloatArray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Change:
    """The comparison of one metric of one subject (operation or dimension)."""

    subject: str
    metric: str
    unit: str
    direction: Direction
    threshold: float
    base: Estimate | None
    current: Estimate | None
    method: str
    change: float | None = None
    change_low: float | None = None
    change_high: float | None = None
    p_worse: float | None = None
    p_better: float | None = None
    verdict: Verdict = "untested"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def side(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"value": e.value, "low": e.low, "high": e.high,
                                           "n": e.n}

        return {
            "subject": self.subject, "metric": self.metric, "unit": self.unit,
            "direction": self.direction, "threshold": self.threshold,
            "base": side(self.base), "current": side(self.current), "method": self.method,
            "change": self.change, "change_low": self.change_low,
            "change_high": self.change_high, "p_worse": self.p_worse,
            "p_better": self.p_better, "verdict": self.verdict, "note": self.note,
        }


@dataclass(frozen=True)
class Comparison:
    """Every change between two run sets, with what the reader must know about them."""

    base: str
    current: str
    thresholds: Thresholds
    changes: list[Change]
    notes: list[str]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improvement"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "current": self.current,
            "thresholds": {"p50": self.thresholds.p50, "p99": self.thresholds.p99,
                           "throughput": self.thresholds.throughput,
                           "alpha": self.thresholds.alpha},
            "notes": self.notes,
            "regressions": len(self.regressions), "improvements": len(self.improvements),
            "changes": [c.to_dict() for c in self.changes],
        }


@dataclass
class Side:
    """The runs of one side and what is derived from them, computed once."""

    runs: list[Run]
    _buckets: dict[str, stats.Buckets | None] = field(default_factory=dict)

    @property
    def repetitions(self) -> list[Run]:
        return [r for r in self.runs if r.measured or r.dimensions()]

    def subjects(self) -> list[str]:
        ops: dict[str, None] = {}
        for run in self.runs:
            ops.update(dict.fromkeys(run.operations()))
        return list(ops)

    def dimension_ids(self) -> list[str]:
        ids: dict[str, None] = {}
        for run in self.runs:
            ids.update(dict.fromkeys(run.dimensions()))
        return list(ids)

    def per_run(self, subject: str, metric: str, dimension: bool) -> list[float]:
        out = []
        for run in self.runs:
            if dimension:
                value = run.dimension_number(subject, metric)
            else:
                op = run.operations().get(subject)
                value = None if op is None else (
                    float(op["throughput"]) if metric == THROUGHPUT
                    else float(op["latency_ms"]["intended"][metric])
                )
            if value is not None:
                out.append(value)
        return out

    def buckets(self, subject: str, dimension: bool) -> stats.Buckets | None:
        if subject not in self._buckets:
            encoded: list[str] = []
            for run in self.runs:
                if dimension:
                    hist = (run.dimension(subject) or {}).get("histogram")
                else:
                    hist = (run.operations().get(subject) or {}).get("histograms", {}).get(
                        "intended")
                if isinstance(hist, str):
                    encoded.append(hist)
            found = stats.buckets(encoded) if encoded else None
            self._buckets[subject] = found if found is not None and found.total else None
        return self._buckets[subject]

    def throughput_boot(
        self, subject: str, rng: np.random.Generator
    ) -> tuple[float, stats.FloatArray] | None:
        """Mean completions per second of one subject and its bootstrap distribution."""
        # The overall rate is resampled from the per-second completions of the measurement
        # phase; an operation's share of it binomially, since the mix is drawn at random.
        samples: list[float] = []
        part = total = 0
        for run in self.runs:
            ops = run.operations()
            if subject in ops and ops["overall"].get("count"):
                samples.extend(run.measure_samples())
                part += int(ops[subject]["count"])
                total += int(ops["overall"]["count"])
        if len(samples) < 2:
            return None
        share = part / total
        boot = stats.boot_mean(samples, rng) * rng.binomial(total, share, stats.N_BOOT) / total
        return float(np.mean(samples)) * share, boot


def _estimate(point: float, boot: stats.FloatArray, n: int) -> Estimate:
    return Estimate(point, *stats.interval(boot), n, boot)


def estimate(
    side: Side, subject: str, metric: str, rng: np.random.Generator, *,
    dimension: bool = False, repetitions: bool = True,
) -> tuple[Estimate | None, str]:
    """One side's figure for a metric and the method its interval and test come from;
    without ``repetitions`` it bootstraps from histograms or the timeline when it can."""
    values = side.per_run(subject, metric, dimension)
    if not repetitions and metric == THROUGHPUT:
        found = side.throughput_boot(subject, rng)
        if found is not None:
            return _estimate(*found, len(values)), "bootstrap (timeline)"
    elif not repetitions:
        hist = side.buckets(subject, dimension)
        if hist is not None:
            p = float(metric.removeprefix("p"))
            return (_estimate(hist.percentile(p), hist.boot_percentile(p, rng), len(values)),
                    "bootstrap (histogram)")
    if values:
        return _estimate(float(np.median(values)), stats.boot_median(values, rng),
                         len(values)), "mann-whitney"
    return None, "none"


def _judge(change: Change, alpha: float) -> Change:
    if change.change is None:
        return change
    worse = change.change > change.threshold if change.direction == "smaller" else (
        change.change < -change.threshold)
    better = change.change < -change.threshold if change.direction == "smaller" else (
        change.change > change.threshold)
    if worse:
        significant = change.p_worse is not None and change.p_worse < alpha
        return replace(change, verdict="regression" if significant else "not significant")
    if better:
        significant = change.p_better is not None and change.p_better < alpha
        return replace(change, verdict="improvement" if significant else "not significant")
    return replace(change, verdict="unchanged")


def compare_metric(
    base: Side, current: Side, subject: str, metric: str, *, unit: str, direction: Direction,
    thresholds: Thresholds, rng: np.random.Generator, dimension: bool = False,
) -> Change:
    """Compare one metric of one subject between the two sides."""
    threshold = thresholds.of(metric)
    reps = min(len(base.per_run(subject, metric, dimension)),
               len(current.per_run(subject, metric, dimension))) >= MIN_REPETITIONS
    b, b_method = estimate(base, subject, metric, rng, dimension=dimension, repetitions=reps)
    c, c_method = estimate(current, subject, metric, rng, dimension=dimension, repetitions=reps)
    method = b_method if b_method == c_method else f"{b_method} / {c_method}"
    change = Change(subject, metric, unit, direction, threshold, b, c, method)
    if b is None or c is None:
        missing = "base" if b is None else "current"
        return replace(change, note=f"no figure in {missing}")
    if b.value <= 0:
        return replace(change, note="base figure is zero")
    ratios = c.boot / np.maximum(b.boot, 1e-12)
    low, high = stats.interval(ratios)
    change = replace(change, change=c.value / b.value - 1, change_low=low - 1,
                     change_high=high - 1)
    if method == "mann-whitney":
        x = base.per_run(subject, metric, dimension)
        y = current.per_run(subject, metric, dimension)
        greater = stats.mann_whitney_p(y, x, "greater")
        less = stats.mann_whitney_p(y, x, "less")
        p_worse, p_better = (greater, less) if direction == "smaller" else (less, greater)
        if min(len(x), len(y)) < MIN_REPETITIONS:
            change = replace(change, note=f"only {min(len(x), len(y))} repetitions, "
                                          "no histogram: weak test")
    elif b_method == c_method:
        up, down = float(np.mean(ratios <= 1.0)), float(np.mean(ratios >= 1.0))
        p_worse, p_better = (up, down) if direction == "smaller" else (down, up)
    else:
        return replace(change, method=method, note="the two sides need the same method")
    return _judge(replace(change, p_worse=p_worse, p_better=p_better), thresholds.alpha)


def _scenario_notes(base: Sequence[Run], current: Sequence[Run]) -> list[str]:
    notes = []
    for key in ("name", "profile", "users", "rate"):
        b = sorted({str(r.scenario.get(key)) for r in base})
        c = sorted({str(r.scenario.get(key)) for r in current})
        if b != c:
            notes.append(f"scenario {key} differs: base {', '.join(b)}, current {', '.join(c)}")
    return notes


def compare(
    base: Sequence[Run], current: Sequence[Run], thresholds: Thresholds,
    *, seed: int = DEFAULT_SEED, base_label: str = "base", current_label: str = "current",
) -> Comparison:
    """Compare the runs of ``current`` with those of ``base`` (seeded, reproducible)."""
    if not base or not current:
        raise UserError("compare needs runs on both sides")
    rng = np.random.default_rng(seed)
    b, c = Side(list(base)), Side(list(current))
    notes = _scenario_notes(base, current)
    platforms = sorted({r.platform for r in base}), sorted({r.platform for r in current})
    if platforms[0] != platforms[1]:
        notes.append(f"platforms differ: base {', '.join(platforms[0])}, "
                     f"current {', '.join(platforms[1])}")
    for label, runs in ((base_label, base), (current_label, current)):
        notes.extend(f"{label}: {r.source} is {r.problem}" for r in runs if r.problem)
    reps = len(b.repetitions), len(c.repetitions)
    if min(reps) < MIN_REPETITIONS:
        notes.append(
            f"{reps[0]} base and {reps[1]} current repetitions (rule 8 asks for at least "
            f"{MIN_REPETITIONS}): significance comes from within-run bootstraps")
    changes: list[Change] = []
    subjects = list(dict.fromkeys([*b.subjects(), *c.subjects()]))
    for subject in subjects:
        for m in LATENCY_METRICS:
            changes.append(compare_metric(b, c, subject, m, unit="ms", direction="smaller",
                                  thresholds=thresholds, rng=rng))
        changes.append(compare_metric(b, c, subject, THROUGHPUT, unit="req/s", direction="bigger",
                              thresholds=thresholds, rng=rng))
    for dim in dict.fromkeys([*b.dimension_ids(), *c.dimension_ids()]):
        unit = next((str(e["unit"]) for r in [*base, *current]
                     if (e := r.dimension(dim)) and e.get("unit")), "")
        for m in LATENCY_METRICS:
            change = compare_metric(b, c, dim, m, unit=unit, direction="smaller",
                            thresholds=thresholds, rng=rng, dimension=True)
            if change.base is not None or change.current is not None:
                changes.append(change)
    return Comparison(base_label, current_label, thresholds, changes, notes)


@dataclass(frozen=True)
class GateResult:
    """Exit code of the gate, the comparison behind it, and the runs that stopped it."""

    exit_code: int
    comparison: Comparison | None
    problems: list[str]


def gate(
    baseline: Sequence[Run], current: Sequence[Run], thresholds: Thresholds,
    *, seed: int = DEFAULT_SEED, baseline_label: str = "baseline",
    current_label: str = "current",
) -> GateResult:
    """0: no significant regression; 1: a regression; 3: a run is invalid or incomplete."""
    problems = [f"{r.source}: {r.problem}" for r in [*baseline, *current] if r.problem]
    if problems:
        return GateResult(3, None, problems)
    for label, runs in (("baseline", baseline), ("current", current)):
        platforms = {r.platform for r in runs}
        if len(platforms) > 1:
            raise UserError(f"the {label} runs are of several platforms "
                            f"({', '.join(sorted(platforms))}); gate one platform at a time")
    comparison = compare(baseline, current, thresholds, seed=seed, base_label=baseline_label,
                         current_label=current_label)
    return GateResult(1 if comparison.regressions else 0, comparison, [])
