"""Scenario packs, and the records of the manufacturing pack's modules."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl.db import Database
from reference_impl.packs import PackService
from reference_impl.services import Services
from reference_impl.web import Query, json_object, json_response, no_query, path_id

PAGING = frozenset({"limit", "after"})
MFG = "manufacturing"


class PackRoutes:
    """Handlers over the pack service."""

    def __init__(self, packs: PackService, db: Database) -> None:
        self.packs, self.db = packs, db

    async def pack_list(self, request: Request) -> Response:
        no_query(request)
        return json_response({"items": [self.packs.describe(n)
                                        for n in sorted(self.packs.enabled)]})

    async def pack_item(self, request: Request) -> Response:
        no_query(request)
        return json_response(self.packs.describe(request.path_params["name"]))

    async def pack_enable(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.packs.switch(request.path_params["name"], True))

    async def pack_disable(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.packs.switch(request.path_params["name"], False))

    async def pack_checks(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.packs.checks(request.path_params["name"]))

    async def pack_reports(self, request: Request) -> Response:
        no_query(request)
        name = request.path_params["name"]
        return json_response({"items": self.packs.describe(name)["reports"]})

    async def pack_report(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.packs.report(request.path_params["name"],
                                                     request.path_params["report"]))

    async def mfg_collection(self, request: Request) -> Response:
        self.packs.require(MFG)
        module = request.path_params["module"]
        if request.method == "POST":
            no_query(request)
            body = await json_object(request)
            async with self.db.transaction() as tx:
                created = await self.packs.create(tx, MFG, module, body)
            return json_response(created, 201)
        q = Query(request, PAGING)
        limit, after = q.paging()
        return json_response(await self.packs.records(self.db, MFG, module, limit, after))

    async def mfg_item(self, request: Request) -> Response:
        self.packs.require(MFG)
        no_query(request)
        module, id_ = request.path_params["module"], path_id(request)
        if request.method == "PATCH":
            body = await json_object(request)
            async with self.db.transaction() as tx:
                return json_response(await self.packs.update(tx, MFG, module, id_, body))
        return json_response(await self.packs.get(self.db, MFG, module, id_))

    async def mfg_approve(self, request: Request) -> Response:
        self.packs.require(MFG)
        no_query(request)
        async with self.db.transaction() as tx:
            return json_response(await self.packs.approve(tx, path_id(request)))


def routes(services: Services) -> list[Route]:
    pk = PackRoutes(services.packs, services.db)
    return [
        Route("/packs", pk.pack_list, methods=["GET"]),
        Route("/packs/{name}", pk.pack_item, methods=["GET"]),
        Route("/packs/{name}/enable", pk.pack_enable, methods=["POST"]),
        Route("/packs/{name}/disable", pk.pack_disable, methods=["POST"]),
        Route("/packs/{name}/checks", pk.pack_checks, methods=["GET"]),
        Route("/packs/{name}/reports", pk.pack_reports, methods=["GET"]),
        Route("/packs/{name}/reports/{report}", pk.pack_report, methods=["GET"]),
        Route("/mfg/contracts/{id}/approve", pk.mfg_approve, methods=["POST"]),
        Route("/mfg/{module}", pk.mfg_collection, methods=["GET", "POST"]),
        Route("/mfg/{module}/{id}", pk.mfg_item, methods=["GET", "PATCH"]),
    ]
