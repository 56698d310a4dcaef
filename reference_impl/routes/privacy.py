"""Customer-data sovereignty: consent, export, erasure, the audit trail, and who am I."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from reference_impl.access import principal_of
from reference_impl.audit import AuditLog
from reference_impl.privacy import ConsentUpdate, Privacy
from reference_impl.web import Query, decode, json_response, no_query, path_id

AUDIT_PARAMS = frozenset({"limit", "after", "customer_id", "action", "actor", "outcome"})
OUTCOMES = ("ok", "refused")
NDJSON = "application/x-ndjson"


class PrivacyRoutes:
    """Handlers over :class:`Privacy` and the audit log."""

    def __init__(self, privacy: Privacy, audit: AuditLog) -> None:
        self.privacy, self.audit = privacy, audit

    async def me(self, request: Request) -> Response:
        no_query(request)
        return json_response(principal_of(request.scope).describe())

    async def consent(self, request: Request) -> Response:
        cid = path_id(request)
        no_query(request)
        if request.method == "PUT":
            body: ConsentUpdate = await decode(request, ConsentUpdate)
            who = principal_of(request.scope)
            return json_response(await self.privacy.set_consent(
                who, f"PUT /customers/{cid}/consent", cid, body))
        return json_response(await self.privacy.consent(cid))

    async def export(self, request: Request) -> Response:
        cid = path_id(request)
        no_query(request)
        body = await self.privacy.export_stream(
            principal_of(request.scope), f"GET /customers/{cid}/export", cid)
        return StreamingResponse(body, media_type=NDJSON, headers={
            "Content-Disposition": f'attachment; filename="customer-{cid}.ndjson"'})

    async def erase(self, request: Request) -> Response:
        cid = path_id(request)
        no_query(request)
        return json_response(await self.privacy.erase(
            principal_of(request.scope), f"POST /customers/{cid}/erase", cid))

    async def audit_log(self, request: Request) -> Response:
        q = Query(request, AUDIT_PARAMS)
        limit, after = q.paging()
        return json_response(await self.audit.query(
            customer_id=q.integer("customer_id"), action=q.text("action"),
            actor=q.text("actor"), outcome=q.text("outcome", OUTCOMES), after=after,
            limit=limit))

    async def audit_verify(self, request: Request) -> Response:
        no_query(request)
        return json_response(await self.audit.verify())


def routes(privacy: Privacy, audit: AuditLog) -> list[Route]:
    pr = PrivacyRoutes(privacy, audit)
    return [
        Route("/me", pr.me, methods=["GET"]),
        Route("/customers/{id}/consent", pr.consent, methods=["GET", "PUT"]),
        Route("/customers/{id}/export", pr.export, methods=["GET"]),
        Route("/customers/{id}/erase", pr.erase, methods=["POST"]),
        Route("/audit", pr.audit_log, methods=["GET"]),
        Route("/audit/verify", pr.audit_verify, methods=["GET"]),
    ]
