"""Fxiaoke adapter against a fake open API (corpAccessToken, errorCode answers, _id paging,
object descriptions, thirdTraceId)."""

from __future__ import annotations

import json
import logging
import re
import uuid
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
from bench.adapters.saas.fxiaoke import FxiaokeAdapter
from bench.errors import TargetUnreachable, UserError
from tests.bench.saas.fake_fxiaoke import (
    CREATE,
    DELETE,
    DESCRIBE,
    FX_APP_ID,
    FX_APP_SECRET,
    FX_OPEN_USER_ID,
    FX_PERMANENT_CODE,
    INVALID,
    QUERY,
    FakeFxiaoke,
    fx_field,
)
from tests.bench.saas.test_http import FakeClock

ENV = {"FXIAOKE_APP_ID": FX_APP_ID, "FXIAOKE_APP_SECRET": FX_APP_SECRET,
       "FXIAOKE_PERMANENT_CODE": FX_PERMANENT_CODE, "FXIAOKE_OPEN_USER_ID": FX_OPEN_USER_ID}
RUN = "fx-run-01"
TAG = f"crmbench:{RUN} "
WRITES = (CREATE, INVALID, DELETE)


def make(fake: FakeFxiaoke, clock: FakeClock | None = None, **kw: Any) -> FxiaokeAdapter:
    clock = clock or FakeClock()
    return FxiaokeAdapter("open.fxiaoke.com", environ=ENV, transport=fake.transport(),
                          clock=clock, sleep=clock.sleep, **kw)


def plan(allow: bool = True, run_id: str = RUN) -> RunPlan:
    return RunPlan(run_id=run_id, scenario="mixed", estimated_calls=100, allow_production=allow)


def started(fake: FakeFxiaoke, clock: FakeClock | None = None, run_id: str = RUN,
            **kw: Any) -> FxiaokeAdapter:
    """An adapter the harness has preflighted and asked for the keyspace (seeded)."""
    adapter = make(fake, clock, **kw)
    adapter.preflight(plan(run_id=run_id))
    adapter.keyspace()
    return adapter


def writes(fake: FakeFxiaoke) -> list[str]:
    return [r.url.path for r in fake.requests if r.url.path in WRITES]


def test_url_forms() -> None:
    adapter = FxiaokeAdapter.from_url(
        "fxiaoke://open-hwcloud.fxiaoke.com?calls_per_20s=60&daily_calls=300000")
    assert adapter.host == "open-hwcloud.fxiaoke.com" and adapter.calls_per_window == 60
    assert adapter.daily_calls == 300_000
    with pytest.raises(UserError, match="not the API gateway"):
        FxiaokeAdapter.from_url("fxiaoke://www.fxiaoke.com")
    with pytest.raises(UserError, match="daily_calls must be a whole number"):
        FxiaokeAdapter.from_url("fxiaoke://open.fxiaoke.com?daily_calls=lots")
    assert set(FxiaokeAdapter.capabilities) == set(CAPABILITY_IDS)
    assert FxiaokeAdapter.capabilities["cdp.event_delay"].support == "not-measurable"


def test_open_without_credentials_names_the_variables() -> None:
    with pytest.raises(TargetUnreachable) as info:
        FxiaokeAdapter.from_url("fxiaoke://open.fxiaoke.com").open()
    message = str(info.value)
    assert message.startswith("no credentials")
    for var in ENV:
        assert var in message


def test_token_flow_and_common_body_fields() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, run_id=RUN)
    adapter.open()
    token_body = fake.bodies("/cgi/corpAccessToken/get/V2")[0]
    assert token_body == {"appId": FX_APP_ID, "appSecret": FX_APP_SECRET,
                          "permanentCode": FX_PERMANENT_CODE}
    query = fake.bodies(QUERY)[0]
    assert query["corpAccessToken"] == fake.tokens[0] and query["corpId"] == "FSCID_FAKE"
    assert query["currentOpenUserId"] == FX_OPEN_USER_ID
    assert adapter.platform_version() == "Fxiaoke open API (CRM v2)"


def test_refused_app_credentials_are_a_user_error() -> None:
    fake = FakeFxiaoke()
    adapter = FxiaokeAdapter("open.fxiaoke.com", transport=fake.transport(),
                             environ={**ENV, "FXIAOKE_APP_SECRET": "wrong-app-secret"})
    with pytest.raises(UserError, match="errorCode 10006") as info:
        adapter.open()
    assert "wrong-app-secret" not in str(info.value)
    assert "10 times in the last minute" in str(info.value)


