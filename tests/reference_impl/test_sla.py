"""SLAs on both backends: each level breaches on the test clock or is met; status, escalation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from reference_impl.api import build_app
from reference_impl.db import open_database
from tests.conftest import API_TOKEN, app_client
from tests.reference_impl.test_workflows import messages

TOKEN = API_TOKEN


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures, test_clock=True) as c:
        yield c


def sla(client: TestClient, **definition: Any) -> int:
    resp = client.post("/slas", json=definition)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def instance(client: TestClient, sla_id: int, record_id: int) -> dict[str, Any]:
    items = client.get(f"/slas/{sla_id}/instances", params={"limit": 500}).json()["items"]
    found = [i for i in items if i["record_id"] == record_id]
    assert len(found) == 1, items
    return found[0]


def lead(client: TestClient, **extra: Any) -> int:
    body = {"company_name": "SLA Co", "contact_name": "S L", "region_id": 1, **extra}
    resp = client.post("/leads", json=body)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def opportunity(client: TestClient, stage: str) -> int:
    resp = client.post("/opportunities", json={
        "customer_id": 1, "owner_rep_id": 1, "name": "SLA deal", "stage": stage,
        "amount": 1000.0, "expected_close": "2030-01-01"})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def advance(client: TestClient, seconds: float) -> dict[str, Any]:
    resp = client.post("/clock/advance", json={"seconds": seconds})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def breached(client: TestClient, sla_id: int) -> set[int]:
    return {m["record_id"] for m in messages(client, "sla.breached") if m["sla_id"] == sla_id}


def test_field_sla_goes_yellow_then_red_or_is_met(client: TestClient) -> None:
    sid = sla(client, level="field", object="lead", field="email", within_s=1000)
    late, done = lead(client), lead(client)
    assert instance(client, sid, late)["status"] == "green"
    advance(client, 850)
    assert instance(client, sid, late)["status"] == "yellow"
    assert client.patch(f"/leads/{done}", json={"email": "x@y.example"}).status_code == 200
    assert instance(client, sid, done)["status"] == "met"
    advance(client, 200)
    red = instance(client, sid, late)
    assert red["status"] == "red" and red["breached_at"] and red["detected_at"]
    assert breached(client, sid) == {late}
    msg = next(m for m in messages(client, "sla.breached") if m["sla_id"] == sid)
    assert msg["level"] == "field" and msg["lag_ms"] >= 0 and msg["deadline"]


def test_process_sla_breaches_when_the_stage_does_not_move(client: TestClient) -> None:
    sid = sla(client, level="process", object="opportunity", from_stage="qualification",
              to_stage="proposal", within_s=500)
    stuck, moved = opportunity(client, "qualification"), opportunity(client, "prospecting")
    client.post(f"/opportunities/{moved}/stage", json={"stage": "qualification"})
    client.post(f"/opportunities/{moved}/stage", json={"stage": "proposal"})
    assert instance(client, sid, moved)["status"] == "met"
    advance(client, 501)
    assert instance(client, sid, stuck)["status"] == "red"
    assert breached(client, sid) == {stuck}


def test_action_sla_first_contact_escalates_to_the_director(client: TestClient) -> None:
    sid = sla(client, level="action", action="first_contact", object="lead", within_s=300,
              escalation={"notify": "director", "reassign_to": 3})
    customer = client.post("/customers", json={"name": "SLA Customer", "industry": "x",
                                               "region_id": 1, "owner_rep_id": 1}).json()["id"]
    contacted = lead(client, customer_id=customer)
    ignored = lead(client)
    client.post("/activities", json={"customer_id": customer, "type": "call",
                                     "subject": "first call"})
    assert instance(client, sid, contacted)["status"] == "met"
    advance(client, 301)
    assert instance(client, sid, ignored)["status"] == "red"
    esc = [m for m in messages(client, "sla.escalated") if m["sla_id"] == sid]
    assert len(esc) == 1 and esc[0]["record_id"] == ignored
    assert esc[0]["notified"]["role"] == "director" and esc[0]["reassigned_to"] == 3
    assert client.get(f"/leads/{ignored}").json()["owner_rep_id"] == 3
    assert client.portal is not None
    director = client.portal.call(
        client.app.state.hub.db.fetch_val,  # type: ignore[attr-defined]
        "SELECT MIN(id) FROM reps WHERE region_id = 1 AND role = 'director'", (),
    )
    assert director is not None and esc[0]["notified"]["rep_id"] == director


def test_action_sla_proposal(client: TestClient) -> None:
    sid = sla(client, level="action", action="proposal", object="opportunity", within_s=100)
    fast, slow = opportunity(client, "prospecting"), opportunity(client, "prospecting")
    client.post(f"/opportunities/{fast}/stage", json={"stage": "proposal"})
    advance(client, 101)
    assert instance(client, sid, fast)["status"] == "met"
    assert instance(client, sid, slow)["status"] == "red"


@pytest.mark.parametrize(
    ("definition", "field"),
    [({"level": "field", "object": "lead", "field": "company_name", "within_s": 1}, "field"),
     ({"level": "process", "object": "opportunity", "from_stage": "x", "to_stage": "proposal",
       "within_s": 1}, "from_stage"),
     ({"level": "action", "action": "first_contact", "object": "opportunity", "within_s": 1},
      "object")],
)
def test_invalid_definitions_are_refused(client: TestClient, definition: dict[str, Any],
                                         field: str) -> None:
    resp = client.post("/slas", json=definition)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == field


def test_test_clock_is_refused_when_disabled(tmp_path: Path) -> None:
    app = build_app(open_database(f"sqlite:///{tmp_path / 'c.sqlite3'}"), token=TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        for resp in (c.get("/clock"), c.post("/clock/advance", json={"seconds": 1})):
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "test_clock_disabled"


def test_business_calendar_sla_counts_working_time_only(client: TestClient) -> None:
    from reference_impl import calendars

    cal = {"timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
           "start": "09:00", "end": "17:00", "holidays": ["2031-12-25"]}
    sid = sla(client, level="field", object="lead", field="email", within_s=4 * 3600,
              calendar=cal)
    assert client.get(f"/slas/{sid}").json()["calendar"] == cal
    rid = lead(client)
    inst = instance(client, sid, rid)
    started = dt.datetime.fromisoformat(inst["started_at"]).timestamp()
    want = calendars.add(calendars.BusinessCalendar(**{**cal, "holidays": [
        dt.date(2031, 12, 25)]}), started, 4 * 3600)
    assert dt.datetime.fromisoformat(inst["deadline"]).timestamp() == pytest.approx(want)
    # Four working hours are at least four hours and less than four days (Easter aside).
    assert 4 * 3600 <= want - started < 5 * 86_400


@pytest.mark.parametrize(
    ("calendar", "field"),
    [({"timezone": "Mars/Olympus"}, "calendar.timezone"),
     ({"start": "18:00", "end": "09:00"}, "calendar.end"),
     ({"days": ["mon", "mon"]}, "calendar.days"),
     ({"days": ["mon"], "start": "09:00", "end": "09:01"}, "within_s")],
)
def test_unusable_calendars_are_refused(client: TestClient, calendar: dict[str, Any],
                                        field: str) -> None:
    resp = client.post("/slas", json={"level": "field", "object": "lead", "field": "email",
                                      "within_s": 9 * 365 * 86_400, "calendar": calendar})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field


def test_instances_roll_back_with_their_record(client: TestClient) -> None:
    from reference_impl.store import StoreError

    store, slas = client.app.state.store, client.app.state.slas
    sid = sla(client, level="field", object="lead", field="email", within_s=50)
    before = len(client.get(f"/slas/{sid}/instances", params={"limit": 500}).json()["items"])
    tracked = dict(slas.open)

    async def refuse(_tx: Any, _change: Any) -> None:
        raise StoreError(409, "conflict", "refused after the SLA hook")

    store.hooks.append(refuse)
    try:
        resp = client.post("/leads", json={"company_name": "Gone", "contact_name": "G",
                                           "region_id": 1})
    finally:
        store.hooks.remove(refuse)
    assert resp.status_code == 409
    after = client.get(f"/slas/{sid}/instances", params={"limit": 500}).json()["items"]
    assert len(after) == before and slas.open == tracked


def test_met_after_the_deadline_is_a_breach(client: TestClient) -> None:
    sid = sla(client, level="field", object="lead", field="email", within_s=30)
    rid = lead(client)
    client.app.state.clock.offset += 31  # past the deadline, before any check ran
    assert client.patch(f"/leads/{rid}", json={"email": "late@x.example"}).status_code == 200
    advance(client, 0.001)
    assert instance(client, sid, rid)["status"] == "red"
    assert rid in breached(client, sid)


def test_met_instances_leave_the_deadline_heap(db_url: str, small_fixtures: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with app_client(db_url, small_fixtures, test_clock=True) as client:
        _heap_is_compacted(client, monkeypatch)


def _heap_is_compacted(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    slas = client.app.state.slas
    monkeypatch.setattr(slas, "COMPACT_AFTER", 5)
    sid = sla(client, level="field", object="lead", field="email", within_s=10 * 86_400)
    ids = [lead(client) for _ in range(12)]
    for rid in ids:
        assert client.patch(f"/leads/{rid}", json={"email": "m@x.example"}).status_code == 200
    assert {i["status"] for i in client.get(f"/slas/{sid}/instances").json()["items"]} == {
        "met"}
    # Twelve met instances: the heap was rebuilt once more than five had piled up.
    assert not slas.open and len(slas.heap) <= 5
