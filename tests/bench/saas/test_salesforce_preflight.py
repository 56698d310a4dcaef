"""Salesforce preflight: field access, data storage for the run's writes, API quotas."""

from __future__ import annotations

from typing import Any

import pytest

from bench.adapters.base import RunPlan
from bench.adapters.saas.salesforce import SalesforceAdapter
from bench.adapters.saas.salesforce_preflight import DAILY_QUOTA, writes_per_second
from bench.errors import UserError
from tests.bench.saas.fake_salesforce import SF_LOGIN_HOST, FakeSalesforce
from tests.bench.saas.test_salesforce import ENV, RUN

# The mixed workload's weights (bench/scenarios/mixed.toml): 15 % of calls create a record.
MIX = {"customer_360": 30, "search_customers": 20, "list_leads": 10, "get_customer": 10,
       "create_lead": 10, "update_opportunity_stage": 10, "log_activity": 5,
       "update_customer": 5}


def make(fake: FakeSalesforce, customers: int = 200) -> SalesforceAdapter:
    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, customers=customers,
                                transport=fake.transport(), sleep=lambda s: None)
    adapter.open()
    return adapter


def run_plan(rate: float = 1.0, duration_s: float = 100.0, users: int = 4,
             **kw: Any) -> RunPlan:
    return RunPlan(run_id=RUN, scenario="mixed",
                   estimated_calls=int(rate * duration_s * 1.1) + 100, rate=rate,
                   duration_s=duration_s, users=users, mix=MIX, **kw)


def writes(fake: FakeSalesforce) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in fake.requests
            if r.method in ("POST", "PATCH", "DELETE") and "oauth2" not in r.url.path]


# ------------------------------------------------------------------ field access


def test_missing_field_access_stops_before_any_write() -> None:
    fake = FakeSalesforce(hidden_fields={"Contact.Email", "Opportunity.Amount"},
                          read_only_fields={"Lead.Email"})
    adapter = make(fake, customers=5)
    with pytest.raises(UserError) as info:
        adapter.preflight(run_plan())
    message = str(info.value)
    assert "create Lead.Email" in message
    assert "read Contact.Email, Opportunity.Amount" in message
    assert "field-level security" in message and "permission set" in message
    assert "connected app runs as" in message
    assert writes(fake) == []
    described = {r.url.path.rsplit("/", 2)[1] for r in fake.api_requests("/describe")}
    assert described == {"Account", "Contact", "Opportunity", "Lead", "Task"}


def test_objects_the_user_cannot_see_or_delete_are_named() -> None:
    fake = FakeSalesforce(hidden_objects={"Contact"}, object_flags={"Task": {"deletable": False}})
    adapter = make(fake, customers=5)
    with pytest.raises(UserError) as info:
        adapter.preflight(run_plan())
    message = str(info.value)
    assert "delete on the object Task" in message and "read on the object Contact" in message
    assert writes(fake) == []


def test_only_the_operations_of_the_mix_need_their_fields() -> None:
    fake = FakeSalesforce(hidden_fields={"Contact.Email", "Opportunity.Amount"})
    adapter = make(fake, customers=5)
    plan = run_plan()
    without_360 = RunPlan(**{**plan.__dict__, "mix": {**MIX, "customer_360": 0}})
    facts = adapter.preflight(without_360)
    assert "Contact" not in facts["access"]["described"]
    assert facts["fixture"]["customers"] == 5


# ------------------------------------------------------------------ data storage


def test_storage_is_budgeted_for_the_leads_and_tasks_the_run_creates() -> None:
    # 0.5 MB left, half of it usable: 256 KB. The run creates 15 % of 100 calls = 15
    # records (30 KB); each customer takes 4 KB: (256 - 30) / 4 = 56 customers.
    assert writes_per_second(1.0, MIX) == pytest.approx(0.15)
    fake = FakeSalesforce(storage_remaining_mb=0.5)
    facts = make(fake).preflight(run_plan(rate=1.0, duration_s=100.0))
    assert facts["storage"]["run_records"] == 15
    assert facts["fixture"]["customers"] == 56
    assert "scaled from 200 to 56" in facts["fixture"]["scaled"]
    assert "15 leads and tasks" in facts["fixture"]["scaled"]


