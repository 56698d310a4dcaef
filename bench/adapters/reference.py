"""Adapter of the reference CRM's HTTP API over a gevent-native keep-alive connection pool.

The API token comes only from ``CRMBENCH_API_TOKEN``; it is never part of the URL, a repr
or an error message.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from typing import IO, Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import msgspec
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError

from bench.adapters.base import (
    ActivityInput,
    BaseAdapter,
    Capability,
    CustomerChanges,
    EventInput,
    GeneratorSettings,
    Key,
    Keyspace,
    LeadInput,
    SearchQuery,
    Stage,
    Status,
    StreamMessage,
    declared,
    status_for_http,
)
from bench.errors import TargetUnreachable, UserError

TOKEN_ENV = "CRMBENCH_API_TOKEN"
DEFAULT_PORT = 8000
DEFAULT_POOL_SIZE = 64
CONNECTION_TIMEOUT = 5.0
NETWORK_TIMEOUT = 30.0
# The stream sends a heartbeat every 15 s; silence for longer means the target is gone.
STREAM_TIMEOUT = 45.0

_LEAD_FIELDS = tuple(f.name for f in fields(LeadInput))
_ACTIVITY_FIELDS = tuple(f.name for f in fields(ActivityInput))
# Socket errors (refused, reset, timeouts) and broken HTTP framing: the target failed.
_TRANSPORT_ERRORS = (OSError, HTTPParseError)
# The workload's stage vocabulary on the reference CRM's pipeline.
STAGE_NAMES: dict[str, str] = {
    "open": "prospecting", "qualified": "qualification", "proposal": "proposal",
    "negotiation": "negotiation", "won": "closed_won", "lost": "closed_lost",
}
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


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


class _FramingError(OSError):
    """The answer was not HTTP/1.1 as the reference CRM sends it."""


class _Connection:
    """One keep-alive HTTP/1.1 connection for the timed verbs.

    About half the CPU of geventhttpclient per call (60 against 125 us here), which the
    load generator would otherwise add to every response time it measures.
    """

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=CONNECTION_TIMEOUT)
        self.sock.settimeout(NETWORK_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self.received = 0
        self._deadline = 0.0

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        # One deadline for the whole answer: a body that trickles in byte by byte is a
        # timeout too, not an ever longer response time.
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no whole answer within {NETWORK_TIMEOUT:g} s")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed by the target")
        self.received += len(chunk)
        self._buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._more()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            self._more()
        out, self._buf = self._buf[:end], self._buf[end + 2:]
        return out

    def exchange(self, request: bytes, head_only: bool = False) -> tuple[int, bytes, bool]:
        """Send one request; return the status, the whole body and whether to reuse."""
        self.received = 0
        self._deadline = time.monotonic() + NETWORK_TIMEOUT
        self.sock.sendall(request)
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self._buf = self._buf[:end], self._buf[end + 4:]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _FramingError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                keep = value.strip().lower() == b"keep-alive" or (
                    keep and value.strip().lower() != b"close")
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if chunked:
            body = bytearray()
            while size := int(self._line().split(b";", 1)[0], 16):
                body += self._take(size)
                self._take(2)
            while self._line():
                pass
            return status, bytes(body), keep
        if length is not None:
            return status, self._take(length), keep
        # No framing: the body ends when the target closes the connection.
        with_rest = bytearray(self._buf)
        while chunk := self.sock.recv(65536):
            with_rest += chunk
        return status, bytes(with_rest), False


def _fault(exc: BaseException) -> Status:
    """A timed verb's transport failure: no answer in time, or a broken connection."""
    return Status.timeout if isinstance(exc, TimeoutError) else Status.transport_error


