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
    assert len({c["module"] for c in checks["checks"]}) == 12
    assert enabled.get("/mfg/sites").json()["items"] == before
