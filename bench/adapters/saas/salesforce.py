"""Adapter of Salesforce through the REST API: ``salesforce://<My Domain host>``.

``salesforce://acme.my.salesforce.com``; ``salesforce://login`` and ``salesforce://test``
stand for login.salesforce.com and test.salesforce.com. Query parameters: ``customers``
(how many accounts to seed, default 200, scaled down to fit the org's storage),
``api_version`` (default 62.0) and ``run_id``.

Authentication is the OAuth 2.0 client credentials flow of a connected app / external
client app (POST /services/oauth2/token, grant_type=client_credentials; Salesforce Help,
"OAuth 2.0 Client Credentials Flow for Server-to-Server Integration"). The token carries
no expiry; a 401 (INVALID_SESSION_ID) fetches a new one once and repeats the call. The JWT
bearer flow is documented by Salesforce but not implemented here (it needs an RS256
signature, i.e. PyJWT and cryptography).

Records: preflight seeds ``customers`` Accounts, each with one Opportunity, through sObject
Collections (200 records per request). Every record a run writes starts its name field
with ``crmbench:<run_id>`` (Account.Name, Opportunity.Name, Lead.LastName, Task.Subject);
these standard text fields can be filtered in SOQL, unlike Description (a long text area).
Harness ids 1..n are the run's Accounts and Opportunities ordered by Id; ``cleanup``
finds them with SOQL and deletes them in chunks of 200 (sObject Collections DELETE).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

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
    status_for_http,
)
from bench.adapters.saas.common import (
    DEFAULT_CUSTOMERS,
    IdMap,
    capability_table,
    check_run_id,
    fit_to_storage,
    json_or_empty,
    parse_target,
    positive_int,
    run_tag,
    seed_name,
    seed_region,
    seed_tier,
)
from bench.adapters.saas.http import (
    Credentials,
    LimitUsage,
    Secret,
    TokenBox,
    VendorClient,
    redact,
)
from bench.adapters.saas.salesforce_engines import SalesforceEngines
from bench.adapters.saas.salesforce_realtime import SalesforceRealtime
from bench.errors import TargetUnreachable, UserError

API_VERSION = "62.0"
LOGIN_HOSTS = {"login": "login.salesforce.com", "test": "test.salesforce.com"}
ENV = {"client_id": "SALESFORCE_CLIENT_ID", "client_secret": "SALESFORCE_CLIENT_SECRET"}
JWT_ENV = ("SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE")
# sObject Collections take at most 200 records (or ids) per request.
CHUNK = 200
# A query returns at most 2,000 records per batch before nextRecordsUrl.
QUERY_BATCH = 2000
# Most records count 2 KB of data storage; a seeded customer is an Account and an Opportunity.
KB_PER_CUSTOMER = 4.0
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
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")
_API_VERSION = re.compile(r"\d{2,3}\.0")
_ACCOUNT_FIELDS = "Id,Name,Site,Industry,NumberOfEmployees,OwnerId"

log = logging.getLogger("crmbench.vendor.salesforce")

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


def soql_str(value: str) -> str:
    """A quoted SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'").replace("%", "\\%").replace("_", "\\_")


def soql_prefix(value: str) -> str:
    """A LIKE pattern (quoted) matching strings that start with ``value``."""
    return "'" + _like_escape(value) + "%'"


def soql_suffix(value: str) -> str:
    """A LIKE pattern (quoted) matching strings that end with ``value``."""
    return "'%" + _like_escape(value) + "'"


def error_code(resp: httpx.Response) -> str | None:
    """The errorCode of a REST error body ``[{"message", "errorCode"}]`` (or OAuth ``error``)."""
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code = body[0].get("errorCode")
        return str(code) if code is not None else None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return None


def error_text(resp: httpx.Response) -> str:
    """errorCode and message of an error response, secrets removed."""
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        text = f"{body[0].get('errorCode')}: {body[0].get('message')}"
    elif isinstance(body, dict):
        text = f"{body.get('error')}: {body.get('error_description', body.get('message'))}"
    else:
        text = f"HTTP {resp.status_code}"
    return redact(text)[:300]


def sf_status(resp: httpx.Response) -> Status:
    """Status of a REST response; REQUEST_LIMIT_EXCEEDED (HTTP 403) is rate limiting."""
    if resp.status_code in (400, 403) and error_code(resp) == "REQUEST_LIMIT_EXCEEDED":
        return Status.rate_limited
    return status_for_http(resp.status_code)


