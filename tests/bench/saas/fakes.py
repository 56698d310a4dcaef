"""In-memory stand-ins for the vendor APIs, replaying their documented request/response shapes.

Each fake is an ``httpx.MockTransport`` handler that keeps the requests it saw, so tests can
check what an adapter sent as well as how it read the answers.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx

Handler = Callable[[httpx.Request], httpx.Response]

SF_CLIENT_ID = "3MVG9fakeClientIdForTests0123456789"
SF_CLIENT_SECRET = "F4K3-client-secret-9d8c7b6a5f4e"
SF_LOGIN_HOST = "acme.my.salesforce.com"
SF_INSTANCE = "https://acme-instance.my.salesforce.com"
V = "/services/data/v62.0"


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


@dataclass
class FakeSalesforce:
    """A Salesforce org: OAuth token endpoint, SOQL subset, sObjects, Collections, Limits."""

    org_type: str = "Developer Edition"
    sandbox: bool = False
    api_max: int = 15_000
    api_used: int = 100
    storage_remaining_mb: float = 5.0
    page_size: int = 2000
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    # Responses to hand out, in order, before normal handling (for error mapping tests).
    script: list[httpx.Response] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _cursors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    PREFIX: ClassVar[dict[str, str]] = {"Account": "001", "Opportunity": "006", "Lead": "00Q",
                                        "Task": "00T"}

    def add(self, sobject: str, **fields: Any) -> str:
        rid = f"{self.PREFIX[sobject]}{next(self._ids):012d}AAA"
        self.records.setdefault(sobject, {})[rid] = {"Id": rid, **fields}
        return rid

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def api_requests(self, path_part: str, method: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if path_part in r.url.path
                and (method is None or r.method == method)]

    # ------------------------------------------------------------------ transport

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _json(self, status: int, body: Any) -> httpx.Response:
        headers = {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_max}"}
        return httpx.Response(status, json=body, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/services/oauth2/token":
            return self._token(request)
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return httpx.Response(401, json=[{"message": "Session expired or invalid",
                                              "errorCode": "INVALID_SESSION_ID"}])
        self.api_used += 1
        if self.script:
            return self.script.pop(0)
        if path == f"{V}/query":
            return self._query(request.url.params["q"])
        if path.startswith(f"{V}/query/"):
            rows = self._cursors.pop(path.rsplit("/", 1)[1])
            return self._page(rows)
        if path == f"{V}/limits":
            return self._json(200, {
                "DailyApiRequests": {"Max": self.api_max,
                                     "Remaining": self.api_max - self.api_used},
                "DataStorageMB": {"Max": 5, "Remaining": self.storage_remaining_mb},
            })
        if path == f"{V}/composite/sobjects":
            return self._collections(request)
        match = re.fullmatch(rf"{V}/sobjects/(\w+)(?:/(\w+))?", path)
        if match:
            return self._sobject(request, match.group(1), match.group(2))
        return self._json(404, [{"message": "The requested resource does not exist",
                                 "errorCode": "NOT_FOUND"}])

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        if form.get("grant_type") != ["client_credentials"] or form.get(
            "client_id"
        ) != [SF_CLIENT_ID] or form.get("client_secret") != [SF_CLIENT_SECRET]:
            return httpx.Response(400, json={"error": "invalid_client",
                                             "error_description": "invalid client credentials"})
        token = f"00DFAKE!AQ{len(self.tokens):04d}.fake-access-token-value"
        self.tokens.append(token)
        self.valid_tokens.add(token)
        return httpx.Response(200, json={
            "access_token": token, "instance_url": SF_INSTANCE,
            "id": f"https://{SF_LOGIN_HOST}/id/00Dfake/005fake", "token_type": "Bearer",
            "issued_at": "1700000000000", "signature": "c2lnbmF0dXJl",
        })

    def _page(self, rows: list[dict[str, Any]]) -> httpx.Response:
        head, rest = rows[: self.page_size], rows[self.page_size:]
        body: dict[str, Any] = {"totalSize": len(rows), "done": not rest, "records": head}
        if rest:
            locator = f"01gFAKE-{len(self._cursors) + len(self.requests)}"
            self._cursors[locator] = rest
            body["nextRecordsUrl"] = f"{V}/query/{locator}"
        return self._json(200, body)

    def _query(self, soql: str) -> httpx.Response:
        if "FROM Organization" in soql:
            return self._page([{"Id": "00Dfake", "Name": "Acme Test Org",
                                "IsSandbox": self.sandbox, "OrganizationType": self.org_type,
                                "InstanceName": "CS42", "TrialExpirationDate": None}])
        main = soql.rsplit(" FROM ", 1)[1]
        match = re.fullmatch(r"(\w+)(?: WHERE (.*?))?(?: ORDER BY [\w ,]+?)?(?: LIMIT (\d+))?",
                             main)
        if not match:
            return self._json(400, [{"message": f"cannot parse {soql}",
                                     "errorCode": "MALFORMED_QUERY"}])
        sobject, where, limit = match.groups()
        rows = [r for r in self.records.get(sobject, {}).values()
                if self._matches(r, where or "")]
        rows.sort(key=lambda r: r["Id"])
        if limit:
            rows = rows[: int(limit)]
        return self._page(rows)

    @staticmethod
    def _matches(row: dict[str, Any], where: str) -> bool:
        for cond in filter(None, where.split(" AND ")):
            like = re.fullmatch(r"(\w+) LIKE '(%?)(.*?)(%?)'", cond)
            equal = re.fullmatch(r"(\w+) = '(.*)'", cond)
            if like:
                fld, lead, text, trail = like.groups()
                value, text = str(row.get(fld, "")), _unescape(text)
                ok = (text in value if lead and trail else value.endswith(text) if lead
                      else value.startswith(text) if trail else value == text)
                if not ok:
                    return False
            elif equal:
                if str(row.get(equal.group(1))) != _unescape(equal.group(2)):
                    return False
            elif cond == "IsConverted = false":
                continue
            else:
                raise AssertionError(f"fake cannot evaluate {cond!r}")
        return True

    def _collections(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            assert len(body["records"]) <= 200
            results = []
            for rec in body["records"]:
                fields = {k: v for k, v in rec.items() if k != "attributes"}
                rid = self.add(rec["attributes"]["type"], **fields)
                results.append({"id": rid, "success": True, "errors": []})
            return self._json(200, results)
        ids = request.url.params["ids"].split(",")
        assert len(ids) <= 200, "sObject Collections DELETE takes at most 200 ids"
        results = []
        for rid in ids:
            table = next((t for t in self.records.values() if rid in t), None)
            if table is None:
                results.append({"id": rid, "success": False, "errors": [
                    {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}]})
            else:
                del table[rid]
                results.append({"id": rid, "success": True, "errors": []})
        return self._json(200, results)

    def _sobject(self, request: httpx.Request, sobject: str, rid: str | None) -> httpx.Response:
        table = self.records.setdefault(sobject, {})
        if rid is None and request.method == "POST":
            new = self.add(sobject, **json.loads(request.content))
            return self._json(201, {"id": new, "success": True, "errors": []})
        if rid not in table:
            return self._json(404, [{"message": "The requested resource does not exist",
                                     "errorCode": "NOT_FOUND"}])
        if request.method == "PATCH":
            table[rid].update(json.loads(request.content))
            return httpx.Response(204)
        return self._json(200, {"attributes": {"type": sobject}, **table[rid]})


def sf_error(status: int, code: str, message: str = "error") -> httpx.Response:
    return httpx.Response(status, json=[{"message": message, "errorCode": code}])


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
