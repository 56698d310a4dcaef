"""The workflow probe: workflow.max_nodes with its scaling curve, and workflow.dag, .breaker
and .lineage, all observed on the target.

Asynchronous outcomes (paused workflows) are taken from the harness's own change-stream
subscription, stamped with ``time.perf_counter_ns`` like every send.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import LeadInput, Realtime, Status, StreamMessage
from bench.adapters.engines import Engines
from bench.probes.registry import Findings, Probe, ProbeContext, register
from bench.probes.stream import Listener
from bench.probes.verdict import Verdict, verdict

Say = Callable[[str], None]
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
# How long the notification of a run's last node may take to reach the harness.
PROOF_TIMEOUT_S = 5.0
WORKFLOW_IDS = ("workflow.dag", "workflow.breaker", "workflow.lineage")


class WorkflowOptions(msgspec.Struct, frozen=True, rename={
        "cap": "workflow_cap", "repeats": "workflow_repeats",
        "min_time_s": "workflow_min_time_s"}):
    """``[engines]`` settings: the largest size tried, repeats and minimum time per size."""

    cap: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = DEFAULT_CAP
    repeats: Annotated[int, msgspec.Meta(ge=1, le=20)] = DEFAULT_REPEATS
    # Sizes are measured again until their measurements add up to this (at most 50 times).
    min_time_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = DEFAULT_MIN_TIME_S

# ---------------------------------------------------------------------------- workflows


BLOCK = 5  # nodes of one chained block of workflow_doc


def workflow_doc(name: str, nodes: int, token: str = "") -> dict[str, Any]:
    """A workflow of exactly ``nodes`` nodes whose last one notifies ``token`` only when every
    block ran in order: block k's condition needs the counter ``s`` that block k-1 set."""
    out: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    prev: str | None = None
    if nodes >= 3:
        out.append({"id": "t", "type": "trigger", "on": "manual"})
        prev = "t"
    k = 0
    while len(out) + BLOCK + 2 <= nodes:
        p, c, x, a, j = f"p{k}", f"c{k}", f"x{k}", f"a{k}", f"j{k}"
        out += [{"id": p, "type": "parallel"},
                {"id": c, "type": "condition", "field": "s", "op": "==", "value": k},
                {"id": x, "type": "action", "action": "set", "field": "s", "value": k + 1},
                {"id": a, "type": "action", "action": "set", "field": f"v{k % 8}", "value": k},
                {"id": j, "type": "join"}]
        edges += [*([[prev, p]] if prev else []), [p, c], [p, a], [c, x, "true"], [x, j], [a, j]]
        prev = j
        k += 1
    while len(out) + 2 < nodes:
        node = f"n{len(out)}"
        out.append({"id": node, "type": "action", "action": "noop"})
        edges += [[prev, node]] if prev else []
        prev = node
    if nodes >= 2:
        out.append({"id": "done", "type": "condition", "field": "s", "op": "==", "value": k})
        edges += [[prev, "done"]] if prev else []
        prev = "done"
    out.append({"id": "proof", "type": "action", "action": "notify", "channel": "stream",
                "subject": token or name})
    if prev:
        edges.append([prev, "proof", "true"] if prev == "done" else [prev, "proof"])
    return {"name": name, "nodes": out, "edges": edges, "timeout_s": 600}


def _proof_of(wid: int, subject: str) -> Callable[[StreamMessage], bool]:
    def match(m: StreamMessage) -> bool:
        return (m.type == "workflow.notification" and m.payload.get("workflow_id") == wid
                and m.payload.get("node") == "proof" and m.payload.get("subject") == subject)
    return match


