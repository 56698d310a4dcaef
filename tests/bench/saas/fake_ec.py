"""In-memory stand-ins for EC's open API v2 and WeCom's external-contact API.

They replay the request and answer shapes of the public material the adapters follow: the
EC clients zhoufuyang/ec-open-api, oiuv/workec and guangzhou-meta/workec-sdk-go, and WeCom's
server API documentation. Every id and secret here is made up.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.adapters.saas.ec import ec_sign

# Made-up EC corp, app and user: same lengths as real ones, no real account behind them.
EC_CORP_ID = "80000001"
EC_APP_ID = "800000000000000001"
EC_APP_SECRET = "ecFakeSecretVGUltd0Y"
EC_USER_ID = "80000002"

# A stage list as getStages might answer it (its layout is not in the material consulted).
EC_STAGES: list[dict[str, Any]] = [
    {"stageId": 101, "stageName": "初步接触"}, {"stageId": 102, "stageName": "需求确认"},
    {"stageId": 103, "stageName": "方案报价"}, {"stageId": 104, "stageName": "商务谈判"},
    {"stageId": 105, "stageName": "赢单"}, {"stageId": 106, "stageName": "输单"},
]
_CONTACT_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_DAY = re.compile(r"\d{4}-\d\d-\d\d")


def _ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"code": 200, "msg": "OK", "data": data})


@dataclass
class FakeEC:
    """EC open API v2: signed headers, queryList pages, customer writes, stages, follow-ups.

    ``trajectory_prefix`` is where the trajectory API answers ("/v2", "" for the root, None
    for nowhere); ``stages`` is the ``data`` of getStages' answer.
    """

    now_ms: int = 1_700_000_000_000
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    fail_names: set[str] = field(default_factory=set)
    stages: Any = field(default_factory=lambda: list(EC_STAGES))
    trajectory_prefix: str | None = "/v2"
    trajectories: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_600_000_001))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        stamp = int(request.headers["X-Ec-TimeStamp"])
        if request.headers.get("X-Ec-Cid") != EC_CORP_ID or request.headers.get(
            "X-Ec-Sign"
        ) != ec_sign(EC_APP_ID, EC_APP_SECRET, stamp) or abs(stamp - self.now_ms) > 120_000:
            return httpx.Response(200, json={"code": 40001, "msg": "签名验证失败"})
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        if path == "/v2/config/getStages":
            return _ok(self.stages)
        if path == "/v2/customer/queryList":
            return self._query_list(body)
        if path == "/v2/customer/addCustomer":
            return self._add(body)
        if path == "/v2/customer/updateCustomer":
            self.customers[body["crmId"]].update(memo=body.get("memo"))
            return _ok(None)
        if path == "/v2/contactbook/list":
            return _ok([])
        if path == "/v2/step/update":
            return self._step(body)
        if self.trajectory_prefix is not None and path.startswith(self.trajectory_prefix):
            rest = path[len(self.trajectory_prefix):]
            if rest == "/trajectory/saveUserTrajectory":
                return self._save_trajectory(body)
            if rest == "/trajectory/findUserTrajectory":
                assert _DAY.fullmatch(body["startDate"]) and _DAY.fullmatch(body["endDate"])
                return _ok({"pageSize": 50, "pageNo": 1, "total": 0, "result": []})
        return httpx.Response(404, json={"code": 404, "msg": "not found"})

    def _query_list(self, body: dict[str, Any]) -> httpx.Response:
        size = min(int(body.get("pageSize", 200)), 200)
        page = int(body.get("pageNo", 1))
        assert page <= 50
        rows = sorted(self.customers.values(), key=lambda c: c["crmId"])
        if "crmIds" in body:
            rows = [r for r in rows if r["crmId"] in body["crmIds"]]
        if "name" in body:
            # A loose match, as a search box does: the query is trimmed and matched anywhere.
            wanted = str(body["name"]).strip()
            rows = [r for r in rows if wanted in r["name"]]
        chunk = rows[(page - 1) * size: page * size]
        return _ok({"customerInfoList": chunk, "pageInfo": {
            "pageNo": page, "pageSize": size, "total": len(rows),
            "maxPageNo": max(-(-len(rows) // size), 1)}})

    def _add(self, body: dict[str, Any]) -> httpx.Response:
        assert len(body["list"]) <= 50
        success, failure = [], []
        for index, item in enumerate(body["list"]):
            if item["name"] in self.fail_names:
                failure.append({"index": index, "failureCause": "该客户被多人频繁操作"})
                continue
            crm_id = next(self._ids)
            self.customers[crm_id] = {"crmId": crm_id, **item}
            success.append({"index": index, "crmId": crm_id})
        return _ok({"successIdList": success, "failureList": failure})

    def _step(self, body: dict[str, Any]) -> httpx.Response:
        # optUserId, crmIds (comma-separated string) and step; data is a boolean.
        assert body["optUserId"] == int(EC_USER_ID) and isinstance(body["crmIds"], str)
        ids = [int(x) for x in body["crmIds"].split(",")]
        known = {s.get("stageId") for s in self.stages if isinstance(s, dict)} \
            if isinstance(self.stages, list) else set()
        if body["step"] not in known:
            return httpx.Response(200, json={"code": 400, "msg": "参数错误", "data": False})
        if not all(i in self.customers for i in ids):
            return _ok(False)
        for i in ids:
            self.customers[i]["step"] = body["step"]
        return _ok(True)

    def _save_trajectory(self, body: dict[str, Any]) -> httpx.Response:
        failure = []
        for index, item in enumerate(body["list"]):
            assert item["userId"] == EC_USER_ID and item["content"]
            assert _CONTACT_TIME.fullmatch(item["contactTime"])
            if item["crmId"] not in self.customers:
                failure.append({"index": index, "failureCause": "客户不存在"})
                continue
            self.trajectories.append(item)
        return _ok({"failureList": failure} if failure else None)


# ------------------------------------------------------------------ WeCom

WECOM_CORP_ID = "wwfakecorp0123456"
WECOM_SECRET = "wecom-secret-QWERTY-123456"


@dataclass
class FakeWeCom:
    """WeCom: gettoken, follow users, batch/get_by_user with cursors, externalcontact/get.

    ``refused_ip``: every API call answers errcode 60020 for that IP (an app whose trusted
    IPs do not list the caller). ``max_batch_users``: batch/get_by_user refuses longer
    userid_list values.
    """

    contacts: dict[str, list[str]] = field(default_factory=dict)
    page: int = 2
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    script: list[dict[str, Any]] = field(default_factory=list)
    refused_ip: str | None = None
    max_batch_users: int = 100
    expires_in: int = 7200

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, params = request.url.path, request.url.params
        if path == "/cgi-bin/gettoken":
            return self._token(params.get("corpid"), params.get("corpsecret"))
        if self.refused_ip is not None:
            return httpx.Response(200, json={"errcode": 60020, "errmsg": (
                "not allow to access from your ip, hint: [1700000000123456789012345], from ip: "
                f"{self.refused_ip}, more info at https://open.work.weixin.qq.com/devtool/"
                "query?e=60020")})
        if params.get("access_token") not in self.valid_tokens:
            return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})
        if self.script:
            return httpx.Response(200, json=self.script.pop(0))
        if path == "/cgi-bin/externalcontact/get_follow_user_list":
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok",
                                             "follow_user": sorted(self.contacts)})
        if path == "/cgi-bin/externalcontact/batch/get_by_user":
            return self._by_user(json.loads(request.content))
        if path == "/cgi-bin/externalcontact/get":
            uid = params.get("external_userid")
            if not any(uid in cs for cs in self.contacts.values()):
                return httpx.Response(200, json={"errcode": 84061,
                                                 "errmsg": "not external contact"})
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "external_contact": {
                "external_userid": uid}, "follow_user": []})
        return httpx.Response(404, text="no such path")

    def _token(self, corp: str | None, secret: str | None) -> httpx.Response:
        if (corp, secret) != (WECOM_CORP_ID, WECOM_SECRET):
            return httpx.Response(200, json={"errcode": 40001, "errmsg": "invalid credential"})
        token = f"WECOMTOKEN{len(self.tokens):04d}xyz"
        self.tokens.append(token)
        self.valid_tokens.add(token)
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "access_token": token,
                                         "expires_in": self.expires_in})

    def _by_user(self, body: dict[str, Any]) -> httpx.Response:
        assert body["limit"] <= 100
        if len(body["userid_list"]) > self.max_batch_users:
            return httpx.Response(200, json={"errcode": 40058,
                                             "errmsg": "userid_list exceed max size"})
        everyone = [(u, c) for u in body["userid_list"] for c in self.contacts.get(u, [])]
        start = int(body["cursor"] or 0)
        chunk = everyone[start:start + self.page]
        nxt = str(start + self.page) if start + self.page < len(everyone) else ""
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "next_cursor": nxt,
                                         "external_contact_list": [
            {"external_contact": {"external_userid": c, "name": "客户"},
             "follow_info": {"userid": u}} for u, c in chunk]})
