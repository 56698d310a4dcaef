"""The SLA probe: sla.granularity and breach-detection lag per level, and the SLA
capabilities, on the target's test clock where it has one, in real time otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import LeadInput, Realtime, Status, StreamMessage
from bench.adapters.engines import Engines
from bench.probes.registry import Findings, Probe, ProbeContext, register
from bench.probes.stream import STREAM_TIMEOUT_S, Listener
from bench.probes.verdict import Verdict, verdict

SLA_IDS = ("sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation")
LEVELS = ("field", "process", "action")


class SlaOptions(msgspec.Struct, frozen=True, rename={
        "within_s": "sla_within_s", "real_time_s": "sla_real_time_s"}):
    """``[engines]`` settings: the SLA's time limit (default by clock) and the real-time one."""

    within_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # A field SLA of this many seconds left to breach on the wall clock (0: skip).
    real_time_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0

# ---------------------------------------------------------------------------- SLAs


def _sla_record(adapter: Any, run_id: str, level: str) -> tuple[str, int | None]:
    if level == "process":
        status, opp_id = adapter.create_opportunity_record({
            "customer_id": 1, "owner_rep_id": 1, "name": f"crmbench probe {run_id} sla",
            "stage": "qualification", "amount": 1000.0, "expected_close": "2030-01-01"})
        return "opportunity", (opp_id if status is Status.ok else None)
    lead = LeadInput(company_name=f"crmbench probe {run_id} sla {level}",
                     contact_name="Probe Contact", region_id=1, source="referral",
                     product_interest=[1])
    status, lid = adapter.create_lead_record(lead)
    return "lead", (lid if status is Status.ok else None)


def _definition(level: str, within_s: float) -> dict[str, Any]:
    base: dict[str, Any] = {"level": level, "within_s": within_s,
                            "escalation": {"notify": "director"}}
    if level == "field":
        return {**base, "object": "lead", "field": "email"}
    if level == "process":
        return {**base, "object": "opportunity", "from_stage": "qualification",
                "to_stage": "proposal"}
    return {**base, "object": "lead", "action": "first_contact"}


