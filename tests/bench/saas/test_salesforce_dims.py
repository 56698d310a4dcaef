"""The five dimensions on Salesforce, against fakes: a real gRPC Pub/Sub server on localhost
and a fake org replaying the Tooling, Metadata, Agent and REST APIs' documented exchanges."""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from bench.adapters.base import EventInput, Realtime, RunPlan, Status, StreamMessage
from bench.adapters.saas.salesforce import SalesforceAdapter
from bench.adapters.saas.salesforce_flows import flow_metadata
from bench.adapters.saas.salesforce_pubsub import (
    PubSubAuth,
    PubSubClient,
    PubSubError,
    Secret,
    message,
)
from bench.adapters.saas.salesforce_realtime import event_marker, marker_keys
from bench.errors import UserError
from bench.probes.capability import CDP as CDP_PROBE
from bench.probes.inrun import AGENT_LATENCY, EVENT_DELAY
from bench.probes.pack import PROBE as PACK_PROBE
from bench.probes.pack import PackOptions
from bench.probes.registry import NoOptions, ProbeContext, gate, run_probe
from bench.probes.sla import PROBE as SLA_PROBE
from bench.probes.sla import SlaOptions
from bench.probes.workflow import PROBE as WORKFLOW_PROBE
from bench.probes.workflow import WorkflowOptions
from tests.bench.saas.fake_salesforce_dims import FakeSalesforceOrg
from tests.bench.saas.fake_salesforce_pubsub import FakePubSub, account_change
from tests.bench.saas.fakes import SF_CLIENT_ID, SF_CLIENT_SECRET, SF_INSTANCE, SF_LOGIN_HOST

RUN = "run-dims-7"
AGENT = "0XxFAKEAGENT001"
ENV = {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET}


@pytest.fixture()
def org() -> Iterator[FakeSalesforceOrg]:
    fake = FakeSalesforceOrg()
    with FakePubSub(lambda t: t in fake.valid_tokens, SF_INSTANCE, "00Dfake") as server:
        fake.pubsub = server
        yield fake


def make(org: FakeSalesforceOrg, env: dict[str, str] | None = None) -> SalesforceAdapter:
    assert org.pubsub is not None
    adapter = SalesforceAdapter(
        SF_LOGIN_HOST, environ={**ENV, **(env or {})}, run_id=RUN, customers=6,
        transport=org.transport(), sleep=org.advance, clock=lambda: org.now,
        pubsub_endpoint=org.pubsub.endpoint, pubsub_secure=False)
    return adapter


@pytest.fixture()
def seeded(org: FakeSalesforceOrg) -> Iterator[SalesforceAdapter]:
    adapter = make(org, {"SALESFORCE_AGENT_ID": AGENT})
    adapter.open()
    adapter.preflight(RunPlan(run_id=RUN, scenario="events", estimated_calls=100))
    yield adapter
    adapter.close()


def collect(it: Iterator[StreamMessage], into: list[StreamMessage], n: int) -> threading.Thread:
    def run() -> None:
        for msg in it:
            into.append(msg)
            if len(into) >= n:
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def ctx() -> ProbeContext:
    return ProbeContext(RUN, lambda line: None)


# ------------------------------------------------------------------ Pub/Sub API client


def test_messages_keep_the_published_proto_field_numbers() -> None:
    # pubsub_api.proto: FetchRequest topic_name = 1, replay_preset = 2, replay_id = 3,
    # num_requested = 4; FetchResponse events = 1, pending_num_requested = 4.
    raw = message("FetchRequest")(topic_name="/t", replay_preset=2, replay_id=b"\x07",
                                  num_requested=5).SerializeToString()
    assert raw == b"\x0a\x02/t\x10\x02\x1a\x01\x07\x20\x05"
    # ConsumerEvent{event = 1: ProducerEvent{schema_id = 2, payload = 3}, replay_id = 2}
    event = b"\x0a\x06\x12\x01s\x1a\x01p\x12\x01\x09"
    parsed = message("FetchResponse").FromString(b"\x0a" + bytes([len(event)]) + event
                                                 + b"\x20\x03")
    assert parsed.pending_num_requested == 3
    assert parsed.events[0].replay_id == b"\x09"
    assert (parsed.events[0].event.schema_id, parsed.events[0].event.payload) == ("s", b"p")
    topic = message("TopicInfo").FromString(b"\x20\x01\x2a\x03abc")
    assert topic.can_subscribe and topic.schema_id == "abc"


