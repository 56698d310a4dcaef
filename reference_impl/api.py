"""The ASGI application of the reference CRM (Starlette), with its hot routes dispatched directly.

Routes live in ``reference_impl.routes`` (one module per concern) over the shared
``Services``; request and response helpers in ``reference_impl.web``.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from reference_impl.access import PRINCIPAL_KEY, TokenTable
from reference_impl.agents import Scorer
from reference_impl.cluster import ClusterConfig
from reference_impl.db import Database
from reference_impl.guard import Guard, guarded_entities
from reference_impl.routes import engines, events, packs, privacy, records
from reference_impl.routes import tokens as issued
from reference_impl.routes.records import FastKey
from reference_impl.services import Services, Settings
from reference_impl.store import StoreError
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION
from reference_impl.web import (
    ApiError,
    Handler,
    allowed_methods,
    api_error_response,
    crash_response,
    decode_bytes,
    error_body,
    http_error_response,
)

OPEN_PATHS = frozenset({"/health", "/openapi.json"})

__all__ = ["BearerAuth", "CrmApp", "build_app", "decode_bytes"]


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
    tokens: TokenTable | None = None,
) -> Starlette:
    """The ASGI application over an (unconnected) database; ``nats_url`` adds NATS ingest.

    ``test_clock`` enables ``GET /clock`` and ``POST /clock/advance`` (SLA and wait tests);
    ``cluster`` says this is one of several processes serving the same PostgreSQL database;
    ``tokens`` are named tokens with roles beside the service ``token`` (needs one).
    """
    services = Services(db, Settings(
        init_schema=init_schema, stream_retention=stream_retention, stream_queue=stream_queue,
        scorer=scorer, nats_url=nats_url, test_clock=test_clock, cluster=cluster,
    ))
    record_routes, fast = records.routes(services)
    # Tokens issued at run time (POST /tokens) join the table, so it exists with the service's.
    if token and tokens is None:
        tokens = TokenTable()
    shared = cluster is not None and cluster.workers > 1
    all_routes = [*packs.routes(services), *engines.routes(services),
                  *events.routes(services), *privacy.routes(services.privacy, services.audit),
                  *(issued.routes(services.audit, tokens, shared=shared) if tokens is not None
                    else []),
                  *record_routes]
    handlers: dict[Any, Any] = {
        ApiError: _on_api_error,
        StoreError: _on_api_error,
        HTTPException: _on_http_error,
        Exception: _on_crash,
    }
    guarded: ASGIApp | None = None
    if tokens is not None:
        guard = Guard(services.store, services.audit, guarded_entities(services.store))
        guarded = guard.app(all_routes, exception_handlers=handlers)
    app = CrmApp(
        fast=fast,
        token=token,
        # SQLite calls never wait: those handlers run to the end at once. A PostgreSQL
        # handler waits on its first query, and what it reaches may need a task of its own
        # (asyncpg connects under asyncio.timeout): it takes the ASGI path.
        eager=db.dialect == "sqlite",
        routes=all_routes,
        middleware=[Middleware(BearerAuth, token=token, named=tokens, guarded=guarded)]
        if token else [],
        lifespan=lambda _app: services.running(),
        exception_handlers=handlers,
    )
    state = app.state
    state.services = services
    state.store, state.hub, state.agents = services.store, services.hub, services.agents
    state.workflows, state.slas, state.clock = services.workflows, services.slas, services.clock
    state.packs, state.nats_ingest = services.packs, services.nats_ingest
    return app


async def _on_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError | StoreError)
    return api_error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code != 405:
        return http_error_response(exc)
    return http_error_response(exc, allowed_methods(request.app.routes, request.scope["path"]))


async def _on_crash(_request: Request, exc: Exception) -> Response:
    return crash_response(exc)


class BearerAuth:
    """Pure ASGI middleware: every path but the open ones needs ``Authorization: Bearer``.

    The service token passes on as before; a named token's request goes to ``guarded``,
    the application that applies its role's policy.
    """

    def __init__(self, app: ASGIApp, token: str, named: TokenTable | None = None,
                 guarded: ASGIApp | None = None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()
        self.body = error_body("unauthorized", "missing or wrong bearer token")
        self.named, self.guarded = named, guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                principal = self.named.lookup(given) if self.named else None
                if principal is not None and self.guarded is not None:
                    scope[PRINCIPAL_KEY] = principal
                    await self.guarded(scope, receive, send)
                    return
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

    def __init__(self, *, fast: dict[FastKey, Handler], token: str | None, eager: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast = fast
        self.eager = eager
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

    def eager_handler(self, scope: Scope) -> Handler | None:
        """The handler of a hot route with good credentials (reference_impl.http1 calls it
        with an HTTP scope), else None: the request then goes through ``__call__``. None
        for every request unless the handlers never wait (``eager``)."""
        if not self.eager:
            return None
        handler = self._route(scope)
        if handler is None or not self._authorized(scope):
            return None
        scope["app"] = self
        return handler

    async def respond(self, handler: Handler, request: Request) -> Response:
        """``handler``'s response, or the error response of what it raised."""
        try:
            return await handler(request)
        except (ApiError, StoreError) as exc:
            return api_error_response(exc)
        except HTTPException as exc:
            return http_error_response(exc)
        except Exception as exc:
            return crash_response(exc)

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
