"""Capacity at an SLO: the highest offered rate at which a workload still holds it.

The offered rate is raised by a factor step by step until a run breaks the SLO (p99 from
the intended send time above the limit, errors above their share, or the run invalid
because the target fell behind), then bisected (geometric midpoints) between the last
rate that held and the first that did not. Every step is a full run with its own result
file. When the load generator itself is the limit (its CPU or event-loop lag past the
validity limits), the capacity is reported as "at least" the last rate that held.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.results.collect import failures
from bench.results.model import empty_operation
from bench.results.store import write_result
from bench.scenarios.config import Scenario
from bench.scenarios.runner import DEFAULT_FIXTURES, RunRequest, run
from bench.scenarios.supervise import Listener

Say = Callable[[str], None]
GENERATOR_MARKERS = ("CPU", "event-loop lag")


@dataclass(frozen=True)
class Slo:
    """What a rate must hold: p99 latency from the intended send, and the error share."""

    p99_ms: float = 50.0
    max_error_fraction: float = 0.01


@dataclass
class CapacityRequest:
    scenario: Scenario
    target: str
    slo: Slo = field(default_factory=Slo)
    start_rate: float = 250.0
    max_rate: float = 8000.0
    factor: float = 2.0
    bisect_steps: int = 3
    workers: int = 1
    out: Path = Path("reports/capacity")
    fixtures: Path = DEFAULT_FIXTURES
    # The server configuration of the target (``crmbench run --label``), kept per step.
    label: str | None = None
    # Whether an embedded target is pinned to a core of its own (``RunRequest.pin``).
    pin: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.start_rate <= self.max_rate:
            raise UserError("--start must be above 0 and at most --max-rate")
        if self.factor <= 1.05:
            raise UserError("--factor must be above 1.05")
        if self.slo.p99_ms <= 0 or not 0 <= self.slo.max_error_fraction < 1:
            raise UserError("the SLO needs p99 > 0 ms and an error share in [0, 1)")


@dataclass(frozen=True)
class Step:
    rate: float
    holds: bool
    why: str
    generator_limited: bool
    result: str
    figures: dict[str, Any]


def judge_step(result: dict[str, Any], slo: Slo) -> tuple[bool, str, bool]:
    """(holds, why not, the generator was the limit) for one step's result."""
    if not result.get("complete"):
        return False, f"incomplete: {result.get('abort_reason')}", False
    reasons = list(result.get("invalid_reasons") or [])
    generator = [r for r in reasons if any(m in r for m in GENERATOR_MARKERS)]
    if generator:
        return False, "the load generator is the limit: " + "; ".join(generator), True
    if reasons:
        return False, "invalid: " + "; ".join(reasons), False
    overall = result["overall"]
    p99 = float(overall["latency_ms"]["intended"]["p99"])
    errors = failures(overall) / overall["count"] if overall["count"] else 1.0
    if p99 > slo.p99_ms:
        return False, f"p99 {p99:.1f} ms > {slo.p99_ms:g} ms", False
    if errors > slo.max_error_fraction:
        return False, f"errors {errors:.2%} > {slo.max_error_fraction:.0%}", False
    return True, "", False


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    overall = result.get("overall") or {}
    intended = (overall.get("latency_ms") or {}).get("intended") or {}
    noise = result.get("noise") or {}
    return {
        "achieved_rate": (result.get("load") or {}).get("achieved_rate"),
        "p50_ms": intended.get("p50"), "p99_ms": intended.get("p99"),
        "errors": overall.get("errors"), "count": overall.get("count"),
        "server_cpu_pct": noise.get("server_cpu_pct"),
        "server_cpu_ms_per_request": noise.get("server_cpu_ms_per_request"),
        "generator_cpu_max_pct": (result.get("validity") or {}).get("generator_cpu_max_pct"),
        "noisy": bool(noise.get("noisy")),
    }


def find_capacity(
    req: CapacityRequest, say: Say, on_interval: Listener | None = None
) -> tuple[Path, dict[str, Any]]:
    """Run the search; write and return the capacity result (a probe-only result file)."""
    steps: list[Step] = []
    last: dict[str, Any] | None = None

    def measure(rate: float) -> Step:
        nonlocal last
        users = req.scenario.users
        scenario = replace(req.scenario, rate=round(rate, 3), users=users)
        say(f"capacity: offering {rate:,.0f} req/s ({users} users)")
        report = run(RunRequest(scenario, target=req.target, out=req.out / "steps",
                                fixtures=req.fixtures, calibrate=False, workers=req.workers,
                                label=req.label, pin=req.pin),
                     say=say, on_interval=on_interval)
        last = report.result
        holds, why, gen = judge_step(report.result, req.slo)
        step = Step(rate, holds, why, gen, str(report.path), _figures(report.result))
        steps.append(step)
        say(f"capacity: {rate:,.0f} req/s " + ("holds" if holds else f"does not hold ({why})"))
        if report.exit_code == 4:
            raise UserError(f"the target stopped answering at {rate:,.0f} req/s: {why}")
        return step

    low: float | None = None
    high: float | None = None
    limited = False
    rate = req.start_rate
    while rate <= req.max_rate:
        step = measure(rate)
        if step.holds:
            low = rate
            rate *= req.factor
            continue
        high, limited = rate, step.generator_limited
        break
    if low is not None and high is not None and not limited:
        for _ in range(req.bisect_steps):
            mid = math.sqrt(low * high)
            step = measure(mid)
            if step.holds:
                low = mid
            elif step.generator_limited:
                high, limited = mid, True
                break
            else:
                high = mid
    if last is None:
        raise UserError("capacity: no step ran")
    return _write(req, steps, low, high, limited, last)


def _write(
    req: CapacityRequest, steps: list[Step], low: float | None, high: float | None,
    limited: bool, last: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    slo_text = f"p99 <= {req.slo.p99_ms:g} ms, errors <= {req.slo.max_error_fraction:.0%}"
    entry: dict[str, Any] = {
        "capability": "crud.capacity", "unit": "req/s", "slo": slo_text,
        "slo_p99_ms": req.slo.p99_ms, "max_error_fraction": req.slo.max_error_fraction,
        "users": req.scenario.users, "scenario": req.scenario.name,
        "curve": [{"offered_rate": s.rate, "holds": s.holds, "why": s.why,
                   "result": s.result, **s.figures} for s in sorted(steps, key=lambda s: s.rate)],
    }
    if low is None:
        entry.update(status="fail", value=None,
                     reason=f"not even {req.start_rate:g} req/s holds {slo_text}")
    elif high is None:
        entry.update(status="pass", value=round(low, 1), at_least=True,
                     reason=f"every rate up to --max-rate {req.max_rate:g} req/s held")
    else:
        entry.update(status="pass", value=round(low, 1), at_least=limited,
                     first_failing_rate=round(high, 1))
        if limited:
            entry["reason"] = ("the load generator reached its limit first: the target "
                               "holds at least this rate")
    result = {
        **{k: v for k, v in last.items() if k not in ("dimensions", "capabilities", "noise")},
        "run_id": f"{last['run_id']}-capacity",
        "scenario": {**last["scenario"], "name": f"{req.scenario.name}-capacity"},
        "operations": {}, "timeline": [],
        "overall": empty_operation(),
        "complete": True, "valid": True, "invalid_reasons": [], "abort_reason": None,
        "dimensions": {"crud_capacity": entry},
    }
    name = Path(steps[-1].result).name.replace(".json", "-capacity.json")
    path = req.out / name
    write_result(path, result)
    return path, entry
