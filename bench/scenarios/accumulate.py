"""Accumulation: the load generator's one-second intervals merged into the run's totals.

Histograms arrive encoded (the process boundary) and are decoded once here; from then on
they are merged with ``add`` and travel as histograms until the result is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.measure.hdr import LatencyHistogram
from bench.probes.inrun import StreamTotals
from bench.results.model import Histograms, Operation, TimelinePoint, operation

# Statuses with which the target answered; any other (error, and whatever transport or
# server faults adapters may tell apart) means it did not.
ANSWERED = ("ok", "not_found", "rejected", "unsupported", "rate_limited")
# Seconds after which a timeline point receives no more intervals (workers lag a little).
SETTLED_S = 3.0


@dataclass
class OpAcc:
    """One operation's histograms, status counts (by name) and late sends."""

    intended: LatencyHistogram = field(default_factory=LatencyHistogram)
    actual: LatencyHistogram = field(default_factory=LatencyHistogram)
    statuses: Counter[str] = field(default_factory=Counter)
    late: int = 0

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> OpAcc:
        return cls(LatencyHistogram.decode(data["response"]),
                   LatencyHistogram.decode(data["service"]),
                   Counter(data["statuses"]), int(data["late"]))

    def add(self, other: OpAcc) -> None:
        self.intended.add(other.intended)
        self.actual.add(other.actual)
        self.statuses.update(other.statuses)
        self.late += other.late

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    def to_result(self, seconds: float) -> Operation:
        return operation(Histograms(self.intended, self.actual), dict(self.statuses),
                         self.late, seconds)


@dataclass
class _Second:
    """A timeline point still open to intervals: its histogram, not yet its figures."""

    phase: str
    completed: int = 0
    sent: int = 0
    errors: int = 0
    hist: LatencyHistogram = field(default_factory=LatencyHistogram)

    def point(self, t: int) -> TimelinePoint:
        count = self.hist.count
        return TimelinePoint(
            t=t, phase=self.phase, rate=self.sent, completed=self.completed,
            errors=self.errors, p50_ms=self.hist.percentile_ms(50) if count else 0.0,
            p99_ms=self.hist.percentile_ms(99) if count else 0.0)


@dataclass
class Accumulator:
    """Everything the intervals of one run add up to."""

    phases: dict[str, float]
    ops: dict[str, dict[str, OpAcc]] = field(default_factory=dict)
    sent: Counter[str] = field(default_factory=Counter)
    lag_measure: LatencyHistogram = field(default_factory=LatencyHistogram)
    cpu_measure: list[float] = field(default_factory=list)
    cpu_all: list[float] = field(default_factory=list)
    open_seconds: dict[int, _Second] = field(default_factory=dict)
    settled: dict[int, TimelinePoint] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    last_t: float = 0.0
    streams: dict[str, StreamTotals] = field(default_factory=dict)
    probe_errors: list[str] = field(default_factory=list)
    probe_finals: int = 0

    def stream(self, name: str) -> StreamTotals:
        return self.streams.setdefault(name, StreamTotals())

    def add_probe_final(self, msg: dict[str, Any]) -> None:
        self.probe_finals += 1
        if msg.get("error"):
            self.probe_errors.append(str(msg["error"]))
        for name, final in (msg.get("probes") or {}).items():
            self.stream(name).add_final(final)

    def phase_at(self, t: float) -> str:
        w, m = self.phases["warmup_s"], self.phases["measure_s"]
        if t <= w:
            return "warmup"
        if t <= w + m:
            return "measure"
        return "cooldown"

    def add_interval(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Merge one interval; return its own summary (for progress and liveness)."""
        t = float(msg["t"])
        self.last_t = max(self.last_t, t)
        self.workers.add(str(msg.get("worker", "local")))
        interval = OpAcc()
        for phase, ops in msg["phases"].items():
            for op, data in ops.items():
                acc = OpAcc.from_message(data)
                self.ops.setdefault(phase, {}).setdefault(op, OpAcc()).add(acc)
                interval.add(acc)
        self.sent.update(msg["sent"])
        for name, phases in (msg.get("probes") or {}).items():
            self.stream(name).add_interval(phases)
        phase = self.phase_at(t - 0.5)
        cpu = float(msg["cpu_pct"])
        self.cpu_all.append(cpu)
        # The generator's own figures count only for intervals inside the window: the last
        # one, when there is no cool-down, also holds the work of stopping 500 users.
        if phase == "measure" and t <= self.phases["warmup_s"] + self.phases["measure_s"] + 0.1:
            self.cpu_measure.append(cpu)
            self.lag_measure.add(LatencyHistogram.decode(msg["lag"]))
        count = interval.count
        self._add_second(round(t), phase, interval, sum(msg["sent"].values()))
        return {"t": t, "phase": phase, "count": count,
                "errors": count - sum(interval.statuses.get(s, 0) for s in ANSWERED),
                "failed": count - interval.statuses.get("ok", 0),
                "p99": interval.intended.percentile_ms(99) if count else 0.0}

    def _add_second(self, t: int, phase: str, interval: OpAcc, sent: int) -> None:
        failed = interval.count - interval.statuses.get("ok", 0)
        done = self.settled.get(t)
        if done is not None:
            done.completed += interval.count
            done.rate += sent
            done.errors += failed
            return
        second = self.open_seconds.setdefault(t, _Second(phase))
        second.completed += interval.count
        second.sent += sent
        second.errors += failed
        second.hist.add(interval.intended)

    def measured(self) -> dict[str, OpAcc]:
        return self.ops.get("measure", {})

    def overall(self) -> OpAcc:
        total = OpAcc()
        for acc in self.measured().values():
            total.add(acc)
        return total

    def timeline(self) -> list[TimelinePoint]:
        """One point per second; seconds no interval adds to any more keep only figures."""
        for t in [t for t in self.open_seconds if t < self.last_t - SETTLED_S]:
            # Recomputing every second's percentiles at each checkpoint grew with the run
            # and stole CPU from the generator and the target.
            self.settled[t] = self.open_seconds.pop(t).point(t)
        points = {**self.settled, **{t: s.point(t) for t, s in self.open_seconds.items()}}
        return [points[t] for t in sorted(points)]
