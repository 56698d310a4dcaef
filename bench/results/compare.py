"""Compare two sets of runs and decide the CI gate from run-level figures only.

Whole runs shift (the machine, the target's state), so the requests of one run are no
independent samples: significance comes from per-run figures, never from resampling the
requests of a run. Per operation (and ``overall``) the p50 and p99 latency from the
intended send time and the throughput are compared; per measured dimension its p50 and
p99. The method depends on what each side holds (runs flagged noisy are no evidence):

- ``mann-whitney``: at least ``min_runs`` runs a side; one-sided Mann-Whitney U on the
  per-run figures; the change is the ratio of the medians.
- ``baseline spread``: fewer current runs, but a baseline of at least ``min_runs`` runs;
  the current runs are tested against the baseline's own run-to-run spread (a one-sided
  t prediction test on log figures, t with n_base - 1 degrees of freedom).
- ``paired``: interleaved A/B rounds (``crmbench ab``); a one-sided t-test on the log
  ratio of each round's pair.
- otherwise ``inconclusive``: the spread is unknown, N more runs are needed; nothing fails.

A change is a regression only when it exceeds its threshold (relative, absolute or both)
AND the test agrees at ``alpha`` after Holm's correction over the gated metrics (``scope``:
``overall`` and the dimensions by default, or every operation too). Improvements are
reported, never failed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from bench.errors import UserError
from bench.results import stats
from bench.results.collect import Run
from bench.results.thresholds import DEFAULT_SEED, Threshold, Thresholds

MIN_REPETITIONS = 5
LATENCY_METRICS = ("p50", "p99")
THROUGHPUT = "throughput"
OVERALL = "overall"
Direction = Literal["smaller", "bigger"]
Verdict = Literal["regression", "improvement", "worse", "better", "unchanged",
                  "not significant", "inconclusive", "untested"]
Method = Literal["mann-whitney", "baseline spread", "paired", "none"]


@dataclass(frozen=True)
class Estimate:
    """One side's figure (median or geometric mean of runs) with its 95 % interval."""

    value: float
    low: float
    high: float
    n: int
    boot: stats.FloatArray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Change:
    """The comparison of one metric of one subject (operation or dimension)."""

    subject: str
    metric: str
    unit: str
    direction: Direction
    threshold: Threshold
    base: Estimate | None
    current: Estimate | None
    method: Method
    gated: bool = True
    change: float | None = None
    change_low: float | None = None
    change_high: float | None = None
    p_worse: float | None = None
    p_better: float | None = None
    p_adjusted: float | None = None
    verdict: Verdict = "untested"
    note: str = ""

    @property
    def worse(self) -> bool:
        """Moved beyond its threshold in the bad direction."""
        if self.base is None or self.current is None or self.change is None:
            return False
        bad = self.change > 0 if self.direction == "smaller" else self.change < 0
        return bad and self.threshold.exceeded(self.base.value, self.current.value)

    @property
    def better(self) -> bool:
        """Moved beyond its threshold in the good direction."""
        if self.base is None or self.current is None or self.change is None:
            return False
        good = self.change < 0 if self.direction == "smaller" else self.change > 0
        return good and self.threshold.exceeded(self.base.value, self.current.value)

    def to_dict(self) -> dict[str, Any]:
        def side(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else {"value": e.value, "low": e.low, "high": e.high,
                                           "n": e.n}

        return {
            "subject": self.subject, "metric": self.metric, "unit": self.unit,
            "direction": self.direction, "threshold": str(self.threshold),
            "base": side(self.base), "current": side(self.current), "method": self.method,
            "gated": self.gated, "change": self.change, "change_low": self.change_low,
            "change_high": self.change_high, "p_worse": self.p_worse,
            "p_better": self.p_better, "p_adjusted": self.p_adjusted,
            "verdict": self.verdict, "note": self.note,
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
        return [c for c in self.changes if c.verdict == "regression" and c.gated]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "improvement"]

    @property
    def inconclusive(self) -> bool:
        """No gated metric could be tested."""
        gated = [c for c in self.changes if c.gated]
        return bool(gated) and all(c.verdict in ("inconclusive", "untested") for c in gated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base, "current": self.current,
            "thresholds": self.thresholds.to_dict(),
            "notes": self.notes, "inconclusive": self.inconclusive,
            "regressions": len(self.regressions), "improvements": len(self.improvements),
            "changes": [c.to_dict() for c in self.changes],
        }


def run_figure(run: Run, subject: str, metric: str, dimension: bool) -> float | None:
    """One run's figure for a metric: a dimension's number, or an operation's latency/rate."""
    if dimension:
        return run.dimension_number(subject, metric)
    op = run.operations().get(subject)
    if op is None:
        return None
    if metric == THROUGHPUT:
        return float(op["throughput"])
    return float(op["latency_ms"]["intended"][metric])


@dataclass
class Side:
    """The runs of one side."""

    runs: list[Run]

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
        return [v for run in self.runs
                if (v := run_figure(run, subject, metric, dimension)) is not None]


def estimate(
    side: Side, subject: str, metric: str, rng: np.random.Generator, *,
    dimension: bool = False, repetitions: bool = True,
) -> tuple[Estimate | None, str]:
    """The median of one side's per-run figures with a bootstrap interval over runs (for
    display and exports; never a significance test)."""
    values = side.per_run(subject, metric, dimension)
    if not values:
        return None, "none"
    boot = stats.boot_median(values, rng)
    return Estimate(float(np.median(values)), *stats.interval(boot), len(values), boot), \
        "median of runs" if repetitions else "single run"


def _logs(values: Sequence[float]) -> stats.FloatArray:
    return np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-9))


