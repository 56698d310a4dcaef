"""Probes of the workflow, SLA and scenario-pack engines: three measured dimensions.

Each probe returns ``(dimension, capabilities)``: the dimension entry of a result (see
bench/results/collect.py) and the statuses of the related capabilities, all observed on the
target. Asynchronous outcomes (SLA breaches, paused workflows) are taken from the harness's
own change-stream subscription, stamped with ``time.perf_counter_ns`` like every send.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import gevent

from bench.adapters.base import LeadInput, Realtime, Status, StreamMessage
from bench.adapters.engines import Engines
from bench.scenarios.capability_probes import verdict

Say = Callable[[str], None]
Outcome = tuple[dict[str, Any], dict[str, dict[str, Any]]]
DEFAULT_CAP = 100_000
DEFAULT_REPEATS = 5
# Small sizes take milliseconds, where one disturbance of the machine weighs most: they are
# measured again until their measurements add up to this much time (as timeit and
# pytest-benchmark do), within MAX_REPEATS.
DEFAULT_MIN_TIME_S = 0.5
MAX_REPEATS = 50
# Probe documents are kept between measurements up to this size; larger ones (up to the
# cap, which may be millions of nodes) are built again for each, outside the timing.
KEEP_DOCS_UP_TO = 16_384
# Below this size a run takes milliseconds and timing noise swamps the doubling ratio.
LINEARITY_FROM = 1024
STREAM_TIMEOUT_S = 10.0
WORKFLOW_IDS = ("workflow.dag", "workflow.breaker", "workflow.lineage")
SLA_IDS = ("sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation")
PACK_IDS = ("pack.hotplug", "pack.manufacturing")
LEVELS = ("field", "process", "action")


def _not_measured(adapter: Any, dim: dict[str, Any], ids: tuple[str, ...]) -> Outcome:
    reason = (f"the {getattr(adapter, 'name', type(adapter).__name__)} adapter does not "
              "implement the engine verbs (bench.adapters.engines.Engines)")
    return ({**dim, "status": "not-measured", "reason": reason},
            {cid: verdict("not-measured", reason=reason) for cid in ids})


class _Listener:
    """Collects stream messages of some types in a greenlet while the probe runs."""

    def __init__(self, adapter: Any, types: list[str]) -> None:
        self.messages: list[StreamMessage] = []
        self.error: str | None = None
        self._adapter = adapter
        self._types = types
        self._greenlet = gevent.spawn(self._run) if isinstance(adapter, Realtime) else None
        gevent.sleep(0.3)

    def _run(self) -> None:
        try:
            for msg in self._adapter.subscribe(self._types):
                self.messages.append(msg)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_for(self, match: Callable[[StreamMessage], bool],
                 timeout: float = STREAM_TIMEOUT_S) -> StreamMessage | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if match(msg):
                    return msg
            if self._greenlet is None:
                return None
            gevent.sleep(0.005)
        return None

    def close(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)


# ---------------------------------------------------------------------------- workflows


def workflow_doc(name: str, nodes: int) -> dict[str, Any]:
    """A workflow of exactly ``nodes`` nodes: a trigger, then split/condition/join blocks."""
    out: list[dict[str, Any]] = [{"id": "t", "type": "trigger", "on": "manual"}]
    edges: list[list[str]] = []
    prev = "t"
    k = 0
    while len(out) + 4 <= nodes:
        p, c, a, j = f"p{k}", f"c{k}", f"a{k}", f"j{k}"
        out += [{"id": p, "type": "parallel"},
                {"id": c, "type": "condition", "field": "amount", "op": ">=", "value": 0},
                {"id": a, "type": "action", "action": "set", "field": f"v{k % 8}", "value": k},
                {"id": j, "type": "join"}]
        edges += [[prev, p], [p, c], [p, a], [c, j, "true"], [a, j]]
        prev = j
        k += 1
    while len(out) < nodes:
        node = f"n{len(out)}"
        out.append({"id": node, "type": "action", "action": "noop"})
        edges.append([prev, node])
        prev = node
    return {"name": name, "nodes": out, "edges": edges, "timeout_s": 600}


def _attempt(adapter: Engines, doc: dict[str, Any], n: int) -> dict[str, Any]:
    """Deploy ``doc`` (a new version when its name exists) and run it once, both timed."""
    out: dict[str, Any] = {"deploy_s": None, "run_s": None, "accepted": False,
                           "executed": False}
    t0 = time.perf_counter()
    status, deployed = adapter.deploy_workflow(doc)
    out["deploy_s"] = round(time.perf_counter() - t0, 6)
    if status is not Status.ok or not deployed or "id" not in deployed:
        out["error"] = f"deploy answered {status.value}"
        return out
    out["accepted"] = True
    t0 = time.perf_counter()
    status, run = adapter.run_workflow(int(deployed["id"]), {"amount": 1}, wait=True)
    out["run_s"] = round(time.perf_counter() - t0, 6)
    if status is not Status.ok or not run:
        out["error"] = f"run answered {status.value}"
        return out
    out["executed"] = run.get("status") == "completed" and run.get("executed_nodes") == n
    if not out["executed"]:
        out["error"] = (f"run {run.get('status')} with {run.get('executed_nodes')} of {n} "
                        "nodes executed")
    return out


def summarise_size(n: int, attempts: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """One curve point: median, min and max deploy and run seconds over the attempts.

    The size is accepted and executed only when all ``repeats`` attempts were.
    """
    point: dict[str, Any] = {
        "nodes": n, "repeats": len(attempts),
        "accepted": len(attempts) >= repeats and all(a["accepted"] for a in attempts),
        "executed": len(attempts) >= repeats and all(a["executed"] for a in attempts),
    }
    for key in ("deploy", "run"):
        values = [a[f"{key}_s"] for a in attempts if a[f"{key}_s"] is not None]
        point[f"{key}_s"] = round(statistics.median(values), 6) if values else None
        point[f"{key}_min_s"] = min(values, default=None)
        point[f"{key}_max_s"] = max(values, default=None)
    error = next((a["error"] for a in attempts if "error" in a), None)
    if error is not None:
        point["error"] = error
    return point


class _Series:
    """Every measurement of one probe run: one workflow per size, each deploy a new version."""

    def __init__(self, adapter: Engines, run_id: str) -> None:
        self.adapter, self.run_id = adapter, run_id
        self.docs: dict[int, dict[str, Any]] = {}
        self.attempts: dict[int, list[dict[str, Any]]] = {}  # in the order sizes were tried

    def measure(self, n: int) -> dict[str, Any]:
        doc = self.docs.get(n) or workflow_doc(f"crmbench probe {self.run_id} size {n}", n)
        if n <= KEEP_DOCS_UP_TO:  # small ones are measured up to MAX_REPEATS times
            self.docs[n] = doc
        attempt = _attempt(self.adapter, doc, n)
        self.attempts.setdefault(n, []).append(attempt)
        return attempt

    def ok(self, n: int) -> bool:
        return all(a["executed"] for a in self.attempts.get(n, ()))


def _search(series: _Series, good: int, bad: int | None, cap: int,
            say: Say) -> tuple[int, int | None]:
    """One measurement per size: doubling from ``good`` (0: from 1) to the cap until a size
    fails, then bisection between the largest good and the smallest failed size."""
    def measured(n: int) -> bool:
        a = series.measure(n)
        say(f"workflow {n} nodes: deploy {a['deploy_s']} s, run {a['run_s']} s, "
            f"{'ok' if a['executed'] else a.get('error')}")
        return bool(a["executed"])

    if bad is None:
        n = 1 if good == 0 else min(good * 2, cap)
        while good < cap:
            if not measured(n):
                bad = n
                break
            good, n = n, min(n * 2, cap)
    while bad is not None and bad - good > max(1, good // 100):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if measured(mid) else (good, mid)
    return good, bad


def _wanted(first: dict[str, Any], repeats: int, min_time_s: float) -> int:
    """Measurements a size gets: ``repeats``, or as many as its first measurement says add
    up to ``min_time_s``, within ``MAX_REPEATS``."""
    spent = (first["deploy_s"] or 0.0) + (first["run_s"] or 0.0)
    if min_time_s <= 0:
        return repeats
    enough = MAX_REPEATS if spent <= 0 else math.ceil(min_time_s / spent)
    return max(repeats, min(MAX_REPEATS, enough))


def _rounds(series: _Series, sizes: list[int], repeats: int, min_time_s: float,
            say: Say) -> int:
    """The remaining measurements of ``sizes``, interleaved: in rounds that go up and down
    the sizes, each size's measurements spread evenly over all rounds, so that a slow spell
    of the machine falls on many sizes a little rather than on a few sizes entirely.

    A size that fails drops out with every larger one. Returns the number of rounds.
    """
    need = {n: _wanted(series.attempts[n][0], repeats, min_time_s) - len(series.attempts[n])
            for n in sizes}
    rounds = max(need.values(), default=0)

    def due(n: int, j: int) -> int:  # round(j * need / rounds): measurements due by round j
        return (2 * j * need[n] + rounds) // (2 * rounds)

    failed: int | None = None  # the smallest size that failed
    for j in range(1, rounds + 1):
        t0, measured = time.perf_counter(), 0
        for n in sorted(sizes, reverse=j % 2 == 0):
            not_due = need[n] <= 0 or due(n, j) == due(n, j - 1)
            if not_due or (failed is not None and n >= failed):
                continue
            if not series.measure(n)["executed"]:
                failed = n if failed is None else min(failed, n)
            measured += 1
        spent = time.perf_counter() - t0
        if j % 10 == 0 or j == rounds or spent >= 1.0:
            say(f"workflow round {j}/{rounds}: {measured} size{'' if measured == 1 else 's'} "
                f"measured again in {spent:.2f} s")
    return rounds


def measure_curve(adapter: Engines, run_id: str, cap: int, repeats: int, min_time_s: float,
                  say: Say) -> tuple[list[dict[str, Any]], int, int | None, int]:
    """The scaling curve: the search measures each size once; then each size is measured
    again in interleaved rounds (``_rounds``) until it has ``repeats`` measurements, small
    ones more, as many as add up to ``min_time_s``. A size that fails in a later round
    bounds the search again (bisection below it).

    Returns the curve (one point per size, in the order tried), the largest size executed in
    all its measurements, the smallest failed size (None when none failed) and the number
    of rounds.
    """
    series = _Series(adapter, run_id)
    good: int = 0
    bad: int | None = None
    rounds = 0
    while True:
        good, bad = _search(series, good, bad, cap, say)
        rounds += _rounds(series, [n for n in series.attempts if n <= good and series.ok(n)],
                          repeats, min_time_s, say)
        failed = min((n for n in series.attempts if n <= good and not series.ok(n)),
                     default=None)
        if failed is None:
            break
        # A size failed in a later round: it bounds the search now.
        bad = failed
        good = max((n for n in series.attempts if n < failed and series.ok(n)), default=0)
    curve: list[dict[str, Any]] = []
    for n, attempts in series.attempts.items():
        point = summarise_size(n, attempts, repeats)
        if not point["executed"] and "error" not in point:
            point["error"] = (f"measured {len(attempts)} of {repeats} times: a smaller size "
                              "failed first")
        curve.append(point)
        say(f"workflow {n} nodes x{point['repeats']}: deploy {point['deploy_s']} s "
            f"({point['deploy_min_s']}..{point['deploy_max_s']}), run {point['run_s']} s "
            f"({point['run_min_s']}..{point['run_max_s']}), "
            f"{'ok' if point['executed'] else point.get('error')}")
    return curve, good, bad, rounds


def _totals(curve: list[dict[str, Any]], stat: str) -> dict[int, float]:
    """Deploy + run seconds per executed size: fastest repeats ("min") or medians."""
    keys = ("deploy_min_s", "run_min_s") if stat == "min" else ("deploy_s", "run_s")
    return {p["nodes"]: p.get(keys[0], p["deploy_s"]) + p.get(keys[1], p["run_s"])
            for p in curve if p["executed"]}


def worst_doubling(curve: list[dict[str, Any]], low: int = LINEARITY_FROM,
                   stat: str = "min") -> tuple[float | None, int | None]:
    """The largest ratio of deploy + run time of N to that of N/2, and that N.

    ``stat`` "min" takes each size's fastest repeat (timing noise only adds time, so the
    fastest is the closest to the work itself), "median" the medians. Only executed sizes
    N/2 >= ``low`` count; linear scaling gives about 2.
    """
    totals = _totals(curve, stat)
    worst: tuple[float | None, int | None] = (None, None)
    for n, total in sorted(totals.items()):
        if n >= low and 2 * n in totals and total > 0:
            ratio = totals[2 * n] / total
            if worst[0] is None or ratio > worst[0]:
                worst = (round(ratio, 3), 2 * n)
    return worst


def fitted_doubling(curve: list[dict[str, Any]], low: int = LINEARITY_FROM,
                    stat: str = "min") -> float | None:
    """What one doubling of N multiplies deploy + run time by, over the whole curve.

    ``2 ** b`` for the least-squares line ``log2(time) = a + b log2(N)`` through the
    executed sizes N >= ``low`` (2.0 when time is linear in N, 4.0 when quadratic). Every
    size weighs in, so one disturbed measurement moves it far less than ``worst_doubling``.
    None with fewer than three sizes.
    """
    points = [(math.log2(n), math.log2(t)) for n, t in sorted(_totals(curve, stat).items())
              if n >= low and t > 0]
    if len(points) < 3:
        return None
    slope, _ = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return round(2 ** slope, 3)


def probe_workflow(adapter: Any, run_id: str, options: dict[str, Any], say: Say) -> Outcome:
    """workflow.max_nodes (doubling to the cap, then bisection) and the workflow capabilities.

    The curve (``measure_curve``) holds each size's median, min and max deploy and run time.
    Its linearity: ``worst_doubling_ratio`` (at ``worst_doubling_at`` nodes), the worst
    single doubling, and ``fitted_doubling_ratio``, the doubling factor of a power law
    fitted to all sizes from 1,024 up; both from the fastest repeats, the former also from
    the medians.
    """
    cap = int(options.get("cap", DEFAULT_CAP))
    repeats = int(options.get("repeats", DEFAULT_REPEATS))
    min_time_s = float(options.get("min_time_s", DEFAULT_MIN_TIME_S))
    dim: dict[str, Any] = {"capability": "workflow.max_nodes", "unit": "nodes", "cap": cap,
                           "repeats": repeats, "min_time_s": min_time_s, "value": None,
                           "curve": [], "rounds": 0,
                           "worst_doubling_ratio": None, "worst_doubling_at": None,
                           "worst_doubling_ratio_median": None,
                           "worst_doubling_at_median": None, "fitted_doubling_ratio": None}
    if not isinstance(adapter, Engines):
        return _not_measured(adapter, dim, WORKFLOW_IDS)
    curve, good, bad, dim["rounds"] = measure_curve(adapter, run_id, cap, repeats, min_time_s,
                                                    say)
    dim["curve"] = curve
    dim["value"] = good
    dim["status"] = "pass" if good else "fail"
    if bad is not None:
        first_failed = next(p for p in curve if p["nodes"] == bad)
        dim["reason"] = f"first failing size {bad}: {first_failed.get('error', 'failed')}"
    dim["worst_doubling_ratio"], dim["worst_doubling_at"] = worst_doubling(curve)
    dim["worst_doubling_ratio_median"], dim["worst_doubling_at_median"] = worst_doubling(
        curve, stat="median")
    dim["fitted_doubling_ratio"] = fitted_doubling(curve)
    if dim["worst_doubling_ratio"] is not None:
        fitted = ("" if dim["fitted_doubling_ratio"] is None else
                  f"doubling N multiplies deploy + run time by {dim['fitted_doubling_ratio']} "
                  "on a power law fitted to all sizes; ")
        say(f"workflow linearity (fastest repeats): {fitted}worst single doubling "
            f"{dim['worst_doubling_ratio']} "
            f"({dim['worst_doubling_at'] // 2} -> {dim['worst_doubling_at']} nodes)")
    caps = {"workflow.dag": _dag(adapter, run_id, good),
            **_breaker_and_lineage(adapter, run_id)}
    return dim, caps


def _dag(adapter: Engines, run_id: str, largest: int) -> dict[str, Any]:
    cyclic = {"name": f"crmbench probe {run_id} cycle",
              "nodes": [{"id": "a", "type": "join"}, {"id": "b", "type": "join"}],
              "edges": [["a", "b"], ["b", "a"]]}
    dangling = {"name": f"crmbench probe {run_id} dangling",
                "nodes": [{"id": "a", "type": "join"}], "edges": [["a", "ghost"]]}
    refused = {label: adapter.deploy_workflow(doc)[0] for label, doc in
               (("cycle", cyclic), ("dangling", dangling))}
    wrong = [k for k, s in refused.items() if s is not Status.rejected]
    if wrong:
        return verdict("fail", {k: s.value for k, s in refused.items()},
                    f"invalid documents not refused: {', '.join(wrong)}")
    if not largest:
        return verdict("fail", reason="no workflow was accepted and executed")
    return verdict("pass", {"largest_executed": largest, "cycle": "rejected",
                         "dangling": "rejected"})


def _breaker_and_lineage(adapter: Engines, run_id: str) -> dict[str, dict[str, Any]]:
    doc = {"name": f"crmbench probe {run_id} breaker",
           "nodes": [{"id": "c", "type": "condition", "field": "amount", "op": ">",
                      "value": 1000},
                     {"id": "n", "type": "action", "action": "notify", "channel": "email"}],
           "edges": [["c", "n", "true"]]}
    status, deployed = adapter.deploy_workflow(doc)
    if status is not Status.ok or not deployed:
        failed = verdict("fail", reason=f"deploying the probe workflow answered {status.value}")
        return {"workflow.breaker": failed, "workflow.lineage": failed}
    wid = int(deployed["id"])
    listener = _Listener(adapter, ["workflow.paused"])
    try:
        outcomes = [adapter.run_workflow(wid, {"amount": "not a number"})[1] for _ in range(3)]
        refused, _ = adapter.run_workflow(wid, {"amount": 1})
        paused = listener.wait_for(lambda m: m.payload.get("workflow_id") == wid)
    finally:
        listener.close()
    failed_runs = [o.get("status") for o in outcomes if o]
    if failed_runs != ["failed"] * 3 or refused is not Status.rejected or paused is None:
        breaker = verdict("fail", {"runs": failed_runs, "fourth_run": refused.value,
                                "paused_message": paused is not None},
                       "three failed runs did not pause the workflow and notify")
    else:
        breaker = verdict("pass", {"runs": failed_runs, "fourth_run": "refused",
                                "notify": paused.payload.get("notify")})
    adapter.resume_workflow(wid)
    status, lineage = adapter.workflow_lineage(wid)
    reads = {r.get("field") for r in (lineage or {}).get("reads", [])}
    integrations = {i.get("channel") for i in (lineage or {}).get("integrations", [])}
    if status is Status.ok and "amount" in reads and "email" in integrations:
        lin = verdict("pass", {"reads": sorted(reads), "integrations": sorted(integrations)})
    else:
        lin = verdict("fail", lineage, f"lineage answered {status.value} without the read field "
                                    "and the integration")
    return {"workflow.breaker": breaker, "workflow.lineage": lin}


# ---------------------------------------------------------------------------- SLAs


def _sla_record(adapter: Any, run_id: str, level: str) -> tuple[str, int | None]:
    if level == "process":
        status, opp = adapter.record_call("POST", "/opportunities", {
            "customer_id": 1, "owner_rep_id": 1, "name": f"crmbench probe {run_id} sla",
            "stage": "qualification", "amount": 1000.0, "expected_close": "2030-01-01"})
        return "opportunity", (int(opp["id"]) if status is Status.ok and opp else None)
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


def probe_sla(adapter: Any, run_id: str, options: dict[str, Any], say: Say) -> Outcome:
    """sla.granularity and breach-detection lag per level, on the test clock if there is one.

    Test clock: lag = receipt of sla.breached - start of the advance call that crossed the
    deadline. Real time: lag = receipt - (start of the record's create call + T).
    """
    dim: dict[str, Any] = {"capability": "sla.granularity", "unit": "level", "value": None,
                           "levels": {}}
    if not isinstance(adapter, Engines) or not isinstance(adapter, Realtime):
        return _not_measured(adapter, dim, SLA_IDS)
    test_clock = adapter.advance_clock(0) is Status.ok
    within = float(options.get("sla_within_s", 3_600.0 if test_clock else 2.0))
    listener = _Listener(adapter, ["sla.breached", "sla.escalated"])
    caps: dict[str, dict[str, Any]] = {}
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
        real_s = float(options.get("real_time_s", 2.0))
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
    adapter: Any, run_id: str, listener: _Listener, within: float
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


# ---------------------------------------------------------------------------- packs


def _checks_pass(adapter: Engines, name: str, timeout: float) -> tuple[bool, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, checks = adapter.pack_checks(name)
        if status is Status.ok and checks:
            last = checks
            if checks.get("all_passed"):
                return True, checks
        gevent.sleep(0.05)
    return False, last


# Checks of what a pack brings besides its modules (workflows, SLAs, reports).
BUNDLE_PARTS = ("workflows", "slas", "reports")


def probe_pack(adapter: Any, run_id: str, options: dict[str, Any], say: Say) -> Outcome:
    """pack.enable_time (enable call -> all checks pass), re-enable time and idempotency."""
    name = str(options.get("pack", "manufacturing"))
    timeout = float(options.get("pack_timeout_s", 60.0))
    dim: dict[str, Any] = {"capability": "pack.enable_time", "unit": "s", "value": None,
                           "modules": None, "bundle": None, "reenable_s": None,
                           "idempotent": False}
    if not isinstance(adapter, Engines):
        return _not_measured(adapter, dim, PACK_IDS)
    _status, before = adapter.record_call("GET", f"/packs/{name}")
    was_on = bool((before or {}).get("enabled"))
    if was_on:
        adapter.disable_pack(name)
    t0 = time.perf_counter()
    status, _ = adapter.enable_pack(name)
    passed, checks = _checks_pass(adapter, name, timeout) if status is Status.ok else (False, {})
    caps: dict[str, dict[str, Any]] = {}
    if not passed:
        dim.update(status="fail", reason=f"enable answered {status.value}; checks did not all "
                   f"pass within {timeout:g} s")
        failed = verdict("fail", checks or None, dim["reason"])
        return dim, {"pack.hotplug": failed, "pack.manufacturing": failed}
    dim["value"] = round(time.perf_counter() - t0, 6)
    found = {c.get("module") for c in checks.get("checks", [])}
    dim["modules"] = len(found - set(BUNDLE_PARTS))
    dim["bundle"] = {part: sum(c.get("module") == part for c in checks.get("checks", []))
                     for part in BUNDLE_PARTS}
    say(f"pack {name}: checks pass {dim['value']} s after enabling")
    again, _ = adapter.enable_pack(name)
    made, record = adapter.record_call("POST", "/mfg/equipment", {
        "serial_number": f"probe-{run_id}", "model": "crmbench probe"})
    off, _ = adapter.disable_pack(name)
    off_again, _ = adapter.disable_pack(name)
    hidden = adapter.record_call("GET", f"/mfg/equipment/{(record or {}).get('id', 0)}")[0]
    t0 = time.perf_counter()
    adapter.enable_pack(name)
    reenabled, _ = _checks_pass(adapter, name, timeout)
    dim["reenable_s"] = round(time.perf_counter() - t0, 6) if reenabled else None
    kept_status, kept = adapter.record_call("GET",
                                            f"/mfg/equipment/{(record or {}).get('id', 0)}")
    dim["idempotent"] = (again is Status.ok and off is Status.ok and off_again is Status.ok)
    kept_ok = kept_status is Status.ok and (kept or {}).get("serial_number") == f"probe-{run_id}"
    hot = {"idempotent": dim["idempotent"], "hidden_while_disabled": hidden.value,
           "data_kept": kept_ok, "reenable_s": dim["reenable_s"]}
    ok = dim["idempotent"] and made is Status.ok and hidden is not Status.ok and kept_ok
    caps["pack.hotplug"] = verdict("pass" if ok else "fail", hot,
                                None if ok else "enable/disable/enable did not behave")
    caps["pack.manufacturing"] = _manufacturing(adapter, run_id, checks)
    if not was_on:
        adapter.disable_pack(name)
    dim["status"] = "pass"
    return dim, caps


def _manufacturing(adapter: Any, run_id: str, checks: dict[str, Any]) -> dict[str, Any]:
    modules = {c.get("module") for c in checks.get("checks", []) if c.get("passed")}
    needed = {"bom", "equipment", "spare_parts", "ppap", "contracts"}
    if not needed <= modules:
        return verdict("fail", sorted(modules), f"modules missing or failing: "
                                             f"{sorted(needed - modules)}")
    part = f"probe-{run_id}"
    status, contract = adapter.record_call("POST", "/mfg/contracts",
                                           {"customer_id": 1, "part_number": part})
    status2, ppap = adapter.record_call("POST", "/mfg/ppap", {
        "customer_id": 1, "part_number": part, "elements": ["design_records"]})
    if status is not Status.ok or status2 is not Status.ok or not contract or not ppap:
        return verdict("fail", reason="could not create a contract and a PPAP submission")
    frozen, _ = adapter.record_call("POST", f"/mfg/contracts/{contract['id']}/approve", {})
    _st, pack = adapter.record_call("GET", "/packs/manufacturing")
    elements = [f for m in (pack or {}).get("modules", []) if m.get("name") == "ppap"
                for f in m.get("elements", [])]
    adapter.record_call("PATCH", f"/mfg/ppap/{ppap['id']}", {"elements": elements})
    released, done = adapter.record_call("POST", f"/mfg/contracts/{contract['id']}/approve", {})
    ok = (frozen is Status.rejected and released is Status.ok
          and (done or {}).get("status") == "approved")
    evidence = {"modules": sorted(modules), "incomplete_ppap": frozen.value,
                "complete_ppap": released.value}
    return verdict("pass" if ok else "fail", evidence,
                None if ok else "approval not frozen then released by PPAP completeness")
