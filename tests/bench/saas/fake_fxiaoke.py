"""Fxiaoke open API stand-in, replaying the documented request and response shapes.

Shapes from developer.fxiaoke.com/openapi_v2 (as digested in fxp/skillify,
skills/fxiaoke/references): the legacy corpAccessToken body parameters, ``thirdTraceId`` in
the query string of every call, answers with HTTP 200 and an ``errorCode``, data/query with
``data.dataList``, object/describe with ``data.describe.fields``, create refused when a
required field of the description is missing, invalidate-then-delete.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

FX_APP_ID = "FSAID_fake0001"
FX_APP_SECRET = "fx-app-secret-5e4d3c2b1a"
FX_OPEN_USER_ID = "FSUID_FAKE1000"
FX_PERMANENT_CODE = "FX-PERMANENT-CODE-778899"

TOKEN = "/cgi/corpAccessToken/get/V2"
DESCRIBE = "/cgi/crm/v2/object/describe"
CREATE = "/cgi/crm/v2/data/create"
GET = "/cgi/crm/v2/data/get"
QUERY = "/cgi/crm/v2/data/query"
INVALID = "/cgi/crm/v2/data/invalid"
DELETE = "/cgi/crm/v2/data/delete"
# Types the platform computes or numbers itself (not written by clients).
COMPUTED = frozenset({"auto_number", "formula", "count", "quote"})


def fx_field(api_name: str, type_: str, label: str, *, required: bool = False,
             define_type: str = "package", **extra: Any) -> dict[str, Any]:
    """One entry of ``data.describe.fields`` as object/describe returns it."""
    return {"api_name": api_name, "type": type_, "label": label, "is_required": required,
            "define_type": define_type, "is_active": True, **extra}


def _common_fields() -> dict[str, dict[str, Any]]:
    fields = [
        fx_field("_id", "text", "_id", define_type="system"),
        fx_field("name", "text", "名称", required=True),
        fx_field("owner", "employee", "负责人", required=True),
        fx_field("record_type", "record_type", "业务类型", required=True,
                 options=[{"api_name": "default__c", "label": "预设业务类型"}]),
        fx_field("life_status", "select_one", "生命状态", required=True,
                 define_type="system", default_value="normal"),
        fx_field("create_time", "date_time", "创建时间", define_type="system"),
    ]
    return {f["api_name"]: f for f in fields}


def account_fields() -> dict[str, dict[str, Any]]:
    """AccountObj as a tenant with the preset required fields describes it."""
    fields = _common_fields()
    fields["account_no"] = fx_field("account_no", "auto_number", "客户编号", required=True)
    fields["tel"] = fx_field("tel", "phone_number", "电话")
    return fields


def lead_fields() -> dict[str, dict[str, Any]]:
    """LeadsObj with the company required, e-mail and source optional."""
    fields = _common_fields()
    fields["company"] = fx_field("company", "text", "公司", required=True)
    fields["email"] = fx_field("email", "email", "邮件")
    fields["source"] = fx_field("source", "select_one", "来源", options=[
        {"label": "官网", "value": "1"}, {"label": "展会", "value": "2"}])
    fields["leads_status"] = fx_field("leads_status", "select_one", "状态", required=True,
                                      default_value="1", options=[{"label": "未分配",
                                                                   "value": "1"}])
    return fields


def _missing(fields: dict[str, dict[str, Any]], obj: dict[str, Any]) -> list[str]:
    """Labels of required fields a create request leaves empty or fills wrongly."""
    out = []
    for name, f in fields.items():
        if not f.get("is_required") or f.get("is_active") is False \
                or f.get("define_type") == "system" or f["type"] in COMPUTED:
            continue
        value = obj.get(name)
        empty = value in (None, "", [])
        bad_employee = f["type"].startswith("employee") and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value))
        choices = [o.get("value", o.get("api_name")) for o in f.get("options", [])]
        bad_choice = bool(choices) and f["type"] in ("select_one", "record_type") \
            and value not in choices
        if empty or bad_employee or bad_choice:
            out.append(str(f["label"]))
    return out


@dataclass
class FakeFxiaoke:
    """Fxiaoke open API: corpAccessToken, describe, data/query (STARTWITH, _id GT),
    create/get/invalid/delete."""

    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    describes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {
        "AccountObj": account_fields(), "LeadsObj": lead_fields()})
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    # The thread each token request came from (timed calls must never be one of them).
    token_threads: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    # Answers to hand out, in order, to CRM calls before normal handling.
    script: list[dict[str, Any]] = field(default_factory=list)
    invalidated: set[str] = field(default_factory=set)
    # When set, the token endpoint answers only once the event is set (a slow fetch).
    token_gate: threading.Event | None = None
    # Search values with their trailing blanks removed (a search engine's habit).
    trim_filter_values: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add(self, api_name: str, **fields: Any) -> str:
        rid = f"{next(self._ids):024x}"
        self.records.setdefault(api_name, {})[rid] = {"_id": rid, **fields}
        return rid

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]

    def trace_ids(self) -> list[str]:
        return [r.url.params.get("thirdTraceId", "") for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        path = request.url.path
        if path == TOKEN:
            return self._token(body)
        if body.get("corpAccessToken") not in self.valid_tokens:
            return httpx.Response(200, json={
                "errorCode": 20016, "traceId": "E-O.fake",
                "errorMessage": "the cropId,cropAccessToken or authorization is error"})
        assert body.get("corpId") == "FSCID_FAKE"
        assert body.get("currentOpenUserId") == FX_OPEN_USER_ID
        if self.script:
            return httpx.Response(200, json=self.script.pop(0))
        return httpx.Response(200, json=self._crm(path, body))

    def _token(self, body: dict[str, Any]) -> httpx.Response:
        self.token_threads.append(threading.current_thread().name)
        if self.token_gate is not None:
            self.token_gate.wait(10)
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

    def _crm(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = body["data"]
        ok: dict[str, Any] = {"errorCode": 0, "errorMessage": "OK",
                              "traceId": f"E-O.fake.{uuid.uuid4().hex[:8]}"}
        if path == DESCRIBE:
            fields = self.describes.get(data["apiName"])
            if fields is None:
                return {"errorCode": 32000, "errorMessage": "对象不存在"}
            return {**ok, "data": {"describe": {"api_name": data["apiName"],
                                                "fields": fields}}}
        if path == CREATE:
            obj = dict(data["object_data"])
            api_name = obj.pop("dataObjectApiName")
            missing = _missing(self.describes.get(api_name, {}), obj)
            if missing:
                return {"errorCode": 32000, "errorMessage": f"必填字段未填写: {missing}"}
            return {**ok, "dataId": self.add(api_name, **obj)}
        if path == GET:
            row = self.records.get(data["dataObjectApiName"], {}).get(data["objectDataId"])
            if row is None:
                return {"errorCode": 32000, "errorMessage": "数据不存在"}
            return {**ok, "data": row}
        if path == QUERY:
            return {**ok, "data": self._query(data)}
        if path == INVALID:
            self.invalidated.add(data["object_data_id"])
            return ok
        if path == DELETE:
            assert len(data["idList"]) <= 100
            table = self.records.get(data["dataObjectApiName"], {})
            for rid in data["idList"]:
                assert rid in self.invalidated, "delete needs an invalidated record"
                table.pop(rid, None)
            return ok
        return {"errorCode": 32000, "errorMessage": f"no such path {path}"}

    def _query(self, data: dict[str, Any]) -> dict[str, Any]:
        info = data["search_query_info"]
        assert info["limit"] <= 100 and info["offset"] % info["limit"] == 0
        rows = sorted(self.records.get(data["dataObjectApiName"], {}).values(),
                      key=lambda r: r["_id"])
        for flt in info["filters"]:
            fld, (value,), op = flt["field_name"], flt["field_values"], flt["operator"]
            value = value.rstrip() if self.trim_filter_values else value
            if op == "STARTWITH":
                rows = [r for r in rows if str(r.get(fld, "")).startswith(value)]
            elif op == "GT":
                rows = [r for r in rows if str(r.get(fld, "")) > value]
            else:
                raise AssertionError(f"fake cannot evaluate operator {op}")
        page = rows[info["offset"]: info["offset"] + info["limit"]]
        return {"dataList": page, "offset": info["offset"], "limit": info["limit"],
                "total": 0}
