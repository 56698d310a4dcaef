"""Engine probes against a live reference CRM with the test clock: dimensions and
capabilities; and the registry's verdicts for adapters that cannot serve a probe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bench.adapters.base import Capability, Status, declared
from bench.adapters.engines import Engines
from bench.adapters.noop import NoopAdapter
from bench.adapters.reference import ReferenceAdapter
from bench.probes import workflow as workflow_probe
from bench.probes.pack import PackOptions, probe_pack
from bench.probes.registry import ProbeContext, all_probes, run_probe
from bench.probes.sla import SlaOptions, probe_sla
from bench.probes.workflow import (
    WorkflowOptions,
    fitted_doubling,
    probe_workflow,
    summarise_size,
    workflow_doc,
    worst_doubling,
)
from tests.conftest import LIVE_TOKEN, start_live_crm


@pytest.fixture(scope="module")
def adapter(module_db_url: str, small_fixtures: Path) -> Iterator[ReferenceAdapter]:
    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(module_db_url, small_fixtures, reset=False, say=lambda _m: None)
    live, stop = start_live_crm(
        build_app(open_database(module_db_url), token=LIVE_TOKEN, test_clock=True)
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("CRMBENCH_API_TOKEN", LIVE_TOKEN)
    try:
        target = ReferenceAdapter.from_url(live.base.replace("http://", "reference+http://"))
        target.open()
        yield target
        target.close()
    finally:
        mp.undo()
        stop()


def test_the_probe_workflow_has_exactly_n_nodes() -> None:
    for n in (1, 2, 5, 9, 1024):
        doc = workflow_doc("x", n)
        assert len(doc["nodes"]) == n and len({node["id"] for node in doc["nodes"]}) == n


def test_probe_workflow_measures_up_to_the_cap(
    adapter: ReferenceAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(adapter, Engines)
    versions: dict[str, list[int]] = {}
    deploy = adapter.deploy_workflow

    def spy(doc: dict[str, Any]) -> tuple[Status, dict[str, Any] | None]:
        status, out = deploy(doc)
        versions.setdefault(doc["name"], []).append((out or {}).get("version", 0))
        return status, out

    monkeypatch.setattr(adapter, "deploy_workflow", spy)
    said: list[str] = []
    options = WorkflowOptions(cap=2048, repeats=2, min_time_s=0)
    dim, caps = probe_workflow(adapter, ProbeContext("wfprobe", said.append), options)
    assert dim is not None
    assert dim["capability"] == "workflow.max_nodes" and dim["status"] == "pass"
    assert dim["value"] == 2048 and dim["unit"] == "nodes" and dim["cap"] == 2048
    assert [p["nodes"] for p in dim["curve"]] == [2**k for k in range(12)]
    for p in dim["curve"]:
        assert p["accepted"] and p["executed"] and p["repeats"] == 2
        assert p["deploy_min_s"] <= p["deploy_s"] <= p["deploy_max_s"]
        assert p["run_min_s"] <= p["run_s"] <= p["run_max_s"]
    assert dim["worst_doubling_at"] == 2048 and dim["worst_doubling_ratio"] > 0
    assert any("x2" in m for m in said) and any("worst single doubling" in m for m in said)
    assert versions["crmbench probe wfprobe size 2048"] == [1, 2]
    for cid in ("workflow.dag", "workflow.breaker", "workflow.lineage"):
        assert caps[cid].status == "pass", caps[cid]


def test_probe_sla_finds_the_action_level_on_the_test_clock(adapter: ReferenceAdapter) -> None:
    dim, caps = probe_sla(adapter, ProbeContext("slaprobe", lambda _m: None), SlaOptions())
    assert dim is not None
    assert dim["capability"] == "sla.granularity" and dim["status"] == "pass", dim
    assert dim["value"] == "action"
    for level in ("field", "process", "action"):
        entry = dim["levels"][level]
        assert entry["supported"] and entry["clock"] == "test" and entry["breach_lag_ms"] >= 0
        met = caps[f"sla.{level}"].evidence["met_case"]
        assert met["action"] == "ok" and not met["breached"]
        assert met["readings"][-1]["status"] == "met"
    assert dim["lag_clock"] == "harness, real time"
    for cid in ("sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation"):
        assert caps[cid].status == "pass", caps[cid]


def test_probe_pack_enables_checks_and_hotplugs(adapter: ReferenceAdapter) -> None:
    dim, caps = probe_pack(adapter, ProbeContext("packprobe", lambda _m: None), PackOptions())
    assert dim is not None
    assert dim["capability"] == "pack.enable_time" and dim["status"] == "pass", dim
    assert dim["value"] > 0 and dim["reenable_s"] > 0
    reported = dim["server_reported"]
    assert reported["source"] == "server-reported" and reported["modules"] == 12
    assert reported["bundle"] == {"workflows": 2, "slas": 2, "reports": 3}
    assert dim["idempotent"] is True and dim["background"]["faults"] == 0
    assert dim["background"]["calls"] > 0
    assert caps["pack.manufacturing"].evidence["incomplete_ppap"] == "frozen"
    assert caps["pack.manufacturing"].evidence["control_without_documents"] == [
        "frozen", "frozen"]
    assert caps["pack.hotplug"].status == "pass", caps
    assert caps["pack.manufacturing"].status == "pass", caps


class _Flaky:
    """Deploys and runs that succeed, except the run numbered ``fail_run`` (from 1)."""

    def __init__(self, fail_run: int = 0) -> None:
        self.names: list[str] = []
        self.runs = 0
        self.fail_run = fail_run

    def deploy_workflow(self, doc: dict[str, Any]) -> tuple[Status, dict[str, Any]]:
        self.names.append(doc["name"])
        self.size = len(doc["nodes"])
        return Status.ok, {"id": 7, "version": len(self.names)}

    def run_workflow(self, workflow_id: int, input: dict[str, Any], wait: bool = True
                     ) -> tuple[Status, dict[str, Any]]:
        self.runs += 1
        self.proved = self.runs != self.fail_run
        if self.runs == self.fail_run:
            return Status.ok, {"status": "timed_out", "executed_nodes": 1}
        return Status.ok, {"status": "completed", "executed_nodes": self.size}


class _Proofs:
    """Stands for the stream: the last run's notification arrived when it succeeded."""

    def __init__(self, target: _Flaky) -> None:
        self.target = target

    def wait_for(self, _match: Any, _timeout: float = 0, since_ns: int = 0) -> object | None:
        return object() if self.target.proved else None


