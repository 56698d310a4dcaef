"""Security checks of the reference CRM: every route with every role, masking everywhere,
constant-time token checks, and no secret in logs, error bodies or audit entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from reference_impl import api as api_module
from reference_impl.access import (
    FIELD_CLASSES,
    POLICIES,
    ROLES,
    SERVICE_NAME,
    build_tokens,
    load_token_file,
    parse_role_token,
    resolve_access,
    token_digest,
)
from reference_impl.api import build_app
from reference_impl.db import open_database
from reference_impl.errors import UserError
from reference_impl.guard import RULES
from reference_impl.server import load
from tests.conftest import start_live_crm

SERVICE = "service-secret"
SECRETS = {"admin": SERVICE, "sales_director": "director-secret", "sales_rep": "rep-secret",
           "analyst": "analyst-secret", "auditor": "auditor-secret"}
REP_ID, REP_REGION = 1, 1
SPECS = [
    {"name": "ops", "role": "admin", "token_env": "T_ADMIN2"},
    {"name": "dora", "role": "sales_director", "token_env": "T_DIRECTOR"},
    {"name": "rudi", "role": "sales_rep", "rep_id": REP_ID, "regions": [REP_REGION],
     "token_env": "T_REP"},
    {"name": "ana", "role": "analyst", "token_env": "T_ANALYST"},
    {"name": "otto", "role": "auditor", "token_env": "T_AUDITOR"},
]
# Ids that exist in the small fixtures (1,000 customers), and one that does not.
MISSING = 999_999


def _app(db_url: str) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for var, role in (("T_ADMIN2", "named-admin-secret"), ("T_DIRECTOR", "sales_director"),
                          ("T_REP", "sales_rep"), ("T_ANALYST", "analyst"),
                          ("T_AUDITOR", "auditor")):
            mp.setenv(var, SECRETS.get(role, role))
        tokens, generated = build_tokens(SPECS, service_token=SERVICE)
    assert generated == []
    return build_app(open_database(db_url), token=SERVICE, tokens=tokens)


@pytest.fixture(scope="module")
def app(module_db_url: str, small_fixtures: Path) -> Any:
    load(module_db_url, small_fixtures, reset=False, say=lambda _m: None)
    return _app(module_db_url)


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[role]}"}


def _in_scope_customer(client: TestClient, hidden: bool = False) -> int:
    """A customer the rep sees (its region) and, unless ``hidden``, of a tier analysts see."""
    tiers = ("vip", "strategic") if hidden else ("normal", "key")
    for tier in tiers:
        page = client.get(f"/customers?region_id={REP_REGION}&tier={tier}&limit=1",
                          headers=auth("admin")).json()
        if page["items"]:
            return int(page["items"][0]["id"])
    raise AssertionError("the fixtures hold no such customer")


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def _masked_leaks(value: Any, masked: frozenset[str]) -> list[str]:
    """Keys of a masked class whose values are shown."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            cls = FIELD_CLASSES.get(key)
            if cls in masked and item != {"masked": cls}:
                out.append(key)
            elif cls not in masked:
                out += _masked_leaks(item, masked)
    elif isinstance(value, list):
        for item in value:
            out += _masked_leaks(item, masked)
    return out


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for route in app.routes:
        assert isinstance(route, Route)
        out += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_every_route_has_a_rule_and_every_rule_a_route(app: Any) -> None:
    routes = set(_routes(app))
    assert routes == set(RULES)


def test_every_route_with_every_role(client: TestClient, app: Any) -> None:
    """Allowed, masked or refused, exactly as the policy says, on every route."""
    cid = _in_scope_customer(client)
    walked = 0
    for method, path in _routes(app):
        if path == "/stream":
            continue  # endless; see test_stream_is_filtered_and_masked
        destructive = method in ("DELETE", "POST", "PUT", "PATCH")
        ids = {"id": str(MISSING if destructive else cid), "run_id": "1",
               "agent": "lead_intake", "name": "nope" if destructive else "manufacturing",
               "module": "contracts", "report": "nope", "product_id": str(MISSING),
               "region_id": "1"}
        url = _concrete(path, ids)
        rule = RULES[(method, path)]
        for role in ROLES:
            kwargs: dict[str, Any] = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            resp = client.request(method, url, headers=auth(role), **kwargs)
            walked += 1
            allowed = rule.permission is None or rule.permission in POLICIES[role].permissions
            body = resp.json() if resp.headers.get("content-type", "").startswith(
                "application/json") else None
            if not allowed:
                assert resp.status_code == 403, (role, method, url, resp.text)
                assert set(body["error"]) == {"code", "message", "field"}
                assert body["error"]["code"] == "forbidden"
                continue
            assert resp.status_code not in (401, 403) or (
                body["error"]["code"] == "out_of_scope"), (role, method, url, resp.text)
            if rule.mask and body is not None:
                leaks = _masked_leaks(body, POLICIES[role].masked)
                assert not leaks, (role, method, url, leaks)
    routes = len(_routes(app))
    assert walked == (routes - 1) * len(ROLES)
    print(f"permission walk: {routes} routes x {len(ROLES)} roles")


