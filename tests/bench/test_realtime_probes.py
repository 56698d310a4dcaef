"""Agent and customer-data probes against the live reference CRM, and liars that must fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.base import CustomerChanges, Status
from bench.adapters.reference import ReferenceAdapter
from bench.probes.capability import probe_agent, probe_cdp
from bench.probes.inrun import AGENT_LATENCY, SERVER_REPORTED, RunState, StreamTotals, dimension
from bench.probes.registry import NoOptions, ProbeContext
from bench.scenarios.mixed import AnswerCheck
from tests.bench import liars_realtime as liars
from tests.conftest import LIVE_TOKEN, start_live_crm


@pytest.fixture(scope="module")
def adapter(module_db_url: str, small_fixtures: Path) -> Iterator[ReferenceAdapter]:
    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(module_db_url, small_fixtures, reset=False, say=lambda _m: None)
    live, stop = start_live_crm(build_app(open_database(module_db_url), token=LIVE_TOKEN))
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


_runs = iter(range(1_000_000))


def _ctx() -> ProbeContext:
    return ProbeContext(f"rt{next(_runs)}", lambda _m: None)


def test_the_reference_passes_the_agent_probe(adapter: ReferenceAdapter) -> None:
    _dim, caps = probe_agent(adapter, _ctx(), NoOptions())
    assert {k: v.status for k, v in caps.items()} == dict.fromkeys(caps, "pass"), caps
    takeover = caps["agent.takeover"].evidence
    assert takeover["quote_at"]["status"] == "completed"
    assert takeover["quote_above"]["in_human_queue"] is True
    assert takeover["confidence_below"]["status"] == "escalated"
    assert "durations_ms_server_reported" in caps["agent.steps"].evidence
    assert adapter.agent_config()[1]["min_confidence"] == 0.82  # type: ignore[index]


@pytest.mark.parametrize("liar", [liars.ConstantAgent, liars.WrongSteps, liars.NoQueue])
def test_a_lying_agent_fails(adapter: ReferenceAdapter, liar: type[liars.Liar]) -> None:
    _dim, caps = probe_agent(liar(adapter), _ctx(), NoOptions())  # type: ignore[arg-type]
    failed = {k for k, v in caps.items() if v.status == "fail"}
    wanted = {liars.ConstantAgent: {"agent.steps", "agent.takeover", "agent.explain"},
              liars.WrongSteps: {"agent.steps", "agent.explain"},
              liars.NoQueue: {"agent.takeover"}}[liar]
    assert wanted <= failed, caps


def test_a_platform_without_order_verbs_is_not_measured(adapter: ReferenceAdapter) -> None:
    class NoOrders(liars.Liar):
        def create_order_record(self, *_a: Any) -> tuple[Status, None]:
            return Status.unsupported, None

    _dim, caps = probe_agent(NoOrders(adapter), _ctx(), NoOptions())  # type: ignore[arg-type]
    assert {v.status for v in caps.values()} == {"not-measured"}


def test_the_reference_passes_the_cdp_probe(adapter: ReferenceAdapter) -> None:
    _dim, caps = probe_cdp(adapter, _ctx(), NoOptions())
    assert caps["cdp.realtime"].status == "pass", caps
    assert caps["cdp.tags_explained"].status == "pass", caps
    assert caps["cdp.realtime"].evidence["counted_in_profile"]["pricing_view"] == 2
    assert caps["cdp.tags_explained"].evidence["price_sensitivity_by_harness"] == 0.5


def test_echoed_tags_fail(adapter: ReferenceAdapter) -> None:
    _dim, caps = probe_cdp(liars.EchoedTags(adapter), _ctx(), NoOptions())  # type: ignore[arg-type]
    assert caps["cdp.tags_explained"].status == "fail"


def test_announced_but_unmade_profile_updates_fail(adapter: ReferenceAdapter) -> None:
    liar = liars.ClaimedUpdates(adapter)
    _dim, caps = probe_cdp(liar, _ctx(), NoOptions())  # type: ignore[arg-type]
    assert caps["cdp.realtime"].status == "fail"
    assert caps["cdp.tags_explained"].status != "pass"


def test_answers_that_do_not_read_back_count_as_errors(adapter: ReferenceAdapter) -> None:
    lying = AnswerCheck(liars.AlwaysOk(), every=1)
    assert lying.due("get_customer", Status.ok)
    assert not lying.verify("get_customer", (7,))
    changes = CustomerChanges(website="https://www.c12.example", employees=12)
    assert not lying.verify("update_customer", (7, changes))
    honest = AnswerCheck(adapter, every=1)
    assert honest.verify("get_customer", (7,))
    assert adapter.update_customer(7, changes) is Status.ok
    assert honest.verify("update_customer", (7, changes))
    assert not honest.due("search_customers", Status.ok)


def test_the_step_breakdown_is_labelled_server_reported() -> None:
    dim = dimension(AGENT_LATENCY, 1.0, StreamTotals(), RunState(True, 1.0, 1))
    assert dim["breakdown_source"] == SERVER_REPORTED
    assert "server-reported" not in dim["observed_via"]
