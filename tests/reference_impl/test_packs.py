"""Scenario packs on both backends: hot enable/disable, the IATF 16949 rule, acceptance checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from reference_impl.packs import PPAP_ELEMENTS
from tests.conftest import API_TOKEN, app_client

TOKEN = API_TOKEN


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures) as c:
        yield c


@pytest.fixture()
def enabled(client: TestClient) -> Iterator[TestClient]:
    assert client.post("/packs/manufacturing/enable").status_code == 200
    yield client
    client.post("/packs/manufacturing/disable")


def test_pack_routes_are_404_while_disabled(client: TestClient) -> None:
    client.post("/packs/manufacturing/disable")
    resp = client.get("/mfg/equipment")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "pack_disabled"
    checks = client.get("/packs/manufacturing/checks").json()
    assert checks["enabled"] is False and checks["all_passed"] is False


def test_enable_disable_enable_is_idempotent_and_keeps_data(client: TestClient) -> None:
    first = client.post("/packs/manufacturing/enable").json()
    again = client.post("/packs/manufacturing/enable").json()
    assert first["enabled"] and again["enabled"] and again["changed"] is False
    assert len(first["modules"]) == 12
    made = client.post("/mfg/equipment", json={"serial_number": "SN-1", "model": "M1"})
    assert made.status_code == 201, made.text
    assert client.post("/packs/manufacturing/disable").json()["enabled"] is False
    assert client.post("/packs/manufacturing/disable").json()["changed"] is False
    client.post("/packs/manufacturing/enable")
    kept = client.get(f"/mfg/equipment/{made.json()['id']}").json()
    assert kept["serial_number"] == "SN-1"
    assert client.get("/packs/manufacturing").json()["enabled"] is True
    client.post("/packs/manufacturing/disable")


def test_contract_approval_is_frozen_until_ppap_is_complete(enabled: TestClient) -> None:
    c = enabled
    contract = c.post("/mfg/contracts", json={"customer_id": 1, "part_number": "P-7"}).json()
    ppap = c.post("/mfg/ppap", json={"customer_id": 1, "part_number": "P-7",
                                     "elements": list(PPAP_ELEMENTS[:17])}).json()
    frozen = c.post(f"/mfg/contracts/{contract['id']}/approve")
    assert frozen.status_code == 409
    err = frozen.json()["error"]
    assert err["code"] == "approval_frozen" and "part_submission_warrant" in err["message"]
    c.patch(f"/mfg/ppap/{ppap['id']}", json={"elements": ["part_submission_warrant"]})
    released = c.post(f"/mfg/contracts/{contract['id']}/approve")
    assert released.status_code == 200 and released.json()["status"] == "approved"


def test_bad_module_records_are_refused(enabled: TestClient) -> None:
    resp = enabled.post("/mfg/spare_parts", json={"sku": "S", "site": "A", "quantity": "x"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "quantity"
    resp = enabled.post("/mfg/ppap", json={"customer_id": 1, "part_number": "P",
                                           "elements": ["vibes"]})
    assert resp.status_code == 422
    assert enabled.get("/mfg/nothing").status_code == 404


def test_all_acceptance_checks_pass_and_leave_no_records(enabled: TestClient) -> None:
    before = enabled.get("/mfg/sites").json()["items"]
    checks = enabled.get("/packs/manufacturing/checks").json()
    assert checks["all_passed"], checks
    assert {c["module"] for c in checks["checks"]} >= {"bom", "equipment", "spare_parts",
                                                        "ppap", "contracts"}
    modules = {c["module"] for c in checks["checks"]}
    assert len(modules - {"workflows", "slas", "reports"}) == 12
    assert {"workflows", "slas", "reports"} <= modules
    assert enabled.get("/mfg/sites").json()["items"] == before
    # The checks' sample records were rolled back: the reports do not show them.
    rows = enabled.get("/packs/manufacturing/reports/spare_parts_by_site").json()["rows"]
    assert not [r for r in rows if r["site"] == "probe-site"]


def _bundle(client: TestClient) -> tuple[list[int], list[int]]:
    pack = client.get("/packs/manufacturing").json()
    return [w["id"] for w in pack["workflows"]], [s["id"] for s in pack["slas"]]


def test_enable_deploys_the_bundle_once_and_disable_switches_it_off(client: TestClient
                                                                     ) -> None:
    client.post("/packs/manufacturing/enable")
    wids, sids = _bundle(client)
    assert len(wids) == 2 and len(sids) == 2 and None not in wids + sids
    for wid in wids:
        assert client.get(f"/workflows/{wid}").json()["status"] == "active"
    levels = {client.get(f"/slas/{sid}").json()["level"] for sid in sids}
    assert levels == {"action", "process"}
    assert all(client.get(f"/slas/{sid}").json()["active"] for sid in sids)

    client.post("/packs/manufacturing/disable")
    for wid in wids:
        assert client.get(f"/workflows/{wid}").json()["status"] == "disabled"
        refused = client.post(f"/workflows/{wid}/runs", json={})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "workflow_disabled"
    assert not any(client.get(f"/slas/{sid}").json()["active"] for sid in sids)
    lead = client.post("/leads", json={"company_name": "Off Co", "contact_name": "O",
                                       "region_id": 1}).json()
    first_contact = next(sid for sid in sids
                         if client.get(f"/slas/{sid}").json()["level"] == "action")
    items = client.get(f"/slas/{first_contact}/instances", params={"limit": 500}).json()
    assert lead["id"] not in {i["record_id"] for i in items["items"]}

    client.post("/packs/manufacturing/enable")
    client.post("/packs/manufacturing/enable")
    assert _bundle(client) == (wids, sids)  # nothing deployed twice
    names = [w["name"] for w in client.get("/packs/manufacturing").json()["workflows"]]
    for wid, name in zip(wids, names, strict=True):
        wf = client.get(f"/workflows/{wid}").json()
        assert wf["status"] == "active" and wf["name"] == name and wf["latest_version"] == 1
    lead = client.post("/leads", json={"company_name": "On Co", "contact_name": "O",
                                       "region_id": 1}).json()
    items = client.get(f"/slas/{first_contact}/instances", params={"limit": 500}).json()
    assert lead["id"] in {i["record_id"] for i in items["items"]}
    client.post("/packs/manufacturing/disable")


def test_pack_workflow_fires_on_a_large_deal_in_negotiation(enabled: TestClient) -> None:
    from tests.reference_impl.test_workflows import _wait_for_notification

    wid = _bundle(enabled)[0][0]
    opp = enabled.post("/opportunities", json={
        "customer_id": 1, "owner_rep_id": 1, "name": "Big press line", "stage": "proposal",
        "amount": 250_000.0, "expected_close": "2031-01-01"}).json()
    enabled.post(f"/opportunities/{opp['id']}/stage", json={"stage": "negotiation"})
    note = _wait_for_notification(enabled, wid)
    assert note["record_id"] == opp["id"] and note["channel"] == "quality"


def test_reports_group_module_records(enabled: TestClient) -> None:
    listed = enabled.get("/packs/manufacturing/reports").json()["items"]
    assert {r["name"] for r in listed} >= {"spare_parts_by_site", "contracts_by_status"}
    for sku, site, qty in (("R-1", "Plant Rio", 5), ("R-2", "Plant Rio", 7),
                           ("R-3", "Plant Oslo", 1)):
        made = enabled.post("/mfg/spare_parts", json={"sku": sku, "site": site,
                                                      "quantity": qty})
        assert made.status_code == 201, made.text
    report = enabled.get("/packs/manufacturing/reports/spare_parts_by_site").json()
    assert report["columns"] == ["site", "quantity", "skus"]
    rows = {r["site"]: r for r in report["rows"]}
    assert rows["Plant Rio"]["quantity"] == 12 and rows["Plant Rio"]["skus"] == 2
    assert rows["Plant Oslo"]["quantity"] == 1
    missing = enabled.get("/packs/manufacturing/reports/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_reports_are_404_while_disabled(client: TestClient) -> None:
    client.post("/packs/manufacturing/disable")
    resp = client.get("/packs/manufacturing/reports/spare_parts_by_site")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "pack_disabled"


def test_bundle_survives_a_restart(db_url: str, small_fixtures: Path) -> None:
    with app_client(db_url, small_fixtures) as c:
        c.post("/packs/manufacturing/enable")
        wids, sids = _bundle(c)
    with app_client(db_url, small_fixtures) as c:
        assert _bundle(c) == (wids, sids)
        c.post("/packs/manufacturing/disable")
    with app_client(db_url, small_fixtures) as c:
        assert c.get(f"/workflows/{wids[0]}").json()["status"] == "disabled"
        assert not c.get(f"/slas/{sids[0]}").json()["active"]
        again = c.post("/packs/manufacturing/enable").json()
        assert again["changed"] is True and _bundle(c) == (wids, sids)
        assert c.get("/packs/manufacturing/checks").json()["all_passed"]
