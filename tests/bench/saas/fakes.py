"""In-memory stand-ins for the vendor APIs, replaying their documented request/response shapes.

Each fake is an ``httpx.MockTransport`` handler that keeps the requests it saw, so tests can
check what an adapter sent as well as how it read the answers.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.adapters.saas.ec import ec_sign

# The Salesforce fake lives in its own module; these names stay importable from here.
from tests.bench.saas.fake_salesforce import (
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_INSTANCE,
    SF_LOGIN_HOST,
    FakeSalesforce,
    sf_error,
)

Handler = Callable[[httpx.Request], httpx.Response]

__all__ = [
    "EC_APP_ID", "EC_APP_SECRET", "EC_CORP_ID", "EC_USER_ID", "FX_APP_ID", "FX_APP_SECRET",
    "FX_OPEN_USER_ID", "FX_PERMANENT_CODE", "SF_CLIENT_ID", "SF_CLIENT_SECRET", "SF_INSTANCE",
    "SF_LOGIN_HOST", "WECOM_CORP_ID", "WECOM_SECRET", "FakeEC", "FakeFxiaoke",
    "FakeSalesforce", "FakeWeCom", "sf_error",
]


# ------------------------------------------------------------------ Fxiaoke

FX_APP_ID = "FSAID_fake0001"
FX_APP_SECRET = "fx-app-secret-5e4d3c2b1a"
FX_PERMANENT_CODE = "FX-PERMANENT-CODE-778899"
FX_OPEN_USER_ID = "FSUID_FAKE1000"


@dataclass
class FakeFxiaoke:
    """Fxiaoke open API: corpAccessToken, data/query (STARTWITH, _id GT), create/get/delete."""

    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    script: list[dict[str, Any]] = field(default_factory=list)
    invalidated: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add(self, api_name: str, **fields: Any) -> str:
        rid = f"{next(self._ids):024x}"
        self.records.setdefault(api_name, {})[rid] = {"_id": rid, **fields}
        return rid

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        path = request.url.path
        if path == "/cgi/corpAccessToken/get/V2":
            if (body.get("appId"), body.get("appSecret"), body.get("permanentCode")) != (
                FX_APP_ID, FX_APP_SECRET, FX_PERMANENT_CODE
            ):
                return httpx.Response(200, json={
                    "errorCode": 10006, "errorMessage": "the parameter appSecret is missing or "
                    "illegal", "traceId": "open-api-gateway-web/fake"})
            token = f"FXTOKEN{len(self.tokens):04d}abcdef"
            self.tokens.append(token)
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"errorCode": 0, "errorMessage": "success",
                                             "corpAccessToken": token, "corpId": "FSCID_FAKE",
                                             "expiresIn": 7200})
        if body.get("corpAccessToken") not in self.valid_tokens:
            return httpx.Response(200, json={
                "errorCode": 20016, "traceId": "E-O.fake",
                "errorMessage": "the cropId,cropAccessToken or authorization is error"})
        assert body.get("corpId") == "FSCID_FAKE"
        assert body.get("currentOpenUserId") == FX_OPEN_USER_ID
        if self.script:
            return httpx.Response(200, json=self.script.pop(0))
        data = body["data"]
        ok: dict[str, Any] = {"errorCode": 0, "errorMessage": "OK", "traceId": "E-O.fake"}
        if path == "/cgi/crm/v2/data/create":
            obj = dict(data["object_data"])
            api_name = obj.pop("dataObjectApiName")
            return httpx.Response(200, json={**ok, "dataId": self.add(api_name, **obj)})
        if path == "/cgi/crm/v2/data/get":
            row = self.records.get(data["dataObjectApiName"], {}).get(data["objectDataId"])
            if row is None:
                return httpx.Response(200, json={"errorCode": 32000, "errorMessage": "数据不存在"})
            return httpx.Response(200, json={**ok, "data": row})
        if path == "/cgi/crm/v2/data/query":
            info = data["search_query_info"]
            assert info["limit"] <= 100 and info["offset"] % info["limit"] == 0
            rows = sorted(self.records.get(data["dataObjectApiName"], {}).values(),
                          key=lambda r: r["_id"])
            for flt in info["filters"]:
                fld, (value,), op = flt["field_name"], flt["field_values"], flt["operator"]
                if op == "STARTWITH":
                    rows = [r for r in rows if str(r.get(fld, "")).startswith(value)]
                elif op == "GT":
                    rows = [r for r in rows if str(r.get(fld, "")) > value]
            page = rows[info["offset"]: info["offset"] + info["limit"]]
            return httpx.Response(200, json={**ok, "data": {
                "dataList": page, "offset": info["offset"], "limit": info["limit"],
                "total": 0}})
        if path == "/cgi/crm/v2/data/invalid":
            self.invalidated.add(data["object_data_id"])
            return httpx.Response(200, json=ok)
        if path == "/cgi/crm/v2/data/delete":
            assert len(data["idList"]) <= 100
            table = self.records.get(data["dataObjectApiName"], {})
            for rid in data["idList"]:
                assert rid in self.invalidated, "delete needs an invalidated record"
                table.pop(rid, None)
            return httpx.Response(200, json=ok)
        return httpx.Response(404, text="no such path")


# ------------------------------------------------------------------ EC

EC_CORP_ID = "15912663"
EC_APP_ID = "763422286010122240"
EC_APP_SECRET = "ecFakeSecretVGUltd0Y"
EC_USER_ID = "17640187"


@dataclass
class FakeEC:
    """EC open API v2: signed headers, queryList pages, addCustomer, updateCustomer."""

    now_ms: int = 1_700_000_000_000
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    fail_names: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_600_000_001))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

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
            return httpx.Response(200, json={"code": 200, "msg": "OK", "data": []})
        if path == "/v2/customer/queryList":
            size = min(int(body.get("pageSize", 200)), 200)
            page = int(body.get("pageNo", 1))
            assert page <= 50
            rows = sorted(self.customers.values(), key=lambda c: c["crmId"])
            if "crmIds" in body:
                rows = [r for r in rows if r["crmId"] in body["crmIds"]]
            if "name" in body:
                rows = [r for r in rows if body["name"] in r["name"]]
            chunk = rows[(page - 1) * size: page * size]
            return httpx.Response(200, json={"code": 200, "msg": "OK", "data": {
                "customerInfoList": chunk, "pageInfo": {
                    "pageNo": page, "pageSize": size, "total": len(rows),
                    "maxPageNo": max(-(-len(rows) // size), 1)}}})
        if path == "/v2/customer/addCustomer":
            success, failure = [], []
            for index, item in enumerate(body["list"]):
                if item["name"] in self.fail_names:
                    failure.append({"index": index, "failureCause": "该客户被多人频繁操作"})
                    continue
                crm_id = next(self._ids)
                self.customers[crm_id] = {"crmId": crm_id, **item}
                success.append({"index": index, "crmId": crm_id})
            return httpx.Response(200, json={"code": 200, "msg": "OK", "data": {
                "successIdList": success, "failureList": failure}})
        if path == "/v2/customer/updateCustomer":
            self.customers[body["crmId"]].update(memo=body.get("memo"))
            return httpx.Response(200, json={"code": 200, "msg": "OK", "data": None})
        if path == "/v2/contactbook/list":
            return httpx.Response(200, json={"code": 200, "msg": "OK", "data": []})
        return httpx.Response(404, json={"code": 404, "msg": "not found"})


# ------------------------------------------------------------------ WeCom

WECOM_CORP_ID = "wwfakecorp0123456"
WECOM_SECRET = "wecom-secret-QWERTY-123456"


@dataclass
class FakeWeCom:
    """WeCom: gettoken, follow users, batch/get_by_user with cursors, externalcontact/get."""

    contacts: dict[str, list[str]] = field(default_factory=dict)
    page: int = 2
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    script: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, params = request.url.path, request.url.params
        if path == "/cgi-bin/gettoken":
            if (params.get("corpid"), params.get("corpsecret")) != (WECOM_CORP_ID, WECOM_SECRET):
                return httpx.Response(200, json={"errcode": 40001, "errmsg": "invalid credential"})
            token = f"WECOMTOKEN{len(self.tokens):04d}xyz"
            self.tokens.append(token)
            self.valid_tokens.add(token)
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok",
                                             "access_token": token, "expires_in": 7200})
        if params.get("access_token") not in self.valid_tokens:
            return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})
        if self.script:
            return httpx.Response(200, json=self.script.pop(0))
        if path == "/cgi-bin/externalcontact/get_follow_user_list":
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok",
                                             "follow_user": sorted(self.contacts)})
        if path == "/cgi-bin/externalcontact/batch/get_by_user":
            body = json.loads(request.content)
            assert len(body["userid_list"]) <= 100 and body["limit"] <= 100
            everyone = [(u, c) for u in body["userid_list"] for c in self.contacts.get(u, [])]
            start = int(body["cursor"] or 0)
            chunk = everyone[start:start + self.page]
            nxt = str(start + self.page) if start + self.page < len(everyone) else ""
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "next_cursor": nxt,
                                             "external_contact_list": [
                {"external_contact": {"external_userid": c, "name": "客户"},
                 "follow_info": {"userid": u}} for u, c in chunk]})
        if path == "/cgi-bin/externalcontact/get":
            uid = params.get("external_userid")
            if not any(uid in cs for cs in self.contacts.values()):
                return httpx.Response(200, json={"errcode": 84061,
                                                 "errmsg": "not external contact"})
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "external_contact": {
                "external_userid": uid}, "follow_user": []})
        return httpx.Response(404, text="no such path")