def _sizes(target: _Flaky) -> list[int]:
    """The size of every deploy, in order."""
    return [int(name.rsplit(" ", 1)[1]) for name in target.names]


def _curve(target: _Flaky, cap: int, repeats: int, min_time_s: float = 0.0,
           said: list[str] | None = None) -> tuple[list[dict[str, Any]], int, int | None, int]:
    return workflow_probe.measure_curve(target, "r", cap, repeats, min_time_s,  # type: ignore[arg-type]
                                       (said if said is not None else []).append,
                                       _Proofs(target))  # type: ignore[arg-type]


def test_sizes_are_measured_again_in_interleaved_rounds_as_new_versions() -> None:
    target = _Flaky()
    curve, good, bad, rounds = _curve(target, cap=8, repeats=3)
    # The search once up the sizes, then rounds up and down them.
    assert _sizes(target) == [1, 2, 4, 8, 1, 2, 4, 8, 8, 4, 2, 1]
    assert (good, bad, rounds) == (8, None, 2)
    assert [(p["nodes"], p["repeats"], p["executed"]) for p in curve] == [
        (1, 3, True), (2, 3, True), (4, 3, True), (8, 3, True)]
    assert len(set(target.names)) == 4  # one workflow per size, deployed again as versions


def test_only_small_probe_documents_are_kept_between_measurements(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflow_probe, "KEEP_DOCS_UP_TO", 2)
    target = _Flaky()
    series = workflow_probe._Series(target, "r", _Proofs(target))  # type: ignore[arg-type]
    for n in (1, 2, 4, 8, 8):
        assert series.measure(n)["executed"]
    assert sorted(series.docs) == [1, 2] and series.attempts[8][1]["executed"]