def _attempt(adapter: Engines, doc: dict[str, Any], n: int,
             listener: Listener | None = None, used: set[int] | None = None
             ) -> dict[str, Any]:
    """Deploy ``doc`` (a new version when its name exists) and run it once, both timed.

    Executed only when the run's last node was seen to act (its notification, on the
    harness's stream, after the run started): the platform's node count is kept as claimed.
    """
    out: dict[str, Any] = {"deploy_s": None, "run_s": None, "accepted": False,
                           "executed": False}
    t0 = time.perf_counter()
    status, deployed = adapter.deploy_workflow(doc)
    out["deploy_s"] = round(time.perf_counter() - t0, 6)
    if status is not Status.ok or not deployed or "id" not in deployed:
        out["error"] = f"deploy answered {status.value}"
        return out
    out["accepted"] = True
    since = time.perf_counter_ns()
    t0 = time.perf_counter()
    status, run = adapter.run_workflow(int(deployed["id"]), {"amount": 1, "s": 0}, wait=True)
    out["run_s"] = round(time.perf_counter() - t0, 6)
    if status is not Status.ok or not run:
        out["error"] = f"run answered {status.value}"
        return out
    out["claimed_nodes"] = run.get("executed_nodes")
    proof = None if listener is None else listener.wait_for(
        _unused(_proof_of(int(deployed["id"]), doc["nodes"][-1]["subject"]), used),
        PROOF_TIMEOUT_S, since_ns=since)
    if proof is not None and used is not None:
        used.add(id(proof))
    out["executed"] = run.get("status") == "completed" and proof is not None
    if not out["executed"]:
        out["error"] = (f"run {run.get('status')}, {run.get('executed_nodes')} of {n} nodes "
                        f"claimed, {'no' if proof is None else 'a'} notification of its last "
                        "node observed")
    return out


def _unused(match: Callable[[StreamMessage], bool], used: set[int] | None
            ) -> Callable[[StreamMessage], bool]:
    return lambda m: match(m) and (used is None or id(m) not in used)


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

    def __init__(self, adapter: Engines, run_id: str, listener: Listener | None = None) -> None:
        self.adapter, self.run_id, self.listener = adapter, run_id, listener
        self.used: set[int] = set()  # notifications already taken as a run's proof
        self.docs: dict[int, dict[str, Any]] = {}
        self.attempts: dict[int, list[dict[str, Any]]] = {}  # in the order sizes were tried

    def measure(self, n: int) -> dict[str, Any]:
        name = f"crmbench probe {self.run_id} size {n}"
        doc = self.docs.get(n) or workflow_doc(name, n, f"{name} done")
        if n <= KEEP_DOCS_UP_TO:  # small ones are measured up to MAX_REPEATS times
            self.docs[n] = doc
        attempt = _attempt(self.adapter, doc, n, self.listener, self.used)
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

    return largest_passing(measured, cap, good, bad)


def largest_passing(ok: Callable[[int], bool], cap: int, good: int = 0,
                    bad: int | None = None) -> tuple[int, int | None]:
    """The largest size up to ``cap`` that passes ``ok`` (each size tried once) and the
    smallest that failed: doubling from ``good`` (0: from 1) until a size fails, then
    bisection to within 1 % of the size."""
    if bad is None:
        n = 1 if good == 0 else min(good * 2, cap)
        while good < cap:
            if not ok(n):
                bad = n
                break
            good, n = n, min(n * 2, cap)
    while bad is not None and bad - good > max(1, good // 100):
        mid = (good + bad) // 2
        good, bad = (mid, bad) if ok(mid) else (good, mid)
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
                  say: Say, listener: Listener | None = None
                  ) -> tuple[list[dict[str, Any]], int, int | None, int]:
    """The scaling curve: the search measures each size once; then each size is measured
    again in interleaved rounds (``_rounds``) until it has ``repeats`` measurements, small
    ones more, as many as add up to ``min_time_s``. A size that fails in a later round
    bounds the search again (bisection below it).

    Returns the curve (one point per size, in the order tried), the largest size executed in
    all its measurements, the smallest failed size (None when none failed) and the number
    of rounds.
    """
    series = _Series(adapter, run_id, listener)
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


