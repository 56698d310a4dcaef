"""WeCom: gettoken, cursors, trusted IPs, per-API quotas and limiter, tokens off the timed path."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bench.adapters.base import CustomerChanges, GeneratorSettings, LeadInput, RunPlan, Status
from bench.adapters.saas import wecom
from bench.adapters.saas.ec import ECAdapter
from bench.adapters.saas.ec import WeComAdapter as ReExported
from bench.adapters.saas.wecom import WeComAdapter
from bench.claims import load_claims
from bench.errors import TargetUnreachable, UserError
from bench.scenarios.config import load_scenario
from bench.scenarios.mixed import MixedWorkload
from bench.scenarios.session import platform_of
from tests.bench.saas.fake_ec import WECOM_CORP_ID, WECOM_SECRET, FakeWeCom

WECOM_ENV = {"WECOM_CORP_ID": WECOM_CORP_ID, "WECOM_SECRET": WECOM_SECRET}
RUN = "wecom-run-3"
GET = "/cgi-bin/externalcontact/get"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_wecom(fake: FakeWeCom, **kw: Any) -> WeComAdapter:
    return WeComAdapter("qyapi.weixin.qq.com", environ=WECOM_ENV, transport=fake.transport(),
                        sleep=lambda s: None, **kw)


def _contacts(**kw: Any) -> FakeWeCom:
    return FakeWeCom(contacts={"zhangsan": ["wmA1", "wmA2", "wmA3"], "lisi": ["wmB1", "wmB2"]},
                     **kw)


def _mixed_plan(**kw: Any) -> RunPlan:
    scenario = load_scenario("mixed")
    values: dict[str, Any] = {"rate": scenario.rate, "duration_s": 180.0,
                              "users": scenario.users, "mix": dict(scenario.mix), **kw}
    return RunPlan(run_id=RUN, scenario="mixed", estimated_calls=1, **values)


# ------------------------------------------------------------------ setup


def test_wecom_token_flow_and_cursor_paging() -> None:
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    first = fake.requests[0]
    assert first.url.path == "/cgi-bin/gettoken"
    assert first.url.params["corpid"] == WECOM_CORP_ID
    batches = [r for r in fake.requests if r.url.path.endswith("batch/get_by_user")]
    assert len(batches) == 3
    assert adapter.keyspace().customers == 5
    assert adapter.get_customer(1) is Status.ok and adapter.customer_360(5) is Status.ok
    assert adapter.get_customer(6) is Status.not_found
    assert adapter.create_lead(LeadInput("A", "B", 1)) is Status.unsupported
    assert adapter.update_customer(1, CustomerChanges(employees=1)) is Status.unsupported
    assert adapter.update_opportunity_stage(1, "won") is Status.unsupported
    assert adapter.preflight(RunPlan(RUN, "mixed", 1))["writes"] == "none"
    assert adapter.cleanup(RUN) == 0


def test_wecom_is_its_own_platform() -> None:
    # Pooled under "ec", WeCom's reads would be reported as EC's CRM figures.
    assert WeComAdapter.platform == "wecom" != ECAdapter.platform
    assert platform_of("wecom://qyapi.weixin.qq.com") == "wecom"
    assert platform_of("ec://open.workec.com") == "ec"
    assert ReExported is WeComAdapter
    # The claimed figures of "EC (WeCom / WeChat Work CRM)" pair with EC's runs only.
    claims = load_claims()
    assert claims.for_platform(ECAdapter.platform) and not claims.for_platform("wecom")


def test_an_untrusted_ip_stops_setup_with_what_to_do() -> None:
    fake = _contacts(refused_ip="203.0.113.9")
    with pytest.raises(UserError) as info:
        make_wecom(fake).open()
    message = str(info.value)
    assert "errcode 60020" in message and "203.0.113.9" in message
    assert "trusted IPs" in message and "egress IP" in message
    # Nothing past the first refused call was tried.
    assert fake.paths() == ["/cgi-bin/gettoken", "/cgi-bin/externalcontact/get_follow_user_list"]


def test_member_ids_go_in_batches_of_64() -> None:
    users = {f"user{i:03d}": [f"wm{i:03d}"] for i in range(70)}
    fake = FakeWeCom(contacts=users, max_batch_users=64, page=100)
    adapter = make_wecom(fake)
    adapter.open()
    sizes = [len(json.loads(r.content)["userid_list"]) for r in fake.requests
             if r.url.path.endswith("batch/get_by_user")]
    assert sizes == [64, 6]
    assert adapter.keyspace().customers == 70


def test_wecom_without_credentials() -> None:
    with pytest.raises(TargetUnreachable, match=r"^no credentials: set WECOM_CORP_ID and "
                                                r"WECOM_SECRET"):
        WeComAdapter.from_url("wecom://qyapi.weixin.qq.com").open()


def test_the_default_mix_can_draw_from_the_wecom_keyspace() -> None:
    adapter = make_wecom(_contacts())
    adapter.open()
    scenario = load_scenario("mixed")
    workload = MixedWorkload(adapter, adapter.keyspace(), dict(scenario.mix), seed=1)
    assert workload.next()[0] in scenario.mix


# ------------------------------------------------------------------ quotas and limits


def test_quotas_are_the_documented_per_company_per_api_limits() -> None:
    quotas = make_wecom(_contacts()).quotas()
    figures = {(q.calls, q.window_s) for q in quotas}
    assert figures == {(10_000, 60.0), (150_000, 3_600.0)}
    for quota in quotas:
        assert quota.name.startswith("externalcontact/get: calls per company per API per")
        assert quota.costs == {"get_customer": 1.0, "customer_360": 1.0}
        assert "90312" in quota.source and not quota.assumed


def test_the_default_mix_is_scaled_to_the_per_minute_quota() -> None:
    adapter = make_wecom(_contacts())
    facts = adapter.preflight(_mixed_plan())
    plan = facts["rate_plan"]
    # 1,000 req/s of which 40 % read one external contact: 24,000 calls a minute asked;
    # 80 % of 10,000 a minute allows 8,000 / 60 / 0.4 = 333 req/s.
    assert plan["action"] == "scaled" and plan["requested_rate"] == 1000.0
    assert plan["allowed_rate"] == pytest.approx(8000 / 60 / 0.4)
    assert plan["binding"].endswith("per minute")
    # A one-hour run is bound by the hourly quota: 80 % of 150,000 over 3,600 s.
    hourly = adapter.rate_plan(_mixed_plan(duration_s=3600.0))
    assert hourly.allowed == pytest.approx(0.8 * 150_000 / 3600 / 0.4)
    assert hourly.binding is not None and hourly.binding.endswith("per hour")


def test_a_refused_plan_stops_preflight_before_any_call() -> None:
    fake = _contacts()
    with pytest.raises(UserError, match=r"WeCom: refused: 1000 req/s asked"):
        make_wecom(fake).preflight(_mixed_plan(over_quota="refuse"))
    assert fake.requests == []


def test_the_client_limiter_stops_each_api_below_its_quota(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wecom, "PER_MINUTE", 10)
    clock = Clock()
    fake = _contacts()
    adapter = make_wecom(fake, clock=clock)
    adapter.open()
    sent = len(fake.requests)
    statuses = [adapter.get_customer(1) for _ in range(10)]
    # 80 % of 10 a minute: the ninth call is refused without being sent.
    assert statuses == [Status.ok] * 8 + [Status.rate_limited] * 2
    assert len(fake.requests) == sent + 8
    clock.now += 61
    assert adapter.get_customer(1) is Status.ok


def test_each_generator_process_takes_its_share_of_the_limiter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wecom, "PER_MINUTE", 20)
    fake = _contacts()
    adapter = make_wecom(fake, clock=Clock())
    adapter.prepare_generator(GeneratorSettings(concurrency=4, processes=2))
    adapter.open()
    statuses = [adapter.get_customer(1) for _ in range(10)]
    # Two processes share 80 % of 20 a minute: 8 for this one.
    assert statuses == [Status.ok] * 8 + [Status.rate_limited] * 2


def test_the_limiter_keeps_the_hourly_quota_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wecom, "PER_HOUR", 10)
    clock = Clock()
    fake = _contacts()
    adapter = make_wecom(fake, clock=clock)
    adapter.open()
    statuses = []
    for _ in range(10):
        clock.now += 61  # a fresh minute each time: only the hour can refuse
        statuses.append(adapter.get_customer(1))
    assert statuses == [Status.ok] * 8 + [Status.rate_limited] * 2


@pytest.mark.parametrize(("answer", "status"), [
    ({"errcode": 45009, "errmsg": "api freq out of limit"}, Status.rate_limited),
    ({"errcode": 45033, "errmsg": "api concurrent out of limit"}, Status.rate_limited),
    ({"errcode": 45011, "errmsg": "api minute-quota reach limit"}, Status.rate_limited),
    ({"errcode": -1, "errmsg": "system busy"}, Status.error),
    ({"errcode": 48002, "errmsg": "api forbidden"}, Status.rejected),
    ({"errcode": 60020, "errmsg": "not allow to access from your ip"}, Status.rejected),
])
def test_wecom_error_codes_map_to_statuses(answer: dict[str, Any], status: Status) -> None:
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.script.append(answer)
    assert adapter.get_customer(1) is status


# ------------------------------------------------------------------ tokens


def test_an_expired_token_is_reported_and_refreshed_in_the_background() -> None:
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.valid_tokens.clear()
    before = len(fake.requests)
    # One request, no retry inside the measured call: it reports what the platform said.
    assert adapter.get_customer(1) is Status.rejected
    assert fake.paths()[before:before + 1] == [GET]
    box = adapter._token
    assert box is not None
    box.wait_refreshed()
    assert len(fake.tokens) == 2
    assert adapter.get_customer(2) is Status.ok
    assert fake.requests[-1].url.params["access_token"] == fake.tokens[1]


def test_timed_calls_never_fetch_a_token_themselves() -> None:
    clock = Clock()
    fake = _contacts(expires_in=600)
    adapter = make_wecom(fake, clock=clock)
    adapter.open()
    box = adapter._token
    assert box is not None
    # Inside the renewal margin (300 s before expiry): the call goes out with the cached
    # token while a background refresh replaces it.
    clock.now += 400
    start = len(fake.requests)
    assert adapter.get_customer(1) is Status.ok
    box.wait_refreshed()
    sent = [r for r in fake.requests[start:] if r.url.path == GET]
    assert [r.url.params["access_token"] for r in sent] == [fake.tokens[0]]
    assert len(fake.tokens) == 2
    # Past expiry, before any refresh: nothing is sent and the call is an error.
    clock.now += 10_000
    start = len(fake.requests)
    assert adapter.get_customer(1) is Status.error
    box.wait_refreshed()
    assert GET not in fake.paths()[start:]
    assert adapter.get_customer(1) is Status.ok
    assert fake.requests[-1].url.params["access_token"] == fake.tokens[2]


def test_wecom_secret_and_tokens_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.valid_tokens.clear()
    adapter.get_customer(1)
    assert adapter._token is not None
    adapter._token.wait_refreshed()
    assert "gettoken" in caplog.text
    for secret in (WECOM_SECRET, *fake.tokens):
        assert secret not in caplog.text
    bad = WeComAdapter("qyapi.weixin.qq.com", transport=fake.transport(),
                       environ={**WECOM_ENV, "WECOM_SECRET": "not-the-secret-42"})
    with pytest.raises(UserError, match="errcode 40001") as info:
        bad.open()
    assert "not-the-secret-42" not in str(info.value) + caplog.text
