"""EC: signed v2 requests, queryList pages, run tags, stage changes and follow-up records."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.base import (
    CAPABILITY_IDS,
    ActivityInput,
    CustomerChanges,
    LeadInput,
    RunPlan,
    SearchQuery,
    Status,
)
from bench.adapters.saas.common import run_tag, seed_name
from bench.adapters.saas.ec import ECAdapter, ec_sign, stage_ids
from bench.errors import TargetUnreachable, UserError
from bench.scenarios.config import load_scenario
from bench.scenarios.mixed import MixedWorkload
from tests.bench.saas.fake_ec import (
    EC_APP_ID,
    EC_APP_SECRET,
    EC_CORP_ID,
    EC_USER_ID,
    FakeEC,
)

EC_ENV = {"EC_CORP_ID": EC_CORP_ID, "EC_APP_ID": EC_APP_ID, "EC_APP_SECRET": EC_APP_SECRET,
          "EC_USER_ID": EC_USER_ID}
RUN = "ec-run-7"
TAG = f"crmbench:{RUN}"


def make_ec(fake: FakeEC, **kw: Any) -> ECAdapter:
    return ECAdapter("open.workec.com", environ=EC_ENV, transport=fake.transport(),
                     wall_clock=lambda: fake.now_ms / 1000, sleep=lambda s: None, **kw)


def plan(allow: bool = True, run_id: str = RUN, **kw: Any) -> RunPlan:
    return RunPlan(run_id=run_id, scenario="mixed", estimated_calls=50, allow_production=allow,
                   **kw)


def seeded(customers: int = 3, **kw: Any) -> tuple[FakeEC, ECAdapter]:
    fake = FakeEC(**kw)
    adapter = make_ec(fake, customers=customers)
    adapter.open()
    adapter.preflight(plan())
    return fake, adapter


# ------------------------------------------------------------------ signing and setup


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
    assert headers["X-Ec-Sign"] == "9E2317C17941A55ABA1665F185FF2E46"
    assert EC_APP_SECRET not in str(headers)
    assert adapter.platform_version() == "EC open API v2"


# sha256 of a real corp id, app id and user id that a public script shows (computed with
# sha256sum): no test may use them, so only their digests are kept here.
_REAL_ID_DIGESTS = {
    "506d0cd9079fd06808f5c860fa2137e1aa9a983a680bb597c68c06a64f1fad0d",
    "b676428e69b5774e7e3c72e9185b88dfa89aafe85ee200ef21dbbdfa3fe919b9",
    "7795e3ec9ba21c1901882b688f578b1c74c2066500e0c4cde2955bc3f9012e28",
}


def test_fixture_ids_are_made_up() -> None:
    folder = Path(__file__).parent
    numbers = {n for path in folder.rglob("*.py")
               for n in re.findall(r"\d{6,}", path.read_text(encoding="utf-8"))}
    assert numbers >= {EC_CORP_ID, EC_APP_ID, EC_USER_ID}
    assert {hashlib.sha256(n.encode()).hexdigest() for n in numbers}.isdisjoint(
        _REAL_ID_DIGESTS)


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
    assert [json.loads(r.content)["name"] for r in pages] == [f"{TAG} "] * 3
    assert adapter.keyspace().customers == 450


def test_preflight_plans_the_rate_without_a_documented_quota() -> None:
    fake = FakeEC()
    adapter = make_ec(fake, customers=2)
    facts = adapter.preflight(plan(rate=50.0, duration_s=60.0, users=10,
                                   mix={"get_customer": 1.0}))
    assert facts["rate_plan"]["action"] == "ok"
    assert facts["rate_plan"]["allowed_rate"] == 50.0
    assert adapter.quotas() == [] and adapter.concurrency() == []
    assert "none documented" in adapter.target_facts()["rate_limits"]


# ------------------------------------------------------------------ verbs


def test_ec_verbs() -> None:
    fake, adapter = seeded()
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
    memos = [c.get("memo") for c in fake.customers.values()]
    assert "crmbench update: employees=5" in memos


def test_stage_changes_use_step_update_with_the_corps_stage_ids() -> None:
    fake, adapter = seeded()
    keyspace = adapter.keyspace()
    # The stage lives on the customer: the run's customers are its opportunities.
    assert keyspace.opportunities == keyspace.customers == 3
    assert adapter.update_opportunity_stage(2, "proposal") is Status.ok
    sent = [json.loads(r.content) for r in fake.requests if r.url.path == "/v2/step/update"]
    crm_2 = adapter._crm_id(2)
    assert sent == [{"optUserId": int(EC_USER_ID), "crmIds": str(crm_2), "step": 103}]
    assert fake.customers[crm_2]["step"] == 103
    # Harness stages map by position; a corp with fewer stages gets its last for the rest.
    assert adapter.update_opportunity_stage(1, "lost") is Status.ok
    assert fake.customers[adapter._crm_id(1)]["step"] == 106
    assert adapter.update_opportunity_stage(9, "won") is Status.not_found
    fake.customers.pop(crm_2)
    assert adapter.update_opportunity_stage(2, "won") is Status.rejected  # data: false


def test_stage_changes_are_unsupported_when_get_stages_cannot_be_read() -> None:
    fake, adapter = seeded(stages={"unexpected": "layout"})
    assert adapter.update_opportunity_stage(1, "won") is Status.unsupported
    assert "/v2/step/update" not in fake.paths()
    assert "unsupported" in adapter.target_facts()["stages"]


@pytest.mark.parametrize(("data", "ids"), [
    ([{"stageId": 7, "stageName": "A"}, {"stageId": "8", "stageName": "B"}], [7, 8]),
    ({"list": [{"id": 3, "name": "A"}, {"id": 4}]}, [3, 4]),
    ([{"step": 5}, {"name": "no id"}, {"id": True}, "junk"], [5]),
    (None, []),
])
def test_stage_ids_read_the_layouts_clients_show(data: Any, ids: list[int]) -> None:
    assert stage_ids({"code": 200, "msg": "OK", "data": data}) == ids


def test_activities_are_follow_up_records_on_the_run_customers() -> None:
    fake, adapter = seeded()
    assert adapter.log_activity(ActivityInput(2, "call", "Discuss renewal")) is Status.ok
    (record,) = fake.trajectories
    assert record["crmId"] == adapter._crm_id(2) and record["userId"] == EC_USER_ID
    assert record["content"] == f"{TAG} call: Discuss renewal"
    # 1,700,000,000 s is 2023-11-15 06:13:20 in China (UTC+8).
    assert record["contactTime"] == "2023-11-15 06:13:20"
    assert adapter.log_activity(ActivityInput(9, "call", "x")) is Status.not_found
    # The trajectory API was found with its read-only sibling, for the day before.
    finds = [json.loads(r.content) for r in fake.requests
             if r.url.path == "/v2/trajectory/findUserTrajectory"]
    assert finds[0]["startDate"] == finds[0]["endDate"] == "2023-11-14"


def test_a_trajectory_api_at_the_root_is_found_there() -> None:
    fake, adapter = seeded(trajectory_prefix="")
    assert adapter.log_activity(ActivityInput(1, "email", "Quote")) is Status.ok
    assert "/trajectory/saveUserTrajectory" in fake.paths()
    assert "/v2/trajectory/saveUserTrajectory" not in fake.paths()


def test_activities_are_unsupported_when_no_trajectory_api_answers() -> None:
    fake, adapter = seeded(trajectory_prefix=None)
    assert adapter.log_activity(ActivityInput(1, "email", "Quote")) is Status.unsupported
    assert not [p for p in fake.paths() if p.endswith("saveUserTrajectory")]
    note = adapter.target_facts()["trajectory_api"]
    assert note.startswith("activities unsupported") and "HTTP 404" in note


def test_the_default_mix_can_draw_from_the_ec_keyspace() -> None:
    _, adapter = seeded()
    scenario = load_scenario("mixed")
    workload = MixedWorkload(adapter, adapter.keyspace(), dict(scenario.mix), seed=1)
    ops = {workload.next()[0] for _ in range(200)}
    assert {"update_opportunity_stage", "log_activity"} <= ops


# ------------------------------------------------------------------ run tags and cleanup


def _customers_of_run(fake: FakeEC, run_id: str, n: int) -> None:
    for i in range(1, n + 1):
        crm_id = 9_000_000 + len(fake.customers)
        fake.customers[crm_id] = {"crmId": crm_id, "name": seed_name(run_tag(run_id), i)}


def test_run_a_never_takes_records_of_run_ab() -> None:
    fake = FakeEC()
    _customers_of_run(fake, "ab", 4)
    adapter = make_ec(fake, customers=2)
    facts = adapter.preflight(plan(run_id="a"))
    # Run ab's customers were not reused: run a seeded its own two.
    assert facts["fixture"]["reused"] is False and facts["fixture"]["customers"] == 2
    assert adapter.keyspace().customers == 2
    mine = {adapter._crm_id(1), adapter._crm_id(2)}
    assert all(fake.customers[c]["name"].startswith("crmbench:a ") for c in mine)
    with pytest.raises(UserError, match=r"2 customers named crmbench:a \.\.\. remain"):
        make_ec(fake).cleanup("a")


def test_cleanup_of_run_a_leaves_run_ab_alone() -> None:
    fake = FakeEC()
    _customers_of_run(fake, "ab", 3)
    assert make_ec(fake).cleanup("a") == 0
    with pytest.raises(UserError, match="3 customers named crmbench:ab"):
        make_ec(fake).cleanup("ab")


def test_ec_cleanup_says_what_remains() -> None:
    fake, _ = seeded(customers=4)
    with pytest.raises(UserError, match="4 customers named crmbench:ec-run-7"):
        make_ec(fake).cleanup(RUN)
    assert make_ec(fake).cleanup("other-run") == 0
