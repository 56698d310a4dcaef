"""Harness side of a run: start the target and the load generator, merge, judge, write.

The load generator (``bench.scenarios.driver``) runs in a subprocess and reports one JSON
line per second. Histograms are merged with ``add``, never averaged. A partial result is
checkpointed every few seconds, so an interrupted run leaves its data on disk marked
``complete: false``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import __version__
from bench.adapters.base import FAULT_STATUSES, Guarded, RunPlan
from bench.adapters.embedded import EMBEDDED_URL, parse_embedded
from bench.adapters.registry import create_adapter, redact_url, scheme_of
from bench.errors import CrmBenchError, TargetUnreachable, UserError
from bench.measure.hdr import LatencyHistogram
from bench.measure.noise import (
    SystemSampler,
    judge_noise,
    limits_dict,
    listening_pids,
    p50_cv,
    summarize,
)
from bench.measure.provenance import commit_info, machine_info
from bench.measure.validity import judge, steady
from bench.results.store import SCHEMA_VERSION, write_result
from bench.scenarios.capability_probes import run_capability_probes
from bench.scenarios.config import Scenario

NOOP_CALIBRATION_URL = "noop://?delay_ms=0"
DEFAULT_FIXTURES = Path("fixtures/data/default")
# Statuses of failed calls (timeouts, transport and server faults, unreadable answers).
ERROR_STATUSES = tuple(s.value for s in FAULT_STATUSES)
CHECKPOINT_S = 10.0
# Seconds after which a timeline point receives no more intervals (workers lag a little).
SETTLED_S = 3.0
DEAD_INTERVALS = 3
SILENT_INTERVALS = 5


@dataclass
class OpAcc:
    intended: LatencyHistogram = field(default_factory=LatencyHistogram)
    actual: LatencyHistogram = field(default_factory=LatencyHistogram)
    statuses: Counter[str] = field(default_factory=Counter)
    late: int = 0

    def add_json(self, data: dict[str, Any]) -> None:
        self.intended.add(LatencyHistogram.decode(data["response"]))
        self.actual.add(LatencyHistogram.decode(data["service"]))
        self.statuses.update(data["statuses"])
        self.late += int(data["late"])

    def add(self, other: OpAcc) -> None:
        self.intended.add(other.intended)
        self.actual.add(other.actual)
        self.statuses.update(other.statuses)
        self.late += other.late

    def to_result(self, seconds: float) -> dict[str, Any]:
        count = sum(self.statuses.values())
        return {
            "count": count,
            "statuses": dict(self.statuses),
            "errors": count - self.statuses.get("ok", 0),
            "throughput": round(count / seconds, 3) if seconds > 0 else 0.0,
            "late": self.late,
            "latency_ms": {"intended": self.intended.summary(), "actual": self.actual.summary()},
            "histograms": {"intended": self.intended.encode(), "actual": self.actual.encode()},
        }


@dataclass
class Accumulator:
    """Everything the intervals of one run add up to."""

    phases: dict[str, Any]
    ops: dict[str, dict[str, OpAcc]] = field(default_factory=dict)
    sent: Counter[str] = field(default_factory=Counter)
    lag_measure: LatencyHistogram = field(default_factory=LatencyHistogram)
    cpu_measure: list[float] = field(default_factory=list)
    cpu_all: list[float] = field(default_factory=list)
    timeline: dict[int, dict[str, Any]] = field(default_factory=dict)
    workers: set[str] = field(default_factory=set)
    last_t: float = 0.0
    probe_delay: dict[str, dict[str, LatencyHistogram]] = field(default_factory=dict)
    probe_counts: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    probe_lost: dict[str, Counter[str]] = field(default_factory=dict)
    probe_steps: dict[str, dict[str, LatencyHistogram]] = field(default_factory=dict)
    probe_errors: list[str] = field(default_factory=list)
    probe_reconnects: Counter[str] = field(default_factory=Counter)
    probe_finals: int = 0

    def add_probes(self, probes: dict[str, Any]) -> None:
        for name, phases in probes.items():
            for phase, data in phases.items():
                hists = self.probe_delay.setdefault(name, {})
                hists.setdefault(phase, LatencyHistogram()).add(
                    LatencyHistogram.decode(data["delay"])
                )
                self.probe_counts.setdefault(name, {}).setdefault(phase, Counter()).update(
                    data["counts"]
                )

    def add_probe_final(self, msg: dict[str, Any]) -> None:
        self.probe_finals += 1
        if msg.get("error"):
            self.probe_errors.append(str(msg["error"]))
        for name, final in (msg.get("probes") or {}).items():
            self.probe_lost.setdefault(name, Counter()).update(final.get("lost", {}))
            self.probe_reconnects[name] += int(final.get("reconnects", 0))
            for step, enc in (final.get("steps") or {}).items():
                steps = self.probe_steps.setdefault(name, {})
                steps.setdefault(step, LatencyHistogram()).add(LatencyHistogram.decode(enc))

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
                acc = OpAcc()
                acc.add_json(data)
                self.ops.setdefault(phase, {}).setdefault(op, OpAcc()).add(acc)
                interval.add(acc)
        self.sent.update(msg["sent"])
        self.add_probes(msg.get("probes") or {})
        phase = self.phase_at(t - 0.5)
        cpu = float(msg["cpu_pct"])
        self.cpu_all.append(cpu)
        # The generator's own figures count only for intervals inside the window: the last
        # one, when there is no cool-down, also holds the work of stopping 500 users.
        if phase == "measure" and t <= self.phases["warmup_s"] + self.phases["measure_s"] + 0.1:
            self.cpu_measure.append(cpu)
            self.lag_measure.add(LatencyHistogram.decode(msg["lag"]))
        count = sum(interval.statuses.values())
        errors = sum(interval.statuses.get(s, 0) for s in ERROR_STATUSES)
        point = self.timeline.setdefault(round(t), {
            "t": round(t), "phase": phase, "completed": 0, "sent": 0, "errors": 0,
            "_hist": LatencyHistogram(),
        })
        point["completed"] += count
        point["sent"] += sum(msg["sent"].values())
        point["errors"] += count - interval.statuses.get("ok", 0)
        if "_hist" in point:
            point["_hist"].add(interval.intended)
        return {"t": t, "phase": phase, "count": count, "errors": errors,
                "failed": count - interval.statuses.get("ok", 0),
                "p99": interval.intended.percentile_ms(99) if count else 0.0}

    def measured(self) -> dict[str, OpAcc]:
        return self.ops.get("measure", {})

    def overall(self) -> OpAcc:
        total = OpAcc()
        for acc in self.measured().values():
            total.add(acc)
        return total

    def timeline_rows(self) -> list[dict[str, Any]]:
        rows = []
        for t in sorted(self.timeline):
            p = self.timeline[t]
            if "p50_ms" in p:
                rows.append({k: v for k, v in p.items() if k != "_hist"})
                continue
            hist: LatencyHistogram = p["_hist"]
            row = {
                "t": p["t"], "phase": p["phase"], "rate": p["sent"],
                "completed": p["completed"], "errors": p["errors"],
                "p50_ms": hist.percentile_ms(50) if hist.count else 0.0,
                "p99_ms": hist.percentile_ms(99) if hist.count else 0.0,
            }
            if t < self.last_t - SETTLED_S:
                # No interval adds to this second any more: keep the figures, not the
                # histogram. Recomputing every second's percentiles at each checkpoint
                # grew with the run and stole CPU from the generator and the target.
                self.timeline[t] = row
            rows.append(row)
        return rows


@dataclass
class Outcome:
    acc: Accumulator
    started: bool = False
    done: bool = False
    interrupted: bool = False
    abort_reason: str | None = None
    exit_code: int = 0
    workers: int = 1


Listener = Callable[[dict[str, Any], Accumulator], None]


def _reader(stream: Any, out: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            out.put(json.loads(line))
        except json.JSONDecodeError:
            continue
    out.put(None)


def drive(
    config: dict[str, Any],
    log_path: Path,
    *,
    on_interval: Listener | None = None,
    target_alive: Callable[[], bool] | None = None,
    checkpoint: Callable[[Outcome], None] | None = None,
    env: dict[str, str] | None = None,
    sampler: SystemSampler | None = None,
) -> Outcome:
    """Run the load generator with ``config`` and merge what it reports."""
    outcome = Outcome(Accumulator(config["phases"]))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(config, fh)
        config_path = fh.name
    role = "master" if config["workers"] > 1 or config.get("expect_remote") else "local"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.scenarios.driver", "--role", role,
         "--config", config_path],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
        # Its own process group: Ctrl-C reaches the harness, which stops it in order.
        start_new_session=True,
    )
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
    reader.start()
    dead = silent = 0
    last_checkpoint = time.monotonic()
    deadline = time.monotonic() + config["total_s"] + float(config.get("worker_wait_s", 60)) + 30
    try:
        while True:
            try:
                msg = lines.get(timeout=1.0)
            except queue.Empty:
                msg = {"type": "tick"}
            if msg is None:
                break
            kind = msg.get("type")
            if kind == "started":
                outcome.started = True
                outcome.workers = int(msg.get("workers", 1))
            elif kind == "interval":
                summary = outcome.acc.add_interval(msg)
                if sampler is not None:
                    sampler.tick(summary["t"])
                if on_interval is not None:
                    on_interval(summary, outcome.acc)
                if summary["count"] and summary["errors"] == summary["count"]:
                    dead += 1
                else:
                    dead = 0
                silent = silent + 1 if summary["count"] == 0 and summary["t"] > 2 else 0
                if dead >= DEAD_INTERVALS or silent >= SILENT_INTERVALS:
                    outcome.abort_reason = (
                        "target stopped answering: every request failed for "
                        f"{DEAD_INTERVALS} s" if dead >= DEAD_INTERVALS else
                        f"target stopped answering: no response for {SILENT_INTERVALS} s"
                    )
                    outcome.exit_code = TargetUnreachable.exit_code
                    break
            elif kind == "probe_final":
                outcome.acc.add_probe_final(msg)
            elif kind == "error":
                outcome.abort_reason = str(msg.get("message"))
                outcome.exit_code = int(msg.get("exit_code", 3))
                break
            elif kind == "done":
                outcome.done = True
                outcome.interrupted = bool(msg.get("interrupted"))
                break
            if target_alive is not None and not target_alive():
                outcome.abort_reason = "the target process exited during the run"
                outcome.exit_code = TargetUnreachable.exit_code
                break
            if time.monotonic() > deadline:
                outcome.abort_reason = "the load generator did not finish in time"
                outcome.exit_code = 3
                break
            if checkpoint is not None and time.monotonic() - last_checkpoint > CHECKPOINT_S:
                checkpoint(outcome)
                last_checkpoint = time.monotonic()
    except KeyboardInterrupt:
        outcome.interrupted = True
        outcome.abort_reason = "interrupted by the user"
        outcome.exit_code = 3
    finally:
        _stop(proc)
        # The generator has exited: the reader reaches end of file and stops.
        reader.join(timeout=5)
        if proc.stdout is not None and not reader.is_alive():
            proc.stdout.close()
        log.close()
        Path(config_path).unlink(missing_ok=True)
    if not outcome.done and outcome.abort_reason is None:
        outcome.abort_reason = f"the load generator exited early (code {proc.returncode}); " \
            f"see {log_path}"
        outcome.exit_code = 3
    return outcome


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class ResolvedTarget:
    """The adapter URL of a target, what the generator needs, and what runs it locally."""

    url: str
    env: dict[str, str]
    alive: Callable[[], bool] | None = None
    fixture_hash: str | None = None
    server_pid: int | None = None


@contextmanager
def resolve_target(
    url: str, fixtures: Path, say: Callable[[str], None], server_log: Path | None = None,
    *, test_clock: bool = False,
) -> Iterator[ResolvedTarget]:
    """Start an embedded target if ``url`` asks for one; yield how to reach it."""
    options = parse_embedded(url)
    if options is not None:
        from bench.adapters.embedded import EmbeddedReference
        from reference_impl.fixtures import manifest_hash

        with EmbeddedReference(
            fixtures, say=say, keep_log=server_log, test_clock=test_clock, options=options
        ) as ref:
            yield ResolvedTarget(ref.url, {"CRMBENCH_API_TOKEN": ref.token}, ref.alive,
                                 manifest_hash(fixtures), ref.pid)
        return
    if scheme_of(url) == "reference":
        raise UserError(f"reference:// supports only {EMBEDDED_URL}[?options]; "
                        "use reference+http://HOST:PORT for a running reference CRM")
    yield ResolvedTarget(url, {})


@dataclass
class ProbeInfo:
    platform: str
    version: str | None
    keyspace: dict[str, int]
    preflight: dict[str, Any] | None


@contextmanager
def _with_env(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _probe(url: str, env: dict[str, str], plan: RunPlan) -> ProbeInfo:
    """Open the adapter once in the harness: fail fast, and let guarded adapters refuse."""
    with _with_env(env):
        adapter = create_adapter(url)
        adapter.open()
        try:
            facts = adapter.preflight(plan) if isinstance(adapter, Guarded) else None
            version = adapter.platform_version()
            ks = adapter.keyspace()
        finally:
            adapter.close()
    return ProbeInfo(
        platform=str(getattr(adapter, "platform", scheme_of(url))),
        version=version,
        keyspace={
            "customers": ks.customers, "opportunities": ks.opportunities, "reps": ks.reps,
            "regions": ks.regions, "products": ks.products, "leads": ks.leads,
        },
        preflight=facts,
    )


def probe_capabilities(
    url: str, env: dict[str, str], run_id: str, which: set[str]
) -> dict[str, Any]:
    """Verify the declared agent / customer-data capabilities on the live target."""
    with _with_env(env):
        adapter = create_adapter(url)
        adapter.open()
        try:
            return run_capability_probes(adapter, run_id, which)
        finally:
            adapter.close()


ENGINE_PROBES = ("workflow", "sla", "pack")


def _engine_options(name: str, engines: dict[str, Any]) -> dict[str, Any]:
    """Scenario ``[engines]`` settings in the shape each probe function takes."""
    if name == "workflow":
        wf: dict[str, Any] = {"cap": int(engines.get("workflow_cap", 100_000))}
        if "workflow_repeats" in engines:
            wf["repeats"] = int(engines["workflow_repeats"])
        if "workflow_min_time_s" in engines:
            wf["min_time_s"] = float(engines["workflow_min_time_s"])
        return wf
    if name == "sla":
        out: dict[str, Any] = {k: engines[k] for k in ("sla_within_s",) if k in engines}
        if "sla_real_time_s" in engines:
            out["real_time_s"] = engines["sla_real_time_s"]
        return out
    return {"pack": engines.get("pack_name", "manufacturing"),
            **{k: engines[k] for k in ("pack_timeout_s",) if k in engines}}


def probe_engines(
    url: str, env: dict[str, str], run_id: str, engines: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Workflow, SLA and scenario-pack probes: their dimensions and capability statuses."""
    from bench.scenarios import engine_probes

    dims: dict[str, Any] = {}
    caps: dict[str, Any] = {}
    with _with_env(env):
        adapter = create_adapter(url)
        adapter.open()
        try:
            for name in ENGINE_PROBES:
                if not engines.get(name):
                    continue
                say(f"probing {name}")
                probe = getattr(engine_probes, f"probe_{name}")
                dim, found = probe(adapter, run_id, _engine_options(name, engines), say)
                dims[name] = dim
                caps.update(found)
        finally:
            adapter.close()
    return dims, caps


