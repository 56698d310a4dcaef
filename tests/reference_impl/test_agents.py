"""The lead-intake agent on both backends: takeover rules, run-time thresholds, decision logs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from bench.errors import UserError
from reference_impl.agents import RuleScorer, Score, load_scorer
from tests.conftest import LiveCrm

STEPS = ["qualify", "purchase_history", "inventory", "quote", "notify"]
DEFAULTS = {"min_confidence": 0.82, "max_quote": 50_000.0, "escalate_tiers": ["strategic"]}


@pytest.fixture()
def api(live_crm: LiveCrm) -> Iterator[httpx.Client]:
    with live_crm.client() as c:
        yield c
        c.put("/agents/lead_intake/config", json=DEFAULTS)


def _lead(c: httpx.Client, *, tier: str | None = "normal", complete: bool = True,
          **extra: Any) -> int:
    body: dict[str, Any] = {"company_name": "Agent Probe", "contact_name": "Ana Ruiz",
                            "region_id": 1, "product_interest": [1, 2], **extra}
    if tier is not None:
        cust = c.post("/customers", json={"name": "Agent Probe", "industry": "x",
                                          "region_id": 1, "owner_rep_id": 2, "tier": tier,
                                          "employees": 120, "annual_revenue": 4e6})
        assert cust.status_code == 201, cust.text
        body["customer_id"] = cust.json()["id"]
    if complete:
        body.update(email="ana@probe.example", phone="+34 91 123 4567", source="referral")
    else:
        body.update(source="other")
    resp = c.post("/leads", json=body)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _run(live: LiveCrm, c: httpx.Client, lead_id: int,
         **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trigger a run; return its stream message and its stored run document."""
    start = c.get("/stream/info").json()["last_seq"]
    with live.stream(after=start, types="agent.completed,agent.escalated,agent.failed") as s:
        resp = c.post("/agents/lead_intake/runs", json={"lead_id": lead_id, **extra})
        assert resp.status_code == 202, resp.text
        started = resp.json()
        assert started["status"] == "running"
        msg = s.next()
    assert msg["data"]["payload"]["run_id"] == started["run_id"]
    run = c.get(f"/agents/runs/{started['run_id']}").json()
    return msg, run


def test_clean_lead_completes_and_notifies_its_owner(live_crm: LiveCrm, api: httpx.Client) -> None:
    msg, run = _run(live_crm, api, _lead(api, owner_rep_id=7), quantity=1)
    assert msg["event"] == "agent.completed"
    payload = msg["data"]["payload"]
    assert set(payload) == {"run_id", "lead_id", "customer_id", "owner_rep_id", "status",
                            "quote_total", "duration_ms"}
    assert payload["status"] == "completed" and payload["owner_rep_id"] == 7
    assert run["status"] == "completed" and run["escalation_reasons"] == []
    assert run["quote"]["total"] == payload["quote_total"] < 50_000
    assert run["quantity"] == 1 and run["finished_at"] >= run["started_at"]
    assert run["customer_id"] == payload["customer_id"] == msg["data"]["customer_id"]


def test_every_step_is_logged_with_inputs_output_and_rule(
    live_crm: LiveCrm, api: httpx.Client
) -> None:
    _msg, run = _run(live_crm, api, _lead(api), quantity=3)
    log = run["decision_log"]
    assert [e["step"] for e in log] == STEPS
    for entry in log:
        assert set(entry) == {"step", "intent", "inputs", "output", "confidence", "rule",
                              "duration_ms"}
        assert entry["intent"] and entry["rule"] and entry["inputs"] and entry["output"]
        assert 0.0 <= entry["confidence"] <= 1.0 and entry["duration_ms"] >= 0
    by_step = {e["step"]: e for e in log}
    quote = by_step["quote"]["output"]
    assert quote == run["quote"]
    assert [line["product_id"] for line in quote["lines"]] == [1, 2]
    assert all(line["quantity"] == 3 for line in quote["lines"])
    assert quote["total"] == round(quote["subtotal"] - quote["discount"], 2)
    assert {s["product_id"] for s in by_step["inventory"]["output"]["stock"]} == {1, 2}
    assert by_step["qualify"]["inputs"]["customer_id"] == run["customer_id"]
    assert by_step["notify"]["inputs"]["min_confidence"] == 0.82


