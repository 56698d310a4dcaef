"""Adapter of Fxiaoke (ShareCRM) through its open API: ``fxiaoke://open.fxiaoke.com``.

Tenants on other clouds use their own host (``fxiaoke://open-hwcloud.fxiaoke.com``).
Query parameters: ``customers`` (accounts to seed, default 200), ``calls_per_20s`` (the
per-interface limit, default 100 as documented), ``daily_calls`` (the tenant's daily
allocation, which the API does not report; one 100,000-call pack is assumed) and ``run_id``.

Authentication: POST /cgi/corpAccessToken/get/V2 with appId, appSecret and permanentCode
returns corpAccessToken, corpId and expiresIn (7200 s; the same token comes back for the
first 6600 s). Every CRM call is a POST whose body carries corpAccessToken, corpId and
currentOpenUserId (the employee the calls act as) beside ``data``, and whose query string
carries a new ``thirdTraceId`` (UUID v4). Errors come back as HTTP 200 with a non-zero
errorCode (:mod:`bench.adapters.saas.fxiaoke_limits`).

Tokens: ``open()`` fetches one; timed calls only peek at it, and it is renewed in the
background 600 s before it expires. A timed call answered 20016 (token missing or expired)
keeps its status and schedules one background refresh; setup calls fetch a new token and
repeat the call once.

Records: the fields a tenant requires come from object/describe
(:mod:`bench.adapters.saas.fxiaoke_fields`); preflight refuses a run that cannot fill them
and writes nothing. The run's accounts are seeded when the harness first asks for the
keyspace after preflight allowed the run.

Sources: developer.fxiaoke.com/openapi_v2 and the open.fxiaoke.com wiki, as digested in the
public repository fxp/skillify (skills/fxiaoke/references, fetched 2026-09-11, marked there
as not verified with real credentials).

Measured: get (data/get), name search and lead listing (data/query with STARTWITH on
``name``, at most 100 rows), lead creation (data/create). Not measured, returned as
``unsupported``: customer 360, region/tier/tag search, activities, opportunity stages and
customer updates, because the field apiNames they need are tenant-configurable and not
documented for the preset objects.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from bench.adapters.base import (
    Capability,
    Key,
    Keyspace,
    LeadInput,
    RunPlan,
    SearchQuery,
    Status,
)
from bench.adapters.saas.common import (
    DEFAULT_CUSTOMERS,
    IdMap,
    VendorAdapter,
    capability_table,
    check_run_id,
    is_tagged,
    json_or_empty,
    parse_target,
    positive_int,
    run_tag,
    seed_name,
    tag_prefix,
)
from bench.adapters.saas.fxiaoke_fields import RecordPlan, parse_fields, record_plan, refusal
from bench.adapters.saas.fxiaoke_limits import (
    CALLS_PER_WINDOW,
    CREATE,
    DELETE,
    DESCRIBE,
    GET,
    INVALID,
    QUERY,
    TOKEN_CALLS_PER_MINUTE,
    TOKEN_EXPIRED,
    TOKEN_PATH,
    WINDOW_S,
    error_code,
    fx_status,
    quotas,
    throttled,
)
from bench.adapters.saas.http import (
    Credentials,
    Secret,
    Sleep,
    SlidingWindow,
    TokenBox,
    VendorClient,
    redact,
)
from bench.adapters.saas.quota import Quota
from bench.errors import UserError

ENV = {
    "app_id": "FXIAOKE_APP_ID",
    "app_secret": "FXIAOKE_APP_SECRET",
    "permanent_code": "FXIAOKE_PERMANENT_CODE",
    "open_user_id": "FXIAOKE_OPEN_USER_ID",
}
ACCOUNTS = "AccountObj"
LEADS = "LeadsObj"
# data/query returns at most 100 rows; offset is capped at 10,000, so ids page by _id.
PAGE = 100
TRACE_PARAM = "thirdTraceId"
# A token is renewed this long before its 7200 s run out (from 6600 s a new one is issued).
TOKEN_MARGIN_S = 600.0
_ALLOWED = ("customers", "calls_per_20s", "daily_calls", "run_id")
# Create calls: no approval or work flow, and employee fields given as openUserIds
# (convertUserId is documented as true by default for the body parameters used here and
# false for the header ones; it is sent explicitly so either reading holds).
_CREATE_OPTIONS = {"triggerApprovalFlow": False, "triggerWorkFlow": False,
                   "convertUserId": True}

log = logging.getLogger("crmbench.vendor.fxiaoke")

_SOURCE = "developer.fxiaoke.com openapi_v2 as digested in fxp/skillify"
_UNCERTAIN = (
    "where the documentation is not definite the adapter is safe either way: a new "
    "thirdTraceId on every request (whether a call without one is refused is not "
    "documented); describe's includeDetail sent at the top and in data (its page places it "
    "both ways); object_describe_api_name and convertUserId=true sent with each record; the "
    "per-interface limit of 100 calls per 20 s planned at 80 % (whether the company's other "
    "integrations share it is not documented); the daily allocation, not reported by the "
    "API, assumed to be one 100,000-call pack unless daily_calls names it"
)


def stamp_trace_id(request: httpx.Request) -> None:
    """Give every request its own thirdTraceId (an RFC 4122 UUID v4 in the query string).

    The documentation asks for one on every call, different each time; whether a call
    without it is refused is not documented, so it is always sent, retries included."""
    request.url = request.url.copy_merge_params({TRACE_PARAM: str(uuid.uuid4())})


def trace_id(resp: httpx.Response) -> str | None:
    """The thirdTraceId a response answered, for messages that help trace a failure."""
    try:
        value = resp.request.url.params.get(TRACE_PARAM)
    except RuntimeError:
        return None
    return None if value is None else str(value)


def rows_of(body: Any) -> list[dict[str, Any]]:
    """The rows of a data/query answer: data.dataList (a single record map also occurs)."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and isinstance(data.get("dataList"), list):
        return [r for r in data["dataList"] if isinstance(r, dict)]
    if isinstance(data, dict) and "_id" in data:
        return [data]
    return []


