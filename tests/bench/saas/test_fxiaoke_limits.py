"""Fxiaoke tokens and rates: timed calls never fetch a token, the token endpoint's own
limit, and runs planned inside the documented quotas."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bench.adapters.base import GeneratorSettings, Keyspace, RunPlan, Status
from bench.adapters.saas.fxiaoke import FxiaokeAdapter
from bench.adapters.saas.quota import Quota
from bench.scenarios.config import load_scenario
from bench.scenarios.mixed import MixedWorkload
from tests.bench.saas.fake_fxiaoke import GET, QUERY, TOKEN, FakeFxiaoke
from tests.bench.saas.test_fxiaoke import RUN, make, started
from tests.bench.saas.test_http import FakeClock

RENEW_S = 6600.0
EXPIRY_S = 7200.0


def crm_requests(fake: FakeFxiaoke) -> int:
    return sum(1 for r in fake.requests if r.url.path != TOKEN)


def token(adapter: FxiaokeAdapter) -> Any:
    box = adapter._token
    assert box is not None
    return box


# ------------------------------------------------------------------ tokens


def test_timed_calls_renew_the_token_in_the_background() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    adapter = started(fake, clock, customers=2)
    assert adapter.get_customer(1) is Status.ok and len(fake.tokens) == 1
    clock.now += RENEW_S + 1
    # Served with the cached token; the new one is fetched off the timed path.
    assert adapter.get_customer(1) is Status.ok
    token(adapter).wait_refreshed()
    assert len(fake.tokens) == 2
    assert fake.token_threads[0] == threading.current_thread().name
    assert fake.token_threads[1] != threading.current_thread().name
    assert fake.bodies(GET)[-1]["corpAccessToken"] == fake.tokens[0]
    assert adapter.get_customer(1) is Status.ok
    assert fake.bodies(GET)[-1]["corpAccessToken"] == fake.tokens[1]


def test_a_refused_token_keeps_its_status_and_is_replaced_in_the_background() -> None:
    fake = FakeFxiaoke()
    adapter = started(fake, customers=2)
    fake.valid_tokens.clear()
    sent = crm_requests(fake)
    # errorCode 20016: reported as it came, not repeated inside the timed call.
    assert adapter.get_customer(1) is Status.rejected
    assert crm_requests(fake) == sent + 1
    token(adapter).wait_refreshed()
    assert len(fake.tokens) == 2 and fake.token_threads[1] != threading.current_thread().name
    assert adapter.get_customer(2) is Status.ok


def test_past_expiry_a_timed_call_is_not_sent_without_a_token() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    adapter = started(fake, clock, customers=2)
    fake.token_gate = gate = threading.Event()
    clock.now += EXPIRY_S + 1
    sent = crm_requests(fake)
    assert adapter.get_customer(1) is Status.error
    assert crm_requests(fake) == sent and len(fake.tokens) == 1
    gate.set()
    token(adapter).wait_refreshed()
    assert adapter.get_customer(1) is Status.ok and len(fake.tokens) == 2


def test_setup_calls_fetch_a_new_token_on_20016_and_repeat_once() -> None:
    fake = FakeFxiaoke()
    adapter = started(fake, customers=2)
    fake.valid_tokens.clear()
    assert adapter.cleanup(RUN) == 2
    assert len(fake.tokens) == 2 and fake.token_threads[1] == threading.current_thread().name


def test_the_token_endpoint_has_its_own_limit_of_ten_calls_a_minute() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    adapter = make(fake, clock)
    adapter.open()
    # Ten refused tokens in a row: each setup call fetches a new one (eleven in all).
    for _ in range(10):
        fake.valid_tokens.clear()
        adapter.cleanup("other-run")
    assert len(fake.tokens) == 11
    token_waits = [s for s in clock.slept if s > 20.0]
    assert len(token_waits) == 1 and token_waits[0] == pytest.approx(60.0)
    # The CRM interfaces keep their own count: 30 queries went out without waiting.
    assert len(clock.slept) == 1 and len(fake.bodies(QUERY)) == 30


def test_each_load_generator_process_limits_itself_to_its_share() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    started(fake, clock, customers=2)
    worker = make(fake, clock, run_id=RUN)
    worker.prepare_generator(GeneratorSettings(concurrency=10, processes=4))
    worker.open()
    worker.keyspace()
    clock.now += 20.0
    # A quarter of 100 calls per 20 s per interface, sent; the rest refused unsent.
    sent = len(fake.bodies(GET))
    statuses = [worker.get_customer(1) for _ in range(30)]
    assert statuses == [Status.ok] * 25 + [Status.rate_limited] * 5
    assert len(fake.bodies(GET)) == sent + 25
    # Each interface counts apart; a new window takes calls again.
    assert worker.list_leads(1) is Status.ok
    clock.now += 20.0
    assert worker.get_customer(1) is Status.ok


# ------------------------------------------------------------------ rate plan


def _mixed(rate: float, **kw: Any) -> RunPlan:
    scenario = load_scenario("mixed", profile="standard")
    return RunPlan(run_id=RUN, scenario="mixed", estimated_calls=1, allow_production=True,
                   rate=rate, duration_s=scenario.phases.total_s, users=scenario.users,
                   mix=dict(scenario.mix), **kw)


def test_quotas_are_the_documented_limits() -> None:
    found = {q.name: q for q in FxiaokeAdapter("open.fxiaoke.com").quotas()}
    per_api = [q for name, q in found.items() if name.startswith("calls per interface")]
    assert sorted(n.rsplit(": ", 1)[1] for n in found if n.startswith("calls per interface")) \
        == ["data/create", "data/get", "data/query"]
    assert all((q.calls, q.window_s, q.assumed) == (100, 20.0, False) for q in per_api)
    assert all("rate.html" in q.source for q in found.values() if "token" not in q.name)
    daily = next(q for q in found.values() if q.window_s == 86_400)
    assert (daily.calls, daily.assumed) == (100_000, True)
    tok = next(q for q in found.values() if "token" in q.name)
    assert (tok.calls, tok.window_s, dict(tok.costs or {})) == (10, 60.0, {})
    given = FxiaokeAdapter("open.fxiaoke.com", daily_calls=300_000).quotas()
    assert [(q.calls, q.assumed) for q in given if q.window_s == 86_400] == [(300_000, False)]


def test_preflight_plans_the_mixed_workload_inside_the_quotas() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, customers=2)
    rate_plan = adapter.preflight(_mixed(1000.0))["rate_plan"]
    # data/query takes searches (20) and lead lists (10) of every 100 requests:
    # 80 % of 100 calls per 20 s is 4 calls/s, so 4 / 0.3 requests/s in all.
    assert rate_plan["action"] == "scaled"
    assert rate_plan["allowed_rate"] == pytest.approx(4 / 0.3)
    assert rate_plan["binding"] == "calls per interface per 20 s: data/query"
    assert any("assumed" in line for line in rate_plan["quotas"])
    assert adapter.preflight(_mixed(5.0))["rate_plan"]["action"] == "ok"
    with pytest.raises(Exception, match=r"1000 req/s asked.*data/query"):
        adapter.preflight(_mixed(1000.0, over_quota="refuse"))


def _drive(adapter: FxiaokeAdapter, clock: FakeClock, rate: float, seconds: float) -> list[Status]:
    """The mixed workload sent at ``rate`` for ``seconds`` of the fake clock."""
    scenario = load_scenario("mixed", profile="standard")
    # update_opportunity_stage answers unsupported without a key being used.
    keys = Keyspace(customers=adapter.keyspace().customers, opportunities=1, reps=1,
                    regions=30, products=1)
    workload = MixedWorkload(adapter, keys, dict(scenario.mix), seed=7, namespace="t")
    out = []
    for _ in range(int(rate * seconds)):
        _op, verb, args = workload.next()
        out.append(verb(*args))
        clock.now += 1 / rate
    return out


def test_a_run_at_the_planned_rate_is_never_refused_by_the_client_side_limiter() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    adapter = make(fake, clock, customers=5)
    allowed = adapter.preflight(_mixed(1000.0))["rate_plan"]["allowed_rate"]
    adapter.keyspace()
    clock.now += 20.0
    planned = _drive(adapter, clock, allowed, 120.0)
    assert Status.rate_limited not in planned
    assert planned.count(Status.ok) > 0.3 * len(planned)
    # The scenario's own rate, unplanned: the limiter refuses most calls before sending.
    clock.now += 20.0
    unplanned = _drive(adapter, clock, 1000.0, 5.0)
    sent = [s for s in unplanned if s is not Status.unsupported]
    assert sent.count(Status.rate_limited) > 0.8 * len(sent)


def test_the_daily_allocation_binds_long_runs() -> None:
    adapter = FxiaokeAdapter("open.fxiaoke.com", daily_calls=1_000)
    found = adapter.rate_plan(_mixed(1000.0))
    # Half the requests of the mix send a call (get, search, lead list, lead creation).
    daily = next(q for q in adapter.quotas() if q.window_s == 86_400)
    assert isinstance(daily, Quota) and found.binding == daily.name
    length = load_scenario("mixed", profile="standard").phases.total_s
    assert found.allowed == pytest.approx(0.8 * 1_000 / (0.5 * length))