def test_analyst_sees_contact_data_masked_everywhere(client: TestClient) -> None:
    cid = _in_scope_customer(client)
    c360 = client.get(f"/customers/{cid}/360", headers=auth("analyst"))
    assert c360.status_code == 200
    contacts = c360.json()["contacts"]
    assert contacts, "the fixture customer has contacts"
    assert all(c["email"] == {"masked": "contact"} for c in contacts)
    assert c360.json()["owner"]["phone"] == {"masked": "contact"}
    page = client.get(f"/contacts?customer_id={cid}", headers=auth("analyst")).json()
    assert all(c["first_name"] == {"masked": "contact"} for c in page["items"])
    plain = client.get(f"/contacts?customer_id={cid}", headers=auth("admin")).json()
    assert [c["id"] for c in plain["items"]] == [c["id"] for c in page["items"]]
    assert isinstance(plain["items"][0]["first_name"], str)


def test_hidden_tiers_are_neither_listed_nor_readable(client: TestClient) -> None:
    vip = _in_scope_customer(client, hidden=True)
    resp = client.get(f"/customers/{vip}", headers=auth("analyst"))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "out_of_scope"
    for tier in ("vip", "strategic"):
        page = client.get(f"/customers?tier={tier}", headers=auth("analyst")).json()
        assert page["items"] == []
    seen = client.get("/customers?limit=500", headers=auth("analyst")).json()["items"]
    assert seen and all(c["tier"] not in ("vip", "strategic") for c in seen)
    assert client.get(f"/contacts?customer_id={vip}",
                      headers=auth("analyst")).json()["items"] == []


def test_rep_sees_own_and_region_records_only(client: TestClient) -> None:
    items = client.get("/customers?limit=500", headers=auth("sales_rep")).json()["items"]
    assert items
    assert all(c["owner_rep_id"] == REP_ID or c["region_id"] == REP_REGION for c in items)
    assert all(c["consent_profiling"] == {"masked": "preferences"} for c in items)
    other = client.get(f"/customers?region_id={REP_REGION + 1}&limit=50",
                       headers=auth("admin")).json()["items"]
    outside = next(c["id"] for c in other if c["owner_rep_id"] != REP_ID)
    for url in (f"/customers/{outside}", f"/customers/{outside}/360",
                f"/customers/{outside}/profile"):
        resp = client.get(url, headers=auth("sales_rep"))
        assert resp.status_code == 403, url
        assert str(outside) in resp.json()["error"]["message"]
    resp = client.post("/contacts", headers=auth("sales_rep"),
                       json={"customer_id": outside, "first_name": "A", "last_name": "B"})
    assert resp.status_code == 403


def test_masked_fields_can_be_neither_searched_nor_written(client: TestClient) -> None:
    resp = client.get("/customers?tag=newsletter", headers=auth("sales_rep"))
    assert resp.status_code == 403
    assert resp.json()["error"] == {
        "code": "masked_field", "field": "tag",
        "message": "tags is masked for role sales_rep: it cannot be searched or sorted"}
    cid = _in_scope_customer(client)
    resp = client.patch(f"/customers/{cid}", headers=auth("sales_rep"),
                        json={"consent_profiling": True})
    assert resp.status_code == 403
    assert resp.json()["error"]["field"] == "consent_profiling"
    assert client.get("/customers?tag=newsletter", headers=auth("analyst")).status_code == 200


def test_refusals_and_sensitive_reads_are_audited(client: TestClient) -> None:
    client.get("/customers/1", headers=auth("auditor"))
    cid = _in_scope_customer(client)
    client.get(f"/customers/{cid}/360", headers=auth("sales_director"))
    refused = client.get("/audit?outcome=refused&actor=otto&limit=500",
                         headers=auth("auditor")).json()["items"]
    assert any(e["route"] == "GET /customers/1" for e in refused)
    reads = client.get(f"/audit?customer_id={cid}&action=read&actor=dora&limit=500",
                       headers=auth("auditor")).json()["items"]
    assert any("email" in e["details"]["fields"] for e in reads)
    assert client.get("/audit/verify", headers=auth("auditor")).json()["ok"] is True