def test_a_size_failing_in_a_later_round_bounds_the_search_again() -> None:
    target = _Flaky(fail_run=7)  # size 4 in the first round after the search
    said: list[str] = []
    curve, good, bad, _rounds = _curve(target, cap=8, repeats=3, said=said)
    # 8 is not measured again after 4 failed; bisection between 2 and 4 finds 3.
    assert _sizes(target) == [1, 2, 4, 8, 1, 2, 4, 2, 1, 3, 3, 3]
    assert (good, bad) == (3, 4)
    points = {p["nodes"]: p for p in curve}
    assert points[3]["executed"] and points[3]["repeats"] == 3
    assert not points[4]["executed"] and "timed_out" in points[4]["error"]
    assert points[4]["accepted"] is False and points[4]["repeats"] == 2
    assert not points[8]["executed"] and "a smaller size failed" in points[8]["error"]
    assert any("workflow 8 nodes x1" in m and "smaller size failed" in m for m in said)


def test_a_failure_in_the_search_ends_the_doubling() -> None:
    target = _Flaky(fail_run=4)  # size 8 in the search
    curve, good, bad, _rounds = _curve(target, cap=64, repeats=2)
    assert _sizes(target)[:6] == [1, 2, 4, 8, 6, 7]
    assert (good, bad) == (7, 8) and max(p["nodes"] for p in curve) == 8


def test_a_stall_in_one_repeat_does_not_move_the_median() -> None:
    attempts = [{"deploy_s": d, "run_s": r, "accepted": True, "executed": True}
                for d, r in ((0.10, 0.02), (0.90, 0.03), (0.12, 0.01))]
    point = summarise_size(4096, attempts, 3)
    assert point["deploy_s"] == 0.12 and point["run_s"] == 0.02
    assert point["deploy_min_s"] == 0.10 and point["deploy_max_s"] == 0.90
    assert point["run_min_s"] == 0.01 and point["run_max_s"] == 0.03
    assert point["accepted"] and point["executed"]
    assert not summarise_size(4096, attempts[:2], 3)["executed"]


def test_worst_doubling_looks_at_doublings_from_1024() -> None:
    def pt(n: int, total: float, executed: bool = True) -> dict[str, Any]:
        return {"nodes": n, "deploy_s": total, "run_s": 0.0, "executed": executed}

    curve = [pt(256, 0.001), pt(512, 0.01), pt(1024, 0.1), pt(2048, 0.2), pt(4096, 0.5),
             pt(8192, 1.0), pt(16384, 9.0, executed=False), pt(12288, 1.5)]
    assert worst_doubling(curve) == (2.5, 4096)
    assert worst_doubling(curve[:3]) == (None, None)
    # The fastest repeat of each size is the default; medians on request.
    curve[4].update(deploy_min_s=0.3, run_min_s=0.0)
    curve[5].update(deploy_min_s=0.6, run_min_s=0.0)
    assert worst_doubling(curve) == (2.0, 2048)
    assert worst_doubling(curve, stat="median") == (2.5, 4096)


def test_fitted_doubling_reads_the_power_law_of_the_whole_curve() -> None:
    def pt(n: int, total: float) -> dict[str, Any]:
        return {"nodes": n, "deploy_s": total, "run_s": 0.0, "executed": True}

    sizes = [512, 1024, 2048, 4096, 8192, 16384]
    linear = [pt(n, 1e-4 * n) for n in sizes]
    quadratic = [pt(n, 1e-8 * n * n) for n in sizes]
    assert fitted_doubling(linear) == 2.0
    assert fitted_doubling(quadratic) == 4.0
    assert fitted_doubling(linear[:3]) is None  # two sizes from 1,024: no fit
    # One disturbed size decides the worst doubling, not the fit.
    linear[4]["deploy_s"] *= 1.4
    assert worst_doubling(linear) == (2.8, 8192)
    fitted = fitted_doubling(linear)
    assert fitted is not None and 2.0 < fitted < 2.1
    # Sizes off the doublings (bisection) count at their own N.
    assert fitted_doubling([*quadratic, pt(12288, 1e-8 * 12288 ** 2)]) == 4.0


ENGINE_PROBES = ("workflow", "sla", "pack")


class _Undeclared(NoopAdapter):
    """A no-op adapter that declares nothing about the engines (and has no engine verbs)."""

    capabilities: ClassVar[dict[str, Capability]] = declared({"crud.mixed": "no-op"})


