"""Power check of the gate and of ``crmbench ab``: false positives and detection rates.

A benchmark, not a test: it runs for tens of minutes and must run alone on the machine.
Four embedded reference CRMs serve the same fixture profile: A and A2 (the same build, for
A/A), S% (a CPU slowdown of a share of each request's handling) and Sms (a fixed wait per
request; both from ``reference_impl.slowdown``, test mode only). Rounds of
the mixed workload run against them cycle by cycle in a rotating order, so every server
sees every position; consecutive cycles then form disjoint trials:

- ``ab`` A/A: the paired test of A2 against A over ``--pairs`` cycles (as ``crmbench ab``);
- ``ab`` detection: the same with S% and with Sms as B;
- ``gate`` A/A and detection, stored-baseline mode with ``--pairs`` runs a side
  (Mann-Whitney), and a single current run against that baseline's spread.

Rounds flagged noisy or invalid are left out of their trial, as the gate and ``crmbench
ab`` leave them out; a trial left with too few pairs is inconclusive (not detected, and
no false positive). Usage::

    python -m benchmarks.gate_power --trials 20 --pairs 5 --out reports/power
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.adapters.embedded import EmbeddedOptions, EmbeddedReference
from bench.measure.provenance import commit_info, machine_info
from bench.results.collect import Run
from bench.results.compare import compare, compare_paired
from bench.results.store import write_result
from bench.results.thresholds import Thresholds
from bench.scenarios.config import load_scenario
from bench.scenarios.runner import DEFAULT_FIXTURES, RunRequest, run

SERVERS = ("A", "A2", "Spct", "Sms")


def _usable(run_: Run) -> bool:
    return run_.problem is None and not run_.noisy


def _overall_change(comparison: Any, metric: str) -> float | None:
    for c in comparison.changes:
        if (c.subject, c.metric) == ("overall", metric):
            return float(c.change) if c.change is not None else None
    return None


def _groups(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k * size:(k + 1) * size] for k in range(len(items) // size)]


def evaluate(rounds: dict[str, list[Run]], pairs: int, thresholds: Thresholds) -> dict[str, Any]:
    """Trials as the tools form them from usable rounds, and the rates they add up to.

    ``ab``: consecutive usable pairs, ``pairs`` at a time (``crmbench ab`` replaces a pair
    with a set-aside round by the next one). ``gate``: ``pairs`` usable A rounds as the
    stored baseline against ``pairs`` usable rounds of the other server, and against one.
    """
    out: dict[str, Any] = {}
    conditions = {"A/A": "A2", "CPU slowdown %": "Spct", "delay ms": "Sms"}
    base = [r for r in rounds["A"] if _usable(r)]
    for label, server in conditions.items():
        usable = [(a, b) for a, b in zip(rounds["A"], rounds[server], strict=False)
                  if _usable(a) and _usable(b)]
        ab = [compare_paired(trial, thresholds) for trial in _groups(usable, pairs)]
        other = [r for r in rounds[server] if _usable(r)]
        sides = list(zip(_groups(base, pairs), _groups(other, pairs), strict=False))
        gate = [compare(b, c, thresholds) for b, c in sides]
        single = [compare(b, c[:1], thresholds) for b, c in sides]
        effects = [e for c in ab if (e := _overall_change(c, "p50")) is not None]
        p99 = [e for c in ab if (e := _overall_change(c, "p99")) is not None]
        out[label] = {
            "ab_trials": len(ab), "ab_flagged": sum(bool(c.regressions) for c in ab),
            "ab_inconclusive": sum(c.inconclusive for c in ab),
            "gate_trials": len(gate), "gate_flagged": sum(bool(c.regressions) for c in gate),
            "gate_single_run_flagged": sum(bool(c.regressions) for c in single),
            "p50_change_median": round(statistics.median(effects), 4) if effects else None,
            "p99_change_median": round(statistics.median(p99), 4) if p99 else None,
        }
    return out


def load_rounds(folder: Path) -> dict[str, list[Run]]:
    """The rounds of a finished (or interrupted) power check, in the order they ran."""
    return {name: [Run(str(p), json.loads(p.read_text()))
                   for p in sorted((folder / name).glob("*.json"))] for name in SERVERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=None, help="override warm-up s")
    parser.add_argument("--measure", type=float, default=None, help="override measurement s")
    parser.add_argument("--slowdown-pct", type=float, default=30.0,
                        help="CPU slowdown of server S%%, in %% of each request's handling")
    parser.add_argument("--delay-ms", type=float, default=1.0,
                        help="wait added by server Sms to every response")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--out", type=Path, default=Path("reports/power"))
    parser.add_argument("--evaluate", type=Path, default=None,
                        help="only evaluate the rounds of an earlier check in this folder")
    args = parser.parse_args(argv)
    if args.evaluate is not None:
        found = evaluate(load_rounds(args.evaluate), args.pairs, Thresholds(min_runs=args.pairs))
        print(json.dumps(found, indent=1))
        return 0

    scenario = load_scenario(args.scenario, profile=args.profile, users=args.users,
                             rate=args.rate)
    if args.warmup is not None or args.measure is not None:
        from dataclasses import replace

        phases = replace(scenario.phases,
                         warmup_s=args.warmup if args.warmup is not None
                         else scenario.phases.warmup_s,
                         measure_s=args.measure if args.measure is not None
                         else scenario.phases.measure_s,
                         cooldown_s=1.0, calibration_s=0.0)
        scenario = replace(scenario, phases=phases)
    thresholds = Thresholds(min_runs=args.pairs)
    options = {
        "A": EmbeddedOptions(), "A2": EmbeddedOptions(),
        "Spct": EmbeddedOptions(slowdown_pct=args.slowdown_pct),
        "Sms": EmbeddedOptions(delay_ms=args.delay_ms),
    }
    # A SIGTERM stops like Ctrl-C, so the four servers are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    token = secrets.token_urlsafe(24)
    os.environ["CRMBENCH_API_TOKEN"] = token
    servers = {k: EmbeddedReference(args.fixtures, options=o) for k, o in options.items()}
    cycles = args.trials * args.pairs
    rounds: dict[str, list[Run]] = {k: [] for k in SERVERS}
    folder = args.out / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    started = time.monotonic()
    try:
        for ref in servers.values():
            ref.token = token
            ref.__enter__()
        for cycle in range(cycles):
            order = SERVERS[cycle % 4:] + SERVERS[:cycle % 4]
            for name in order:
                report = run(RunRequest(scenario, target=servers[name].url,
                                        out=folder / name, calibrate=False),
                             say=lambda _m: None)
                rounds[name].append(Run(str(report.path), report.result))
                if not report.result.get("complete"):
                    print(f"round {name} of cycle {cycle} did not finish: "
                          f"{report.result.get('abort_reason')}", file=sys.stderr)
                    return 3
            done = cycle + 1
            left = (time.monotonic() - started) / done * (cycles - done)
            aside = sum(1 for v in rounds.values() for r in v if not _usable(r))
            print(f"cycle {done}/{cycles}, {aside} of {4 * done} rounds set aside so far, "
                  f"about {left / 60:.0f} min left", file=sys.stderr)
    finally:
        for ref in servers.values():
            ref.__exit__(None, None, None)
    noisy = {k: sum(1 for r in v if not _usable(r)) for k, v in rounds.items()}
    summary = {
        "machine_info": machine_info(), "commit_info": commit_info(),
        "scenario": scenario.to_dict(), "trials": args.trials, "pairs": args.pairs,
        "slowdown_pct": args.slowdown_pct, "delay_ms": args.delay_ms,
        "thresholds": thresholds.to_dict(), "rounds_set_aside": noisy,
        "seconds": round(time.monotonic() - started, 1),
        "results": evaluate(rounds, args.pairs, thresholds),
    }
    write_result(folder / "power.json", summary)
    print(json.dumps(summary["results"], indent=1))
    print(f"rounds set aside (noisy or invalid): {noisy}", file=sys.stderr)
    print(f"written to {folder / 'power.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