def test_service_token_is_compared_in_constant_time(client: TestClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = api_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_module.hmac, "compare_digest", spy)
    assert client.get("/customers/1", headers=auth("admin")).status_code == 200
    assert client.get("/stats", headers=auth("admin")).status_code == 200
    assert client.get("/customers/1", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert len(calls) >= 3


def test_named_tokens_are_kept_and_compared_as_digests_only() -> None:
    table, _ = build_tokens(
        [{"name": "a", "role": "analyst", "sha256": token_digest("top-secret")}],
        service_token=None)
    assert all(len(k) == 32 for k in table.by_digest)
    assert b"top-secret" not in b"".join(table.by_digest)
    assert table.lookup(b"Bearer top-secret") is not None
    assert table.lookup(b"Bearer top-secreT") is None
    assert table.lookup(b"") is None


def test_no_secret_in_error_bodies_logs_or_audit(client: TestClient,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Bearer wrong-" + SERVICE
    with caplog.at_level("DEBUG"):
        resp = client.get("/customers/1", headers={"Authorization": wrong})
        for role in ROLES:
            client.get("/audit", headers=auth(role))
            client.get(f"/customers/{MISSING}", headers=auth(role))
    assert resp.status_code == 401
    assert "wrong-" not in resp.text
    audit = client.get("/audit?limit=500", headers=auth("admin")).text
    for secret in [*SECRETS.values(), "named-admin-secret"]:
        assert secret not in caplog.text
        assert secret not in audit
        assert secret not in resp.text


def test_stream_is_filtered_and_masked(module_db_url: str, client: TestClient) -> None:
    """A rep's change stream carries only its customers' messages, their tags masked."""
    inside = _in_scope_customer(client)
    other = client.get(f"/customers?region_id={REP_REGION + 1}&limit=50",
                       headers=auth("admin")).json()["items"]
    outside = next(c["id"] for c in other if c["owner_rep_id"] != REP_ID)
    for cid in (inside, outside):
        client.put(f"/customers/{cid}/consent", headers=auth("admin"),
                   json={"consent_profiling": True})
    live, stop = start_live_crm(_app(module_db_url))
    try:
        import httpx

        with httpx.Client(base_url=live.base, timeout=10, headers=auth("sales_rep")) as http, \
                http.stream("GET", "/stream", params={"types": "profile.updated"}) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(lines).startswith(": subscribed")
            for n, cid in enumerate((outside, inside)):
                event = {"customer_id": cid, "type": "pricing_view",
                         "occurred_at": "2026-01-01T00:00:00Z",
                         "idempotency_key": f"stream-scope-{cid}-{n}"}
                posted = httpx.post(f"{live.base}/events", json=event, headers=auth("admin"))
                assert posted.status_code == 202
            data = next(line for line in lines if line.startswith("data: "))
    finally:
        stop()
    message = json.loads(data[6:])
    assert message["customer_id"] == inside
    assert message["payload"]["tags"] == {"masked": "preferences"}


def test_token_specs_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_role_token("sales_rep:rudi:7@1,2") == {
        "role": "sales_rep", "name": "rudi", "rep_id": 7, "regions": [1, 2]}
    with pytest.raises(UserError):
        parse_role_token("analyst")
    path = tmp_path / "tokens.toml"
    path.write_text('version = 1\n[[tokens]]\nname = "ana"\nrole = "analyst"\n'
                    'token_env = "ANA_SECRET"\n[[tokens]]\nname = "gen"\nrole = "auditor"\n')
    monkeypatch.setenv("ANA_SECRET", "ana-secret")
    table, generated = resolve_access(path, ["analyst:extra"], service_token="svc")
    assert [g.principal.name for g in generated] == ["gen", "extra"]
    assert table.lookup(b"Bearer ana-secret") is not None
    assert {p.name for p in table.principals()} == {"ana", "gen", "extra"}
    assert load_token_file(path)[0]["role"] == "analyst"
    bad = [("[[tokens]]\nname = 'x'\nrole = 'king'\n", "role must be"),
           ("[[tokens]]\nname = 'x'\nrole = 'sales_rep'\n", "needs rep_id"),
           ("[[tokens]]\nname = 'x'\nrole = 'analyst'\nsecret = 'y'\n", "unknown key"),
           (f"[[tokens]]\nname = '{SERVICE_NAME}'\nrole = 'analyst'\n", "other than")]
    for text, message in bad:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            resolve_access(path, [], service_token=None)
    monkeypatch.setenv("SAME", "svc")
    path.write_text("[[tokens]]\nname = 'x'\nrole = 'analyst'\ntoken_env = 'SAME'\n")
    with pytest.raises(UserError, match="same secret"):
        resolve_access(path, [], service_token="svc")
