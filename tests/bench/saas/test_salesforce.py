"""Salesforce adapter against a fake org replaying the REST API's documented exchanges."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import httpx
import pytest

from bench.adapters.base import (
    CAPABILITY_IDS,
    ActivityInput,
    Adapter,
    CustomerChanges,
    Guarded,
    LeadInput,
    RunPlan,
    SearchQuery,
    Status,
)
from bench.adapters.registry import create_adapter
from bench.adapters.saas.salesforce import SalesforceAdapter, soql_prefix, soql_str
from bench.errors import TargetUnreachable, UserError
from tests.bench.saas.fake_salesforce import (
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_INSTANCE,
    SF_LOGIN_HOST,
    FakeSalesforce,
    sf_error,
)

ENV = {"SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET}
RUN = "run-0a1b2c"
TAG = f"crmbench:{RUN}"
LEAD = LeadInput(company_name="Acme GmbH", contact_name="Jo Doe", region_id=3,
                 email="jo@acme.test", product_interest=[1, 2])


def make(fake: FakeSalesforce, run_id: str | None = None, **kw: Any) -> SalesforceAdapter:
    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, run_id=run_id,
                                transport=fake.transport(), sleep=lambda s: None, **kw)
    return adapter


def plan(calls: int = 1000, allow_production: bool = False, run_id: str = RUN,
         **kw: Any) -> RunPlan:
    return RunPlan(run_id=run_id, scenario="mixed", estimated_calls=calls,
                   allow_production=allow_production, **kw)


@pytest.fixture()
def fake() -> FakeSalesforce:
    org = FakeSalesforce()
    org.add("Account", Name="Untagged Customer", Site="region-1 tier-vip")
    return org


@pytest.fixture()
def seeded(fake: FakeSalesforce) -> SalesforceAdapter:
    adapter = make(fake, customers=12)
    adapter.open()
    adapter.preflight(plan())
    return adapter


# ------------------------------------------------------------------ URL and declaration


def test_urls_parse_without_reading_credentials() -> None:
    adapter = create_adapter("salesforce://acme.my.salesforce.com?customers=50&api_version=61.0")
    assert isinstance(adapter, SalesforceAdapter) and isinstance(adapter, Adapter)
    assert isinstance(adapter, Guarded)
    assert (adapter.host, adapter.customers, adapter.api_version) == (
        "acme.my.salesforce.com", 50, "61.0")
    assert SalesforceAdapter.from_url("salesforce://login").host == "login.salesforce.com"
    assert SalesforceAdapter.from_url("salesforce://test").host == "test.salesforce.com"
    assert SalesforceAdapter.from_url(f"salesforce://x.my.salesforce.com?run_id={RUN}").run_id \
        == RUN


@pytest.mark.parametrize(("url", "message"), [
    ("salesforce://user:pw@acme.my.salesforce.com", "must not carry credentials"),
    ("salesforce://acme.my.salesforce.com?token=x", "unknown parameter 'token'"),
    ("salesforce://acme", "is not a host"),
    ("salesforce://acme.my.salesforce.com?api_version=latest", "api_version"),
    ("salesforce://acme.my.salesforce.com?customers=0", "customers must be between"),
    ("salesforce://acme.my.salesforce.com?run_id=a'b", "run id"),
    ("salesforce://acme.my.salesforce.com/services", "host and query parameters only"),
])
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        SalesforceAdapter.from_url(url)


def test_every_capability_is_declared_with_a_source() -> None:
    caps = SalesforceAdapter.capabilities
    assert set(caps) == set(CAPABILITY_IDS)
    assert all(c.note for c in caps.values())
    assert caps["crud.mixed"].support == "supported"
    assert caps["cdp.event_delay"].support == "supported"
    assert "Pub/Sub API (gRPC" in caps["cdp.event_delay"].note
    assert "Tooling" in caps["workflow.max_nodes"].note


def test_soql_literals_are_escaped() -> None:
    assert soql_str("O'Brien\\") == "'O\\'Brien\\\\'"
    assert soql_prefix("50%_off") == "'50\\%\\_off%'"


# ------------------------------------------------------------------ credentials and tokens


def test_open_without_credentials_names_the_variables() -> None:
    adapter = SalesforceAdapter.from_url("salesforce://acme.my.salesforce.com")
    with pytest.raises(TargetUnreachable) as info:
        adapter.open()
    message = str(info.value)
    assert message.startswith("no credentials")
    assert "SALESFORCE_CLIENT_ID" in message and "SALESFORCE_CLIENT_SECRET" in message


def test_client_credentials_flow_then_calls_go_to_the_instance(fake: FakeSalesforce) -> None:
    adapter = make(fake)
    adapter.open()
    token_request = fake.requests[0]
    assert token_request.url.host == SF_LOGIN_HOST
    assert token_request.url.path == "/services/oauth2/token"
    assert b"grant_type=client_credentials" in token_request.content
    api_hosts = {r.url.host for r in fake.requests[1:]}
    assert api_hosts == {httpx.URL(SF_INSTANCE).host}
    assert adapter.platform_version() == "Salesforce Developer Edition, REST API v62.0"
    assert adapter.usage.used is not None and adapter.usage.max == fake.api_max


def test_rejected_client_credentials_are_a_user_error(fake: FakeSalesforce) -> None:
    adapter = SalesforceAdapter(SF_LOGIN_HOST, transport=fake.transport(), environ={
        "SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": "wrong-secret-000"})
    with pytest.raises(UserError, match="invalid_client") as info:
        adapter.open()
    assert "wrong-secret-000" not in str(info.value)


def test_an_expired_session_in_setup_refreshes_the_token_once(seeded: SalesforceAdapter,
                                                              fake: FakeSalesforce) -> None:
    fetched = len(fake.tokens)
    fake.expire_tokens()
    assert seeded.target_facts()["api_daily_remaining"] > 0
    assert seeded.cleanup("other-run") == 0
    assert len(fake.tokens) == fetched + 1


def test_an_expired_session_in_a_timed_call_keeps_its_status(
    seeded: SalesforceAdapter, fake: FakeSalesforce
) -> None:
    fetched = len(fake.tokens)
    fake.expire_tokens()
    before = len(fake.api_requests("/sobjects/Account/"))
    # Sent once, refused, not repeated: the refusal is the call's outcome.
    assert seeded.get_customer(1) is Status.rejected
    assert len(fake.api_requests("/sobjects/Account/")) == before + 1
    # The new token is fetched in the background, once, and the next calls use it.
    assert seeded._token is not None
    seeded._token.wait_refreshed()
    assert len(fake.tokens) == fetched + 1
    assert seeded.get_customer(2) is Status.ok
    assert seeded.customer_360(2) is Status.ok
    assert len(fake.tokens) == fetched + 1


def test_timed_calls_never_fetch_a_token_themselves(fake: FakeSalesforce) -> None:
    fetching: list[str] = []
    handle = fake.handle

    def watch(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/services/oauth2/token":
            fetching.append(threading.current_thread().name)
        return handle(request)

    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, run_id=RUN, customers=3,
                                transport=httpx.MockTransport(watch), sleep=lambda s: None)
    adapter.open()
    adapter.preflight(plan())
    setup_fetches = list(fetching)
    fake.expire_tokens()
    for key in (1, 2, 3, 1, 2):
        adapter.get_customer(key)
    assert adapter._token is not None
    adapter._token.wait_refreshed()
    caller = threading.current_thread().name
    assert setup_fetches == [caller]
    assert fetching[1:] and caller not in fetching[1:]


def test_network_failure_on_open_names_the_host() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, transport=httpx.MockTransport(refuse),
                                sleep=lambda s: None)
    with pytest.raises(TargetUnreachable, match=re.escape(SF_LOGIN_HOST)):
        adapter.open()


# ------------------------------------------------------------------ preflight


def test_preflight_seeds_a_tagged_fixture_and_maps_ids(fake: FakeSalesforce) -> None:
    adapter = make(fake, customers=12)
    adapter.open()
    facts = adapter.preflight(plan(calls=500))
    assert facts["fixture"]["customers"] == 12 and facts["fixture"]["opportunities"] == 12
    assert facts["org"]["type"] == "Developer Edition" and not facts["org"]["production"]
    assert facts["api"]["daily_remaining"] is not None
    assert facts["api"]["needed"] >= 500
    accounts = [r for r in fake.records["Account"].values() if r["Name"].startswith(TAG)]
    assert len(accounts) == 12
    assert all(re.fullmatch(r"region-\d+ tier-\w+", a["Site"]) for a in accounts)
    ks = adapter.keyspace()
    assert (ks.customers, ks.opportunities, ks.reps) == (12, 12, 1)
    # A second preflight with the same run id reuses the fixture.
    assert adapter.preflight(plan())["fixture"]["reused"]
    assert len(fake.records["Account"]) == 13


def test_production_orgs_are_refused_unless_allowed() -> None:
    fake = FakeSalesforce(org_type="Enterprise Edition", sandbox=False)
    adapter = make(fake, customers=2)
    adapter.open()
    with pytest.raises(UserError, match=r"production org .*Enterprise Edition"):
        adapter.preflight(plan())
    assert "Account" not in fake.records
    assert adapter.preflight(plan(allow_production=True))["org"]["production"]


def test_sandboxes_are_not_production() -> None:
    adapter = make(FakeSalesforce(org_type="Enterprise Edition", sandbox=True), customers=2)
    adapter.open()
    assert adapter.preflight(plan())["org"]["sandbox"]


def test_too_little_daily_allocation_is_refused() -> None:
    fake = FakeSalesforce(api_max=15_000, api_used=14_500)
    adapter = make(fake, customers=10)
    adapter.open()
    with pytest.raises(UserError, match=r"daily API requests left, but this run needs about"):
        adapter.preflight(plan(calls=1000))
    assert "Account" not in fake.records


def test_the_fixture_shrinks_to_fit_small_storage() -> None:
    fake = FakeSalesforce(storage_remaining_mb=0.25)
    adapter = make(fake, customers=200)
    adapter.open()
    facts = adapter.preflight(plan())
    # 0.25 MB, half of it, at 4 KB a customer (account + opportunity, 2 KB each).
    assert facts["fixture"]["customers"] == 32
    assert "scaled from 200 to 32" in facts["fixture"]["scaled"]


def test_keyspace_without_a_run_id_is_a_user_error(fake: FakeSalesforce) -> None:
    adapter = make(fake)
    adapter.open()
    with pytest.raises(UserError, match="needs a run id"):
        adapter.keyspace()


def test_generator_processes_map_ids_from_the_inherited_run_id(
    fake: FakeSalesforce, seeded: SalesforceAdapter
) -> None:
    worker = SalesforceAdapter(SF_LOGIN_HOST, environ={**ENV, "CRMBENCH_RUN_ID": RUN},
                               transport=fake.transport())
    worker.open()
    assert worker.run_id == RUN
    assert worker.keyspace() == seeded.keyspace()
    assert worker.get_customer(12) is Status.ok and worker.get_customer(13) is Status.not_found


def test_query_paging_follows_next_records_url(fake: FakeSalesforce) -> None:
    fake.page_size = 5
    adapter = make(fake, customers=12)
    adapter.open()
    adapter.preflight(plan())
    before = len(fake.api_requests("/query/"))
    adapter._load_maps()
    # 12 accounts and 12 opportunities in pages of 5: two follow-ups each.
    assert len(fake.api_requests("/query/")) - before == 4
    assert adapter.keyspace().customers == 12


# ------------------------------------------------------------------ verbs


def test_every_verb_against_the_fake_org(seeded: SalesforceAdapter, fake: FakeSalesforce) -> None:
    assert seeded.get_customer(1) is Status.ok
    assert seeded.customer_360(2) is Status.ok
    assert seeded.search_customers(SearchQuery(name_prefix="Ba", limit=5)) is Status.ok
    assert seeded.search_customers(SearchQuery(region_id=3, tier="vip")) is Status.ok
    assert seeded.search_customers(SearchQuery(tier="key")) is Status.ok
    assert seeded.search_customers(SearchQuery(tag="churn-risk")) is Status.unsupported
    assert seeded.create_lead(LEAD) is Status.ok
    assert seeded.list_leads(1, limit=10) is Status.ok
    assert seeded.log_activity(ActivityInput(1, "call", "follow-up", 1)) is Status.ok
    assert seeded.update_opportunity_stage(1, "won") is Status.ok
    assert seeded.update_customer(
        1, CustomerChanges(website="https://acme.test", employees=42, consent_marketing=True)
    ) is Status.ok
    assert seeded.update_customer(1, CustomerChanges(consent_marketing=True)) is Status.unsupported
    assert seeded.get_customer(99) is Status.not_found
    lead = next(iter(fake.records["Lead"].values()))
    assert lead["LastName"].startswith(TAG) and lead["Company"] == "Acme GmbH"
    task = next(iter(fake.records["Task"].values()))
    assert task["Subject"].startswith(TAG)
    stages = {r["StageName"] for r in fake.records["Opportunity"].values()}
    assert "Closed Won" in stages
    assert any(r.get("NumberOfEmployees") == 42 for r in fake.records["Account"].values())


@pytest.mark.parametrize(("response", "status"), [
    (sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), Status.rate_limited),
    (httpx.Response(429), Status.rate_limited),
    (sf_error(404, "NOT_FOUND"), Status.not_found),
    (sf_error(400, "MALFORMED_ID"), Status.rejected),
    (sf_error(403, "INSUFFICIENT_ACCESS"), Status.rejected),
    (sf_error(500, "UNKNOWN_EXCEPTION"), Status.server_error),
])
def test_error_responses_map_to_statuses(seeded: SalesforceAdapter, fake: FakeSalesforce,
                                         response: httpx.Response, status: Status) -> None:
    fake.script.append(response)
    assert seeded.get_customer(1) is status


def test_leads_are_saved_past_the_duplicate_rules_alert(
    seeded: SalesforceAdapter, fake: FakeSalesforce
) -> None:
    # The org's standard lead rule alerts on duplicates: API saves are refused unless the
    # request allows them (Duplicate Rule Header).
    assert fake.duplicate_rule == "alert"
    assert seeded.create_lead(LEAD) is Status.ok
    assert seeded.create_lead(LEAD) is Status.ok
    posts = fake.api_requests("/sobjects/Lead", "POST")
    assert [r.headers["Sforce-Duplicate-Rule-Header"] for r in posts] == ["allowSave=true"] * 2
    assert len(fake.records["Lead"]) == 2


def test_a_blocking_duplicate_rule_is_a_refusal_with_its_reason(
    seeded: SalesforceAdapter, fake: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    fake.duplicate_rule = "block"
    assert seeded.create_lead(LEAD) is Status.ok
    assert seeded.create_lead(LEAD) is Status.rejected
    assert seeded.create_lead(LEAD) is Status.rejected
    assert seeded.refusals["DUPLICATES_DETECTED"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "DUPLICATES_DETECTED" in warnings[0] and "Block" in warnings[0]


def test_full_storage_during_the_run_is_a_refusal_with_its_reason(
    seeded: SalesforceAdapter, fake: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    fake.storage_remaining_mb = fake.stored_kb / 1024
    assert seeded.log_activity(ActivityInput(1, "call", "follow-up", 1)) is Status.rejected
    assert seeded.create_lead(LEAD) is Status.rejected
    assert seeded.refusals["STORAGE_LIMIT_EXCEEDED"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "STORAGE_LIMIT_EXCEEDED" in warnings[0]
    assert "data storage is full" in warnings[0]


def test_the_daily_limit_is_not_retried_in_setup() -> None:
    slept: list[float] = []
    fake = FakeSalesforce()
    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, transport=fake.transport(),
                                sleep=slept.append)
    adapter.open()
    fake.script.extend([sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit "
                                 "exceeded.")] * 5)
    with pytest.raises(UserError, match=r"daily API request allocation is used up"):
        adapter.target_facts()
    assert slept == [] and len(fake.api_requests("/limits")) == 1


def test_the_concurrent_request_limit_is_retried_in_setup() -> None:
    slept: list[float] = []
    fake = FakeSalesforce()
    adapter = SalesforceAdapter(SF_LOGIN_HOST, environ=ENV, transport=fake.transport(),
                                sleep=slept.append)
    adapter.open()
    fake.script.append(sf_error(403, "REQUEST_LIMIT_EXCEEDED",
                                "ConcurrentRequests (Concurrent API Requests) Limit exceeded"))
    assert adapter.target_facts()["api_daily_max"] == fake.api_max
    assert len(slept) == 1 and len(fake.api_requests("/limits")) == 2


def test_a_dropped_connection_is_a_transport_error_status(seeded: SalesforceAdapter) -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset")

    seeded._client().client._transport = httpx.MockTransport(drop)
    assert seeded.get_customer(1) is Status.transport_error


def test_a_read_timeout_is_a_timeout_status(seeded: SalesforceAdapter) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer")

    seeded._client().client._transport = httpx.MockTransport(slow)
    assert seeded.get_customer(1) is Status.timeout


# ------------------------------------------------------------------ cleanup


def test_cleanup_after_an_interrupted_run_deletes_tagged_records_in_chunks() -> None:
    fake = FakeSalesforce(page_size=2000)
    keep = fake.add("Account", Name="Customer of a real user")
    first = make(fake, customers=250)
    first.open()
    first.preflight(plan(calls=5000))
    for _ in range(3):
        assert first.create_lead(LEAD) is Status.ok
    assert first.log_activity(ActivityInput(7, "email", "quote", 1)) is Status.ok
    # The run is interrupted here; a new process cleans up by run id.
    later = make(fake)
    assert later.cleanup(RUN) == 250 + 250 + 3 + 1
    deletes = fake.api_requests("/composite/sobjects", "DELETE")
    sizes = [len(r.url.params["ids"].split(",")) for r in deletes]
    assert max(sizes) <= 200 and sum(sizes) == 504
    assert fake.records["Account"] == {keep: {"Id": keep, "Name": "Customer of a real user"}}
    assert not fake.records["Opportunity"] and not fake.records["Lead"]
    assert later.cleanup(RUN) == 0


def test_cleanup_of_run_a_never_touches_runs_ab_or_upper_case_a() -> None:
    fake = FakeSalesforce()
    adapters = {}
    for run_id in ("a", "ab", "A"):
        adapter = make(fake, customers=3)
        adapter.open()
        adapter.preflight(plan(run_id=run_id))
        lead = LeadInput(company_name=f"Co {run_id}", contact_name=f"Jo {run_id}",
                         region_id=1)
        assert adapter.create_lead(lead) is Status.ok
        assert adapter.log_activity(ActivityInput(1, "call", "follow-up", 1)) is Status.ok
        adapters[run_id] = adapter
    # The records of "a" alone: its keyspace and its cleanup.
    assert adapters["a"].keyspace().customers == 3
    assert make(fake).cleanup("a") == 3 + 3 + 1 + 1
    names = [r.get("Name") or r.get("LastName") or r.get("Subject")
             for table in fake.records.values() for r in table.values()]
    assert len(names) == 2 * 8
    assert all(n.startswith(("crmbench:ab ", "crmbench:A ")) for n in names)
    assert adapters["ab"].keyspace().customers == 3
    assert make(fake).cleanup("ab") == 8 and make(fake).cleanup("A") == 8


# ------------------------------------------------------------------ secrets


def test_secrets_never_reach_logs_reprs_or_messages(
    fake: FakeSalesforce, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make(fake, customers=3)
    adapter.open()
    adapter.preflight(plan())
    fake.expire_tokens()
    adapter.get_customer(1)
    assert adapter._token is not None
    adapter._token.wait_refreshed()
    fake.script.append(sf_error(403, "REQUEST_LIMIT_EXCEEDED"))
    adapter.get_customer(1)
    facts = adapter.target_facts()
    texts = [caplog.text, repr(adapter), str(adapter), str(facts), str(adapter.usage)]
    secrets = [SF_CLIENT_SECRET, *fake.tokens]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    bad = SalesforceAdapter(SF_LOGIN_HOST, transport=fake.transport(), environ={
        "SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "SALESFORCE_CLIENT_SECRET": "other-secret-1234"})
    with pytest.raises(UserError) as info:
        bad.open()
    assert "other-secret-1234" not in str(info.value) + caplog.text
