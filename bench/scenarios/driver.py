"""Load-generator process: Locust used as a library, started by the harness.

It runs in a process of its own so that gevent's monkey-patching never touches the
harness. Every second it writes one JSON line on stdout: per phase and operation, the
HDR histograms (intended-start and actual-start latency) of the samples taken from
Locust's request hook, status counts, late sends, the process's CPU and the gevent loop
lag. Roles: ``local`` (users in this process), ``master`` (spawns or awaits workers and
forwards their lines) and ``worker``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import psutil  # noqa: E402
from locust import User, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from bench.adapters.base import GeneratorSettings, Keyspace, Realtime, Status  # noqa: E402
from bench.adapters.registry import create_adapter  # noqa: E402
from bench.adapters.timing import Sample, timed_call  # noqa: E402
from bench.measure.hdr import LatencyHistogram  # noqa: E402
from bench.measure.schedule import GeventAlarm, Pacer  # noqa: E402
from bench.measure.validity import GeventLagMonitor  # noqa: E402
from bench.probes.inrun import GRACE_S, ProbeConfig, ProbeSet  # noqa: E402
from bench.scenarios.mixed import AnswerCheck, MixedWorkload  # noqa: E402

NS = 1_000_000_000
log = logging.getLogger("crmbench.driver")


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@dataclass
class OpStats:
    response: LatencyHistogram = field(default_factory=LatencyHistogram)
    service: LatencyHistogram = field(default_factory=LatencyHistogram)
    statuses: Counter[str] = field(default_factory=Counter)
    late: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "response": self.response.encode(),
            "service": self.service.encode(),
            "statuses": dict(self.statuses),
            "late": self.late,
        }


class Recorder:
    """Collects samples by the phase of their intended send time; swapped every second."""

    def __init__(self, config: dict[str, Any], t0_ns: int) -> None:
        phases = config["phases"]
        self.t0_ns = t0_ns
        self.bounds = [
            ("warmup", t0_ns + int(phases["warmup_s"] * NS)),
            ("measure", t0_ns + int((phases["warmup_s"] + phases["measure_s"]) * NS)),
            ("cooldown", t0_ns + int(
                (phases["warmup_s"] + phases["measure_s"] + phases["cooldown_s"]) * NS)),
        ]
        self.tolerance_ns = int(config["late_tolerance_ms"] * 1_000_000)
        self.ops: dict[str, dict[str, OpStats]] = {}
        self.sent: Counter[str] = Counter()
        # Built by the ticker between sends: two empty histograms take about 0.2 ms,
        # which on a request's path would delay every user due meanwhile.
        self.spares: list[OpStats] = []

    def phase_of(self, ns: int) -> str:
        for name, end in self.bounds:
            if ns < end:
                return name
        return "after"

    def on_request(self, context: dict[str, Any] | None = None, **_kw: Any) -> None:
        sample: Sample | None = (context or {}).get("sample")
        if sample is None:
            return
        phase = self.phase_of(sample.intended_ns)
        stats = self.ops.setdefault(phase, {}).get(sample.op)
        if stats is None:
            stats = self.ops[phase][sample.op] = self.spares.pop() if self.spares else OpStats()
        stats.response.record_ns(sample.response_ns)
        stats.service.record_ns(sample.service_ns)
        stats.statuses[sample.status.value] += 1
        if sample.start_ns - sample.intended_ns > self.tolerance_ns:
            stats.late += 1
        self.sent[self.phase_of(sample.start_ns)] += 1

    def swap(self) -> tuple[dict[str, dict[str, OpStats]], Counter[str]]:
        ops, sent = self.ops, self.sent
        self.ops, self.sent = {}, Counter()
        return ops, sent


class Ticker:
    """Writes (or forwards) one interval message per second."""

    def __init__(self, recorder: Recorder, worker: str, send: Any = emit) -> None:
        self.recorder = recorder
        self.probes: ProbeSet | None = STATE.get("probes")
        if self.probes is not None:
            self.probes.phase_of_set(recorder.phase_of)
        self.worker = worker
        self.send = send
        self.proc = psutil.Process()
        self.lag = GeventLagMonitor(0.01)
        self._cpu = self._cpu_s()
        self._wall = time.perf_counter()
        self._spare_lag = LatencyHistogram()
        mix = STATE.get("config", {}).get("mix", {})
        recorder.spares.extend(OpStats() for _ in range(len(mix) + 2))

    def _cpu_s(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        self.lag.start()

    def flush(self) -> None:
        ops, sent = self.recorder.swap()
        t = (time.perf_counter_ns() - self.recorder.t0_ns) / NS
        cpu, wall = self._cpu_s(), time.perf_counter()
        cpu_pct = 100.0 * (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        lag, self.lag.histogram = self.lag.histogram, self._spare_lag
        probes = self.probes.swap() if self.probes is not None else {}
        phases: dict[str, dict[str, Any]] = {}
        for ph, d in ops.items():
            encoded = phases[ph] = {}
            for op, stats in d.items():
                encoded[op] = stats.to_json()
                # Each op's histograms take ~0.1 ms to encode: users due meanwhile send
                # in between instead of after the whole interval.
                gevent.sleep(0)
        self.send({
            "type": "interval",
            "worker": self.worker,
            "t": t,
            "phases": phases,
            "sent": dict(sent),
            "cpu_pct": round(cpu_pct, 2),
            "lag": lag.encode(),
            "probes": probes,
        })
        self._restock(sum(len(d) for d in ops.values()))

    def _restock(self, used: int) -> None:
        """Build the next interval's histograms now, one at a time between users' sends."""
        self._spare_lag = LatencyHistogram()
        spares = self.recorder.spares
        while len(spares) < used + 2:
            gevent.sleep(0)
            spares.append(OpStats())

    def run_until(self, end_ns: int) -> None:
        k = 1
        while True:
            tick = self.recorder.t0_ns + k * NS
            now = time.perf_counter_ns()
            if tick > end_ns:
                if end_ns > now:
                    gevent.sleep((end_ns - now) / NS)
                return
            if tick > now:
                gevent.sleep((tick - now) / NS)
            self.flush()
            k += 1


# Process-wide state read by the Locust users (one workload per process).
STATE: dict[str, Any] = {}
_user_ids = itertools.count()


class CrmUser(User):
    """One simulated user: a de-phased open-model pacer over the mixed workload."""

    # Pacing is ours; Locust's wait_time is never used.
    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        cfg = STATE["config"]
        uid = next(_user_ids)
        rng = random.Random(cfg["seed"] * 1_000_003 + uid + STATE["worker_index"] * 7919)
        self.pacer = Pacer(cfg["period_s"], rng, cfg["arrival"])

    @task
    def send_paced(self) -> None:
        workload: MixedWorkload = STATE["workload"]
        check: AnswerCheck = STATE["check"]
        sleep_until = STATE["alarm"].sleep_until
        fire = self.environment.events.request.fire
        while True:
            intended = self.pacer.next_intended()
            sleep_until(intended)
            op, fn, args = workload.next()
            sample = timed_call(op, intended, fn, *args)
            if check.due(op, sample.status):
                # Read back off this user's path; the call counts once the answer is known.
                gevent.spawn(_checked, fire, check, sample, args)
                continue
            _fire(fire, sample)


def _fire(fire: Any, sample: Sample) -> None:
    fire(
        request_type="crm", name=sample.op, response_time=sample.service_ns / 1e6,
        response_length=0,
        exception=None if sample.status is Status.ok else RuntimeError(sample.status),
        context={"sample": sample},
    )


def _checked(fire: Any, check: AnswerCheck, sample: Sample, args: tuple[Any, ...]) -> None:
    """A sampled call's answer read back: one that does not check out counts as an error."""
    try:
        ok = check.verify(sample.op, args)
    except Exception:
        log.debug("reading back %s raised", sample.op, exc_info=True)
        ok = False
    if not ok:
        sample = Sample(sample.op, Status.error, sample.intended_ns, sample.start_ns,
                        sample.end_ns)
    _fire(fire, sample)