def _client(org: FakeSalesforceOrg, token: str, batch: int = 100) -> PubSubClient:
    assert org.pubsub is not None
    return PubSubClient(org.pubsub.endpoint,
                        lambda: PubSubAuth(Secret(token), SF_INSTANCE, "00Dfake"),
                        secure=False, batch=batch)


def test_subscription_decodes_avro_asks_for_more_and_resumes(org: FakeSalesforceOrg) -> None:
    org.valid_tokens.add("tok")
    client = _client(org, "tok", batch=2)
    assert client.topic("/data/AccountChangeEvent")["can_subscribe"] is True
    got: list[Any] = []
    stream = client.subscribe("/data/AccountChangeEvent")

    def run() -> None:
        for event in stream:
            got.append(event)
            if len(got) == 5:
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert org.pubsub is not None and org.pubsub.subscribed.wait(5)
    before = time.perf_counter_ns()
    for i in range(5):
        org.pubsub.publish("/data/AccountChangeEvent",
                           account_change(f"001{i}", {"Description": f"d{i}"}, 1))
    thread.join(5)
    assert [e.payload["Description"] for e in got] == [f"d{i}" for i in range(5)]
    assert got[0].payload["ChangeEventHeader"]["recordIds"] == ["0010"]
    assert all(e.received_ns >= before for e in got)
    # Five events at two per request: the client asked again each time its credit ran out.
    assert [r.num_requested for r in org.pubsub.fetch_requests] == [2, 2, 2]
    # Resuming after the third event replays the last two.
    resumed: list[Any] = []
    for event in client.subscribe("/data/AccountChangeEvent", replay_id=got[2].replay_id):
        resumed.append(event.payload["Description"])
        if len(resumed) == 2:
            break
    assert resumed == ["d3", "d4"]
    client.close()


def test_a_refused_session_is_a_clear_error(org: FakeSalesforceOrg) -> None:
    client = _client(org, "not-a-session")
    with pytest.raises(PubSubError, match="UNAUTHENTICATED"):
        client.topic("/data/AccountChangeEvent")
    with pytest.raises(PubSubError, match="UNAUTHENTICATED"):
        next(iter(client.subscribe("/data/AccountChangeEvent")))
    client.close()


# ------------------------------------------------------------------ event delay


def test_markers_round_trip() -> None:
    assert marker_keys(event_marker(["a-1", "a-2"])) == ["a-1", "a-2"]
    assert marker_keys("a customer description") == []
    assert marker_keys(None) == []


def test_event_writes_reach_the_harness_as_change_events(
        org: FakeSalesforceOrg, seeded: SalesforceAdapter) -> None:
    assert isinstance(seeded, Realtime)
    assert not org.cdc_selected
    got: list[StreamMessage] = []
    thread = collect(seeded.subscribe(["profile.updated"]), got, 4)
    assert org.pubsub is not None and org.pubsub.subscribed.wait(5)
    assert org.cdc_selected, "Account is selected for Change Data Capture before subscribing"
    sent = time.perf_counter_ns()
    one = seeded.send_events([EventInput(2, "page_view", "w0-1", "2026-01-01T00:00:00Z")])
    batch = seeded.send_events([
        EventInput(3, "page_view", "w0-2", "2026-01-01T00:00:00Z"),
        EventInput(4, "download", "w0-3", "2026-01-01T00:00:00Z"),
        EventInput(3, "purchase", "w0-4", "2026-01-01T00:00:00Z")])
    thread.join(5)
    assert (one, batch) == (Status.ok, Status.ok)
    assert sorted(m.payload["idempotency_key"] for m in got) == ["w0-1", "w0-2", "w0-3", "w0-4"]
    assert all(m.type == "profile.updated" and m.received_ns >= sent for m in got)
    by_key = {m.payload["idempotency_key"]: m for m in got}
    assert by_key["w0-1"].customer_id == 2 and by_key["w0-4"].customer_id == 3
    # The batch went out as one sObject Collections request, one record per Account.
    patches = org.api_requests("/composite/sobjects", "PATCH")
    assert len(patches) == 1


