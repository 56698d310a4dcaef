"""Capacity at an SLO: step verdicts and a real search against the no-op target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.errors import UserError
from bench.results.store import read_result
from bench.scenarios.capacity import CapacityRequest, Slo, find_capacity, judge_step
from bench.scenarios.config import load_scenario


def result(p99: float, *, errors: int = 0, reasons: tuple[str, ...] = (),
           complete: bool = True, answers: dict[str, int] | None = None) -> dict[str, Any]:
    statuses = {"ok": 1000 - errors - sum((answers or {}).values()), "timeout": errors,
                **(answers or {})}
    return {"complete": complete, "abort_reason": None if complete else "target died",
            "invalid_reasons": list(reasons),
            "overall": {"count": 1000, "errors": 1000 - statuses["ok"], "statuses": statuses,
                        "latency_ms": {"intended": {"p99": p99}}}}


def test_step_verdicts() -> None:
    slo = Slo(p99_ms=50, max_error_fraction=0.01)
    assert judge_step(result(10), slo) == (True, "", False)
    assert judge_step(result(60), slo)[1] == "p99 60.0 ms > 50 ms"
    assert judge_step(result(10, errors=20), slo)[1] == "errors 2.00% > 1%"
    # Refusals, not-found and operations the platform lacks are answers, not failures.
    answered = result(10, answers={"rejected": 40, "unsupported": 30, "not_found": 5})
    assert judge_step(answered, slo) == (True, "", False)
    assert judge_step(result(10, answers={"rate_limited": 20}), slo)[1] == "errors 2.00% > 1%"
    held, why, generator = judge_step(
        result(10, reasons=("generator CPU max 97% > 90% of a core",)), slo)
    assert not held and generator and "load generator is the limit" in why
    held, why, generator = judge_step(
        result(10, reasons=("achieved 700 req/s, 70% of the target",)), slo)
    assert not held and not generator and why.startswith("invalid")
    assert judge_step(result(10, complete=False), slo)[1] == "incomplete: target died"


def test_bad_requests_are_refused() -> None:
    scenario = load_scenario("mixed", profile="quick")
    with pytest.raises(UserError, match="--factor"):
        CapacityRequest(scenario, "noop://", factor=1.0)
    with pytest.raises(UserError, match="--start"):
        CapacityRequest(scenario, "noop://", start_rate=900, max_rate=800)


def test_search_against_a_slow_noop_target(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text('version = 1\nname = "tiny"\nusers = 10\nrate = 100\n[mix]\n'
                    'get_customer = 1\n[profiles.quick]\nwarmup_s = 0.5\nmeasure_s = 1.5\n'
                    'cooldown_s = 0.5\ncalibration_s = 0\n'
                    # The search is under test, not this machine's load: a busy generator
                    # must not end it early.
                    '[validity]\ncpu_limit_pct = 1000\nloop_lag_p99_ms = 10000\n')
    scenario = load_scenario(str(path), profile="quick")
    # 10 users and a 20 ms target: each user can send 50 req/s at most, so 200 req/s holds
    # and 800 req/s cannot reach its rate (invalid) or breaks the 200 ms p99.
    req = CapacityRequest(scenario, "noop://?delay_ms=20", Slo(p99_ms=200), start_rate=200,
                          max_rate=800, factor=4, bisect_steps=1, out=tmp_path / "cap")
    written, entry = find_capacity(req, say=lambda _m: None)
    assert entry["status"] == "pass"
    assert 200 <= entry["value"] < 800
    assert entry["first_failing_rate"] <= 800
    rates = [p["offered_rate"] for p in entry["curve"]]
    assert rates == sorted(rates) and rates[0] == 200 and 800 in rates
    assert read_result(written)["dimensions"]["crud_capacity"]["value"] == entry["value"]
