"""The customer-data sovereignty probes against the live reference CRM, and liars that fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.adapters.reference import ReferenceAdapter
from bench.adapters.sovereignty import VIEWS
from bench.probes.registry import ProbeContext, all_probes, gate
from bench.probes.sovereignty import IDS, SovereigntyOptions, probe_sovereignty
from tests.bench import liars_sovereignty as liars
from tests.bench.liars_realtime import Liar
from tests.conftest import LIVE_TOKEN, start_live_crm


@pytest.fixture(scope="module")
def adapter(module_db_url: str, small_fixtures: Path) -> Iterator[ReferenceAdapter]:
    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(module_db_url, small_fixtures, reset=False, say=lambda _m: None)
    live, stop = start_live_crm(build_app(open_database(module_db_url), token=LIVE_TOKEN))
    try:
        target = ReferenceAdapter.from_url(live.base.replace("http://", "reference+http://"),
                                           env={"CRMBENCH_API_TOKEN": LIVE_TOKEN})
        target.open()
        yield target
        target.close()
    finally:
        stop()


_runs = iter(range(1_000_000))
OPTIONS = SovereigntyOptions(sovereignty=True, sovereignty_settle_s=0.0)


def _ctx() -> ProbeContext:
    return ProbeContext(f"sv{next(_runs)}", lambda _m: None)


def test_the_reference_passes_all_five(adapter: ReferenceAdapter) -> None:
    _dim, caps = probe_sovereignty(adapter, _ctx(), OPTIONS)
    assert {k: v.status for k, v in caps.items()} == dict.fromkeys(IDS, "pass"), caps
    walked = caps["cdp.permissions"].evidence
    assert walked["roles_walked"] == 2 and walked["routes_walked"] == len(VIEWS)
    assert walked["answers"]["sales_rep"]["search_masked"] == "rejected"
    export = caps["cdp.export"].evidence
    assert export["sha256_by_harness"] == export["sha256_in_manifest"]
    assert caps["cdp.erase"].evidence["after_erase"]["export"] == "not_found"
    assert {"export", "erase"} <= set(caps["cdp.audit"].evidence["actions"])
    assert caps["cdp.audit"].evidence["as"] == "auditor"


@pytest.mark.parametrize(("liar", "cid"), [
    (liars.MasksNothing, "cdp.permissions"), (liars.WrongHash, "cdp.export"),
    (liars.KeepsAfterErase, "cdp.erase"), (liars.IgnoresConsent, "cdp.consent"),
    (liars.BrokenAudit, "cdp.audit"),
])
def test_each_lie_fails_its_probe(adapter: ReferenceAdapter, liar: type[Liar],
                                  cid: str) -> None:
    _dim, caps = probe_sovereignty(liar(adapter), _ctx(), OPTIONS)
    assert caps[cid].status == "fail", caps[cid]


def test_registered_and_gated() -> None:
    probe = all_probes()["sovereignty"]
    assert probe.ids == IDS
    assert probe.enabled({"probes": {"sovereignty": True}})
    _dim, found = gate(probe, object()) or (None, {})
    assert {v.status for v in found.values()} == {"not-measured"}
