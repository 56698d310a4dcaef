"""Interleaved A/B runs on one machine: rounds in ABBA order, a paired test per round.

Two targets (or two builds: ``reference://embedded?source=DIR``) run the same scenario in
alternating order, A B, B A, A B ..., so that a slow spell of the machine lands on both
sides. Each pair of rounds gives one log ratio per metric; the paired t-test on those
ratios decides (``bench.results.compare.compare_paired``). A pair with an invalid or noisy
round is no evidence: it is replaced by a new pair, up to ``max_pairs``. The summary
(``ab.json``) is rewritten after every round, so an interrupted A/B leaves what it has,
marked incomplete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.adapters.registry import redact_url
from bench.errors import UserError
from bench.measure.provenance import commit_info, machine_info
from bench.results.collect import Run
from bench.results.compare import Comparison, compare_paired
from bench.results.store import write_result
from bench.results.thresholds import Thresholds
from bench.scenarios.config import Scenario
from bench.scenarios.runner import DEFAULT_FIXTURES, RunRequest, calibrate, run
from bench.scenarios.session import cpu_plan
from bench.scenarios.supervise import Listener

Say = Callable[[str], None]
SIDES = ("A", "B")


def round_order(pairs: int) -> list[tuple[int, str]]:
    """(pair, side) in ABBA order: A B, B A, A B, ..."""
    out: list[tuple[int, str]] = []
    for i in range(pairs):
        first, second = SIDES if i % 2 == 0 else SIDES[::-1]
        out += [(i, first), (i, second)]
    return out


@dataclass
class AbRequest:
    """What to compare, how often, and where the rounds go."""

    scenario: Scenario
    a: str
    b: str
    thresholds: Thresholds
    pairs: int = 5
    max_pairs: int | None = None
    out: Path = Path("reports/ab")
    fixtures: Path = DEFAULT_FIXTURES
    calibrate: bool = True
    # Whether embedded targets are pinned to a core of their own (``RunRequest.pin``).
    pin: bool = True

    def __post_init__(self) -> None:
        if self.pairs < self.thresholds.min_runs:
            raise UserError(f"--pairs {self.pairs} is fewer than the {self.thresholds.min_runs} "
                            "pairs the paired test needs (min_runs)")
        if self.max_pairs is None:
            self.max_pairs = 2 * self.pairs
        if self.max_pairs < self.pairs:
            raise UserError("--max-pairs must be at least --pairs")


@dataclass
class AbOutcome:
    """The rounds, the comparison of the usable pairs, and the exit code."""

    path: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    comparison: Comparison | None = None
    complete: bool = False
    exit_code: int = 0
    problem: str | None = None


def _usable(run: Run) -> str | None:
    """Why a round is no evidence, or None."""
    if run.problem:
        return run.problem
    if run.noisy:
        return "noisy: " + "; ".join(run.noise_reasons)
    return None


def run_ab(req: AbRequest, say: Say, on_interval: Listener | None = None) -> AbOutcome:
    """Run the interleaved rounds and compare B with A."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = req.out / f"{stamp}-{req.scenario.name}-ab"
    folder.mkdir(parents=True, exist_ok=True)
    outcome = AbOutcome(folder / "ab.json")
    targets = {"A": req.a, "B": req.b}
    overhead: dict[str, Any] = {}
    # The generator's cores in the rounds (the same for both sides), for its calibration too.
    split = cpu_plan(req.a) if req.pin else None
    cpus = split.generator if split is not None else None
    head = {
        "crmbench_ab": 1, "started_at": stamp, "machine_info": machine_info(),
        "commit_info": commit_info(), "scenario": req.scenario.to_dict(),
        "targets": {k: redact_url(v) for k, v in targets.items()},
        "pairs_wanted": req.pairs, "max_pairs": req.max_pairs,
        "order": "ABBA (A B, B A, A B, ...)",
    }
    finished: dict[int, dict[str, Run]] = {}
    usable: list[tuple[Run, Run]] = []

    def save() -> None:
        body = {**head, "complete": outcome.complete, "problem": outcome.problem,
                "harness_overhead": overhead, "rounds": outcome.rounds,
                "usable_pairs": len(usable),
                "comparison": outcome.comparison.to_dict() if outcome.comparison else None}
        write_result(outcome.path, body)

    if req.calibrate and req.scenario.phases.calibration_s > 0:
        overhead["before"] = calibrate(req.scenario, folder / "calibration.log", say, cpus)
    pair = 0
    assert req.max_pairs is not None
    while len(usable) < req.pairs and pair < req.max_pairs:
        for _, side in round_order(pair + 1)[-2:]:
            say(f"pair {pair + 1} (usable {len(usable)} of {req.pairs}): round {side} "
                f"against {redact_url(targets[side])}")
            report = run(RunRequest(req.scenario, target=targets[side], out=folder / side,
                                    fixtures=req.fixtures, calibrate=False, pin=req.pin),
                         say=say, on_interval=on_interval)
            found = Run(str(report.path), report.result)
            finished.setdefault(pair, {})[side] = found
            why = _usable(found)
            outcome.rounds.append({"pair": pair, "side": side, "result": str(report.path),
                                   "usable": why is None, "reason": why})
            save()
            if not report.result.get("complete"):
                outcome.problem = (f"round {side} of pair {pair + 1} did not finish: "
                                   f"{report.result.get('abort_reason')}")
                outcome.exit_code = report.exit_code or 3
                save()
                return outcome
        a, b = finished[pair]["A"], finished[pair]["B"]
        if _usable(a) is None and _usable(b) is None:
            usable.append((a, b))
        pair += 1
    if req.calibrate and req.scenario.phases.calibration_s > 0:
        overhead["after"] = calibrate(req.scenario, folder / "calibration.log", say, cpus)
    notes = [f"{len(usable)} usable pair(s) of {pair} run; A = {redact_url(req.a)}, "
             f"B = {redact_url(req.b)}"]
    notes += [f"pair {r['pair'] + 1} round {r['side']} set aside: {r['reason']}"
              for r in outcome.rounds if not r["usable"]]
    outcome.comparison = compare_paired(usable, req.thresholds, a_label=f"A {redact_url(req.a)}",
                                        b_label=f"B {redact_url(req.b)}", notes=notes)
    outcome.complete = True
    outcome.exit_code = 1 if outcome.comparison.regressions else 0
    save()
    return outcome


def summary(outcome: AbOutcome) -> str:
    """One line for the terminal: the gated figures and the verdict."""
    if outcome.comparison is None:
        return f"A/B incomplete: {outcome.problem}"
    parts = []
    for c in outcome.comparison.changes:
        if c.subject == "overall" and c.change is not None:
            parts.append(f"{c.metric} {c.change:+.1%} ({c.verdict})")
    verdict = ("regression" if outcome.comparison.regressions else
               "inconclusive" if outcome.comparison.inconclusive else "no regression")
    return f"B vs A: {', '.join(parts) or 'nothing compared'}: {verdict}"

