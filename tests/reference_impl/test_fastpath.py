"""The direct route table in front of Starlette answers exactly as Starlette's routing does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from reference_impl.api import CrmApp
from tests.conftest import API_TOKEN, app_client


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures) as c:
        yield c


@contextmanager
def starlette_only(client: TestClient) -> Iterator[None]:
    """Every request through Starlette's middleware and router, as without the table."""
    app = client.app
    assert isinstance(app, CrmApp)
    table, app.fast = app.fast, {}
    try:
        yield
    finally:
        app.fast = table


def _answer(resp: Any) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in resp.headers.items() if k not in ("date", "server")}
    return resp.status_code, headers, resp.content


def both(client: TestClient, method: str, url: str, **kwargs: Any) -> Any:
    fast = client.request(method, url, **kwargs)
    with starlette_only(client):
        slow = client.request(method, url, **kwargs)
    assert _answer(fast) == _answer(slow), (method, url)
    return fast


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/customers"), ("POST", "/customers"), ("GET", "/customers/7"),
    ("PATCH", "/customers/7"), ("DELETE", "/leads/3"), ("GET", "/customers/7/360"),
    ("POST", "/opportunities/2/stage"), ("GET", "/leads"), ("POST", "/activities"),
    ("GET", "/customers/abc"),
])
def test_hot_routes_are_in_the_table(client: TestClient, method: str, path: str) -> None:
    app = client.app
    assert isinstance(app, CrmApp)
    assert app._route(_scope(method, path)) is not None


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/customers/"), ("GET", "/customers/7/profile"), ("GET", "/customers/7/360/x"),
    ("PUT", "/customers/7"), ("HEAD", "/customers/7"), ("GET", "/health"), ("GET", "/"),
    ("GET", "/customers//360"), ("GET", "/stats"), ("POST", "/events"),
])
def test_other_routes_go_to_starlette(client: TestClient, method: str, path: str) -> None:
    app = client.app
    assert isinstance(app, CrmApp)
    assert app._route(_scope(method, path)) is None


@pytest.mark.parametrize("url", [
    "/customers/1", "/customers/1/360", "/customers/999999", "/customers/999999/360",
    "/customers/abc", "/customers/0/360", "/customers/1?x=1", "/customers/1/360?limit=2",
    "/customers?name_prefix=a&limit=5", "/customers?tier=vip&region_id=1&limit=3",
    "/customers?tag=newsletter&limit=4", "/customers?tier=gold", "/customers?limit=0",
    "/customers?limit=1&limit=2", "/customers?after=x", "/customers?nope=1",
    "/leads?owner_rep_id=1&status=open&limit=20", "/leads?status=open&after=3",
    "/opportunities/1", "/contacts?customer_id=1", "/activities/1", "/leads/999999",
    "/customers/%31", "/customers/1%2F360",
])
def test_reads_and_their_refusals_match(client: TestClient, url: str) -> None:
    both(client, "GET", url)


@pytest.mark.parametrize("header", [None, "", "Bearer wrong", f"bearer {API_TOKEN}"])
def test_token_refusals_match(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    if header is None:
        client.headers.pop("Authorization")
    try:
        resp = both(client, "GET", "/customers/1/360", headers=headers)
    finally:
        client.headers["Authorization"] = f"Bearer {API_TOKEN}"
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "url", "kwargs"), [
    ("POST", "/leads", {"content": b"{"}),
    ("POST", "/leads", {"content": b""}),
    ("POST", "/leads", {"json": {"company_name": "X"}}),
    ("POST", "/leads", {"json": {"company_name": "X", "contact_name": "Y", "region_id": 0}}),
    ("POST", "/leads", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}),
    ("POST", "/leads", {"content": b"x" * (1024 * 1024 + 1)}),
    ("POST", "/leads?x=1", {"json": {}}),
    ("POST", "/activities", {"json": {"customer_id": 999999, "type": "call",
                                      "subject": "s"}}),
    ("POST", "/opportunities/1/stage", {"json": {"stage": "won"}}),
    ("POST", "/opportunities/999999/stage", {"json": {"stage": "proposal"}}),
    ("PATCH", "/customers/1", {"json": {"employees": -1}}),
    ("PATCH", "/customers/999999", {"json": {"employees": 5}}),
    ("PATCH", "/customers/1", {"json": {"region_id": 999999}}),
    ("DELETE", "/customers/999999", {}),
    ("PUT", "/customers/1", {"json": {}}),
    ("PUT", "/customers/1/360", {"json": {}}),
    ("GET", "/opportunities/1/stage", {}),
    ("PUT", "/leads", {"json": {}}),
])
def test_write_refusals_match(
    client: TestClient, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    assert both(client, method, url, **kwargs).status_code >= 400


def test_repeated_writes_match(client: TestClient) -> None:
    body = {"employees": 4321, "consent_marketing": True, "tags": ["b", "a"]}
    fast = client.patch("/customers/2", json=body)
    with starlette_only(client):
        slow = client.patch("/customers/2", json=body)
    assert fast.status_code == slow.status_code == 200
    first, second = fast.json(), slow.json()
    first.pop("updated_at")
    second.pop("updated_at")
    assert first == second
    assert first["tags"] == ["a", "b"]
    both(client, "GET", "/customers/2/360")


def test_created_records_have_the_same_shape(client: TestClient) -> None:
    lead = {"company_name": "Fast Path Ltd", "contact_name": "Ann", "region_id": 1,
            "product_interest": [1, 2]}
    fast = client.post("/leads", json=lead)
    with starlette_only(client):
        slow = client.post("/leads", json=lead)
    assert fast.status_code == slow.status_code == 201
    a, b = fast.json(), slow.json()
    assert list(a) == list(b)
    assert {k: v for k, v in a.items() if k not in ("id", "created_at", "updated_at")} == {
        k: v for k, v in b.items() if k not in ("id", "created_at", "updated_at")
    }
    both(client, "GET", f"/leads/{a['id']}")
    assert client.delete(f"/leads/{a['id']}").status_code == 204
    with starlette_only(client):
        assert client.delete(f"/leads/{b['id']}").status_code == 204
    both(client, "DELETE", f"/leads/{a['id']}")


def test_crashes_answer_the_same_500(
    db_url: str, small_fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app_client(db_url, small_fixtures, raise_server_exceptions=False) as c:
        store = c.app.state.store

        async def broken(_name: str, _id: int) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(store, "get", broken)
        resp = both(c, "GET", "/customers/1")
        assert resp.status_code == 500
        assert resp.json()["error"]["code"] == "internal_error"


@pytest.mark.parametrize(("method", "url"), [
    ("PUT", "/customers/1"), ("POST", "/customers/1/360"), ("GET", "/opportunities/1/stage"),
    ("DELETE", "/leads"),
])
def test_unserved_methods_of_hot_paths_get_405_with_allow(
    client: TestClient, method: str, url: str
) -> None:
    resp = both(client, method, url)
    assert resp.status_code == 405
    assert resp.headers["allow"]