@pytest.mark.parametrize(
    ("lead", "extra", "reason"),
    [
        ({"tier": None, "complete": False}, {"quantity": 1}, "confidence 0.50 < 0.82"),
        ({}, {"quantity": 1_000_000}, "> 50,000"),
        ({"tier": "strategic"}, {"quantity": 1}, "customer tier strategic"),
    ],
    ids=["low-confidence", "high-quote", "strategic-tier"],
)
def test_takeover_rules_send_runs_to_the_human_queue(
    live_crm: LiveCrm, api: httpx.Client, lead: dict[str, Any], extra: dict[str, Any],
    reason: str,
) -> None:
    msg, run = _run(live_crm, api, _lead(api, **lead), **extra)
    assert msg["event"] == "agent.escalated"
    reasons = msg["data"]["payload"]["reasons"]
    assert len(reasons) == 1 and reason in reasons[0]
    assert run["status"] == "escalated" and run["escalation_reasons"] == reasons
    assert [e["step"] for e in run["decision_log"]] == STEPS
    queue = api.get("/agents/queue", params={"limit": 500}).json()
    assert run["run_id"] in [item["run_id"] for item in queue["items"]]


def test_thresholds_changed_at_run_time_take_effect(
    live_crm: LiveCrm, api: httpx.Client
) -> None:
    clean = _lead(api)
    put = api.put("/agents/lead_intake/config", json={"max_quote": 0})
    assert put.status_code == 200, put.text
    assert put.json()["max_quote"] == 0 and put.json()["min_confidence"] == 0.82
    msg, _run_doc = _run(live_crm, api, clean, quantity=1)
    assert msg["event"] == "agent.escalated"
    assert msg["data"]["payload"]["reasons"][0].endswith("> 0")
    api.put("/agents/lead_intake/config",
            json={"max_quote": 1e9, "min_confidence": 0.4, "escalate_tiers": []})
    assert api.get("/agents/lead_intake/config").json()["escalate_tiers"] == []
    for lead in (_lead(api, tier=None, complete=False), _lead(api, tier="strategic")):
        msg, _run_doc = _run(live_crm, api, lead, quantity=1_000_000)
        assert msg["event"] == "agent.completed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"min_confidence": -0.1}, "min_confidence"),
        ({"max_quote": -1}, "max_quote"),
        ({"escalate_tiers": ["gold"]}, "escalate_tiers[0]"),
        ({"escalate_tiers": "strategic"}, "escalate_tiers"),
        ({"scorer": "x.y"}, "scorer"),
    ],
)
def test_invalid_config_is_refused(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    before = api.get("/agents/lead_intake/config").json()
    resp = api.put("/agents/lead_intake/config", json=body)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == field
    assert api.get("/agents/lead_intake/config").json() == before


def test_refusals_and_unknowns(api: httpx.Client) -> None:
    resp = api.post("/agents/lead_intake/runs", json={"lead_id": 10**12})
    assert resp.status_code == 422
    assert resp.json()["error"] == {"code": "unknown_reference", "field": "lead_id",
                                    "message": resp.json()["error"]["message"]}
    for body, field in (({"lead_id": 1, "quantity": 0}, "quantity"),
                        ({"lead_id": 1, "quantity": 1_000_001}, "quantity"),
                        ({}, "lead_id")):
        resp = api.post("/agents/lead_intake/runs", json=body)
        assert (resp.status_code, resp.json()["error"]["field"]) == (422, field)
    assert api.post("/agents/nobody/runs", json={"lead_id": 1}).status_code == 404
    assert api.get("/agents/nobody/config").status_code == 404
    for run_id in ("999999999", "abc", "config"):
        assert api.get(f"/agents/runs/{run_id}").status_code == 404
    assert api.get("/agents/queue", params={"limit": 0}).status_code == 400


def test_queue_pages_through_escalated_runs(live_crm: LiveCrm, api: httpx.Client) -> None:
    for _ in range(3):
        _run(live_crm, api, _lead(api, tier="strategic"), quantity=1)
    page = api.get("/agents/queue", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_after"] is not None
    assert all(item["status"] == "escalated" for item in page["items"])
    rest = api.get("/agents/queue", params={"limit": 500, "after": page["next_after"]}).json()
    ids = [int(i["run_id"]) for i in page["items"] + rest["items"]]
    assert ids == sorted(set(ids))


class FixedScorer:
    """A stand-in model: always sure, always qualified."""

    name = "fixed"

    async def score(self, features: Mapping[str, Any]) -> Score:
        return Score(1.0, 1.0, "always 1")


def test_scorers_load_by_dotted_path() -> None:
    assert isinstance(load_scorer("reference_impl.agents:RuleScorer"), RuleScorer)
    assert load_scorer("tests.reference_impl.test_agents.FixedScorer").name == "fixed"
    for bad in ("nowhere.module:Scorer", "reference_impl.agents:Missing", "json:dumps"):
        with pytest.raises(UserError):
            load_scorer(bad)
