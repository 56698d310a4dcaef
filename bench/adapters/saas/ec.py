"""Adapter of EC (WorkEC, ``ec://open.workec.com``); its WeCom side is in :mod:`.wecom`.

EC open API v2 signs every request instead of using a token: headers ``X-Ec-Cid`` (the
corp id), ``X-Ec-TimeStamp`` (milliseconds) and ``X-Ec-Sign``, the upper-case hex MD5 of
``appId=<appId>&appSecret=<appSecret>&timeStamp=<timeStamp>``. EC's own documentation
(open.workec.com/newdoc) could not be read here; the scheme is the one public clients
implement identically (zhoufuyang/ec-open-api SignUtil, oiuv/workec, the Go SDK
guangzhou-meta/workec-sdk-go), and the v1 token endpoint /auth/accesstoken is not needed
for v2. Answers are ``{"code": 200, "msg", "data"}``; EC's throttling code and rate limits
are not documented in that material, so only HTTP 429/503 count as rate limiting and no
quota is declared.

Measured on EC: customer read (/v2/customer/queryList by crmIds), customer 360 (queryList
and /v2/contactbook/list), name search, lead creation (/v2/customer/addCustomer; EC keeps
leads as customers), customer update (/v2/customer/updateCustomer, written to the memo
field: EC has no employee-count or consent field), stage changes (/v2/step/update: EC's
sales stage is an attribute of the customer, so the run's customers are its
opportunities) and activities (follow-up records, trajectory/saveUserTrajectory). No
deletion endpoint was found (only /v2/customer/change/abandon to the public pool;
customer/delcrms lists deleted customers), so ``cleanup`` cannot remove what a run
created and says so; preflight therefore requires explicit permission.

Where the public clients disagree, the adapter is safe either way:

* The trajectory API lives under /v2 in oiuv/workec and the Go SDK, at the root in
  zhoufuyang/ec-open-api. ``open`` asks its read-only sibling (findUserTrajectory) at both
  places and writes follow-ups where it answered; if neither does, activities are
  unsupported and the facts say why.
* The layout of /v2/config/getStages is not shown in any of them: stage ids are read from a
  list under ``data`` (or under ``data.list``/``data.stages``) with the usual key names; a
  corp whose answer cannot be read gets unsupported stage changes instead of guessed ids.
* EC's name search may match loosely and may trim the query: every found record is checked
  to start with the run's tag and its separator.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx

from bench.adapters.base import (
    STAGES,
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
    VendorAdapter,
    capability_table,
    check_run_id,
    int_field,
    is_tagged,
    json_or_empty,
    parse_target,
    positive_int,
    run_tag,
    seed_name,
    tag_prefix,
)
from bench.adapters.saas.http import Credentials, VendorClient, redact
from bench.adapters.saas.wecom import WeComAdapter
from bench.errors import UserError

__all__ = ["ECAdapter", "WeComAdapter", "ec_sign"]

EC_ENV = {
    "corp_id": "EC_CORP_ID",
    "app_id": "EC_APP_ID",
    "app_secret": "EC_APP_SECRET",
    "user_id": "EC_USER_ID",
}
QUERY_LIST = "/v2/customer/queryList"
ADD = "/v2/customer/addCustomer"
UPDATE = "/v2/customer/updateCustomer"
CONTACTS = "/v2/contactbook/list"
STAGES_PATH = "/v2/config/getStages"
STEP_UPDATE = "/v2/step/update"
# Where the trajectory (follow-up record) API may live, most clients first.
TRAJECTORY_PREFIXES = ("/v2", "")
SAVE_TRAJECTORY = "/trajectory/saveUserTrajectory"
FIND_TRAJECTORY = "/trajectory/findUserTrajectory"
# queryList: pageSize at most 200, pageNo at most 50, so at most 10,000 records.
PAGE = 200
MAX_PAGES = 50
# addCustomer takes at most 50 customers a request (oiuv/workec: "不超过50条").
ADD_BATCH = 50
# Public notes on queryList mention about 10 s before changes become visible.
VISIBILITY_POLLS = 6
VISIBILITY_WAIT_S = 5.0
# EC's dates (contactTime, findUserTrajectory's days) are China Standard Time.
CHINA = timezone(timedelta(hours=8))
_EC_ALLOWED = ("customers", "run_id")
_STAGE_ID_KEYS = ("stageId", "stepId", "step", "id", "value")
_STAGE_LISTS = ("list", "stages", "stageList", "steps")

log = logging.getLogger("crmbench.vendor.ec")

_EC_SOURCE = ("EC open API v2 as used by public clients (zhoufuyang/ec-open-api, oiuv/workec, "
              "guangzhou-meta/workec-sdk-go); EC's own documentation was not readable here")
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


def stage_ids(body: Any) -> list[int]:
    """The corp's stage ids from /v2/config/getStages, in the order it lists them.

    The answer's layout is not shown in the material consulted: a list under ``data``, or
    under ``data.list``/``data.stages``, whose entries carry the id under one of the usual
    key names. Entries without a readable id are left out."""
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        data = next((data[k] for k in _STAGE_LISTS if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        return []
    ids: list[int] = []
    for item in data:
        raw = next((item[k] for k in _STAGE_ID_KEYS if k in item), None) \
            if isinstance(item, dict) else None
        if (isinstance(raw, int) and not isinstance(raw, bool)) or (
                isinstance(raw, str) and raw.strip().isdigit()):
            ids.append(int(raw))
    return ids


def _failures(resp: httpx.Response) -> bool:
    """Whether an accepted batch answer still lists failed items."""
    data = json_or_empty(resp)
    data = data.get("data") if isinstance(data, dict) else None
    return isinstance(data, dict) and bool(data.get("failureList"))


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
                           "customer APIs /v2/customer/{queryList,addCustomer,updateCustomer}, "
                           "/v2/contactbook/list, stage changes (/v2/step/update, stage ids "
                           "from /v2/config/getStages mapped by position onto the corp's "
                           "stages; EC keeps the stage on the customer) and follow-up records "
                           f"(trajectory/saveUserTrajectory) ({_EC_SOURCE}); lead lists return "
                           "unsupported (no matching API found). Uncertain facts are handled "
                           "safely: the trajectory API is looked for under /v2 and at the root "
                           "(the clients disagree) with a read-only call, and activities are "
                           "unsupported when neither answers; stage changes are unsupported "
                           "when getStages' answer (layout not documented) holds no readable "
                           "id; EC documents no rate limit in that material, so no quota is "
                           "declared and only HTTP 429/503 count as throttling"),
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
        self._stages: list[int] = []
        # The path prefix of the trajectory API, once found; why not, when it was not.
        self._trajectory: str | None = None
        self._trajectory_note = "not looked for yet"

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
        """Check that a signed request is accepted, read the corp's stages and find the
        trajectory API (reads only); load the run's id map if tagged."""
        if self._http is not None:
            return
        self._creds = self.complete_credentials()
        self._http = VendorClient("EC", transport=self.transport, sleep=self._sleep_fn(),
                                  pool_size=self.pool_size)
        try:
            self._stages = stage_ids(self._expect("GET", STAGES_PATH))
            self._trajectory = self._find_trajectory()
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
        # EC keeps the sales stage on the customer: the run's customers are its opportunities.
        return self.keyspace_of(customers, customers)

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

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall_clock(), CHINA)

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

    def _find_trajectory(self) -> str | None:
        """Where the trajectory API answers: its read-only findUserTrajectory is asked for
        yesterday (it cannot query today) under each candidate prefix."""
        day = (self._now() - timedelta(days=1)).strftime("%Y-%m-%d")
        tried = []
        for prefix in TRAJECTORY_PREFIXES:
            resp = self._call("POST", prefix + FIND_TRAJECTORY, setup=True, json={
                "startDate": day, "endDate": day, "userIds": str(self._user()), "pageNo": 1})
            if ec_status(resp) is Status.ok:
                self._trajectory_note = f"found at {prefix + FIND_TRAJECTORY}"
                return prefix
            tried.append(f"{prefix + FIND_TRAJECTORY}: HTTP {resp.status_code}, code "
                         f"{ec_code(json_or_empty(resp))}")
        self._trajectory_note = ("activities unsupported: the trajectory API answered at "
                                 "neither place (" + "; ".join(tried) + ")")
        return None

    def _tagged_ids(self, run_id: str) -> list[str]:
        """Ids of the customers of run ``run_id``: named with its tag and the separator."""
        ids: set[str] = set()
        for page in range(1, MAX_PAGES + 1):
            body = self._expect("POST", QUERY_LIST,
                                json={"name": tag_prefix(run_id), "pageNo": page,
                                      "pageSize": PAGE})
            rows = customers_of(body)
            # The name match may be fuzzy (and may drop the trailing separator): keep only
            # the names of this run, not those of a run whose id merely starts the same.
            ids |= {str(r["crmId"]) for r in rows
                    if is_tagged(r.get("name"), run_id) and "crmId" in r}
            info = (body.get("data") or {}).get("pageInfo") or {}
            if len(rows) < PAGE or page >= int(info.get("maxPageNo") or page):
                break
        return sorted(ids, key=lambda s: (len(s), s))

    def _load_maps(self) -> None:
        if self.run_id is None:
            raise RuntimeError("ECAdapter maps the customers of a run; set run_id")
        self._maps = {"customer": IdMap(self._tagged_ids(self.run_id))}

    def _crm_id(self, customer_id: Key) -> int | None:
        rid = self._maps.get("customer", IdMap([])).get(customer_id)
        return int(rid) if rid is not None and rid.isdigit() else None

    def _step(self, stage: Stage) -> int | None:
        """The corp's stage id for a harness stage: by position, the last for the rest."""
        if not self._stages:
            return None
        return self._stages[min(STAGES.index(stage), len(self._stages) - 1)]

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
            return Status.rejected if status is Status.ok and _failures(resp) else status
        return self._verb(call)

    def log_activity(self, activity: ActivityInput) -> Status:
        """A follow-up record on the customer (trajectory/saveUserTrajectory)."""
        prefix = self._trajectory
        if prefix is None:
            return Status.unsupported

        def call() -> Status:
            crm_id = self._crm_id(activity.customer_id)
            if crm_id is None:
                return Status.not_found
            resp = self._call("POST", prefix + SAVE_TRAJECTORY, setup=False, json={"list": [{
                "crmId": crm_id, "userId": str(self._user()),
                "contactTime": self._now().strftime("%Y-%m-%d %H:%M:%S"),
                "content": f"{self._tag()} {activity.type}: {activity.subject}"[:500]}]})
            status = ec_status(resp)
            return Status.rejected if status is Status.ok and _failures(resp) else status
        return self._verb(call)

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        """Move a run customer to the corp's stage at the harness stage's position."""
        step = self._step(stage)
        if step is None:
            return Status.unsupported

        def call() -> Status:
            crm_id = self._crm_id(opportunity_id)
            if crm_id is None:
                return Status.not_found
            resp = self._call("POST", STEP_UPDATE, setup=False, json={
                "optUserId": self._user(), "crmIds": str(crm_id), "step": step})
            status = ec_status(resp)
            body = json_or_empty(resp)
            # The answer's data is a boolean: false means nothing was changed.
            if status is Status.ok and isinstance(body, dict) and body.get("data") is False:
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
        return {"signed_request": f"accepted ({STAGES_PATH})",
                "stages": len(self._stages) or "none readable: stage changes unsupported",
                "trajectory_api": self._trajectory_note,
                "rate_limits": "none documented in the material found",
                "deletion": "no customer deletion API found; run records stay"}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Require explicit permission; seed customers and wait until queryList sees them."""
        self.run_id = check_run_id(plan.run_id)
        tag = run_tag(plan.run_id)
        if not plan.allow_production:
            raise UserError(
                "EC exposes no test-corp flag and no customer deletion through its open API: "
                f"a run adds customers named {tag_prefix(plan.run_id)}... (with their stage "
                "changes and follow-up records) that must be deleted by hand in the EC "
                "console afterwards. Allow production explicitly to run against this corp"
            )
        rate_plan = self.rate_plan(plan)
        self.open()
        existing = len(self._tagged_ids(plan.run_id))
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
            "fixture": {"customers": len(self._maps["customer"]),
                        # The stage is kept on the customer: its customers are its opportunities.
                        "opportunities": len(self._maps["customer"]),
                        "requested": self.customers, "reused": bool(existing), "tag": tag},
            "api": {"scenario": plan.estimated_calls,
                    "seed": -(-to_seed // ADD_BATCH),
                    "daily_quota": "not documented in the material found"},
            "stages": self.target_facts()["stages"],
            "trajectory_api": self._trajectory_note,
            "rate_plan": rate_plan.to_json(),
            "cleanup": "not possible through the open API: delete customers named "
                       f"{tag_prefix(plan.run_id)}... in the EC console",
        }

    def cleanup(self, run_id: str) -> int:
        """EC documents no deletion: report what remains instead of pretending."""
        check_run_id(run_id)
        self.open()
        remaining = len(self._tagged_ids(run_id))
        if remaining:
            raise UserError(
                f"EC's open API documents no customer deletion (only abandoning to the public "
                f"pool); {remaining} customers named {tag_prefix(run_id)}... remain: delete "
                "them in the EC console"
            )
        return 0
