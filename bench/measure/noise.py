"""What disturbs a run: steal time, other processes, CPU frequency, a local target's CPU.

The harness samples the machine once per load-generator interval, on the generator's own
time axis, so the figures cover exactly the measurement window. A run whose figures pass
a limit is flagged ``noisy`` with its reasons; a noisy run is reported, but a comparison
does not take it as evidence.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROC_STAT = Path("/proc/stat")
CPUINFO = Path("/proc/cpuinfo")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_SAMPLE_GAP_S = 0.5
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class NoiseLimits:
    """Limits above which a run is noisy (scenario table ``[noise]``)."""

    steal_pct: float = 10.0
    other_cpu_pct: float = 25.0
    server_cpu_pct: float = 80.0
    late_fraction: float = 0.05
    p50_cv: float = 0.25
    overhead_drift_ms: float = 1.0


@dataclass(frozen=True)
class Sample:
    """Cumulative counters at one instant of the generator's clock."""

    t: float
    ticks_total: int
    ticks_idle: int
    ticks_steal: int
    own_cpu_s: float
    server_cpu: dict[int, float] | None
    mhz: float | None
    # CPU seconds of the local target's processes outside the harness's own tree (a
    # database's backends): part of the system under test, not of "other processes".
    outside_cpu_s: float = 0.0


def read_proc_stat(path: Path = PROC_STAT) -> tuple[int, int, int] | None:
    """(total, idle + iowait, steal) ticks of all CPUs since boot, or None off Linux."""
    try:
        first = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    values = [int(v) for v in first[1:9]] + [0] * max(0, 9 - len(first))
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return user + nice + system + idle + iowait + irq + softirq + steal, idle + iowait, steal


def read_mhz(path: Path = CPUINFO) -> float | None:
    """Mean current CPU frequency over the cores, where the system shows it."""
    try:
        found = [float(line.split(":", 1)[1]) for line in path.read_text().splitlines()
                 if line.startswith("cpu MHz")]
    except (OSError, ValueError):
        return None
    return statistics.fmean(found) if found else None