def _prepare(config: dict[str, Any], worker_index: int, users_here: int) -> None:
    """Build, tune and open this process's adapter and workload from the run configuration.

    The keyspace comes with the configuration (mapped once by the harness); only when
    it is missing, or holds bare counts for an adapter whose keys are not 1..n, does the
    adapter list its keys here.
    """
    adapter = create_adapter(config["target"], run_id=config.get("run_id"))
    probe_cfg = config.get("probes") or {}
    alarm: GeventAlarm = STATE.get("alarm") or GeventAlarm()
    adapter.prepare_generator(GeneratorSettings(
        concurrency=max(users_here, 1) + (60 if probe_cfg else 0),
        sleep_until=alarm.sleep_until, processes=max(int(config["workers"]), 1),
    ))
    adapter.open()
    ks = config["keyspace"]
    keyspace = Keyspace.from_json(ks) if ks else None
    if keyspace is None or (keyspace.keys is None and not adapter.sequential_keys):
        keyspace = adapter.keyspace()
    STATE["probe_error"] = None
    STATE["probes"] = None
    if probe_cfg:
        if isinstance(adapter, Realtime):
            share = max(config["workers"], 1)
            STATE["probes"] = ProbeSet(
                adapter, keyspace,
                ProbeConfig(
                    agent_rate=float(probe_cfg.get("agent_rate", 0)) / share,
                    event_rate=float(probe_cfg.get("event_rate", 0)) / share,
                    event_batch=int(probe_cfg.get("event_batch", 10)),
                    batch_share=float(probe_cfg.get("batch_share", 0.5)),
                ),
                lambda ns: "pending",
                tag=f"{config.get('run_id', 'run')}-w{worker_index}",
                seed=config["seed"] + 101 * worker_index,
            )
        else:
            STATE["probe_error"] = (
                f"the {adapter.name} adapter does not implement the agent and event verbs"
            )
    STATE.update(
        config=config,
        adapter=adapter,
        alarm=alarm,
        worker_index=worker_index,
        check=AnswerCheck(adapter),
        workload=MixedWorkload(
            adapter, keyspace, config["mix"], seed=config["seed"] + worker_index,
            distribution=config["key_distribution"], exponent=config["zipf_exponent"],
            namespace=f"{config.get('run_id', 'run')}-w{worker_index}",
        ),
    )