def test_preflight_reads_only_and_the_keyspace_seeds_paging_by_id() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, customers=230)
    adapter.open()
    with pytest.raises(UserError, match="Allow production explicitly"):
        adapter.preflight(plan(allow=False))
    facts = adapter.preflight(plan())
    assert writes(fake) == []
    assert facts["fixture"] == {"customers": 0, "to_seed": 230, "requested": 230,
                                "reused": False, "tag": f"crmbench:{RUN}"}
    assert adapter.keyspace().customers == 230
    creates = fake.bodies(CREATE)
    assert len(creates) == 230
    assert all(b["triggerApprovalFlow"] is False and b["triggerWorkFlow"] is False
               for b in creates)
    # 230 ids in pages of 100: the 2nd and 3rd page ask for _id GT the last id seen.
    queries = [b["data"]["search_query_info"] for b in fake.bodies(QUERY)][-3:]
    assert [q["offset"] for q in queries] == [0, 0, 0]
    assert [any(f["operator"] == "GT" for f in q["filters"]) for q in queries] == [
        False, True, True]
    # A second run with the same id reuses the accounts and seeds nothing.
    again = make(fake, customers=230)
    assert again.preflight(plan())["fixture"]["reused"] is True
    assert again.keyspace().customers == 230 and len(fake.bodies(CREATE)) == 230


def test_verbs_and_unsupported_ones() -> None:
    fake = FakeFxiaoke()
    adapter = started(fake, customers=5)
    assert adapter.get_customer(1) is Status.ok
    assert adapter.get_customer(6) is Status.not_found
    assert adapter.search_customers(SearchQuery(name_prefix="Ba")) is Status.ok
    search = fake.bodies(QUERY)[-1]["data"]["search_query_info"]["filters"][0]
    assert search["field_values"] == [f"{TAG}Ba"]
    assert adapter.search_customers(SearchQuery(region_id=1, tier="vip")) is Status.unsupported
    lead = LeadInput(company_name="Acme", contact_name="Jo", region_id=1)
    assert adapter.create_lead(lead) is Status.ok
    assert adapter.list_leads(1, 20) is Status.ok
    assert adapter.customer_360(1) is Status.unsupported
    assert adapter.update_customer(1, CustomerChanges(employees=3)) is Status.unsupported
    assert adapter.update_opportunity_stage(1, "proposal") is Status.unsupported
    names = [r["name"] for r in fake.records["LeadsObj"].values()]
    assert names == [f"{TAG}Jo / Acme"]


@pytest.mark.parametrize(("answer", "status"), [
    ({"errorCode": 30004, "errorMessage": "秒频次超限"}, Status.rate_limited),
    ({"errorCode": 14001, "errorMessage": "接口调用超过限制"}, Status.rate_limited),
    ({"errorCode": 30002, "errorMessage": "当天访问频次超限"}, Status.rate_limited),
    ({"errorCode": -1, "errorMessage": "系统繁忙"}, Status.error),
    ({"errorCode": 20014, "errorMessage": "应用没有获取该员工的数据的权限"}, Status.rejected),
])
def test_error_codes_map_to_statuses(answer: dict[str, Any], status: Status) -> None:
    fake = FakeFxiaoke()
    adapter = started(fake, customers=2)
    fake.script.append(answer)
    assert adapter.get_customer(1) is status


def test_setup_calls_back_off_on_frequency_errors() -> None:
    fake = FakeFxiaoke()
    clock = FakeClock()
    adapter = make(fake, clock)
    adapter.open()
    fake.script += [{"errorCode": 30004, "errorMessage": "秒频次超限"}] * 2
    assert adapter.cleanup(RUN) == 0
    assert len(clock.slept) == 2


def test_secrets_never_reach_logs_or_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeFxiaoke()
    adapter = started(fake, customers=2)
    fake.valid_tokens.clear()
    adapter.get_customer(1)
    adapter.cleanup(RUN)
    text = caplog.text + repr(adapter) + str(adapter.target_facts())
    for secret in (FX_APP_SECRET, FX_PERMANENT_CODE, *fake.tokens):
        assert secret not in text
    assert re.search(r"HTTP Request: POST https://open\.fxiaoke\.com", caplog.text)


# ------------------------------------------------------------------ cleanup


def test_cleanup_invalidates_then_deletes_in_chunks() -> None:
    fake = FakeFxiaoke()
    other = fake.add("AccountObj", name="A real customer")
    adapter = started(fake, customers=120)
    adapter.create_lead(LeadInput(company_name="X", contact_name="Y", region_id=1))
    later = make(fake)
    assert later.cleanup(RUN) == 121
    deletes = fake.bodies(DELETE)
    assert [len(b["data"]["idList"]) for b in deletes] == [1, 100, 20]
    assert list(fake.records["AccountObj"]) == [other]


