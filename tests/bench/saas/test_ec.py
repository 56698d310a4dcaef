"""EC (signed v2 requests, queryList pages) and WeCom (gettoken, cursors) adapters."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bench.adapters.base import (
    CAPABILITY_IDS,
    CustomerChanges,
    LeadInput,
    RunPlan,
    SearchQuery,
    Status,
)
from bench.adapters.saas.ec import ECAdapter, WeComAdapter, ec_sign
from bench.errors import TargetUnreachable, UserError
from tests.bench.saas.fakes import (
    EC_APP_ID,
    EC_APP_SECRET,
    EC_CORP_ID,
    EC_USER_ID,
    WECOM_CORP_ID,
    WECOM_SECRET,
    FakeEC,
    FakeWeCom,
)

EC_ENV = {"EC_CORP_ID": EC_CORP_ID, "EC_APP_ID": EC_APP_ID, "EC_APP_SECRET": EC_APP_SECRET,
          "EC_USER_ID": EC_USER_ID}
WECOM_ENV = {"WECOM_CORP_ID": WECOM_CORP_ID, "WECOM_SECRET": WECOM_SECRET}
RUN = "ec-run-7"
TAG = f"crmbench:{RUN}"


def make_ec(fake: FakeEC, **kw: Any) -> ECAdapter:
    return ECAdapter("open.workec.com", environ=EC_ENV, transport=fake.transport(),
                     wall_clock=lambda: fake.now_ms / 1000, sleep=lambda s: None, **kw)


def plan(allow: bool = True) -> RunPlan:
    return RunPlan(run_id=RUN, scenario="mixed", estimated_calls=50, allow_production=allow)


# ------------------------------------------------------------------ EC


def test_signature_matches_a_fixed_example() -> None:
    # md5 of "appId=123456&appSecret=secretABC&timeStamp=1700000000000", computed by md5sum.
    assert ec_sign("123456", "secretABC", 1_700_000_000_000) == \
        "7AF986B1CA9CDB4CCDED1C986F08F999"


def test_requests_carry_the_signed_headers() -> None:
    fake = FakeEC()
    adapter = make_ec(fake)
    adapter.open()
    headers = fake.requests[0].headers
    assert headers["X-Ec-Cid"] == EC_CORP_ID
    assert headers["X-Ec-TimeStamp"] == "1700000000000"
    # md5 of the documented string for the fake's app, computed by md5sum.
    assert headers["X-Ec-Sign"] == "E93633FD2E036AAB8D06217A0D305646"
    assert EC_APP_SECRET not in str(headers)
    assert adapter.platform_version() == "EC open API v2"


def test_a_stale_signature_is_refused_with_a_clear_message() -> None:
    fake = FakeEC()
    adapter = ECAdapter("open.workec.com", environ=EC_ENV, transport=fake.transport(),
                        wall_clock=lambda: fake.now_ms / 1000 + 600)
    with pytest.raises(UserError, match="refused /v2/config/getStages: HTTP 200, code 40001"):
        adapter.open()


def test_open_without_credentials_names_the_variables() -> None:
    with pytest.raises(TargetUnreachable) as info:
        ECAdapter.from_url("ec://open.workec.com").open()
    assert str(info.value).startswith("no credentials")
    for var in EC_ENV:
        assert var in str(info.value)
    assert set(ECAdapter.capabilities) == set(CAPABILITY_IDS)


def test_preflight_needs_permission_seeds_in_batches_and_pages_query_list() -> None:
    fake = FakeEC()
    fake.customers[1] = {"crmId": 1, "name": "Real customer"}
    adapter = make_ec(fake, customers=450)
    adapter.open()
    with pytest.raises(UserError, match="deleted by hand"):
        adapter.preflight(plan(allow=False))
    facts = adapter.preflight(plan())
    adds = [r for r in fake.requests if r.url.path == "/v2/customer/addCustomer"]
    assert len(adds) == 9
    assert facts["fixture"]["customers"] == 450
    assert "not possible" in facts["cleanup"]
    pages = [r for r in fake.requests if r.url.path == "/v2/customer/queryList"][-3:]
    assert [json.loads(r.content)["pageNo"] for r in pages] == [1, 2, 3]
    assert adapter.keyspace().customers == 450


def test_ec_verbs() -> None:
    fake = FakeEC()
    adapter = make_ec(fake, customers=3)
    adapter.open()
    adapter.preflight(plan())
    assert adapter.get_customer(1) is Status.ok
    assert adapter.get_customer(9) is Status.not_found
    assert adapter.customer_360(2) is Status.ok
    assert adapter.search_customers(SearchQuery(name_prefix="Ba")) is Status.ok
    assert adapter.search_customers(SearchQuery(tag="vip")) is Status.unsupported
    lead = LeadInput(company_name="Acme", contact_name="Jo", region_id=2)
    assert adapter.create_lead(lead) is Status.ok
    fake.fail_names.add(f"{TAG} Jo")
    assert adapter.create_lead(lead) is Status.rejected
    assert adapter.update_customer(1, CustomerChanges(employees=5)) is Status.ok
    assert adapter.list_leads(1) is Status.unsupported
    assert adapter.update_opportunity_stage(1, "proposal") is Status.unsupported
    memos = [c.get("memo") for c in fake.customers.values()]
    assert "crmbench update: employees=5" in memos


def test_ec_cleanup_says_what_remains() -> None:
    fake = FakeEC()
    adapter = make_ec(fake, customers=4)
    adapter.open()
    adapter.preflight(plan())
    with pytest.raises(UserError, match="4 customers named crmbench:ec-run-7"):
        make_ec(fake).cleanup(RUN)
    assert make_ec(fake).cleanup("other-run") == 0


# ------------------------------------------------------------------ WeCom


def make_wecom(fake: FakeWeCom, **kw: Any) -> WeComAdapter:
    return WeComAdapter("qyapi.weixin.qq.com", environ=WECOM_ENV, transport=fake.transport(),
                        sleep=lambda s: None, **kw)


def _contacts() -> FakeWeCom:
    return FakeWeCom(contacts={"zhangsan": ["wmA1", "wmA2", "wmA3"], "lisi": ["wmB1", "wmB2"]})


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
    assert adapter.preflight(plan(allow=False))["writes"] == "none"
    assert adapter.cleanup(RUN) == 0


def test_wecom_expired_token_42001_refreshes_once() -> None:
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.valid_tokens.clear()
    assert adapter.get_customer(1) is Status.ok and adapter.get_customer(2) is Status.ok
    assert len(fake.tokens) == 2


@pytest.mark.parametrize(("answer", "status"), [
    ({"errcode": 45009, "errmsg": "api freq out of limit"}, Status.rate_limited),
    ({"errcode": -1, "errmsg": "system busy"}, Status.error),
    ({"errcode": 48002, "errmsg": "api forbidden"}, Status.rejected),
])
def test_wecom_error_codes_map_to_statuses(answer: dict[str, Any], status: Status) -> None:
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.script.append(answer)
    assert adapter.get_customer(1) is status


def test_wecom_without_credentials() -> None:
    with pytest.raises(TargetUnreachable, match=r"^no credentials: set WECOM_CORP_ID and "
                                                r"WECOM_SECRET"):
        WeComAdapter.from_url("wecom://qyapi.weixin.qq.com").open()


def test_wecom_secret_and_tokens_stay_out_of_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = _contacts()
    adapter = make_wecom(fake)
    adapter.open()
    fake.valid_tokens.clear()
    adapter.get_customer(1)
    assert "gettoken" in caplog.text
    for secret in (WECOM_SECRET, *fake.tokens):
        assert secret not in caplog.text
    bad = WeComAdapter("qyapi.weixin.qq.com", transport=fake.transport(),
                       environ={**WECOM_ENV, "WECOM_SECRET": "not-the-secret-42"})
    with pytest.raises(UserError, match="errcode 40001") as info:
        bad.open()
    assert "not-the-secret-42" not in str(info.value) + caplog.text
