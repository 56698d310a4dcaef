"""CRM records: CRUD of the five entities, customer search and 360 view, stage changes,
keyspace statistics, health and the OpenAPI document. These are the hot routes."""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl import __version__
from reference_impl import models as m
from reference_impl.openapi import build_openapi
from reference_impl.schema import TIERS
from reference_impl.services import Services
from reference_impl.store import ENTITIES, Scope, Store
from reference_impl.web import (
    Handler,
    Query,
    decode,
    encode,
    json_response,
    no_query,
    page_response,
    path_id,
)

# (method, first segment) for /x; (method, x, None) for /x/{id}; then the tail of /x/{id}/tail.
FastKey = tuple[str | None, ...]
SEARCH_PARAMS = frozenset(
    {"limit", "after", "name_prefix", "region_id", "tier", "tag", "owner_rep_id"}
)


class EntityRoutes:
    """List, create, read, update and delete one entity."""

    __slots__ = ("allowed", "create", "filters", "name", "store", "update")

    def __init__(self, name: str, store: Store) -> None:
        entity = ENTITIES[name]
        self.name, self.store = name, store
        self.create, self.update = entity.create, entity.update
        self.filters = entity.filters
        self.allowed = frozenset({"limit", "after", *self.filters})

    async def collection(self, request: Request) -> Response:
        if request.method == "POST":
            no_query(request)
            body = await decode(request, self.create)
            return json_response(await self.store.create(self.name, body), 201)
        if self.name == "customers":
            return await search(self.store, request)
        q = Query(request, self.allowed)
        limit, after = q.paging()
        values: dict[str, Any] = {}
        for key, kind in self.filters.items():
            value = q.integer(key) if kind == "int" else q.text(key)
            if value is not None:
                values[key] = value
        return page_response(await self.store.list_records(self.name, values, limit, after),
                             limit)

    async def listing(self, request: Request, scope: Scope | None) -> Response:
        """A GET of the collection limited to ``scope`` (a restricted token's records)."""
        if self.name == "customers":
            return await search(self.store, request, scope)
        q = Query(request, self.allowed)
        limit, after = q.paging()
        values: dict[str, Any] = {}
        for key, kind in self.filters.items():
            value = q.integer(key) if kind == "int" else q.text(key)
            if value is not None:
                values[key] = value
        return page_response(
            await self.store.list_records(self.name, values, limit, after, scope), limit)

    async def item(self, request: Request) -> Response:
        id_ = path_id(request)
        no_query(request)
        method = request.method
        if method == "PATCH":
            body = await decode(request, self.update)
            return json_response(await self.store.update(self.name, id_, body))
        if method == "DELETE":
            await self.store.delete(self.name, id_)
            return Response(status_code=204)
        # GET, and HEAD (which Starlette serves wherever GET is).
        return json_response(await self.store.get(self.name, id_))

    def routes(self) -> list[Route]:
        return [
            Route(f"/{self.name}", self.collection, methods=["GET", "POST"]),
            Route(f"/{self.name}/{{id}}", self.item, methods=["GET", "PATCH", "DELETE"]),
        ]


async def search(store: Store, request: Request, scope: Scope | None = None) -> Response:
    q = Query(request, SEARCH_PARAMS)
    limit, after = q.paging()
    page = await store.search_customers(
        name_prefix=q.text("name_prefix"),
        region_id=q.integer("region_id"),
        tier=q.text("tier", TIERS),
        tag=q.text("tag"),
        owner_rep_id=q.integer("owner_rep_id"),
        limit=limit,
        after=after,
        scope=scope,
    )
    return page_response(page, limit)


class RecordRoutes:
    """The routes beside plain CRUD: 360 view, stage change, stats, health, OpenAPI."""

    __slots__ = ("db", "openapi_doc", "store")

    def __init__(self, services: Services) -> None:
        self.store, self.db = services.store, services.db
        self.openapi_doc = encode(build_openapi(__version__))

    async def customer_360(self, request: Request) -> Response:
        id_ = path_id(request)
        no_query(request)
        return json_response(await self.store.customer_360(id_))

    async def stage_change(self, request: Request) -> Response:
        id_ = path_id(request)
        no_query(request)
        body = await decode(request, m.StageChange)
        update = m.OpportunityUpdate(stage=body.stage)
        return json_response(await self.store.update("opportunities", id_, update))

    async def stats(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.store.keyspace())

    async def health(self, _request: Request) -> Response:
        ok = await self.db.fetch_val("SELECT 1") == 1
        return json_response(
            # The pid tells which process answered when several serve one port.
            {"status": "ok" if ok else "degraded", "version": __version__,
             "backend": self.db.dialect, "pid": os.getpid()},
            200 if ok else 503,
        )

    async def openapi(self, _request: Request) -> Response:
        return Response(self.openapi_doc, media_type="application/json")


def routes(services: Services) -> tuple[list[Route], dict[FastKey, Handler]]:
    """The record routes, and the direct table of the hot ones among them."""
    rec = RecordRoutes(services)
    fast: dict[FastKey, Handler] = {
        ("GET", "customers", None, "360"): rec.customer_360,
        ("POST", "opportunities", None, "stage"): rec.stage_change,
    }
    out = [
        Route("/health", rec.health, methods=["GET"]),
        Route("/stats", rec.stats, methods=["GET"]),
        Route("/openapi.json", rec.openapi, methods=["GET"]),
        Route("/customers/{id}/360", rec.customer_360, methods=["GET"]),
        Route("/opportunities/{id}/stage", rec.stage_change, methods=["POST"]),
    ]
    for name in ENTITIES:
        entity = EntityRoutes(name, services.store)
        out += entity.routes()
        fast[("GET", name)] = fast[("POST", name)] = entity.collection
        for method in ("GET", "PATCH", "DELETE"):
            fast[(method, name, None)] = entity.item
    return out, fast
