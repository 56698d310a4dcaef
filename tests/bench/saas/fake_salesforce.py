"""A Salesforce org in memory, answering in the REST API's documented shapes.

OAuth token endpoint (client credentials and JWT bearer flows), SOQL subset, sObject rows
and Describe, sObject Collections, Limits; a standard lead duplicate rule, field-level
security and data storage, so that tests see what a real org would refuse.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

SF_CLIENT_ID = "3MVG9fakeClientIdForTests0123456789"
SF_CLIENT_SECRET = "F4K3-client-secret-9d8c7b6a5f4e"
SF_LOGIN_HOST = "acme.my.salesforce.com"
SF_INSTANCE = "https://acme-instance.my.salesforce.com"
SF_USERNAME = "bench@acme.test"
V = "/services/data/v62.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Most records count 2 KB of data storage.
KB_PER_RECORD = 2.0

# The fields of the fake schema; the read-only ones are neither createable nor updateable.
SCHEMA: dict[str, tuple[str, ...]] = {
    "Account": ("Id", "Name", "Site", "Industry", "NumberOfEmployees", "OwnerId", "Website",
                "Description"),
    "Contact": ("Id", "Name", "Email", "AccountId"),
    "Opportunity": ("Id", "Name", "StageName", "Amount", "CloseDate", "IsClosed", "AccountId"),
    "Lead": ("Id", "LastName", "Company", "Status", "IsConverted", "CreatedDate", "LeadSource",
             "Description", "Email"),
    "Task": ("Id", "Subject", "ActivityDate", "CreatedDate", "WhatId", "Status", "Priority"),
}
READ_ONLY = {"Id", "IsClosed", "IsConverted", "CreatedDate", "Contact.Name"}


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal)


def sf_error(status: int, code: str, message: str = "error") -> httpx.Response:
    return httpx.Response(status, json=[{"message": message, "errorCode": code}])


@dataclass
class FakeSalesforce:
    """A Salesforce org: OAuth token endpoint, SOQL subset, sObjects, Collections, Limits."""

    org_type: str = "Developer Edition"
    sandbox: bool = False
    api_max: int = 15_000
    api_used: int = 100
    storage_remaining_mb: float = 5.0
    # What the Limits resource reports, when it lags behind the storage really used.
    limits_storage_mb: float | None = None
    page_size: int = 2000
    # The standard lead duplicate rule: "alert" (API saves refused unless allowSave=true),
    # "block" (always refused) or None (no active rule).
    duplicate_rule: str | None = "alert"
    # Field-level security: "Object.Field" hidden from the user, or visible but read-only.
    hidden_fields: set[str] = field(default_factory=set)
    read_only_fields: set[str] = field(default_factory=set)
    # Objects the user cannot see at all, and object-level flags turned off.
    hidden_objects: set[str] = field(default_factory=set)
    object_flags: dict[str, dict[str, bool]] = field(default_factory=dict)
    # Hosts that are the org's My Domain (None: any but login and test.salesforce.com);
    # the client credentials flow is refused elsewhere.
    my_domain_hosts: set[str] | None = None
    # The JWT bearer flow: the certificate's public key and the pre-authorized user.
    jwt_public_key: RSAPublicKey | None = None
    jwt_username: str = SF_USERNAME
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    # Responses to hand out, in order, before normal handling (for error mapping tests).
    script: list[httpx.Response] = field(default_factory=list)
    stored_kb: float = 0.0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _cursors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    PREFIX: ClassVar[dict[str, str]] = {"Account": "001", "Opportunity": "006", "Lead": "00Q",
                                        "Task": "00T", "Contact": "003"}

    def add(self, sobject: str, **fields: Any) -> str:
        rid = f"{self.PREFIX[sobject]}{next(self._ids):012d}AAA"
        self.records.setdefault(sobject, {})[rid] = {"Id": rid, **fields}
        return rid

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def api_requests(self, path_part: str, method: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if path_part in r.url.path
                and (method is None or r.method == method)]

    @property
    def storage_left_mb(self) -> float:
        return self.storage_remaining_mb - self.stored_kb / 1024

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
        return self._route(request, path)

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == f"{V}/query":
            return self._query(request.url.params["q"])
        if path.startswith(f"{V}/query/"):
            rows = self._cursors.pop(path.rsplit("/", 1)[1])
            return self._page(rows)
        if path == f"{V}/limits":
            return self._json(200, {
                "DailyApiRequests": {"Max": self.api_max,
                                     "Remaining": self.api_max - self.api_used},
                "DataStorageMB": {"Max": 5, "Remaining": self.storage_left_mb
                                  if self.limits_storage_mb is None
                                  else self.limits_storage_mb},
            })
        if path == f"{V}/composite/sobjects":
            return self._collections(request)
        describe = re.fullmatch(rf"{V}/sobjects/(\w+)/describe/?", path)
        if describe:
            return self._describe(describe.group(1))
        match = re.fullmatch(rf"{V}/sobjects/(\w+)(?:/(\w+))?", path)
        if match:
            return self._sobject(request, match.group(1), match.group(2))
        return self._json(404, [{"message": "The requested resource does not exist",
                                 "errorCode": "NOT_FOUND"}])

    # ------------------------------------------------------------------ OAuth

    def _issue(self) -> httpx.Response:
        token = f"00DFAKE!AQ{len(self.tokens):04d}.fake-access-token-value"
        self.tokens.append(token)
        self.valid_tokens.add(token)
        return httpx.Response(200, json={
            "access_token": token, "instance_url": SF_INSTANCE,
            "id": f"https://{SF_LOGIN_HOST}/id/00Dfake/005fake", "token_type": "Bearer",
            "issued_at": "1700000000000", "signature": "c2lnbmF0dXJl",
        })

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        if form.get("grant_type") == [JWT_GRANT]:
            return self._jwt_bearer(form.get("assertion", [""])[0])
        host = request.url.host
        if host in ("login.salesforce.com", "test.salesforce.com") or (
            self.my_domain_hosts is not None and host not in self.my_domain_hosts
        ):
            return httpx.Response(400, json={"error": "invalid_grant",
                                             "error_description": "request not supported on "
                                             "this domain"})
        if form.get("grant_type") != ["client_credentials"] or form.get(
            "client_id"
        ) != [SF_CLIENT_ID] or form.get("client_secret") != [SF_CLIENT_SECRET]:
            return httpx.Response(400, json={"error": "invalid_client",
                                             "error_description": "invalid client credentials"})
        return self._issue()

    def _jwt_bearer(self, assertion: str) -> httpx.Response:
        def refuse(description: str) -> httpx.Response:
            return httpx.Response(400, json={"error": "invalid_grant",
                                             "error_description": description})

        if self.jwt_public_key is None:
            return refuse("invalid assertion")
        audience = "https://test.salesforce.com" if self.sandbox else \
            "https://login.salesforce.com"
        try:
            claims = jwt.decode(assertion, self.jwt_public_key, algorithms=["RS256"],
                                audience=audience,
                                options={"require": ["iss", "sub", "aud", "exp"]})
        except jwt.InvalidAudienceError:
            return refuse("audience is invalid")
        except jwt.PyJWTError:
            return refuse("invalid assertion")
        self.assertions.append(claims)
        if claims["iss"] != SF_CLIENT_ID:
            return refuse("invalid client credentials")
        if claims["sub"] != self.jwt_username:
            return refuse("user hasn't approved this consumer")
        # The expiry must lie within three minutes of now.
        if claims["exp"] > time.time() + 180:
            return refuse("invalid assertion")
        return self._issue()

    # ------------------------------------------------------------------ query

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
                # SOQL's LIKE is case-insensitive.
                fld, lead, text, trail = like.groups()
                value, text = str(row.get(fld, "")).lower(), _unescape(text).lower()
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

    # ------------------------------------------------------------------ describe

    def _describe(self, sobject: str) -> httpx.Response:
        if sobject not in SCHEMA or sobject in self.hidden_objects:
            return self._json(404, [{"message": "The requested resource does not exist",
                                     "errorCode": "NOT_FOUND"}])
        fields = []
        for name in SCHEMA[sobject]:
            qualified = f"{sobject}.{name}"
            if qualified in self.hidden_fields:
                continue
            writable = not ({name, qualified} & READ_ONLY) and \
                qualified not in self.read_only_fields
            fields.append({"name": name, "label": name, "type": "string",
                           "createable": writable, "updateable": writable})
        flags = {"queryable": True, "createable": True, "updateable": True, "deletable": True,
                 **self.object_flags.get(sobject, {})}
        return self._json(200, {"name": sobject, "label": sobject, "custom": False,
                                "keyPrefix": self.PREFIX.get(sobject), **flags,
                                "fields": fields})

    # ------------------------------------------------------------------ writes

    def _store(self) -> bool:
        """Count one more record against data storage; False when storage is full."""
        if self.storage_left_mb * 1024 < KB_PER_RECORD:
            return False
        self.stored_kb += KB_PER_RECORD
        return True

    def _collections(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            assert len(body["records"]) <= 200
            results = []
            for rec in body["records"]:
                if not self._store():
                    results.append({"success": False, "errors": [{
                        "statusCode": "STORAGE_LIMIT_EXCEEDED",
                        "message": "storage limit exceeded", "fields": []}]})
                    continue
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

    def _duplicate_of(self, sobject: str, fields: dict[str, Any]) -> str | None:
        """The id of a Lead the standard lead matching rule finds for ``fields``."""
        if sobject != "Lead" or self.duplicate_rule is None:
            return None
        email = str(fields.get("Email") or "").lower()
        for rid, row in self.records.get("Lead", {}).items():
            if (email and str(row.get("Email") or "").lower() == email) or (
                row.get("LastName") == fields.get("LastName")
                and row.get("Company") == fields.get("Company")
            ):
                return rid
        return None

    def _duplicates_detected(self, rid: str, allow_save: bool) -> httpx.Response:
        message = "Use one of these records?"
        return self._json(400, [{"message": message, "errorCode": "DUPLICATES_DETECTED",
                                 "fields": [], "duplicateResult": {
            "allowSave": allow_save, "duplicateRule": "Standard_Lead_Duplicate_Rule",
            "duplicateRuleEntityType": "Lead", "errorMessage": message,
            "matchResults": [{"entityType": "Lead", "errors": [],
                              "matchEngine": "FuzzyMatchEngine", "matchRecords": [{
                                  "additionalInformation": [], "fieldDiffs": [],
                                  "matchConfidence": 100.0, "record": {
                                      "attributes": {"type": "Lead",
                                                     "url": f"{V}/sobjects/Lead/{rid}"},
                                      "Id": rid}}],
                              "rule": "Standard_Lead_Match_Rule_v1_0", "size": 1,
                              "success": True}]}}])

    def _create(self, request: httpx.Request, sobject: str) -> httpx.Response:
        fields = json.loads(request.content)
        duplicate = self._duplicate_of(sobject, fields)
        if duplicate is not None:
            header = request.headers.get("Sforce-Duplicate-Rule-Header", "")
            options = dict(part.strip().split("=", 1) for part in header.split(";")
                           if "=" in part)
            allow_save = self.duplicate_rule == "alert"
            if not (allow_save and options.get("allowSave") == "true"):
                return self._duplicates_detected(duplicate, allow_save)
        if not self._store():
            return self._json(400, [{"message": "storage limit exceeded",
                                     "errorCode": "STORAGE_LIMIT_EXCEEDED", "fields": []}])
        new = self.add(sobject, **fields)
        return self._json(201, {"id": new, "success": True, "errors": []})

    def _sobject(self, request: httpx.Request, sobject: str, rid: str | None) -> httpx.Response:
        table = self.records.setdefault(sobject, {})
        if rid is None and request.method == "POST":
            return self._create(request, sobject)
        if rid not in table:
            return self._json(404, [{"message": "The requested resource does not exist",
                                     "errorCode": "NOT_FOUND"}])
        if request.method == "PATCH":
            table[rid].update(json.loads(request.content))
            return httpx.Response(204)
        return self._json(200, {"attributes": {"type": sobject}, **table[rid]})