def probe_sla(adapter: Any, ctx: ProbeContext, options: SlaOptions) -> Findings:
    """sla.granularity and breach-detection lag per level, on the test clock if there is one.

    Test clock: lag = receipt of sla.breached - start of the advance call that crossed the
    deadline. Real time: lag = receipt - (start of the record's create call + T).
    """
    dim: dict[str, Any] = {"capability": "sla.granularity", "unit": "level", "value": None,
                           "levels": {}}
    run_id, say = ctx.run_id, ctx.say
    test_clock = adapter.advance_clock(0) is Status.ok
    within = options.within_s or (3_600.0 if test_clock else 2.0)
    listener = Listener(adapter, ["sla.breached", "sla.escalated"])
    caps: dict[str, Verdict] = {}
    statuses_seen: set[str] = set()
    escalated: dict[str, Any] | None = None
    try:
        for level in LEVELS:
            entry: dict[str, Any] = {"supported": False, "breach_lag_ms": None,
                                     "clock": "test" if test_clock else "real"}
            dim["levels"][level] = entry
            status, sla = adapter.create_sla(_definition(level, within))
            if status is not Status.ok or not sla:
                caps[f"sla.{level}"] = verdict(
                    "fail", reason=f"defining it answered {status.value}")
                continue
            sid = int(sla["id"])
            created_ns = time.perf_counter_ns()
            obj, record = _sla_record(adapter, run_id, level)
            if record is None:
                caps[f"sla.{level}"] = verdict("fail", reason=f"could not create a probe {obj}")
                continue
            statuses_seen |= _statuses(adapter, sid, record)
            if test_clock:
                adapter.advance_clock(within * 0.85)
                statuses_seen |= _statuses(adapter, sid, record)
                start_ns = time.perf_counter_ns()
                adapter.advance_clock(within * 0.15 + 1)
            else:
                gevent.sleep(max(0.0, created_ns / 1e9 + within * 0.85 - time.perf_counter()))
                statuses_seen |= _statuses(adapter, sid, record)
                start_ns = created_ns + int(within * 1e9)
            msg = listener.wait_for(_breach_of(sid, record),
                                    STREAM_TIMEOUT_S + (0 if test_clock else within))
            if msg is None:
                caps[f"sla.{level}"] = verdict("fail", reason="no sla.breached message arrived")
                continue
            entry["supported"] = True
            entry["breach_lag_ms"] = round((msg.received_ns - start_ns) / 1e6, 3)
            statuses_seen |= _statuses(adapter, sid, record)
            caps[f"sla.{level}"] = verdict("pass", {"object": obj, "within_s": within,
                                                 "breach_lag_ms": entry["breach_lag_ms"]})
            if escalated is None:
                esc = listener.wait_for(_escalation_of(sid), 2.0)
                escalated = esc.payload if esc is not None else None
            say(f"SLA {level}: breach seen {entry['breach_lag_ms']} ms after the deadline")
        real_s = options.real_time_s
        if test_clock and real_s > 0:
            dim["real_time"] = _real_time_breach(adapter, run_id, listener, real_s)
            say(f"SLA field, {real_s:g} s in real time: breach seen "
                f"{dim['real_time']['breach_lag_ms']} ms after the deadline")
    finally:
        listener.close()
    supported = [lv for lv in LEVELS if dim["levels"][lv]["supported"]]
    dim["value"] = supported[-1] if supported else None
    dim["status"] = "pass" if supported else "fail"
    if not supported:
        dim["reason"] = "no SLA level breached observably"
    wanted = {"green", "yellow", "red"}
    caps["sla.status"] = (verdict("pass", sorted(statuses_seen)) if wanted <= statuses_seen else
                          verdict("fail", sorted(statuses_seen), "not all of green, yellow, red "
                               "were shown"))
    notified = (escalated or {}).get("notified") or {}
    caps["sla.escalation"] = (
        verdict("pass", escalated) if notified.get("rep_id") is not None else
        verdict("fail", escalated, "no escalation to the director was observed"))
    return dim, caps


def _real_time_breach(
    adapter: Any, run_id: str, listener: Listener, within: float
) -> dict[str, Any]:
    """A short field-level SLA left to breach on the wall clock, beside the test clock."""
    out: dict[str, Any] = {"within_s": within, "breach_lag_ms": None}
    status, sla = adapter.create_sla(_definition("field", within))
    if status is not Status.ok or not sla:
        out["reason"] = f"defining it answered {status.value}"
        return out
    created_ns = time.perf_counter_ns()
    _obj, record = _sla_record(adapter, run_id, "field")
    if record is None:
        out["reason"] = "could not create a probe lead"
        return out
    msg = listener.wait_for(_breach_of(int(sla["id"]), record), within + STREAM_TIMEOUT_S)
    if msg is None:
        out["reason"] = "no sla.breached message arrived"
        return out
    out["breach_lag_ms"] = round((msg.received_ns - created_ns) / 1e6 - within * 1e3, 3)
    return out


def _breach_of(sla_id: int, record_id: int) -> Callable[[StreamMessage], bool]:
    def match(m: StreamMessage) -> bool:
        return (m.type == "sla.breached" and m.payload.get("sla_id") == sla_id
                and m.payload.get("record_id") == record_id)
    return match


def _escalation_of(sla_id: int) -> Callable[[StreamMessage], bool]:
    def match(m: StreamMessage) -> bool:
        return m.type == "sla.escalated" and m.payload.get("sla_id") == sla_id
    return match


def _statuses(adapter: Engines, sla_id: int, record_id: int) -> set[str]:
    _status, items = adapter.sla_instances(sla_id)
    return {str(i.get("status")) for i in items or [] if i.get("record_id") == record_id}


PROBE = register(Probe(
    name="sla", trigger=("engines", "sla"), needs=(Engines, Realtime), options=SlaOptions,
    dimension="sla.granularity", result_key="sla", capabilities=SLA_IDS, run=probe_sla,
))
