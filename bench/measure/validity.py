"""Load-generator health: CPU use, event-loop lag, achieved rate, and the validity verdict."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from typing import Any

import psutil

from bench.measure.hdr import LatencyHistogram

CPU_LIMIT_PCT = 90.0
LAG_LIMIT_MS = 10.0
MIN_RATE_FRACTION = 0.95


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class CpuSampler:
    """Samples one process's CPU use (percent of one core) from a daemon thread."""

    def __init__(self, pid: int | None = None, interval_s: float = 1.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = interval_s
        self._proc = psutil.Process(self.pid)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples: list[float] = []
        self._first_cpu = 0.0
        self._first_wall = 0.0
        self._last_cpu = 0.0
        self._last_wall = 0.0
        self.error: str | None = None

    def start(self) -> None:
        """Take the baseline reading and start sampling every `interval_s`."""
        if self._thread is not None:
            raise RuntimeError("CpuSampler already started")
        self._first_cpu = self._last_cpu = _cpu_seconds(self._proc)
        self._first_wall = self._last_wall = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"cpu-sampler-{self.pid}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.sample() is None:
                return

    def sample(self) -> float | None:
        """Record CPU percent since the previous sample; None once the process is gone."""
        with self._lock:
            try:
                cpu = _cpu_seconds(self._proc)
            except psutil.Error as exc:
                # The process exited (or became unreadable): keep what was measured so far.
                self.error = f"{type(exc).__name__}: {exc}"
                return None
            wall = time.perf_counter()
            elapsed = wall - self._last_wall
            if elapsed <= 0:
                return None
            pct = 100.0 * (cpu - self._last_cpu) / elapsed
            self._samples.append(pct)
            self._last_cpu, self._last_wall = cpu, wall
            return pct

    def stop(self) -> dict[str, float | int | str | None]:
        """Stop sampling; return mean_pct (whole span), max_pct (per interval) and details."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        # A short tail would turn scheduler noise into a spurious peak, so fold it in
        # only when no full interval was sampled.
        tail = time.perf_counter() - self._last_wall
        if self.error is None and (not self._samples or tail >= self.interval_s / 2):
            self.sample()
        with self._lock:
            span = self._last_wall - self._first_wall
            mean = 100.0 * (self._last_cpu - self._first_cpu) / span if span > 0 else 0.0
            peak = max(self._samples, default=0.0)
            return {
                "mean_pct": round(mean, 1),
                "max_pct": round(peak, 1),
                "samples": len(self._samples),
                "interval_s": self.interval_s,
                "pid": self.pid,
                "error": self.error,
            }


class LoopLagMonitor:
    """Measures asyncio event-loop lag: how late a repeated `sleep(interval_s)` wakes up."""

    def __init__(self, interval_s: float = 0.01) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self.histogram = LatencyHistogram()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the monitor task; must be called with a running event loop."""
        if self._task is not None:
            raise RuntimeError("LoopLagMonitor already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        interval_ns = round(self.interval_s * 1e9)
        while True:
            before = time.perf_counter_ns()
            await asyncio.sleep(self.interval_s)
            # An early wake-up (timer granularity) means no lag, not a clamped sample.
            self.histogram.record_ns(max(time.perf_counter_ns() - before - interval_ns, 1))

    def stop(self) -> LatencyHistogram:
        """Cancel the monitor task and return the lag histogram."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        return self.histogram


class GeventLagMonitor:
    """Measures gevent hub lag the same way, with a greenlet around `gevent.sleep`."""

    def __init__(self, interval_s: float = 0.01) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.interval_s = interval_s
        self.histogram = LatencyHistogram()
        self._greenlet: Any = None

    def start(self) -> None:
        """Spawn the monitor greenlet."""
        # Imported here so that asyncio-only users never load (or patch with) gevent.
        import gevent

        if self._greenlet is not None:
            raise RuntimeError("GeventLagMonitor already started")
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        import gevent

        interval_ns = round(self.interval_s * 1e9)
        while True:
            before = time.perf_counter_ns()
            gevent.sleep(self.interval_s)
            self.histogram.record_ns(max(time.perf_counter_ns() - before - interval_ns, 1))

    def stop(self) -> LatencyHistogram:
        """Kill the monitor greenlet and return the lag histogram."""
        if self._greenlet is not None:
            with contextlib.suppress(Exception):
                self._greenlet.kill(block=True, timeout=1.0)
            self._greenlet = None
        return self.histogram


def _fmt(value: float) -> str:
    return f"{value:g}"


def judge(
    *,
    cpu_max_pct: float,
    loop_lag_p99_ms: float,
    achieved_rate: float,
    target_rate: float,
    cpu_limit_pct: float = CPU_LIMIT_PCT,
    lag_limit_ms: float = LAG_LIMIT_MS,
    min_rate_fraction: float = MIN_RATE_FRACTION,
) -> tuple[bool, list[str]]:
    """Apply the validity rules; return (valid, reasons the run is invalid)."""
    reasons: list[str] = []
    if math.isnan(cpu_max_pct):
        reasons.append("generator CPU was not measured")
    elif cpu_max_pct > cpu_limit_pct:
        reasons.append(
            f"generator CPU peaked at {cpu_max_pct:.1f}% of a core (limit {_fmt(cpu_limit_pct)}%)"
        )
    if math.isnan(loop_lag_p99_ms):
        reasons.append("event-loop lag was not measured")
    elif loop_lag_p99_ms > lag_limit_ms:
        reasons.append(
            f"event-loop lag p99 {loop_lag_p99_ms:.1f} ms (limit {_fmt(lag_limit_ms)} ms)"
        )
    if target_rate > 0:
        if math.isnan(achieved_rate):
            reasons.append("achieved rate was not measured")
        elif achieved_rate < min_rate_fraction * target_rate:
            share = 100.0 * achieved_rate / target_rate
            reasons.append(
                f"achieved {achieved_rate:.1f} req/s, {share:.1f}% of the "
                f"{_fmt(target_rate)} req/s target (minimum {_fmt(100.0 * min_rate_fraction)}%)"
            )
    return (not reasons, reasons)


def steady(rates_per_second: list[float], target: float, tolerance: float = 0.05) -> bool:
    """True when there is at least one rate and every one is within `tolerance` of target."""
    if not rates_per_second or not target > 0:
        return False
    bound = tolerance * target
    return all(abs(rate - target) <= bound for rate in rates_per_second)
