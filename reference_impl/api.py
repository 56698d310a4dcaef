"""HTTP API of the reference CRM (Starlette).

Every refusal is a 4xx with ``{"error": {"code", "message", "field"}}``; bodies are
decoded and validated by msgspec before anything is written.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bench import __version__
from reference_impl import cdp
from reference_impl import models as m
from reference_impl.agents import AgentRuntime, Scorer
from reference_impl.db import Database
from reference_impl.loader import create_schema
from reference_impl.openapi import build_openapi
from reference_impl.store import ENTITIES, Page, Store, StoreError
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION, Filter, StreamHub

log = logging.getLogger("reference_impl")

MAX_BODY = 1024 * 1024
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


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(data), status, media_type="application/json")


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


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "payload_too_large", f"body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> bytes:
    """The raw body of a JSON request, refused when empty or of another media type."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"expected application/json, got {ctype}")
    body = await read_body(request)
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
        params = request.query_params
        for key in params:
            if key not in allowed:
                raise ApiError(
                    400, "invalid_parameter",
                    f"unknown query parameter {key!r}; allowed: {', '.join(sorted(allowed))}",
                    key,
                )
            if len(params.getlist(key)) > 1:
                raise ApiError(400, "invalid_parameter", f"{key} given more than once", key)
        self.params = params

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


def build_app(
    db: Database,
    *,
    token: str | None,
    init_schema: bool = True,
    stream_retention: int = DEFAULT_RETENTION,
    stream_queue: int = DEFAULT_QUEUE,
    scorer: Scorer | None = None,
    nats_url: str | None = None,
) -> Starlette:
    """The ASGI application over an (unconnected) database; ``nats_url`` adds NATS ingest."""
    store = Store(db)
    hub = StreamHub(db, retention=stream_retention, queue_size=stream_queue)
    agents = AgentRuntime(hub, scorer)
    nats_ingest = cdp.NatsIngest(hub, nats_url) if nats_url else None

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        try:
            if init_schema:
                await create_schema(db)
            await hub.start()
            try:
                await agents.start()
                if nats_ingest is not None:
                    await nats_ingest.start()
                yield
            finally:
                if nats_ingest is not None:
                    await nats_ingest.stop()
                await agents.stop()
                await hub.stop()
        finally:
            await db.close()

    async def health(_request: Request) -> Response:
        ok = await db.fetch_val("SELECT 1") == 1
        return json_response(
            {"status": "ok" if ok else "degraded", "version": __version__,
             "backend": db.dialect},
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
                return json_response(await store.create(name, body), 201)
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
                return json_response(await store.update(name, id_, body))
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
        return json_response(
            await store.update("opportunities", id_, m.OpportunityUpdate(stage=body.stage))
        )

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
            return json_response(await cdp.ingest(hub, batch.events, True), 202)
        one: m.EventIn = decode_bytes(body, m.EventIn)
        return json_response(await cdp.ingest(hub, [one], False), 202)

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

    routes = [
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
        routes += crud(name)

    async def on_api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError | StoreError)
        return error_response(exc.status, exc.code, exc.message, exc.field)

    async def on_http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_crash(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")

    app = Starlette(
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
