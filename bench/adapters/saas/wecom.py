"""Adapter of WeCom's external contacts (``wecom://qyapi.weixin.qq.com``), the WeCom side of EC.

WeCom (developer.work.weixin.qq.com): GET /cgi-bin/gettoken?corpid&corpsecret returns an
access_token (expires_in 7200). The adapter reads external contacts (the customers of
WeCom CRM) and writes nothing: contacts are added by WeChat users, not by the API, and
remark edits would change real customer relationships that cannot be tagged for cleanup.

Facts that shape the adapter, from WeCom's documentation:

* Frequency limits (document 90312): each company may call one API at most 10,000 times a
  minute and 150,000 times an hour (each IP 20,000 a minute); going over blocks that API
  for the whole company, its real integrations included, for up to an hour. The adapter
  declares these quotas so the run is planned inside them, and keeps a client-side
  limiter per API below them as a safety net.
* Global error codes (document 90313): 45009 (calls over the limit) and 45033 (too many
  concurrent calls) are rate limiting; 42001/40014 mean the access token expired or is
  invalid; 60020 means the calling IP is not trusted.
* Self-built apps created since 2022-06-20 must list the IPs allowed to call them (the
  app's "trusted IPs"); from any other IP every call fails with 60020. Setup turns that
  into an error that names the refused IP and what to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from bench.adapters.base import Capability, Key, Keyspace, RunPlan, Status, status_for_http
from bench.adapters.saas.common import (
    IdMap,
    VendorAdapter,
    capability_table,
    check_run_id,
    int_field,
    json_or_empty,
    parse_target,
    positive_int,
)
from bench.adapters.saas.http import (
    ClientThrottled,
    Credentials,
    Secret,
    SlidingWindow,
    TokenBox,
    VendorClient,
    redact,
)
from bench.adapters.saas.quota import Concurrency, Quota
from bench.errors import UserError

WECOM_ENV = {"corp_id": "WECOM_CORP_ID", "secret": "WECOM_SECRET"}
WECOM_SOURCE = "WeCom server API documentation (developer.work.weixin.qq.com)"
LIMITS_SOURCE = "WeCom server API, frequency limits (developer.work.weixin.qq.com, document 90312)"

TOKEN_PATH = "/cgi-bin/gettoken"
GET_CONTACT = "/cgi-bin/externalcontact/get"
FOLLOW_USERS = "/cgi-bin/externalcontact/get_follow_user_list"
BY_USER = "/cgi-bin/externalcontact/batch/get_by_user"

TOKEN_EXPIRED = frozenset({42001, 40014})
# 45009: calls over the limit; 45033: too many concurrent calls (document 90313). 45011 is
# WeChat's "API called too often"; WeCom's list does not show it, but should it come it
# can only mean throttling.
THROTTLED = frozenset({45009, 45011, 45033})
BUSY = frozenset({-1})
UNTRUSTED_IP = 60020
# batch/get_by_user: the documentation allows 100 member ids per request, but requests of
# more than 64 have been reported refused; 64 is safe either way.
BATCH_USERS = 64
BATCH_LIMIT = 100
# Per company and API (document 90312).
PER_MINUTE = 10_000
PER_HOUR = 150_000
# The client-side limiter of each process stops at this share of the documented limits:
# the rest belongs to the company's real integrations.
LIMITER_SHARE = 0.8
_ALLOWED = ("customers",)
# The timed operations and the API each sends (one call each; writes are not sent).
_API_COSTS: dict[str, dict[str, float]] = {
    GET_CONTACT: {"get_customer": 1.0, "customer_360": 1.0},
}
_FROM_IP = re.compile(r"from ip:\s*([0-9A-Fa-f.:]+)")

log = logging.getLogger("crmbench.vendor.wecom")


def wecom_code(body: Any) -> int | None:
    return int_field(body, "errcode")


def wecom_status(resp: httpx.Response) -> Status:
    if resp.status_code != 200:
        return status_for_http(resp.status_code)
    code = wecom_code(json_or_empty(resp))
    if code == 0:
        return Status.ok
    if code in THROTTLED:
        return Status.rate_limited
    if code is None or code in BUSY:
        return Status.error
    return Status.rejected


def _throttled(resp: httpx.Response) -> bool:
    code = wecom_code(json_or_empty(resp))
    return code in THROTTLED or code in BUSY


def untrusted_ip(host: str, body: Any) -> UserError:
    """The setup error for errcode 60020: which IP was refused and how to allow it."""
    message = str(body.get("errmsg", "")) if isinstance(body, dict) else ""
    found = _FROM_IP.search(message)
    ip = found.group(1) if found else "this machine's egress IP"
    return UserError(
        f"WeCom at {host} refuses calls from {ip} (errcode 60020): self-built apps created "
        f"since mid-2022 accept calls only from their trusted IPs. Add {ip} (this machine's "
        "egress IP) to the app's trusted IPs in the WeCom admin console (App Management, "
        "the app, Trusted IPs) and run again"
    )


def quota_figures(path: str) -> list[Quota]:
    """The documented per-company quotas of one API, charged by the ops that call it."""
    costs = _API_COSTS[path]
    api = path.rsplit("/cgi-bin/", 1)[-1]
    return [
        Quota(f"{api}: calls per company per API per minute", PER_MINUTE, 60.0, costs,
              source=LIMITS_SOURCE),
        Quota(f"{api}: calls per company per API per hour", PER_HOUR, 3_600.0, costs,
              source=LIMITS_SOURCE),
    ]


class WeComAdapter(VendorAdapter):
    """Adapter of ``wecom://qyapi.weixin.qq.com``: WeCom external contacts, read only."""

    name: ClassVar[str] = "wecom"
    # Its own platform: WeCom's figures must not be pooled with EC's CRM API.
    platform: ClassVar[str] = "wecom"
    label: ClassVar[str] = "WeCom"
    credential_section: ClassVar[str] = "wecom"
    credential_env: ClassVar[dict[str, str]] = WECOM_ENV
    capabilities: ClassVar[dict[str, Capability]] = capability_table(
        {
            "crud.mixed": ("supported",
                           "read only: /cgi-bin/externalcontact/get and batch/get_by_user "
                           f"({WECOM_SOURCE}); external contacts are added by WeChat users, "
                           "not through the API, and remark edits would change real customer "
                           "relationships, so writes return unsupported. Runs are planned "
                           "inside the documented limits of 10,000 calls a minute and 150,000 "
                           "an hour per company and API (document 90312), and a client-side "
                           "limiter per API stops each process at 80% of them; no per-app "
                           "limit and no number for the concurrency cap behind errcode 45033 "
                           "is documented, so none is declared and 45033 counts as rate "
                           "limited. batch/get_by_user is documented to take 100 member ids "
                           "but has been seen refusing more than 64, so 64 are sent"),
            "cdp.event_delay": ("not-measurable",
                                "change_external_contact events go to a registered public "
                                f"callback URL, for edits made by members ({WECOM_SOURCE}, "
                                "document 92277); API edits are not documented to raise them "
                                "and the harness runs no callback endpoint"),
            "workflow.max_nodes": ("not-measurable",
                                   "approval flows are configured in the admin console; no "
                                   "API deploys them"),
        },
        rest=("unknown", f"not part of the external-contact API ({WECOM_SOURCE})"),
    )

    def __init__(self, host: str, **kw: Any) -> None:
        super().__init__(host, **kw)
        self._creds: Credentials | None = None
        self._hourly: SlidingWindow | None = None
        self._maps: dict[str, IdMap] = {}

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> WeComAdapter:
        host, params = parse_target(url, "wecom", _ALLOWED)
        customers = (positive_int("customers", params["customers"], "wecom")
                     if "customers" in params else 1000)
        return cls(host, customers=customers, run_id=run_id, environ=env)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Fetch an access token (setup) and map harness ids onto existing external contacts."""
        if self._http is not None:
            return
        self._creds = self.complete_credentials()
        # Each load-generator process takes its share of the quota.
        share = LIMITER_SHARE / self.processes
        minute = SlidingWindow(max(int(PER_MINUTE * share), 1), 60.0, clock=self.clock,
                               sleep=self._sleep_fn())
        self._hourly = SlidingWindow(max(int(PER_HOUR * share), 1), 3_600.0, clock=self.clock,
                                     sleep=self._sleep_fn())
        self._http = VendorClient("WeCom", transport=self.transport, limiter=minute,
                                  throttled=_throttled, sleep=self._sleep_fn(),
                                  pool_size=self.pool_size)
        self._token = TokenBox(self._fetch_token, clock=self.clock)
        try:
            self._token.get()
            self._maps = {"contact": IdMap(self._contact_ids())}
        except BaseException:
            self.close()
            raise

    def platform_version(self) -> str | None:
        return "WeCom server API (external contacts)" if self._token is not None else None

    def keyspace(self) -> Keyspace:
        contacts = len(self._maps.get("contact", IdMap([])))
        if contacts == 0:
            raise UserError("the WeCom corp has no external contacts visible to this app")
        # WeCom has no opportunities and the stage verb answers unsupported without a call;
        # keys for them keep a mix that draws stage changes runnable (they count as
        # unsupported instead of stopping the run).
        return self.keyspace_of(contacts, contacts)

    def quotas(self) -> list[Quota]:
        return [q for path in _API_COSTS for q in quota_figures(path)]

    def concurrency(self) -> list[Concurrency]:
        # Errcode 45033 shows a cap on concurrent calls, but no figure is documented.
        return []

    # ------------------------------------------------------------------ HTTP

    def _fetch_token(self) -> tuple[Secret, float | None]:
        creds = self._creds
        if creds is None:
            raise RuntimeError("credentials not loaded")
        self._take_hourly(TOKEN_PATH, timed=False)
        resp = self._client().setup(
            "GET", f"https://{self.host}{TOKEN_PATH}", limit_key=TOKEN_PATH,
            params={"corpid": creds["corp_id"].reveal(), "corpsecret": creds["secret"].reveal()},
        )
        body = json_or_empty(resp)
        if wecom_code(body) == UNTRUSTED_IP:
            raise untrusted_ip(self.host, body)
        if wecom_code(body) != 0 or not isinstance(body, dict) or not body.get("access_token"):
            message = body.get("errmsg") if isinstance(body, dict) else f"HTTP {resp.status_code}"
            raise UserError(
                f"WeCom at {self.host} refused gettoken (errcode {wecom_code(body)}: "
                f"{redact(str(message))[:200]}); check WECOM_CORP_ID and WECOM_SECRET (the "
                "secret of an app allowed to call the customer-contact API)"
            )
        return Secret(str(body["access_token"])), float(body.get("expires_in") or 7200)

    def _take_hourly(self, path: str, *, timed: bool) -> None:
        """The hourly window of the per-API limiter (the minute one is the client's)."""
        hourly = self._hourly
        if hourly is None:
            return
        if timed:
            if not hourly.try_acquire(path):
                raise ClientThrottled(path)
        else:
            hourly.acquire(path)

    def _timed(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One measured call: the cached token, never a fetch or a retry on this path."""
        if self._token is None:
            raise RuntimeError("WeComAdapter used before open()")
        token = self._token.peek()
        self._take_hourly(path, timed=True)
        params = {**kw.pop("params", {}), "access_token": token.reveal()}
        resp = self._client().send(method, f"https://{self.host}{path}", limit_key=path,
                                   params=params, **kw)
        if wecom_code(json_or_empty(resp)) in TOKEN_EXPIRED:
            # The call reports its own status; the next ones get a fresh token.
            self._token.refresh_later(token)
        return resp

    def _setup(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A setup call with access_token; errcode 42001/40014 fetches a new token once."""
        if self._token is None:
            raise RuntimeError("WeComAdapter used before open()")
        params = dict(kw.pop("params", {}))
        token = self._token.get()
        for attempt in (0, 1):
            params["access_token"] = token.reveal()
            self._take_hourly(path, timed=False)
            resp = self._client().setup(method, f"https://{self.host}{path}", limit_key=path,
                                        params=params, **kw)
            if attempt == 0 and wecom_code(json_or_empty(resp)) in TOKEN_EXPIRED:
                token = self._token.refresh(token)
                continue
            return resp
        return resp

    def _expect(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self._setup(method, path, **kw)
        body = json_or_empty(resp)
        if wecom_code(body) == UNTRUSTED_IP:
            raise untrusted_ip(self.host, body)
        if wecom_status(resp) is not Status.ok or not isinstance(body, dict):
            message = body.get("errmsg") if isinstance(body, dict) else None
            raise UserError(
                f"WeCom {path} failed: errcode {wecom_code(body)}: "
                f"{redact(str(message))[:200]}"
            )
        return body

    def _contact_ids(self) -> list[str]:
        """External user ids of the follow users' contacts, at most ``customers``."""
        users = [str(u) for u in self._expect("GET", FOLLOW_USERS).get("follow_user", [])]
        ids: set[str] = set()
        for start in range(0, len(users), BATCH_USERS):
            cursor = ""
            while len(ids) < self.customers:
                body = self._expect("POST", BY_USER, json={
                    "userid_list": users[start:start + BATCH_USERS], "cursor": cursor,
                    "limit": BATCH_LIMIT})
                for item in body.get("external_contact_list", []):
                    contact = item.get("external_contact", {}) if isinstance(item, dict) else {}
                    if contact.get("external_userid"):
                        ids.add(str(contact["external_userid"]))
                cursor = str(body.get("next_cursor") or "")
                if not cursor:
                    break
        return sorted(ids)[: self.customers]

    # ------------------------------------------------------------------ verbs

    def _read(self, customer_id: Key) -> Status:
        rid = self._maps.get("contact", IdMap([])).get(customer_id)
        if rid is None:
            return Status.not_found
        return wecom_status(self._timed("GET", GET_CONTACT, params={"external_userid": rid}))

    def get_customer(self, customer_id: Key) -> Status:
        return self._verb(lambda: self._read(customer_id))

    def customer_360(self, customer_id: Key) -> Status:
        # externalcontact/get already carries follow users, their tags and remarks.
        return self._verb(lambda: self._read(customer_id))

    # ------------------------------------------------------------------ guarded

    def target_facts(self) -> dict[str, Any]:
        return {"token": "obtained", "external_contacts_mapped": len(
            self._maps.get("contact", IdMap([])))}

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Plan the rate inside the documented quotas; nothing is written."""
        self.run_id = check_run_id(plan.run_id)
        rate_plan = self.rate_plan(plan)
        self.open()
        return {"fixture": {"customers": len(self._maps.get("contact", IdMap([]))),
                            "source": "existing external contacts (read only)"},
                "writes": "none",
                "rate_plan": rate_plan.to_json()}

    def cleanup(self, run_id: str) -> int:
        """The WeCom adapter creates nothing."""
        check_run_id(run_id)
        return 0