def test_a_refused_channel_check_is_tried_once_and_events_still_flow(
        org: FakeSalesforceOrg, seeded: SalesforceAdapter) -> None:
    org.cdc_selected, org.members_refused = True, True
    for key in ("w1-1", "w1-2"):  # two subscriptions, as after a reconnect
        got: list[StreamMessage] = []
        thread = collect(seeded.subscribe(["profile.updated"]), got, 1)
        assert org.pubsub is not None and org.pubsub.subscribed.wait(5)
        time.sleep(0.05)
        seeded.send_events([EventInput(1, "page_view", key, "2026-01-01T00:00:00Z")])
        thread.join(5)
        assert [m.payload["idempotency_key"] for m in got] == [key]
        org.pubsub.subscribed.clear()
    assert len(org.api_requests("/tooling/query")) == 1


def test_events_for_unknown_customers_are_not_sent(
        org: FakeSalesforceOrg, seeded: SalesforceAdapter) -> None:
    before = len(org.requests)
    status = seeded.send_events([EventInput(999, "page_view", "x", "2026-01-01T00:00:00Z")])
    assert status is Status.not_found and len(org.requests) == before


def test_probes_are_gated_by_what_the_org_offers(org: FakeSalesforceOrg) -> None:
    with_agent = make(org, {"SALESFORCE_AGENT_ID": AGENT})
    without = make(org)
    assert gate(EVENT_DELAY, with_agent) is None
    assert gate(AGENT_LATENCY, with_agent) is None
    entry, _ = gate(AGENT_LATENCY, without) or (None, None)
    assert entry is not None and entry["status"] == "unsupported"
    assert "SALESFORCE_AGENT_ID" in entry["reason"]
    _entry, found = gate(CDP_PROBE, with_agent) or (None, {})
    assert {v.status for v in found.values()} == {"unsupported"}
    assert "Data Cloud" in (found["cdp.realtime"].reason or "")


# ------------------------------------------------------------------ agent latency


def _outcome(adapter: SalesforceAdapter, types: list[str]) -> StreamMessage:
    got: list[StreamMessage] = []
    thread = collect(adapter.subscribe(types), got, 1)
    time.sleep(0.05)
    status, run_id = adapter.start_agent_run(7, 3)
    assert status is Status.ok and run_id
    thread.join(5)
    assert got and got[0].payload["run_id"] == run_id
    return got[0]


def test_an_agent_run_is_a_session_and_a_message_timed_to_the_answer(
        org: FakeSalesforceOrg, seeded: SalesforceAdapter) -> None:
    before = time.perf_counter_ns()
    msg = _outcome(seeded, ["agent.completed", "agent.escalated"])
    assert msg.type == "agent.completed" and msg.received_ns > before
    assert "lead 7" in org.agent_messages[0]["text"]
    status, run = seeded.agent_run(msg.payload["run_id"])
    assert status is Status.ok and run is not None and run["status"] == "completed"
    deadline = time.monotonic() + 5
    while not org.ended_sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert org.ended_sessions[0][1] == "UserRequest"


def test_an_escalating_or_failing_agent_is_told_apart(
        org: FakeSalesforceOrg, seeded: SalesforceAdapter) -> None:
    org.agent_reply = [{"type": "Escalate", "id": "m2", "message": "Handing over."}]
    assert _outcome(seeded, list(AGENT_TYPES)).type == "agent.escalated"
    org.agent_ids.clear()
    failed = _outcome(seeded, list(AGENT_TYPES))
    assert failed.type == "agent.failed" and "HTTP 404" in failed.payload["detail"]


def test_without_an_agent_id_no_run_starts(org: FakeSalesforceOrg) -> None:
    adapter = make(org)
    adapter.open()
    assert adapter.start_agent_run(1) == (Status.unsupported, None)
    wrong = make(org, {"SALESFORCE_AGENT_ID": "my-agent"})
    wrong.open()
    assert wrong.start_agent_run(1) == (Status.unsupported, None)
    assert "0Xx" in wrong.capabilities["agent.latency"].note
    assert not org.api_requests("/einstein/")


