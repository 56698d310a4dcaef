"""The change stream over real HTTP on both backends: resume, gaps, filters, ordering."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import httpx
import pytest

from reference_impl.db import Database
from reference_impl.stream import Filter, Outbox, StreamHub, Subscriber, publish
from tests.conftest import LiveCrm

NOW = "2026-01-05T10:00:00Z"


def _customer(c: httpx.Client, consent: bool = True) -> int:
    resp = c.post("/customers", json={"name": "Stream Probe", "industry": "x", "region_id": 1,
                                      "owner_rep_id": 1, "consent_profiling": consent})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _events(c: httpx.Client, customer_id: int, count: int) -> list[str]:
    keys = [f"st-{uuid.uuid4().hex}" for _ in range(count)]
    for key in keys:
        resp = c.post("/events", json={"customer_id": customer_id, "type": "page_view",
                                       "occurred_at": NOW, "idempotency_key": key})
        assert resp.status_code == 202, resp.text
    return keys


def _last_seq(c: httpx.Client) -> int:
    return int(c.get("/stream/info").json()["last_seq"])


def test_stream_needs_the_token_and_reports_its_window(live_crm: LiveCrm) -> None:
    assert httpx.get(f"{live_crm.base}/stream").status_code == 401
    with live_crm.client() as c:
        info = c.get("/stream/info").json()
        assert set(info) == {"last_seq", "oldest_seq", "retention"}
        assert info["retention"] == 100_000
        _events(c, _customer(c), 1)
        assert _last_seq(c) == info["last_seq"] + 1


def test_resume_after_disconnect_loses_and_repeats_nothing(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        cid = _customer(c)
        start = _last_seq(c)
        with live_crm.stream(after=start, customer_id=cid) as s:
            first = _events(c, cid, 5)
            got = s.take(3)
        assert [m["data"]["payload"]["idempotency_key"] for m in got] == first[:3]
        resume_at = got[-1]["id"]
        more = _events(c, cid, 4)
        with live_crm.stream(after=resume_at, customer_id=cid) as s:
            rest = s.take(6)
            marker = _events(c, cid, 1)
            assert s.next()["data"]["payload"]["idempotency_key"] == marker[0]
        assert [m["data"]["payload"]["idempotency_key"] for m in rest] == first[3:] + more
        seqs = [m["id"] for m in rest]
        assert seqs == sorted(seqs) and seqs[0] > resume_at
        assert all(m["id"] == m["data"]["seq"] and m["event"] == m["data"]["type"] for m in rest)
        # The standard reconnection header resumes the same way.
        with live_crm.stream(headers={"Last-Event-ID": str(rest[-2]["id"])}, customer_id=cid) as s:
            assert s.next()["id"] == rest[-1]["id"]


def test_resuming_below_retention_reports_a_gap(live_crm: LiveCrm) -> None:
    hub: StreamHub = live_crm.app.state.hub
    with live_crm.client() as c:
        cid = _customer(c)
        start = _last_seq(c)
        keys = _events(c, cid, 6)
        last = _last_seq(c)
        hub.retention = 3
        try:
            assert c.get("/stream/info").json()["oldest_seq"] == last - 2
            with live_crm.stream(after=start) as s:
                gap = s.next()
                rest = s.take(3)
        finally:
            hub.retention = 100_000
    assert gap["event"] == "stream.gap"
    assert gap["data"]["payload"] == {"requested_after": start, "oldest_available": last - 2}
    assert gap["id"] == last - 3
    assert [m["id"] for m in rest] == [last - 2, last - 1, last]
    assert [m["data"]["payload"]["idempotency_key"] for m in rest] == keys[3:]


def test_filters_by_type_and_customer(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        one, two = _customer(c), _customer(c)
        start = _last_seq(c)
        keys_one = _events(c, one, 2)
        _events(c, two, 2)
        keys_one += _events(c, one, 1)
        with live_crm.stream(after=start, customer_id=one) as s:
            got = s.take(3)
        assert [m["data"]["payload"]["idempotency_key"] for m in got] == keys_one
        assert {m["data"]["customer_id"] for m in got} == {one}
        lead = c.post("/leads", json={"company_name": "Filter Co", "contact_name": "A B",
                                      "region_id": 1, "product_interest": [1]}).json()
        with live_crm.stream(after=start, types="agent.*") as s:
            run = c.post("/agents/lead_intake/runs", json={"lead_id": lead["id"]}).json()
            msg = s.next()
        assert msg["event"].startswith("agent.")
        assert msg["data"]["payload"]["run_id"] == run["run_id"]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"types": ""}, {}, "types"),
        ({"types": "Profile Updated"}, {}, "types"),
        ({"types": "agent.*.x"}, {}, "types"),
        ({"after": "-1"}, {}, "after"),
        ({"customer_id": "x"}, {}, "customer_id"),
        ({"since": "1"}, {}, "since"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ],
)
def test_bad_stream_requests_are_400(
    live_crm: LiveCrm, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    with live_crm.client() as c:
        resp = c.get("/stream", params=params, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["field"] == field


class _NoDb:
    async def execute(self, sql: str, params: Any = ()) -> int:
        return 1


def _hub() -> StreamHub:
    return StreamHub(cast(Database, None), queue_size=2)


def test_delivery_waits_for_open_transactions_with_lower_seqs() -> None:
    async def scenario() -> None:
        hub = _hub()
        sub = Subscriber(Filter(), 100)
        hub._subscribers.add(sub)
        first, second, dropped = (Outbox(cast(Any, _NoDb())) for _ in range(3))
        for box in (first, dropped, second):
            publish(box, "test.x", None, {})
            await hub._write(box)
        hub._resolve(second.messages, committed=True)
        assert not sub.buffer and hub.delivered == 0
        hub._resolve(first.messages, committed=True)
        assert [m.seq for m in sub.buffer] == [1] and hub.delivered == 1
        hub._resolve(dropped.messages, committed=False)
        assert [m.seq for m in sub.buffer] == [1, 3] and hub.delivered == 3

    asyncio.run(scenario())


def test_a_slow_subscriber_is_disconnected_on_overflow() -> None:
    async def scenario() -> None:
        hub = _hub()
        box = Outbox(cast(Any, _NoDb()))
        for _ in range(3):
            publish(box, "test.x", None, {})
        stream = hub.events(None, Filter())
        assert (await anext(stream)).startswith(b": subscribed")
        await hub._write(box)
        hub._resolve(box.messages, committed=True)
        assert not hub._subscribers
        rest = [chunk async for chunk in stream]
        assert len(rest) == 1 and rest[0].startswith(b": disconnected")

    asyncio.run(scenario())


def test_openapi_documents_the_new_routes(live_crm: LiveCrm) -> None:
    doc = httpx.get(f"{live_crm.base}/openapi.json").json()
    for path in ("/stream", "/stream/info", "/events", "/customers/{id}/profile",
                 "/agents/{agent}/runs", "/agents/runs/{run_id}", "/agents/queue",
                 "/agents/{agent}/config"):
        assert path in doc["paths"], path
    assert "100,000" in doc["paths"]["/stream"]["get"]["description"]
    for schema in ("EventIn", "EventBatch", "LeadIntakeRunCreate", "AgentConfigUpdate",
                   "StreamMessage", "Profile", "AgentRun"):
        assert schema in doc["components"]["schemas"], schema
