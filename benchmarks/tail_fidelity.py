"""Tail fidelity of the harness: its latency against an independent open-loop client's.

One embedded reference CRM on 127.0.0.1; in interleaved rounds (harness, independent
client, harness, ...) the same load, ``get_customer`` over uniformly drawn customer ids
from ``--users`` paced users at ``--rate`` req/s, with latency counted from each request's
intended send time. Then no-op runs measure what the harness alone adds. With
``--baseline DIR`` the load generator of another checkout (e.g. ``git archive`` of an
older commit) runs as a third contender in every round.

Run: ``.venv/bin/python benchmarks/tail_fidelity.py [--rounds 3] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path("fixtures/data/default")
WARMUP_S = 1.0
COOLDOWN_S = 0.5
LATE_NS = 1_000_000

SCENARIO = """\
version = 1
name = "tail-fidelity"
description = "get_customer only, uniform keys: for comparing the harness with another client"
users = {users}
rate = {rate}
arrival = "pacing"
seed = 1

[keys]
distribution = "uniform"

[mix]
get_customer = 1

[profiles.tail]
warmup_s = {warmup}
measure_s = {measure}
cooldown_s = {cooldown}
calibration_s = 0
"""


@dataclass
class Figures:
    """One run's latency from the intended send time, and how it was sent."""

    who: str
    count: int
    p50_ms: float
    p99_ms: float
    late_fraction: float
    cpu_pct: float | None = None
    errors: int = 0

    def line(self) -> str:
        cpu = f"  cpu {self.cpu_pct:5.1f} %" if self.cpu_pct is not None else ""
        return (f"{self.who:<26} n={self.count:<6} p50 {self.p50_ms:6.3f} ms  "
                f"p99 {self.p99_ms:7.3f} ms  late {100 * self.late_fraction:5.2f} %"
                f"  errors {self.errors}{cpu}")


# ---------------------------------------------------------------------- the harness


def _scenario_file(folder: Path, users: int, rate: float, seconds: float) -> Path:
    path = folder / "tail-fidelity.toml"
    path.write_text(SCENARIO.format(users=users, rate=rate, warmup=WARMUP_S, measure=seconds,
                                    cooldown=COOLDOWN_S))
    return path


@contextlib.contextmanager
def _generator_from(source: Path | None) -> Iterator[None]:
    """Let the load-generator subprocess import ``bench`` from ``source``."""
    if source is None:
        yield
        return
    saved = os.environ.get("PYTHONPATH")
    cwd = Path.cwd()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source.resolve()), saved]))
    # ``python -m`` puts the working directory ahead of PYTHONPATH.
    os.chdir(source)
    try:
        yield
    finally:
        os.chdir(cwd)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def run_harness(target: str, scenario_path: Path, users: int, rate: float,
                out: Path, who: str = "harness", source: Path | None = None) -> Figures:
    """One ``crmbench run`` through the Python API; figures of its measure phase."""
    from bench.scenarios.config import load_scenario
    from bench.scenarios.runner import RunRequest, run

    scenario = load_scenario(str(scenario_path), profile="tail", users=users, rate=rate)
    with _generator_from(source):
        report = run(RunRequest(scenario, target=target, out=out, calibrate=False),
                     say=lambda _msg: None)
    result = report.result
    if not result.get("complete"):
        raise SystemExit(f"{who} run did not complete: {result.get('abort_reason')}")
    overall = result["overall"]
    intended = overall["latency_ms"]["intended"]
    return Figures(
        who=who, count=int(intended["count"]), p50_ms=float(intended["p50"]),
        p99_ms=float(intended["p99"]),
        # Of the measured sends, as for the client (the result's own figure counts all).
        late_fraction=int(overall["late"]) / max(int(overall["count"]), 1),
        cpu_pct=result["validity"].get("generator_cpu_mean_pct"), errors=int(overall["errors"]),
    )


# ---------------------------------------------------------------------- the independent client


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


