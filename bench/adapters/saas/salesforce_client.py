"""The Salesforce REST API session under the adapter: tokens, calls, queries, errors.

Setup calls (token, preflight, seeding, cleanup) fetch a token when they need one and
retry throttling; timed calls (the workload's verbs) are sent once with the cached token,
and a refused token is replaced in the background. Error bodies are the REST API's
``[{"message", "errorCode"}]`` (REST API Developer Guide, Status Codes and Error
Responses); every answer's ``Sforce-Limit-Info: api-usage=used/max`` header is kept.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from bench.adapters.base import (
    CredentialField,
    CredentialReport,
    Key,
    Status,
    status_for_http,
)
from bench.adapters.saas.common import (
    IdMap,
    VendorAdapter,
    is_tagged,
    json_or_empty,
    tag_prefix,
)
from bench.adapters.saas.http import LimitUsage, Secret, TokenBox, VendorClient, redact
from bench.adapters.saas.salesforce_auth import TokenSource, flow_fields
from bench.errors import UserError

API_VERSION = "62.0"
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")

log = logging.getLogger("crmbench.vendor.salesforce")

# Refusals whose reason a status alone would hide: errorCode -> what it means.
REFUSALS: dict[str, str] = {
    "DUPLICATES_DETECTED": (
        "a duplicate rule of the org blocks the record (its action is Block, which "
        "Sforce-Duplicate-Rule-Header allowSave=true cannot bypass); deactivate the rule or "
        "set it to Allow with an alert for the run"
    ),
    "STORAGE_LIMIT_EXCEEDED": (
        "the org's data storage is full, so the records the run creates are refused; free "
        "storage (crmbench cleanup removes earlier runs' records) or run shorter"
    ),
}


def soql_str(value: str) -> str:
    """A quoted SOQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'").replace("%", "\\%").replace("_", "\\_")


def soql_prefix(value: str) -> str:
    """A LIKE pattern (quoted) matching strings that start with ``value``."""
    return "'" + _like_escape(value) + "%'"


def soql_suffix(value: str) -> str:
    """A LIKE pattern (quoted) matching strings that end with ``value``."""
    return "'%" + _like_escape(value) + "'"


def error_code(resp: httpx.Response) -> str | None:
    """The errorCode of a REST error body ``[{"message", "errorCode"}]`` (or OAuth ``error``)."""
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code = body[0].get("errorCode")
        return str(code) if code is not None else None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return None


def error_text(resp: httpx.Response) -> str:
    """errorCode and message of an error response, secrets removed."""
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        text = f"{body[0].get('errorCode')}: {body[0].get('message')}"
    elif isinstance(body, dict):
        text = f"{body.get('error')}: {body.get('error_description', body.get('message'))}"
    else:
        text = f"HTTP {resp.status_code}"
    return redact(text)[:300]


def error_message(resp: httpx.Response) -> str:
    """The message of a REST error body ``[{"message", "errorCode"}]``, or ''."""
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("message") or "")
    return ""


def sf_status(resp: httpx.Response) -> Status:
    """Status of a REST response; REQUEST_LIMIT_EXCEEDED (HTTP 403) is rate limiting."""
    if resp.status_code in (400, 403) and error_code(resp) == "REQUEST_LIMIT_EXCEEDED":
        return Status.rate_limited
    return status_for_http(resp.status_code)


def _bearer(token: Secret) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.reveal()}"}


def concurrent_limit(resp: httpx.Response) -> bool:
    """REQUEST_LIMIT_EXCEEDED for too many concurrent long-running requests.

    Salesforce answers REQUEST_LIMIT_EXCEEDED both when the org's rolling 24-hour
    allocation is used up ("TotalRequests Limit exceeded.") and when too many requests of
    20 s or more run at once ("ConcurrentRequests (Concurrent API Requests) Limit
    exceeded"; API Request Limits and Allocations, Salesforce Developer Limits Quick
    Reference). Only the second clears within seconds and is worth a backoff.
    """
    return (resp.status_code in (400, 403) and error_code(resp) == "REQUEST_LIMIT_EXCEEDED"
            and "concurrent" in error_message(resp).lower())


