"""doctor on every vendor, against the fakes: what will be measured, at which rate."""

from __future__ import annotations

import io

from rich.console import Console

from bench.adapters.doctor import print_doctor
from tests.bench.saas.doctor_fakes import reports


def test_doctor_plans_each_vendor_before_any_write() -> None:
    found = {r["platform"]: r for r in reports()}
    assert set(found) == {"salesforce", "fxiaoke", "ec", "wecom"}
    assert all(r["status"] == "ok" and r["exit_code"] == 0 for r in found.values())
    plans = {name: r["rate_plan"] for name, r in found.items()}
    # Salesforce: the daily allocation left, spread over the standard run.
    assert plans["salesforce"]["action"] == "scaled"
    assert "DailyApiRequests" in plans["salesforce"]["binding"]
    assert set(found["salesforce"]["measured"]) >= {
        "cdp.event_delay", "workflow.max_nodes", "sla.granularity", "crud.mixed"}
    assert "SALESFORCE_AGENT_ID" in found["salesforce"]["blocked"]["agent.latency"]
    # Fxiaoke: 100 calls per interface per 20 s; WeCom: 10,000 a minute per API.
    assert plans["fxiaoke"]["action"] == "scaled" and plans["fxiaoke"]["allowed_rate"] < 20
    assert plans["wecom"]["action"] == "scaled"
    assert round(plans["wecom"]["allowed_rate"]) == 333
    # EC documents no quota: the plan says so instead of inventing one.
    assert plans["ec"]["action"] == "ok" and "no quota is documented" in plans["ec"]["summary"]
    out = io.StringIO()
    print_doctor(found["fxiaoke"], Console(file=out, width=200))
    text = out.getvalue()
    # Rich markup would eat the bracketed sources.
    assert "[developer.fxiaoke.com" in text and "not measured: sla.granularity" in text
