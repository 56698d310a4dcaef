"""Result assembly: a run's totals, judged, as the typed result (checkpoints and final)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.measure.noise import SystemSampler, judge_noise, limits_dict, p50_cv, summarize
from bench.measure.validity import judge, steady
from bench.probes import inrun
from bench.probes.registry import Findings, Probe
from bench.results.model import (
    Fixtures,
    Load,
    Overhead,
    RunResult,
    Target,
    TimelinePoint,
    Tool,
    Validity,
    ValidityLimits,
)
from bench.scenarios.config import Scenario
from bench.scenarios.session import Probed
from bench.scenarios.supervise import Outcome


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Provenance:
    """What a result says of itself before anything is measured."""

    schema_version: int
    run_id: str
    tool: Tool
    started_at: str
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    scenario: dict[str, Any]
    log: str


@dataclass
class RunRecord:
    """Everything a run's result is assembled from, filled in as the run goes on."""

    provenance: Provenance
    scenario: Scenario
    target: Target
    fixtures: Fixtures = field(default_factory=lambda: Fixtures(manifest_sha256=None))
    overhead: Overhead | None = None
    sampler: SystemSampler | None = None
    # The probes the scenario turns on, with their options.
    probes: Sequence[tuple[Probe[Any], Any]] = ()
    gated: dict[str, Findings] = field(default_factory=dict)
    probed: Probed = field(default_factory=Probed)


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def _validity(outcome: Outcome, scenario: Scenario, achieved: float,
              late: tuple[int, int]) -> Validity:
    acc, limits = outcome.acc, scenario.validity
    cpu = acc.cpu_measure
    lag = acc.lag_measure
    return Validity(
        generator_cpu_max_pct=_clean(max(cpu, default=math.nan)),
        generator_cpu_mean_pct=_clean(sum(cpu) / len(cpu) if cpu else math.nan),
        loop_lag_p99_ms=_clean(lag.percentile_ms(99) if lag.count else math.nan),
        loop_lag_max_ms=_clean(lag.max_ms if lag.count else math.nan),
        achieved_rate=round(achieved, 3), target_rate=scenario.rate,
        rate_fraction=round(achieved / scenario.rate, 4) if scenario.rate > 0 else None,
        late_sends=late[0], late_fraction=round(late[0] / late[1], 4),
        limits=ValidityLimits(limits.cpu_limit_pct, limits.loop_lag_p99_ms,
                              limits.min_rate_fraction, limits.late_tolerance_ms),
    )


def _judged(outcome: Outcome, scenario: Scenario, validity: Validity,
            complete: bool) -> tuple[bool, list[str]]:
    if scenario.workload:
        def given(x: float | None) -> float:
            return math.nan if x is None else x

        valid, reasons = judge(
            cpu_max_pct=given(validity.generator_cpu_max_pct),
            loop_lag_p99_ms=given(validity.loop_lag_p99_ms),
            achieved_rate=validity.achieved_rate, target_rate=scenario.rate,
            cpu_limit_pct=scenario.validity.cpu_limit_pct,
            lag_limit_ms=scenario.validity.loop_lag_p99_ms,
            min_rate_fraction=scenario.validity.min_rate_fraction,
        )
    else:
        # Probes only: no load, so no generator to judge.
        valid, reasons = True, []
    if not complete:
        head = outcome.abort_reason or "the run has not finished"
        # A run that never started has nothing else worth saying about its validity.
        return False, [head, *reasons] if outcome.started else [head]
    return valid, reasons


def _noise(record: RunRecord, outcome: Outcome, timeline: list[TimelinePoint],
           late_fraction: float) -> dict[str, Any]:
    """What disturbed the measurement window, and whether that makes the run noisy."""
    scenario, sampler = record.scenario, record.sampler
    w = scenario.phases.warmup_s
    count = outcome.acc.overall().count
    figures: dict[str, Any] = (
        summarize(sampler, w, w + scenario.phases.measure_s, count) if sampler is not None
        else {"samples": 0})
    cv = p50_cv([p.p50_ms for p in timeline if p.phase == "measure" and p.completed])
    figures["p50_cv"] = None if cv is None else round(cv, 4)
    figures["late_fraction"] = late_fraction
    drift = (record.overhead.drift_ms if record.overhead else None) or {}
    # p90, not p99: a few seconds of calibration hold too few samples for a stable p99.
    figures["overhead_drift_ms"] = abs(float(drift["p90"])) if drift else None
    reasons = judge_noise(figures, scenario.noise) if scenario.workload else []
    return {**figures, "noisy": bool(reasons), "reasons": reasons,
            "limits": limits_dict(scenario.noise)}