def _geo(values: Sequence[float]) -> Estimate:
    """Geometric mean of runs with a t interval (a single run has no interval)."""
    logs = _logs(values)
    mean = float(logs.mean())
    if len(logs) < 2:
        return Estimate(math.exp(mean), math.exp(mean), math.exp(mean), 1)
    half = float(sps.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return Estimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs))


def _one_sided(t: float, df: int) -> tuple[float, float]:
    """p that the true shift is > 0, and that it is < 0, for a t statistic."""
    return float(sps.t.sf(t, df)), float(sps.t.cdf(t, df))


def _mann_whitney(
    b: list[float], c: list[float], rng: np.random.Generator
) -> tuple[Estimate, Estimate, float, float, float, float, float]:
    bb, cb = stats.boot_median(b, rng), stats.boot_median(c, rng)
    be = Estimate(float(np.median(b)), *stats.interval(bb), len(b), bb)
    ce = Estimate(float(np.median(c)), *stats.interval(cb), len(c), cb)
    low, high = stats.interval(cb / np.maximum(bb, 1e-12))
    up = stats.mann_whitney_p(c, b, "greater")
    down = stats.mann_whitney_p(c, b, "less")
    return be, ce, ce.value / max(be.value, 1e-12) - 1, low - 1, high - 1, up, down


def _baseline_spread(
    b: list[float], c: list[float]
) -> tuple[Estimate, Estimate, float, float, float, float, float] | None:
    lb, lc = _logs(b), _logs(c)
    sd = float(lb.std(ddof=1))
    if sd <= 0:
        return None
    diff = float(lc.mean() - lb.mean())
    se = sd * math.sqrt(1 / len(lc) + 1 / len(lb))
    df = len(lb) - 1
    half = float(sps.t.ppf(0.975, df)) * se
    up, down = _one_sided(diff / se, df)
    return (_geo(b), _geo(c), math.expm1(diff), math.expm1(diff - half),
            math.expm1(diff + half), up, down)


