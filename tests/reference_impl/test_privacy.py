"""Consent, export, erasure and the audit trail of the reference CRM, on both backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from reference_impl.audit import main as audit_main
from reference_impl.db import open_database
from reference_impl.privacy import SECTIONS, verify_bundle
from tests.conftest import app_client


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures) as c:
        yield c


def new_customer(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"name": "Erika Muster AG", "industry": "Retail", "region_id": 1, "owner_rep_id": 1,
            "consent_profiling": True, "tags": ["newsletter"],
            "contacts": [{"first_name": "Erika", "last_name": "Muster",
                          "email": "erika@example.com", "phone": "+49 30 1234"}], **extra}
    resp = client.post("/customers", json=body)
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


def events(client: TestClient, cid: int, count: int, prefix: str) -> None:
    batch = [{"customer_id": cid, "type": "pricing_view", "properties": {"coupon": "X"},
              "occurred_at": "2026-01-01T00:00:00Z", "idempotency_key": f"{prefix}-{i}"}
             for i in range(count)]
    for start in range(0, count, 1000):
        resp = client.post("/events", json={"events": batch[start:start + 1000]})
        assert resp.status_code == 202, resp.text


def wait_run(client: TestClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/agents/runs/{run_id}").json()
        if run["status"] != "running":
            return run
        time.sleep(0.02)
    raise AssertionError("the agent run did not finish")


def test_withdrawn_consent_stops_profiling_and_agent_use_until_restored(
        client: TestClient) -> None:
    cid = new_customer(client)["id"]
    events(client, cid, 2, f"consent-a-{cid}")
    assert client.get(f"/customers/{cid}/profile").json()["tags"]
    resp = client.put(f"/customers/{cid}/consent",
                      json={"consent_profiling": False, "reason": "customer request"})
    assert resp.status_code == 200
    assert resp.json()["profiling"] == "stopped"
    events(client, cid, 2, f"consent-b-{cid}")
    profile = client.get(f"/customers/{cid}/profile").json()
    assert profile["tags"] == {} and profile["tags_suppressed"]
    lead = client.post("/leads", json={"company_name": "Erika", "contact_name": "Erika",
                                       "region_id": 1, "customer_id": cid}).json()
    run = client.post("/agents/lead_intake/runs", json={"lead_id": lead["id"]}).json()
    qualify = wait_run(client, run["run_id"])["decision_log"][0]
    assert qualify["inputs"]["engagement"] is None
    assert qualify["output"]["skipped"] == [
        {"input": "engagement", "reason": "consent_profiling is false: profiling data is "
                                          "not used"}]
    client.put(f"/customers/{cid}/consent", json={"consent_profiling": True})
    events(client, cid, 1, f"consent-c-{cid}")
    assert client.get(f"/customers/{cid}/profile").json()["tags"]
    audit = client.get(f"/audit?customer_id={cid}&action=consent").json()["items"]
    assert [e["details"]["changes"]["consent_profiling"] for e in audit] == [
        [True, False], [False, True]]
    assert audit[0]["details"]["reason"] == "customer request"


def test_export_is_complete_verifiable_and_paged(client: TestClient) -> None:
    customer = new_customer(client)
    cid = customer["id"]
    events(client, cid, 1_200, f"export-{cid}")
    lead = client.post("/leads", json={"company_name": "E", "contact_name": "Erika M",
                                       "region_id": 1, "customer_id": cid}).json()
    wait_run(client, client.post("/agents/lead_intake/runs",
                                 json={"lead_id": lead["id"]}).json()["run_id"])
    resp = client.get(f"/customers/{cid}/export")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    bundle = verify_bundle(resp.content)
    assert bundle["ok"]
    counts = bundle["manifest"]["sections"]
    assert counts["customer"] == 1 and counts["contacts"] == 1
    assert counts["cdp_events"] == 1_200 and counts["leads"] == 1
    assert counts["agent_runs"] == 1 and counts["profile"] == 1
    assert counts["audit"] >= 1
    assert counts["stream_messages"] >= 1_200
    records = dict(bundle["records"][:1])
    assert records["customer"]["tags"] == ["newsletter"]
    profile = next(r for s, r in bundle["records"] if s == "profile")
    assert profile["tags"]["price_sensitivity"]["formula"]
    tampered = resp.content.replace(b"erika@example.com", b"erika@example.org")
    assert not verify_bundle(tampered)["ok"]


def test_erase_removes_everything_keeps_the_audit_and_is_idempotent(
        client: TestClient, module_db_url: str) -> None:
    customer = new_customer(client)
    cid = customer["id"]
    events(client, cid, 3, f"erase-{cid}")
    lead = client.post("/leads", json={"company_name": "E", "contact_name": "Erika M",
                                       "email": "erika@example.com", "region_id": 1,
                                       "customer_id": cid}).json()
    wait_run(client, client.post("/agents/lead_intake/runs",
                                 json={"lead_id": lead["id"]}).json()["run_id"])
    first = client.post(f"/customers/{cid}/erase")
    assert first.status_code == 200, first.text
    assert first.json()["erased"] is True
    assert first.json()["removed"]["customers"] == 1
    again = client.post(f"/customers/{cid}/erase").json()
    assert again == {"customer_id": cid, "erased": False, "already_erased": True,
                     "removed": {}, "audit_seq": first.json()["audit_seq"]}
    assert client.get(f"/customers/{cid}/export").status_code == 404
    assert client.get(f"/customers/{cid}").status_code == 404
    assert client.get(f"/leads/{lead['id']}").status_code == 404
    assert client.post("/customers/999999/erase").status_code == 404
    left = asyncio.run(_leftovers(module_db_url, cid))
    assert left == {}
    audit = client.get(f"/audit?customer_id={cid}&action=erase").json()["items"]
    assert len(audit) == 1
    text = str(audit[0])
    for personal in ("Erika", "erika@example.com", "Muster", "1234"):
        assert personal not in text
    assert client.get("/audit/verify").json()["ok"] is True


async def _leftovers(url: str, cid: int) -> dict[str, int]:
    db = open_database(url)
    await db.connect()
    try:
        out: dict[str, int] = {}
        for section in SECTIONS:
            where = section.where.replace("?", str(cid))
            count = int(await db.fetch_val(f"SELECT COUNT(*) FROM {section.table} WHERE {where}"))
            if count:
                out[section.name] = count
        for table in ("customers", "customer_tags", "cdp_profiles"):
            col = "id" if table == "customers" else "customer_id"
            count = int(await db.fetch_val(f"SELECT COUNT(*) FROM {table} WHERE {col} = {cid}"))
            if count:
                out[table] = count
        orphans = await db.fetch_val(
            "SELECT COUNT(*) FROM order_lines l LEFT JOIN orders o ON o.id = l.order_id "
            "WHERE o.id IS NULL")
        if orphans:
            out["orphan order lines"] = int(orphans)
        return out
    finally:
        await db.close()


def test_audit_is_append_only_and_tampering_is_detected(
        client: TestClient, module_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cid = new_customer(client)["id"]
    assert client.get(f"/customers/{cid}/export").status_code == 200
    assert audit_main(["verify", "--db", module_db_url]) == 0
    seq = client.get(f"/audit?customer_id={cid}&action=export").json()["items"][0]["seq"]
    assert asyncio.run(_tamper(module_db_url, seq)) == "refused"
    assert audit_main(["verify", "--db", module_db_url]) == 1
    verdict = client.get("/audit/verify").json()
    assert verdict["ok"] is False and verdict["first_bad_seq"] == seq
    assert "changed" in verdict["problem"]
    assert '"ok":false' in capsys.readouterr().out


async def _tamper(url: str, seq: int) -> str:
    """Try to change an entry (the triggers refuse), then do it with the triggers gone."""
    db = open_database(url)
    await db.connect()
    outcome = "allowed"
    try:
        try:
            await db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (seq,))
        except Exception:
            outcome = "refused"
        if db.dialect == "postgresql":
            await db.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        else:
            await db.execute("DROP TRIGGER audit_log_no_update")
        await db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (seq,))
        return outcome
    finally:
        await db.close()
