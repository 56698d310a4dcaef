"""Adapters of EC (WorkEC, ``ec://open.workec.com``) and of its WeCom side (``wecom://``).

EC open API v2 signs every request instead of using a token: headers ``X-Ec-Cid`` (the
corp id), ``X-Ec-TimeStamp`` (milliseconds) and ``X-Ec-Sign``, the upper-case hex MD5 of
``appId=<appId>&appSecret=<appSecret>&timeStamp=<timeStamp>``. EC's own documentation
(open.workec.com/newdoc) could not be read here; the scheme is the one public clients
implement identically (zhoufuyang/ec-open-api SignUtil; several integration scripts), and
the v1 token endpoint /auth/accesstoken is not needed for v2. Answers are
``{"code": 200, "msg", "data"}``; EC's throttling code is not documented in that material,
so only HTTP 429/503 count as rate limiting.

Measured on EC: customer read (/v2/customer/queryList by crmIds), customer 360 (queryList
and /v2/contactbook/list), name search, lead creation (/v2/customer/addCustomer; EC keeps
leads as customers) and customer update (/v2/customer/updateCustomer, written to the memo
field: EC has no employee-count or consent field). No deletion endpoint was found (only
/v2/customer/change/abandon to the public pool), so ``cleanup`` cannot remove what a run
created and says so; preflight therefore requires explicit permission.

WeCom (``wecom://qyapi.weixin.qq.com``): GET /cgi-bin/gettoken?corpid&corpsecret returns
access_token (expires_in 7200); errcode 42001 (expired) or 40014 (invalid) fetch a new
token once. The adapter reads external contacts (the customers of WeCom CRM) and writes
nothing: contacts are added by WeChat users, not by the API, and remark edits would change
real customer relationships that cannot be tagged for cleanup.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from bench.adapters.base import (
    Capability,
    CustomerChanges,
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
from bench.adapters.saas.http import (
    Credentials,
    Secret,
    TokenBox,
    VendorClient,
    redact,
)
from bench.errors import TargetUnreachable, UserError

EC_ENV = {
    "corp_id": "EC_CORP_ID",
    "app_id": "EC_APP_ID",
    "app_secret": "EC_APP_SECRET",
    "user_id": "EC_USER_ID",
}
WECOM_ENV = {"corp_id": "WECOM_CORP_ID", "secret": "WECOM_SECRET"}
QUERY_LIST = "/v2/customer/queryList"
ADD = "/v2/customer/addCustomer"
UPDATE = "/v2/customer/updateCustomer"
CONTACTS = "/v2/contactbook/list"
STAGES = "/v2/config/getStages"
# queryList: pageSize at most 200, pageNo at most 50, so at most 10,000 records.
PAGE = 200
MAX_PAGES = 50
# The batch size of addCustomer is not documented in the material found; stay small.
ADD_BATCH = 50
# Public notes on queryList mention about 10 s before changes become visible.
VISIBILITY_POLLS = 6
VISIBILITY_WAIT_S = 5.0
_EC_ALLOWED = ("customers", "run_id")
_WECOM_ALLOWED = ("customers",)

log = logging.getLogger("crmbench.vendor.ec")

_EC_SOURCE = ("EC open API v2 as used by public clients (zhoufuyang/ec-open-api); EC's own "
              "documentation was not readable here")
_WECOM_SOURCE = "WeCom server API documentation (developer.work.weixin.qq.com)"


def ec_sign(app_id: str, app_secret: str, timestamp_ms: int) -> str:
    """X-Ec-Sign: upper-case hex MD5 of appId=..&appSecret=..&timeStamp=.."""
    raw = f"appId={app_id}&appSecret={app_secret}&timeStamp={timestamp_ms}"
    return hashlib.md5(raw.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


def ec_code(body: Any) -> int | None:
    return int_field(body, "code")


def ec_status(resp: httpx.Response) -> Status:
    if resp.status_code != 200:
        return status_for_http(resp.status_code)
    code = ec_code(json_or_empty(resp))
    if code == 200:
        return Status.ok
    return Status.error if code is None else Status.rejected


def customers_of(body: Any) -> list[dict[str, Any]]:
    data = body.get("data") if isinstance(body, dict) else None
    rows = data.get("customerInfoList") if isinstance(data, dict) else None
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


class ECAdapter(VendorAdapter):
    """Adapter of ``ec://open.workec.com``: EC open API v2 with signed headers."""

    name: ClassVar[str] = "ec"
    platform: ClassVar[str] = "ec"
    label: ClassVar[str] = "EC"
    credential_section: ClassVar[str] = "ec"
    credential_env: ClassVar[dict[str, str]] = EC_ENV
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {
            "crud.mixed": ("supported",
                           "customer APIs /v2/customer/{queryList,addCustomer,updateCustomer} "
                           f"and /v2/contactbook/list ({_EC_SOURCE}); lead lists, activities "
                           "and opportunity stages return unsupported (no matching API found)"),
            "cdp.event_delay": ("not-measurable",
                                "EC depends on WeChat-side callbacks (vendor claims file); WeCom "
                                "pushes change_external_contact events only to a registered "
                                "public callback URL, for edits made by members "
                                f"({_WECOM_SOURCE}, document 92277); whether API edits raise "
                                "them is not documented, and the harness runs no callback "
                                "endpoint, so the delay cannot be triggered or observed"),
            "agent.latency": ("not-measurable", f"no agent API found ({_EC_SOURCE})"),
            "workflow.max_nodes": ("not-measurable",
                                   "the claimed 50 is a WeCom approval-flow limit; no API to "
                                   f"deploy or run flows was found ({_EC_SOURCE})"),
            "sla.granularity": ("not-measurable", f"no SLA API found ({_EC_SOURCE})"),
            "pack.enable_time": ("not-measurable",
                                 "no pack exists (vendor claims file: custom development)"),
        },
        rest=("unknown", f"not documented in the material consulted ({_EC_SOURCE})"),
    )

    def __init__(
        self, host: str, *, wall_clock: Callable[[], float] = time.time, **kw: Any
    ) -> None:
        super().__init__(host, **kw)
        self.wall_clock = wall_clock
        self._creds: Credentials | None = None
        self._maps: dict[str, IdMap] = {}

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> ECAdapter:
        host, params = parse_target(url, "ec", _EC_ALLOWED)
        customers = (positive_int("customers", params["customers"], "ec", PAGE * MAX_PAGES)
                     if "customers" in params else DEFAULT_CUSTOMERS)
        return cls(host, customers=customers, run_id=run_id or params.get("run_id"), environ=env)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Check that a signed request is accepted; load the run's id map if tagged."""
        if self._http is not None:
            return
        creds = self.read_credentials()
        if not creds.complete:
            raise TargetUnreachable(f"no credentials: {creds.hint()}")
        self._creds = creds
        self._http = VendorClient("EC", transport=self.transport, sleep=self._sleep_fn(),
                                  pool_size=self.pool_size)
        try:
            self._expect("GET", STAGES)
            if self._adopt_run_id() is not None:
                self._load_maps()
        except BaseException:
            self.close()
            raise

    def platform_version(self) -> str | None:
        return "EC open API v2" if self._http is not None else None

    def keyspace(self) -> Keyspace:
        if not self._maps:
            if self._adopt_run_id() is None:
                raise UserError(
                    "the ec adapter maps harness ids onto the customers of one run; it needs "
                    "a run id (the harness passes it, or set CRMBENCH_RUN_ID)"
                )
            self._load_maps()
        customers = len(self._maps.get("customer", IdMap([])))
        if customers == 0:
            raise UserError(
                f"no EC customers are named {self._tag()}...; the harness seeds them in "
                "preflight (crmbench run)"
            )
        return self.keyspace_of(customers, 0)

    # ------------------------------------------------------------------ HTTP

    def _headers(self) -> dict[str, str]:
        creds = self._creds
        if creds is None:
            raise RuntimeError("ECAdapter used before open()")
        stamp = int(self.wall_clock() * 1000)
        return {
            "X-Ec-Cid": creds["corp_id"].reveal(),
            "X-Ec-TimeStamp": str(stamp),
            "X-Ec-Sign": ec_sign(creds["app_id"].reveal(), creds["app_secret"].reveal(), stamp),
        }

    def _user(self) -> int | str:
        if self._creds is None:
            raise RuntimeError("ECAdapter used before open()")
        raw = self._creds["user_id"].reveal()
        return int(raw) if raw.isdigit() else raw

    def _call(self, method: str, path: str, *, setup: bool, **kw: Any) -> httpx.Response:
        client = self._client()
        send = client.setup if setup else client.send
        return send(method, f"https://{self.host}{path}", headers=self._headers(), **kw)

    def _expect(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self._call(method, path, setup=True, **kw)
        body = json_or_empty(resp)
        if ec_status(resp) is not Status.ok or not isinstance(body, dict):
            message = body.get("msg") if isinstance(body, dict) else None
            raise UserError(
                f"EC at {self.host} refused {path}: HTTP {resp.status_code}, code "
                f"{ec_code(body)}: {redact(str(message))[:200]}; check EC_CORP_ID, EC_APP_ID, "
                "EC_APP_SECRET and the app's API permissions"
            )
        return body

    def _tagged_ids(self, tag: str) -> list[str]:
        ids: set[str] = set()
        for page in range(1, MAX_PAGES + 1):
            body = self._expect("POST", QUERY_LIST,
                                json={"name": tag, "pageNo": page, "pageSize": PAGE})
            rows = customers_of(body)
            # The name match may be fuzzy: keep only names that start with the tag.
            ids |= {str(r["crmId"]) for r in rows
                    if str(r.get("name", "")).startswith(tag) and "crmId" in r}
            info = (body.get("data") or {}).get("pageInfo") or {}
            if len(rows) < PAGE or page >= int(info.get("maxPageNo") or page):
                break
        return sorted(ids, key=lambda s: (len(s), s))

    def _load_maps(self) -> None:
        self._maps = {"customer": IdMap(self._tagged_ids(self._tag()))}

    def _crm_id(self, customer_id: Key) -> int | None:
        rid = self._maps.get("customer", IdMap([])).get(customer_id)
        return int(rid) if rid is not None and rid.isdigit() else None

    # ------------------------------------------------------------------ verbs

    def _read(self, crm_id: int, *, setup: bool = False) -> Status:
        resp = self._call("POST", QUERY_LIST, setup=setup,
                          json={"crmIds": [crm_id], "pageNo": 1, "pageSize": 1})
        status = ec_status(resp)
        if status is Status.ok and not customers_of(resp.json()):
            return Status.not_found
        return status

    def get_customer(self, customer_id: Key) -> Status:
        def call() -> Status:
            crm_id = self._crm_id(customer_id)
            return Status.not_found if crm_id is None else self._read(crm_id)
        return self._verb(call)

    def customer_360(self, customer_id: Key) -> Status:
        def call() -> Status:
            crm_id = self._crm_id(customer_id)
            if crm_id is None:
                return Status.not_found
            status = self._read(crm_id)
            if status is not Status.ok:
                return status
            return ec_status(self._call("POST", CONTACTS, setup=False,
                                        json={"crmId": crm_id, "optUserId": self._user()}))
        return self._verb(call)

    def search_customers(self, query: SearchQuery) -> Status:
        if query.name_prefix is None or query.tag is not None or query.region_id is not None \
                or query.tier is not None:
            return Status.unsupported

        def call() -> Status:
            return ec_status(self._call("POST", QUERY_LIST, setup=False, json={
                "name": f"{self._tag()} {query.name_prefix}", "pageNo": 1,
                "pageSize": min(max(query.limit, 1), PAGE)}))
        return self._verb(call)


    def create_lead(self, lead: LeadInput) -> Status:
        def call() -> Status:
            resp = self._call("POST", ADD, setup=False, json={
                "optUserId": self._user(),
                "list": [{"name": f"{self._tag()} {lead.contact_name}"[:100],
                          "company": lead.company_name, "followUserId": self._user(),
                          "memo": f"crmbench lead; source {lead.source}; region "
                                  f"{lead.region_id}"}],
            })
            status = ec_status(resp)
            data = resp.json().get("data") if status is Status.ok else None
            if isinstance(data, dict) and data.get("failureList"):
                return Status.rejected
            return status
        return self._verb(call)



    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        def call() -> Status:
            crm_id = self._crm_id(customer_id)
            if crm_id is None:
                return Status.not_found
            fields = sorted(changes.as_dict().items())
            memo = "crmbench update: " + ", ".join(f"{k}={v}" for k, v in fields)
            return ec_status(self._call("POST", UPDATE, setup=False, json={
                "optUserId": self._user(), "crmId": crm_id, "memo": memo[:500]}))
        return self._verb(call)

    # ------------------------------------------------------------------ guarded

    def target_facts(self) -> dict[str, Any]:
        return {"signed_request": "accepted (/v2/config/getStages)",
                "deletion": "no customer deletion API found; run records stay"}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Require explicit permission; seed customers and wait until queryList sees them."""
        self.run_id = check_run_id(plan.run_id)
        tag = run_tag(plan.run_id)
        if not plan.allow_production:
            raise UserError(
                "EC exposes no test-corp flag and no customer deletion through its open API: "
                f"a run adds customers named {tag}... that must be deleted by hand in the EC "
                "console afterwards. Allow production explicitly to run against this corp"
            )
        self.open()
        existing = len(self._tagged_ids(tag))
        to_seed = 0 if existing else self.customers
        for start in range(1, to_seed + 1, ADD_BATCH):
            batch = range(start, min(to_seed, start + ADD_BATCH - 1) + 1)
            body = self._expect("POST", ADD, json={"optUserId": self._user(), "list": [
                {"name": seed_name(tag, i), "followUserId": self._user()} for i in batch]})
            failures = (body.get("data") or {}).get("failureList") or []
            if failures:
                raise UserError(
                    f"EC refused {len(failures)} seeded customers (first: "
                    f"{redact(str(failures[0]))[:200]})"
                )
        self._load_maps()
        for _ in range(VISIBILITY_POLLS if to_seed else 0):
            if len(self._maps["customer"]) >= to_seed:
                break
            self._sleep_fn()(VISIBILITY_WAIT_S)
            self._load_maps()
        return {
            "fixture": {"customers": len(self._maps["customer"]), "opportunities": 0,
                        "requested": self.customers, "reused": bool(existing), "tag": tag},
            "api": {"scenario": plan.estimated_calls,
                    "seed": -(-to_seed // ADD_BATCH),
                    "daily_quota": "not documented in the material found"},
            "cleanup": "not possible through the open API: delete customers named "
                       f"{tag}... in the EC console",
        }

    def cleanup(self, run_id: str) -> int:
        """EC documents no deletion: report what remains instead of pretending."""
        tag = run_tag(run_id)
        self.open()
        remaining = len(self._tagged_ids(tag))
        if remaining:
            raise UserError(
                f"EC's open API documents no customer deletion (only abandoning to the public "
                f"pool); {remaining} customers named {tag}... remain: delete them in the EC "
                "console"
            )
        return 0


# ------------------------------------------------------------------ WeCom

WECOM_TOKEN_EXPIRED = frozenset({42001, 40014})
WECOM_THROTTLED = frozenset({45009})
WECOM_BUSY = frozenset({-1})
# batch/get_by_user: at most 100 member ids and 100 contacts per request.
WECOM_BATCH = 100


def wecom_code(body: Any) -> int | None:
    return int_field(body, "errcode")


def wecom_status(resp: httpx.Response) -> Status:
    if resp.status_code != 200:
        return status_for_http(resp.status_code)
    code = wecom_code(json_or_empty(resp))
    if code == 0:
        return Status.ok
    if code in WECOM_THROTTLED:
        return Status.rate_limited
    if code is None or code in WECOM_BUSY:
        return Status.error
    return Status.rejected


def _wecom_throttled(resp: httpx.Response) -> bool:
    code = wecom_code(json_or_empty(resp))
    return code in WECOM_THROTTLED or code in WECOM_BUSY


class WeComAdapter(VendorAdapter):
    """Adapter of ``wecom://qyapi.weixin.qq.com``: WeCom external contacts, read only."""

    name: ClassVar[str] = "wecom"
    platform: ClassVar[str] = "ec"
    label: ClassVar[str] = "WeCom"
    credential_section: ClassVar[str] = "wecom"
    credential_env: ClassVar[dict[str, str]] = WECOM_ENV
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {
            "crud.mixed": ("supported",
                           "read only: /cgi-bin/externalcontact/get and batch/get_by_user "
                           f"({_WECOM_SOURCE}); external contacts are added by WeChat users, "
                           "not through the API, and remark edits would change real customer "
                           "relationships, so writes return unsupported"),
            "cdp.event_delay": ("not-measurable",
                                "change_external_contact events go to a registered public "
                                f"callback URL, for edits made by members ({_WECOM_SOURCE}, "
                                "document 92277); API edits are not documented to raise them "
                                "and the harness runs no callback endpoint"),
            "workflow.max_nodes": ("not-measurable",
                                   "approval flows are configured in the admin console; no "
                                   "API deploys them"),
        },
        rest=("unknown", f"not part of the external-contact API ({_WECOM_SOURCE})"),
    )

    def __init__(self, host: str, **kw: Any) -> None:
        super().__init__(host, **kw)
        self._creds: Credentials | None = None
        self._token: TokenBox | None = None
        self._maps: dict[str, IdMap] = {}

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> WeComAdapter:
        host, params = parse_target(url, "wecom", _WECOM_ALLOWED)
        customers = (positive_int("customers", params["customers"], "wecom")
                     if "customers" in params else 1000)
        return cls(host, customers=customers, run_id=run_id, environ=env)

    def open(self) -> None:
        """Fetch an access token and map harness ids onto existing external contacts."""
        if self._http is not None:
            return
        creds = self.read_credentials()
        if not creds.complete:
            raise TargetUnreachable(f"no credentials: {creds.hint()}")
        self._creds = creds
        self._http = VendorClient("WeCom", transport=self.transport, throttled=_wecom_throttled,
                                  sleep=self._sleep_fn(), pool_size=self.pool_size)
        self._token = TokenBox(self._fetch_token, clock=self.clock)
        try:
            self._token.get()
            self._maps = {"contact": IdMap(self._contact_ids())}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        self._token = None

    def platform_version(self) -> str | None:
        return "WeCom server API (external contacts)" if self._token is not None else None

    def keyspace(self) -> Keyspace:
        contacts = len(self._maps.get("contact", IdMap([])))
        if contacts == 0:
            raise UserError("the WeCom corp has no external contacts visible to this app")
        return self.keyspace_of(contacts, 0)

    def _fetch_token(self) -> tuple[Secret, float | None]:
        creds = self._creds
        if creds is None:
            raise RuntimeError("credentials not loaded")
        resp = self._client().setup(
            "GET", f"https://{self.host}/cgi-bin/gettoken",
            params={"corpid": creds["corp_id"].reveal(), "corpsecret": creds["secret"].reveal()},
        )
        body = json_or_empty(resp)
        if wecom_code(body) != 0 or not isinstance(body, dict) or not body.get("access_token"):
            message = body.get("errmsg") if isinstance(body, dict) else f"HTTP {resp.status_code}"
            raise UserError(
                f"WeCom at {self.host} refused gettoken (errcode {wecom_code(body)}: "
                f"{redact(str(message))[:200]}); check WECOM_CORP_ID and WECOM_SECRET (the "
                "secret of an app allowed to call the customer-contact API)"
            )
        return Secret(str(body["access_token"])), float(body.get("expires_in") or 7200)

    def _call(self, method: str, path: str, *, setup: bool, **kw: Any) -> httpx.Response:
        """One call with access_token; errcode 42001/40014 fetches a new token once."""
        if self._token is None:
            raise RuntimeError("WeComAdapter used before open()")
        client = self._client()
        send = client.setup if setup else client.send
        params = dict(kw.pop("params", {}))
        token = self._token.get()
        for attempt in (0, 1):
            params["access_token"] = token.reveal()
            resp = send(method, f"https://{self.host}{path}", params=params, **kw)
            if attempt == 0 and wecom_code(json_or_empty(resp)) in WECOM_TOKEN_EXPIRED:
                token = self._token.refresh(token)
                continue
            return resp
        return resp

    def _expect(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self._call(method, path, setup=True, **kw)
        body = json_or_empty(resp)
        if wecom_status(resp) is not Status.ok or not isinstance(body, dict):
            message = body.get("errmsg") if isinstance(body, dict) else None
            raise UserError(
                f"WeCom {path} failed: errcode {wecom_code(body)}: "
                f"{redact(str(message))[:200]}"
            )
        return body

    def _contact_ids(self) -> list[str]:
        """External user ids of the follow users' contacts, at most ``customers``."""
        users = [str(u) for u in self._expect(
            "GET", "/cgi-bin/externalcontact/get_follow_user_list").get("follow_user", [])]
        ids: set[str] = set()
        for start in range(0, len(users), WECOM_BATCH):
            cursor = ""
            while len(ids) < self.customers:
                body = self._expect("POST", "/cgi-bin/externalcontact/batch/get_by_user", json={
                    "userid_list": users[start:start + WECOM_BATCH], "cursor": cursor,
                    "limit": WECOM_BATCH})
                for item in body.get("external_contact_list", []):
                    contact = item.get("external_contact", {}) if isinstance(item, dict) else {}
                    if contact.get("external_userid"):
                        ids.add(str(contact["external_userid"]))
                cursor = str(body.get("next_cursor") or "")
                if not cursor:
                    break
        return sorted(ids)[: self.customers]

    def _read(self, customer_id: Key) -> Status:
        rid = self._maps.get("contact", IdMap([])).get(customer_id)
        if rid is None:
            return Status.not_found
        return wecom_status(self._call("GET", "/cgi-bin/externalcontact/get", setup=False,
                                       params={"external_userid": rid}))

    def get_customer(self, customer_id: Key) -> Status:
        return self._verb(lambda: self._read(customer_id))

    def customer_360(self, customer_id: Key) -> Status:
        # externalcontact/get already carries follow users, their tags and remarks.
        return self._verb(lambda: self._read(customer_id))







    def target_facts(self) -> dict[str, Any]:
        return {"token": "obtained", "external_contacts_mapped": len(
            self._maps.get("contact", IdMap([])))}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Nothing is written, so nothing is refused; report what the run reads."""
        self.run_id = check_run_id(plan.run_id)
        self.open()
        return {"fixture": {"customers": len(self._maps.get("contact", IdMap([]))),
                            "source": "existing external contacts (read only)"},
                "writes": "none"}

    def cleanup(self, run_id: str) -> int:
        """The WeCom adapter creates nothing."""
        check_run_id(run_id)
        return 0