def test_adapters_without_engines_are_not_measured() -> None:
    target = _Undeclared.from_url("noop://")
    ctx = ProbeContext("none", lambda _m: None)
    for name in ENGINE_PROBES:
        probe = all_probes()[name]
        dim, caps = run_probe(probe, target, ctx, probe.options())
        assert dim is not None and dim["status"] == "not-measured"
        assert "Engines" in dim["reason"]
        assert caps and all(c.status == "not-measured" for c in caps.values())


class _Declaring(NoopAdapter):
    """A no-op adapter that declares every engine, agent and event capability absent."""

    capabilities: ClassVar[dict[str, Capability]] = declared(
        {"crud.mixed": "no-op"}, default="unsupported", note="no such engine")


def test_declared_unsupported_is_unsupported_in_every_probe_family() -> None:
    target = _Declaring.from_url("noop://")
    ctx = ProbeContext("none", lambda _m: None)
    probes = all_probes()
    assert {"agent_latency", "event_delay", "agent", "cdp", *ENGINE_PROBES} <= set(probes)
    for probe in probes.values():
        dim, caps = run_probe(probe, target, ctx, probe.options()) if probe.run else (
            _gate(probe, target))
        found = [*caps.values(), *([dim] if dim else [])]
        statuses = {c["status"] if isinstance(c, dict) else c.status for c in found}
        assert statuses == {"unsupported"}, (probe.name, found)
        assert all((c["reason"] if isinstance(c, dict) else c.reason) == "no such engine"
                   for c in found)


def _gate(probe: Any, target: Any) -> Any:
    from bench.probes.registry import gate

    found = gate(probe, target)
    assert found is not None
    return found


def test_options_come_from_the_scenario_tables_with_their_file_names() -> None:
    probes = all_probes()
    tables: Any = {"engines": {"workflow": True, "workflow_cap": 64, "sla_within_s": 5,
                               "pack_name": "retail"},
                   "probes": {"event_rate": 10, "event_batch": 4}}
    assert probes["workflow"].settings(tables) == WorkflowOptions(cap=64)
    assert probes["sla"].settings(tables) == SlaOptions(within_s=5.0)
    assert probes["pack"].settings(tables) == PackOptions(name="retail")
    assert probes["event_delay"].settings(tables).batch == 4
    assert [p.name for p in probes.values() if p.enabled(tables)] == [
        "event_delay", "workflow", "cdp"]


class _Slow(_Flaky):
    def deploy_workflow(self, doc: dict[str, Any]) -> tuple[Status, dict[str, Any]]:
        time.sleep(0.01)
        return super().deploy_workflow(doc)


def test_small_sizes_are_measured_until_the_minimum_time_is_spent() -> None:
    target = _Slow()
    curve, _good, _bad, _rounds = _curve(target, cap=2, repeats=2, min_time_s=0.05)
    assert all(2 < p["repeats"] <= 6 and p["executed"] for p in curve)
    # Never past the ceiling, however fast the target.
    curve, _good, _bad, rounds = _curve(_Flaky(), cap=2, repeats=2, min_time_s=60)
    assert [p["repeats"] for p in curve] == [workflow_probe.MAX_REPEATS] * 2
    assert rounds == workflow_probe.MAX_REPEATS - 1


def test_the_measurements_of_each_size_are_spread_over_all_rounds() -> None:
    target = _Flaky()
    series = workflow_probe._Series(target, "r", _Proofs(target))  # type: ignore[arg-type]
    for n, first_s in ((1, 0.1), (2, 0.5)):
        series.docs[n] = workflow_doc(f"crmbench probe r size {n}", n)
        series.attempts[n] = [{"deploy_s": first_s, "run_s": 0.0, "accepted": True,
                               "executed": True}]
    said: list[str] = []
    # 1 s of measurements: 9 more of size 1, 1 more of size 2 (2 repeats), in 9 rounds.
    assert workflow_probe._rounds(series, [1, 2], 2, 1.0, said.append) == 9
    assert _sizes(target) == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1]  # size 2 in the middle round
    assert said == ["workflow round 9/9: 1 size measured again in 0.00 s"]