def paired_test(
    pairs: Sequence[tuple[float, float]]
) -> tuple[float, float, float, float, float] | None:
    """(change, low, high, p up, p down) of B over A from per-round (a, b) figures."""
    if len(pairs) < 2:
        return None
    d = _logs([b for _, b in pairs]) - _logs([a for a, _ in pairs])
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    df = len(d) - 1
    if sd <= 0:
        # Every round moved by exactly the same factor: certain, in that direction.
        up, down = (0.0, 1.0) if mean > 0 else (1.0, 0.0) if mean < 0 else (1.0, 1.0)
        return math.expm1(mean), math.expm1(mean), math.expm1(mean), up, down
    se = sd / math.sqrt(len(d))
    half = float(sps.t.ppf(0.975, df)) * se
    up, down = _one_sided(mean / se, df)
    return math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half), up, down


def _needed(nb: int, nc: int, need: int) -> str:
    if nb >= need:
        return "inconclusive: no current run"
    return (f"inconclusive: {need - nb} more base run(s) needed to know the run-to-run "
            f"spread (base {nb} of {need}, current {nc})")


def compare_metric(
    base: Side, current: Side, subject: str, metric: str, *, unit: str, direction: Direction,
    thresholds: Thresholds, rng: np.random.Generator, dimension: bool = False,
    gated: bool = True,
) -> Change:
    """Compare one metric of one subject between the two sides (not yet Holm-adjusted)."""
    b = base.per_run(subject, metric, dimension)
    c = current.per_run(subject, metric, dimension)
    change = Change(subject, metric, unit, direction, thresholds.of(metric), None, None,
                    "none", gated=gated)
    if not b or not c:
        return replace(change, note=f"no figure in {'base' if not b else 'current'}")
    need = thresholds.min_runs
    found: tuple[Estimate, Estimate, float, float, float, float, float] | None = None
    if len(b) >= need and len(c) >= need:
        method: Method = "mann-whitney"
        found = _mann_whitney(b, c, rng)
    elif len(b) >= need:
        method = "baseline spread"
        found = _baseline_spread(b, c)
        if found is None:
            return replace(change, base=_geo(b), current=_geo(c), method=method,
                           verdict="inconclusive",
                           note="inconclusive: the base runs have no spread")
    if found is None:
        return replace(change, base=_geo(b), current=_geo(c), verdict="inconclusive",
                       note=_needed(len(b), len(c), need))
    be, ce, ch, low, high, up, down = found
    p_worse, p_better = (up, down) if direction == "smaller" else (down, up)
    return replace(change, base=be, current=ce, method=method, change=ch, change_low=low,
                   change_high=high, p_worse=p_worse, p_better=p_better)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def judge(changes: list[Change], alpha: float) -> list[Change]:
    """Verdicts: Holm over every gated test (one-sided, in the direction moved), then the
    threshold; ungated rows keep their own p."""
    def p_moved(c: Change) -> float | None:
        if c.change is None:
            return None
        bad = c.change > 0 if c.direction == "smaller" else c.change < 0
        return c.p_worse if bad else c.p_better

    tested = [i for i, c in enumerate(changes) if c.gated and p_moved(c) is not None]
    raw = [p_moved(changes[i]) for i in tested]
    adjusted = dict(zip(tested, holm([1.0 if p is None else p for p in raw]), strict=True))
    out = []
    for i, c in enumerate(changes):
        if c.verdict == "inconclusive" or c.change is None:
            out.append(c)
            continue
        p = adjusted.get(i, p_moved(c))
        c = replace(c, p_adjusted=p if c.gated else None)
        if not (c.worse or c.better):
            out.append(replace(c, verdict="unchanged"))
            continue
        verdict: Verdict = "not significant"
        if p is not None and p < alpha:
            # Outside the gated family the p-value is unadjusted: a hint, not a verdict.
            verdict = ("regression" if c.worse else "improvement") if c.gated else (
                "worse" if c.worse else "better")
        out.append(replace(c, verdict=verdict, note=c.note or (
            "" if c.gated or verdict == "not significant" else "not gated, unadjusted p")))
    return out


