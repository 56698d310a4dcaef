"""Role tokens issued and revoked at run time by an admin, e.g. for a harness's probes.

They live in the serving process only: with several worker processes the route answers
409, and tokens must be given at start (``crmbench serve --tokens``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl.access import TokenTable, principal_of
from reference_impl.audit import AuditLog, Entry
from reference_impl.errors import UserError
from reference_impl.web import ApiError, decode, json_response, no_query

TokenName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class TokenIssue(Struct, forbid_unknown_fields=True, kw_only=True):
    """A token to create: its name, role and, for a sales rep, rep id and regions."""

    name: TokenName
    role: Literal["admin", "sales_director", "sales_rep", "analyst", "auditor"]
    rep_id: Annotated[int, Meta(ge=1)] | None = None
    regions: Annotated[list[Annotated[int, Meta(ge=1)]], Meta(max_length=100)] = []


class TokenRoutes:
    """``POST /tokens`` and ``DELETE /tokens/{name}``; both audited, no secret in the entry."""

    def __init__(self, table: TokenTable, audit: AuditLog, shared: bool) -> None:
        self.table, self.audit, self.shared = table, audit, shared

    async def issue(self, request: Request) -> Response:
        no_query(request)
        body: TokenIssue = await decode(request, TokenIssue)
        if self.shared:
            raise ApiError(409, "not_shared", "tokens issued at run time live in one process; "
                           "with several workers give them at start (--tokens)")
        spec = {"name": body.name, "role": body.role, "regions": body.regions,
                **({"rep_id": body.rep_id} if body.rep_id is not None else {})}
        if any(p.name == body.name for p in self.table.principals()):
            raise ApiError(409, "name_in_use", "a token of that name exists", "name")
        try:
            made = self.table.issue(spec)
        except UserError as exc:
            # Rules across fields (a rep needs rep_id or regions; no "service" name).
            raise ApiError(422, "invalid_token", str(exc)) from None
        who = principal_of(request.scope)
        await self.audit.record(Entry(who.name, who.role, "token", "POST /tokens",
                                      details={"issued": body.name, "role": body.role}))
        return json_response({**made.principal.describe(), "token": made.secret}, 201)

    async def revoke(self, request: Request) -> Response:
        no_query(request)
        name = request.path_params["name"]
        if self.table.revoke(name) is None:
            raise ApiError(404, "not_found", "no token of that name was issued")
        who = principal_of(request.scope)
        await self.audit.record(Entry(who.name, who.role, "token", "DELETE /tokens/{name}",
                                      details={"revoked": name}))
        return Response(status_code=204)


def routes(audit: AuditLog, table: TokenTable, *, shared: bool) -> list[Route]:
    tr = TokenRoutes(table, audit, shared)
    return [Route("/tokens", tr.issue, methods=["POST"]),
            Route("/tokens/{name}", tr.revoke, methods=["DELETE"])]
