"""Agent and customer-data capability probes: verify on a live target what an adapter declares.

Each decides its capability ids with a :class:`~bench.probes.verdict.Verdict`. Declared
support is never reported as ``pass``: only what the probe observed on the target is. The
probes create their own records (named ``crmbench probe <run id>``) so that they do not
depend on the fixture data.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import gevent

from bench.adapters.base import EventInput, LeadInput, Realtime, Status
from bench.probes.registry import Findings, NoOptions, Probe, ProbeContext, register
from bench.probes.verdict import verdict

AGENT_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 5.0
AGENT_IDS = ("agent.takeover", "agent.steps", "agent.explain")
CDP_IDS = ("cdp.realtime", "cdp.tags_explained")
STEP_FIELDS = ("step", "intent", "inputs", "output", "confidence", "duration_ms")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _customer(adapter: Realtime, run_id: str, label: str, **fields: Any) -> int:
    body = {
        "name": f"crmbench probe {run_id} {label}", "industry": "Industrial machinery",
        "region_id": 1, "owner_rep_id": 1, "tier": "normal", "employees": 2500,
        "annual_revenue": 4.0e8, "consent_marketing": True, "consent_profiling": True,
        **fields,
    }
    status, cid = adapter.create_customer_record(body)
    if status is not Status.ok or cid is None:
        raise ProbeError(f"could not create a probe customer ({status.value})")
    return cid


def _lead(adapter: Realtime, run_id: str, label: str, customer_id: int | None,
          *, complete: bool = True, source: str = "referral") -> int:
    lead = LeadInput(
        company_name=f"crmbench probe {run_id} {label}",
        contact_name="Probe Contact", region_id=1,
        email="probe.contact@crmbench.example" if complete else None,
        source=source, customer_id=customer_id, product_interest=[1],
    )
    status, lid = adapter.create_lead_record(lead)
    if status is not Status.ok or lid is None:
        raise ProbeError(f"could not create a probe lead ({status.value})")
    return lid


class ProbeError(Exception):
    """The probe could not set up its own records."""


def _agent_outcome(adapter: Realtime, lead_id: int, quantity: int | None) -> dict[str, Any]:
    status, run_id = adapter.start_agent_run(lead_id, quantity)
    if status is not Status.ok or run_id is None:
        raise ProbeError(f"starting a lead-intake run was answered {status.value}")
    deadline = time.monotonic() + AGENT_TIMEOUT_S
    while time.monotonic() < deadline:
        status, run = adapter.agent_run(run_id)
        if status is Status.ok and run is not None and run.get("status") != "running":
            return run
        gevent.sleep(0.05)
    raise ProbeError(f"run {run_id} did not finish within {AGENT_TIMEOUT_S:g} s")


def probe_agent(adapter: Realtime, ctx: ProbeContext, _options: NoOptions) -> Findings:
    """agent.takeover (each threshold), agent.steps and agent.explain from four runs."""
    run_id = ctx.run_id
    try:
        _status, config = adapter.agent_config()
        max_quote = float((config or {}).get("max_quote", 50_000))
        normal = _customer(adapter, run_id, "normal")
        strategic = _customer(adapter, run_id, "strategic", tier="strategic")
        cases = {
            "clean": (_lead(adapter, run_id, "clean", normal), 1),
            "high_quote": (_lead(adapter, run_id, "quote", normal), 1_000_000),
            "strategic": (_lead(adapter, run_id, "strategic", strategic), 1),
            "low_confidence": (
                _lead(adapter, run_id, "thin", None, complete=False, source="cold_call"), 1
            ),
        }
        runs = {name: _agent_outcome(adapter, lead, qty) for name, (lead, qty) in cases.items()}
    except ProbeError as exc:
        failed = verdict("fail", reason=str(exc))
        return None, {"agent.takeover": failed, "agent.steps": failed, "agent.explain": failed}

    def reasons(name: str) -> str:
        return " ".join(str(r) for r in runs[name].get("escalation_reasons") or []).lower()

    expected = {
        "clean": runs["clean"].get("status") == "completed",
        "high_quote": runs["high_quote"].get("status") == "escalated" and "quote" in
        reasons("high_quote"),
        "strategic": runs["strategic"].get("status") == "escalated" and "strategic" in
        reasons("strategic"),
        "low_confidence": runs["low_confidence"].get("status") == "escalated" and "confidence"
        in reasons("low_confidence"),
    }
    takeover_evidence: dict[str, Any] = {
        name: {"status": run.get("status"), "reasons": run.get("escalation_reasons"),
               "quote_total": (run.get("quote") or {}).get("total")}
        for name, run in runs.items()
    }
    takeover_evidence["max_quote"] = max_quote
    wrong = [name for name, ok in expected.items() if not ok]
    takeover = verdict(
        "fail" if wrong else "pass", takeover_evidence,
        f"unexpected outcome for: {', '.join(wrong)}" if wrong else None,
    )
    log = runs["clean"].get("decision_log") or []
    missing = [
        f"{entry.get('step', i)}.{f}" for i, entry in enumerate(log) for f in STEP_FIELDS
        if f not in entry
    ]
    steps_ok = len(log) >= 5 and not missing
    steps = verdict(
        "pass" if steps_ok else "fail",
        {"steps": [e.get("step") for e in log], "durations_ms": [e.get("duration_ms")
                                                                 for e in log]},
        None if steps_ok else f"{len(log)} steps logged; missing fields: {missing[:5]}",
    )
    unexplained = [e.get("step") for e in log if not e.get("rule") or not e.get("inputs")]
    explain = verdict(
        "pass" if log and not unexplained else "fail",
        {"rules": {str(e.get("step")): e.get("rule") for e in log}},
        f"steps without rule or inputs: {unexplained}" if unexplained or not log else None,
    )
    return None, {"agent.takeover": takeover, "agent.steps": steps, "agent.explain": explain}


def probe_cdp(adapter: Realtime, ctx: ProbeContext, _options: NoOptions) -> Findings:
    """cdp.realtime (pushed event -> profile.updated) and cdp.tags_explained."""
    run_id = ctx.run_id
    try:
        customer = _customer(adapter, run_id, "cdp")
    except ProbeError as exc:
        failed = verdict("fail", reason=str(exc))
        return None, {"cdp.realtime": failed, "cdp.tags_explained": failed}
    keys = [f"{run_id}-cap-{i}" for i in range(4)]
    received: dict[str, int] = {}

    def listen() -> None:
        for msg in adapter.subscribe(["profile.updated"]):
            key = str(msg.payload.get("idempotency_key", ""))
            if key in keys:
                received[key] = msg.received_ns
                if len(received) == len(keys):
                    return

    listener = gevent.spawn(listen)
    gevent.sleep(0.3)
    kinds = ["pricing_view", "pricing_view", "support_call", "page_view"]
    events = [
        EventInput(customer_id=customer, type=kind, idempotency_key=key, occurred_at=_now(),
                   properties={"discount": True} if kind == "pricing_view" else {})
        for key, kind in zip(keys, kinds, strict=True)
    ]
    sent = time.perf_counter_ns()
    status = adapter.send_events(events)
    listener.join(timeout=STREAM_TIMEOUT_S)
    listener.kill(block=False)
    if status is not Status.ok:
        realtime = verdict("fail", reason=f"the event batch was answered {status.value}")
    elif len(received) < len(keys):
        realtime = verdict("fail", {"received": len(received), "sent": len(keys)},
                           f"only {len(received)} of {len(keys)} profile updates arrived "
                           f"within {STREAM_TIMEOUT_S:g} s")
    else:
        delays = sorted((ns - sent) / 1e6 for ns in received.values())
        realtime = verdict("pass", {"interface": "HTTP batch push, SSE change stream",
                                    "max_delay_ms": round(delays[-1], 3)})
    pstatus, profile = adapter.customer_profile(customer)
    tags = (profile or {}).get("tags") or {}
    incomplete = [
        name for name, tag in tags.items()
        if not all(k in tag for k in ("value", "formula", "weights", "source_events"))
        or not tag.get("source_events")
    ]
    if pstatus is not Status.ok or not tags:
        explained = verdict("fail", reason=f"profile answered {pstatus.value} with no tags")
    elif incomplete:
        explained = verdict("fail", {"tags": sorted(tags)},
                            f"tags without formula, weights or source events: {incomplete}")
    else:
        explained = verdict("pass", {
            name: {"value": tag["value"], "formula": tag["formula"]}
            for name, tag in tags.items()
        })
    return None, {"cdp.realtime": realtime, "cdp.tags_explained": explained}


# Both run after the workload when the scenario also measures the matching in-run probe.
AGENT = register(Probe(
    name="agent", trigger=("probes", "agent_rate"), needs=(Realtime,), options=NoOptions,
    capabilities=AGENT_IDS, run=probe_agent,
))
CDP = register(Probe(
    name="cdp", trigger=("probes", "event_rate"), needs=(Realtime,), options=NoOptions,
    capabilities=CDP_IDS, run=probe_cdp,
))