@pytest.mark.parametrize("trims", [False, True])
def test_cleanup_of_run_a_never_touches_the_records_of_run_ab(trims: bool) -> None:
    # Whether STARTWITH keeps the trailing separator of its value is not documented: a
    # search that trims it finds run ab's records for run a, and the names are checked.
    fake = FakeFxiaoke(trim_filter_values=trims)
    run_a = started(fake, run_id="a", customers=3)
    run_ab = started(fake, run_id="ab", customers=4)
    lead = LeadInput(company_name="Acme", contact_name="Jo", region_id=1)
    assert run_a.create_lead(lead) is Status.ok and run_ab.create_lead(lead) is Status.ok
    assert run_a.keyspace().customers == 3
    assert make(fake).cleanup("a") == 4
    left = [r["name"] for r in fake.records["AccountObj"].values()]
    assert len(left) == 4 and all(n.startswith("crmbench:ab ") for n in left)
    assert [r["name"] for r in fake.records["LeadsObj"].values()] == [
        "crmbench:ab Jo / Acme"]
    assert [f["field_values"] for b in fake.bodies(QUERY)[-2:]
            for f in b["data"]["search_query_info"]["filters"][:1]] == [["crmbench:a "]] * 2
    worker = make(fake, run_id="ab")
    worker.open()
    assert worker.keyspace().customers == 4


# ------------------------------------------------------------------ required fields


def test_created_records_fill_the_fields_the_tenant_requires() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, customers=3)
    facts = adapter.preflight(plan())
    assert adapter.keyspace().customers == 3
    lead = LeadInput(company_name="Acme", contact_name="Jo", region_id=1,
                     email="jo@bench.example")
    assert adapter.create_lead(lead) is Status.ok
    accounts = list(fake.records["AccountObj"].values())
    assert all(a["owner"] == [FX_OPEN_USER_ID] and a["record_type"] == "default__c"
               for a in accounts)
    (row,) = fake.records["LeadsObj"].values()
    assert row["owner"] == [FX_OPEN_USER_ID] and row["company"] == "Acme"
    assert row["email"] == "jo@bench.example" and row["leads_status"] == "1"
    # Fields the platform sets itself are left to it.
    assert "life_status" not in row and "account_no" not in accounts[0]
    assert facts["fields"]["LeadsObj"] == ["leads_status", "owner", "record_type"]
    assert all(b["convertUserId"] is True for b in fake.bodies(CREATE))


def test_a_load_generator_reads_the_lead_description_when_it_opens() -> None:
    fake = FakeFxiaoke()
    started(fake, customers=2)
    worker = make(fake, run_id=RUN)
    worker.open()
    described = len(fake.bodies(DESCRIBE))
    lead = LeadInput(company_name="Beta", contact_name="Al", region_id=1)
    assert [worker.create_lead(lead) for _ in range(3)] == [Status.ok] * 3
    assert len(fake.bodies(DESCRIBE)) == described
    assert fake.bodies(DESCRIBE)[-1]["data"]["apiName"] == "LeadsObj"
    # A field made required since preflight stops the process's setup, not its calls.
    fake.describes["LeadsObj"]["tel"] = fx_field("tel", "phone_number", "电话",
                                                 required=True)
    with pytest.raises(UserError, match="tel \\(phone_number"):
        make(fake, run_id=RUN).open()


def test_preflight_refuses_required_fields_it_cannot_fill_before_writing() -> None:
    fake = FakeFxiaoke()
    fake.describes["LeadsObj"]["tel"] = fx_field("tel", "phone_number", "电话",
                                                 required=True)
    fake.describes["AccountObj"]["industry"] = fx_field(
        "industry", "select_one", "行业", required=True,
        options=[{"label": "制造", "value": "3"}])
    adapter = make(fake)
    adapter.open()
    with pytest.raises(UserError) as info:
        adapter.preflight(plan())
    message = str(info.value)
    assert "LeadsObj requires fields the benchmark cannot fill: tel (phone_number" in message
    assert "AccountObj requires" in message and "industry (select_one" in message
    assert writes(fake) == []
    with pytest.raises(UserError, match="no Fxiaoke accounts"):
        adapter.keyspace()
    assert writes(fake) == []


# ------------------------------------------------------------------ thirdTraceId


def test_every_request_carries_its_own_third_trace_id() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, customers=2)
    adapter.open()
    fake.script.append({"errorCode": 30004, "errorMessage": "秒频次超限"})
    facts = adapter.preflight(plan())
    adapter.keyspace()
    adapter.get_customer(1)
    adapter.create_lead(LeadInput(company_name="X", contact_name="Y", region_id=1))
    ids = fake.trace_ids()
    assert len(ids) == len(fake.requests) > 5 and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)
    # Retries get their own id; the ids stay out of the result's facts.
    assert not any(i in json.dumps(facts) for i in ids)


def test_a_failed_setup_call_names_its_trace_ids() -> None:
    fake = FakeFxiaoke()
    adapter = make(fake, run_id=RUN)
    fake.script.append({"errorCode": 20014, "errorMessage": "应用没有获取该员工的数据的权限",
                        "traceId": "E-O.vendor-side"})
    with pytest.raises(UserError) as info:
        adapter.open()
    ours = fake.trace_ids()[-1]
    assert "E-O.vendor-side" in str(info.value)
    assert ours and f"thirdTraceId {ours}" in str(info.value)
