"""Agent and customer-data capability probes: verify on a live target what an adapter declares.

Each decides its capability ids with a :class:`~bench.probes.verdict.Verdict`. Declared
support is never reported as ``pass``: only what the probe observed on the target is. The
probes create their own records (named ``crmbench probe <run id>``) so that they do not
depend on the fixture data.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import gevent

from bench.adapters.base import EventInput, LeadInput, Realtime, Status
from bench.probes.registry import Findings, NoOptions, Probe, ProbeContext, register
from bench.probes.verdict import Verdict, verdict

AGENT_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 5.0
AGENT_IDS = ("agent.takeover", "agent.steps", "agent.explain")
CDP_IDS = ("cdp.realtime", "cdp.tags_explained")
STEP_FIELDS = ("step", "intent", "inputs", "output", "confidence", "duration_ms")
# The probe's events: two pricing views with a discount signal, a support call, a page view.
CDP_KINDS = ("pricing_view", "pricing_view", "support_call", "page_view")
# The catalogue's lead-intake steps, in order, and words a platform's step names may use.
STEP_NAMES = {
    "qualify": ("qualif", "identif"), "history": ("history", "purchase", "order"),
    "inventory": ("inventor", "stock"), "quote": ("quote", "pric"),
    "notify": ("notif", "route", "assign", "hand"),
}
# The harness's agent data: one product priced so that QUOTE_QUANTITY units cost exactly
# the catalogue's takeover bound (not above it), and one a cent dearer per 50 units.
UNIT_PRICE = 1_000.0
UNIT_PRICE_ABOVE = 1_000.02
QUOTE_QUANTITY = 50
CLEAN_QUANTITY = 3
STOCK = 37
REGION = 1
ORDER_QUANTITIES = (2, 5)


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
          *, complete: bool = True, source: str = "referral", product: int = 1) -> int:
    lead = LeadInput(
        company_name=f"crmbench probe {run_id} {label}",
        contact_name="Probe Contact", region_id=1,
        email="probe.contact@crmbench.example" if complete else None,
        source=source, customer_id=customer_id, product_interest=[product],
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
            return {**run, "run_id": str(run.get("run_id", run_id))}
        gevent.sleep(0.05)
    raise ProbeError(f"run {run_id} did not finish within {AGENT_TIMEOUT_S:g} s")


class NotOffered(Exception):
    """The platform does not offer a verb the probe needs (answered unsupported)."""


@dataclass(frozen=True)
class AgentData:
    """What the harness wrote for the agent probe, and so knows the answers from."""

    product: int
    product_above: int
    customer: int
    orders: int
    lifetime_value: float
    strategic: int
    key: int


def _made(status: Status, made: int | None, what: str) -> int:
    if status is Status.unsupported:
        raise NotOffered(f"the platform does not offer {what}")
    if status is not Status.ok or made is None:
        raise ProbeError(f"{what} was answered {status.value}")
    return made


def _agent_data(adapter: Realtime, run_id: str) -> AgentData:
    """A product at each side of the quote threshold, stock, and a customer with orders."""
    products = []
    for label, price in (("at", UNIT_PRICE), ("above", UNIT_PRICE_ABOVE)):
        status, pid = adapter.create_product_record({
            "sku": f"crmbench-{run_id}-{label}", "name": f"crmbench probe {run_id} {label}",
            "unit_price": price})
        products.append(_made(status, pid, "creating a product"))
        status = adapter.set_stock(products[-1], REGION, STOCK)
        _made(status, 0, "setting a product's stock")
    customer = _customer(adapter, run_id, "agent")
    total = 0.0
    for qty in ORDER_QUANTITIES:
        line = {"product_id": products[0], "quantity": qty, "unit_price": UNIT_PRICE}
        status, oid = adapter.create_order_record(customer, [line])
        _made(status, oid, "creating an order")
        total += round(UNIT_PRICE * qty, 2)
    return AgentData(
        products[0], products[1], customer, len(ORDER_QUANTITIES), round(total, 2),
        _customer(adapter, run_id, "strategic", tier="strategic"),
        _customer(adapter, run_id, "key", tier="key"),
    )


def _numbers(value: Any) -> list[float]:
    """Every number in a JSON value (bools aside)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _has(value: Any, *wanted: float) -> bool:
    found = _numbers(value)
    return all(any(abs(n - w) < 0.005 for n in found) for w in wanted)


