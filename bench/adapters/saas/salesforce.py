"""Adapter of Salesforce through the REST API: ``salesforce://<My Domain host>``.

``salesforce://acme.my.salesforce.com``; ``salesforce://login`` and ``salesforce://test``
stand for login.salesforce.com and test.salesforce.com. Query parameters: ``customers``
(how many accounts to seed, default 200, scaled down to fit the org's storage),
``api_version`` (default 62.0) and ``run_id``.

Authentication (``salesforce_auth``) is the OAuth 2.0 client credentials flow of a
connected app / external client app, which needs the org's My Domain host, or the JWT
bearer flow (an RS256-signed assertion), which also accepts ``salesforce://login`` and
``salesforce://test``. The token carries no expiry; a 401 (INVALID_SESSION_ID) fetches a
new one once and repeats a setup call, while a timed call keeps its status and the token is
replaced in the background.

Preflight (``salesforce_preflight``) checks before any write: the org is not production
(unless allowed), the user has the field access the scenario's operations need, the run's
calls fit the daily API allocation (the rate is planned under it) and the fixture and the
records the run creates fit the data storage. It then seeds ``customers`` Accounts, each
with one Opportunity, through sObject Collections (200 records per request).

Records: every record a run writes starts its name field with ``crmbench:<run_id>`` and a
space (Account.Name, Opportunity.Name, Lead.LastName, Task.Subject); these standard text
fields can be filtered in SOQL, unlike Description (a long text area). Harness ids 1..n
are the run's Accounts and Opportunities ordered by Id; ``cleanup`` finds them with SOQL
and deletes them in chunks of 200 (sObject Collections DELETE).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from bench.adapters.base import (
    ActivityInput,
    Capability,
    CustomerChanges,
    Key,
    Keyspace,
    LeadInput,
    RunPlan,
    SearchQuery,
    Stage,
    Status,
)
from bench.adapters.saas.common import (
    DEFAULT_CUSTOMERS,
    IdMap,
    capability_table,
    check_run_id,
    parse_target,
    positive_int,
    run_tag,
    seed_name,
    seed_region,
    seed_tier,
)
from bench.adapters.saas.http import redact
from bench.adapters.saas.quota import Concurrency, Quota
from bench.adapters.saas.salesforce_auth import ENV, LOGIN_HOSTS
from bench.adapters.saas.salesforce_client import (
    API_VERSION,
    REFUSALS,
    concurrent_limit,
    error_code,
    error_text,
    sf_status,
    soql_prefix,
    soql_str,
    soql_suffix,
)
from bench.adapters.saas.salesforce_engines import SalesforceEngines
from bench.adapters.saas.salesforce_preflight import (
    ApiBudget,
    StoragePlan,
    access_error,
    api_budget,
    concurrency_cap,
    daily_quota,
    missing_access,
    plan_storage,
    required,
    writes_per_second,
)
from bench.adapters.saas.salesforce_realtime import SalesforceRealtime
from bench.errors import UserError

__all__ = [
    "API_VERSION", "REFUSALS", "SalesforceAdapter", "concurrent_limit", "error_code",
    "error_text", "sf_status", "soql_prefix", "soql_str", "soql_suffix",
]

# sObject Collections take at most 200 records (or ids) per request.
CHUNK = 200
# The workload's stage vocabulary on Salesforce's default sales process.
STAGES: dict[str, str] = {
    "open": "Prospecting",
    "qualified": "Qualification",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "won": "Closed Won",
    "lost": "Closed Lost",
}
# Tagged records and the field that carries the tag, children before parents.
TAGGED = (("Task", "Subject"), ("Lead", "LastName"), ("Opportunity", "Name"),
          ("Account", "Name"))
_ALLOWED = ("customers", "api_version", "run_id")
_API_VERSION = re.compile(r"\d{2,3}\.0")
_ACCOUNT_FIELDS = "Id,Name,Site,Industry,NumberOfEmployees,OwnerId"

_NOT_PROBED = "not probed by this adapter"
AGENT_STEPS = ("an Agentforce agent's plan and actions are the org's own configuration; the "
               "probe's lead-intake data (products, stock, orders, thresholds) has no "
               "counterpart the adapter can create, so it is not measured")
NO_PROFILE = ("Sales Cloud keeps no profile computed from behavioural events (counters, "
              "tags with formulas): that is Data Cloud, a separate product with its own "
              "ingestion API, which this adapter does not drive")
FLOWS = ("autolaunched flows of n chained elements created and activated through the Tooling "
         "API (Flow), run through the REST flow action, executed when the last element's "
         "write is read back; n doubles then bisects. Documented: no per-flow element cap, the "
         "2,000 executed elements per interview removed from API 57.0, per-transaction Apex "
         "limits (10,000 ms CPU, 150 DML) (Salesforce Help, Flow limits); the claimed 200 "
         "is checked against the measured size")
SLA_ON_CASES = ("Salesforce's SLA timers are entitlement milestones on Cases and Work "
                "Orders; leads and opportunities have none without Flow or Apex; "
                "not measured at this level")
PACKAGES = ("no scenario pack to switch on: industry features are AppExchange managed "
            "packages or licensed clouds (vendor claims file: about 14 person-days). A "
            "managed package version named in SALESFORCE_PACKAGE_VERSION_ID is installed "
            "through the Tooling API's PackageInstallRequest and timed until the org lists "
            "it installed; without that variable nothing is installed and the time is not "
            "measured")


class SalesforceAdapter(SalesforceRealtime, SalesforceEngines):
    """Adapter of ``salesforce://<host>``: Salesforce REST API, client credentials or JWT
    bearer flow."""

    name: ClassVar[str] = "salesforce"
    platform: ClassVar[str] = "salesforce"
    credential_section: ClassVar[str] = "salesforce"
    credential_env: ClassVar[dict[str, str]] = ENV
    label: ClassVar[str] = "Salesforce"
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {
            "crud.mixed": ("supported",
                           "REST API sObject rows, SOQL query with nextRecordsUrl paging and "
                           "sObject Collections (Salesforce REST API Developer Guide); measured "
                           "at the rate the org's daily API allocation allows (Developer Limits "
                           "and Allocations Quick Reference: the allocation depends on edition "
                           "and licences and is read from the Limits resource, so before that "
                           "Developer Edition's 15,000 calls are assumed; the cap of 25 "
                           "concurrent requests, 5 on Developer Edition and trial orgs, binds "
                           "only requests of 20 s or more, so capping the users by it is a "
                           "safe reading, not a documented need) and "
                           "on a seeded fixture scaled to the org's data storage"),
            "cdp.event_delay": ("supported",
                                "Change Data Capture over Pub/Sub API (gRPC, Avro payloads; "
                                "Pub/Sub API Developer Guide): each event is an Account "
                                "update carrying the event's key, timed to the "
                                "AccountChangeEvent carrying it on the harness's own "
                                "subscription; Account is selected for Change Data Capture "
                                "(Tooling API PlatformEventChannelMember) when it is not"),
            "agent.latency": ("supported",
                              "Agent API (Agentforce Developer Guide): a session with the "
                              "agent of SALESFORCE_AGENT_ID and one message about the lead; "
                              "trigger to the agent's answer on the harness's clock. Needs "
                              "an Agentforce licence and an agent reachable through the "
                              "Agent API (unsupported when the variable is not set)"),
            "agent.steps": ("not-measurable", AGENT_STEPS),
            "agent.takeover": ("not-measurable", AGENT_STEPS),
            "agent.explain": ("not-measurable", AGENT_STEPS),
            "cdp.realtime": ("unsupported", NO_PROFILE),
            "cdp.tags_explained": ("unsupported", NO_PROFILE),
            "workflow.max_nodes": ("supported", FLOWS),
            "workflow.dag": ("not-measurable",
                             "flows are metadata deployed through the Tooling or Metadata "
                             "API, validated by the platform; the probe's node/edge "
                             "documents (parallel branches, joins) have no Flow "
                             "counterpart, so refusals of cycles and dangling edges are not "
                             "checked"),
            "workflow.breaker": ("unsupported",
                                 "a failing flow interview is rolled back and its error "
                                 "e-mailed (Salesforce Help, Flow errors); flows are not "
                                 "paused after repeated failures"),
            "workflow.lineage": ("not-measurable",
                                 "the Tooling API's MetadataComponentDependency lists what a "
                                 "flow references (beta); not probed"),
            "sla.granularity": ("supported",
                                "entitlement processes with milestones on Cases (Salesforce "
                                "Help, Entitlement Management; Metadata API "
                                "EntitlementProcess): the shortest milestone accepted and its "
                                "violation (CaseMilestone IsViolated) observed on the "
                                "harness's clock; unsupported where the org has no "
                                "Entitlement Management"),
            "sla.field": ("not-measurable", SLA_ON_CASES),
            "sla.process": ("not-measurable", SLA_ON_CASES),
            "sla.action": ("not-measurable",
                           "first-response milestones exist for Cases and Work Orders "
                           "(Entitlement Management), not for leads; " + _NOT_PROBED),
            "sla.status": ("not-measurable",
                           "a CaseMilestone shows IsViolated and TimeRemainingInMins; "
                           "warning (at-risk) actions are time-triggered actions of the "
                           "process, which the probe does not define"),
            "sla.escalation": ("not-measurable",
                               "milestone violation actions (e-mail alert, field update, "
                               "task) are configured per process; the probe defines none"),
            "pack.enable_time": ("not-measurable", PACKAGES),
            "pack.hotplug": ("not-measurable",
                             "a managed package is installed or uninstalled "
                             "(PackageInstallRequest, SubscriberPackageVersionUninstall"
                             "Request), not switched off and on keeping its data; "
                             + _NOT_PROBED),
            "pack.manufacturing": ("not-measurable",
                                   "Manufacturing Cloud is a licensed industry cloud (sales "
                                   "agreements, account forecasts); no PPAP approval freeze "
                                   "was found in its documentation; " + _NOT_PROBED),
        },
        rest=("unknown", "not checked against Salesforce documentation; " + _NOT_PROBED),
    )

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> SalesforceAdapter:
        host, params = parse_target(url, "salesforce", _ALLOWED)
        host = LOGIN_HOSTS.get(host, host)
        if "." not in host:
            raise UserError(
                f"salesforce URL: {host!r} is not a host; use the org's My Domain host "
                "(salesforce://acme.my.salesforce.com), salesforce://login or salesforce://test"
            )
        version = params.get("api_version", API_VERSION)
        if not _API_VERSION.fullmatch(version):
            raise UserError(f"salesforce URL: api_version must look like 62.0, got {version!r}")
        customers = (positive_int("customers", params["customers"], "salesforce")
                     if "customers" in params else DEFAULT_CUSTOMERS)
        return cls(host, api_version=version, customers=customers,
                   run_id=run_id or params.get("run_id"), environ=env)

    def keyspace(self) -> Keyspace:
        if not self._maps:
            if self._adopt_run_id() is None:
                raise UserError(
                    "the salesforce adapter maps harness ids onto the records of one run; "
                    "it needs a run id (the harness passes it, or set CRMBENCH_RUN_ID)"
                )
            self._load_maps()
        accounts = len(self._maps.get("Account", IdMap([])))
        if accounts == 0:
            raise UserError(
                f"no Salesforce accounts are named {self._tag()}...; the harness seeds them "
                "in preflight (crmbench run)"
            )
        return self.keyspace_of(accounts, len(self._maps.get("Opportunity", IdMap([]))))

    # ------------------------------------------------------------------ verbs

    def get_customer(self, customer_id: Key) -> Status:
        def call() -> Status:
            rid = self._id("Account", customer_id)
            if rid is None:
                return Status.not_found
            return sf_status(self._api("GET", f"{self._data}/sobjects/Account/{rid}",
                                       setup=False, params={"fields": _ACCOUNT_FIELDS}))
        return self._verb(call)

    def _soql_status(self, soql: str, *, need_rows: bool = False) -> Status:
        resp = self._api("GET", f"{self._data}/query", setup=False, params={"q": soql})
        status = sf_status(resp)
        if status is Status.ok and need_rows and not resp.json().get("totalSize"):
            return Status.not_found
        return status

    def customer_360(self, customer_id: Key) -> Status:
        def call() -> Status:
            rid = self._id("Account", customer_id)
            if rid is None:
                return Status.not_found
            return self._soql_status(
                "SELECT Id, Name, Site, Industry, NumberOfEmployees, Owner.Name, "
                "(SELECT Id, Name, Email FROM Contacts LIMIT 10), "
                "(SELECT Id, Name, StageName, Amount, CloseDate FROM Opportunities "
                "WHERE IsClosed = false), "
                "(SELECT Id, Subject, ActivityDate FROM Tasks ORDER BY CreatedDate DESC "
                f"LIMIT 10) FROM Account WHERE Id = {soql_str(rid)}",
                need_rows=True,
            )
        return self._verb(call)

    def search_customers(self, query: SearchQuery) -> Status:
        if query.tag is not None:
            # Account has no standard tag field that SOQL can filter.
            return Status.unsupported

        def call() -> Status:
            conditions = [f"Name LIKE {soql_prefix(self._prefix() + (query.name_prefix or ''))}"]
            if query.region_id is not None and query.tier is not None:
                site = f"region-{query.region_id} tier-{query.tier}"
                conditions.append(f"Site = {soql_str(site)}")
            elif query.region_id is not None:
                conditions.append(f"Site LIKE {soql_prefix(f'region-{query.region_id} ')}")
            elif query.tier is not None:
                conditions.append(f"Site LIKE {soql_suffix(f' tier-{query.tier}')}")
            limit = min(max(query.limit, 1), 200)
            return self._soql_status(
                f"SELECT Id, Name, Site FROM Account WHERE {' AND '.join(conditions)} "
                f"ORDER BY Name LIMIT {limit}"
            )
        return self._verb(call)

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        # The run's leads all belong to the connected app's run-as user: one "rep".
        def call() -> Status:
            return self._soql_status(
                f"SELECT Id, Company, Status FROM Lead WHERE LastName LIKE "
                f"{soql_prefix(self._prefix())} AND IsConverted = false "
                f"ORDER BY CreatedDate DESC LIMIT {min(max(limit, 1), 200)}"
            )
        return self._verb(call)

    def create_lead(self, lead: LeadInput) -> Status:
        def call() -> Status:
            body: dict[str, Any] = {
                "LastName": f"{self._prefix()}{lead.contact_name}"[:80],
                "Company": lead.company_name[:255],
                "LeadSource": "Web" if lead.source == "web" else "Other",
                "Description": (f"crmbench lead; region {lead.region_id}; source {lead.source};"
                                f" products {lead.product_interest}"),
            }
            if lead.email:
                body["Email"] = lead.email
            # Duplicate rules with an alert refuse API inserts unless allowSave is true
            # (REST API Developer Guide, Duplicate Rule Header, API 52.0 and later).
            return self._refused(self._api(
                "POST", f"{self._data}/sobjects/Lead", setup=False, json=body,
                headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
            ))
        return self._verb(call)

    def log_activity(self, activity: ActivityInput) -> Status:
        def call() -> Status:
            rid = self._id("Account", activity.customer_id)
            if rid is None:
                return Status.not_found
            body = {
                "Subject": f"{self._prefix()}{activity.type}: {activity.subject}"[:255],
                "WhatId": rid,
                "Status": "Completed",
                "Priority": "Normal",
                "ActivityDate": dt.date.today().isoformat(),
            }
            return self._refused(self._api("POST", f"{self._data}/sobjects/Task", setup=False,
                                           json=body))
        return self._verb(call)

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        def call() -> Status:
            rid = self._id("Opportunity", opportunity_id)
            if rid is None:
                return Status.not_found
            return sf_status(self._api(
                "PATCH", f"{self._data}/sobjects/Opportunity/{rid}", setup=False,
                json={"StageName": STAGES[stage]},
            ))
        return self._verb(call)

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        # Only fields with a standard Account counterpart are sent (the consent has none).
        body: dict[str, Any] = {}
        if changes.website is not None:
            body["Website"] = changes.website
        if changes.employees is not None:
            body["NumberOfEmployees"] = changes.employees
        if not body:
            return Status.unsupported

        def call() -> Status:
            rid = self._id("Account", customer_id)
            if rid is None:
                return Status.not_found
            return sf_status(self._api("PATCH", f"{self._data}/sobjects/Account/{rid}",
                                       setup=False, json=body))
        return self._verb(call)

    # ------------------------------------------------------------------ guarded

    # What the Limits resource said last, and the calls a planned run needs besides the
    # scenario's (seeding, id maps, cleanup, checks): both shape the daily quota.
    _limits_seen: dict[str, Any] | None = None
    _reserved: int = 0

    def _limits(self) -> dict[str, Any]:
        body = self._expect(self._api("GET", f"{self._data}/limits", setup=True), "limits")
        self._limits_seen = body if isinstance(body, dict) else {}
        return self._limits_seen

    def quotas(self) -> list[Quota]:
        """The org's daily API allocation (what is left once the Limits resource is read)."""
        return [daily_quota(self._limits_seen, self._reserved)]

    def concurrency(self) -> list[Concurrency]:
        """The cap on concurrent long-running requests of the org's type."""
        return [concurrency_cap(self._org)]

    def target_facts(self) -> dict[str, Any]:
        """Org and allocation facts for ``crmbench doctor`` (one API call)."""
        org = self._org or {}
        limits = self._limits()
        daily = limits.get("DailyApiRequests") or {}
        storage = limits.get("DataStorageMB") or {}
        return {
            "org": org.get("Name"), "org_type": org.get("OrganizationType"),
            "sandbox": bool(org.get("IsSandbox")), "instance": org.get("InstanceName"),
            "api_daily_max": daily.get("Max"), "api_daily_remaining": daily.get("Remaining"),
            "data_storage_mb_remaining": storage.get("Remaining"),
            "api_usage_header": (f"{self.usage.used}/{self.usage.max}"
                                 if self.usage.used is not None else None),
        }

    def _check_org(self, plan: RunPlan) -> dict[str, Any]:
        org = self._org or {}
        sandbox = bool(org.get("IsSandbox"))
        org_type = str(org.get("OrganizationType") or "unknown")
        production = not sandbox and org_type != "Developer Edition"
        if production and not plan.allow_production:
            raise UserError(
                f"Salesforce org {org.get('Name')!r} at {self.host} is a production org "
                f"({org_type}, IsSandbox false); a run creates, changes and deletes records. "
                "Use a sandbox or a Developer Edition org, or allow production explicitly"
            )
        return {"name": org.get("Name"), "type": org_type, "sandbox": sandbox,
                "instance": org.get("InstanceName"), "production": production}

    def _check_access(self, plan: RunPlan) -> list[str]:
        """Describe every sObject the run reads or writes; UserError naming what is missing."""
        operations = [op for op, weight in plan.mix.items() if weight > 0]
        missing = {}
        needs = required(operations)
        for sobject, wanted in needs.items():
            resp = self._api("GET", f"{self._data}/sobjects/{sobject}/describe", setup=True)
            # 404/403: the object itself is not visible to the user.
            body = None if resp.status_code in (403, 404) else self._expect(resp, "describe")
            gaps = missing_access(body, wanted)
            if gaps:
                missing[sobject] = gaps
        if missing:
            raise access_error(missing, self._auth.user() if self._auth else "in use")
        return sorted(needs)

    def _run_records(self, plan: RunPlan, rate: float) -> int:
        """Leads and Tasks the run creates at ``rate``."""
        if plan.rate <= 0 or not plan.mix:
            return 0
        return math.ceil(writes_per_second(rate, plan.mix) * plan.duration_s)

    def _budget(self, plan: RunPlan, rate: float, existing: int, customers: int,
                checks: int) -> ApiBudget:
        if plan.rate > 0 and plan.mix:
            scenario = min(plan.estimated_calls, math.ceil(rate * plan.duration_s * 1.1) + 100)
            created = self._run_records(plan, rate)
        else:
            # Upper bound: every call of the run creates a record that must be deleted.
            scenario = created = plan.estimated_calls
        return api_budget(scenario_calls=scenario, seed_customers=0 if existing else customers,
                          customers=customers, run_records=created, checks=checks)

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Check before any write (production org, field access, API allocation, data
        storage), plan the rate under the daily allocation, then seed the run's fixture."""
        self.run_id = check_run_id(plan.run_id)
        self.open()
        org = self._check_org(plan)
        limits = self._limits()
        checked = self._check_access(plan)
        existing = len(self._tagged_ids("Account", "Name", plan.run_id))
        checks = 2 + len(checked)
        # Setup and cleanup come out of the allocation before the scenario's calls.
        self._reserved = self._budget(plan, plan.rate, existing, self.customers, checks).setup
        rate_plan = self.rate_plan(plan)
        # An "ok" plan's allowed rate is the most the quotas allow; the run keeps its own.
        rate = min(plan.rate, rate_plan.allowed)
        storage = plan_storage(self.customers, existing, self._run_records(plan, rate),
                               (limits.get("DataStorageMB") or {}).get("Remaining"),
                               repr(org["name"]))
        budget = self._budget(plan, rate, existing, storage.customers, checks)
        self._check_allocation(budget, limits, org["name"])
        if not existing:
            self._seed(storage.customers)
        self._load_maps()
        return self._facts(plan, org, limits, budget, storage, rate_plan.to_json(), existing,
                           checked)

    def _check_allocation(self, budget: ApiBudget, limits: Mapping[str, Any], org: Any
                          ) -> None:
        daily = limits.get("DailyApiRequests") or {}
        remaining = daily.get("Remaining")
        if isinstance(remaining, int) and budget.needed > remaining:
            raise UserError(
                f"Salesforce org {org!r} has {remaining} of {daily.get('Max')} daily API "
                f"requests left, but this run needs about {budget.needed} "
                f"({budget.scenario} for the scenario, {budget.seed} to seed, "
                f"{budget.cleanup} to clean up, {budget.id_maps} to map ids, {budget.checks} "
                "to check); lower the rate or the duration, or wait for the rolling 24-hour "
                "window to free allocation"
            )

    def _facts(self, plan: RunPlan, org: dict[str, Any], limits: Mapping[str, Any],
               budget: ApiBudget, storage: StoragePlan, rate_plan: dict[str, Any],
               existing: int, checked: list[str]) -> dict[str, Any]:
        daily = limits.get("DailyApiRequests") or {}
        data = limits.get("DataStorageMB") or {}
        return {
            "org": org,
            "api": {"daily_max": daily.get("Max"), "daily_remaining": daily.get("Remaining"),
                    **budget.to_json(),
                    "usage_header": (f"{self.usage.used}/{self.usage.max}"
                                     if self.usage.used is not None else None)},
            "rate_plan": rate_plan,
            "data_storage_mb": {"max": data.get("Max"), "remaining": data.get("Remaining")},
            "storage": storage.to_json(),
            "access": {"described": checked},
            "fixture": {"customers": len(self._maps["Account"]),
                        "opportunities": len(self._maps["Opportunity"]),
                        "requested": self.customers, "reused": bool(existing),
                        "scaled": storage.scaled, "tag": run_tag(plan.run_id)},
        }

    def _collection(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = self._api("POST", f"{self._data}/composite/sobjects", setup=True,
                         json={"allOrNone": False, "records": records})
        results = self._expect(resp, "sObject Collections insert")
        return results if isinstance(results, list) else []

    def _seed(self, customers: int) -> None:
        prefix = self._prefix()
        account_ids: list[str] = []
        failures: list[Any] = []
        for start in range(1, customers + 1, CHUNK):
            batch = range(start, min(customers, start + CHUNK - 1) + 1)
            results = self._collection([
                {"attributes": {"type": "Account"}, "Name": seed_name(self._tag(), i),
                 "Site": f"region-{seed_region(i)} tier-{seed_tier(i)}",
                 "NumberOfEmployees": 10 + i % 990}
                for i in batch
            ])
            account_ids += [str(r["id"]) for r in results if r.get("success")]
            failures += [r.get("errors") for r in results if not r.get("success")]
        close = (dt.date.today() + dt.timedelta(days=90)).isoformat()
        for start in range(0, len(account_ids), CHUNK):
            results = self._collection([
                {"attributes": {"type": "Opportunity"}, "Name": f"{prefix}Opportunity {n + 1}",
                 "AccountId": aid, "StageName": "Prospecting", "CloseDate": close}
                for n, aid in enumerate(account_ids[start:start + CHUNK], start)
            ])
            failures += [r.get("errors") for r in results if not r.get("success")]
        if failures:
            raise self._seed_error(failures)

    def _seed_error(self, failures: list[Any]) -> UserError:
        codes = {str(e.get("statusCode")) for errors in failures if isinstance(errors, list)
                 for e in errors if isinstance(e, dict)}
        why = (f"STORAGE_LIMIT_EXCEEDED: {REFUSALS['STORAGE_LIMIT_EXCEEDED']}"
               if "STORAGE_LIMIT_EXCEEDED" in codes else
               f"first: {redact(str(failures[0]))[:300]}")
        return UserError(
            f"Salesforce refused {len(failures)} seeded records ({why}); the others are "
            f"tagged {self._tag()}: remove them with crmbench cleanup"
        )

    def cleanup(self, run_id: str) -> int:
        """Delete every record of run ``run_id``, children first, 200 per request.

        Records are found by the run's tag and separator (``tag_prefix``) and each name is
        checked again (``is_tagged``), so run ``a`` never deletes the records of run ``ab``.
        """
        tag = run_tag(run_id)
        self.open()
        deleted = 0
        failures: list[str] = []
        for sobject, field in TAGGED:
            ids = self._tagged_ids(sobject, field, run_id)
            for start in range(0, len(ids), CHUNK):
                resp = self._api(
                    "DELETE", f"{self._data}/composite/sobjects", setup=True,
                    params={"ids": ",".join(ids[start:start + CHUNK]), "allOrNone": "false"},
                )
                for result in self._expect(resp, "sObject Collections delete") or []:
                    if result.get("success"):
                        deleted += 1
                    else:
                        failures.append(f"{result.get('id')}: {result.get('errors')}")
        if run_id == self.run_id:
            self._maps = {}
        if failures:
            raise UserError(
                f"deleted {deleted} records tagged {tag}, but Salesforce refused "
                f"{len(failures)} (first: {redact(failures[0])[:300]})"
            )
        return deleted
