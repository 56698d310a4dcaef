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

# The Salesforce fake lives in its own module; these names stay importable from here.
from tests.bench.saas.fake_salesforce import (
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_INSTANCE,
    SF_LOGIN_HOST,
    FakeSalesforce,
    V,
    sf_error,
)

Handler = Callable[[httpx.Request], httpx.Response]

__all__ = [
    "FX_APP_ID", "FX_APP_SECRET", "FX_OPEN_USER_ID", "FX_PERMANENT_CODE", "SF_CLIENT_ID",
    "SF_CLIENT_SECRET", "SF_INSTANCE", "SF_LOGIN_HOST", "FakeFxiaoke", "FakeSalesforce", "V",
    "sf_error",
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