class SalesforceClient(VendorAdapter):
    """Token, REST calls and SOQL queries of one org; the adapter adds the verbs."""

    def __init__(self, host: str, *, api_version: str = API_VERSION, **kw: Any) -> None:
        super().__init__(host, **kw)
        self.api_version = api_version
        self.usage = LimitUsage()
        self._auth: TokenSource | None = None
        self._instance: str | None = None
        self._org: dict[str, Any] | None = None
        self._maps: dict[str, IdMap] = {}
        self.wall_clock: Callable[[], float] = time.time
        self.refusals: Counter[str] = Counter()

    def credential_report(self) -> CredentialReport:
        """The fields of the flow in use (client credentials, or JWT bearer once its
        username or key file is set), never their values."""
        creds = self.read_credentials()
        wanted = flow_fields(creds)
        return CredentialReport(
            tuple(CredentialField(d["field"], d["env"], d["set"], d["source"])
                  for d in creds.describe() if d["field"] in wanted),
            str(creds.file),
        )

    @property
    def _data(self) -> str:
        return f"/services/data/v{self.api_version}"

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Fetch a token, read the Organization record, load the run's id maps if tagged."""
        if self._http is not None:
            return
        self._auth = TokenSource(self.host, self.read_credentials(), wall_clock=self.wall_clock)
        self._http = VendorClient(
            "Salesforce", transport=self.transport, throttled=concurrent_limit,
            sleep=self._sleep_fn(), pool_size=self.pool_size,
        )
        self._token = TokenBox(self._fetch_token, clock=self.clock)
        try:
            self._token.get()
            self._org = self._organization()
            if self._adopt_run_id() is not None:
                self._load_maps()
        except BaseException:
            self.close()
            raise

    def platform_version(self) -> str | None:
        if self._org is None:
            return None
        kind = str(self._org.get("OrganizationType") or "unknown edition")
        sandbox = " sandbox" if self._org.get("IsSandbox") else ""
        return f"Salesforce {kind}{sandbox}, REST API v{self.api_version}"

    # ------------------------------------------------------------------ HTTP

    def _fetch_token(self) -> tuple[Secret, float | None]:
        if self._auth is None:
            raise RuntimeError("credentials not loaded")
        grant = self._auth.fetch(self._client())
        self._instance = grant.instance
        return grant.token, None

    def _api(self, method: str, path: str, *, setup: bool,
             headers: Mapping[str, str] | None = None, **kw: Any) -> httpx.Response:
        """One REST call with the cached token.

        Setup calls fetch a token when there is none and, after a 401 (INVALID_SESSION_ID),
        fetch a new one and repeat the call once. Timed calls never fetch: they take the
        cached token (``peek``), are sent once, and a 401 keeps its status while the token
        is replaced in the background (``refresh_later``).
        """
        if self._token is None or self._instance is None:
            raise RuntimeError("SalesforceAdapter used before open()")
        url = path if path.startswith("https://") else self._instance + path
        client = self._client()
        extra = dict(headers or {})
        if not setup:
            token = self._token.peek()
            resp = client.send(method, url, headers={**extra, **_bearer(token)}, **kw)
            self._note_usage(resp)
            if resp.status_code == 401:
                self._token.refresh_later(token)
            return resp
        token = self._token.get()
        resp = client.setup(method, url, headers={**extra, **_bearer(token)}, **kw)
        self._note_usage(resp)
        if resp.status_code == 401:
            log.debug("Salesforce session rejected (%s); fetching a new token", error_code(resp))
            token = self._token.refresh(token)
            resp = client.setup(method, url, headers={**extra, **_bearer(token)}, **kw)
            self._note_usage(resp)
        return resp

    def _refused(self, resp: httpx.Response) -> Status:
        """Status of a timed write; a refusal whose reason matters is logged once."""
        status = sf_status(resp)
        code = error_code(resp) if status is Status.rejected else None
        if code in REFUSALS:
            self.refusals[code] += 1
            if self.refusals[code] == 1:
                log.warning("Salesforce refused a record (%s): %s", code, REFUSALS[code])
        return status

    def _note_usage(self, resp: httpx.Response) -> None:
        match = _LIMIT_INFO.search(resp.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage.note(int(match.group(1)), int(match.group(2)))

    def _expect(self, resp: httpx.Response, what: str) -> Any:
        """The JSON body of a successful setup call; otherwise a clear error."""
        if 200 <= resp.status_code < 300:
            return resp.json() if resp.content else None
        if concurrent_limit(resp):
            raise UserError(
                f"Salesforce {what}: too many long-running requests run at once in the org "
                f"({error_text(resp)}), even after backing off; retry when other "
                "integrations are quieter"
            )
        if error_code(resp) == "REQUEST_LIMIT_EXCEEDED":
            raise UserError(
                f"Salesforce {what}: the org's daily API request allocation is used up "
                f"({error_text(resp)}); it is counted over a rolling 24 hours, so wait for "
                "allocation to free up (see DailyApiRequests in crmbench doctor)"
            )
        raise UserError(f"Salesforce {what} failed: HTTP {resp.status_code} {error_text(resp)}")

    def _query_all(self, soql: str) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following nextRecordsUrl."""
        resp = self._api("GET", f"{self._data}/query", setup=True, params={"q": soql})
        records: list[dict[str, Any]] = []
        while True:
            body = self._expect(resp, "query")
            records.extend(body.get("records", []))
            next_url = body.get("nextRecordsUrl")
            if body.get("done", True) or not next_url:
                return records
            resp = self._api("GET", str(next_url), setup=True)

    def _organization(self) -> dict[str, Any]:
        rows = self._query_all(
            "SELECT Id, Name, IsSandbox, OrganizationType, InstanceName, TrialExpirationDate "
            "FROM Organization LIMIT 1"
        )
        if not rows:
            raise UserError(f"Salesforce at {self.host} returned no Organization record")
        return rows[0]

    def _tagged_ids(self, sobject: str, field: str, run_id: str) -> list[str]:
        """Ids of the records of run ``run_id``, ordered by Id.

        SOQL's LIKE ignores case, so the prefix query may also find the records of a run
        whose id differs only in case; each name is checked again.
        """
        rows = self._query_all(
            f"SELECT Id, {field} FROM {sobject} WHERE {field} LIKE "
            f"{soql_prefix(tag_prefix(run_id))} ORDER BY Id"
        )
        return [str(r["Id"]) for r in rows if is_tagged(r.get(field), run_id)]

    def _load_maps(self) -> None:
        run_id = self._run()
        self._maps = {
            "Account": IdMap(self._tagged_ids("Account", "Name", run_id)),
            "Opportunity": IdMap(self._tagged_ids("Opportunity", "Name", run_id)),
        }

    def _run(self) -> str:
        """The run id; records are written and mapped only for a run."""
        if self.run_id is None:
            raise RuntimeError("SalesforceAdapter writes and maps only the records of a run; "
                               "set run_id")
        return self.run_id

    def _prefix(self) -> str:
        """The run's tag and separator: every name the run writes starts with it."""
        return tag_prefix(self._run())

    def _id(self, sobject: str, harness_id: Key) -> str | None:
        id_map = self._maps.get(sobject)
        return id_map.get(harness_id) if id_map is not None else None