def _throttled(resp: httpx.Response) -> bool:
    return resp.status_code == 403 and error_code(resp) == "REQUEST_LIMIT_EXCEEDED"


class SalesforceAdapter(SalesforceRealtime, SalesforceEngines):
    """Adapter of ``salesforce://<host>``: Salesforce REST API, client credentials flow."""

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

    def __init__(self, host: str, *, api_version: str = API_VERSION, **kw: Any) -> None:
        super().__init__(host, **kw)
        self.api_version = api_version
        self.usage = LimitUsage()
        self._creds: Credentials | None = None
        self._token: TokenBox | None = None
        self._instance: str | None = None
        self._org: dict[str, Any] | None = None
        self._maps: dict[str, IdMap] = {}

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

    @property
    def _data(self) -> str:
        return f"/services/data/v{self.api_version}"

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Fetch a token, read the Organization record, load the run's id maps if tagged."""
        if self._http is not None:
            return
        creds = self.read_credentials()
        if not creds.complete:
            env = self._env()
            if all(env.get(var, "").strip() for var in JWT_ENV):
                raise UserError(
                    "Salesforce's JWT bearer flow (grant_type=urn:ietf:params:oauth:grant-type:"
                    "jwt-bearer, an RS256-signed assertion) is documented but not implemented "
                    "by this adapter: signing needs PyJWT and cryptography. Use the client "
                    "credentials flow: " + creds.hint()
                )
            raise TargetUnreachable(f"no credentials: {creds.hint()}")
        self._creds = creds
        self._http = VendorClient(
            "Salesforce", transport=self.transport, throttled=_throttled,
            sleep=self._sleep_fn(), pool_size=self.pool_size,
        )
        self._token = TokenBox(self._fetch_token, clock=self.clock)
        try:
            self._token.get()
            self._org = self._organization()
            if self._adopt_run_id() is not None:
                self._load_maps()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        self._token = None

    def platform_version(self) -> str | None:
        if self._org is None:
            return None
        kind = str(self._org.get("OrganizationType") or "unknown edition")
        sandbox = " sandbox" if self._org.get("IsSandbox") else ""
        return f"Salesforce {kind}{sandbox}, REST API v{self.api_version}"

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

    # ------------------------------------------------------------------ HTTP

    def _fetch_token(self) -> tuple[Secret, float | None]:
        creds = self._creds
        if creds is None:
            raise RuntimeError("credentials not loaded")
        resp = self._client().setup(
            "POST", f"https://{self.host}/services/oauth2/token",
            data={"grant_type": "client_credentials",
                  "client_id": creds["client_id"].reveal(),
                  "client_secret": creds["client_secret"].reveal()},
        )
        body = json_or_empty(resp)
        if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise UserError(
                f"Salesforce at {self.host} refused the client credentials flow "
                f"({error_text(resp)}); check that the connected app enables it and has a "
                "run-as user, and check SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET"
            )
        token = Secret(str(body["access_token"]))
        instance = str(body.get("instance_url") or f"https://{self.host}").rstrip("/")
        if not instance.startswith("https://"):
            raise UserError(f"Salesforce returned an instance URL that is not https: {instance}")
        self._instance = instance
        return token, None

    def _api(self, method: str, path: str, *, setup: bool, **kw: Any) -> httpx.Response:
        """One REST call with the cached token; a 401 refreshes the token once."""
        if self._token is None or self._instance is None:
            raise RuntimeError("SalesforceAdapter used before open()")
        url = path if path.startswith("https://") else self._instance + path
        client = self._client()
        call = client.setup if setup else client.send
        token = self._token.get()
        resp = call(method, url, headers={"Authorization": f"Bearer {token.reveal()}"}, **kw)
        self._note_usage(resp)
        if resp.status_code == 401:
            log.debug("Salesforce session rejected (%s); fetching a new token", error_code(resp))
            token = self._token.refresh(token)
            resp = call(method, url, headers={"Authorization": f"Bearer {token.reveal()}"}, **kw)
            self._note_usage(resp)
        return resp

    def _note_usage(self, resp: httpx.Response) -> None:
        match = _LIMIT_INFO.search(resp.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage.note(int(match.group(1)), int(match.group(2)))

    def _expect(self, resp: httpx.Response, what: str) -> Any:
        """The JSON body of a successful setup call; otherwise a clear error."""
        if 200 <= resp.status_code < 300:
            return resp.json() if resp.content else None
        if error_code(resp) == "REQUEST_LIMIT_EXCEEDED":
            raise UserError(
                f"Salesforce {what}: the org's API request limit is exhausted "
                f"({error_text(resp)}); wait for the 24-hour window to free allocation"
            )
        raise UserError(f"Salesforce {what} failed: HTTP {resp.status_code} {error_text(resp)}")

    def _query_all(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following nextRecordsUrl."""
        resp = self._api("GET", f"{self._data}/query", setup=True, params={"q": soql})
        records: list[dict[str, Any]] = []
        while True:
            body = self._expect(resp, "query")
            records.extend(body.get("records", []))
            next_url = body.get("nextRecordsUrl")
            if body.get("done", True) or not next_url:
                return records
            resp = self._api("GET", str(next_url), setup=True)

    def _organization(self) -> dict[str, Any]:
        rows = self._query_all(
            "SELECT Id, Name, IsSandbox, OrganizationType, InstanceName, TrialExpirationDate "
            "FROM Organization LIMIT 1"
        )
        if not rows:
            raise UserError(f"Salesforce at {self.host} returned no Organization record")
        return rows[0]

    def _tagged_ids(self, sobject: str, field: str, tag: str) -> list[str]:
        return [str(r["Id"]) for r in self._query_all(
            f"SELECT Id FROM {sobject} WHERE {field} LIKE {soql_prefix(tag)} ORDER BY Id"
        )]

    def _load_maps(self) -> None:
        tag = self._tag()
        self._maps = {
            "Account": IdMap(self._tagged_ids("Account", "Name", tag)),
            "Opportunity": IdMap(self._tagged_ids("Opportunity", "Name", tag)),
        }

    def _id(self, sobject: str, harness_id: Key) -> str | None:
        id_map = self._maps.get(sobject)
        return id_map.get(harness_id) if id_map is not None else None

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
            tag = self._tag()
            name = f"{tag} {query.name_prefix}" if query.name_prefix else tag
            conditions = [f"Name LIKE {soql_prefix(name)}"]
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
                f"{soql_prefix(self._tag())} AND IsConverted = false "
                f"ORDER BY CreatedDate DESC LIMIT {min(max(limit, 1), 200)}"
            )
        return self._verb(call)

    def create_lead(self, lead: LeadInput) -> Status:
        def call() -> Status:
            body: dict[str, Any] = {
                "LastName": f"{self._tag()} {lead.contact_name}"[:80],
                "Company": lead.company_name[:255],
                "LeadSource": "Web" if lead.source == "web" else "Other",
                "Description": (f"crmbench lead; region {lead.region_id}; source {lead.source};"
                                f" products {lead.product_interest}"),
            }
            if lead.email:
                body["Email"] = lead.email
            return sf_status(self._api("POST", f"{self._data}/sobjects/Lead", setup=False,
                                       json=body))
        return self._verb(call)

    def log_activity(self, activity: ActivityInput) -> Status:
        def call() -> Status:
            rid = self._id("Account", activity.customer_id)
            if rid is None:
                return Status.not_found
            body = {
                "Subject": f"{self._tag()} {activity.type}: {activity.subject}"[:255],
                "WhatId": rid,
                "Status": "Completed",
                "Priority": "Normal",
                "ActivityDate": dt.date.today().isoformat(),
            }
            return sf_status(self._api("POST", f"{self._data}/sobjects/Task", setup=False,
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

    def _limits(self) -> dict[str, Any]:
        body = self._expect(self._api("GET", f"{self._data}/limits", setup=True), "limits")
        return body if isinstance(body, dict) else {}

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

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Refuse production orgs and too little allocation; seed the run's fixture."""
        self.run_id = check_run_id(plan.run_id)
        self.open()
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
        limits = self._limits()
        daily = limits.get("DailyApiRequests") or {}
        storage = limits.get("DataStorageMB") or {}
        tag = run_tag(plan.run_id)
        existing = len(self._tagged_ids("Account", "Name", tag))
        if existing:
            customers, scaled = existing, None
        else:
            customers, scaled = fit_to_storage(
                self.customers, storage.get("Remaining"), KB_PER_CUSTOMER
            )
        if customers < 1:
            raise UserError(
                f"Salesforce org {org.get('Name')!r} has too little data storage left "
                f"({storage.get('Remaining')} MB) to seed a fixture"
            )
        seed_calls = 0 if existing else 2 * math.ceil(customers / CHUNK)
        # Upper bound: every call of the run creates a record that must be deleted.
        created = 2 * customers + plan.estimated_calls
        cleanup_calls = len(TAGGED) * (1 + math.ceil(created / QUERY_BATCH)) + math.ceil(
            created / CHUNK
        )
        map_calls = 4 * (1 + math.ceil(customers / QUERY_BATCH))
        needed = plan.estimated_calls + seed_calls + cleanup_calls + map_calls
        remaining = daily.get("Remaining")
        if isinstance(remaining, int) and needed > remaining:
            raise UserError(
                f"Salesforce org {org.get('Name')!r} has {remaining} of {daily.get('Max')} "
                f"daily API requests left, but this run needs about {needed} "
                f"({plan.estimated_calls} for the scenario, {seed_calls} to seed, "
                f"{cleanup_calls} to clean up, {map_calls} to map ids); lower the rate or "
                "the duration, or wait for the 24-hour window to free allocation"
            )
        if not existing:
            self._seed(customers)
        self._load_maps()
        return {
            "org": {"name": org.get("Name"), "type": org_type, "sandbox": sandbox,
                    "instance": org.get("InstanceName"), "production": production},
            "api": {"daily_max": daily.get("Max"), "daily_remaining": remaining,
                    "needed": needed, "scenario": plan.estimated_calls, "seed": seed_calls,
                    "cleanup": cleanup_calls, "id_maps": map_calls,
                    "usage_header": (f"{self.usage.used}/{self.usage.max}"
                                     if self.usage.used is not None else None)},
            "data_storage_mb": {"max": storage.get("Max"),
                                "remaining": storage.get("Remaining")},
            "fixture": {"customers": len(self._maps["Account"]),
                        "opportunities": len(self._maps["Opportunity"]),
                        "requested": self.customers, "reused": bool(existing),
                        "scaled": scaled, "tag": tag},
        }

    def _collection(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = self._api("POST", f"{self._data}/composite/sobjects", setup=True,
                         json={"allOrNone": False, "records": records})
        results = self._expect(resp, "sObject Collections insert")
        return results if isinstance(results, list) else []

    def _seed(self, customers: int) -> None:
        tag = self._tag()
        account_ids: list[str] = []
        failures: list[str] = []
        for start in range(1, customers + 1, CHUNK):
            batch = range(start, min(customers, start + CHUNK - 1) + 1)
            results = self._collection([
                {"attributes": {"type": "Account"}, "Name": seed_name(tag, i),
                 "Site": f"region-{seed_region(i)} tier-{seed_tier(i)}",
                 "NumberOfEmployees": 10 + i % 990}
                for i in batch
            ])
            account_ids += [str(r["id"]) for r in results if r.get("success")]
            failures += [str(r.get("errors")) for r in results if not r.get("success")]
        close = (dt.date.today() + dt.timedelta(days=90)).isoformat()
        for start in range(0, len(account_ids), CHUNK):
            results = self._collection([
                {"attributes": {"type": "Opportunity"}, "Name": f"{tag} Opportunity {n + 1}",
                 "AccountId": aid, "StageName": "Prospecting", "CloseDate": close}
                for n, aid in enumerate(account_ids[start:start + CHUNK], start)
            ])
            failures += [str(r.get("errors")) for r in results if not r.get("success")]
        if failures:
            raise UserError(
                f"Salesforce refused {len(failures)} seeded records (first: "
                f"{redact(failures[0])[:300]}); the others are tagged {tag}: remove them with "
                f"crmbench cleanup"
            )

    def cleanup(self, run_id: str) -> int:
        """Delete every record tagged with ``run_id``, children first, 200 per request."""
        tag = run_tag(run_id)
        self.open()
        deleted = 0
        failures: list[str] = []
        for sobject, field in TAGGED:
            ids = self._tagged_ids(sobject, field, tag)
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