AGENT_TYPES = ("agent.completed", "agent.escalated", "agent.failed")


# ------------------------------------------------------------------ flows


def test_flow_metadata_chains_exactly_n_elements() -> None:
    meta = flow_metadata("f", 4, "62.0")
    assert len(meta["assignments"]) == 3 and len(meta["recordUpdates"]) == 1
    assert meta["start"]["connector"]["targetReference"] == "a1"
    assert meta["assignments"][-1]["connector"]["targetReference"] == "write"
    single = flow_metadata("f", 1, "62.0")
    assert single["assignments"] == [] and single["start"]["connector"] == {
        "targetReference": "write"}


def test_largest_flow_that_runs_is_found_and_everything_is_removed(
        org: FakeSalesforceOrg) -> None:
    org.flow_run_limit = 20
    adapter = make(org)
    adapter.open()
    entry, caps = run_probe(WORKFLOW_PROBE, adapter, ctx(), WorkflowOptions(cap=64))
    assert entry is not None and entry["status"] == "pass" and entry["value"] == 20
    tried = [p["nodes"] for p in entry["curve"]]
    assert tried[:6] == [1, 2, 4, 8, 16, 32]
    failed = next(p for p in entry["curve"] if p["nodes"] == 32)
    assert failed["accepted"] and not failed["executed"]
    assert "CPU time" in failed["error"] and "first failing size 21" in entry["reason"]
    assert "2,000" in entry["limits_documented"]
    assert org.flows == {} and "left_behind" not in entry
    probe_accounts = [r for r in org.records["Account"].values() if "flow probe" in r["Name"]]
    assert probe_accounts == []
    assert caps["workflow.breaker"].status == "unsupported"
    assert caps["workflow.dag"].status == "not-measured"


def test_a_flow_too_large_to_create_is_not_accepted(org: FakeSalesforceOrg) -> None:
    org.flow_create_limit = 5
    adapter = make(org)
    adapter.open()
    entry, _ = run_probe(WORKFLOW_PROBE, adapter, ctx(), WorkflowOptions(cap=8))
    assert entry is not None and entry["value"] == 5
    refused = next(p for p in entry["curve"] if p["nodes"] == 8)
    assert not refused["accepted"] and "FIELD_INTEGRITY_EXCEPTION" in refused["error"]


def test_a_flow_whose_effect_is_wrong_does_not_count(org: FakeSalesforceOrg) -> None:
    adapter = make(org)
    adapter.open()
    original = org._run_flow

    def lossy(name: str, body: dict[str, Any]) -> Any:
        resp = original(name, body)
        for record in org.records["Account"].values():  # the write is lost
            record.pop("Description", None)
        return resp

    org._run_flow = lossy  # type: ignore[method-assign]
    entry, _ = run_probe(WORKFLOW_PROBE, adapter, ctx(), WorkflowOptions(cap=4))
    assert entry is not None and entry["status"] == "fail" and entry["value"] is None
    assert "read back" in entry["curve"][0]["error"]


# ------------------------------------------------------------------ milestones


def test_smallest_milestone_and_its_violation_on_the_harness_clock(
        org: FakeSalesforceOrg) -> None:
    adapter = make(org)
    adapter.open()
    entry, caps = run_probe(SLA_PROBE, adapter, ctx(), SlaOptions())
    assert entry is not None and entry["status"] == "pass", entry
    assert entry["value"] == 1
    assert [t["accepted"] for t in entry["tried"]] == [False, True]
    assert "at least 1" in entry["tried"][0]["problem"]
    seen = entry["violation"]
    assert seen["violated"] and seen["server_window_s"] == 60.0
    assert seen["seen_after_s"] >= 60 and 0 <= seen["lag_s"] <= 5.0
    assert org.processes == {} and org.milestone_types == set()
    assert not org.records.get("Case") and not org.records.get("Entitlement")
    assert caps["sla.field"].status == "not-measured"


