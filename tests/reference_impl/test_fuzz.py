"""Property: no request, however malformed, gets a 500 or a non-JSON error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import app_client

FIELDS = [
    "name", "industry", "region_id", "owner_rep_id", "tier", "employees", "annual_revenue",
    "website", "consent_marketing", "tags", "contacts", "customer_id", "first_name",
    "last_name", "email", "phone", "company_name", "contact_name", "status", "source",
    "product_interest", "stage", "amount", "expected_close", "type", "subject",
    "occurred_at", "contact_id", "rep_id", "title",
]

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.sampled_from(["2026-01-01", "2026-13-45", "vip", "open", "proposal", "call",
                       "a@b.c", "", "\x00", "\ud7ff", "2026-01-01T00:00:00Z", "1", "-1"])
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=3), max_leaves=8)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=8)

raw_bodies = st.binary(max_size=64) | st.sampled_from(
    [b"{", b"null", b"[1,2]", b'{"name": "\\ud800"}', b'{"a":1,"a":2}', b"\xff\xfe",
     b'{"name":"x"}' * 3, b"1e999999", b'"str"', b"   "])

paths = st.sampled_from([
    "/customers", "/customers/1", "/customers/1/360", "/contacts", "/contacts/1", "/leads",
    "/leads/1", "/opportunities", "/opportunities/1", "/opportunities/1/stage",
    "/activities", "/activities/1", "/customers/abc", "/customers/99999999999999999999",
    "/customers/1.5", "/leads/0/", "/customers/%00",
])
queries = st.dictionaries(
    st.sampled_from(["limit", "after", "tier", "tag", "name_prefix", "region_id", "status",
                     "customer_id", "stage", "x"]),
    st.text(max_size=12) | st.integers(-5, 10**20).map(str), max_size=4)
methods = st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"])


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures, raise_server_exceptions=False) as c:
        yield c


def _check(resp: Any) -> None:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text}"
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, query=queries, body=bodies)
def test_json_requests_never_crash(
    client: TestClient, method: str, path: str, query: dict[str, str], body: dict[str, Any]
) -> None:
    payload = json.dumps(body).encode()
    _check(client.request(method, path, params=query, content=payload,
                          headers={"Content-Type": "application/json"}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["POST", "PATCH"]), path=paths, body=raw_bodies)
def test_raw_bodies_never_crash(client: TestClient, method: str, path: str, body: bytes) -> None:
    _check(client.request(method, path, content=body,
                          headers={"Content-Type": "application/json"}))
