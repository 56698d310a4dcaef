"""The SLA probe: sla.granularity and breach-detection lag per level, and the SLA
capabilities, decided from what the harness observes at times it chose.

Every lag is real time on the harness's clock: a test clock (where the target has one) only
moves the SLA's time to a few real seconds before the deadline, and the rest is waited out.
Each level has a breach case (must breach, never before its deadline) and a met case (the
field filled, the stage moved, the first contact logged: must end met, never breach).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import ActivityInput, LeadInput, Realtime, Status, StreamMessage
from bench.adapters.engines import Engines
from bench.probes.registry import Findings, Probe, ProbeContext, register
from bench.probes.stream import STREAM_TIMEOUT_S, Listener
from bench.probes.verdict import Verdict, verdict

SLA_IDS = ("sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation")
LEVELS = ("field", "process", "action")
AT_RISK = 0.8
# After the breach of the breach case, how long a breach of the met case is still awaited.
GRACE_S = 0.5


class SlaOptions(msgspec.Struct, frozen=True, rename={
        "within_s": "sla_within_s", "real_time_s": "sla_real_time_s"}):
    """``[engines]`` settings: the SLA's time limit, and the real seconds before its deadline."""

    within_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # Real seconds waited before each deadline (at least the platform's ``min_sla_s``).
    real_time_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0


@dataclass
class _Plan:
    """The SLA's time limit, the real seconds left to its deadline and the clock used."""

    within: float
    real_s: float
    test_clock: bool


@dataclass
class _Case:
    """One probe record under an SLA, with what was read of it and when."""

    record: Any
    t0_ns: int  # before its create call
    t1_ns: int  # after it
    advanced: float = 0.0  # test-clock seconds moved since it was created
    readings: list[dict[str, Any]] = field(default_factory=list)

    def earliest_deadline_ns(self, plan: _Plan) -> int:
        return self.t0_ns + int((plan.within - self.advanced) * 1e9)


def _plan(adapter: Engines, options: SlaOptions) -> _Plan:
    floor = float(getattr(adapter, "min_sla_s", 0.0) or 0.0)
    real_s = max(options.real_time_s, floor)
    within = max(options.within_s or 3_600.0, floor)
    # The test clock must leave room for a reading in the at-risk window before real_s.
    if adapter.advance_clock(0) is Status.ok and within * (1 - AT_RISK) > 2 * real_s:
        return _Plan(within, real_s, True)
    return _Plan(max(options.within_s or real_s, floor), max(options.within_s or real_s, floor),
                 False)


def _definition(level: str, within_s: float) -> dict[str, Any]:
    base: dict[str, Any] = {"level": level, "within_s": within_s, "at_risk_fraction": AT_RISK,
                            "escalation": {"notify": "director"}}
    if level == "field":
        return {**base, "object": "lead", "field": "email"}
    if level == "process":
        return {**base, "object": "opportunity", "from_stage": "qualification",
                "to_stage": "proposal"}
    return {**base, "object": "lead", "action": "first_contact"}


def _create(adapter: Any, run_id: str, level: str, label: str) -> _Case | None:
    t0 = time.perf_counter_ns()
    if level == "process":
        status, rid = adapter.create_opportunity_record({
            "customer_id": 1, "owner_rep_id": 1, "name": f"crmbench probe {run_id} sla {label}",
            "stage": "qualification", "amount": 1000.0, "expected_close": "2030-01-01"})
    else:
        # The met case of first contact is contacted through its customer.
        status, rid = adapter.create_lead_record(LeadInput(
            company_name=f"crmbench probe {run_id} sla {level} {label}",
            contact_name="Probe Contact", region_id=1, source="referral",
            customer_id=1 if label == "met" else None, product_interest=[1]))
    t1 = time.perf_counter_ns()
    return _Case(rid, t0, t1) if status is Status.ok and rid is not None else None


def _meet(adapter: Any, level: str, case: _Case) -> Status:
    """Do what the level's SLA asks for, through the platform's ordinary verbs."""
    out: Status
    if level == "field":
        out = adapter.update_record("lead", case.record,
                                    {"email": "probe.met@crmbench.example"})[0]
    elif level == "process":
        out = adapter.update_opportunity_stage(case.record, "proposal")
    else:
        out = adapter.log_activity(ActivityInput(customer_id=1, type="call",
                                                 subject="crmbench probe first contact"))
    return out