def test_a_run_whose_writes_do_not_fit_is_refused_before_any_write() -> None:
    # A nearly full Developer Edition org: 0.05 MB left, 25.6 KB usable; the run would
    # create 150 records (300 KB).
    fake = FakeSalesforce(storage_remaining_mb=0.05)
    adapter = make(fake)
    with pytest.raises(UserError) as info:
        adapter.preflight(run_plan(rate=10.0, duration_s=100.0))
    message = str(info.value)
    assert "0.05 MB of data storage left" in message
    assert "about 150 leads and tasks (300 KB" in message
    assert "Lower the rate or the duration" in message
    assert writes(fake) == []


def test_storage_filling_up_while_seeding_is_named() -> None:
    # The Limits resource reports storage with a delay: the org is fuller than it says.
    fake = FakeSalesforce(storage_remaining_mb=0.1, limits_storage_mb=5.0)
    adapter = make(fake, customers=100)
    with pytest.raises(UserError) as info:
        adapter.preflight(run_plan())
    message = str(info.value)
    assert "STORAGE_LIMIT_EXCEEDED" in message and "data storage is full" in message
    assert "crmbench cleanup" in message


# ------------------------------------------------------------------ quotas


def test_quotas_come_from_the_limits_resource() -> None:
    fake = FakeSalesforce(api_max=15_000, api_used=2_000)
    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, transport=fake.transport())
    # Before the org is read: Developer Edition's allocation and cap, marked as assumed.
    (daily,) = adapter.quotas()
    assert daily.assumed and daily.calls == 15_000 and daily.window_s == 86_400
    (cap,) = adapter.concurrency()
    assert cap.assumed and cap.limit == 5
    adapter.open()
    adapter.target_facts()
    (daily,) = adapter.quotas()
    assert not daily.assumed and daily.name == DAILY_QUOTA
    assert daily.calls == 15_000 and daily.remaining == 15_000 - fake.api_used
    assert "API Request Limits and Allocations" in daily.source
    (cap,) = adapter.concurrency()
    assert (cap.limit, cap.assumed, cap.over_s) == (5, False, 20.0)
    assert not cap.caps_users and "lasting over 20 s" in cap.describe()


def test_production_orgs_and_sandboxes_allow_25_long_requests() -> None:
    fake = FakeSalesforce(org_type="Enterprise Edition", sandbox=True)
    (cap,) = make(fake).concurrency()
    assert cap.limit == 25


def test_preflight_plans_the_rate_under_the_daily_allocation() -> None:
    fake = FakeSalesforce(api_max=15_000, api_used=5_000)
    adapter = make(fake, customers=20)
    facts = adapter.preflight(run_plan(rate=1000.0, duration_s=190.0, users=500))
    plan = facts["rate_plan"]
    assert plan["action"] == "scaled" and plan["binding"] == DAILY_QUOTA
    # 80 % of what is left after setup and cleanup, spread over the run.
    assert 30 < plan["allowed_rate"] < 0.8 * 10_000 / 190
    # The org's cap on concurrent requests counts only those lasting 20 s or more: the
    # users are not cut to it.
    assert plan["users"] == 500
    assert any("lasting over 20 s" in line for line in plan["quotas"])
    # The planned run, its setup and its cleanup fit in what the org has left.
    assert facts["api"]["needed"] <= facts["api"]["daily_remaining"]
    assert facts["api"]["scenario"] < 1000 * 190


def test_over_quota_refuse_stops_before_any_write() -> None:
    fake = FakeSalesforce(api_max=15_000, api_used=5_000)
    adapter = make(fake, customers=20)
    with pytest.raises(UserError, match=r"refused: 1000 req/s asked.*DailyApiRequests"):
        adapter.preflight(run_plan(rate=1000.0, duration_s=190.0, over_quota="refuse"))
    assert writes(fake) == []


def test_a_run_within_the_allocation_is_ok() -> None:
    facts = make(FakeSalesforce(), customers=5).preflight(run_plan(rate=1.0, users=4))
    assert facts["rate_plan"]["action"] == "ok"
    assert facts["rate_plan"]["requested_rate"] == 1.0 <= facts["rate_plan"]["allowed_rate"]
    assert facts["api"]["scenario"] == run_plan(rate=1.0).estimated_calls
