"""Workflow and SLA engines, and the test clock that drives their timers in tests."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl import models as m
from reference_impl.services import Services
from reference_impl.sla import SlaCreate
from reference_impl.store import StoreError
from reference_impl.web import (
    MAX_WORKFLOW_BODY,
    ApiError,
    Query,
    decode,
    decode_bytes,
    json_response,
    no_query,
    path_id,
    read_json,
)
from reference_impl.workflows import RunCreate, WorkflowDeploy, prepare

VERSION_PARAM = frozenset({"version"})
# Run ids are uuid4 hex; any other text cannot name a run (and PostgreSQL refuses some).
RUN_ID_RE = re.compile(r"[0-9a-f]{32}")
PAGING = frozenset({"limit", "after"})


class EngineRoutes:
    """Handlers over the workflow engine, the SLA engine and the clock."""

    def __init__(self, services: Services) -> None:
        self.workflows, self.slas, self.clock = services.workflows, services.slas, services.clock

    async def deploy_workflow(self, request: Request) -> Response:
        no_query(request)
        received = time.perf_counter()
        raw = await read_json(request, MAX_WORKFLOW_BODY)
        compiled = prepare(raw, lambda b: decode_bytes(b, WorkflowDeploy))
        # Stored as received (the decoder has checked it is JSON in UTF-8): encoding a
        # 100,000-node document again would cost tens of milliseconds.
        return json_response(await self.workflows.deploy(compiled, received, raw.decode()), 201)

    async def get_workflow(self, request: Request) -> Response:
        q = Query(request, VERSION_PARAM)
        return json_response(await self.workflows.get(path_id(request), q.integer("version")))

    async def start_workflow_run(self, request: Request) -> Response:
        no_query(request)
        wid = path_id(request)
        body: RunCreate = await decode(request, RunCreate)
        run = await self.workflows.run(wid, body)
        return json_response(run, 200 if body.wait else 202)

    async def get_workflow_run(self, request: Request) -> Response:
        no_query(request)
        run_id = request.path_params["run_id"]
        if not RUN_ID_RE.fullmatch(run_id):
            raise StoreError(404, "not_found", f"workflow run {run_id} does not exist")
        return json_response(await self.workflows.get_run(run_id))

    async def resume_workflow(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.workflows.resume(path_id(request)))

    async def workflow_lineage(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.workflows.lineage(path_id(request)))

    async def sla_collection(self, request: Request) -> Response:
        no_query(request)
        if request.method == "POST":
            body: SlaCreate = await decode(request, SlaCreate)
            return json_response(await self.slas.create(body), 201)
        return json_response({"items": [self.slas.describe(i) for i in sorted(self.slas.defs)]})

    async def sla_item(self, request: Request) -> Response:
        no_query(request)
        return json_response(self.slas.describe(path_id(request)))

    async def sla_instances(self, request: Request) -> Response:
        q = Query(request, PAGING)
        limit, after = q.paging()
        return json_response(await self.slas.instances(path_id(request), limit, after))

    def _clock_state(self) -> dict[str, Any]:
        if not self.clock.test:
            raise ApiError(404, "test_clock_disabled",
                           "the test clock is off; start the server with --test-clock")
        return {"now": self.clock.iso(), "offset_s": self.clock.offset, "test_clock": True}

    async def get_clock(self, request: Request) -> Response:
        no_query(request)
        return json_response(self._clock_state())

    async def advance_clock(self, request: Request) -> Response:
        no_query(request)
        self._clock_state()
        body: m.ClockAdvance = await decode(request, m.ClockAdvance)
        await self.clock.advance(body.seconds)
        self.slas.clock_moved()
        breaches = await self.slas.check()
        return json_response({**self._clock_state(), "breaches": breaches})


def routes(services: Services) -> list[Route]:
    en = EngineRoutes(services)
    return [
        Route("/workflows", en.deploy_workflow, methods=["POST"]),
        Route("/workflows/runs/{run_id}", en.get_workflow_run, methods=["GET"]),
        Route("/workflows/{id}", en.get_workflow, methods=["GET"]),
        Route("/workflows/{id}/runs", en.start_workflow_run, methods=["POST"]),
        Route("/workflows/{id}/resume", en.resume_workflow, methods=["POST"]),
        Route("/workflows/{id}/lineage", en.workflow_lineage, methods=["GET"]),
        Route("/slas", en.sla_collection, methods=["GET", "POST"]),
        Route("/slas/{id}", en.sla_item, methods=["GET"]),
        Route("/slas/{id}/instances", en.sla_instances, methods=["GET"]),
        Route("/clock", en.get_clock, methods=["GET"]),
        Route("/clock/advance", en.advance_clock, methods=["POST"]),
    ]