def cleanup_run(url: str, env: dict[str, str], run_id: str) -> int | None:
    """Delete what a run created on a guarded target; None when the adapter keeps nothing."""
    with _with_env(env):
        adapter = create_adapter(url)
        if not isinstance(adapter, Guarded):
            return None
        adapter.open()
        try:
            return adapter.cleanup(run_id)
        finally:
            adapter.close()


def driver_config(
    scenario: Scenario, target: str, keyspace: dict[str, int] | None, workers: int,
    *, phases: dict[str, float] | None = None,
) -> dict[str, Any]:
    ph = phases or _phases(scenario)
    return {
        "target": target,
        "users": scenario.users,
        "rate": scenario.rate,
        "period_s": scenario.users / scenario.rate,
        "arrival": scenario.arrival,
        "seed": scenario.seed,
        "mix": scenario.mix,
        "key_distribution": scenario.key_distribution,
        "zipf_exponent": scenario.zipf_exponent,
        "keyspace": keyspace,
        "phases": ph,
        "total_s": ph["warmup_s"] + ph["measure_s"] + ph["cooldown_s"],
        "late_tolerance_ms": scenario.validity.late_tolerance_ms,
        "workers": max(workers, 1),
        "probes": scenario.probes,
        "spawn_workers": workers if workers > 1 else 0,
        "master_port": _free_port(),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RunRequest:
    scenario: Scenario
    target: str = EMBEDDED_URL
    workers: int = 1
    out: Path = Path("reports/runs")
    fixtures: Path = DEFAULT_FIXTURES
    calibrate: bool = True
    allow_production: bool = False
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int | None = None


@dataclass
class RunReport:
    path: Path
    result: dict[str, Any]
    exit_code: int


def calibrate(
    scenario: Scenario, log_path: Path, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """Measure what the harness adds: the same users and rate against a no-op target."""
    seconds = scenario.phases.calibration_s
    if seconds <= 0:
        return None
    say(f"measuring harness overhead: {NOOP_CALIBRATION_URL} for {seconds:g} s")
    config = driver_config(
        scenario, NOOP_CALIBRATION_URL, None, 1,
        phases={"warmup_s": 1.0, "measure_s": seconds, "cooldown_s": 0.0},
    )
    outcome = drive(config, log_path)
    if not outcome.done:
        return {"target": NOOP_CALIBRATION_URL, "error": outcome.abort_reason,
                "latency_ms": None}
    total = outcome.acc.overall()
    return {
        "target": NOOP_CALIBRATION_URL,
        "users": scenario.users,
        "rate": scenario.rate,
        "measure_s": seconds,
        "count": sum(total.statuses.values()),
        "latency_ms": {"intended": total.intended.summary(), "actual": total.actual.summary()},
        "histograms": {"intended": total.intended.encode(), "actual": total.actual.encode()},
    }


def run(
    req: RunRequest,
    say: Callable[[str], None],
    on_interval: Listener | None = None,
) -> RunReport:
    """Run a scenario against a target and write its result file."""
    scenario = req.scenario
    started_at = _now()
    run_id = uuid.uuid4().hex[:12]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    scheme = scheme_of(req.target)
    path = req.out / (f"{stamp}-{scenario.name}-{scheme.replace('+', '-')}-"
                      f"{scenario.profile}-{run_id}.json")
    log_path = path.with_suffix(".log")
    base: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "tool": {"name": "crmbench", "version": __version__},
        "started_at": started_at,
        "machine_info": machine_info(),
        "commit_info": commit_info(),
        "scenario": scenario.to_dict(),
        "log": str(log_path),
    }
    target_info: dict[str, Any] = {
        "adapter": scheme, "platform": scheme, "url": redact_url(req.target),
        "platform_version": None, "embedded": parse_embedded(req.target) is not None,
    }
    fixtures: dict[str, Any] = {"manifest_sha256": None}
    overhead: dict[str, Any] | None = None
    capabilities: dict[str, Any] = {}
    engine_dimensions: dict[str, Any] = {}
    sampler = SystemSampler()

    def snapshot(outcome: Outcome, final: bool = False) -> dict[str, Any]:
        result = _assemble(base, outcome, scenario, target_info, fixtures, overhead,
                           final=final, sampler=sampler)
        result["dimensions"].update(engine_dimensions)
        if capabilities:
            result["capabilities"] = capabilities
        return result

    plan = RunPlan(
        run_id=run_id, scenario=scenario.name,
        # Every scheduled request, the probe and cleanup, with a margin for retries.
        estimated_calls=int(scenario.rate * scenario.phases.total_s * 1.1) + 100,
        allow_production=req.allow_production,
    )
    server_log = path.with_suffix(".server.log")
    # SLA probes move the embedded CRM's clock instead of waiting hours.
    test_clock = bool(scenario.engines.get("sla"))
    with resolve_target(req.target, req.fixtures, say, server_log,
                        test_clock=test_clock) as resolved:
        url, env, alive, fixture_hash = (resolved.url, resolved.env, resolved.alive,
                                         resolved.fixture_hash)
        sampler.server_pids = ([resolved.server_pid] if resolved.server_pid is not None
                               else listening_pids(url))
        embedded = parse_embedded(req.target)
        if embedded is not None and embedded.db:
            # A local database serving the target is part of the system under test, not
            # another process disturbing it.
            sampler.server_pids += listening_pids(embedded.db)
        try:
            probe = _probe(url, env, plan)
        except TargetUnreachable as exc:
            # Nothing was measured; the result says why, for reports to show.
            outcome = Outcome(Accumulator(_phases(scenario)), abort_reason=str(exc),
                              exit_code=exc.exit_code)
            with suppress(CrmBenchError, AttributeError):
                target_info["platform"] = str(create_adapter(url).platform)
            result = snapshot(outcome, final=True)
            write_result(path, result)
            say(f"not measured: {exc}")
            return RunReport(path, result, exc.exit_code)
        target_info.update(platform=probe.platform, platform_version=probe.version)
        if probe.preflight is not None:
            target_info["preflight"] = probe.preflight
        fixtures.update(manifest_sha256=fixture_hash, keyspace=probe.keyspace)
        if fixture_hash is None:
            fixtures["reason"] = "the target does not report which fixture profile it holds"
        if req.calibrate and scheme != "noop" and scenario.workload:
            overhead = calibrate(scenario, log_path, say)
        config = driver_config(scenario, url, probe.keyspace, req.workers)
        config["run_id"] = run_id
        if req.remote_workers:
            config.update(
                workers=req.workers + req.remote_workers, expect_remote=True,
                spawn_workers=req.workers, master_bind_host=req.master_bind,
                master_port=req.master_port or 5557, worker_wait_s=300,
            )
            say(f"waiting for {req.remote_workers} remote workers on "
                f"{req.master_bind}:{config['master_port']}")
        elif req.master_port:
            config["master_port"] = req.master_port
        def checkpoint(outcome: Outcome) -> None:
            write_result(path, snapshot(outcome))

        if scenario.workload:
            say(f"running {scenario.name} ({scenario.profile}): {scenario.users} users, "
                f"{scenario.rate:g} req/s for {config['total_s']:g} s against "
                f"{redact_url(req.target)}")
            outcome = drive(config, log_path, on_interval=on_interval, target_alive=alive,
                            checkpoint=checkpoint, env=env, sampler=sampler)
            if overhead is not None and outcome.done and not outcome.interrupted:
                overhead = _with_drift(overhead, calibrate(scenario, log_path, say))
        else:
            outcome = Outcome(Accumulator(_phases(scenario)), done=True)
        if scenario.engines and outcome.done and not outcome.interrupted:
            try:
                dims, caps = probe_engines(url, env, run_id, scenario.engines, say)
            except KeyboardInterrupt:
                outcome.interrupted = True
                outcome.abort_reason = "interrupted by the user"
                outcome.exit_code = 3
            else:
                engine_dimensions.update(dims)
                capabilities.update(caps)
        which = {name for key, name in (("agent_rate", "agent"), ("event_rate", "cdp"))
                 if scenario.probes.get(key, 0) > 0}
        if which and outcome.done and not outcome.interrupted:
            say("probing capabilities: " + ", ".join(sorted(which)))
            capabilities.update(probe_capabilities(url, env, run_id, which))
        if probe.preflight is not None:
            try:
                target_info["cleanup"] = {"deleted": cleanup_run(url, env, run_id)}
            except CrmBenchError as exc:
                target_info["cleanup"] = {
                    "error": str(exc),
                    "retry": f"crmbench cleanup --target {redact_url(req.target)} "
                             f"--run-id {run_id}",
                }
    result = snapshot(outcome, final=True)
    write_result(path, result)
    code = outcome.exit_code
    if code == 0 and (not result["complete"] or not result["valid"]):
        code = 3
    return RunReport(path, result, code)


def _with_drift(
    before: dict[str, Any], after: dict[str, Any] | None
) -> dict[str, Any]:
    """The overhead measured before the run, with the one after it and how far it moved."""
    out = dict(before)
    if after is None:
        return out
    out["after"] = {k: v for k, v in after.items() if k != "histograms"}
    b, a = before.get("latency_ms"), after.get("latency_ms")
    if b and a:
        out["drift_ms"] = {k: round(a["intended"][k] - b["intended"][k], 3)
                           for k in ("p50", "p90", "p99")}
    return out


def _noise(
    acc: Accumulator, scenario: Scenario, sampler: SystemSampler | None,
    overhead: dict[str, Any] | None, timeline: list[dict[str, Any]], late_fraction: float,
) -> dict[str, Any]:
    """What disturbed the measurement window, and whether that makes the run noisy."""
    w = scenario.phases.warmup_s
    count = sum(acc.overall().statuses.values())
    figures: dict[str, Any] = (
        summarize(sampler, w, w + scenario.phases.measure_s, count) if sampler is not None
        else {"samples": 0})
    cv = p50_cv([float(r["p50_ms"]) for r in timeline
                 if r["phase"] == "measure" and r["completed"]])
    figures["p50_cv"] = None if cv is None else round(cv, 4)
    figures["late_fraction"] = late_fraction
    drift = (overhead or {}).get("drift_ms")
    # p90, not p99: a few seconds of calibration hold too few samples for a stable p99.
    figures["overhead_drift_ms"] = None if not drift else abs(float(drift["p90"]))
    reasons = judge_noise(figures, scenario.noise) if scenario.workload else []
    return {**figures, "noisy": bool(reasons), "reasons": reasons,
            "limits": limits_dict(scenario.noise)}


def _phases(scenario: Scenario) -> dict[str, float]:
    return {"warmup_s": scenario.phases.warmup_s, "measure_s": scenario.phases.measure_s,
            "cooldown_s": scenario.phases.cooldown_s}


def _assemble(
    base: dict[str, Any], outcome: Outcome, scenario: Scenario, target: dict[str, Any],
    fixtures: dict[str, Any], overhead: dict[str, Any] | None, *, final: bool,
    sampler: SystemSampler | None = None,
) -> dict[str, Any]:
    acc = outcome.acc
    measure_s = scenario.phases.measure_s
    complete = final and outcome.done and not outcome.interrupted
    if not complete:
        # Only the part of the measurement window that has passed counts.
        measure_s = max(min(acc.last_t - scenario.phases.warmup_s, measure_s), 1e-9)
    achieved = acc.sent.get("measure", 0) / measure_s
    cpu_max = max(acc.cpu_measure, default=float("nan"))
    lag_p99 = acc.lag_measure.percentile_ms(99) if acc.lag_measure.count else float("nan")
    valid, reasons = judge(
        cpu_max_pct=cpu_max, loop_lag_p99_ms=lag_p99, achieved_rate=achieved,
        target_rate=scenario.rate, cpu_limit_pct=scenario.validity.cpu_limit_pct,
        lag_limit_ms=scenario.validity.loop_lag_p99_ms,
        min_rate_fraction=scenario.validity.min_rate_fraction,
    )
    if not scenario.workload:
        # Probes only: no load, so no generator to judge.
        valid, reasons = True, []
    if not complete:
        valid = False
        head = outcome.abort_reason or "the run has not finished"
        # A run that never started has nothing else worth saying about its validity.
        reasons = [head, *reasons] if outcome.started else [head]
    timeline = acc.timeline_rows()
    measure_rates = [float(r["rate"]) for r in timeline if r["phase"] == "measure"]
    overall = acc.overall()
    # Lateness of the measurement window: warm-up sends start while the target warms up.
    measured_ops = acc.measured().values()
    total_sent = sum(sum(a.statuses.values()) for a in measured_ops) or 1
    late_total = sum(a.late for a in measured_ops)
    noise = _noise(acc, scenario, sampler, overhead, timeline,
                   round(late_total / total_sent, 4))

    def clean(x: float) -> float | None:
        return None if x != x else round(x, 3)

    return {
        **base,
        "finished_at": _now() if final else None,
        "complete": complete,
        "interrupted": outcome.interrupted,
        "abort_reason": outcome.abort_reason,
        "valid": valid,
        "invalid_reasons": reasons,
        "target": target,
        "fixtures": fixtures,
        "load": {
            "users": scenario.users, "target_rate": scenario.rate,
            "achieved_rate": round(achieved, 3), "workers": outcome.workers,
            "arrival": scenario.arrival, "measure_s": round(measure_s, 3),
            "steady": steady(measure_rates, scenario.rate) if measure_rates else False,
        },
        "validity": {
            "generator_cpu_max_pct": clean(cpu_max),
            "generator_cpu_mean_pct": clean(
                sum(acc.cpu_measure) / len(acc.cpu_measure) if acc.cpu_measure else float("nan")
            ),
            "loop_lag_p99_ms": clean(lag_p99),
            "loop_lag_max_ms": clean(acc.lag_measure.max_ms if acc.lag_measure.count else
                                     float("nan")),
            "achieved_rate": round(achieved, 3),
            "target_rate": scenario.rate,
            "rate_fraction": round(achieved / scenario.rate, 4),
            "late_sends": late_total,
            "late_fraction": round(late_total / total_sent, 4),
            "limits": {
                "cpu_pct": scenario.validity.cpu_limit_pct,
                "loop_lag_p99_ms": scenario.validity.loop_lag_p99_ms,
                "min_rate_fraction": scenario.validity.min_rate_fraction,
                "late_tolerance_ms": scenario.validity.late_tolerance_ms,
            },
        },
        "operations": {
            op: a.to_result(measure_s) for op, a in sorted(acc.measured().items())
        },
        "overall": overall.to_result(measure_s),
        "timeline": timeline,
        "harness_overhead": overhead,
        "noise": noise,
        "dimensions": _dimensions(acc, scenario, complete, measure_s),
    }


PROBE_DIMENSIONS = {
    "agent_rate": ("agent_latency", "agent.latency", "agent"),
    "event_rate": ("event_delay", "cdp.event_delay", "events"),
}


def _dimensions(
    acc: Accumulator, scenario: Scenario, complete: bool, measure_s: float
) -> dict[str, Any]:
    """Agent latency and event delay from the probes, with how they were observed."""
    out: dict[str, Any] = {}
    for rate_key, (key, capability, probe) in PROBE_DIMENSIONS.items():
        rate = scenario.probes.get(rate_key, 0.0)
        if rate <= 0:
            continue
        dim: dict[str, Any] = {"capability": capability, "unit": "ms", "rate": rate}
        if acc.probe_errors:
            dim.update(status="not-measured", reason=acc.probe_errors[0])
            out[key] = dim
            continue
        hist = acc.probe_delay.get(probe, {}).get("measure", LatencyHistogram())
        counts = acc.probe_counts.get(probe, {}).get("measure", Counter())
        lost = acc.probe_lost.get(probe, Counter())
        summary = hist.summary()
        dim.update(
            value=summary["p50"],
            p50=summary["p50"], p95=summary["p95"], p99=summary["p99"],
            p99_9=summary["p99_9"], max=summary["max"], mean=summary["mean"],
            count=summary["count"], histogram=hist.encode(),
            sent=counts.get("sent", 0), acked=counts.get("acked", 0),
            send_failures=counts.get("sent", 0) - counts.get("acked", 0),
            achieved_rate=round(counts.get("sent", 0) / measure_s, 3) if measure_s else 0.0,
            lost=lost.get("measure", 0), lost_total=sum(lost.values()),
            lost_by_phase=dict(lost), stream_reconnects=acc.probe_reconnects.get(probe, 0),
            outcomes={k: v for k, v in counts.items() if k not in ("sent", "acked")
                      and not k.startswith("send_")},
            observed_via="the harness's own subscription to the change stream (same clock)",
        )
        if key == "agent_latency":
            dim["breakdown"] = {
                step: h.summary() for step, h in acc.probe_steps.get(probe, {}).items()
            }
        if not complete or acc.probe_finals == 0:
            dim.update(status="not-measured",
                       reason="the run did not finish; outcomes still in flight are unknown")
        elif summary["count"] == 0:
            dim.update(status="fail", reason="no outcome was observed on the change stream")
        elif dim["lost"] or dim["send_failures"]:
            dim.update(status="fail", reason=(
                f"{dim['lost']} acknowledged sends never produced their message, "
                f"{dim['send_failures']} sends failed"))
        else:
            dim["status"] = "pass"
        out[key] = dim
    return out


def check_target_url(url: str) -> None:
    """Refuse URLs whose scheme no installed adapter serves, before anything starts."""
    if parse_embedded(url) is not None:
        return
    create_adapter(url)


__all__ = ["CrmBenchError", "RunReport", "RunRequest", "check_target_url", "run"]
