"""Tests of the measurement layer: HDR histograms, schedules, validity rules, provenance."""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.measure.hdr import LatencyHistogram
from bench.measure.provenance import TRACKED_PACKAGES, commit_info, machine_info
from bench.measure.schedule import (
    LateCounter,
    Pacer,
    burst_fraction,
    is_late,
    user_period,
)
from bench.measure.validity import CpuSampler, LoopLagMonitor, judge, steady

MS = 1_000_000
PERCENTILES = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99, 100.0)
ROOT = Path(__file__).resolve().parents[2]


def _samples(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    # Log-normal around 5 ms spans several HDR buckets, plus rare multi-second outliers.
    out = [int(rng.lognormvariate(math.log(5 * MS), 1.0)) for _ in range(n)]
    out += [rng.randrange(1_000 * MS, 30_000 * MS) for _ in range(n // 100)]
    return out


def _record(samples: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for ns in samples:
        hist.record_ns(ns)
    return hist


def _record_in_worker(seed: int, n: int) -> str:
    """Runs in a spawned process: record samples and ship the histogram back encoded."""
    return _record(_samples(seed, n)).encode()


def _profile(hist: LatencyHistogram) -> tuple[object, ...]:
    return (
        hist.count,
        tuple(hist.percentile_ms(p) for p in PERCENTILES),
        hist.max_ms,
        hist.mean_ms,
        tuple(sorted(hist.summary().items())),
    )


# --- HDR histogram -------------------------------------------------------------------------


def test_percentiles_on_known_data() -> None:
    hist = _record([ms * MS for ms in range(1, 1001)])
    assert hist.count == 1000
    assert hist.overflow == 0
    # 3 significant digits: every value is within 0.1% of the true one.
    assert hist.percentile_ms(50) == pytest.approx(500, rel=1e-3)
    assert hist.percentile_ms(90) == pytest.approx(900, rel=1e-3)
    assert hist.percentile_ms(99) == pytest.approx(990, rel=1e-3)
    assert hist.max_ms == pytest.approx(1000, rel=1e-3)
    assert hist.mean_ms == pytest.approx(500.5, rel=1e-3)
    summary = hist.summary()
    assert list(summary) == ["count", "p50", "p90", "p95", "p99", "p99_9", "max", "mean"]
    assert summary["count"] == 1000
    assert summary["p95"] == pytest.approx(950, rel=1e-3)
    assert summary["p99_9"] == pytest.approx(999, rel=1e-3)
    for key, value in summary.items():
        if key != "count":
            assert isinstance(value, float)
            assert value == round(value, 3)


def test_empty_histogram_summary_is_zero() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert hist.percentile_ms(99) == 0.0
    assert hist.summary() == {
        "count": 0,
        "p50": 0.0,
        "p90": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "p99_9": 0.0,
        "max": 0.0,
        "mean": 0.0,
    }


def test_ns_to_us_rounds_up() -> None:
    hist = LatencyHistogram()
    hist.record_ns(1)
    assert hist.max_ms == 0.001
    hist.record_ns(1_001)
    assert hist.max_ms == 0.002
    hist.record_ns(2_000)
    assert hist.max_ms == 0.002
    assert hist.overflow == 0
    assert hist.count == 3


def test_out_of_range_values_are_clamped_and_counted() -> None:
    hist = LatencyHistogram()
    hist.record_ns(0)
    hist.record_ns(-5_000)
    assert hist.overflow == 2
    assert hist.max_ms == 0.001
    hist.record_ns(61_000 * MS)
    hist.record_ns(10**15)
    assert hist.overflow == 4
    assert hist.count == 4
    assert hist.max_ms == pytest.approx(60_000, rel=1e-3)
    hist.record_ns(60_000 * MS)
    assert hist.overflow == 4
    hist.reset()
    assert (hist.count, hist.overflow, hist.max_ms) == (0, 0, 0.0)


def test_encode_decode_round_trip() -> None:
    hist = _record(_samples(1, 5_000))
    encoded = hist.encode()
    assert isinstance(encoded, str)
    assert encoded.startswith("HISTF")
    decoded = LatencyHistogram.decode(encoded)
    assert _profile(decoded) == _profile(hist)
    assert decoded.encode() == encoded
    empty = LatencyHistogram.decode(LatencyHistogram().encode())
    assert empty.count == 0
    assert empty.summary() == LatencyHistogram().summary()


def test_decode_rejects_other_ranges() -> None:
    from hdrh.histogram import HdrHistogram

    foreign = HdrHistogram(1, 1_000_000, 2)
    foreign.record_value(10)
    with pytest.raises(ValueError, match="expected"):
        LatencyHistogram.decode(foreign.encode().decode("ascii"))


def test_merge_equals_recording_everything_in_one() -> None:
    a_samples, b_samples = _samples(1, 4_000), _samples(2, 3_000)
    single = _record(a_samples + b_samples)
    merged = _record(a_samples)
    merged.add(_record(b_samples))
    assert _profile(merged) == _profile(single)
    assert merged.count == len(a_samples) + len(b_samples)


def test_merge_of_decoded_histograms() -> None:
    a_samples, b_samples = _samples(3, 2_000), _samples(4, 2_500)
    single = _record(a_samples + b_samples)
    a_enc, b_enc = _record(a_samples).encode(), _record(b_samples).encode()

    # Decoded into decoded, decoded into fresh, and fresh into decoded must all agree.
    into_decoded = LatencyHistogram.decode(a_enc)
    into_decoded.add(LatencyHistogram.decode(b_enc))
    into_fresh = LatencyHistogram()
    into_fresh.add(LatencyHistogram.decode(a_enc))
    into_fresh.add(LatencyHistogram.decode(b_enc))
    mixed = LatencyHistogram.decode(a_enc)
    mixed.add(_record(b_samples))
    for hist in (into_decoded, into_fresh, mixed):
        assert _profile(hist) == _profile(single)

    # A decoded histogram keeps recording, and survives another round trip.
    into_decoded.record_ns(7 * MS)
    single.record_ns(7 * MS)
    assert _profile(LatencyHistogram.decode(into_decoded.encode())) == _profile(single)


def test_merging_empty_histograms_changes_nothing() -> None:
    hist = _record(_samples(5, 1_000))
    before = _profile(hist)
    hist.add(LatencyHistogram())
    hist.add(LatencyHistogram.decode(LatencyHistogram().encode()))
    assert _profile(hist) == before


def test_overflow_is_merged_and_pickled() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record_ns(0)
    b.record_ns(10**15)
    b.record_ns(5 * MS)
    a.add(b)
    assert (a.count, a.overflow) == (3, 2)
    clone = pickle.loads(pickle.dumps(a))
    assert _profile(clone) == _profile(a)
    assert clone.overflow == 2


def test_merge_across_processes_equals_single_process() -> None:
    jobs = [(11, 3_000), (12, 2_000)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        encoded = pool.starmap(_record_in_worker, jobs)
    merged = LatencyHistogram()
    for blob in encoded:
        merged.add(LatencyHistogram.decode(blob))
    single = _record([ns for seed, n in jobs for ns in _samples(seed, n)])
    assert _profile(merged) == _profile(single)


# --- schedules -----------------------------------------------------------------------------


def test_users_are_dephased() -> None:
    users, rate = 500, 1000.0
    period_s = user_period(users, rate)
    assert period_s == 0.5
    period_ns = round(period_s * 1e9)
    rng = random.Random(42)
    # All users created in the same instant.
    pacers = [Pacer(period_s, rng, start_ns=0) for _ in range(users)]
    firsts = [p.peek() for p in pacers]
    assert all(0 <= t < period_ns for t in firsts)
    assert burst_fraction(firsts, 1 * MS) <= 0.02
    assert max(firsts) - min(firsts) >= 0.9 * period_ns
    # Without a phase every user would fire together.
    assert burst_fraction([0] * users, 1 * MS) == 1.0


def test_pacing_intervals_equal_the_period() -> None:
    pacer = Pacer(0.25, random.Random(1), mode="pacing", start_ns=10**12)
    first = pacer.peek()
    assert 10**12 <= first < 10**12 + 250 * MS
    sends = [pacer.next_intended() for _ in range(1_000)]
    assert sends[0] == first
    assert {b - a for a, b in itertools.pairwise(sends)} == {250 * MS}
    assert pacer.peek() == sends[-1] + 250 * MS


def test_pacer_defaults_to_now() -> None:
    before = time.perf_counter_ns()
    pacer = Pacer(0.1, random.Random(2))
    assert before <= pacer.start_ns <= pacer.peek() < pacer.start_ns + 100 * MS


def test_poisson_mean_interval_matches_the_period() -> None:
    period_s = 0.2
    pacer = Pacer(period_s, random.Random(7), mode="poisson", start_ns=0)
    assert 0 <= pacer.peek() < 200 * MS
    sends = [pacer.next_intended() for _ in range(5_001)]
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert len(gaps) == 5_000
    assert all(g >= 0 for g in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(period_s * 1e9, rel=0.10)
    # Exponential gaps: the coefficient of variation is about 1, unlike fixed pacing.
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert 0.8 < sd / mean < 1.2


def test_pacer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Pacer(0.0, random.Random())
    with pytest.raises(ValueError):
        Pacer(1.0, random.Random(), mode="burst")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        user_period(0, 10.0)
    with pytest.raises(ValueError):
        user_period(10, 0.0)


def test_lateness() -> None:
    assert not is_late(0, 1 * MS)
    assert is_late(0, 1 * MS + 1)
    assert not is_late(5 * MS, 0)
    assert is_late(0, 200, tolerance_ns=100)
    counter = LateCounter()
    for actual in (0, MS // 2, 2 * MS, 50 * MS):
        counter.observe(0, actual)
    other = LateCounter()
    other.observe(0, 0)
    counter.add(other)
    assert (counter.total, counter.late) == (5, 2)
    assert counter.fraction == pytest.approx(0.4)
    assert counter.as_dict()["late"] == 2
    assert LateCounter().fraction == 0.0


def test_burst_fraction() -> None:
    assert burst_fraction([], MS) == 0.0
    assert burst_fraction([5, 1, 3], 10) == 1.0
    # Half-open window: [0, 10) holds 0 and 9 but not 10.
    assert burst_fraction([0, 9, 10, 30], 10) == 0.5
    assert burst_fraction([0, 100, 200, 300], 10) == 0.25


# --- validity ------------------------------------------------------------------------------

GOOD = {"cpu_max_pct": 40.0, "loop_lag_p99_ms": 1.5, "achieved_rate": 990.0, "target_rate": 1000.0}


def test_judge_accepts_a_good_run() -> None:
    assert judge(**GOOD) == (True, [])
    # Exactly at the limits is still valid.
    assert judge(
        cpu_max_pct=90.0, loop_lag_p99_ms=10.0, achieved_rate=950.0, target_rate=1000.0
    ) == (True, [])


def test_judge_cpu_rule() -> None:
    valid, reasons = judge(**{**GOOD, "cpu_max_pct": 97.5})
    assert not valid
    assert reasons == ["generator CPU peaked at 97.5% of a core (limit 90%)"]


def test_judge_lag_rule() -> None:
    valid, reasons = judge(**{**GOOD, "loop_lag_p99_ms": 12.34})
    assert not valid
    assert reasons == ["event-loop lag p99 12.3 ms (limit 10 ms)"]


def test_judge_rate_rule() -> None:
    valid, reasons = judge(**{**GOOD, "achieved_rate": 812.0})
    assert not valid
    assert reasons == ["achieved 812.0 req/s, 81.2% of the 1000 req/s target (minimum 95%)"]


def test_judge_reports_every_broken_rule_and_custom_limits() -> None:
    valid, reasons = judge(
        cpu_max_pct=99.0, loop_lag_p99_ms=50.0, achieved_rate=10.0, target_rate=100.0
    )
    assert not valid
    assert len(reasons) == 3
    valid, reasons = judge(**GOOD, cpu_limit_pct=30.0, lag_limit_ms=1.0, min_rate_fraction=0.999)
    assert not valid
    assert reasons[0].endswith("(limit 30%)")
    assert reasons[1].endswith("(limit 1 ms)")
    assert reasons[2].endswith("(minimum 99.9%)")
    valid, reasons = judge(**{**GOOD, "cpu_max_pct": math.nan})
    assert not valid
    assert "not measured" in reasons[0]


def test_steady() -> None:
    assert steady([1000.0, 980.0, 1040.0], 1000.0)
    assert not steady([1000.0, 900.0], 1000.0)
    assert steady([1000.0, 900.0], 1000.0, tolerance=0.1)
    assert not steady([], 1000.0)


def _child(code: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    # Wait for the child to be running its workload, so interpreter start-up is not sampled.
    assert proc.stdout.readline().strip() == "ready"
    return proc


BUSY = (
    "import time\nprint('ready', flush=True)\nend = time.perf_counter() + 5\n"
    "while time.perf_counter() < end:\n    pass\n"
)
IDLE = "import time\nprint('ready', flush=True)\ntime.sleep(5)\n"


def test_cpu_sampler_tells_busy_from_idle_children() -> None:
    busy, idle = _child(BUSY), _child(IDLE)
    try:
        busy_sampler = CpuSampler(busy.pid, interval_s=0.2)
        idle_sampler = CpuSampler(idle.pid, interval_s=0.2)
        busy_sampler.start()
        idle_sampler.start()
        time.sleep(1.0)
        busy_stats, idle_stats = busy_sampler.stop(), idle_sampler.stop()
    finally:
        for proc in (busy, idle):
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert busy_stats["error"] is None and idle_stats["error"] is None
    assert isinstance(busy_stats["samples"], int) and busy_stats["samples"] >= 3
    # Generous bounds: the machine is shared, so the busy child may get a fraction of a core.
    assert isinstance(busy_stats["mean_pct"], float) and busy_stats["mean_pct"] > 25
    assert isinstance(busy_stats["max_pct"], float) and busy_stats["max_pct"] > 25
    assert isinstance(idle_stats["mean_pct"], float) and idle_stats["mean_pct"] < 10


def test_cpu_sampler_on_current_process_and_on_exit() -> None:
    sampler = CpuSampler(interval_s=0.05)
    assert sampler.pid == os.getpid()
    sampler.start()
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass
    stats = sampler.stop()
    assert stats["error"] is None
    assert isinstance(stats["samples"], int) and stats["samples"] >= 1
    assert isinstance(stats["mean_pct"], float) and stats["mean_pct"] > 0

    proc = _child("print('ready', flush=True)")
    gone = CpuSampler(proc.pid, interval_s=0.05)
    gone.start()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    time.sleep(0.15)
    stats = gone.stop()
    # The sampler notices the exit and keeps what it had, rather than raising.
    assert isinstance(stats["error"], str)


def test_loop_lag_monitor_detects_blocking() -> None:
    async def main() -> LatencyHistogram:
        monitor = LoopLagMonitor(interval_s=0.005)
        monitor.start()
        await asyncio.sleep(0.03)
        time.sleep(0.05)  # deliberately blocks the event loop
        await asyncio.sleep(0.03)
        return monitor.stop()

    hist = asyncio.run(main())
    assert hist.count >= 3
    assert hist.max_ms >= 40
    assert hist.overflow == 0


def test_gevent_lag_monitor_detects_blocking() -> None:
    gevent = pytest.importorskip("gevent")
    from bench.measure.validity import GeventLagMonitor

    monitor = GeventLagMonitor(interval_s=0.005)
    monitor.start()
    gevent.sleep(0.03)
    time.sleep(0.05)  # not monkey-patched, so this blocks the hub
    gevent.sleep(0.03)
    hist = monitor.stop()
    assert hist.count >= 3
    assert hist.max_ms >= 40


def test_validity_module_does_not_import_gevent() -> None:
    code = (
        "import sys, bench.measure.validity, bench.measure.hdr, bench.measure.schedule, "
        "bench.measure.provenance\nassert 'gevent' not in sys.modules, 'gevent imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# --- provenance ----------------------------------------------------------------------------


def test_machine_info() -> None:
    info = machine_info()
    for key in (
        "cpu_model",
        "arch",
        "logical_cores",
        "physical_cores",
        "memory_total_bytes",
        "os",
        "python_version",
        "python_implementation",
        "packages",
    ):
        assert key in info
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert isinstance(info["logical_cores"], int) and info["logical_cores"] >= 1
    assert isinstance(info["memory_total_bytes"], int) and info["memory_total_bytes"] > 0
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    packages = info["packages"]
    assert set(packages) == set(TRACKED_PACKAGES)
    assert all(v is None or isinstance(v, str) for v in packages.values())
    assert packages["hdrhistogram"]


def test_commit_info_outside_git(tmp_path: Path) -> None:
    info = commit_info(tmp_path)
    assert info["commit"] is None
    assert info["dirty"] is None
    assert isinstance(info["error"], str) and info["error"]
    missing = commit_info(tmp_path / "does-not-exist")
    assert missing["commit"] is None and isinstance(missing["error"], str)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_commit_info_in_a_repository(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(tmp_path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "bench")
    (repo / "f.txt").write_text("one\n")
    git("add", "f.txt")
    git("commit", "-q", "-m", "first")

    info = commit_info(repo)
    assert info["error"] is None
    assert re.fullmatch(r"[0-9a-f]{40}", info["commit"])
    assert info["branch"] == "bench"
    assert info["dirty"] is False
    assert isinstance(info["commit_time"], str) and info["commit_time"][:2] == "20"

    (repo / "f.txt").write_text("two\n")
    assert commit_info(repo)["dirty"] is True


def test_proc_stat_and_cpuinfo_are_read(tmp_path: Path) -> None:
    from bench.measure.noise import read_mhz, read_proc_stat

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 20 1 2 30 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert read_proc_stat(stat) == (1008, 820, 30)
    assert read_proc_stat(tmp_path / "missing") is None
    info = tmp_path / "cpuinfo"
    info.write_text("cpu MHz\t\t: 2000.0\nother: 1\ncpu MHz\t\t: 3000.0\n")
    assert read_mhz(info) == 2500.0
    assert read_mhz(tmp_path / "missing") is None


def test_noise_window_figures_and_verdict() -> None:
    from bench.measure.noise import (
        CLOCK_TICKS,
        NoiseLimits,
        Sample,
        SystemSampler,
        judge_noise,
        p50_cv,
        summarize,
    )

    sampler = SystemSampler()
    ticks = int(CLOCK_TICKS)
    # 10 s on 2 cores: 1.5 cores busy, 12 % of all CPU time stolen, the harness tree used
    # 0.6 core of which the server 0.4; 2,000 requests.
    sampler.samples = [
        Sample(1.0, 0, 0, 0, 0.0, {7: 0.0}, 2300.0),
        Sample(11.0, 20 * ticks, 5 * ticks, int(2.4 * ticks), 6.0, {7: 3.0, 8: 1.0}, 2300.0),
    ]
    found = summarize(sampler, 1.0, 11.0, 2000)
    assert found["steal_pct"] == pytest.approx(12.0)
    assert found["machine_busy_cores"] == pytest.approx(1.5)
    assert found["other_cpu_pct"] == pytest.approx(90.0)
    assert found["server_cpu_pct"] == pytest.approx(40.0)
    assert found["server_cpu_ms_per_request"] == pytest.approx(2.0)
    assert found["server_cpu_max_process_pct"] == pytest.approx(30.0)
    assert found["server_processes"] == 2
    assert summarize(SystemSampler(), 0, 10, 5) == {"samples": 0}
    found.update(late_fraction=0.01, p50_cv=0.1,
                 overhead_drift_ms=0.2)
    reasons = judge_noise(found, NoiseLimits())
    assert len(reasons) == 2
    assert reasons[0].startswith("steal time 12.0 %") and "other processes" in reasons[1]
    assert judge_noise(found, NoiseLimits(steal_pct=20, other_cpu_pct=100)) == []
    assert p50_cv([1.0, 1.0]) is None
    assert p50_cv([1.0, 2.0, 3.0]) == pytest.approx(0.5)


def test_target_processes_outside_the_harness_are_not_other_processes() -> None:
    from bench.measure.noise import CLOCK_TICKS, Sample, SystemSampler, summarize

    sampler = SystemSampler()
    ticks = int(CLOCK_TICKS)
    # 10 s on 2 cores, 1.5 cores busy: the harness tree 0.6 core (the service 0.4 of it),
    # the database's backends, outside the tree, 0.5 core; 0.4 core of other processes.
    sampler.samples = [
        Sample(1.0, 0, 0, 0, 0.0, {7: 0.0, 9: 0.0}, None, 0.0),
        Sample(11.0, 20 * ticks, 5 * ticks, 0, 6.0, {7: 4.0, 9: 5.0}, None, 5.0),
    ]
    found = summarize(sampler, 1.0, 11.0, 2000)
    assert found["server_cpu_pct"] == pytest.approx(90.0)
    assert found["other_cpu_pct"] == pytest.approx(40.0)


def test_sampler_counts_a_target_process_outside_its_tree(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from bench.measure.noise import SystemSampler

    # A busy process that is not the harness's child (its parent shell exits at once).
    pid_file = tmp_path / "pid"
    subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' & echo $! > {pid_file}"],
                   check=True)
    pid = int(pid_file.read_text())
    try:
        sampler = SystemSampler(server_pids=[pid])
        sampler.tick(0.0)
        time.sleep(1.0)
        sampler.tick(1.0)
        first, last = sampler.samples
        assert last.outside_cpu_s - first.outside_cpu_s > 0.1
        assert last.server_cpu is not None and pid in last.server_cpu
    finally:
        os.kill(pid, 9)


def test_sampler_ticks_on_this_machine() -> None:
    from bench.measure.noise import SystemSampler

    sampler = SystemSampler(server_pids=[os.getpid()])
    sampler.tick(0.0)
    sampler.tick(0.1)  # too soon: skipped
    sampler.tick(1.0)
    assert len(sampler.samples) == 2
    assert sampler.samples[1].own_cpu_s >= sampler.samples[0].own_cpu_s
    assert sampler.samples[1].server_cpu is not None

    import socket

    from bench.measure.noise import listening_pids

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert listening_pids(f"reference+http://127.0.0.1:{port}") == [os.getpid()]
    assert listening_pids("noop://?delay_ms=1") == []
    assert listening_pids("salesforce://example.com:443") == []