def _step_kinds(log: list[dict[str, Any]]) -> list[str | None]:
    """The catalogue's step each log entry names (None when it names none of them)."""
    kinds: list[str | None] = []
    for entry in log:
        name = str(entry.get("step", "")).lower()
        kinds.append(next((k for k, words in STEP_NAMES.items()
                           if any(w in name for w in words)), None))
    return kinds


def _steps_verdict(runs: dict[str, dict[str, Any]], data: AgentData) -> Verdict:
    """Names and order of the steps, and outputs that follow from the harness's data."""
    log = runs["clean"].get("decision_log") or []
    kinds = _step_kinds(log)
    missing = [f"{e.get('step', i)}.{f}" for i, e in enumerate(log) for f in STEP_FIELDS
               if f not in e]
    evidence: dict[str, Any] = {
        "steps": [e.get("step") for e in log],
        "durations_ms_server_reported": [e.get("duration_ms") for e in log],
    }
    wrong: list[str] = []
    if kinds != list(STEP_NAMES):
        wrong.append(f"steps {evidence['steps']} are not {' -> '.join(STEP_NAMES)} in order")
    if missing:
        wrong.append(f"missing fields: {missing[:5]}")
    if not wrong:
        by_kind = {k: e.get("output") for k, e in zip(kinds, log, strict=True)}
        expected = {
            "history": (data.orders, data.lifetime_value),
            "inventory": (STOCK,),
            "quote": (round(UNIT_PRICE * CLEAN_QUANTITY, 2),),
        }
        evidence["expected_by_harness"] = expected
        wrong += [f"{kind} output lacks {want}" for kind, want in expected.items()
                  if not _has(by_kind.get(kind), *want)]
        empty = _step_kinds(runs["strategic"].get("decision_log") or [])
        slog = runs["strategic"].get("decision_log") or []
        history = next((e.get("output") for k, e in zip(empty, slog, strict=True)
                        if k == "history"), None)
        if history is None or _has(history, data.lifetime_value):
            wrong.append("a customer without orders shows the other customer's history")
    return verdict("fail" if wrong else "pass", evidence, "; ".join(wrong))


def _explain_verdict(runs: dict[str, dict[str, Any]], data: AgentData,
                     lead: int) -> Verdict:
    """Each step names its rule and inputs that trace to the records the harness made."""
    log = runs["clean"].get("decision_log") or []
    total = round(UNIT_PRICE * CLEAN_QUANTITY, 2)
    traces = {"qualify": (lead,), "history": (data.customer,),
              "inventory": (data.product, REGION), "quote": (data.product,),
              "notify": (total,)}
    unexplained = [
        str(e.get("step")) for k, e in zip(_step_kinds(log), log, strict=True)
        if not e.get("rule") or k is None or not _has(e.get("inputs"), *traces[k])
    ]
    evidence = {"rules": {str(e.get("step")): e.get("rule") for e in log},
                "traced_to": {k: list(v) for k, v in traces.items()}}
    if not log or unexplained:
        return verdict("fail", evidence, "steps without a rule, or whose inputs do not name "
                       f"the probe's records: {unexplained or 'no decision log'}")
    return verdict("pass", evidence)


def _takeover_cases(adapter: Realtime, run_id: str, data: AgentData) -> dict[str, Any]:
    """Leads just either side of each threshold: quote, tier (and thin data)."""
    def lead(label: str, customer: int | None, product: int, **kw: Any) -> int:
        return _lead(adapter, run_id, label, customer, product=product, **kw)

    return {
        "clean": (lead("clean", data.customer, data.product), CLEAN_QUANTITY, False),
        "quote_at": (lead("quote-at", data.customer, data.product), QUOTE_QUANTITY, False),
        "quote_above": (lead("quote-above", data.customer, data.product_above),
                        QUOTE_QUANTITY, True),
        "strategic": (lead("strategic", data.strategic, data.product), 1, True),
        "key": (lead("key", data.key, data.product), 1, False),
    }


def _confidence_runs(adapter: Realtime, lead: int, confidence: float) -> dict[str, Any]:
    """The same lead with the confidence threshold just above and at its confidence."""
    status, config = adapter.agent_config()
    if status is not Status.ok or config is None or "min_confidence" not in config:
        return {}
    original = float(config["min_confidence"])
    runs: dict[str, Any] = {}
    try:
        for name, threshold in (("confidence_below", confidence + 0.01),
                                ("confidence_at", confidence)):
            status, _ = adapter.agent_config({"min_confidence": round(threshold, 4)})
            if status is not Status.ok:
                return {}
            runs[name] = _agent_outcome(adapter, lead, CLEAN_QUANTITY)
    finally:
        adapter.agent_config({"min_confidence": original})
    return runs