def _dimensions(record: RunRecord, outcome: Outcome, complete: bool,
                measure_s: float) -> dict[str, dict[str, Any]]:
    """In-run probes' entries (gated ones as the gate found them), then harness-side ones."""
    out: dict[str, dict[str, Any]] = {}
    acc = outcome.acc
    state = inrun.RunState(complete, measure_s, acc.probe_finals, tuple(acc.probe_errors))
    for probe, options in record.probes:
        if probe.run is not None:
            continue
        key = probe.result_key or probe.name
        gated = record.gated.get(probe.name)
        if gated is not None:
            out[key] = {**(gated[0] or {}), "rate": options.rate}
        else:
            out[key] = inrun.dimension(probe, options.rate, acc.stream(probe.stream or ""),
                                       state)
    out.update(record.probed.dimensions)
    return out


def assemble(record: RunRecord, outcome: Outcome, *, final: bool) -> RunResult:
    """The result of the run so far (``final``: the run is over)."""
    acc, scenario = outcome.acc, record.scenario
    complete = final and outcome.done and not outcome.interrupted
    measure_s = scenario.phases.measure_s
    if not complete:
        # Only the part of the measurement window that has passed counts.
        measure_s = max(min(acc.last_t - scenario.phases.warmup_s, measure_s), 1e-9)
    achieved = acc.sent.get("measure", 0) / measure_s
    timeline = acc.timeline()
    # Lateness of the measurement window: warm-up sends start while the target warms up.
    measured = acc.measured().values()
    late = (sum(a.late for a in measured), sum(a.count for a in measured) or 1)
    validity = _validity(outcome, scenario, achieved, late)
    valid, reasons = _judged(outcome, scenario, validity, complete)
    rates = [float(p.rate) for p in timeline if p.phase == "measure"]
    load = (Load(scenario.users, scenario.rate, round(achieved, 3), outcome.workers,
                 scenario.arrival, round(measure_s, 3),
                 steady(rates, scenario.rate) if rates else False)
            if scenario.workload else Load(0, 0.0, 0.0, 0, None, 0.0, False))
    p = record.provenance
    return RunResult(
        schema_version=p.schema_version, run_id=p.run_id, tool=p.tool,
        started_at=p.started_at, machine_info=p.machine_info, commit_info=p.commit_info,
        scenario=p.scenario, log=p.log, finished_at=now() if final else None,
        complete=complete, interrupted=outcome.interrupted,
        abort_reason=outcome.abort_reason, valid=valid, invalid_reasons=reasons,
        target=record.target, fixtures=record.fixtures, load=load, validity=validity,
        operations={op: a.to_result(measure_s) for op, a in sorted(acc.measured().items())},
        overall=acc.overall().to_result(measure_s), timeline=timeline,
        harness_overhead=record.overhead,
        noise=_noise(record, outcome, timeline, round(late[0] / late[1], 4)),
        dimensions=_dimensions(record, outcome, complete, measure_s),
        capabilities=dict(record.probed.capabilities),
    )


def with_drift(before: Overhead, after: Overhead | None) -> Overhead:
    """The overhead measured before the run, with the one after it and how far it moved."""
    if after is None:
        return before
    moved = None
    if before.latency_ms is not None and after.latency_ms is not None:
        b, a = before.latency_ms.intended, after.latency_ms.intended
        moved = {k: round(getattr(a, k) - getattr(b, k), 3) for k in ("p50", "p90", "p99")}
    kept = msgspec.structs.replace(after, histograms=None)
    return msgspec.structs.replace(before, after=msgspec.to_builtins(kept), drift_ms=moved)