def test_an_org_without_entitlement_management_is_unsupported(org: FakeSalesforceOrg) -> None:
    org.entitlements = False
    adapter = make(org)
    adapter.open()
    entry, _ = run_probe(SLA_PROBE, adapter, ctx(), SlaOptions())
    assert entry is not None and entry["status"] == "unsupported"
    assert "NOT_FOUND" in entry["reason"] and "Entitlement" in entry["reason"]
    assert not org.api_requests("/metadata/deployRequest")


# ------------------------------------------------------------------ packages


def test_package_install_time_needs_a_package_version(org: FakeSalesforceOrg) -> None:
    adapter = make(org)
    adapter.open()
    entry, caps = run_probe(PACK_PROBE, adapter, ctx(), PackOptions())
    assert entry is not None and entry["status"] == "not-measured"
    assert "SALESFORCE_PACKAGE_VERSION_ID" in entry["reason"]
    assert {v.status for v in caps.values()} == {"not-measured"}
    assert not org.api_requests("/tooling/")


def test_package_install_is_timed_until_the_org_lists_it(org: FakeSalesforceOrg) -> None:
    version = "04tFAKE00000001AAA"
    adapter = make(org, {"SALESFORCE_PACKAGE_VERSION_ID": version})
    adapter.open()
    entry, _ = run_probe(PACK_PROBE, adapter, ctx(), PackOptions())
    assert entry is not None and entry["status"] == "pass" and entry["value"] >= 0
    assert entry["server_reported"]["status"] == "SUCCESS"
    assert entry["uninstall"] == "Success" and version not in org.installed
    bad = make(org, {"SALESFORCE_PACKAGE_VERSION_ID": "managed-pack"})
    bad.open()
    with pytest.raises(UserError, match="04t"):
        run_probe(PACK_PROBE, bad, ctx(), PackOptions())


def test_other_adapters_keep_the_generic_probes() -> None:
    class Plain:
        name = "plain"
        capabilities: ClassVar[dict[str, Any]] = {}

    entry, _ = run_probe(PACK_PROBE, Plain(), ctx(), PackOptions())
    assert entry is not None and "Engines" in entry["reason"]
    assert run_probe(CDP_PROBE, Plain(), ctx(), NoOptions())[1]["cdp.realtime"].status \
        == "not-measured"


GEVENT_CHILD = """
from gevent import monkey
monkey.patch_all()
import sys
import gevent
from bench.adapters.saas.salesforce_pubsub import PubSubAuth, PubSubClient, Secret

client = PubSubClient(sys.argv[1], lambda: PubSubAuth(Secret("tok"), sys.argv[2], "00Dfake"),
                      secure=False)
ticks, got = [0], []

def ticker():
    while True:
        ticks[0] += 1
        gevent.sleep(0.01)

def listen():
    for event in client.subscribe("/data/AccountChangeEvent"):
        got.append(event.payload["Description"])
        if len(got) == 3:
            return

gevent.spawn(ticker)
listener = gevent.spawn(listen)
gevent.sleep(0.5)
print("ready", flush=True)
start = ticks[0]
listener.join(timeout=10)
print(len(got), ticks[0] - start, flush=True)
"""


def test_a_subscription_waits_cooperatively_in_a_gevent_process(
        org: FakeSalesforceOrg) -> None:
    """In the gevent-patched load generator, waiting for events must not block the hub."""
    assert org.pubsub is not None
    org.valid_tokens.add("tok")
    child = subprocess.Popen([sys.executable, "-c", GEVENT_CHILD, org.pubsub.endpoint,
                              SF_INSTANCE], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 15)
        ready = child.stdout.readline() if readable else ""
        assert ready.strip() == "ready", "the hub was blocked before the events were sent"
        assert org.pubsub.subscribed.wait(5)
        for i in range(3):
            time.sleep(0.1)
            org.pubsub.publish("/data/AccountChangeEvent",
                               account_change("001", {"Description": f"d{i}"}, 1))
        out, _ = child.communicate(timeout=20)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    received, ticks = (int(x) for x in out.split())
    assert received == 3 and ticks >= 10
