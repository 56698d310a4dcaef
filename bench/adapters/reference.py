"""Adapter of the reference CRM's HTTP API over a gevent-native keep-alive connection pool.

The API token comes only from ``CRMBENCH_API_TOKEN``; it is never part of the URL, a repr
or an error message.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import msgspec
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError

from bench.adapters.base import (
    ActivityInput,
    Capability,
    Keyspace,
    LeadInput,
    SearchQuery,
    Status,
    declared,
    status_for_http,
)
from bench.errors import TargetUnreachable, UserError

TOKEN_ENV = "CRMBENCH_API_TOKEN"
DEFAULT_PORT = 8000
DEFAULT_POOL_SIZE = 64
CONNECTION_TIMEOUT = 5.0
NETWORK_TIMEOUT = 30.0

_JSON_BODY = {"Content-Type": "application/json"}
_LEAD_FIELDS = tuple(f.name for f in fields(LeadInput))
_ACTIVITY_FIELDS = tuple(f.name for f in fields(ActivityInput))
# Socket errors (refused, reset, timeouts) and broken HTTP framing: the target failed.
_TRANSPORT_ERRORS = (OSError, HTTPParseError)


class _Health(msgspec.Struct):
    status: str
    version: str
    backend: str


class _Stats(msgspec.Struct):
    customers: int
    opportunities: int
    reps: int
    regions: int
    products: int
    leads: int


def _non_null(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: v for n in names if (v := getattr(obj, n)) is not None}


class ReferenceAdapter:
    """Adapter of ``reference+http://host:port[/prefix]``, the reference CRM's HTTP API."""

    name: ClassVar[str] = "reference+http"
    platform: ClassVar[str] = "reference"
    capabilities: ClassVar[dict[str, Capability]] = declared(
        {"crud.mixed": "reference CRM HTTP API"}
    )

    def __init__(self, host: str, port: int = DEFAULT_PORT, prefix: str = "") -> None:
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.pool_size = DEFAULT_POOL_SIZE
        self._token = os.environ.get(TOKEN_ENV, "").strip()
        self._client: HTTPClient | None = None
        self._version: str | None = None

    @classmethod
    def from_url(cls, url: str) -> ReferenceAdapter:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("reference+http", "reference"):
            raise UserError(f"not a reference CRM URL (reference+http://host:port): {url!r}")
        if "@" in parts.netloc:
            # Say nothing of what was given: it may be the secret itself.
            raise UserError(
                "reference CRM URL must not carry credentials; remove the user/password part "
                f"and set the API token in the {TOKEN_ENV} environment variable"
            )
        host = parts.hostname
        if scheme == "reference" and host == "embedded":
            raise UserError(
                "reference://embedded is started by the harness (crmbench run); from Python, "
                "start it with bench.adapters.embedded.EmbeddedReference and use its .url"
            )
        if not host:
            raise UserError(f"reference CRM URL names no host: {url!r}")
        if parts.query or parts.fragment:
            raise UserError(f"reference CRM URL takes no query or fragment: {url!r}")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise UserError(f"reference CRM URL has an invalid port: {url!r}") from None
        return cls(host, port, parts.path)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"reference+http://{host}:{self.port}{self.prefix}"

    def __repr__(self) -> str:
        return f"ReferenceAdapter(url={self.url!r}, pool_size={self.pool_size})"

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Build the connection pool, then check /health and that the token opens /stats."""
        if self._client is None:
            headers = {"Accept": "application/json", "User-Agent": "crmbench"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._client = HTTPClient(
                self.host, self.port, headers=headers, concurrency=self.pool_size,
                connection_timeout=CONNECTION_TIMEOUT, network_timeout=NETWORK_TIMEOUT,
            )
        code, body = self._fetch("/health")
        if code != 200:
            raise TargetUnreachable(
                f"reference CRM at {self.host}:{self.port} is not healthy: /health answered {code}"
            )
        try:
            health = msgspec.json.decode(body, type=_Health)
        except msgspec.DecodeError as exc:
            raise UserError(
                f"{self.host}:{self.port}{self.prefix} answered /health, but not as the "
                f"reference CRM does ({exc}); check the URL"
            ) from None
        self._version = f"reference-crm {health.version} ({health.backend})"
        self._stats()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def platform_version(self) -> str | None:
        return self._version

    def keyspace(self) -> Keyspace:
        stats = self._stats()
        return Keyspace(
            customers=stats.customers, opportunities=stats.opportunities, reps=stats.reps,
            regions=stats.regions, products=stats.products,
        )

    def _http(self) -> HTTPClient:
        if self._client is None:
            raise RuntimeError("ReferenceAdapter used before open() or after close()")
        return self._client

    def _fetch(self, path: str) -> tuple[int, bytes]:
        """GET for setup calls: an unreachable target raises instead of returning a Status."""
        try:
            with self._http().get(self.prefix + path) as resp:
                return resp.status_code, resp.read()
        except _TRANSPORT_ERRORS as exc:
            raise TargetUnreachable(
                f"reference CRM at {self.host}:{self.port} does not answer: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    def _stats(self) -> _Stats:
        code, body = self._fetch("/stats")
        if code == 401:
            state = "rejected the API token" if self._token else "requires an API token"
            raise UserError(
                f"reference CRM at {self.host}:{self.port} {state}; set {TOKEN_ENV} to the "
                "token the server was started with"
            )
        if code != 200:
            raise UserError(
                f"reference CRM at {self.host}:{self.port} answered /stats with {code}; "
                "is it a crmbench reference CRM of this version?"
            )
        try:
            return msgspec.json.decode(body, type=_Stats)
        except msgspec.DecodeError as exc:
            raise UserError(
                f"reference CRM at {self.host}:{self.port} sent unexpected /stats: {exc}"
            ) from None

    # ------------------------------------------------------------------ verbs

    def _call(self, method: str, path: str, body: Any = None) -> Status:
        try:
            if body is None:
                resp = self._http().request(method, self.prefix + path)
            else:
                resp = self._http().request(
                    method, self.prefix + path, body=msgspec.json.encode(body),
                    headers=_JSON_BODY,
                )
            with resp:
                # Reading the whole body hands the connection back to the pool for reuse.
                resp.read()
                return status_for_http(resp.status_code)
        except _TRANSPORT_ERRORS:
            return Status.error

    def get_customer(self, customer_id: int) -> Status:
        return self._call("GET", f"/customers/{customer_id}")

    def customer_360(self, customer_id: int) -> Status:
        return self._call("GET", f"/customers/{customer_id}/360")

    def search_customers(self, query: SearchQuery) -> Status:
        params = _non_null(query, ("name_prefix", "region_id", "tier", "tag", "limit"))
        return self._call("GET", f"/customers?{urlencode(params, quote_via=quote)}")

    def list_leads(self, owner_rep_id: int, limit: int = 20) -> Status:
        return self._call("GET", f"/leads?owner_rep_id={owner_rep_id}&status=open&limit={limit}")

    def create_lead(self, lead: LeadInput) -> Status:
        return self._call("POST", "/leads", _non_null(lead, _LEAD_FIELDS))

    def log_activity(self, activity: ActivityInput) -> Status:
        return self._call("POST", "/activities", _non_null(activity, _ACTIVITY_FIELDS))

    def update_opportunity_stage(self, opportunity_id: int, stage: str) -> Status:
        return self._call("POST", f"/opportunities/{opportunity_id}/stage", {"stage": stage})

    def update_customer(self, customer_id: int, changes: dict[str, Any]) -> Status:
        return self._call("PATCH", f"/customers/{customer_id}", changes)