def _install_stop_handlers(stop: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stop)


def _quiet_gc() -> None:
    # Long-lived setup objects leave the collector's view and young-generation
    # collections get rarer: full collections otherwise show up as latency spikes.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_local(config: dict[str, Any]) -> int:
    """Users in this process; intervals straight to stdout."""
    _prepare(config, 0, config["users"])
    _quiet_gc()
    env = Environment(user_classes=[CrmUser])
    runner = env.create_local_runner()
    t0 = time.perf_counter_ns()
    recorder = Recorder(config, t0)
    env.events.request.add_listener(recorder.on_request)  # type: ignore[no-untyped-call]
    ticker = Ticker(recorder, "local")
    ticker.start()
    interrupted = gevent.event.Event()
    _install_stop_handlers(interrupted.set)
    emit({"type": "started", "workers": 1})
    runner.start(config["users"], spawn_rate=config["users"], wait=False)
    probes: ProbeSet | None = STATE["probes"]
    if probes is not None:
        probes.start(t0)
    total_ns = t0 + int(config["total_s"] * NS)
    waiter = gevent.spawn(ticker.run_until, total_ns)
    gevent.wait([waiter, interrupted], count=1)
    runner.quit()
    _finish_probes(probes, ticker, emit, "local")
    STATE["adapter"].close()
    emit({"type": "done", "interrupted": interrupted.is_set()})
    return 0