class ReferenceAdapter(BaseAdapter):
    """Adapter of ``reference+http://host:port[/prefix]``, the reference CRM's HTTP API.

    It has no load hook: the reference CRM loads a fixture profile itself when it starts
    (``crmbench serve --data DIR``; ``reference://embedded`` does so for each run).
    """

    name: ClassVar[str] = "reference+http"
    platform: ClassVar[str] = "reference"
    sequential_keys: ClassVar[bool] = True
    capabilities: ClassVar[dict[str, Capability]] = declared(
        {
            "crud.mixed": "reference CRM HTTP API",
            "agent.latency": "POST /agents/lead_intake/runs; completion on GET /stream",
            "agent.steps": "decision log at GET /agents/runs/{id}",
            "agent.takeover": "confidence, quote and tier thresholds; GET /agents/queue",
            "agent.explain": "each decision-log step records its inputs and rule",
            "cdp.event_delay": "POST /events -> profile.updated on GET /stream",
            "cdp.realtime": "HTTP batch intake (POST /events) and an SSE change stream",
            "cdp.tags_explained": "GET /customers/{id}/profile: formula, weights, source events",
            "workflow.max_nodes": "POST /workflows (DAG documents up to 32 MiB), POST "
            "/workflows/{id}/runs",
            "workflow.dag": "nodes and edges validated on deploy: cycles, dangling edges, types",
            "workflow.breaker": "3 failed or timed-out runs in a row pause it; workflow.paused",
            "workflow.lineage": "GET /workflows/{id}/lineage",
            "sla.granularity": "field, process and action SLAs (POST /slas)",
            "sla.field": "field filled within T of record creation",
            "sla.process": "opportunity from_stage -> to_stage within T",
            "sla.action": "first_contact (lead) and proposal (opportunity) within T",
            "sla.status": "GET /slas/{id}/instances: green/yellow/red/met; sla.breached",
            "sla.escalation": "notify the region's director and/or reassign; sla.escalated",
            "pack.enable_time": "POST /packs/manufacturing/enable, GET /packs/{name}/checks",
            "pack.hotplug": "enable/disable at run time, idempotent, data kept",
            "pack.manufacturing": "12 modules incl. BOM, serials, spare parts, PPAP; IATF 16949 "
            "approval freeze",
            "cdp.permissions": "role tokens (POST /tokens); masked fields on every read",
            "cdp.consent": "PUT /customers/{id}/consent; tags stop and resume",
            "cdp.export": "GET /customers/{id}/export: NDJSON bundle with a SHA-256 manifest",
            "cdp.erase": "POST /customers/{id}/erase, idempotent, audited",
            "cdp.audit": "GET /audit and GET /audit/verify: SHA-256 hash chain",
        }
    )

    def __init__(
        self, host: str, port: int = DEFAULT_PORT, prefix: str = "", *, token: str | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.pool_size = DEFAULT_POOL_SIZE
        self._token = (os.environ.get(TOKEN_ENV, "") if token is None else token).strip()
        self._client: HTTPClient | None = None
        self._version: str | None = None
        # Idle keep-alive connections of the timed verbs, most recently used last.
        self._idle: list[_Connection] = []
        host_header = f"[{host}]" if ":" in host else host
        self._head = (
            f"Host: {host_header}:{port}\r\nUser-Agent: crmbench\r\n"
            "Accept: application/json\r\n"
            + (f"Authorization: Bearer {self._token}\r\n" if self._token else "")
        ).encode("latin-1")

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> ReferenceAdapter:
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
        token = (os.environ if env is None else env).get(TOKEN_ENV, "")
        return cls(host, port, parts.path, token=token)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"reference+http://{host}:{self.port}{self.prefix}"

    def __repr__(self) -> str:
        return f"ReferenceAdapter(url={self.url!r}, pool_size={self.pool_size})"

    # ------------------------------------------------------------------ lifecycle

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.pool_size = max(settings.concurrency, 1)

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
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def platform_version(self) -> str | None:
        return self._version

    def keyspace(self) -> Keyspace:
        stats = self._stats()
        return Keyspace(
            customers=stats.customers, opportunities=stats.opportunities, reps=stats.reps,
            regions=stats.regions, products=stats.products, leads=stats.leads,
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

    def _send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """One request on an idle keep-alive connection (or a new one); the whole body is read."""
        self._http()
        line = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        if body is None:
            request = line + self._head + b"\r\n"
        else:
            payload = msgspec.json.encode(body)
            request = b"".join((
                line, self._head, b"Content-Type: application/json\r\nContent-Length: ",
                str(len(payload)).encode(), b"\r\n\r\n", payload,
            ))
        reused = bool(self._idle)
        conn = self._idle.pop() if reused else _Connection(self.host, self.port)
        try:
            code, raw, keep = conn.exchange(request, head_only=method == "HEAD")
        except _STALE_ERRORS:
            conn.close()
            if not reused or conn.received:
                raise
            # A kept-alive connection the target closed meanwhile, before any answer:
            # once more, on a new one.
            conn = _Connection(self.host, self.port)
            try:
                code, raw, keep = conn.exchange(request, head_only=method == "HEAD")
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        if keep and self._client is not None:
            self._idle.append(conn)
        else:
            conn.close()
        return code, raw

    def _call(self, method: str, path: str, body: Any = None) -> Status:
        try:
            code, _raw = self._send(method, path, body)
        except _TRANSPORT_ERRORS as exc:
            return _fault(exc)
        return status_for_http(code)

    def get_customer(self, customer_id: Key) -> Status:
        return self._call("GET", f"/customers/{customer_id}")

    def customer_360(self, customer_id: Key) -> Status:
        return self._call("GET", f"/customers/{customer_id}/360")

    def search_customers(self, query: SearchQuery) -> Status:
        params = _non_null(query, ("name_prefix", "region_id", "tier", "tag", "limit"))
        return self._call("GET", f"/customers?{urlencode(params, quote_via=quote)}")

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        return self._call("GET", f"/leads?owner_rep_id={owner_rep_id}&status=open&limit={limit}")

    def create_lead(self, lead: LeadInput) -> Status:
        return self._call("POST", "/leads", _non_null(lead, _LEAD_FIELDS))

    def log_activity(self, activity: ActivityInput) -> Status:
        return self._call("POST", "/activities", _non_null(activity, _ACTIVITY_FIELDS))

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        return self._call("POST", f"/opportunities/{opportunity_id}/stage",
                          {"stage": STAGE_NAMES[stage]})

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        return self._call("PATCH", f"/customers/{customer_id}", changes.as_dict())

    # ------------------------------------------------------------------ realtime verbs

    def _exchange(
        self, method: str, path: str, body: Any = None
    ) -> tuple[Status, dict[str, Any] | None]:
        """A call whose JSON answer the caller needs; transport failures are Status.error."""
        try:
            code, raw = self._send(method, path, body)
        except _TRANSPORT_ERRORS as exc:
            return _fault(exc), None
        status = status_for_http(code)
        if status is not Status.ok:
            return status, None
        try:
            data = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            return Status.error, None
        return status, data if isinstance(data, dict) else None

    def send_events(self, events: Sequence[EventInput]) -> Status:
        body = [
            {"customer_id": e.customer_id, "type": e.type, "occurred_at": e.occurred_at,
             "idempotency_key": e.idempotency_key, "properties": e.properties}
            for e in events
        ]
        return self._call("POST", "/events", body[0] if len(body) == 1 else {"events": body})

    def start_agent_run(
        self, lead_id: Key, quantity: int | None = None
    ) -> tuple[Status, str | None]:
        body: dict[str, Any] = {"lead_id": lead_id}
        if quantity is not None:
            body["quantity"] = quantity
        status, data = self._exchange("POST", "/agents/lead_intake/runs", body)
        return status, (str(data["run_id"]) if data and "run_id" in data else None)

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/agents/runs/{quote(run_id, safe='')}")

    def agent_config(
        self, changes: dict[str, Any] | None = None
    ) -> tuple[Status, dict[str, Any] | None]:
        if changes is None:
            return self._exchange("GET", "/agents/lead_intake/config")
        return self._exchange("PUT", "/agents/lead_intake/config", changes)

    def customer_profile(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/customers/{customer_id}/profile")

    def create_lead_record(self, lead: LeadInput) -> tuple[Status, int | None]:
        status, data = self._exchange("POST", "/leads", _non_null(lead, _LEAD_FIELDS))
        return status, (int(data["id"]) if data and "id" in data else None)

    def create_customer_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        status, data = self._exchange("POST", "/customers", fields)
        return status, (int(data["id"]) if data and "id" in data else None)

    def read_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/customers/{customer_id}")

    def create_product_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        status, data = self._exchange("POST", "/products", fields)
        return status, (int(data["id"]) if data and "id" in data else None)

    def set_stock(self, product_id: Key, region_id: Key, quantity: int) -> Status:
        return self._call("PUT", f"/inventory/{int(product_id)}/{int(region_id)}",
                          {"quantity": quantity})

    def create_order_record(
        self, customer_id: Key, lines: Sequence[dict[str, Any]]
    ) -> tuple[Status, int | None]:
        status, data = self._exchange("POST", "/orders",
                                      {"customer_id": customer_id, "lines": list(lines)})
        return status, (int(data["id"]) if data and "id" in data else None)

    def human_queue(self, run_ids: Sequence[str]) -> tuple[Status, set[str] | None]:
        wanted = {int(r) for r in run_ids if r.isdigit()}
        if not wanted:
            return Status.ok, set()
        # The queue is ordered by run id: read it from just before the first run asked for.
        after, found = min(wanted) - 1, set()
        while True:
            status, page = self._exchange("GET", f"/agents/queue?limit=500&after={after}")
            if status is not Status.ok or page is None:
                return status if status is not Status.ok else Status.error, None
            found |= {int(item["run_id"]) for item in page.get("items") or []} & wanted
            nxt = page.get("next_after")
            if nxt is None or int(nxt) >= max(wanted):
                return Status.ok, {str(r) for r in found}
            after = int(nxt)

    def subscribe(
        self, types: Sequence[str], after: int | None = None
    ) -> Iterator[StreamMessage]:
        """Server-Sent Events from /stream on a connection of its own."""
        headers = {"Accept": "text/event-stream", "User-Agent": "crmbench"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        client = HTTPClient(
            self.host, self.port, headers=headers, concurrency=1,
            connection_timeout=CONNECTION_TIMEOUT, network_timeout=STREAM_TIMEOUT,
        )
        if after is None:
            # "From now" means after the last message committed before this call: a
            # message published while the connection opens is replayed, not missed.
            code, body = self._fetch("/stream/info")
            if code == 200:
                after = int(msgspec.json.decode(body).get("last_seq", 0))
        params: dict[str, Any] = {"types": ",".join(types)}
        if after is not None:
            params["after"] = after
        try:
            resp = client.get(f"{self.prefix}/stream?{urlencode(params)}")
        except _TRANSPORT_ERRORS as exc:
            client.close()
            raise TargetUnreachable(
                f"change stream of {self.host}:{self.port} does not answer: {exc}"
            ) from None
        if resp.status_code != 200:
            code = resp.status_code
            resp.release()
            client.close()
            raise UserError(f"change stream of {self.host}:{self.port} answered {code}")
        try:
            yield from _read_sse(resp)
        finally:
            resp.release()
            client.close()

    # ------------------------------------------------------------------ engine verbs

    # The SLA checker wakes at the earliest deadline; a second is well above its precision.
    min_sla_s = 1.0

    def _refusable(
        self, method: str, path: str, body: Any = None
    ) -> tuple[Status, dict[str, Any] | None]:
        """Like ``_exchange``, but a 4xx answer keeps its reason (``Engines``' refusal)."""
        try:
            code, raw = self._send(method, path, body)
        except _TRANSPORT_ERRORS as exc:
            return _fault(exc), None
        status = status_for_http(code)
        if status is Status.ok or not 400 <= code < 500:
            return self._decoded(status, raw)
        try:
            error = msgspec.json.decode(raw).get("error") or {}
        except (msgspec.DecodeError, AttributeError):
            return status, None
        word = _REFUSALS.get(str(error.get("code")), str(error.get("code")))
        return status, {"refusal": word, "message": str(error.get("message", ""))}

    @staticmethod
    def _decoded(status: Status, raw: bytes) -> tuple[Status, dict[str, Any] | None]:
        if status is not Status.ok:
            return status, None
        try:
            data = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            return Status.error, None
        return status, data if isinstance(data, dict) else None

    def deploy_workflow(
        self, doc: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._refusable("POST", "/workflows", doc)

    def run_workflow(
        self, workflow_id: int, input: dict[str, Any], wait: bool = True
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/workflows/{workflow_id}/runs",
                              {"input": input, "wait": wait})

    def workflow_run(
        self, run_id: str
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/workflows/runs/{quote(run_id, safe='')}")

    def resume_workflow(
        self, workflow_id: int
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/workflows/{workflow_id}/resume", {})

    def workflow_lineage(
        self, workflow_id: int
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/workflows/{workflow_id}/lineage")

    def create_sla(
        self, definition: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", "/slas", definition)

    def sla_instances(
        self, sla_id: int
    ) -> tuple[Status, list[dict[str, Any]] | None]:
        status, data = self._exchange("GET", f"/slas/{sla_id}/instances?limit=500")
        return status, (list(data["items"]) if data and "items" in data else None)

    def advance_clock(self, seconds: float) -> Status:
        status = self._call("POST", "/clock/advance", {"seconds": seconds})
        # A server without the test clock answers 404 test_clock_disabled.
        return Status.unsupported if status is Status.not_found else status

    def enable_pack(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/packs/{quote(name, safe='')}/enable", {})

    def disable_pack(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/packs/{quote(name, safe='')}/disable", {})

    def pack_checks(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/packs/{quote(name, safe='')}/checks")

    def create_opportunity_record(
        self, fields: dict[str, Any]
    ) -> tuple[Status, Any | None]:
        status, data = self._exchange("POST", "/opportunities", fields)
        return status, (int(data["id"]) if data and "id" in data else None)

    def pack_state(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/packs/{quote(name, safe='')}")

    def create_pack_record(
        self, module: str, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/mfg/{quote(module, safe='')}", fields)

    def get_pack_record(
        self, module: str, record_id: Any
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/mfg/{quote(module, safe='')}/{int(record_id)}")

    def update_pack_record(
        self, module: str, record_id: Any, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._refusable("PATCH", f"/mfg/{quote(module, safe='')}/{int(record_id)}",
                               fields)

    def approve_contract(self, contract_id: Any) -> tuple[Status, dict[str, Any] | None]:
        return self._refusable("POST", f"/mfg/contracts/{int(contract_id)}/approve", {})

    def read_record(self, object: str, record_id: Any) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("GET", f"/{_COLLECTIONS[object]}/{int(record_id)}")

    def update_record(
        self, object: str, record_id: Any, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        return self._refusable("PATCH", f"/{_COLLECTIONS[object]}/{int(record_id)}", fields)

    # ------------------------------------------------------------------ sovereignty verbs
    # (bench.adapters.sovereignty: role identities are tokens issued by POST /tokens)

    def _as(self, method: str, path: str, identity: str | None,
            body: Any = None) -> tuple[Status, bytes]:
        """One request with ``identity``'s token (None: the service token); raw answer."""
        if identity is None:
            try:
                code, raw = self._send(method, path, body)
            except _TRANSPORT_ERRORS as exc:
                return _fault(exc), b""
            return status_for_http(code), raw
        head = self._head.split(b"Authorization:")[0] + f"Authorization: Bearer {identity}\r\n" \
            .encode("latin-1")
        payload = b"" if body is None else msgspec.json.encode(body)
        request = (f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + head
                   + (b"Content-Type: application/json\r\nContent-Length: "
                      + str(len(payload)).encode() + b"\r\n" if body is not None else b"")
                   + b"Connection: close\r\n\r\n" + payload)
        try:
            conn = _Connection(self.host, self.port)
            try:
                code, raw, _keep = conn.exchange(request)
            finally:
                conn.close()
        except _TRANSPORT_ERRORS as exc:
            return _fault(exc), b""
        return status_for_http(code), raw

    def issue_identity(
        self, role: str, name: str, *, rep_id: int | None = None, regions: tuple[int, ...] = ()
    ) -> tuple[Status, dict[str, Any] | None]:
        body: dict[str, Any] = {"name": name, "role": role, "regions": list(regions)}
        if rep_id is not None:
            body["rep_id"] = rep_id
        status, data = self._exchange("POST", "/tokens", body)
        if status is Status.not_found:
            return Status.unsupported, None
        if status is not Status.ok or data is None:
            return status, None
        return status, {"identity": str(data["token"]), "name": data.get("name"),
                        "masked_classes": list(data.get("masked_classes") or [])}

    def revoke_identity(self, identity: str) -> Status:
        status, raw = self._as("GET", "/me", identity)
        if status is not Status.ok:
            return status
        name = str(msgspec.json.decode(raw).get("name", ""))
        return self._call("DELETE", f"/tokens/{quote(name, safe='')}")

    def read_as(
        self, identity: str | None, view: str, customer_id: Key, *, name: str = "",
        tag: str = "",
    ) -> tuple[Status, Any]:
        cid = int(customer_id)
        paths = {
            "record": f"/customers/{cid}", "list": f"/customers?after={cid - 1}&limit=5",
            "search": "/customers?" + urlencode({"name_prefix": name, "limit": 50}),
            "search_masked": "/customers?" + urlencode({"tag": tag, "limit": 50}),
            "customer_360": f"/customers/{cid}/360", "profile": f"/customers/{cid}/profile",
            "contacts": f"/contacts?customer_id={cid}", "consent": f"/customers/{cid}/consent",
            "export": f"/customers/{cid}/export",
        }
        status, raw = self._as("GET", paths[view], identity)
        if status is not Status.ok or view == "export":
            return status, raw if status is Status.ok else None
        try:
            return status, msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return Status.error, None

    def export_customer(
        self, customer_id: Key, out: IO[bytes], identity: str | None = None
    ) -> Status:
        headers = {"Accept": "application/x-ndjson", "User-Agent": "crmbench"}
        token = identity if identity is not None else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        client = HTTPClient(self.host, self.port, headers=headers, concurrency=1,
                            connection_timeout=CONNECTION_TIMEOUT,
                            network_timeout=NETWORK_TIMEOUT)
        try:
            resp = client.get(f"{self.prefix}/customers/{int(customer_id)}/export")
            try:
                status = status_for_http(resp.status_code)
                while status is Status.ok and (chunk := resp.read(65536)):
                    out.write(chunk)
            finally:
                resp.release()
        except _TRANSPORT_ERRORS as exc:
            return _fault(exc)
        finally:
            client.close()
        return status

    def erase_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return self._exchange("POST", f"/customers/{int(customer_id)}/erase", {})

    def customer_consent(
        self, customer_id: Key, changes: dict[str, Any] | None = None
    ) -> tuple[Status, dict[str, Any] | None]:
        path = f"/customers/{int(customer_id)}/consent"
        return self._exchange("GET", path) if changes is None else \
            self._exchange("PUT", path, changes)

    def create_contact_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        status, data = self._exchange("POST", "/contacts", fields)
        return status, (int(data["id"]) if data and "id" in data else None)

    def audit_entries(
        self, customer_id: Key | None = None, action: str | None = None,
        identity: str | None = None,
    ) -> tuple[Status, list[dict[str, Any]] | None]:
        params: dict[str, Any] = {"limit": 500}
        if customer_id is not None:
            params["customer_id"] = int(customer_id)
        if action is not None:
            params["action"] = action
        found: list[dict[str, Any]] = []
        while True:
            status, raw = self._as("GET", f"/audit?{urlencode(params)}", identity)
            if status is not Status.ok:
                return status, None
            page = msgspec.json.decode(raw)
            found += list(page.get("items") or [])
            if page.get("next_after") is None:
                return Status.ok, found
            params["after"] = page["next_after"]

    def audit_verify(self, identity: str | None = None) -> tuple[Status, dict[str, Any] | None]:
        status, raw = self._as("GET", "/audit/verify", identity)
        return self._decoded(status, raw)


# The reference's error codes for the refusals ``Engines`` names platform-neutrally.
_REFUSALS = {"approval_frozen": "frozen"}
_COLLECTIONS = {"lead": "leads", "opportunity": "opportunities", "customer": "customers"}


def _read_sse(resp: Any) -> Iterator[StreamMessage]:
    """Parse an SSE body; each message is stamped as soon as its last line arrives."""
    data: list[bytes] = []
    while True:
        line = resp.readline(b"\n")
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if line:
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip())
            continue
        if not data:
            continue
        received = time.perf_counter_ns()
        try:
            msg = msgspec.json.decode(b"\n".join(data))
        except msgspec.DecodeError:
            data.clear()
            continue
        data.clear()
        yield StreamMessage(
            seq=int(msg.get("seq", 0)), type=str(msg.get("type", "")),
            customer_id=msg.get("customer_id"), payload=msg.get("payload") or {},
            received_ns=received,
        )
