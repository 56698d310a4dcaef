"""Change stream, customer-data events and profiles, and the lead-intake agent."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from reference_impl import agents, cdp
from reference_impl import models as m
from reference_impl.services import Services
from reference_impl.stream import Filter
from reference_impl.web import (
    MAX_ID,
    ApiError,
    Query,
    decode,
    decode_bytes,
    int_param,
    json_response,
    no_query,
    page_response,
    path_id,
    read_json,
)

MESSAGE_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_PARAMS = frozenset({"types", "customer_id", "after"})
PAGING = frozenset({"limit", "after"})


class EventRoutes:
    """Handlers over the stream hub, the customer-data profiles and the agent runtime."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hub, self.agents, self.db = services.hub, services.agents, services.db

    async def stream(self, request: Request) -> Response:
        q = Query(request, STREAM_PARAMS)
        types: frozenset[str] | None = None
        raw_types = q.text("types")
        if raw_types is not None:
            names = [t.strip() for t in raw_types.split(",") if t.strip()]
            if not names or not all(MESSAGE_TYPE_RE.match(n) for n in names):
                raise ApiError(400, "invalid_parameter",
                               "types must be comma-separated message types", "types")
            types = frozenset(names)
        after = q.integer("after", 0)
        last_id = request.headers.get("last-event-id")
        if after is None and last_id is not None and last_id.strip():
            after = int_param(last_id.strip(), "Last-Event-ID", 0, MAX_ID)
        flt = Filter(types, q.integer("customer_id"))
        return StreamingResponse(
            self.hub.events(after, flt), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def stream_info(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.hub.info())

    async def post_events(self, request: Request) -> Response:
        no_query(request)
        body = await read_json(request)
        if cdp.is_batch(body):
            batch: m.EventBatch = decode_bytes(body, m.EventBatch)
            accepted = await cdp.ingest(self.hub, batch.events, True)
            self.services.after_events(batch.events, accepted)
            return json_response(accepted, 202)
        one: m.EventIn = decode_bytes(body, m.EventIn)
        accepted = await cdp.ingest(self.hub, [one], False)
        self.services.after_events([one], accepted)
        return json_response(accepted, 202)

    async def profile(self, request: Request) -> Response:
        id_ = path_id(request)
        no_query(request)
        return json_response(await cdp.profile(self.db, id_))

    async def agent_runs(self, request: Request) -> Response:
        no_query(request)
        name = request.path_params["agent"]
        self.agents.agent(name)
        body = await decode(request, m.LeadIntakeRunCreate)
        return json_response(await self.agents.trigger(name, body), 202)

    async def agent_run(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.agents.get_run(request.path_params["run_id"]))

    async def agent_queue(self, request: Request) -> Response:
        q = Query(request, PAGING)
        limit, after = q.paging()
        return page_response(await self.agents.queue(limit, after), limit)

    async def agent_config(self, request: Request) -> Response:
        no_query(request)
        name = request.path_params["agent"]
        if request.method == "PUT":
            self.agents.agent(name)
            body = await decode(request, m.AgentConfigUpdate)
            return json_response(await self.agents.put_config(name, body))
        return json_response(self.agents.get_config(name))

    async def create_product(self, request: Request) -> Response:
        no_query(request)
        body = await decode(request, agents.ProductIn)
        return json_response(await agents.create_product(self.db, body), 201)

    async def put_stock(self, request: Request) -> Response:
        no_query(request)
        product = int_param(request.path_params["product_id"], "product_id", 1, MAX_ID)
        region = int_param(request.path_params["region_id"], "region_id", 1, MAX_ID)
        body = await decode(request, agents.StockIn)
        return json_response(await agents.set_stock(self.db, product, region, body))

    async def create_order(self, request: Request) -> Response:
        no_query(request)
        body = await decode(request, agents.OrderIn)
        return json_response(await agents.create_order(self.db, body), 201)


def routes(services: Services) -> list[Route]:
    ev = EventRoutes(services)
    return [
        Route("/stream", ev.stream, methods=["GET"]),
        Route("/stream/info", ev.stream_info, methods=["GET"]),
        Route("/events", ev.post_events, methods=["POST"]),
        Route("/customers/{id}/profile", ev.profile, methods=["GET"]),
        Route("/agents/runs/{run_id}", ev.agent_run, methods=["GET"]),
        Route("/agents/queue", ev.agent_queue, methods=["GET"]),
        Route("/agents/{agent}/runs", ev.agent_runs, methods=["POST"]),
        Route("/agents/{agent}/config", ev.agent_config, methods=["GET", "PUT"]),
        # The agent's tool data, so that a caller can give a customer known orders and stock.
        Route("/products", ev.create_product, methods=["POST"]),
        Route("/inventory/{product_id}/{region_id}", ev.put_stock, methods=["PUT"]),
        Route("/orders", ev.create_order, methods=["POST"]),
    ]
