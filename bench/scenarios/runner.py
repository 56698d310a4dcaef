"""A run: resolve the target, preflight, load, probes, cleanup, then the result file.

The steps live beside this module along the data path: process supervision
(``supervise``), accumulation of the generator's intervals (``accumulate``), the target
and its adapter opened once per role (``session``) and result assembly (``assemble``). A
partial result is checkpointed every few seconds, so an interrupted run leaves its data
on disk marked ``complete: false``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import __version__
from bench.adapters.base import RunPlan
from bench.adapters.embedded import EMBEDDED_URL, parse_embedded
from bench.adapters.load import DEFAULT_STATE_DIR as DEFAULT_LOAD_STATE
from bench.adapters.registry import redact_url, scheme_of
from bench.adapters.saas.quota import RatePlan
from bench.errors import CrmBenchError, TargetUnreachable, UserError, stop_reason
from bench.measure.noise import SystemSampler, listening_pids
from bench.measure.provenance import commit_info, machine_info
from bench.probes.registry import Probe, Section, triggered
from bench.results.model import (
    SCHEMA_VERSION,
    Fixtures,
    Overhead,
    RunResult,
    Target,
    Tool,
    to_builtins,
)
from bench.results.store import write_result
from bench.scenarios.accumulate import Accumulator
from bench.scenarios.assemble import Provenance, RunRecord, assemble, now, with_drift
from bench.scenarios.config import Scenario
from bench.scenarios.session import (
    Preflight,
    ResolvedTarget,
    TargetSession,
    check_target_url,
    platform_of,
    resolve_target,
)
from bench.scenarios.supervise import Hooks, Listener, Outcome, drive

NOOP_CALIBRATION_URL = "noop://?delay_ms=0"
DEFAULT_FIXTURES = Path("fixtures/data/default")
Say = Callable[[str], None]


def _phases(scenario: Scenario) -> dict[str, float]:
    return {"warmup_s": scenario.phases.warmup_s, "measure_s": scenario.phases.measure_s,
            "cooldown_s": scenario.phases.cooldown_s}


def driver_config(
    scenario: Scenario, target: str, keyspace: dict[str, Any] | None, workers: int,
    *, phases: dict[str, float] | None = None, probes: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The load generator's configuration (``probes``: the in-run probes' settings)."""
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
        "probes": scenario.probes if probes is None else probes,
        "spawn_workers": workers if workers > 1 else 0,
        "master_port": _free_port(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunRequest:
    scenario: Scenario
    target: str = EMBEDDED_URL
    workers: int = 1
    out: Path = Path("reports/runs")
    fixtures: Path = DEFAULT_FIXTURES
    # Whether the fixture profile was asked for (a target holding other data is refused)
    # or is the default (a target holding data is used as it is).
    fixtures_given: bool = True
    load_state: Path = DEFAULT_LOAD_STATE
    calibrate: bool = True
    allow_production: bool = False
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int | None = None
    label: str | None = None
    # A vendor whose quotas allow less than the scenario's rate: "scale" or "refuse".
    over_quota: str = "scale"
    # An embedded reference CRM of one SQLite process on a core of its own, the load
    # generator on the others (bench.measure.cpus).
    pin: bool = True


@dataclass
class RunReport:
    """The result file written, its data (as in the file) and the exit code."""

    path: Path
    result: dict[str, Any]
    exit_code: int
    model: RunResult


def calibrate(scenario: Scenario, log_path: Path, say: Say,
              cpus: Sequence[int] | None = None) -> Overhead | None:
    """Measure what the harness adds: the same users and rate against a no-op target, with
    the load generator on ``cpus`` as in the run it goes with."""
    seconds = scenario.phases.calibration_s
    if seconds <= 0:
        return None
    say(f"measuring harness overhead: {NOOP_CALIBRATION_URL} for {seconds:g} s")
    config = driver_config(
        scenario, NOOP_CALIBRATION_URL, None, 1,
        phases={"warmup_s": 1.0, "measure_s": seconds, "cooldown_s": 0.0}, probes={},
    )
    outcome = drive(config, log_path, cpus=cpus)
    if not outcome.done:
        return Overhead(target=NOOP_CALIBRATION_URL, latency_ms=None,
                        error=outcome.abort_reason)
    total = outcome.acc.overall().to_result(seconds)
    return Overhead(target=NOOP_CALIBRATION_URL, latency_ms=total.latency_ms,
                    users=scenario.users, rate=scenario.rate, measure_s=seconds,
                    count=total.count, histograms=total.histograms)


def _record(req: RunRequest, run_id: str, log_path: Path) -> RunRecord:
    scheme = scheme_of(req.target)
    provenance = Provenance(
        schema_version=SCHEMA_VERSION, run_id=run_id,
        tool=Tool("crmbench", __version__), started_at=now(), machine_info=machine_info(),
        commit_info=commit_info(), scenario=req.scenario.to_dict(), log=str(log_path),
    )
    target = Target(adapter=scheme, platform=scheme, url=redact_url(req.target),
                    platform_version=None, embedded=parse_embedded(req.target) is not None,
                    label=req.label)
    return RunRecord(provenance, req.scenario, target, sampler=SystemSampler())


def _chosen(scenario: Scenario) -> list[tuple[Probe[Any], Any]]:
    """The probes a scenario turns on, with their options."""
    tables: dict[Section, dict[str, Any]] = {"probes": scenario.probes,
                                             "engines": scenario.engines}
    return [(p, p.settings(tables)) for p in triggered(tables)]


def _driver_probes(scenario: Scenario, record: RunRecord) -> dict[str, float]:
    """The scenario's in-run probe settings, without the probes the adapter cannot serve."""
    in_run = [p for p, _ in record.probes if p.run is None]
    off = {p.trigger[1] for p in in_run if p.name in record.gated}
    kept = {k: v for k, v in scenario.probes.items() if k not in off}
    # Settings without a probe to use them would still make the generator prepare one.
    return kept if any(p.trigger[1] in kept for p in in_run) else {}


def _watch_server(record: RunRecord, req: RunRequest, resolved: ResolvedTarget) -> None:
    assert record.sampler is not None
    record.sampler.server_pids = ([resolved.server_pid] if resolved.server_pid is not None
                                  else listening_pids(resolved.url))
    embedded = parse_embedded(req.target)
    if embedded is not None and embedded.db:
        # A local database serving the target is part of the system under test, not
        # another process disturbing it.
        record.sampler.server_pids += listening_pids(embedded.db)


def _preflight(session: TargetSession, record: RunRecord, req: RunRequest) -> Preflight:
    scenario = req.scenario
    plan = RunPlan(
        run_id=session.run_id, scenario=scenario.name,
        # Every scheduled request, the probes and cleanup, with a margin for retries.
        estimated_calls=int(scenario.rate * scenario.phases.total_s * 1.1) + 100,
        allow_production=req.allow_production,
        rate=scenario.rate if scenario.workload else 0.0,
        duration_s=scenario.phases.total_s, users=scenario.users, mix=dict(scenario.mix),
        probe_rate=scenario.probe_rate,
        over_quota=req.over_quota,
    )
    found = session.preflight(plan, [p for p, _ in record.probes if p.run is None],
                              req.fixtures, req.load_state,
                              fixtures_given=req.fixtures_given)
    record.target.platform = found.platform
    record.target.platform_version = found.version
    record.target.preflight = found.facts
    record.gated = found.gated
    fixtures = session.target.fixture_hash or found.loaded_fixtures
    record.fixtures = Fixtures(manifest_sha256=fixtures, keyspace=found.keyspace, reason=None
                               if fixtures else "the target does not report which fixture "
                               "profile it holds")
    return found


def _planned(req: RunRequest, record: RunRecord, found: Preflight, say: Say) -> RunRequest:
    """The run at the rate and users the platform's quotas allow (a vendor's rate plan)."""
    raw = (found.facts or {}).get("rate_plan")
    if not isinstance(raw, dict):
        return req
    plan = RatePlan.from_json(raw)
    say(f"rate plan: {plan.summary()}")
    if plan.action != "scaled":
        return req
    scenario = replace(req.scenario, rate=round(plan.allowed, 6),
                       users=max(min(plan.users, req.scenario.users), 1))
    record.scenario = scenario
    return replace(req, scenario=scenario)


def _generator_config(req: RunRequest, record: RunRecord, found: Preflight,
                      url: str, say: Say) -> dict[str, Any]:
    config = driver_config(req.scenario, url, found.keyspace_json, req.workers,
                           probes=_driver_probes(req.scenario, record))
    config["run_id"] = record.provenance.run_id
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
    return config


def _load(req: RunRequest, record: RunRecord, found: Preflight, resolved: ResolvedTarget,
          path: Path, say: Say, on_interval: Listener | None) -> Outcome:
    """Calibrate, then run the workload (a probe-only scenario sends none)."""
    scenario = req.scenario
    if not scenario.workload:
        return Outcome(Accumulator(_phases(scenario)), done=True)
    log_path = path.with_suffix(".log")
    cpus = resolved.cpus.generator if resolved.cpus is not None else None
    if req.calibrate and scheme_of(req.target) != "noop":
        record.overhead = calibrate(scenario, log_path, say, cpus)
    config = _generator_config(req, record, found, resolved.url, say)
    say(f"running {scenario.name} ({scenario.profile}): {scenario.users} users, "
        f"{scenario.rate:g} req/s for {config['total_s']:g} s against "
        f"{redact_url(req.target)}")
    def checkpoint(so_far: Outcome) -> None:
        write_result(path, assemble(record, so_far, final=False))

    hooks = Hooks(on_interval=on_interval, target_alive=resolved.alive,
                  checkpoint=checkpoint, sampler=record.sampler)
    outcome = drive(config, log_path, hooks, env=resolved.env, cpus=cpus)
    if record.overhead is not None and outcome.done and not outcome.interrupted:
        record.overhead = with_drift(record.overhead, calibrate(scenario, log_path, say, cpus))
    return outcome


def _probe(session: TargetSession, record: RunRecord, outcome: Outcome) -> None:
    """The harness-side probes: engines first, then the capability probes."""
    chosen = [(p, o) for p, o in record.probes if p.run is not None]
    try:
        for section, label in (("engines", "engines"), ("probes", "capabilities")):
            found = session.probe([(p, o) for p, o in chosen if p.trigger[0] == section],
                                  label)
            record.probed.dimensions.update(found.dimensions)
            record.probed.capabilities.update(found.capabilities)
    except KeyboardInterrupt as exc:
        outcome.interrupted = True
        outcome.abort(stop_reason(exc))


def _cleanup(session: TargetSession, record: RunRecord, req: RunRequest) -> None:
    try:
        record.target.cleanup = {"deleted": session.cleanup()}
    except CrmBenchError as exc:
        record.target.cleanup = {
            "error": str(exc),
            "retry": f"crmbench cleanup --target {redact_url(req.target)} "
                     f"--run-id {session.run_id}",
        }


def _finish(path: Path, record: RunRecord, outcome: Outcome) -> RunReport:
    model = assemble(record, outcome, final=True)
    result = to_builtins(model)
    write_result(path, result)
    code = outcome.exit_code
    if code == 0 and (not model.complete or not model.valid):
        code = 3
    return RunReport(path, result, code, model)


def run(req: RunRequest, say: Say, on_interval: Listener | None = None) -> RunReport:
    """Run a scenario against a target and write its result file.

    The file exists from the start, marked incomplete until the run ends; a stop by signal
    at any point (calibration, load, probes) ends the run in order with the signal named.
    """
    scenario = req.scenario
    run_id = uuid.uuid4().hex[:12]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = req.out / (f"{stamp}-{scenario.name}-{scheme_of(req.target).replace('+', '-')}-"
                      f"{scenario.profile}-{run_id}.json")
    record = _record(req, run_id, path.with_suffix(".log"))
    record.probes = _chosen(scenario)
    current = [Outcome(Accumulator(_phases(scenario)))]
    _first_write(path, assemble(record, current[0], final=False))
    try:
        _run_target(req, record, path, say, on_interval, current)
    except KeyboardInterrupt as exc:
        current[0].interrupted = True
        current[0].abort(stop_reason(exc))
    except CrmBenchError as exc:
        # The run could not go on (refused target, bad fixtures...): its file says why,
        # rather than reading as a run that was killed.
        current[0].abort(str(exc), exc.exit_code)
        _finish(path, record, current[0])
        raise
    return _finish(path, record, current[0])


# Below this much free space in the output folder a run refuses to start: a standard run's
# result, log and checkpoints take a few MB.
MIN_FREE_BYTES = 64 * 1024 * 1024


def _first_write(path: Path, result: RunResult) -> None:
    """Write the incomplete result before anything runs; an unusable folder stops here."""
    where = path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(where).free
        if free < MIN_FREE_BYTES:
            raise UserError(f"output folder {where} has {free / 2**20:.0f} MiB free; a run needs "
                            f"at least {MIN_FREE_BYTES // 2**20} MiB: free space or use --out")
        write_result(path, result)
    except OSError as exc:
        raise UserError(f"cannot write results into {where}: {exc.strerror or exc}; "
                        "choose another folder with --out") from exc


def _run_target(req: RunRequest, record: RunRecord, path: Path, say: Say,
                on_interval: Listener | None, current: list[Outcome]) -> None:
    """Reach the target, send the load, probe, clean up; ``current`` holds the outcome."""
    scenario = req.scenario
    # SLA probes move the embedded CRM's clock instead of waiting hours.
    with resolve_target(req.target, req.fixtures, say, path.with_suffix(".server.log"),
                        test_clock=bool(scenario.engines.get("sla")), pin=req.pin,
                        generators=req.workers) as resolved:
        _watch_server(record, req, resolved)
        if resolved.cpus is not None:
            record.target.cpus = resolved.cpus.to_json()
        session = TargetSession(resolved, record.provenance.run_id, say)
        try:
            found = _preflight(session, record, req)
        except TargetUnreachable as exc:
            # Nothing was measured; the result says why, for reports to show.
            with suppress(CrmBenchError, AttributeError):
                record.target.platform = platform_of(resolved.url)
            say(f"not measured: {exc}")
            current[0] = Outcome(Accumulator(_phases(scenario)), abort_reason=str(exc),
                                 exit_code=exc.exit_code)
            return
        req = _planned(req, record, found, say)
        current[0] = outcome = _load(req, record, found, resolved, path, say, on_interval)
        if outcome.done and not outcome.interrupted:
            _probe(session, record, outcome)
        if found.facts is not None:
            _cleanup(session, record, req)


__all__ = ["CrmBenchError", "Listener", "RunReport", "RunRequest", "UserError", "calibrate",
           "check_target_url", "run"]
