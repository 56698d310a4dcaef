"""Adapter of Fxiaoke (ShareCRM) through its open API: ``fxiaoke://open.fxiaoke.com``.

Tenants on other clouds use their own host (``fxiaoke://open-hwcloud.fxiaoke.com``).
Query parameters: ``customers`` (accounts to seed, default 200), ``calls_per_20s`` (the
client-side limit per endpoint, default 100) and ``run_id``.

Authentication: POST /cgi/corpAccessToken/get/V2 with appId, appSecret and permanentCode
returns corpAccessToken, corpId and expiresIn (7200 s; the same token comes back for the
first 6600 s). Every CRM call is a POST whose body carries corpAccessToken, corpId and
currentOpenUserId (the employee the calls act as) beside ``data``. Errors come back as
HTTP 200 with a non-zero errorCode: 20016 (token missing or expired) fetches a new token
once and repeats the call; 30004 and 14001 (call frequency exceeded) are throttling.

Sources: developer.fxiaoke.com/openapi_v2 and the open.fxiaoke.com wiki, as digested in the
public repository fxp/skillify (skills/fxiaoke/references, fetched 2026-09-11, marked there
as not verified with real credentials). The frequency limit found there is 100 calls per
20 s per endpoint; some sources say 60, so the limit is a parameter. The limiter counts
per process: with N load-generator processes, pass calls_per_20s divided by N.

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
    status_for_http,
)
from bench.adapters.saas.common import (
    DEFAULT_CUSTOMERS,
    IdMap,
    VendorAdapter,
    capability_table,
    check_run_id,
    int_field,
    json_or_empty,
    parse_target,
    positive_int,
    run_tag,
    seed_name,
)
from bench.adapters.saas.fxiaoke_fields import RecordPlan, parse_fields, record_plan, refusal
from bench.adapters.saas.http import (
    Credentials,
    Secret,
    SlidingWindow,
    TokenBox,
    VendorClient,
    redact,
)
from bench.errors import TargetUnreachable, UserError

ENV = {
    "app_id": "FXIAOKE_APP_ID",
    "app_secret": "FXIAOKE_APP_SECRET",
    "permanent_code": "FXIAOKE_PERMANENT_CODE",
    "open_user_id": "FXIAOKE_OPEN_USER_ID",
}
TOKEN_PATH = "/cgi/corpAccessToken/get/V2"
QUERY = "/cgi/crm/v2/data/query"
GET = "/cgi/crm/v2/data/get"
CREATE = "/cgi/crm/v2/data/create"
INVALID = "/cgi/crm/v2/data/invalid"
DELETE = "/cgi/crm/v2/data/delete"
DESCRIBE = "/cgi/crm/v2/object/describe"
TRACE_PARAM = "thirdTraceId"
TOKEN_EXPIRED = 20016
THROTTLED = frozenset({30004, 14001})
DAILY_QUOTA = frozenset({30002})
BUSY = frozenset({-1, -2, 50009})
# data/query returns at most 100 rows; offset is capped at 10,000, so ids page by _id.
PAGE = 100
WINDOW_S = 20.0
CALLS_PER_WINDOW = 100
_ALLOWED = ("customers", "calls_per_20s", "run_id")

log = logging.getLogger("crmbench.vendor.fxiaoke")

_SOURCE = "developer.fxiaoke.com openapi_v2 as digested in fxp/skillify"


def error_code(body: Any) -> int | None:
    return int_field(body, "errorCode")


def fx_status(resp: httpx.Response) -> Status:
    """Status of an open-API response: HTTP first, then the body's errorCode."""
    if resp.status_code != 200:
        return status_for_http(resp.status_code)
    code = error_code(json_or_empty(resp))
    if code == 0:
        return Status.ok
    if code in THROTTLED or code in DAILY_QUOTA:
        return Status.rate_limited
    if code is None or code in BUSY:
        return Status.error
    return Status.rejected


