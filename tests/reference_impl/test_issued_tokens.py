"""Role tokens issued and revoked at run time through ``POST /tokens`` (admin only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import app_client


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures) as c:
        yield c


def test_issued_token_carries_its_role_until_revoked(client: TestClient) -> None:
    resp = client.post("/tokens", json={"name": "probe-ana", "role": "analyst"})
    assert resp.status_code == 201, resp.text
    issued = resp.json()
    secret = issued.pop("token")
    assert issued["role"] == "analyst" and issued["masked_classes"] == ["contact"]
    as_ana = {"Authorization": f"Bearer {secret}"}
    assert client.get("/me", headers=as_ana).json()["name"] == "probe-ana"
    refused = client.post("/tokens", headers=as_ana, json={"name": "x", "role": "admin"})
    assert refused.status_code == 403
    assert secret not in refused.text
    page = client.get("/contacts?limit=1", headers=as_ana).json()
    assert page["items"][0]["email"] == {"masked": "contact"}
    again = client.post("/tokens", json={"name": "probe-ana", "role": "auditor"})
    assert again.status_code == 409
    entries = client.get("/audit?action=token").json()["items"]
    assert entries and all(secret not in str(e) for e in entries)
    assert client.delete("/tokens/probe-ana").status_code == 204
    assert client.get("/me", headers=as_ana).status_code == 401
    assert client.delete("/tokens/probe-ana").status_code == 404


def test_issue_is_validated(client: TestClient) -> None:
    assert client.post("/tokens", json={"name": "r", "role": "sales_rep"}).status_code == 422
    assert client.post("/tokens", json={"name": "s", "role": "root"}).status_code == 422
    assert client.post("/tokens", json={"name": "service", "role": "admin"}).status_code == 422
    made = client.post("/tokens", json={"name": "rep9", "role": "sales_rep", "rep_id": 9,
                                        "regions": [2]}).json()
    assert made["rep_id"] == 9 and made["regions"] == [2] and made["scope"] == "own_region"