class _Waker:
    """Wakes coroutines at perf_counter_ns deadlines through a timerfd, as precisely as the
    harness's generator does (loop timers round to whole milliseconds)."""

    def __init__(self) -> None:
        from bench.measure.schedule import MonotonicTimer, WakeQueue

        self.loop = asyncio.get_running_loop()
        self.queue: WakeQueue[asyncio.Future[None]] = WakeQueue()
        self.timer = MonotonicTimer()
        self.loop.add_reader(self.timer.fileno(), self._fire)

    async def until(self, when_ns: int) -> None:
        if when_ns <= time.perf_counter_ns():
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.queue.push(when_ns, fut):
            self.timer.arm(when_ns)
        await fut

    def _fire(self) -> None:
        self.timer.consume()
        for fut in self.queue.pop_due(time.perf_counter_ns()):
            fut.set_result(None)
        self.timer.arm(self.queue.next_ns())

    def close(self) -> None:
        self.loop.remove_reader(self.timer.fileno())
        self.timer.close()


async def _loop_timer(when_ns: int) -> None:
    now = time.perf_counter_ns()
    if when_ns > now:
        await asyncio.sleep((when_ns - now) / 1e9)
    # Loop timers have millisecond resolution and may fire a little early.
    while time.perf_counter_ns() < when_ns:
        await asyncio.sleep(0)


async def _user(host: str, port: int, token: str, customers: int, rng: random.Random,
                first_ns: int, period_ns: int, end_ns: int,
                out: list[tuple[int, int, int, int]], wait: Any) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\nUser-Agent: tail-fidelity\r\n\r\n")
    k = 0
    try:
        while True:
            intended = first_ns + k * period_ns
            if intended >= end_ns:
                return
            k += 1
            await wait(intended)
            request = f"GET /customers/{rng.randint(1, customers)} HTTP/1.1\r\n{head}"
            start = time.perf_counter_ns()
            writer.write(request.encode())
            try:
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = 0
            out.append((intended, start, time.perf_counter_ns(), status))
            if status == 0:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _client(host: str, port: int, token: str, customers: int, users: int, rate: float,
                  seconds: float, seed: int,
                  timerfd: bool) -> tuple[list[tuple[int, int, int, int]], int]:
    period_ns = round(users / rate * 1e9)
    rng = random.Random(seed)
    t0 = time.perf_counter_ns() + 200_000_000
    end = t0 + round((WARMUP_S + seconds + COOLDOWN_S) * 1e9)
    out: list[tuple[int, int, int, int]] = []
    waker = _Waker() if timerfd else None
    try:
        await asyncio.gather(*(
            _user(host, port, token, customers, random.Random(rng.random()),
                  t0 + int(rng.random() * period_ns), period_ns, end, out,
                  waker.until if waker is not None else _loop_timer)
            for _ in range(users)
        ))
    finally:
        if waker is not None:
            waker.close()
    return out, t0


def run_client(url: str, token: str, customers: int, users: int, rate: float,
               seconds: float, seed: int, timerfd: bool = True) -> Figures:
    """An asyncio open-loop client (uvloop if installed) with the harness's schedule.

    It wakes its users through a timerfd, or with ``timerfd=False`` through the loop's
    own timers, which round to whole milliseconds.
    """
    host_port = url.split("://", 1)[1]
    host, port = host_port.rsplit(":", 1)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            samples, t0 = runner.run(
                _client(host, int(port), token, customers, users, rate, seconds, seed,
                        timerfd))
    finally:
        gc.enable()
    lo = t0 + round(WARMUP_S * 1e9)
    hi = lo + round(seconds * 1e9)
    measured = [s for s in samples if lo <= s[0] < hi]
    response = np.array([end - intended for intended, _s, end, _st in measured], dtype=np.int64)
    late = sum(1 for intended, start, _e, _st in measured if start - intended > LATE_NS)
    errors = sum(1 for *_rest, status in measured if status != 200)
    return Figures(
        who="client" if timerfd else "client-looptimers", count=len(measured),
        p50_ms=float(np.percentile(response, 50)) / 1e6,
        p99_ms=float(np.percentile(response, 99)) / 1e6,
        late_fraction=late / max(len(measured), 1), errors=errors,
    )


