"""HTTP API of the reference CRM (Starlette).

Every refusal is a 4xx with ``{"error": {"code", "message", "field"}}``; bodies are
decoded and validated by msgspec before anything is written.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reference_impl import __version__, cdp
from reference_impl import models as m
from reference_impl.agents import AgentRuntime, Scorer
from reference_impl.clock import Clock
from reference_impl.cluster import Cluster, ClusterConfig
from reference_impl.db import Database, Executor
from reference_impl.loader import create_schema
from reference_impl.openapi import build_openapi
from reference_impl.packs import PackService
from reference_impl.sla import SlaCreate, SlaEngine
from reference_impl.store import ENTITIES, AfterCommit, Change, Page, Store, StoreError
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION, Filter, StreamHub
from reference_impl.workflows import RunCreate, WorkflowDeploy, WorkflowEngine, prepare

log = logging.getLogger("reference_impl")

MAX_BODY = 1024 * 1024
# Only POST /workflows: a 100,000-node workflow document takes several MiB.
MAX_WORKFLOW_BODY = 32 * 1024 * 1024
MAX_LIMIT = 500
OPEN_PATHS = frozenset({"/health", "/openapi.json"})
_encoder = msgspec.json.Encoder()
_FIELD_RE = re.compile(r"field `([^`]+)`")
_PATH_RE = re.compile(r" - at `([^`]+)`$")
_MESSAGE_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class JsonResponse(Response):
    """A JSON body with the headers Response would give it, built without its checks."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")
        ]


def json_response(data: Any, status: int = 200) -> Response:
    return JsonResponse(_encoder.encode(data), status)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message, "field": field}}, status)


def _validation_field(message: str) -> str | None:
    """The JSON path of the offending field in a msgspec validation message."""
    path_match = _PATH_RE.search(message)
    path = path_match.group(1) if path_match else "$"
    name = _FIELD_RE.search(message)
    if name:
        path = f"{path}.{name.group(1)}"
    if path == "$":
        return None
    return path[2:] if path.startswith("$.") else path


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body of a JSON request, refused when empty or of another media type."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"expected application/json, got {ctype}")
    body = await read_body(request, limit)
    if not body.strip():
        raise ApiError(400, "malformed_json", "request body is empty; a JSON object is expected")
    return body


async def decode(request: Request, kind: type[msgspec.Struct]) -> Any:
    return decode_bytes(await read_json(request), kind)