def _takeover_verdict(adapter: Realtime, runs: dict[str, dict[str, Any]],
                      escalate: dict[str, bool]) -> Verdict:
    status, queued = adapter.human_queue([r["run_id"] for r in runs.values()])
    evidence: dict[str, Any] = {
        name: {"status": run.get("status"), "expected": "escalated" if escalate[name]
               else "completed", "reasons": run.get("escalation_reasons"),
               "quote_total": (run.get("quote") or {}).get("total"),
               "in_human_queue": None if queued is None else run["run_id"] in queued}
        for name, run in runs.items()
    }
    if queued is None:
        return verdict("fail", evidence, f"the human queue was answered {status.value}")
    wrong = [name for name, run in runs.items()
             if (run.get("status") == "escalated") != escalate[name]
             or (run["run_id"] in queued) != escalate[name]]
    return verdict("fail" if wrong else "pass", evidence,
                   f"outcome or human queue not as the thresholds require for: "
                   f"{', '.join(wrong)}" if wrong else None)


def probe_agent(adapter: Realtime, ctx: ProbeContext, _options: NoOptions) -> Findings:
    """agent.takeover (either side of each threshold), agent.steps and agent.explain."""
    try:
        data = _agent_data(adapter, ctx.run_id)
        cases = _takeover_cases(adapter, ctx.run_id, data)
        runs = {name: _agent_outcome(adapter, lead, qty)
                for name, (lead, qty, _esc) in cases.items()}
        escalate = {name: esc for name, (_lead, _qty, esc) in cases.items()}
        clean_log = runs["clean"].get("decision_log") or []
        kinds = _step_kinds(clean_log)
        qualify: dict[str, Any] = next(
            (e for k, e in zip(kinds, clean_log, strict=True) if k == "qualify"), {})
        confidence = qualify.get("confidence")
        if isinstance(confidence, int | float) and not isinstance(confidence, bool):
            more = _confidence_runs(adapter, cases["clean"][0], float(confidence))
            runs.update(more)
            escalate.update({"confidence_below": True, "confidence_at": False})
    except NotOffered as exc:
        absent = verdict("not-measured", reason=f"{exc}: the probe cannot give the agent "
                         "data of its own")
        return None, {cid: absent for cid in AGENT_IDS}
    except ProbeError as exc:
        failed = verdict("fail", reason=str(exc))
        return None, {cid: failed for cid in AGENT_IDS}
    takeover = _takeover_verdict(adapter, runs, escalate)
    if "confidence_below" not in runs and takeover.status == "pass":
        takeover = verdict("not-measured", takeover.evidence, "the confidence threshold "
                           "could not be moved either side of a run's confidence")
    return None, {"agent.takeover": takeover, "agent.steps": _steps_verdict(runs, data),
                  "agent.explain": _explain_verdict(runs, data, cases["clean"][0])}


def _price_sensitivity(views: int, discounts: int, total: int,
                       weights: dict[str, Any]) -> float | None:
    """The catalogue's price-sensitivity tag computed from the harness's own events."""
    try:
        value = (float(weights["pricing_views"]) * min(1.0, views / 5)
                 + float(weights["discount_signals"]) * min(1.0, discounts / 3)
                 + float(weights["pricing_share"]) * views / total)
    except (KeyError, TypeError, ValueError):
        return None
    return round(min(1.0, max(0.0, value)), 2)


def _send_and_listen(adapter: Realtime, customer: int, keys: list[str], kinds: list[str]
                     ) -> tuple[Status, int, dict[str, Any]]:
    """Send one batch; the profile.updated messages of its events, by idempotency key."""
    received: dict[str, Any] = {}

    def listen() -> None:
        for msg in adapter.subscribe(["profile.updated"]):
            key = str(msg.payload.get("idempotency_key", ""))
            if key in keys:
                received[key] = msg
                if len(received) == len(keys):
                    return

    listener = gevent.spawn(listen)
    gevent.sleep(0.3)
    events = [
        EventInput(customer_id=customer, type=kind, idempotency_key=key, occurred_at=_now(),
                   properties={"discount": True} if kind == "pricing_view" else {})
        for key, kind in zip(keys, kinds, strict=True)
    ]
    sent = time.perf_counter_ns()
    status = adapter.send_events(events)
    listener.join(timeout=STREAM_TIMEOUT_S)
    listener.kill(block=False)
    return status, sent, received