def probe_workflow(adapter: Engines, ctx: ProbeContext, options: WorkflowOptions) -> Findings:
    """workflow.max_nodes (doubling to the cap, then bisection) and the workflow capabilities.

    The curve (``measure_curve``) holds each size's median, min and max deploy and run time.
    Its linearity: ``worst_doubling_ratio`` (at ``worst_doubling_at`` nodes), the worst
    single doubling, and ``fitted_doubling_ratio``, the doubling factor of a power law
    fitted to all sizes from 1,024 up; both from the fastest repeats, the former also from
    the medians.
    """
    cap, repeats, min_time_s = options.cap, options.repeats, options.min_time_s
    run_id, say = ctx.run_id, ctx.say
    dim: dict[str, Any] = {"capability": "workflow.max_nodes", "unit": "nodes", "cap": cap,
                           "repeats": repeats, "min_time_s": min_time_s, "value": None,
                           "curve": [], "rounds": 0,
                           "worst_doubling_ratio": None, "worst_doubling_at": None,
                           "worst_doubling_ratio_median": None,
                           "worst_doubling_at_median": None, "fitted_doubling_ratio": None}
    if not isinstance(adapter, Realtime):
        reason = ("executions are verified on the change stream, and the adapter does not "
                  "implement the Realtime verbs")
        dim.update(status="not-measured", reason=reason)
        return dim, {cid: verdict("not-measured", reason=reason) for cid in WORKFLOW_IDS}
    listener = Listener(adapter, ["workflow.notification"])
    try:
        curve, good, bad, dim["rounds"] = measure_curve(adapter, run_id, cap, repeats,
                                                        min_time_s, say, listener)
    finally:
        listener.close()
    dim["executed_means"] = "the run's last node was seen to act on the harness's stream"
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
    caps = {"workflow.dag": _dag(adapter, run_id),
            **_breaker_and_lineage(adapter, run_id)}
    return dim, caps


# The fields of the probe lead the random DAG's conditions read, as the probe creates it.
PROBE_REGION, PROBE_SOURCE = 1, "referral"
# The update that triggers the DAG sets this contact name.
TRIGGER_NAME = "Probe Trigger"
SOURCES = ("web", "referral", "event", "partner", "cold_call")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: bool(a == b), "!=": lambda a, b: bool(a != b),
    ">=": lambda a, b: bool(a >= b), "<": lambda a, b: bool(a < b)}
READBACK_TIMEOUT_S = 10.0


