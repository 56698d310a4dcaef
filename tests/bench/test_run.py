"""End-to-end runs of the harness: results, validity, interruption, unreachable targets."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.adapters.embedded import EmbeddedReference
from bench.errors import UserError
from bench.measure.hdr import LatencyHistogram
from bench.results.collect import Run
from bench.results.store import read_result, validate
from bench.scenarios.config import load_scenario
from bench.scenarios.runner import RunReport, RunRequest, calibrate, run

SCENARIO = """
version = 1
name = "tiny"
users = {users}
rate = {rate}
arrival = "pacing"

[mix]
{mix}

[profiles.quick]
warmup_s = {warmup}
measure_s = {measure}
cooldown_s = {cooldown}
calibration_s = {calibration}
{validity}"""
# Validity limits no busy machine reaches, for tests of something other than validity.
LOOSE = """
[validity]
cpu_limit_pct = 100000
loop_lag_p99_ms = 100000
min_rate_fraction = 0.001
"""
ALL_OPS = "\n".join(
    f"{op} = 1" for op in (
        "customer_360", "search_customers", "list_leads", "get_customer", "create_lead",
        "update_opportunity_stage", "log_activity", "update_customer",
    )
)


def scenario_file(tmp_path: Path, *, users: int = 50, rate: float = 200, warmup: float = 1,
                  measure: float = 3, cooldown: float = 0.5, calibration: float = 0,
                  mix: str = ALL_OPS, loose: bool = False, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO.format(users=users, rate=rate, warmup=warmup, measure=measure,
                                    cooldown=cooldown, calibration=calibration, mix=mix,
                                    validity=(LOOSE if loose else "") + extra))
    return path


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_noop_run_writes_a_schema_valid_result(tmp_path: Path) -> None:
    scenario = load_scenario(str(scenario_file(tmp_path, calibration=1)), profile="quick")
    report = run(RunRequest(scenario, target="noop://?delay_ms=2", out=tmp_path / "runs",
                            calibrate=True), say=lambda _m: None)
    result = report.result
    assert validate(result) == []
    assert read_result(report.path) == result
    assert result["complete"] and report.exit_code == 0, result["invalid_reasons"]
    assert result["valid"], result["invalid_reasons"]
    assert result["load"]["achieved_rate"] == pytest.approx(200, rel=0.05)
    overall = result["overall"]
    assert overall["count"] == pytest.approx(600, rel=0.05)
    assert overall["errors"] == 0
    # A 2 ms no-op: service time is 2 ms plus a little; the intended-start latency is not less.
    assert 2.0 <= overall["latency_ms"]["actual"]["p50"] < 4.0
    assert overall["latency_ms"]["intended"]["p50"] >= overall["latency_ms"]["actual"]["p50"]
    assert set(result["operations"]) == set(scenario.mix)
    hist = LatencyHistogram.decode(overall["histograms"]["intended"])
    assert hist.count == overall["count"]
    # The harness overhead is measured against a no-op target, so not again for one.
    assert result["harness_overhead"] is None
    assert result["machine_info"]["logical_cores"] >= 1
    assert "commit" in result["commit_info"]
    first = result["timeline"][0]
    assert first["phase"] == "warmup"
    # De-phased users: the first second already runs at the target rate, without a burst.
    assert first["rate"] <= 200 * 1.1


def test_declared_unsupported_probes_are_unsupported_in_every_family(tmp_path: Path) -> None:
    # The no-op adapter declares agents and customer data absent: the in-run probes are not
    # started, and they and the capability probes all say unsupported.
    path = scenario_file(tmp_path, users=5, rate=20, warmup=0.5, measure=1, cooldown=0,
                         loose=True, extra="[probes]\nagent_rate = 2\nevent_rate = 2\n")
    report = run(RunRequest(load_scenario(str(path), profile="quick"), target="noop://",
                            out=tmp_path / "runs", calibrate=False), say=lambda _m: None)
    result = read_result(report.path)
    assert report.exit_code == 0, result["invalid_reasons"]
    dims = result["dimensions"]
    assert {dims[k]["status"] for k in ("agent_latency", "event_delay")} == {"unsupported"}
    caps = result["capabilities"]
    assert set(caps) == {"agent.takeover", "agent.steps", "agent.explain", "cdp.realtime",
                         "cdp.tags_explained"}
    assert {c["status"] for c in caps.values()} == {"unsupported"}


def test_calibration_measures_the_harness_overhead(tmp_path: Path) -> None:
    scenario = load_scenario(str(scenario_file(tmp_path, calibration=2)), profile="quick")
    overhead = calibrate(scenario, tmp_path / "cal.log", lambda _m: None)
    assert overhead is not None and overhead.latency_ms is not None
    assert overhead.target == "noop://?delay_ms=0"
    assert overhead.latency_ms.intended.count == pytest.approx(400, rel=0.1)
    # Histograms travel as histograms until the result is written.
    assert overhead.histograms is not None
    assert overhead.histograms.intended.count == overhead.latency_ms.intended.count


def test_workers_merge_histograms_across_processes(tmp_path: Path) -> None:
    # Merging is tested here, not validity: limits no busy machine reaches.
    path = scenario_file(tmp_path, users=40, rate=200, warmup=1.5, measure=3, loose=True)
    proc = cli("run", "--target", "noop://?delay_ms=1", "--scenario", str(path), "--profile",
               "quick", "--workers", "2", "--out", str(tmp_path / "runs"), "--json",
               "--no-calibrate")
    headline = json.loads(proc.stdout)
    result = read_result(Path(headline["result"]))
    assert result["complete"], (result["abort_reason"], proc.stderr)
    assert proc.returncode == 0, result["invalid_reasons"]
    assert result["load"]["workers"] == 2
    total = sum(op["count"] for op in result["operations"].values())
    assert total == result["overall"]["count"]
    # What the two processes sent in the window is all there, whatever rate they reached.
    sent = result["load"]["achieved_rate"] * result["load"]["measure_s"]
    assert total == pytest.approx(sent, rel=0.2)
    assert total > 0
    merged = LatencyHistogram()
    for op in result["operations"].values():
        merged.add(LatencyHistogram.decode(op["histograms"]["intended"]))
    assert merged.count == result["overall"]["count"]


def test_a_worker_started_separately_joins_the_run(tmp_path: Path) -> None:
    from bench.adapters.embedded import free_port

    port = free_port()
    path = scenario_file(tmp_path, users=40, rate=200, warmup=1.5, measure=3)
    master = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--target", "noop://?delay_ms=1", "--scenario",
         str(path), "--profile", "quick", "--remote-workers", "1", "--master-port", str(port),
         "--out", str(tmp_path / "runs"), "--json", "--no-calibrate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2)
    remote = subprocess.Popen(
        [sys.executable, "-m", "bench", "worker", "--master", f"127.0.0.1:{port}", "--index", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        stdout, stderr = master.communicate(timeout=120)
    finally:
        remote.wait(timeout=30)
    assert master.returncode == 0, stderr
    result = read_result(Path(json.loads(stdout)["result"]))
    assert result["load"]["workers"] == 2
    assert result["overall"]["count"] == pytest.approx(600, rel=0.1)


def test_overloaded_generator_marks_the_run_invalid(tmp_path: Path) -> None:
    # Far beyond what one generator process can pace: CPU saturates, the rate falls short.
    path = scenario_file(tmp_path, users=2000, rate=60_000, warmup=1, measure=3)
    proc = cli("run", "--target", "noop://?delay_ms=0", "--scenario", str(path), "--profile",
               "quick", "--out", str(tmp_path / "runs"), "--json", "--no-calibrate")
    assert proc.returncode == 3, proc.stderr
    headline = json.loads(proc.stdout)
    assert headline["valid"] is False
    reasons = " ".join(headline["invalid_reasons"])
    # Whether the overloaded generator still finished in time depends on the machine;
    # either way the run is invalid and says why.
    if headline["complete"]:
        assert "target" in reasons or "CPU" in reasons or "lag" in reasons, reasons
    else:
        assert reasons, headline


def test_interrupted_run_leaves_a_partial_result(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, users=20, rate=100, warmup=1, measure=60)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--target", "noop://?delay_ms=1", "--scenario",
         str(path), "--profile", "quick", "--out", str(out), "--no-calibrate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "incomplete" in stderr
    [result_path] = out.glob("*.json")
    result = read_result(result_path)
    assert result["complete"] is False
    assert result["valid"] is False
    assert result["interrupted"] is True
    assert result["overall"]["count"] > 100


@pytest.mark.parametrize(("sig", "calibrate", "wait_s"), [
    (signal.SIGTERM, True, 2.5),   # during calibration, before any load
    (signal.SIGTERM, False, 6.0),  # during the load
    (signal.SIGHUP, False, 6.0),
])
def test_termination_signals_end_a_run_in_order(
    tmp_path: Path, sig: signal.Signals, calibrate: bool, wait_s: float
) -> None:
    path = scenario_file(tmp_path, users=20, rate=100, warmup=1, measure=60)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--target", "noop://?delay_ms=1", "--scenario",
         str(path), "--profile", "quick", "--out", str(out),
         "--calibrate" if calibrate else "--no-calibrate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The result file exists from the start, marked incomplete.
    deadline = time.monotonic() + 30
    while not list(out.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    [early] = out.glob("*.json")
    assert read_result(early)["complete"] is False
    time.sleep(wait_s)
    proc.send_signal(sig)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    [result_path] = out.glob("*.json")
    result = read_result(result_path)
    assert result["complete"] is False and result["interrupted"] is True
    assert result["abort_reason"] == f"stopped by {sig.name}"
    assert result["finished_at"] is not None


def test_a_killed_run_leaves_a_checkpoint_that_reads_as_one(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, users=20, rate=100, warmup=1, measure=60)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--target", "noop://?delay_ms=1", "--scenario",
         str(path), "--profile", "quick", "--out", str(out), "--no-calibrate"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    time.sleep(6)
    os.killpg(proc.pid, signal.SIGKILL)  # the harness and its load generator, no clean-up
    proc.communicate(timeout=30)
    [result_path] = out.glob("*.json")
    run = Run(str(result_path), read_result(result_path))
    assert run.result["complete"] is False and run.result["finished_at"] is None
    assert run.exclusion is not None and "checkpoint" in run.exclusion


def test_unreachable_target_exits_4(tmp_path: Path) -> None:
    proc = cli("run", "--target", "reference+http://127.0.0.1:9", "--profile", "quick",
               "--out", str(tmp_path / "runs"), "--no-calibrate",
               env={"CRMBENCH_API_TOKEN": "x"}, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing was measured, and the result says why: reports show it as not-measured.
    [path] = (tmp_path / "runs").glob("*.json")
    result = read_result(path)
    assert result["complete"] is False
    assert "127.0.0.1:9" in result["abort_reason"]
    assert result["operations"] == {}
    assert result["target"]["platform"] == "reference"


def test_unknown_scheme_and_bad_scenario_are_usage_errors(tmp_path: Path) -> None:
    proc = cli("run", "--target", "gopher://x", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "gopher" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\nname = "x"\nusers = -5\nrate = 1\n[mix]\nget_customer = 1\n'
                   "[profiles.quick]\nwarmup_s = 0\nmeasure_s = 1\ncooldown_s = 0\n")
    proc = cli("run", "--scenario", str(bad), "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "users" in proc.stderr


def test_scenario_precedence_file_env_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = scenario_file(tmp_path, users=50, rate=200)
    assert load_scenario(str(path), profile="quick").users == 50
    monkeypatch.setenv("CRMBENCH_USERS", "70")
    assert load_scenario(str(path), profile="quick").users == 70
    assert load_scenario(str(path), profile="quick", users=90).users == 90
    monkeypatch.setenv("CRMBENCH_RATE", "abc")
    with pytest.raises(UserError, match="CRMBENCH_RATE"):
        load_scenario(str(path), profile="quick")
    with pytest.raises(UserError, match="no profile"):
        load_scenario(str(path), profile="standard")
    monkeypatch.delenv("CRMBENCH_RATE")
    monkeypatch.delenv("CRMBENCH_USERS")
    shipped = load_scenario("mixed", profile="quick", users=None, rate=None)
    assert shipped.mix["customer_360"] == 30


def test_adapters_command_lists_capabilities() -> None:
    proc = cli("adapters", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = {a["scheme"]: a for a in json.loads(proc.stdout)}
    assert {"noop", "reference", "reference+http"} <= set(listed)
    caps = listed["reference+http"]["capabilities"]
    assert caps["crud.mixed"]["support"] == "supported"


async def _independent_client(base: str, token: str, seconds: float, rate: float,
                              ids: int) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 limits=httpx.Limits(max_connections=4)) as client:
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            n += 1
            t0 = time.perf_counter_ns()
            resp = await client.get(f"/customers/{1 + n % ids}")
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            assert resp.status_code == 200
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
    return samples


@pytest.fixture()
def served_copy(tmp_path: Path, small_fixtures: Path) -> Iterator[EmbeddedReference]:
    """A reference CRM on a copy of the small fixtures, its token in the environment."""
    fixtures = tmp_path / "fx"
    shutil.copytree(small_fixtures, fixtures)
    with EmbeddedReference(fixtures) as ref, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRMBENCH_API_TOKEN", ref.token)
        yield ref


def run_gets(tmp_path: Path, ref: EmbeddedReference, measure: float) -> RunReport:
    path = scenario_file(tmp_path, users=20, rate=100, warmup=1, measure=measure,
                         mix="get_customer = 1")
    scenario = load_scenario(str(path), profile="quick")
    return run(RunRequest(scenario, target=ref.url, out=tmp_path / "runs", calibrate=False),
               say=lambda _m: None)


def test_harness_agrees_with_an_independent_client(
    tmp_path: Path, served_copy: EmbeddedReference
) -> None:
    ref = served_copy
    base = ref.url.replace("reference+http", "http")
    client: dict[str, Any] = {}

    def measure() -> None:
        time.sleep(1.5)
        client["samples"] = asyncio.run(
            _independent_client(base, ref.token, 4.0, 50, 1000)
        )

    thread = threading.Thread(target=measure)
    thread.start()
    report = run_gets(tmp_path, ref, measure=5)
    thread.join()
    samples = sorted(client["samples"])
    client_p50 = samples[len(samples) // 2]
    harness_p50 = report.result["operations"]["get_customer"]["latency_ms"]["actual"]["p50"]
    assert report.result["overall"]["errors"] == 0
    # Two clients with different stacks: agreement within 1 ms or a factor of two.
    assert abs(harness_p50 - client_p50) <= max(1.0, client_p50), (harness_p50, client_p50)


def test_a_target_that_dies_mid_run_stops_the_run(
    tmp_path: Path, served_copy: EmbeddedReference
) -> None:
    threading.Timer(4.0, lambda: os.kill(served_copy.pid, signal.SIGKILL)).start()
    started = time.monotonic()
    report = run_gets(tmp_path, served_copy, measure=120)
    assert time.monotonic() - started < 30
    assert report.exit_code == 4
    assert report.result["complete"] is False
    assert "stopped answering" in (report.result["abort_reason"] or "")
    assert report.result["overall"]["count"] > 0
    assert read_result(report.path)["complete"] is False


def test_probe_only_scenario_fills_engine_dimensions(tmp_path: Path, small_fixtures: Path) -> None:
    fixtures = tmp_path / "fx"
    shutil.copytree(small_fixtures, fixtures)
    path = tmp_path / "engines.toml"
    path.write_text('version = 1\nbase = "workflow-limits"\nname = "engines"\n'
                    "[engines]\nworkflow_cap = 64\nworkflow_min_time_s = 0.02\nsla = true\n"
                    "pack = true\n")
    scenario = load_scenario(str(path), profile="quick")
    report = run(RunRequest(scenario, target="reference://embedded", fixtures=fixtures,
                            out=tmp_path / "runs"), say=lambda _m: None)
    result = read_result(report.path)
    assert report.exit_code == 0, result["invalid_reasons"]
    assert result["operations"] == {} and result["harness_overhead"] is None
    dims = result["dimensions"]
    assert dims["workflow"]["value"] == 64 and dims["workflow"]["status"] == "pass"
    assert [p["nodes"] for p in dims["workflow"]["curve"]][:3] == [1, 2, 4]
    assert dims["workflow"]["min_time_s"] == 0.02 and dims["workflow"]["repeats"] == 5
    assert all(p["repeats"] >= 5 for p in dims["workflow"]["curve"])
    assert dims["sla"]["value"] == "action"
    assert dims["pack"]["status"] == "pass" and dims["pack"]["idempotent"] is True
    assert {result["capabilities"][c]["status"] for c in (
        "workflow.dag", "workflow.breaker", "sla.field", "sla.action", "pack.manufacturing",
    )} == {"pass"}
    # Probes only: no load was offered, and the result says none.
    assert result["load"]["users"] == 0 and result["load"]["target_rate"] == 0
    assert result["scenario"]["users"] == 0 and result["scenario"]["workload"] is False


def test_an_unusable_output_folder_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = cli("run", "--target", "noop://?delay_ms=1", "--scenario",
               str(scenario_file(tmp_path)), "--profile", "quick", "--no-calibrate",
               "--out", str(blocker / "runs"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write results into {blocker / 'runs'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_output_folder_stops_the_run_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as real_shutil

    from bench.scenarios import runner

    full = real_shutil.disk_usage(tmp_path)._replace(free=1024 * 1024)
    monkeypatch.setattr(runner.shutil, "disk_usage", lambda _p: full)
    scenario = load_scenario(str(scenario_file(tmp_path)), profile="quick")
    with pytest.raises(UserError, match="1 MiB free"):
        run(RunRequest(scenario, target="noop://", out=tmp_path / "runs", calibrate=False),
            say=lambda _m: None)
    assert not list((tmp_path / "runs").glob("*.json"))


def test_a_failing_checkpoint_write_ends_the_run_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.scenarios import runner, supervise

    real_write = runner.write_result
    writes = {"n": 0}

    def write_then_fail(path: Path, result: object) -> Path:
        writes["n"] += 1
        if writes["n"] == 2:  # the first checkpoint after the initial file
            raise OSError(28, "No space left on device")
        return real_write(path, result)

    monkeypatch.setattr(runner, "write_result", write_then_fail)
    monkeypatch.setattr(supervise, "CHECKPOINT_S", 2.5)
    path = scenario_file(tmp_path, users=10, rate=50, warmup=0.2, measure=30, loose=True)
    report = run(RunRequest(load_scenario(str(path), profile="quick"), target="noop://",
                            out=tmp_path / "runs", calibrate=False), say=lambda _m: None)
    assert report.exit_code == 3
    result = read_result(report.path)
    assert result["complete"] is False
    assert result["abort_reason"] == "cannot write the result checkpoint: No space left on device"
    assert result["overall"]["count"] > 0


def test_a_run_refused_before_its_load_says_why_in_its_file(tmp_path: Path) -> None:
    # An embedded target with a fixture folder that holds no profile: refused in preparation.
    empty = tmp_path / "no-fixtures"
    empty.mkdir()
    (empty / "stray.txt").write_text("not a profile")
    proc = cli("run", "--scenario", str(scenario_file(tmp_path)), "--profile", "quick",
               "--no-calibrate", "--fixtures", str(empty), "--out", str(tmp_path / "runs"),
               timeout=120)
    assert proc.returncode == 2, proc.stderr
    [path] = (tmp_path / "runs").glob("*.json")
    result = read_result(path)
    assert result["complete"] is False and result["finished_at"] is not None
    assert result["abort_reason"]