def _finish_probes(
    probes: ProbeSet | None, ticker: Ticker, send: Any, worker: str
) -> None:
    """Stop sending, wait for outcomes in flight, then report what never arrived."""
    if probes is not None:
        probes.stop_sending()
        probes.drain()
    ticker.flush()
    final = probes.final() if probes is not None else {}
    if probes is not None:
        probes.stop()
    if probes is not None or STATE.get("probe_error"):
        send({"type": "probe_final", "worker": worker, "probes": final,
              "error": STATE.get("probe_error")})


def run_worker(master_host: str, master_port: int, index: int) -> int:
    """A worker: receives the configuration from the master, runs its share of users."""
    env = Environment(user_classes=[CrmUser])
    runner = env.create_worker_runner(master_host, master_port)

    def on_config(msg: Any, **_kw: Any) -> None:
        config = msg.data
        _prepare(config, index, max(1, config["users"] // max(config["workers"], 1)))
        _quiet_gc()
        recorder = Recorder(config, time.perf_counter_ns())
        env.events.request.add_listener(recorder.on_request)  # type: ignore[no-untyped-call]

        def forward(message: dict[str, Any]) -> None:
            runner.send_message("crmbench_interval", message)

        ticker = Ticker(recorder, f"worker-{index}-{os.getpid()}", forward)
        ticker.start()

        probes: ProbeSet | None = STATE["probes"]
        if probes is not None:
            probes.start(recorder.t0_ns)

        def tick_then_flush() -> None:
            ticker.run_until(recorder.t0_ns + int(config["total_s"] * NS))
            _finish_probes(probes, ticker, forward, ticker.worker)

        gevent.spawn(tick_then_flush)

    runner.register_message("crmbench_config", on_config)
    _install_stop_handlers(lambda: runner.quit())
    runner.greenlet.join()
    return 0


def run_master(config: dict[str, Any]) -> int:
    """The master: starts local workers (or waits for remote ones) and forwards intervals."""
    env = Environment(user_classes=[CrmUser])
    bind_host = config.get("master_bind_host", "127.0.0.1")
    port = int(config.get("master_port", 5557))
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=port)
    runner.register_message("crmbench_interval", lambda msg, **_kw: emit(msg.data))
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(int(config.get("spawn_workers", 0))):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.driver", "--role", "worker",
             "--master-host", "127.0.0.1", "--master-port", str(port), "--index", str(i)],
            stdin=subprocess.DEVNULL,
        ))
    interrupted = gevent.event.Event()
    _install_stop_handlers(interrupted.set)
    deadline = time.monotonic() + float(config.get("worker_wait_s", 60))
    while runner.worker_count < config["workers"]:
        if interrupted.is_set() or time.monotonic() > deadline:
            emit({"type": "error", "message":
                  f"only {runner.worker_count} of {config['workers']} workers connected"})
            runner.quit()
            for p in procs:
                p.terminate()
            return 4
        gevent.sleep(0.1)
    runner.send_message("crmbench_config", config)
    gevent.sleep(0.2)
    emit({"type": "started", "workers": runner.worker_count})
    runner.start(config["users"], spawn_rate=config["users"], wait=False)
    # A little more than the run, so that the workers' last intervals (and the outcomes
    # their probes still wait for) arrive.
    grace = GRACE_S + 1.0 if config.get("probes") else 0.0
    interrupted.wait(timeout=config["total_s"] + 1.5 + grace)
    runner.quit()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    emit({"type": "done", "interrupted": interrupted.is_set()})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.driver")
    parser.add_argument("--role", choices=["local", "master", "worker"], default="local")
    parser.add_argument("--config", help="JSON run configuration (local and master roles)")
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=5557)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.role == "worker":
        return run_worker(args.master_host, args.master_port, args.index)
    with open(args.config, encoding="utf-8") as fh:
        config = json.load(fh)
    try:
        if args.role == "master":
            return run_master(config)
        return run_local(config)
    except Exception as exc:
        from bench.errors import CrmBenchError

        if isinstance(exc, CrmBenchError):
            emit({"type": "error", "message": str(exc), "exit_code": exc.exit_code})
            return exc.exit_code
        raise


if __name__ == "__main__":
    sys.exit(main())