def machine_of(run: Run) -> str:
    """A machine fingerprint: CPU model, cores and memory (GiB)."""
    info = run.result.get("machine_info") or {}
    mem = info.get("memory_total_bytes")
    gib = f"{round(mem / 2**30)} GiB" if isinstance(mem, int | float) else "? GiB"
    return f"{info.get('cpu_model', '?')}, {info.get('logical_cores', '?')} cores, {gib}"


def placement_of(run: Run) -> str:
    """Where a run's local target and load generator ran: the cores the harness pinned them
    to, or "unpinned" (older files too)."""
    cpus = (run.result.get("target") or {}).get("cpus")
    if not isinstance(cpus, dict):
        return "unpinned"
    server = ",".join(str(c) for c in cpus.get("server", []))
    generator = ",".join(str(c) for c in cpus.get("generator", []))
    return f"target on core {server}, generator on {generator}"


def _scenario_notes(base: Sequence[Run], current: Sequence[Run]) -> list[str]:
    notes = []
    for key in ("name", "profile", "users", "rate"):
        b = sorted({str(r.scenario.get(key)) for r in base})
        c = sorted({str(r.scenario.get(key)) for r in current})
        if b != c:
            notes.append(f"scenario {key} differs: base {', '.join(b)}, current {', '.join(c)}")
    return notes


def evidence(runs: Sequence[Run], label: str, notes: list[str]) -> list[Run]:
    """The runs that count as evidence: noisy ones are set aside, with a note each."""
    kept = []
    for run in runs:
        if run.noisy:
            notes.append(f"{label}: {run.source} is noisy, not used as evidence "
                         f"({'; '.join(run.noise_reasons)})")
        else:
            kept.append(run)
    return kept


def compare(
    base: Sequence[Run], current: Sequence[Run], thresholds: Thresholds,
    *, seed: int = DEFAULT_SEED, base_label: str = "base", current_label: str = "current",
) -> Comparison:
    """Compare the runs of ``current`` with those of ``base`` (seeded, reproducible)."""
    if not base or not current:
        raise UserError("compare needs runs on both sides")
    rng = np.random.default_rng(seed)
    notes = _scenario_notes(base, current)
    platforms = sorted({r.platform for r in base}), sorted({r.platform for r in current})
    if platforms[0] != platforms[1]:
        notes.append(f"platforms differ: base {', '.join(platforms[0])}, "
                     f"current {', '.join(platforms[1])}")
    for label, runs in ((base_label, base), (current_label, current)):
        notes.extend(f"{label}: {r.source} is {r.problem}" for r in runs if r.problem)
    machines = sorted({machine_of(r) for r in base}), sorted({machine_of(r) for r in current})
    incomparable = machines[0] != machines[1]
    if incomparable:
        notes.append(f"inconclusive: the runs come from other machines (base "
                     f"{' | '.join(machines[0])}; current {' | '.join(machines[1])}); "
                     "latency is only comparable on one machine")
    placed = sorted({placement_of(r) for r in base}), sorted({placement_of(r) for r in current})
    if placed[0] != placed[1] and not incomparable:
        # A target sharing its cores with the generator spends more CPU per request and
        # answers later: the difference would be the harness's, not the build's.
        incomparable = True
        notes.append(f"inconclusive: the runs placed target and load generator differently "
                     f"(base {' | '.join(placed[0])}; current {' | '.join(placed[1])})")
    b = Side(evidence(base, base_label, notes))
    c = Side(evidence(current, current_label, notes))
    changes: list[Change] = []
    subjects = list(dict.fromkeys([*b.subjects(), *c.subjects()]))
    for subject in subjects:
        gated = subject == OVERALL or thresholds.scope == "all"
        for m in LATENCY_METRICS:
            changes.append(compare_metric(b, c, subject, m, unit="ms", direction="smaller",
                                          thresholds=thresholds, rng=rng, gated=gated))
        changes.append(compare_metric(b, c, subject, THROUGHPUT, unit="req/s",
                                      direction="bigger", thresholds=thresholds, rng=rng,
                                      gated=gated))
    for dim in dict.fromkeys([*b.dimension_ids(), *c.dimension_ids()]):
        unit = next((str(e["unit"]) for r in [*base, *current]
                     if (e := r.dimension(dim)) and e.get("unit")), "")
        for m in LATENCY_METRICS:
            change = compare_metric(b, c, dim, m, unit=unit, direction="smaller",
                                    thresholds=thresholds, rng=rng, dimension=True)
            if b.per_run(dim, m, True) or c.per_run(dim, m, True):
                changes.append(change)
    if incomparable:
        changes = [replace(ch, verdict="inconclusive",
                           note="inconclusive: other machines or core placement")
                   if ch.change is not None else ch for ch in changes]
    if not b.runs or not c.runs:
        notes.append("inconclusive: every run of a side is noisy")
    return Comparison(base_label, current_label, thresholds, judge(changes, thresholds.alpha),
                      notes)


