"""Rate plans from documented quotas, timed calls that never fetch tokens, run tags."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from bench.adapters.base import Keyspace, RunPlan, Status
from bench.adapters.doctor import _rate_plan
from bench.adapters.saas.common import VendorAdapter, is_tagged, run_tag, seed_name, tag_prefix
from bench.adapters.saas.http import Secret, TokenBox, TokenUnavailable
from bench.adapters.saas.quota import Concurrency, Quota, RatePlan, plan_rate, quota_rate
from bench.errors import UserError
from bench.scenarios.config import load_scenario
from bench.scenarios.mixed import MixedWorkload
from bench.scenarios.runner import RunRequest, _planned
from bench.scenarios.session import Preflight

MIX = {"get_customer": 3.0, "customer_360": 1.0}


def _plan(rate: float = 1000.0, duration_s: float = 600.0, users: int = 500,
          **kw: Any) -> RunPlan:
    return RunPlan(run_id="r1", scenario="mixed", estimated_calls=1, rate=rate,
                   duration_s=duration_s, users=users, mix=MIX, **kw)


def test_a_per_minute_quota_scales_the_rate_to_its_sustained_share() -> None:
    minute = Quota("reads per company per minute", 10_000, 60)
    found = plan_rate([minute], _plan())
    # 80 % of 10,000 calls a minute, one call per request.
    assert found.action == "scaled" and found.allowed == pytest.approx(8000 / 60)
    assert found.binding == "reads per company per minute"
    assert found.users == 500 and "10,000 calls per minute" in found.lines[0]


def test_costs_count_only_the_operations_a_quota_charges() -> None:
    # customer_360 costs 3 calls of this API, get_customer none: 0.75 calls per request.
    api = Quota("360 API", 600, 60, costs={"customer_360": 3})
    assert api.per_request(MIX) == pytest.approx(0.75)
    assert quota_rate(api, _plan()) == pytest.approx(0.8 * 600 / 60 / 0.75)
    unrelated = Quota("other API", 1, 60, costs={"create_lead": 1})
    assert plan_rate([unrelated], _plan(rate=5)).action == "ok"


def test_a_daily_allocation_is_spent_over_the_run_not_per_day() -> None:
    daily = Quota("API requests per 24 h", 15_000, 86_400, remaining=6_000)
    # 600 s of run: at most 80 % of what is left, 4,800 calls, 8 req/s.
    assert quota_rate(daily, _plan()) == pytest.approx(8.0)
    drained = Quota("API requests per 24 h", 15_000, 86_400, remaining=0)
    found = plan_rate([drained], _plan())
    assert found.action == "refused" and found.allowed == 0


def test_within_quotas_the_plan_is_ok_and_refuse_policy_refuses() -> None:
    quota = Quota("calls per 20 s", 100, 20)
    assert plan_rate([quota], _plan(rate=2.0)).action == "ok"
    assert plan_rate([], _plan()).action == "ok"
    assert plan_rate([quota], _plan(over_quota="refuse")).action == "refused"


def test_a_concurrency_cap_limits_users_and_binds_the_plan() -> None:
    cap = Concurrency("calls in flight per app", 25)
    found = plan_rate([], _plan(rate=10), concurrency=[cap])
    assert found.action == "scaled" and found.users == 25 and found.allowed == 10
    assert found.binding == "calls in flight per app"
    assert RatePlan.from_json(found.to_json()) == found


class _Quoted(VendorAdapter):
    name = "quoted"
    platform = "quoted"
    label = "Quoted"
    capabilities: ClassVar[dict[str, Any]] = {}
    credential_section = "quoted"
    credential_env: ClassVar[dict[str, str]] = {}

    def quotas(self) -> list[Quota]:
        return [Quota("calls per minute", 600, 60, source="the vendor's limits page")]


def test_a_refused_plan_is_a_user_error_with_the_numbers() -> None:
    adapter = _Quoted("example.invalid")
    assert adapter.rate_plan(_plan()).allowed == pytest.approx(8.0)
    with pytest.raises(UserError, match=r"1000 req/s asked.*allow 8 req/s.*--over-quota scale"):
        adapter.rate_plan(_plan(over_quota="refuse"))
    scenario = load_scenario("mixed", profile="quick")
    shown = _rate_plan(adapter, scenario)
    assert shown is not None and shown["action"] == "scaled"
    assert "600 calls per minute" in shown["quotas"][0]


def test_the_runner_sends_the_planned_rate_and_says_so() -> None:
    scenario = load_scenario("mixed", profile="quick")
    req = RunRequest(scenario, target="noop://")
    plan = RatePlan(scenario.rate, 8.0, "scaled", "calls per minute", 25, ("q",))
    found = Preflight("quoted", None, {}, {"rate_plan": plan.to_json()})
    said: list[str] = []
    record: Any = type("R", (), {"scenario": scenario})()
    planned = _planned(req, record, found, said.append)
    assert planned.scenario.rate == 8.0 and planned.scenario.users == 25
    assert record.scenario is planned.scenario
    assert "scaled" in said[0] and "calls per minute" in said[0]
    ok = Preflight("quoted", None, {}, {"rate_plan": {**plan.to_json(), "action": "ok"}})
    assert _planned(req, record, ok, said.append) is req


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_timed_calls_peek_the_token_and_refresh_it_in_the_background() -> None:
    clock = _Clock()
    fetched: list[float] = []
    gate = threading.Event()

    def fetch() -> tuple[Secret, float | None]:
        fetched.append(clock.now)
        if len(fetched) > 1:
            gate.wait(5)
        return Secret(f"token-{len(fetched):04d}"), 3600.0

    box = TokenBox(fetch, clock=clock, margin_s=300)
    with pytest.raises(TokenUnavailable):
        box.peek()  # nothing fetched yet: not sent, and a fetch starts behind it
    box.wait_refreshed()
    first = box.peek()
    assert first.reveal() == "token-0001"
    clock.now = 3400.0  # inside the margin: still served, a refresh starts behind it
    assert box.peek() == first
    assert box.peek() == first  # the refresh under way blocks nobody
    gate.set()
    box.wait_refreshed()
    assert box.peek().reveal() == "token-0002" and len(fetched) == 2


def test_a_refused_token_is_replaced_in_the_background_once() -> None:
    count = [0]

    def fetch() -> tuple[Secret, float | None]:
        count[0] += 1
        return Secret(f"token-{count[0]:04d}"), None

    box = TokenBox(fetch)
    stale = box.get()
    box.refresh_later(stale)
    box.refresh_later(stale)
    box.wait_refreshed()
    assert box.peek().reveal() == "token-0002" and count[0] == 2


def test_vendor_verbs_report_a_missing_token_as_not_sent() -> None:
    def call() -> Status:
        raise TokenUnavailable("none")

    assert VendorAdapter._verb(call) is Status.error


def test_cleanup_prefix_never_matches_a_run_whose_id_starts_the_same() -> None:
    assert tag_prefix("a") == "crmbench:a "
    assert is_tagged(seed_name(run_tag("a"), 3), "a")
    assert not is_tagged(seed_name(run_tag("ab"), 3), "a")
    assert not is_tagged(None, "a") and not is_tagged("crmbench:a", "a")


def test_each_generator_process_names_its_leads_apart() -> None:
    ks = Keyspace(customers=10, opportunities=10, reps=2, regions=3, products=2)
    class _Leads(_Quoted):
        def create_lead(self, lead: Any) -> Status:
            return Status.ok

    names = set()
    for worker in ("run1-w0", "run1-w1"):
        wl = MixedWorkload(_Leads("x"), ks, {"create_lead": 1.0}, seed=1, namespace=worker)
        for _ in range(3):
            _op, _fn, (lead,) = wl.next()
            names.add((lead.company_name, lead.email))
    assert len(names) == 6
    assert ("Bench Prospect run1-w1-2", "lead-run1-w1-2@bench.example") in names


def test_a_mix_runs_on_a_platform_without_the_keys_of_verbs_it_lacks() -> None:
    # No opportunities, and the adapter leaves the stage verb to the base: that operation
    # is answered unsupported without a key, the rest of the mix runs.
    ks = Keyspace(customers=10, opportunities=0, reps=2, regions=3, products=0)
    wl = MixedWorkload(_Quoted("x"), ks, {"update_opportunity_stage": 1.0, "get_customer": 1.0},
                       seed=3)
    seen = {wl.next()[0] for _ in range(40)}
    assert seen == {"update_opportunity_stage", "get_customer"}
    _op, fn, args = next(c for c in iter(wl.next, None) if c[0] == "update_opportunity_stage")
    assert fn(*args) is Status.unsupported

    class _Stages(_Quoted):
        def update_opportunity_stage(self, opportunity_id: Any, stage: Any) -> Status:
            return Status.ok

    with pytest.raises(ValueError, match="update_opportunity_stage needs opportunities"):
        MixedWorkload(_Stages("x"), ks, {"update_opportunity_stage": 1.0}, seed=3)


def test_in_run_probe_calls_take_their_share_of_quotas_that_count_every_call() -> None:
    minute = Quota("calls per minute", 600, 60)
    # 8 calls/s allowed; the probes send 3 of them, the mix gets the other 5.
    assert quota_rate(minute, _plan(probe_rate=3.0)) == pytest.approx(5.0)
    per_api = Quota("360 API", 600, 60, costs={"customer_360": 1})
    assert quota_rate(per_api, _plan(probe_rate=3.0)) == pytest.approx(8.0 / 0.25)
    assert plan_rate([minute], _plan(probe_rate=9.0)).action == "refused"