def random_dag(seed: str, company: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random decision DAG for the probe lead named ``company``, and the lead's fields the
    harness expects it to write: one leaf of four, then the join after them."""
    rnd = random.Random(seed)
    conds = {"c1": ("region_id", rnd.choice(list(OPS)), rnd.randrange(3)),
             "c2": ("contact_name", rnd.choice(["==", "!="]),
                    rnd.choice([TRIGGER_NAME, "Someone Else"])),
             "c3": ("source", rnd.choice(["==", "!="]), rnd.choice(SOURCES))}
    nodes: list[dict[str, Any]] = [
        {"id": "t", "type": "trigger", "on": "record.updated", "object": "lead"},
        {"id": "mine", "type": "condition", "field": "company_name", "op": "==",
         "value": company},
        *({"id": c, "type": "condition", "field": f, "op": op, "value": v}
          for c, (f, op, v) in conds.items()),
        *({"id": f"leaf{i}", "type": "action", "action": "set_field", "field": "contact_name",
           "value": f"crmbench wf leaf{i} {seed}"} for i in range(4)),
        {"id": "j", "type": "join"},
        {"id": "end", "type": "action", "action": "set_field", "field": "status",
         "value": "contacted"}]
    edges = [["t", "mine"], ["mine", "c1", "true"], ["c1", "c2", "true"],
             ["c1", "c3", "false"], ["c2", "leaf0", "true"], ["c2", "leaf1", "false"],
             ["c3", "leaf2", "true"], ["c3", "leaf3", "false"],
             *([f"leaf{i}", "j"] for i in range(4)), ["j", "end"]]
    ctx = {"region_id": PROBE_REGION, "source": PROBE_SOURCE, "contact_name": TRIGGER_NAME}

    def holds(c: str) -> bool:
        f, op, v = conds[c]
        return OPS[op](ctx[f], v)

    leaf = (0 if holds("c2") else 1) if holds("c1") else (2 if holds("c3") else 3)
    doc = {"name": f"crmbench probe {seed} dag", "nodes": nodes, "edges": edges}
    return doc, {"contact_name": f"crmbench wf leaf{leaf} {seed}", "status": "contacted"}


def _refusals(adapter: Engines, run_id: str) -> dict[str, Any]:
    """Deploy a cyclic and a dangling document; each refusal must name its problem."""
    cyclic = {"name": f"crmbench probe {run_id} cycle",
              "nodes": [{"id": "a", "type": "join"}, {"id": "b", "type": "join"}],
              "edges": [["a", "b"], ["b", "a"]]}
    dangling = {"name": f"crmbench probe {run_id} dangling",
                "nodes": [{"id": "a", "type": "join"}], "edges": [["a", "ghost"]]}
    out: dict[str, Any] = {}
    for label, doc, names in (("cycle", cyclic, "cycl"), ("dangling", dangling, "ghost")):
        status, body = adapter.deploy_workflow(doc)
        message = str((body or {}).get("message", "")) if status is Status.rejected else ""
        out[label] = {"status": status.value, "message": message,
                      "named": names in message.lower()}
    return out


def _dag(adapter: Any, run_id: str) -> Verdict:
    refused = _refusals(adapter, run_id)
    unclear = [k for k, v in refused.items() if not v["named"]]
    if unclear:
        return verdict("fail", refused, "refusal of an invalid document does not name its "
                       f"problem: {', '.join(unclear)}")
    company = f"crmbench probe {run_id} dag"
    doc, expected = random_dag(run_id, company)
    status, deployed = adapter.deploy_workflow(doc)
    if status is not Status.ok or not deployed:
        return verdict("fail", refused, f"deploying the random DAG answered {status.value}: "
                       f"{(deployed or {}).get('message')}")
    try:
        return _dag_outcome(adapter, company, expected, refused)
    finally:
        adapter.deploy_workflow(workflow_doc(doc["name"], 1))  # no longer record-triggered


def _dag_outcome(adapter: Any, company: str, expected: dict[str, Any],
                 refused: dict[str, Any]) -> Verdict:
    status, lead = adapter.create_lead_record(LeadInput(
        company_name=company, contact_name="Probe Contact", product_interest=[1],
        region_id=PROBE_REGION, source=PROBE_SOURCE))
    if status is not Status.ok or lead is None:
        return verdict("fail", refused, f"creating the probe lead answered {status.value}")
    touched, _ = adapter.update_record("lead", lead, {"contact_name": TRIGGER_NAME})
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + READBACK_TIMEOUT_S
    while time.monotonic() < deadline:
        _st, record = adapter.read_record("lead", lead)
        seen = {k: (record or {}).get(k) for k in expected}
        if seen == expected:
            break
        gevent.sleep(0.05)
    evidence = {"refusals": refused, "expected": expected, "read_back": seen,
                "trigger_update": touched.value}
    if seen != expected:
        return verdict("fail", evidence, "the lead read back does not show the writes the "
                       "harness computed for the random DAG")
    return verdict("pass", evidence)


def _breaker_and_lineage(adapter: Engines, run_id: str) -> dict[str, Verdict]:
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
    listener = Listener(adapter, ["workflow.paused"])
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


PROBE = register(Probe(
    name="workflow", trigger=("engines", "workflow"), needs=(Engines,),
    options=WorkflowOptions, dimension="workflow.max_nodes", result_key="workflow",
    capabilities=WORKFLOW_IDS, run=probe_workflow,
))