def _tree_cpu(root: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of a process and its descendants, by pid."""
    out: dict[int, float] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = float(t.user + t.system)
    return out


def listening_pids(url: str) -> list[int]:
    """Processes listening on the loopback port of ``url`` (a local target), if any."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return []
    if port is None or host not in LOOPBACK:
        return []
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    return sorted({c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.pid
                   and c.laddr and c.laddr.port == port})


@dataclass
class SystemSampler:
    """Samples the machine and the harness's process tree; ``server_pids`` run a local target
    (with their children)."""

    server_pids: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    _own: psutil.Process = field(default_factory=psutil.Process)
    _seen: dict[int, float] = field(default_factory=dict)
    _own_acc: float = 0.0
    _outside_acc: float = 0.0

    def _server_cpu(self) -> dict[int, float] | None:
        if not self.server_pids:
            return None
        out: dict[int, float] = {}
        for pid in self.server_pids:
            with contextlib.suppress(psutil.Error):
                out.update(_tree_cpu(psutil.Process(pid)))
        return out

    def tick(self, t: float) -> None:
        """Take a sample at generator time ``t`` (seconds), at most every half second."""
        if self.samples and t - self.samples[-1].t < MIN_SAMPLE_GAP_S:
            return
        stat = read_proc_stat()
        if stat is None:
            return
        # Per pid, so a process that exits between samples does not subtract its CPU.
        own = _tree_cpu(self._own)
        for pid, cpu in own.items():
            self._own_acc += cpu - self._seen.get(pid, 0.0)
            self._seen[pid] = cpu
        server = self._server_cpu()
        for pid, cpu in (server or {}).items():
            if pid not in own:
                self._outside_acc += cpu - self._seen.get(pid, 0.0)
                self._seen[pid] = cpu
        self.samples.append(Sample(t, *stat, own_cpu_s=self._own_acc, server_cpu=server,
                                   mhz=read_mhz(), outside_cpu_s=self._outside_acc))

    def window(self, start: float, end: float) -> tuple[Sample, Sample] | None:
        """The first and last samples within [start, end], if at least two."""
        inside = [s for s in self.samples if start - 0.5 <= s.t <= end + 0.5]
        return (inside[0], inside[-1]) if len(inside) >= 2 else None


def summarize(
    sampler: SystemSampler, start: float, end: float, requests: int,
) -> dict[str, Any]:
    """Machine figures over the window [start, end] of generator time."""
    found = sampler.window(start, end)
    if found is None:
        return {"samples": 0}
    a, b = found
    seconds = max(b.t - a.t, 1e-9)
    ticks = max(b.ticks_total - a.ticks_total, 1)
    busy_cores = (ticks - (b.ticks_idle - a.ticks_idle)) / CLOCK_TICKS / seconds
    own_cores = (b.own_cpu_s - a.own_cpu_s) / seconds
    outside_cores = (b.outside_cpu_s - a.outside_cpu_s) / seconds
    out: dict[str, Any] = {
        "samples": sum(1 for s in sampler.samples if a.t <= s.t <= b.t),
        "seconds": round(seconds, 3),
        "steal_pct": round(100.0 * (b.ticks_steal - a.ticks_steal) / ticks, 2),
        "machine_busy_cores": round(busy_cores, 3),
        "harness_cpu_pct": round(100.0 * own_cores, 1),
        "other_cpu_pct": round(max(0.0, 100.0 * (busy_cores - own_cores - outside_cores)), 1),
        "cpu_mhz": None,
        "server_cpu_pct": None,
        "server_cpu_max_process_pct": None,
        "server_cpu_ms_per_request": None,
    }
    mhz = [s.mhz for s in sampler.samples if a.t <= s.t <= b.t and s.mhz is not None]
    if mhz:
        out["cpu_mhz"] = {"mean": round(statistics.fmean(mhz), 1),
                          "min": round(min(mhz), 1), "max": round(max(mhz), 1)}
    if a.server_cpu is not None and b.server_cpu is not None:
        # Per process, so that a worker that started or exited mid-window counts once.
        used = {pid: cpu - a.server_cpu.get(pid, 0.0) for pid, cpu in b.server_cpu.items()}
        server = sum(used.values())
        out["server_cpu_pct"] = round(100.0 * server / seconds, 1)
        out["server_cpu_max_process_pct"] = round(100.0 * max(used.values(), default=0.0)
                                                  / seconds, 1)
        out["server_processes"] = sum(1 for v in used.values() if v > 0.01 * seconds)
        if requests > 0 and end > start:
            # Requests are counted over the whole window, CPU over its sampled span.
            rate = requests / (end - start)
            out["server_cpu_ms_per_request"] = round(1000.0 * server / seconds / rate, 4)
    return out


def p50_cv(p50s: Sequence[float]) -> float | None:
    """Coefficient of variation of the per-second p50 (None with fewer than 3 seconds)."""
    values = [v for v in p50s if v > 0]
    if len(values) < 3:
        return None
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def judge_noise(figures: dict[str, Any], limits: NoiseLimits) -> list[str]:
    """Reasons a run is noisy (empty when it is not)."""
    reasons: list[str] = []

    def over(key: str, limit: float, text: str) -> None:
        value = figures.get(key)
        if isinstance(value, int | float) and value > limit:
            reasons.append(text.format(value=value, limit=limit))

    over("steal_pct", limits.steal_pct, "steal time {value:.1f} % > {limit:g} %")
    over("other_cpu_pct", limits.other_cpu_pct,
         "other processes used {value:.0f} % of a core > {limit:g} %")
    over("server_cpu_max_process_pct", limits.server_cpu_pct,
         "the local target ran at {value:.0f} % of a core per process > {limit:g} % "
         "(its knee: queueing, not service time)")
    over("late_fraction", limits.late_fraction,
         "{value:.1%} of sends started late > {limit:.0%}")
    over("p50_cv", limits.p50_cv, "per-second p50 varied by CV {value:.2f} > {limit:g}")
    over("overhead_drift_ms", limits.overhead_drift_ms,
         "harness overhead p90 drifted by {value:.2f} ms > {limit:g} ms")
    return reasons


def limits_dict(limits: NoiseLimits) -> dict[str, float]:
    return asdict(limits)
