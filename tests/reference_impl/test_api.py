"""The reference CRM API on both backends: CRUD, search, 360 view, auth and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import API_TOKEN, app_client

TOKEN = API_TOKEN


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures) as c:
        yield c


def _error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    assert set(body) == {"code", "message", "field"}
    assert body["message"]
    if code is not None:
        assert body["code"] == code
    return body


def new_customer(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"name": "Quartz Gearworks", "industry": "Automotive", "region_id": 1,
            "owner_rep_id": 1, **extra}
    resp = client.post("/customers", json=body)
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_health_and_openapi_are_open(client: TestClient) -> None:
    health = client.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    doc = client.get("/openapi.json", headers={"Authorization": ""}).json()
    assert doc["openapi"].startswith("3.")
    assert "/customers/{id}/360" in doc["paths"]
    assert "CustomerCreate" in doc["components"]["schemas"]


@pytest.mark.parametrize("header", ["", "Bearer wrong", "Basic dGVzdA==", f"bearer {TOKEN}x"])
def test_missing_or_wrong_token_is_401(client: TestClient, header: str) -> None:
    resp = client.get("/customers/1", headers={"Authorization": header})
    _error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"


def test_fixture_customer_is_served(client: TestClient) -> None:
    resp = client.get("/customers/1")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == 1
    assert isinstance(body["consent_marketing"], bool)
    assert isinstance(body["tags"], list)
    assert "name_key" not in body


def test_customer_crud_roundtrip(client: TestClient) -> None:
    created = new_customer(client, tags=["vip-event", "newsletter"], tier="vip",
                           contacts=[{"first_name": "Lin", "last_name": "Wei",
                                      "email": "lin@example.com"}])
    cid = created["id"]
    assert created["tags"] == ["newsletter", "vip-event"]
    got = client.get(f"/customers/{cid}").json()
    assert got == created
    patched = client.patch(f"/customers/{cid}", json={"tier": "strategic", "website": None,
                                                     "tags": ["key-account"]}).json()
    assert patched["tier"] == "strategic"
    assert patched["tags"] == ["key-account"]
    assert patched["updated_at"] >= created["updated_at"]
    view = client.get(f"/customers/{cid}/360").json()
    assert [c["first_name"] for c in view["contacts"]] == ["Lin"]
    assert client.delete(f"/customers/{cid}").status_code == 204
    _error(client.get(f"/customers/{cid}"), 404, "not_found")
    _error(client.delete(f"/customers/{cid}"), 404, "not_found")
    contacts = client.get("/contacts", params={"customer_id": cid}).json()
    assert contacts["items"] == []


def test_customer_360_has_orders_and_open_opportunities(client: TestClient) -> None:
    # Find a fixture customer with orders: the 360 view of the first ones usually has some.
    for cid in range(1, 50):
        view = client.get(f"/customers/{cid}/360").json()
        if view["recent_orders"] and view["open_opportunities"]:
            break
    else:
        pytest.fail("no fixture customer among the first 49 has orders and open deals")
    assert view["customer"]["id"] == cid
    assert view["region"]["id"] == view["customer"]["region_id"]
    assert view["owner"]["id"] == view["customer"]["owner_rep_id"]
    order = view["recent_orders"][0]
    assert order["lines"]
    assert abs(sum(line["amount"] for line in order["lines"]) - order["total_amount"]) < 0.02
    dates = [o["ordered_at"] for o in view["recent_orders"]]
    assert dates == sorted(dates, reverse=True)
    assert view["order_stats"]["orders"] >= len(view["recent_orders"])
    assert all(o["stage"] not in ("closed_won", "closed_lost")
               for o in view["open_opportunities"])


def test_search_filters_and_paging(client: TestClient) -> None:
    first = client.get("/customers", params={"limit": 5}).json()
    assert len(first["items"]) == 5
    second = client.get("/customers", params={"limit": 5, "after": first["next_after"]}).json()
    assert second["items"][0]["id"] > first["items"][-1]["id"]
    sample = client.get("/customers/3").json()
    prefix = sample["name"][:3].upper()
    hits = client.get("/customers", params={"name_prefix": prefix, "limit": 500}).json()
    assert sample["id"] in [c["id"] for c in hits["items"]]
    assert all(c["name"].lower().startswith(prefix.lower()) for c in hits["items"])
    tier = client.get("/customers", params={"tier": "vip", "region_id": sample["region_id"]})
    assert all(c["tier"] == "vip" and c["region_id"] == sample["region_id"]
               for c in tier.json()["items"])
    tagged = new_customer(client, tags=["search-probe-tag"])
    found = client.get("/customers", params={"tag": "search-probe-tag"}).json()
    assert [c["id"] for c in found["items"]] == [tagged["id"]]


def test_opportunity_stage_change_is_recorded(client: TestClient) -> None:
    cust = new_customer(client)
    opp = client.post("/opportunities", json={
        "customer_id": cust["id"], "owner_rep_id": 1, "name": "Press line retrofit",
        "amount": 120000.5, "expected_close": "2027-03-31"}).json()
    assert opp["stage"] == "prospecting"
    moved = client.post(f"/opportunities/{opp['id']}/stage", json={"stage": "proposal"})
    assert moved.status_code == 200 and moved.json()["stage"] == "proposal"
    _error(client.post(f"/opportunities/{opp['id']}/stage", json={"stage": "won"}), 422,
           "validation_error")
    listed = client.get("/opportunities", params={"customer_id": cust["id"]}).json()
    assert [o["stage"] for o in listed["items"]] == ["proposal"]


def test_lead_and_activity_crud(client: TestClient) -> None:
    lead = client.post("/leads", json={
        "company_name": "Harbor Pumps", "contact_name": "Ana Ruiz", "region_id": 2,
        "product_interest": [1, 2], "email": "ana@harbor.example"})
    assert lead.status_code == 201, lead.text
    lid = lead.json()["id"]
    assert lead.json()["product_interest"] == [1, 2]
    upd = client.patch(f"/leads/{lid}", json={"status": "contacted", "owner_rep_id": 3})
    assert upd.json()["status"] == "contacted"
    open_leads = client.get("/leads", params={"status": "open", "limit": 3}).json()
    assert all(x["status"] == "open" for x in open_leads["items"])
    act = client.post("/activities", json={"customer_id": 1, "type": "call",
                                           "subject": "Intro call", "rep_id": 1})
    assert act.status_code == 201, act.text
    aid = act.json()["id"]
    assert client.patch(f"/activities/{aid}", json={"subject": "Follow-up"}).json()[
        "subject"] == "Follow-up"
    assert client.delete(f"/activities/{aid}").status_code == 204
    assert client.delete(f"/leads/{lid}").status_code == 204


def test_contact_crud(client: TestClient) -> None:
    c = client.post("/contacts", json={"customer_id": 2, "first_name": "Max",
                                       "last_name": "Huber", "phone": "+49 89 1234"})
    assert c.status_code == 201, c.text
    cid = c.json()["id"]
    assert client.patch(f"/contacts/{cid}", json={"title": "CTO"}).json()["title"] == "CTO"
    assert client.delete(f"/contacts/{cid}").status_code == 204


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b"{not json", 400, "malformed_json", None),
        (b"", 400, "malformed_json", None),
        (b"[]", 422, "validation_error", None),
        (b'{"name": 5, "industry": "x", "region_id": 1, "owner_rep_id": 1}', 422,
         "validation_error", "name"),
        (b'{"industry": "x", "region_id": 1, "owner_rep_id": 1}', 422, "validation_error",
         "name"),
        (b'{"name": "a", "industry": "x", "region_id": 1, "owner_rep_id": 1, "extra": 1}',
         422, "validation_error", "extra"),
        (b'{"name": "a", "industry": "x", "region_id": 999999, "owner_rep_id": 1}', 422,
         "unknown_reference", "region_id"),
        # References are looked up together; the first missing one (in field order) is named.
        (b'{"name": "a", "industry": "x", "region_id": 1, "owner_rep_id": 999999}', 422,
         "unknown_reference", "owner_rep_id"),
        (b'{"name": "a", "industry": "x", "region_id": 999999, "owner_rep_id": 999999}', 422,
         "unknown_reference", "region_id"),
        (b'{"name": "a", "industry": "x", "region_id": 1, "owner_rep_id": 1, "tier": "gold"}',
         422, "validation_error", "tier"),
        (b'{"name": "a", "industry": "x", "region_id": 1, "owner_rep_id": 1,'
         b' "employees": 1e999}', 422, "validation_error", "employees"),
        (b'{"name": "a\\u0000b", "industry": "x", "region_id": 1, "owner_rep_id": 1}', 422,
         "validation_error", "name"),
        (b'{"name": "a", "industry": "x", "region_id": 99999999999999999999999,'
         b' "owner_rep_id": 1}', 422, "validation_error", "region_id"),
    ],
)
def test_bad_bodies_are_refused(
    client: TestClient, body: bytes, status: int, code: str, field: str | None
) -> None:
    before = client.get("/customers", params={"limit": 500, "after": 0}).json()
    resp = client.post("/customers", content=body,
                       headers={"Content-Type": "application/json"})
    err = _error(resp, status, code)
    assert err["field"] == field
    assert client.get("/customers", params={"limit": 500, "after": 0}).json() == before


def test_failed_multi_row_write_leaves_nothing(client: TestClient) -> None:
    before = client.get("/customers", params={"name_prefix": "atomic probe"}).json()["items"]
    resp = client.post("/customers", json={
        "name": "Atomic Probe", "industry": "x", "region_id": 1, "owner_rep_id": 1,
        "contacts": [{"first_name": "A", "last_name": "B"},
                     {"first_name": "C", "last_name": "D", "email": "not-an-email"}]})
    assert _error(resp, 422)["field"] == "contacts[1].email"
    # A reference failure after the customer row is prepared rolls everything back too.
    resp = client.post("/activities", json={"customer_id": 1, "contact_id": 10**12,
                                            "type": "call", "subject": "x"})
    _error(resp, 422, "unknown_reference")
    after = client.get("/customers", params={"name_prefix": "atomic probe"}).json()["items"]
    assert after == before


def test_activity_contact_must_belong_to_customer(client: TestClient) -> None:
    other = client.get("/contacts", params={"customer_id": 2, "limit": 1}).json()["items"]
    assert other
    resp = client.post("/activities", json={"customer_id": 1, "contact_id": other[0]["id"],
                                            "type": "email", "subject": "x"})
    _error(resp, 422, "invalid_reference")


def test_oversized_body_is_413(client: TestClient) -> None:
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    _error(client.post("/customers", content=big,
                       headers={"Content-Type": "application/json"}), 413, "payload_too_large")


def test_wrong_content_type_is_415(client: TestClient) -> None:
    _error(client.post("/customers", content=b"name=x",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/customers/abc", "id"),
        ("/customers/0", "id"),
        ("/customers/-1", "id"),
        ("/customers?limit=0", "limit"),
        ("/customers?limit=100000", "limit"),
        ("/customers?limit=ten", "limit"),
        ("/customers?after=-5", "after"),
        ("/customers?tier=gold", "tier"),
        ("/customers?bogus=1", "bogus"),
        ("/customers?limit=1&limit=2", "limit"),
        ("/leads?status=open&region_id=x", "region_id"),
    ],
)
def test_bad_paths_and_paging_are_400(client: TestClient, url: str, field: str) -> None:
    assert _error(client.get(url), 400, "invalid_parameter")["field"] == field


def test_unknown_route_and_method(client: TestClient) -> None:
    _error(client.get("/nowhere"), 404, "not_found")
    resp = client.put("/customers/1", json={})
    _error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    _error(client.get("/customers/999999999"), 404, "not_found")
    _error(client.patch("/leads/999999999", json={"status": "open"}), 404, "not_found")


@pytest.mark.parametrize(("method", "url", "allow"), [
    ("DELETE", "/customers", "GET, HEAD, POST"),
    ("POST", "/customers/1/360", "GET, HEAD"),
    ("GET", "/opportunities/1/stage", "POST"),
    ("DELETE", "/stats", "GET, HEAD"),
    ("POST", "/packs/manufacturing/checks", "GET, HEAD"),
    ("DELETE", "/workflows/runs/runs", "GET, HEAD, POST"),
    ("DELETE", "/workflows/runs/x", "GET, HEAD"),
    ("PATCH", "/agents/lead_intake/config", "GET, HEAD, PUT"),
])
def test_405_names_every_method_the_path_serves(
    client: TestClient, method: str, url: str, allow: str
) -> None:
    resp = client.request(method, url)
    _error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == allow


def test_405_needs_the_token_first(client: TestClient) -> None:
    resp = client.request("DELETE", "/customers", headers={"Authorization": ""})
    _error(resp, 401, "unauthorized")


def test_head_reads_a_record_and_changes_nothing(client: TestClient) -> None:
    lead = client.get("/leads/4")
    assert lead.status_code == 200
    head = client.head("/leads/4")
    assert head.status_code == 200
    assert head.headers["content-type"] == "application/json"
    assert client.get("/leads/4").json() == lead.json()
    assert client.head("/leads/999999999").status_code == 404


def test_pack_actions_are_enable_and_disable_only(client: TestClient) -> None:
    _error(client.post("/packs/manufacturing/restart"), 404, "not_found")
