"""Asynchronous probes that run beside the mixed workload in the load generator.

``agent``: lead-intake runs started at a fixed rate; latency is trigger -> the
``agent.completed`` / ``agent.escalated`` message. ``events``: behavioural events sent at
a fixed rate, half one by one and half in batches; delay is send -> the event's
``profile.updated`` message. Both outcomes are observed by this process's own subscriber
to the target's change stream, so send and receipt are stamped on one clock. Runs in
the gevent-patched driver process only.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import EventInput, Keyspace, Realtime, Status
from bench.measure.hdr import LatencyHistogram
from bench.measure.schedule import Pacer
from bench.probes.registry import Probe, register
from bench.scenarios.mixed import KeyChooser

NS = 1_000_000_000
EVENT_TYPES = ("page_view", "email_open", "download", "support_call", "pricing_view", "purchase")
EVENT_WEIGHTS = (40, 25, 10, 8, 12, 5)
# How long after the run a pending outcome may still arrive before it counts as lost.
GRACE_S = 5.0
STEP_SAMPLE = 0.1
SERVER_REPORTED = ("server-reported: the duration_ms of each step in the platform's decision "
                   "log, not observed by the harness")

PhaseOf = Callable[[int], str]


@dataclass
class ProbeStats:
    delay: LatencyHistogram = field(default_factory=LatencyHistogram)
    counts: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        # Encoded once here, at the boundary of the load-generator process.
        return {"delay": self.delay.encode(), "counts": dict(self.counts)}


class _Probe:
    """Shared bookkeeping: pending sends, early arrivals, per-phase stats."""

    name = "probe"

    def __init__(self, phase_of: PhaseOf) -> None:
        self.phase_of = phase_of
        self.pending: dict[str, int] = {}
        self.early: dict[str, tuple[int, str]] = {}
        self.stats: dict[str, ProbeStats] = {}
        self.totals: Counter[str] = Counter()

    def _stats(self, phase: str) -> ProbeStats:
        got = self.stats.get(phase)
        if got is None:
            got = self.stats[phase] = ProbeStats()
        return got

    def sent(self, key: str, t_send: int, status: Status) -> None:
        phase = self.phase_of(t_send)
        stats = self._stats(phase)
        stats.counts["sent"] += 1
        if status is not Status.ok:
            stats.counts[f"send_{status.value}"] += 1
            return
        stats.counts["acked"] += 1
        self.totals[f"acked_{phase}"] += 1
        arrived = self.early.pop(key, None)
        if arrived is None:
            self.pending[key] = t_send
        else:
            self._done(key, t_send, arrived[0], arrived[1])

    def received(self, key: str, received_ns: int, outcome: str) -> None:
        t_send = self.pending.pop(key, None)
        if t_send is None:
            self.early[key] = (received_ns, outcome)
            return
        self._done(key, t_send, received_ns, outcome)

    def _done(self, key: str, t_send: int, received_ns: int, outcome: str) -> None:
        phase = self.phase_of(t_send)
        stats = self._stats(phase)
        stats.delay.record_ns(max(received_ns - t_send, 0))
        stats.counts[outcome] += 1
        self.totals[f"matched_{phase}"] += 1

    def swap(self) -> dict[str, Any]:
        stats, self.stats = self.stats, {}
        return {phase: s.to_json() for phase, s in stats.items()}

    def final(self) -> dict[str, Any]:
        lost = Counter(self.phase_of(t) for t in self.pending.values())
        return {"lost": dict(lost), "lost_total": len(self.pending)}


class AgentProbe(_Probe):
    name = "agent"

    def __init__(self, phase_of: PhaseOf, adapter: Realtime) -> None:
        super().__init__(phase_of)
        self.adapter = adapter
        self.steps: dict[str, LatencyHistogram] = {}
        self._rng = random.Random(7)

    def _done(self, key: str, t_send: int, received_ns: int, outcome: str) -> None:
        super()._done(key, t_send, received_ns, outcome)
        if self.phase_of(t_send) == "measure" and self._rng.random() < STEP_SAMPLE:
            gevent.spawn(self._fetch_steps, key)

    def _fetch_steps(self, run_id: str) -> None:
        status, run = self.adapter.agent_run(run_id)
        if status is not Status.ok or run is None:
            return
        for step in run.get("decision_log") or []:
            hist = self.steps.setdefault(str(step.get("step")), LatencyHistogram())
            hist.record_ns(int(float(step.get("duration_ms", 0.0)) * 1_000_000))

    def final(self) -> dict[str, Any]:
        out = super().final()
        out["steps"] = {name: h.encode() for name, h in self.steps.items()}
        return out


class EventProbe(_Probe):
    name = "events"


@dataclass
class ProbeConfig:
    agent_rate: float = 0.0
    event_rate: float = 0.0
    event_batch: int = 10
    batch_share: float = 0.5


class ProbeSet:
    """Starts the probes' senders and subscribers; reports like the workload recorder."""

    def __init__(
        self, adapter: Realtime, keyspace: Keyspace, cfg: ProbeConfig, phase_of: PhaseOf,
        *, tag: str, seed: int,
    ) -> None:
        self.adapter = adapter
        self.keyspace = keyspace
        self.cfg = cfg
        self.tag = tag
        self.seed = seed
        self.probes: dict[str, _Probe] = {}
        if cfg.agent_rate > 0:
            self.probes["agent"] = AgentProbe(phase_of, adapter)
        if cfg.event_rate > 0:
            self.probes["events"] = EventProbe(phase_of)
        self._senders: list[gevent.Greenlet] = []
        self._subscribers: list[gevent.Greenlet] = []
        self._serial = 0
        self.reconnects = 0
        self._customers = KeyChooser(keyspace.ids("customers"), seed + 11)
        self._leads = KeyChooser(keyspace.ids("leads"), seed + 13, distribution="uniform")

    def phase_of_set(self, phase_of: PhaseOf) -> None:
        """Attribute outcomes to the workload's phases (known once the run starts)."""
        for probe in self.probes.values():
            probe.phase_of = phase_of

    def start(self, start_ns: int) -> None:
        if "agent" in self.probes:
            self._subscribe(["agent.completed", "agent.escalated"], self._on_agent)
            self._spawn_senders(10, self.cfg.agent_rate, self._send_agent, start_ns)
        if "events" in self.probes:
            self._subscribe(["profile.updated"], self._on_profile)
            batch = max(self.cfg.event_batch, 1)
            single_rate = self.cfg.event_rate * (1 - self.cfg.batch_share)
            batch_rate = self.cfg.event_rate * self.cfg.batch_share / batch
            if single_rate > 0:
                self._spawn_senders(25, single_rate, lambda: self._send_events(1), start_ns)
            if batch_rate > 0:
                self._spawn_senders(5, batch_rate, lambda: self._send_events(batch), start_ns)
        # Let the subscriptions open before the first sends.
        gevent.sleep(0.2)

    def stop_sending(self) -> None:
        gevent.killall(self._senders, block=True, timeout=2)
        self._senders.clear()

    def stop(self) -> None:
        self.stop_sending()
        gevent.killall(self._subscribers, block=True, timeout=2)
        self._subscribers.clear()

    def _subscribe(self, types: list[str], handle: Callable[[Any], None]) -> None:
        def loop() -> None:
            last: int | None = None
            while True:
                try:
                    # After a drop, resume after the last message seen: nothing is lost.
                    for msg in self.adapter.subscribe(types, after=last):
                        last = max(last or 0, msg.seq)
                        handle(msg)
                except gevent.GreenletExit:
                    raise
                except Exception:
                    self.reconnects += 1
                gevent.sleep(0.1)

        self._subscribers.append(gevent.spawn(loop))

    def _spawn_senders(
        self, count: int, rate: float, send: Callable[[], None], start_ns: int
    ) -> None:
        rng = random.Random(self.seed)
        for _ in range(count):
            pacer = Pacer(count / rate, rng, "pacing", start_ns=start_ns)

            def loop(pacer: Pacer = pacer) -> None:
                while True:
                    intended = pacer.next_intended()
                    delay = intended - time.perf_counter_ns()
                    if delay > 0:
                        gevent.sleep(delay / NS)
                    send()

            self._senders.append(gevent.spawn(loop))

    def _send_agent(self) -> None:
        probe = self.probes["agent"]
        # An empty lead keyspace still lets the platform answer (not found) on its clock.
        lead = self._leads() if self._leads.n else 1
        t_send = time.perf_counter_ns()
        status, run_id = self.adapter.start_agent_run(lead)
        if status is Status.ok and run_id is None:
            status = Status.error
        self._serial += 1
        probe.sent(run_id or f"failed-{self.tag}-{self._serial}", t_send, status)

    def _on_agent(self, msg: Any) -> None:
        run_id = str(msg.payload.get("run_id", ""))
        outcome = "completed" if msg.type == "agent.completed" else "escalated"
        self.probes["agent"].received(run_id, msg.received_ns, outcome)

    def _send_events(self, n: int) -> None:
        probe = self.probes["events"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        events = []
        for _ in range(n):
            self._serial += 1
            kind = random.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
            props: dict[str, Any] = {"source": "crmbench"}
            if kind == "pricing_view":
                props["discount"] = random.random() < 0.4
            events.append(EventInput(
                customer_id=self._customers(), type=kind, occurred_at=now,
                idempotency_key=f"{self.tag}-{self._serial}", properties=props,
            ))
        t_send = time.perf_counter_ns()
        status = self.adapter.send_events(events)
        for event in events:
            probe.sent(event.idempotency_key, t_send, status)

    def _on_profile(self, msg: Any) -> None:
        key = str(msg.payload.get("idempotency_key", ""))
        if key.startswith(self.tag):
            self.probes["events"].received(key, msg.received_ns, "updated")

    def swap(self) -> dict[str, Any]:
        return {name: p.swap() for name, p in self.probes.items()}

    def drain(self) -> None:
        """Wait (bounded) for outcomes still on their way."""
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(p.pending for p in self.probes.values()):
            gevent.sleep(0.05)

    def final(self) -> dict[str, Any]:
        return {name: {**p.final(), "reconnects": self.reconnects}
                for name, p in self.probes.items()}


class AgentLoad(msgspec.Struct, frozen=True, rename={"rate": "agent_rate"}):
    """``[probes]`` settings of agent latency: lead-intake runs per second."""

    rate: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = 0.0


class EventLoad(msgspec.Struct, frozen=True, rename={
        "rate": "event_rate", "batch": "event_batch"}):
    """``[probes]`` settings of event delay: events per second, batch size and share."""

    rate: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 0.0
    batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    batch_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5


AGENT_LATENCY = register(Probe(
    name="agent_latency", trigger=("probes", "agent_rate"), needs=(Realtime,),
    options=AgentLoad, dimension="agent.latency", result_key="agent_latency", stream="agent",
))
EVENT_DELAY = register(Probe(
    name="event_delay", trigger=("probes", "event_rate"), needs=(Realtime,),
    options=EventLoad, dimension="cdp.event_delay", result_key="event_delay",
    stream="events",
))


@dataclass
class StreamTotals:
    """What the load generator reported of one in-run probe, merged over its processes."""

    delay: dict[str, LatencyHistogram] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    lost: Counter[str] = field(default_factory=Counter)
    steps: dict[str, LatencyHistogram] = field(default_factory=dict)
    reconnects: int = 0

    def add_interval(self, phases: dict[str, Any]) -> None:
        for phase, data in phases.items():
            self.delay.setdefault(phase, LatencyHistogram()).add(
                LatencyHistogram.decode(data["delay"]))
            self.counts.setdefault(phase, Counter()).update(data["counts"])

    def add_final(self, final: dict[str, Any]) -> None:
        self.lost.update(final.get("lost", {}))
        self.reconnects += int(final.get("reconnects", 0))
        for step, enc in (final.get("steps") or {}).items():
            self.steps.setdefault(step, LatencyHistogram()).add(LatencyHistogram.decode(enc))


@dataclass(frozen=True)
class RunState:
    """How the run that carried the in-run probes ended."""

    complete: bool
    measure_s: float
    finals: int
    errors: tuple[str, ...] = ()


def dimension(probe: Probe[Any], rate: float, totals: StreamTotals,
              state: RunState) -> dict[str, Any]:
    """The result's entry of an in-run probe: figures, how they were observed, verdict."""
    dim: dict[str, Any] = {"capability": probe.dimension, "unit": "ms", "rate": rate}
    if state.errors:
        return {**dim, "status": "not-measured", "reason": state.errors[0]}
    hist = totals.delay.get("measure", LatencyHistogram())
    counts = totals.counts.get("measure", Counter())
    summary = hist.summary()
    sent = counts.get("sent", 0)
    dim.update(
        value=summary["p50"], p50=summary["p50"], p95=summary["p95"], p99=summary["p99"],
        p99_9=summary["p99_9"], max=summary["max"], mean=summary["mean"],
        count=summary["count"], histogram=hist, sent=sent, acked=counts.get("acked", 0),
        send_failures=sent - counts.get("acked", 0),
        achieved_rate=round(sent / state.measure_s, 3) if state.measure_s else 0.0,
        lost=totals.lost.get("measure", 0), lost_total=sum(totals.lost.values()),
        lost_by_phase=dict(totals.lost), stream_reconnects=totals.reconnects,
        outcomes={k: v for k, v in counts.items() if k not in ("sent", "acked")
                  and not k.startswith("send_")},
        observed_via="the harness's own subscription to the change stream (same clock)",
    )
    if probe is AGENT_LATENCY:
        # The platform's own duration_ms per step: its word, not the harness's clock.
        dim["breakdown"] = {step: h.summary() for step, h in totals.steps.items()}
        dim["breakdown_source"] = SERVER_REPORTED
    if not state.complete or state.finals == 0:
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
    return dim
