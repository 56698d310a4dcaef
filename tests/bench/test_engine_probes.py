"""Engine probes against a live reference CRM with the test clock: dimensions and capabilities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.adapters.engines import Engines
from bench.adapters.noop import NoopAdapter
from bench.adapters.reference import ReferenceAdapter
from bench.scenarios.engine_probes import probe_pack, probe_sla, probe_workflow, workflow_doc
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


def test_probe_workflow_measures_up_to_the_cap(adapter: ReferenceAdapter) -> None:
    assert isinstance(adapter, Engines)
    dim, caps = probe_workflow(adapter, "wfprobe", {"cap": 1024}, lambda _m: None)
    assert dim["capability"] == "workflow.max_nodes" and dim["status"] == "pass"
    assert dim["value"] == 1024 and dim["unit"] == "nodes" and dim["cap"] == 1024
    assert [p["nodes"] for p in dim["curve"]] == [2**k for k in range(11)]
    assert all(p["accepted"] and p["executed"] for p in dim["curve"])
    for cid in ("workflow.dag", "workflow.breaker", "workflow.lineage"):
        assert caps[cid]["status"] == "pass", caps[cid]


def test_probe_sla_finds_the_action_level_on_the_test_clock(adapter: ReferenceAdapter) -> None:
    dim, caps = probe_sla(adapter, "slaprobe", {}, lambda _m: None)
    assert dim["capability"] == "sla.granularity" and dim["status"] == "pass", dim
    assert dim["value"] == "action"
    for level in ("field", "process", "action"):
        entry = dim["levels"][level]
        assert entry["supported"] and entry["clock"] == "test" and entry["breach_lag_ms"] >= 0
    for cid in ("sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation"):
        assert caps[cid]["status"] == "pass", caps[cid]


def test_probe_pack_enables_checks_and_hotplugs(adapter: ReferenceAdapter) -> None:
    dim, caps = probe_pack(adapter, "packprobe", {}, lambda _m: None)
    assert dim["capability"] == "pack.enable_time" and dim["status"] == "pass", dim
    assert dim["value"] > 0 and dim["reenable_s"] > 0 and dim["modules"] == 12
    assert dim["idempotent"] is True
    assert caps["pack.hotplug"]["status"] == "pass", caps
    assert caps["pack.manufacturing"]["status"] == "pass", caps


def test_adapters_without_engines_are_not_measured() -> None:
    target = NoopAdapter.from_url("noop://")
    for probe in (probe_workflow, probe_sla, probe_pack):
        dim, caps = probe(target, "none", {}, lambda _m: None)
        assert dim["status"] == "not-measured" and "Engines" in dim["reason"]
        assert all(c["status"] == "not-measured" for c in caps.values())