def rows_of(body: Any) -> list[dict[str, Any]]:
    """The rows of a data/query answer: data.dataList (a single record map also occurs)."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict) and isinstance(data.get("dataList"), list):
        return [r for r in data["dataList"] if isinstance(r, dict)]
    if isinstance(data, dict) and "_id" in data:
        return [data]
    return []


def _throttled(resp: httpx.Response) -> bool:
    code = error_code(json_or_empty(resp))
    return code in THROTTLED or code in BUSY


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
                           "search, lead list, lead creation; 360, activities, stage changes "
                           "and updates return unsupported (tenant-specific field apiNames)"),
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
                 **kw: Any) -> None:
        super().__init__(host, **kw)
        self.calls_per_window = calls_per_window
        self._creds: Credentials | None = None
        self._token: TokenBox | None = None
        self._corp_id: str | None = None
        self._maps: dict[str, IdMap] = {}
        self._plans: dict[str, RecordPlan] = {}

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
        return cls(host, customers=customers, calls_per_window=calls,
                   run_id=run_id or params.get("run_id"), environ=env)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Fetch a corpAccessToken; with a run id, load its id maps and how leads are filled."""
        if self._http is not None:
            return
        creds = self.read_credentials()
        if not creds.complete:
            raise TargetUnreachable(f"no credentials: {creds.hint()}")
        self._creds = creds
        sleep = self._sleep_fn()
        self._http = VendorClient(
            "Fxiaoke", transport=self.transport, throttled=_throttled, sleep=sleep,
            pool_size=self.pool_size,
            limiter=SlidingWindow(self.calls_per_window, WINDOW_S, clock=self.clock,
                                  sleep=sleep),
        )
        self._http.client.event_hooks = {"request": [stamp_trace_id], "response": []}
        # The token endpoint allows 10 calls a minute and no concurrent calls: one box.
        self._token = TokenBox(self._fetch_token, clock=self.clock, margin_s=600.0)
        try:
            self._token.get()
            if self._adopt_run_id() is not None:
                self._load_maps()
                self._plans["LeadsObj"] = self._describe("LeadsObj")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        self._token = None

    def platform_version(self) -> str | None:
        return "Fxiaoke open API (CRM v2)" if self._token is not None else None

    def keyspace(self) -> Keyspace:
        if not self._maps:
            if self._adopt_run_id() is None:
                raise UserError(
                    "the fxiaoke adapter maps harness ids onto the records of one run; it "
                    "needs a run id (the harness passes it, or set CRMBENCH_RUN_ID)"
                )
            self._load_maps()
        customers = len(self._maps.get("AccountObj", IdMap([])))
        if customers == 0:
            raise UserError(
                f"no Fxiaoke accounts are named {self._tag()}...; the harness seeds them in "
                "preflight (crmbench run)"
            )
        return self.keyspace_of(customers, 0)

    # ------------------------------------------------------------------ HTTP

    def _fetch_token(self) -> tuple[Secret, float | None]:
        creds = self._creds
        if creds is None:
            raise RuntimeError("credentials not loaded")
        resp = self._client().setup(
            "POST", f"https://{self.host}{TOKEN_PATH}", limit_key=TOKEN_PATH,
            json={"appId": creds["app_id"].reveal(), "appSecret": creds["app_secret"].reveal(),
                  "permanentCode": creds["permanent_code"].reveal()},
        )
        body = json_or_empty(resp)
        if resp.status_code != 200 or error_code(body) != 0 or not body.get("corpAccessToken"):
            message = body.get("errorMessage") if isinstance(body, dict) else None
            raise UserError(
                f"Fxiaoke at {self.host} refused the app credentials (HTTP {resp.status_code}, "
                f"errorCode {error_code(body)}: {redact(str(message))[:200]}); check "
                "FXIAOKE_APP_ID, FXIAOKE_APP_SECRET and FXIAOKE_PERMANENT_CODE, the app's "
                "development mode and its IP allow-list"
            )
        self._corp_id = str(body.get("corpId", ""))
        ttl = float(body.get("expiresIn") or 7200)
        return Secret(str(body["corpAccessToken"])), ttl

    def _call(self, path: str, data: dict[str, Any], *, setup: bool,
              **top: Any) -> httpx.Response:
        """One CRM call; errorCode 20016 fetches a new token once and repeats it."""
        if self._token is None or self._creds is None:
            raise RuntimeError("FxiaokeAdapter used before open()")
        client = self._client()
        send = client.setup if setup else client.send
        token = self._token.get()
        for attempt in (0, 1):
            body = {"corpAccessToken": token.reveal(), "corpId": self._corp_id,
                    "currentOpenUserId": self._creds["open_user_id"].reveal(),
                    "data": data, **top}
            resp = send("POST", f"https://{self.host}{path}", limit_key=path, json=body)
            if attempt == 0 and error_code(json_or_empty(resp)) == TOKEN_EXPIRED:
                log.debug("Fxiaoke token expired; fetching a new one")
                token = self._token.refresh(token)
                continue
            return resp
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

    def _tagged_ids(self, api_name: str, tag: str) -> list[str]:
        """Ids of records whose name starts with ``tag``, paged by _id (no offset cap)."""
        ids: list[str] = []
        while True:
            filters = [name_filter(tag)]
            if ids:
                filters.append({"field_name": "_id", "field_values": [ids[-1]],
                                "operator": "GT"})
            rows = rows_of(self._expect(QUERY, query_data(
                api_name, filters, PAGE, [{"fieldName": "_id", "isAsc": True}])))
            ids += [str(r["_id"]) for r in rows]
            if len(rows) < PAGE:
                return ids

    def _load_maps(self) -> None:
        self._maps = {"AccountObj": IdMap(self._tagged_ids("AccountObj", self._tag()))}

    # ------------------------------------------------------------------ verbs

    def get_customer(self, customer_id: Key) -> Status:
        def call() -> Status:
            rid = self._maps.get("AccountObj", IdMap([])).get(customer_id)
            if rid is None:
                return Status.not_found
            return fx_status(self._call(
                GET, {"dataObjectApiName": "AccountObj", "objectDataId": rid}, setup=False))
        return self._verb(call)


    def search_customers(self, query: SearchQuery) -> Status:
        if query.name_prefix is None or query.tag is not None or query.region_id is not None \
                or query.tier is not None:
            return Status.unsupported

        def call() -> Status:
            prefix = f"{self._tag()} {query.name_prefix}"
            return fx_status(self._call(QUERY, query_data(
                "AccountObj", [name_filter(prefix)], min(max(query.limit, 1), PAGE)),
                setup=False))
        return self._verb(call)

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        def call() -> Status:
            return fx_status(self._call(QUERY, query_data(
                "LeadsObj", [name_filter(self._tag())], min(max(limit, 1), PAGE),
                [{"fieldName": "create_time", "isAsc": False}]), setup=False))
        return self._verb(call)

    def create_lead(self, lead: LeadInput) -> Status:
        plan = self._plans.get("LeadsObj")
        if plan is None:
            raise RuntimeError("FxiaokeAdapter.create_lead before open() with a run id")

        def call() -> Status:
            record = plan.record({
                "name": f"{self._tag()} {lead.contact_name} / {lead.company_name}",
                "company": lead.company_name, "email": lead.email})
            return fx_status(self._call(
                CREATE, {"object_data": record}, setup=False,
                triggerApprovalFlow=False, triggerWorkFlow=False,
            ))
        return self._verb(call)

    # ------------------------------------------------------------------ guarded

    def target_facts(self) -> dict[str, Any]:
        """What ``crmbench doctor`` can tell without touching data."""
        return {"token": "obtained", "calls_per_20s_per_endpoint": self.calls_per_window,
                "daily_quota": "not reported by the open API"}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Require explicit permission (no sandbox flag is exposed), check that the run can
        fill every field the tenant requires, then seed the fixture."""
        self.run_id = check_run_id(plan.run_id)
        if not plan.allow_production:
            raise UserError(
                "the Fxiaoke open API does not say whether a tenant is a test tenant, so "
                "every tenant counts as production; a run creates and deletes records named "
                f"{run_tag(plan.run_id)}... Allow production explicitly to run against it"
            )
        self.open()
        plans = {api: self._describe(api) for api in ("AccountObj", "LeadsObj")}
        gaps = [refusal(api, p.missing) for api, p in plans.items() if p.missing]
        if gaps:
            raise UserError(" ".join(gaps))
        self._plans.update(plans)
        tag = run_tag(plan.run_id)
        existing = len(self._tagged_ids("AccountObj", tag))
        to_seed = 0 if existing else self.customers
        for i in range(1, to_seed + 1):
            self._expect(CREATE, {"object_data": plans["AccountObj"].record(
                {"name": seed_name(tag, i)})},
                triggerApprovalFlow=False, triggerWorkFlow=False)
        self._load_maps()
        per_s = self.calls_per_window / WINDOW_S
        return {
            "fixture": {"customers": len(self._maps["AccountObj"]), "opportunities": 0,
                        "requested": self.customers, "reused": bool(existing), "tag": tag},
            "fields": {api: sorted(p.fixed) for api, p in plans.items()},
            "rate_limit": {"calls_per_20s": self.calls_per_window,
                           "scope": "per endpoint, per load-generator process",
                           "scenario_rate_ceiling_per_endpoint": per_s},
            "api": {"scenario": plan.estimated_calls, "seed": to_seed,
                    "daily_quota": "not reported by the open API",
                    "estimated_seed_s": math.ceil(to_seed / per_s)},
            "production_check": "not possible through the open API; allowed explicitly",
        }

    def cleanup(self, run_id: str) -> int:
        """Invalidate, then delete, every lead and account named with the run's tag."""
        tag = run_tag(run_id)
        self.open()
        deleted = 0
        for api_name in ("LeadsObj", "AccountObj"):
            ids = self._tagged_ids(api_name, tag)
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