# ---------------------------------------------------------------------- main


def _customers(url: str, token: str) -> int:
    from bench.adapters.registry import create_adapter

    os.environ["CRMBENCH_API_TOKEN"] = token
    adapter = create_adapter(url)
    adapter.open()
    try:
        return int(adapter.keyspace().customers)
    finally:
        adapter.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--fixtures", type=Path, default=FIXTURES)
    parser.add_argument("--noop-rounds", type=int, default=2,
                        help="no-op runs at --users/--rate and at 500 users / 1000 req/s")
    parser.add_argument("--json", type=Path, help="also write all figures here")
    parser.add_argument("--client-timers", choices=["timerfd", "loop", "both"], default="both",
                        help="how the independent client wakes its users")
    parser.add_argument("--baseline", type=Path,
                        help="source tree whose load generator also runs in every round")
    args = parser.parse_args(argv)
    args.fixtures = args.fixtures.resolve()

    from bench.adapters.embedded import EmbeddedReference

    while not (args.fixtures / "manifest.json").is_file():
        print(f"waiting for {args.fixtures}/manifest.json", file=sys.stderr)
        time.sleep(10)

    from bench.measure.schedule import MonotonicTimer

    clients = {"timerfd": [True], "loop": [False], "both": [True, False]}[args.client_timers]
    if not MonotonicTimer.available():
        clients = [False]
    harnesses = [("harness", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    runs: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="tail-fidelity-") as tmp:
        folder = Path(tmp)
        scenario = _scenario_file(folder, args.users, args.rate, args.seconds)
        with EmbeddedReference(args.fixtures) as ref:
            customers = _customers(ref.url, ref.token)
            http_url = ref.url.replace("reference+http", "http")
            print(f"reference CRM at {ref.url}, {customers:,} customers; "
                  f"{args.users} users, {args.rate:g} req/s, {args.seconds:g} s measured")
            for i in range(args.rounds):
                for who, source in harnesses:
                    fig = run_harness(ref.url, scenario, args.users, args.rate,
                                      folder / "runs", who, source)
                    runs.setdefault(who, []).append(fig)
                    print(f"round {i + 1}  {fig.line()}", flush=True)
                for timerfd in clients:
                    fig = run_client(http_url, ref.token, customers, args.users, args.rate,
                                     args.seconds, seed=i, timerfd=timerfd)
                    runs.setdefault(fig.who, []).append(fig)
                    print(f"round {i + 1}  {fig.line()}", flush=True)
        loads = [(args.users, args.rate), (500, 1000.0)]
        for i in range(args.noop_rounds):
            for users, rate in loads:
                for who, source in harnesses:
                    key = f"noop {who} {users}u/{rate:g}"
                    fig = run_harness("noop://?delay_ms=0", scenario, users, rate,
                                      folder / "runs", key, source)
                    runs.setdefault(key, []).append(fig)
                    print(f"noop {i + 1}   {fig.line()}", flush=True)

    print("\nmedians (machine shared: compare within one invocation only)")
    for who, figs in runs.items():
        cpus = [r.cpu_pct for r in figs if r.cpu_pct is not None]
        print(f"  {who:<26} p50 {_median([r.p50_ms for r in figs]):6.3f} ms  "
              f"p99 {_median([r.p99_ms for r in figs]):7.3f} ms  "
              f"late {100 * _median([r.late_fraction for r in figs]):5.2f} %"
              + (f"  cpu {_median(cpus):5.1f} %" if cpus else ""))
    for who, _source in harnesses:
        for other in ("client", "client-looptimers"):
            ratios = [h.p99_ms / c.p99_ms for h, c in
                      zip(runs.get(who, []), runs.get(other, []), strict=False) if c.p99_ms]
            if ratios:
                print(f"  {who}/{other} p99 per round: "
                      f"{', '.join(f'{r:.2f}' for r in ratios)}; median {_median(ratios):.2f}")
    if args.json:
        args.json.write_text(json.dumps(
            {who: [vars(r) for r in figs] for who, figs in runs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