def decode_bytes(body: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "validation_error", str(exc), _validation_field(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc


def _int_param(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be between {low} and {high}", name
        )
    return value


def _path_id(request: Request) -> int:
    return _int_param(request.path_params["id"], "id", 1, 2**53)


class Query:
    """Strict reading of query parameters: unknown or repeated ones are refused."""

    def __init__(self, request: Request, allowed: set[str]) -> None:
        # Parsed as Starlette's QueryParams would, without building one per request.
        raw: bytes = request.scope["query_string"]
        self.params: dict[str, str] = {}
        if not raw:
            return
        given: dict[str, list[str]] = {}
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            given.setdefault(key, []).append(value)
        for key, values in given.items():
            if key not in allowed:
                raise ApiError(
                    400, "invalid_parameter",
                    f"unknown query parameter {key!r}; allowed: {', '.join(sorted(allowed))}",
                    key,
                )
            if len(values) > 1:
                raise ApiError(400, "invalid_parameter", f"{key} given more than once", key)
            self.params[key] = values[0]

    def integer(self, name: str, low: int = 1, high: int = 2**53) -> int | None:
        raw = self.params.get(name)
        return None if raw is None else _int_param(raw, name, low, high)

    def text(self, name: str, choices: tuple[str, ...] | None = None) -> str | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        if "\x00" in raw or len(raw) > 200:
            raise ApiError(400, "invalid_parameter", f"{name} is not a valid value", name)
        if choices is not None and raw not in choices:
            raise ApiError(
                400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}", name
            )
        return raw

    def paging(self) -> tuple[int, int | None]:
        limit = self.integer("limit", 1, MAX_LIMIT)
        return (50 if limit is None else limit), self.integer("after", 0)


def _page(page: Page, limit: int) -> Response:
    return json_response({"items": page.items, "next_after": page.next_after, "limit": limit})


Handler = Callable[[Request], Awaitable[Response]]
# (method, first segment) for /x; (method, x, None) for /x/{id}; then the tail of /x/{id}/tail.
FastKey = tuple[str | None, ...]


def api_error_response(exc: ApiError | StoreError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.field)


def http_error_response(exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


def crash_response(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the server log")


def build_app(
    db: Database,
    *,
    token: str | None,
    init_schema: bool = True,
    stream_retention: int = DEFAULT_RETENTION,
    stream_queue: int = DEFAULT_QUEUE,
    scorer: Scorer | None = None,
    nats_url: str | None = None,
    test_clock: bool = False,
    cluster: ClusterConfig | None = None,
) -> Starlette:
    """The ASGI application over an (unconnected) database; ``nats_url`` adds NATS ingest.

    ``test_clock`` enables ``GET /clock`` and ``POST /clock/advance`` (SLA and wait tests);
    ``cluster`` says this is one of several processes serving the same PostgreSQL database.
    """
    store = Store(db)
    hub = StreamHub(db, retention=stream_retention, queue_size=stream_queue)
    clock = Clock(test_clock)
    workflows = WorkflowEngine(hub, clock)
    slas = SlaEngine(hub, clock)
    packs = PackService(db, workflows, slas)
    agents = AgentRuntime(hub, scorer)
    nats_ingest = cdp.NatsIngest(hub, nats_url) if nats_url else None
    peers = Cluster(db, cluster) if cluster is not None else None
    for part in (hub, workflows, slas, packs, agents):
        part.cluster = peers

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        try:
            if init_schema:
                await create_schema(db)
            if peers is not None:
                await peers.start()
            await hub.start()
            await workflows.start()
            await slas.start()
            await packs.start()
            try:
                await agents.start()
                if nats_ingest is not None:
                    await nats_ingest.start()
                yield
            finally:
                if nats_ingest is not None:
                    await nats_ingest.stop()
                await agents.stop()
                await slas.stop()
                await workflows.stop()
                await hub.stop()
                if peers is not None:
                    await peers.stop()
        finally:
            await db.close()

    async def health(_request: Request) -> Response:
        ok = await db.fetch_val("SELECT 1") == 1
        return json_response(
            # The pid tells which process answered when several serve one port.
            {"status": "ok" if ok else "degraded", "version": __version__,
             "backend": db.dialect, "pid": os.getpid()},
            200 if ok else 503,
        )

    openapi_doc = _encoder.encode(build_openapi(__version__))

    async def openapi(_request: Request) -> Response:
        return Response(openapi_doc, media_type="application/json")

    def crud(name: str) -> list[Route]:
        entity = ENTITIES[name]
        filters = entity.filters

        async def collection(request: Request) -> Response:
            if request.method == "POST":
                Query(request, set())
                body = await decode(request, entity.create)
                created = await store.create(name, body)
                return json_response(created, 201)
            if name == "customers":
                return await search(request)
            q = Query(request, {"limit", "after", *filters})
            limit, after = q.paging()
            values: dict[str, Any] = {}
            for key, kind in filters.items():
                value = q.integer(key) if kind == "int" else q.text(key)
                if value is not None:
                    values[key] = value
            return _page(await store.list_records(name, values, limit, after), limit)

        async def item(request: Request) -> Response:
            id_ = _path_id(request)
            Query(request, set())
            if request.method == "GET":
                return json_response(await store.get(name, id_))
            if request.method == "PATCH":
                body = await decode(request, entity.update)
                updated = await store.update(name, id_, body)
                return json_response(updated)
            await store.delete(name, id_)
            return Response(status_code=204)

        return [
            Route(f"/{name}", collection, methods=["GET", "POST"]),
            Route(f"/{name}/{{id}}", item, methods=["GET", "PATCH", "DELETE"]),
        ]

    async def search(request: Request) -> Response:
        q = Query(
            request,
            {"limit", "after", "name_prefix", "region_id", "tier", "tag", "owner_rep_id"},
        )
        limit, after = q.paging()
        page = await store.search_customers(
            name_prefix=q.text("name_prefix"),
            region_id=q.integer("region_id"),
            tier=q.text("tier", ("strategic", "vip", "key", "normal")),
            tag=q.text("tag"),
            owner_rep_id=q.integer("owner_rep_id"),
            limit=limit,
            after=after,
        )
        return _page(page, limit)

    async def customer_360(request: Request) -> Response:
        id_ = _path_id(request)
        Query(request, set())
        return json_response(await store.customer_360(id_))

    async def stage_change(request: Request) -> Response:
        id_ = _path_id(request)
        Query(request, set())
        body = await decode(request, m.StageChange)
        updated = await store.update("opportunities", id_, m.OpportunityUpdate(stage=body.stage))
        return json_response(updated)

    async def stats(request: Request) -> Response:
        Query(request, set())
        return json_response(await store.keyspace())

    async def stream(request: Request) -> Response:
        q = Query(request, {"types", "customer_id", "after"})
        types: frozenset[str] | None = None
        raw_types = q.text("types")
        if raw_types is not None:
            names = [t.strip() for t in raw_types.split(",") if t.strip()]
            if not names or not all(_MESSAGE_TYPE_RE.match(n) for n in names):
                raise ApiError(400, "invalid_parameter",
                               "types must be comma-separated message types", "types")
            types = frozenset(names)
        after = q.integer("after", 0)
        last_id = request.headers.get("last-event-id")
        if after is None and last_id is not None and last_id.strip():
            after = _int_param(last_id.strip(), "Last-Event-ID", 0, 2**53)
        flt = Filter(types, q.integer("customer_id"))
        return StreamingResponse(
            hub.events(after, flt), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def stream_info(request: Request) -> Response:
        Query(request, set())
        return json_response(await hub.info())

    async def post_events(request: Request) -> Response:
        Query(request, set())
        body = await read_json(request)
        if cdp.is_batch(body):
            batch: m.EventBatch = decode_bytes(body, m.EventBatch)
            accepted = await cdp.ingest(hub, batch.events, True)
            after_events(batch.events, accepted)
            return json_response(accepted, 202)
        one: m.EventIn = decode_bytes(body, m.EventIn)
        accepted = await cdp.ingest(hub, [one], False)
        after_events([one], accepted)
        return json_response(accepted, 202)

    async def profile(request: Request) -> Response:
        id_ = _path_id(request)
        Query(request, set())
        return json_response(await cdp.profile(db, id_))

    async def agent_runs(request: Request) -> Response:
        Query(request, set())
        name = request.path_params["agent"]
        agents.agent(name)
        body = await decode(request, m.LeadIntakeRunCreate)
        return json_response(await agents.trigger(name, body), 202)

    async def agent_run(request: Request) -> Response:
        Query(request, set())
        return json_response(await agents.get_run(request.path_params["run_id"]))

    async def agent_queue(request: Request) -> Response:
        q = Query(request, {"limit", "after"})
        limit, after = q.paging()
        return _page(await agents.queue(limit, after), limit)

    async def agent_config(request: Request) -> Response:
        Query(request, set())
        name = request.path_params["agent"]
        if request.method == "PUT":
            agents.agent(name)
            body = await decode(request, m.AgentConfigUpdate)
            return json_response(await agents.put_config(name, body))
        return json_response(agents.get_config(name))

    async def trigger_workflows(_tx: Executor, change: Change) -> AfterCommit | None:
        """Start triggered workflow runs once the record's transaction has committed."""
        if not workflows.listening:
            return None
        return lambda: workflows.on_record(change.table, change.created, change.row,
                                           change.stage)

    store.hooks += [slas.on_change, trigger_workflows]

    def after_events(events: list[m.EventIn], result: dict[str, Any]) -> None:
        if not workflows.listening:
            return
        for ev, outcome in zip(events, result["events"], strict=True):
            if not outcome["duplicate"]:
                workflows.on_record(
                    "events", True, {"id": outcome["id"], "customer_id": ev.customer_id,
                                     "type": ev.type, "properties": ev.properties},
                    None, ev.type)

    async def deploy_workflow(request: Request) -> Response:
        Query(request, set())
        received = time.perf_counter()
        raw = await read_json(request, MAX_WORKFLOW_BODY)
        compiled = prepare(raw, lambda b: decode_bytes(b, WorkflowDeploy))
        # Stored as received (the decoder has checked it is JSON in UTF-8): encoding a
        # 100,000-node document again would cost tens of milliseconds.
        return json_response(await workflows.deploy(compiled, received, raw.decode()), 201)

    async def get_workflow(request: Request) -> Response:
        q = Query(request, {"version"})
        return json_response(await workflows.get(_path_id(request), q.integer("version")))

    async def start_workflow_run(request: Request) -> Response:
        Query(request, set())
        wid = _path_id(request)
        body: RunCreate = await decode(request, RunCreate)
        run = await workflows.run(wid, body)
        return json_response(run, 200 if body.wait else 202)

    async def get_workflow_run(request: Request) -> Response:
        Query(request, set())
        return json_response(await workflows.get_run(request.path_params["run_id"]))

    async def resume_workflow(request: Request) -> Response:
        Query(request, set())
        return json_response(await workflows.resume(_path_id(request)))

    async def workflow_lineage(request: Request) -> Response:
        Query(request, set())
        return json_response(await workflows.lineage(_path_id(request)))

    async def sla_collection(request: Request) -> Response:
        Query(request, set())
        if request.method == "POST":
            body: SlaCreate = await decode(request, SlaCreate)
            return json_response(await slas.create(body), 201)
        return json_response({"items": [slas.describe(i) for i in sorted(slas.defs)]})

    async def sla_item(request: Request) -> Response:
        Query(request, set())
        return json_response(slas.describe(_path_id(request)))

    async def sla_instances(request: Request) -> Response:
        q = Query(request, {"limit", "after"})
        limit, after = q.paging()
        return json_response(await slas.instances(_path_id(request), limit, after))

    def _clock_state() -> dict[str, Any]:
        return {"now": clock.iso(), "offset_s": clock.offset, "test_clock": True}

    async def get_clock(request: Request) -> Response:
        Query(request, set())
        if not clock.test:
            raise ApiError(404, "test_clock_disabled",
                           "the test clock is off; start the server with --test-clock")
        return json_response(_clock_state())

    async def advance_clock(request: Request) -> Response:
        Query(request, set())
        if not clock.test:
            raise ApiError(404, "test_clock_disabled",
                           "the test clock is off; start the server with --test-clock")
        body: m.ClockAdvance = await decode(request, m.ClockAdvance)
        await clock.advance(body.seconds)
        breaches = await slas.check()
        return json_response({**_clock_state(), "breaches": breaches})

    async def pack_list(request: Request) -> Response:
        Query(request, set())
        return json_response({"items": [packs.describe(n) for n in sorted(packs.enabled)]})

    async def pack_item(request: Request) -> Response:
        Query(request, set())
        return json_response(packs.describe(request.path_params["name"]))

    async def pack_switch(request: Request) -> Response:
        Query(request, set())
        verb = request.path_params["verb"]
        if verb not in ("enable", "disable"):
            raise ApiError(404, "not_found", f"no pack action {verb!r}: enable or disable")
        on = verb == "enable"
        return json_response(await packs.switch(request.path_params["name"], on))

    async def pack_checks(request: Request) -> Response:
        Query(request, set())
        return json_response(await packs.checks(request.path_params["name"]))

    async def pack_reports(request: Request) -> Response:
        Query(request, set())
        name = request.path_params["name"]
        return json_response({"items": packs.describe(name)["reports"]})

    async def pack_report(request: Request) -> Response:
        Query(request, set())
        return json_response(await packs.report(request.path_params["name"],
                                                request.path_params["report"]))

    async def _json_object(request: Request) -> dict[str, Any]:
        try:
            data = msgspec.json.decode(await read_json(request))
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(422, "validation_error", "a JSON object is expected")
        return data

    async def mfg_collection(request: Request) -> Response:
        packs.require("manufacturing")
        module = request.path_params["module"]
        if request.method == "POST":
            Query(request, set())
            body = await _json_object(request)
            async with db.transaction() as tx:
                created = await packs.create(tx, "manufacturing", module, body)
            return json_response(created, 201)
        q = Query(request, {"limit", "after"})
        limit, after = q.paging()
        return json_response(await packs.records(db, "manufacturing", module, limit, after))

    async def mfg_item(request: Request) -> Response:
        packs.require("manufacturing")
        Query(request, set())
        module, id_ = request.path_params["module"], _path_id(request)
        if request.method == "PATCH":
            body = await _json_object(request)
            async with db.transaction() as tx:
                return json_response(await packs.update(tx, "manufacturing", module, id_, body))
        return json_response(await packs.get(db, "manufacturing", module, id_))

    async def mfg_approve(request: Request) -> Response:
        packs.require("manufacturing")
        Query(request, set())
        async with db.transaction() as tx:
            return json_response(await packs.approve(tx, _path_id(request)))

    fast: dict[FastKey, Handler] = {
        ("GET", "customers", None, "360"): customer_360,
        ("POST", "opportunities", None, "stage"): stage_change,
    }
    routes = [
        Route("/packs", pack_list, methods=["GET"]),
        Route("/packs/{name}", pack_item, methods=["GET"]),
        Route("/packs/{name}/{verb:str}", pack_switch, methods=["POST"]),
        Route("/packs/{name}/checks", pack_checks, methods=["GET"]),
        Route("/packs/{name}/reports", pack_reports, methods=["GET"]),
        Route("/packs/{name}/reports/{report}", pack_report, methods=["GET"]),
        Route("/mfg/contracts/{id}/approve", mfg_approve, methods=["POST"]),
        Route("/mfg/{module}", mfg_collection, methods=["GET", "POST"]),
        Route("/mfg/{module}/{id}", mfg_item, methods=["GET", "PATCH"]),
        Route("/workflows", deploy_workflow, methods=["POST"]),
        Route("/workflows/runs/{run_id}", get_workflow_run, methods=["GET"]),
        Route("/workflows/{id}", get_workflow, methods=["GET"]),
        Route("/workflows/{id}/runs", start_workflow_run, methods=["POST"]),
        Route("/workflows/{id}/resume", resume_workflow, methods=["POST"]),
        Route("/workflows/{id}/lineage", workflow_lineage, methods=["GET"]),
        Route("/slas", sla_collection, methods=["GET", "POST"]),
        Route("/slas/{id}", sla_item, methods=["GET"]),
        Route("/slas/{id}/instances", sla_instances, methods=["GET"]),
        Route("/clock", get_clock, methods=["GET"]),
        Route("/clock/advance", advance_clock, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/stream", stream, methods=["GET"]),
        Route("/stream/info", stream_info, methods=["GET"]),
        Route("/events", post_events, methods=["POST"]),
        Route("/customers/{id}/profile", profile, methods=["GET"]),
        Route("/agents/runs/{run_id}", agent_run, methods=["GET"]),
        Route("/agents/queue", agent_queue, methods=["GET"]),
        Route("/agents/{agent}/runs", agent_runs, methods=["POST"]),
        Route("/agents/{agent}/config", agent_config, methods=["GET", "PUT"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/customers/{id}/360", customer_360, methods=["GET"]),
        Route("/opportunities/{id}/stage", stage_change, methods=["POST"]),
    ]
    for name in ENTITIES:
        entity_routes = crud(name)
        routes += entity_routes
        for route in entity_routes:
            for method in route.methods or ():
                if method == "HEAD":
                    continue
                key = (method, name) if route.path == f"/{name}" else (method, name, None)
                fast[key] = route.endpoint

    async def on_api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError | StoreError)
        return api_error_response(exc)

    async def on_http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return http_error_response(exc)

    async def on_crash(_request: Request, exc: Exception) -> Response:
        return crash_response(exc)

    app = CrmApp(
        fast=fast,
        token=token,
        routes=routes,
        middleware=[Middleware(BearerAuth, token=token)] if token else [],
        lifespan=lifespan,
        exception_handlers={
            ApiError: on_api_error,
            StoreError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
    )
    app.state.store = store
    app.state.hub = hub
    app.state.agents = agents
    app.state.workflows = workflows
    app.state.slas = slas
    app.state.clock = clock
    app.state.packs = packs
    app.state.nats_ingest = nats_ingest
    return app


class BearerAuth:
    """Pure ASGI middleware: every path but the open ones needs ``Authorization: Bearer``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.body = _encoder.encode(
            {"error": {"code": "unauthorized", "message": "missing or wrong bearer token",
                       "field": None}}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                await send({
                    "type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b"Bearer")],
                })
                await send({"type": "http.response.body", "body": self.body})
                return
        await self.app(scope, receive, send)


class CrmApp(Starlette):
    """Starlette with its busiest routes dispatched directly, ahead of the middleware stack.

    Those routes run the same handlers, token check and error bodies; any other request, and
    one whose token is wrong, goes through Starlette as before.
    """

    def __init__(self, *, fast: dict[FastKey, Handler], token: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast = fast
        self.expected = f"Bearer {token}".encode() if token else None

    def _route(self, scope: Scope) -> Handler | None:
        if scope.get("root_path"):
            return None
        parts = scope["path"].split("/")
        method: str = scope["method"]
        count = len(parts)
        if count == 2:
            return self.fast.get((method, parts[1]))
        if count < 2 or count > 4 or not parts[2]:
            return None
        key = (method, parts[1], None) if count == 3 else (method, parts[1], None, parts[3])
        handler = self.fast.get(key)
        if handler is not None:
            scope["path_params"] = {"id": parts[2]}
        return handler

    def _authorized(self, scope: Scope) -> bool:
        if self.expected is None:
            return True
        for key, value in scope["headers"]:
            if key == b"authorization":
                return hmac.compare_digest(value, self.expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._route(scope) if scope["type"] == "http" else None
        if handler is None or not self._authorized(scope):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        try:
            response = await handler(Request(scope, receive))
        except (ApiError, StoreError) as exc:
            response = api_error_response(exc)
        except HTTPException as exc:
            response = http_error_response(exc)
        except Exception as exc:
            # As Starlette's ServerErrorMiddleware: answer 500, then let the server see it.
            await _send(crash_response(exc), send)
            raise
        await _send(response, send)


async def _send(response: Response, send: Send) -> None:
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