def _realtime_verdict(adapter: Realtime, customer: int, status: Status, sent: int,
                      received: dict[str, Any], kinds: list[str]) -> Verdict:
    """Pushed events reach the profile: each message seen, then the profile read back."""
    if status is not Status.ok:
        return verdict("fail", reason=f"the event batch was answered {status.value}")
    evidence: dict[str, Any] = {"sent": len(kinds), "profile_updated_messages": len(received)}
    if len(received) < len(kinds):
        return verdict("fail", evidence, f"only {len(received)} of {len(kinds)} profile "
                       f"updates arrived within {STREAM_TIMEOUT_S:g} s")
    delays = sorted((m.received_ns - sent) / 1e6 for m in received.values())
    evidence["max_message_delay_ms"] = round(delays[-1], 3)
    pstatus, profile = adapter.customer_profile(customer)
    counters = (profile or {}).get("counters") or {}
    counted = {kind: (counters.get(kind) or {}).get("count") for kind in set(kinds)}
    evidence["counted_in_profile"] = counted
    wrong = {k: v for k, v in counted.items() if v != kinds.count(k)}
    if pstatus is not Status.ok or wrong:
        return verdict("fail", evidence, f"read back after the messages, the profile "
                       f"({pstatus.value}) does not count the events sent: {wrong}")
    evidence["interface"] = "events pushed by the harness, outcome on the change stream"
    return verdict("pass", evidence)


def _tags_verdict(profile: dict[str, Any] | None, event_ids: set[int]) -> Verdict:
    """Every tag cites only events just sent, with formula and weights; price sensitivity
    equals the catalogue's formula on the harness's events."""
    tags = (profile or {}).get("tags") or {}
    if not tags:
        return verdict("fail", reason="the profile read back has no tags")
    wrong: list[str] = []
    for name, tag in tags.items():
        cited = tag.get("source_events") if isinstance(tag, dict) else None
        if not isinstance(tag, dict) or not tag.get("formula") or not tag.get("weights"):
            wrong.append(f"{name} has no formula or weights")
        elif not cited or not set(cited) <= event_ids:
            wrong.append(f"{name} cites {cited}, not the events just sent {sorted(event_ids)}")
    views = CDP_KINDS.count("pricing_view")
    price = tags.get("price_sensitivity")
    expected = None
    if isinstance(price, dict):
        expected = _price_sensitivity(views, views, len(CDP_KINDS), price.get("weights") or {})
        if expected is None or price.get("value") != expected:
            wrong.append(f"price_sensitivity is {price.get('value')}, the formula on the "
                         f"events sent gives {expected}")
    else:
        wrong.append("no price_sensitivity tag")
    evidence = {"tags": {n: {"value": t.get("value"), "source_events": t.get("source_events")}
                         for n, t in tags.items() if isinstance(t, dict)},
                "events_sent": sorted(event_ids), "price_sensitivity_by_harness": expected}
    return verdict("fail" if wrong else "pass", evidence, "; ".join(wrong))


def probe_cdp(adapter: Realtime, ctx: ProbeContext, _options: NoOptions) -> Findings:
    """cdp.realtime (pushed events reach the profile) and cdp.tags_explained."""
    try:
        customer = _customer(adapter, ctx.run_id, "cdp")
    except ProbeError as exc:
        failed = verdict("fail", reason=str(exc))
        return None, {"cdp.realtime": failed, "cdp.tags_explained": failed}
    keys = [f"{ctx.run_id}-cap-{i}" for i in range(len(CDP_KINDS))]
    status, sent, received = _send_and_listen(adapter, customer, keys, list(CDP_KINDS))
    realtime = _realtime_verdict(adapter, customer, status, sent, received, list(CDP_KINDS))
    ids = {m.payload.get("event_id") for m in received.values()}
    event_ids = {int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)}
    if realtime.status != "pass":
        explained = verdict("not-measured", reason="no profile to read: " +
                            (realtime.reason or "the events did not arrive"))
    else:
        _pstatus, profile = adapter.customer_profile(customer)
        explained = _tags_verdict(profile, event_ids)
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