def name_filter(prefix: str) -> dict[str, Any]:
    return {"field_name": "name", "field_values": [prefix], "operator": "STARTWITH"}


def query_data(
    api_name: str, filters: list[dict[str, Any]], limit: int,
    orders: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "dataObjectApiName": api_name,
        "find_explicit_total_num": False,
        "search_query_info": {
            "limit": limit, "offset": 0, "filters": filters,
            "orders": orders or [], "fieldProjection": ["_id", "name"],
        },
    }


class FxiaokeAdapter(VendorAdapter):
    """Adapter of ``fxiaoke://<open host>``: Fxiaoke open API with corpAccessToken."""

    name: ClassVar[str] = "fxiaoke"
    platform: ClassVar[str] = "fxiaoke"
    credential_section: ClassVar[str] = "fxiaoke"
    credential_env: ClassVar[dict[str, str]] = ENV
    label: ClassVar[str] = "Fxiaoke"
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {
            "crud.mixed": ("supported",
                           "CRM object API /cgi/crm/v2/data/{get,query,create,invalid,delete} "
                           f"on AccountObj and LeadsObj ({_SOURCE}); measured: get, name "
                           "search, lead list, lead creation (the fields the tenant requires "
                           "read from object/describe); 360, activities, stage changes "
                           "and updates return unsupported (tenant-specific field apiNames); "
                           + _UNCERTAIN),
            "cdp.event_delay": ("not-measurable",
                                "no CRM data-change callback or subscription API is documented "
                                f"({_SOURCE}); the claimed 'built-in Kafka connector' has no "
                                "public interface the harness could subscribe to"),
            "cdp.realtime": ("unknown",
                             f"only an ERP data push API is documented ({_SOURCE}); "
                             "behavioural event intake is not"),
            "agent.latency": ("not-measurable",
                              f"no agent API is documented in the open platform ({_SOURCE})"),
            "workflow.max_nodes": ("not-measurable",
                                   "approval and business flows exist (/cgi/crm/v2/special/*) "
                                   f"but node limits and flow deployment are not documented "
                                   f"({_SOURCE}); the claimed 85 is unconfirmed"),
            "sla.granularity": ("not-measurable",
                                f"no SLA API is documented ({_SOURCE})"),
            "pack.enable_time": ("not-measurable",
                                 f"no scenario-pack API is documented ({_SOURCE})"),
        },
        rest=("unknown", f"not documented in the material consulted ({_SOURCE}); not probed"),
    )

    def __init__(self, host: str, *, calls_per_window: int = CALLS_PER_WINDOW,
                 daily_calls: int | None = None, **kw: Any) -> None:
        super().__init__(host, **kw)
        self.calls_per_window = calls_per_window
        self.daily_calls = daily_calls
        self._creds: Credentials | None = None
        self._token_http: VendorClient | None = None
        self._corp_id: str | None = None
        self._maps: dict[str, IdMap] = {}
        self._plans: dict[str, RecordPlan] = {}
        # Accounts preflight allowed to be seeded; seeded with the first keyspace().
        self._seed_due = 0

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> FxiaokeAdapter:
        host, params = parse_target(url, "fxiaoke", _ALLOWED)
        if host == "www.fxiaoke.com":
            raise UserError(
                "fxiaoke URL: www.fxiaoke.com is the web site, not the API gateway; use "
                "fxiaoke://open.fxiaoke.com or the open-* host of the tenant's cloud"
            )
        customers = (positive_int("customers", params["customers"], "fxiaoke")
                     if "customers" in params else DEFAULT_CUSTOMERS)
        calls = (positive_int("calls_per_20s", params["calls_per_20s"], "fxiaoke", 10_000)
                 if "calls_per_20s" in params else CALLS_PER_WINDOW)
        daily = (positive_int("daily_calls", params["daily_calls"], "fxiaoke", 10**9)
                 if "daily_calls" in params else None)
        return cls(host, customers=customers, calls_per_window=calls, daily_calls=daily,
                   run_id=run_id or params.get("run_id"), environ=env)

    # ------------------------------------------------------------------ lifecycle

    def _share(self, calls: int) -> int:
        """This process's share of a quota of ``calls`` (at least one call)."""
        return max(calls // max(self.processes, 1), 1)

    def _new_client(self, limiter: SlidingWindow, sleep: Sleep) -> VendorClient:
        client = VendorClient("Fxiaoke", transport=self.transport, throttled=throttled,
                              sleep=sleep, pool_size=self.pool_size, limiter=limiter)
        client.client.event_hooks = {"request": [stamp_trace_id], "response": []}
        return client

    def open(self) -> None:
        """Fetch a corpAccessToken; with a run id, load its id maps and how leads are filled."""
        if self._http is not None:
            return
        self._creds = self.complete_credentials()
        sleep = self._sleep_fn()
        # A safety net below the rate plan: per interface (limit_key), each load-generator
        # process taking its share of the quota.
        self._http = self._new_client(
            SlidingWindow(self._share(self.calls_per_window), WINDOW_S, clock=self.clock,
                          sleep=sleep), sleep)
        # The token endpoint has its own limit (10 a minute, none concurrent): its own
        # limiter, and one TokenBox that never fetches twice at once.
        self._token_http = self._new_client(
            SlidingWindow(self._share(TOKEN_CALLS_PER_MINUTE), 60.0, clock=self.clock,
                          sleep=sleep), sleep)
        self._token = TokenBox(self._fetch_token, clock=self.clock, margin_s=TOKEN_MARGIN_S)
        try:
            self._token.get()
            if self._adopt_run_id() is not None:
                self._load_maps()
                leads = self._describe(LEADS)
                if leads.missing:
                    raise UserError(refusal(LEADS, leads.missing))
                self._plans[LEADS] = leads
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        if self._token_http is not None:
            self._token_http.close()
            self._token_http = None

    def platform_version(self) -> str | None:
        return "Fxiaoke open API (CRM v2)" if self._token is not None else None

    def keyspace(self) -> Keyspace:
        """The run's accounts; seeds them first when preflight allowed it and none exist."""
        if not self._maps:
            if self._adopt_run_id() is None:
                raise UserError(
                    "the fxiaoke adapter maps harness ids onto the records of one run; it "
                    "needs a run id (the harness passes it, or set CRMBENCH_RUN_ID)"
                )
            self._load_maps()
        if not self._maps.get(ACCOUNTS) and self._seed_due:
            self._seed()
        customers = len(self._maps.get(ACCOUNTS, IdMap([])))
        if customers == 0:
            raise UserError(
                f"no Fxiaoke accounts are named {self._prefix()}...; the harness seeds them "
                "once preflight has allowed the run (crmbench run)"
            )
        return self.keyspace_of(customers, 0)

    # ------------------------------------------------------------------ HTTP

    def _fetch_token(self) -> tuple[Secret, float | None]:
        creds, client = self._creds, self._token_http
        if creds is None or client is None:
            raise RuntimeError("FxiaokeAdapter fetched a token before open() or after close()")
        resp = client.setup(
            "POST", f"https://{self.host}{TOKEN_PATH}", limit_key=TOKEN_PATH,
            json={"appId": creds["app_id"].reveal(), "appSecret": creds["app_secret"].reveal(),
                  "permanentCode": creds["permanent_code"].reveal()},
        )
        body = json_or_empty(resp)
        if resp.status_code != 200 or error_code(body) != 0 or not body.get("corpAccessToken"):
            message = body.get("errorMessage") if isinstance(body, dict) else None
            raise UserError(
                f"Fxiaoke at {self.host} refused the app credentials (HTTP {resp.status_code}, "
                f"errorCode {error_code(body)}: {redact(str(message))[:200]}, thirdTraceId "
                f"{trace_id(resp)}); check FXIAOKE_APP_ID, FXIAOKE_APP_SECRET and "
                "FXIAOKE_PERMANENT_CODE, the app's development mode and its IP allow-list, "
                f"and that nothing else called the token endpoint more than "
                f"{TOKEN_CALLS_PER_MINUTE} times in the last minute"
            )
        self._corp_id = str(body.get("corpId", ""))
        ttl = float(body.get("expiresIn") or 7200)
        return Secret(str(body["corpAccessToken"])), ttl

    def _body(self, token: Secret, data: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        if self._creds is None:
            raise RuntimeError("FxiaokeAdapter used before open()")
        return {"corpAccessToken": token.reveal(), "corpId": self._corp_id,
                "currentOpenUserId": self._creds["open_user_id"].reveal(),
                "data": data, **top}

    def _call(self, path: str, data: dict[str, Any], *, setup: bool,
              **top: Any) -> httpx.Response:
        """One CRM call. Setup calls fetch a new token on errorCode 20016 and repeat once;
        timed calls are sent once with the cached token (TokenUnavailable without one) and
        leave a refused token to a background refresh."""
        box = self._token
        if box is None:
            raise RuntimeError("FxiaokeAdapter used before open()")
        url = f"https://{self.host}{path}"
        client = self._client()
        if not setup:
            token = box.peek()
            resp = client.send("POST", url, limit_key=path, json=self._body(token, data, top))
            if error_code(json_or_empty(resp)) == TOKEN_EXPIRED:
                box.refresh_later(token)
            return resp
        token = box.get()
        resp = client.setup("POST", url, limit_key=path, json=self._body(token, data, top))
        if error_code(json_or_empty(resp)) == TOKEN_EXPIRED:
            log.debug("Fxiaoke token expired; fetching a new one")
            token = box.refresh(token)
            resp = client.setup("POST", url, limit_key=path, json=self._body(token, data, top))
        return resp

    def _expect(self, path: str, data: dict[str, Any], **top: Any) -> dict[str, Any]:
        resp = self._call(path, data, setup=True, **top)
        body = json_or_empty(resp)
        if fx_status(resp) is not Status.ok or not isinstance(body, dict):
            message = body.get("errorMessage") if isinstance(body, dict) else None
            raise UserError(
                f"Fxiaoke {path} failed: HTTP {resp.status_code}, errorCode "
                f"{error_code(body)}: {redact(str(message))[:200]} (traceId "
                f"{body.get('traceId') if isinstance(body, dict) else None}, thirdTraceId "
                f"{trace_id(resp)})"
            )
        return body

    def _describe(self, api_name: str) -> RecordPlan:
        """How records of ``api_name`` fill the fields the tenant requires (object/describe).

        ``includeDetail`` is placed both at the top and in ``data``: the documentation's
        parameter table and its example disagree on where it goes."""
        body = self._expect(DESCRIBE, {"apiName": api_name, "includeDetail": False},
                            includeDetail=False)
        open_user = self._creds["open_user_id"].reveal() if self._creds else ""
        return record_plan(api_name, parse_fields(api_name, body), open_user)

    def _prefix(self) -> str:
        self._tag()
        return tag_prefix(str(self.run_id))

    def _tagged_ids(self, api_name: str, run_id: str) -> list[str]:
        """Ids of the records of run ``run_id`` (names starting with its tag and the
        separator, each name checked again), paged by _id (no offset cap)."""
        ids: list[str] = []
        last: str | None = None
        while True:
            filters = [name_filter(tag_prefix(run_id))]
            if last is not None:
                filters.append({"field_name": "_id", "field_values": [last], "operator": "GT"})
            rows = rows_of(self._expect(QUERY, query_data(
                api_name, filters, PAGE, [{"fieldName": "_id", "isAsc": True}])))
            ids += [str(r["_id"]) for r in rows if is_tagged(r.get("name"), run_id)]
            if len(rows) < PAGE:
                return ids
            last = str(rows[-1]["_id"])

    def _load_maps(self) -> None:
        self._tag()
        self._maps = {ACCOUNTS: IdMap(self._tagged_ids(ACCOUNTS, str(self.run_id)))}

    def _seed(self) -> None:
        """Create the accounts preflight allowed, named like the harness's customers."""
        plan = self._plans[ACCOUNTS]
        tag = self._tag()
        for i in range(1, self._seed_due + 1):
            self._expect(CREATE, {"object_data": plan.record({"name": seed_name(tag, i)})},
                         **_CREATE_OPTIONS)
        self._seed_due = 0
        self._load_maps()

    # ------------------------------------------------------------------ verbs

    def get_customer(self, customer_id: Key) -> Status:
        def call() -> Status:
            rid = self._maps.get(ACCOUNTS, IdMap([])).get(customer_id)
            if rid is None:
                return Status.not_found
            return fx_status(self._call(
                GET, {"dataObjectApiName": ACCOUNTS, "objectDataId": rid}, setup=False))
        return self._verb(call)

    def search_customers(self, query: SearchQuery) -> Status:
        if query.name_prefix is None or query.tag is not None or query.region_id is not None \
                or query.tier is not None:
            return Status.unsupported

        def call() -> Status:
            prefix = f"{self._prefix()}{query.name_prefix}"
            return fx_status(self._call(QUERY, query_data(
                ACCOUNTS, [name_filter(prefix)], min(max(query.limit, 1), PAGE)),
                setup=False))
        return self._verb(call)

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        def call() -> Status:
            return fx_status(self._call(QUERY, query_data(
                LEADS, [name_filter(self._prefix())], min(max(limit, 1), PAGE),
                [{"fieldName": "create_time", "isAsc": False}]), setup=False))
        return self._verb(call)

    def create_lead(self, lead: LeadInput) -> Status:
        plan = self._plans.get(LEADS)
        if plan is None:
            raise RuntimeError("FxiaokeAdapter.create_lead before open() with a run id")

        def call() -> Status:
            record = plan.record({
                "name": f"{self._prefix()}{lead.contact_name} / {lead.company_name}",
                "company": lead.company_name, "email": lead.email})
            return fx_status(self._call(CREATE, {"object_data": record}, setup=False,
                                        **_CREATE_OPTIONS))
        return self._verb(call)

    # ------------------------------------------------------------------ guarded

    def quotas(self) -> list[Quota]:
        """The documented limits (:func:`bench.adapters.saas.fxiaoke_limits.quotas`)."""
        return quotas(self.calls_per_window, self.daily_calls)

    def target_facts(self) -> dict[str, Any]:
        """What ``crmbench doctor`` can tell without touching data."""
        daily = (f"{self.daily_calls:,} calls (given)" if self.daily_calls else
                 "not reported by the open API; one 100,000-call pack assumed")
        return {"token": "obtained", "calls_per_20s_per_interface": self.calls_per_window,
                "daily_quota": daily, "third_trace_id": "a new UUID v4 on every request"}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Require explicit permission (no sandbox flag is exposed), plan the rate, and
        check that the run can fill every field the tenant requires. Reads only: the
        accounts it allows are seeded by the first ``keyspace()``."""
        self.run_id = check_run_id(plan.run_id)
        if not plan.allow_production:
            raise UserError(
                "the Fxiaoke open API does not say whether a tenant is a test tenant, so "
                "every tenant counts as production; a run creates and deletes records named "
                f"{tag_prefix(plan.run_id)}... Allow production explicitly to run against it"
            )
        rate = self.rate_plan(plan)
        self.open()
        plans = {api: self._describe(api) for api in (ACCOUNTS, LEADS)}
        gaps = [refusal(api, p.missing) for api, p in plans.items() if p.missing]
        if gaps:
            raise UserError(" ".join(gaps))
        self._plans.update(plans)
        self._load_maps()
        existing = len(self._maps[ACCOUNTS])
        self._seed_due = 0 if existing else self.customers
        per_s = self.calls_per_window / WINDOW_S
        return {
            "fixture": {"customers": existing, "to_seed": self._seed_due,
                        "requested": self.customers, "reused": bool(existing),
                        "tag": run_tag(plan.run_id)},
            "fields": {api: sorted(p.fixed) for api, p in plans.items()},
            "rate_plan": rate.to_json(),
            "api": {"scenario": plan.estimated_calls, "seed": self._seed_due,
                    "daily_quota": self.target_facts()["daily_quota"],
                    "estimated_seed_s": math.ceil(self._seed_due / per_s)},
            "production_check": "not possible through the open API; allowed explicitly",
        }

    def cleanup(self, run_id: str) -> int:
        """Invalidate, then delete, every lead and account of run ``run_id``."""
        check_run_id(run_id)
        self.open()
        deleted = 0
        for api_name in (LEADS, ACCOUNTS):
            ids = self._tagged_ids(api_name, run_id)
            for rid in ids:
                # Deletion works only on invalidated records, and invalid takes one id.
                self._expect(INVALID, {"dataObjectApiName": api_name, "object_data_id": rid})
            for start in range(0, len(ids), PAGE):
                chunk = ids[start:start + PAGE]
                self._expect(DELETE, {"dataObjectApiName": api_name, "idList": chunk})
                deleted += len(chunk)
        if run_id == self.run_id:
            self._maps = {}
        return deleted