def _paired_metric(
    pairs: Sequence[tuple[Run, Run]], subject: str, metric: str, *, unit: str,
    direction: Direction, thresholds: Thresholds, dimension: bool, gated: bool,
) -> Change:
    values = [(a, b) for ra, rb in pairs
              if (a := run_figure(ra, subject, metric, dimension)) is not None
              and (b := run_figure(rb, subject, metric, dimension)) is not None]
    change = Change(subject, metric, unit, direction, thresholds.of(metric), None, None,
                    "paired", gated=gated)
    if not values:
        return replace(change, method="none", note="no figure in the rounds")
    a_est, b_est = _geo([a for a, _ in values]), _geo([b for _, b in values])
    change = replace(change, base=a_est, current=b_est)
    found = paired_test(values) if len(values) >= thresholds.min_runs else None
    if found is None:
        return replace(change, verdict="inconclusive", note=(
            f"inconclusive: {thresholds.min_runs - len(values)} more usable pair(s) needed "
            f"({len(values)} of {thresholds.min_runs})"))
    ch, low, high, up, down = found
    p_worse, p_better = (up, down) if direction == "smaller" else (down, up)
    return replace(change, change=ch, change_low=low, change_high=high, p_worse=p_worse,
                   p_better=p_better)


def compare_paired(
    pairs: Sequence[tuple[Run, Run]], thresholds: Thresholds, *, a_label: str = "A",
    b_label: str = "B", notes: Sequence[str] = (),
) -> Comparison:
    """B against A from interleaved rounds: a paired t-test on per-pair log ratios."""
    runs_a, runs_b = [a for a, _ in pairs], [b for _, b in pairs]
    side_a, side_b = Side(runs_a), Side(runs_b)
    changes: list[Change] = []
    for subject in dict.fromkeys([*side_a.subjects(), *side_b.subjects()]):
        gated = subject == OVERALL or thresholds.scope == "all"
        for m in (*LATENCY_METRICS, THROUGHPUT):
            changes.append(_paired_metric(
                pairs, subject, m, unit="req/s" if m == THROUGHPUT else "ms",
                direction="bigger" if m == THROUGHPUT else "smaller", thresholds=thresholds,
                dimension=False, gated=gated))
    for dim in dict.fromkeys([*side_a.dimension_ids(), *side_b.dimension_ids()]):
        unit = next((str(e["unit"]) for r in [*runs_a, *runs_b]
                     if (e := r.dimension(dim)) and e.get("unit")), "")
        for m in LATENCY_METRICS:
            change = _paired_metric(pairs, dim, m, unit=unit, direction="smaller",
                                    thresholds=thresholds, dimension=True, gated=True)
            if change.base is not None:
                changes.append(change)
    return Comparison(a_label, b_label, thresholds, judge(changes, thresholds.alpha),
                      list(notes))


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
    """0: no regression shown (or inconclusive); 1: a regression; 3: an invalid run."""
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