def expected_statuses(case: _Case, plan: _Plan, r0_ns: int, r1_ns: int) -> set[str]:
    """The statuses an open instance may show to a reading sent at r0 and answered at r1."""
    lo = (r0_ns - case.t1_ns) / 1e9 + case.advanced
    hi = (r1_ns - case.t0_ns) / 1e9 + case.advanced
    out: set[str] = set()
    if lo < AT_RISK * plan.within:
        out.add("green")
    if hi >= AT_RISK * plan.within:
        out.add("yellow")  # also past T until the platform has detected the breach
    if hi >= plan.within:
        out.add("red")
    return out


def _read(adapter: Engines, sid: int, case: _Case, plan: _Plan, when: str) -> str | None:
    r0 = time.perf_counter_ns()
    _status, items = adapter.sla_instances(sid)
    r1 = time.perf_counter_ns()
    found = [str(i.get("status")) for i in items or [] if i.get("record_id") == case.record]
    shown = found[0] if len(found) == 1 else None
    allowed = {"met"} if when == "met" else expected_statuses(case, plan, r0, r1)
    if when == "breached":
        allowed = {"red"}
    case.readings.append({"at": when, "status": shown, "allowed": sorted(allowed),
                          "ok": shown in allowed})
    return shown


def _wait_deadline(adapter: Engines, plan: _Plan, cases: list[_Case], sid: int) -> None:
    """Read green, move (or wait) into the at-risk window, read yellow, go to real_s before T."""
    breach = cases[-1]
    _read(adapter, sid, breach, plan, "green")
    if plan.test_clock:
        step = AT_RISK * plan.within + (1 - AT_RISK) * plan.within / 4
        adapter.advance_clock(step)
        for c in cases:
            c.advanced += step
        _read(adapter, sid, breach, plan, "yellow")
        rest = plan.within - step - plan.real_s
        adapter.advance_clock(rest)
        for c in cases:
            c.advanced += rest
        return
    yellow_at = breach.t1_ns / 1e9 + (AT_RISK + (1 - AT_RISK) / 2) * plan.within
    gevent.sleep(max(0.0, yellow_at - time.perf_counter_ns() / 1e9))
    _read(adapter, sid, breach, plan, "yellow")


def _level(adapter: Any, run_id: str, level: str, plan: _Plan, listener: Listener
           ) -> tuple[dict[str, Any], Verdict, dict[str, Any] | None]:
    """One level: the met case, then the breach case, then the breach awaited in real time."""
    entry: dict[str, Any] = {"supported": False, "breach_lag_ms": None,
                             "clock": "test" if plan.test_clock else "real",
                             "within_s": plan.within, "real_s": plan.real_s}
    status, sla = adapter.create_sla(_definition(level, plan.within))
    if status is not Status.ok or not sla or "id" not in sla:
        return entry, verdict("fail", reason=f"defining it answered {status.value}"), None
    sid = int(sla["id"])
    met, breach = (_create(adapter, run_id, level, label) for label in ("met", "breach"))
    if met is None or breach is None:
        return entry, verdict("fail", reason="could not create the probe records"), None
    met_status = _meet(adapter, level, met)
    _wait_deadline(adapter, plan, [met, breach], sid)
    due_ns = breach.earliest_deadline_ns(plan)
    msg = listener.wait_for(_breach_of(sid, breach.record),
                            plan.real_s + STREAM_TIMEOUT_S, since_ns=breach.t0_ns)
    if msg is not None:
        gevent.sleep(GRACE_S)
        _read(adapter, sid, breach, plan, "breached")
    _read(adapter, sid, met, plan, "met")
    early_met = listener.find(_breach_of(sid, met.record), since_ns=met.t0_ns)
    escalated = listener.find(_escalation_of(sid, breach.record), since_ns=breach.t0_ns)
    lag = None if msg is None else round((msg.received_ns - due_ns) / 1e6, 3)
    evidence = {"object": "opportunity" if level == "process" else "lead",
                "clock": entry["clock"], "within_s": plan.within, "breach_lag_ms": lag,
                "met_case": {"action": met_status.value, "breached": early_met is not None,
                             "readings": met.readings},
                "breach_case": {"readings": breach.readings}}
    if msg is None:
        return entry, verdict("fail", evidence, "no breach message arrived"), None
    if lag is not None and lag < 0:
        return entry, verdict("fail", evidence, f"breach reported {-lag} ms before the "
                              "deadline"), None
    entry.update(supported=True, breach_lag_ms=lag, readings=breach.readings)
    problems = ([] if met_status is Status.ok else [f"meeting it answered {met_status.value}"])
    problems += ["the met case breached"] if early_met is not None else []
    problems += [] if met.readings[-1]["ok"] else [
        f"the met case shows {met.readings[-1]['status']}, not met"]
    return entry, verdict("fail" if problems else "pass", evidence,
                          "; ".join(problems)), (escalated.payload if escalated else None)


def _status_verdict(readings: dict[str, list[dict[str, Any]]]) -> Verdict:
    """Green, yellow and red each shown when expected, at every level that breached."""
    wrong = [f"{lv} {r['at']}: {r['status']} (expected {'/'.join(r['allowed'])})"
             for lv, rs in readings.items() for r in rs if not r["ok"]]
    shown = {r["status"] for rs in readings.values() for r in rs}
    if not readings:
        return verdict("fail", reason="no SLA level breached observably")
    if wrong or not {"green", "yellow", "red"} <= shown:
        return verdict("fail", readings, "; ".join(wrong) or "not all of green, yellow and red "
                       "were shown")
    return verdict("pass", readings)


def _escalation_verdict(escalated: dict[str, Any] | None) -> Verdict:
    notified = (escalated or {}).get("notified") or {}
    if notified.get("role") == "director" and notified.get("rep_id") is not None:
        return verdict("pass", escalated)
    return verdict("fail", escalated, "no escalation of the breached record to a director "
                   "was observed")


def probe_sla(adapter: Any, ctx: ProbeContext, options: SlaOptions) -> Findings:
    """sla.granularity, the breach lag per level (real time) and the SLA capabilities."""
    plan = _plan(adapter, options)
    dim: dict[str, Any] = {"capability": "sla.granularity", "unit": "level", "value": None,
                           "levels": {}, "clock": "test" if plan.test_clock else "real",
                           "lag_clock": "harness, real time"}
    caps: dict[str, Verdict] = {}
    readings: dict[str, list[dict[str, Any]]] = {}
    escalated: dict[str, Any] | None = None
    listener = Listener(adapter, ["sla.breached", "sla.escalated"])
    try:
        for level in LEVELS:
            entry, caps[f"sla.{level}"], esc = _level(adapter, ctx.run_id, level, plan,
                                                      listener)
            dim["levels"][level] = entry
            if entry["supported"]:
                readings[level] = entry.pop("readings")
                ctx.say(f"SLA {level}: breach seen {entry['breach_lag_ms']} ms after the "
                        "deadline (real time)")
            escalated = escalated or esc
    finally:
        listener.close()
    supported = [lv for lv in LEVELS if dim["levels"][lv]["supported"]]
    dim["value"] = supported[-1] if supported else None
    dim["status"] = "pass" if supported else "fail"
    if not supported:
        dim["reason"] = "no SLA level breached observably"
    caps["sla.status"] = _status_verdict(readings)
    caps["sla.escalation"] = _escalation_verdict(escalated)
    return dim, caps


def _breach_of(sla_id: int, record_id: Any) -> Callable[[StreamMessage], bool]:
    def match(m: StreamMessage) -> bool:
        return (m.type == "sla.breached" and m.payload.get("sla_id") == sla_id
                and m.payload.get("record_id") == record_id)
    return match


def _escalation_of(sla_id: int, record_id: Any) -> Callable[[StreamMessage], bool]:
    def match(m: StreamMessage) -> bool:
        return (m.type == "sla.escalated" and m.payload.get("sla_id") == sla_id
                and m.payload.get("record_id") == record_id)
    return match


PROBE = register(Probe(
    name="sla", trigger=("engines", "sla"), needs=(Engines, Realtime), options=SlaOptions,
    dimension="sla.granularity", result_key="sla", capabilities=SLA_IDS, run=probe_sla,
))
