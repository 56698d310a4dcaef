"""The API as a named token sees it: every route behind the policy of the token's role.

Requests with a named token are served by a second Starlette application whose routes
wrap the same handlers: the service token's requests never pass through here. Per request,
in order: the role's permission for the route (``RULES``); the scope of the record the path
names, and of the records a body refers to; no search on, and no write of, a masked field;
then the handler (lists with the token's scope in their SQL); then masking of the answer,
the change stream filtered and masked message by message, and an audit entry for every
refusal and every answer that shows sensitive fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from reference_impl.access import FILTER_FIELDS, Principal, mask, principal_of, sensitive_keys
from reference_impl.audit import AuditLog, Entry
from reference_impl.db import Row
from reference_impl.routes.records import EntityRoutes
from reference_impl.store import ENTITIES, Scope, Store
from reference_impl.web import MAX_ID, ApiError, Handler, json_response, read_body

_dec = msgspec.json.Decoder()
_enc = msgspec.json.Encoder()
MAX_SUBJECTS = 500


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: a permission (None: any token), and what its path id names."""

    permission: str | None
    target: str = ""
    listing: str = ""
    create: str = ""
    mask: bool = True


def _rules() -> dict[tuple[str, str], Rule]:
    rules: dict[tuple[str, str], Rule] = {}
    for name in ENTITIES:
        rules[("GET", f"/{name}")] = Rule("records:read", listing=name)
        rules[("POST", f"/{name}")] = Rule("records:write", create=name)
        item = f"/{name}/{{id}}"
        rules[("GET", item)] = Rule("records:read", target=name)
        rules[("PATCH", item)] = Rule("records:write", target=name)
        rules[("DELETE", item)] = Rule("records:delete", target=name)
    customer = "/customers/{id}"
    plain: dict[tuple[str, str], Rule] = {
        ("GET", "/health"): Rule(None, mask=False),
        ("GET", "/openapi.json"): Rule(None, mask=False),
        ("GET", "/me"): Rule(None, mask=False),
        ("GET", "/stats"): Rule("meta:read", mask=False),
        ("GET", f"{customer}/360"): Rule("records:read", target="customers"),
        ("POST", "/opportunities/{id}/stage"): Rule("records:write", target="opportunities"),
        ("GET", "/stream"): Rule("stream:read"),
        ("GET", "/stream/info"): Rule("stream:read", mask=False),
        ("POST", "/events"): Rule("customer_data:write", create="events"),
        ("GET", f"{customer}/profile"): Rule("customer_data:read", target="customers"),
        ("GET", f"{customer}/consent"): Rule("customer_data:read", target="customers"),
        ("PUT", f"{customer}/consent"): Rule("consent:write", target="customers"),
        ("GET", f"{customer}/export"): Rule("export", target="customers"),
        ("POST", f"{customer}/erase"): Rule("erase", target="customers"),
        ("GET", "/audit"): Rule("audit:read", mask=False),
        ("GET", "/audit/verify"): Rule("audit:read", mask=False),
        ("POST", "/tokens"): Rule("tokens:write", mask=False),
        ("DELETE", "/tokens/{name}"): Rule("tokens:write", mask=False),
        ("GET", "/agents/runs/{run_id}"): Rule("agents:read"),
        ("GET", "/agents/queue"): Rule("agents:read"),
        ("POST", "/agents/{agent}/runs"): Rule("agents:write", create="agent_run"),
        ("GET", "/agents/{agent}/config"): Rule("agents:read"),
        ("PUT", "/agents/{agent}/config"): Rule("engines:write"),
        ("POST", "/products"): Rule("engines:write", mask=False),
        ("PUT", "/inventory/{product_id}/{region_id}"): Rule("engines:write", mask=False),
        ("POST", "/orders"): Rule("records:write", create="orders"),
        ("POST", "/workflows"): Rule("engines:write"),
        ("GET", "/workflows/runs/{run_id}"): Rule("engines:read"),
        ("GET", "/workflows/{id}"): Rule("engines:read"),
        ("POST", "/workflows/{id}/runs"): Rule("engines:write"),
        ("POST", "/workflows/{id}/resume"): Rule("engines:write"),
        ("GET", "/workflows/{id}/lineage"): Rule("engines:read"),
        ("GET", "/slas"): Rule("engines:read"),
        ("POST", "/slas"): Rule("engines:write"),
        ("GET", "/slas/{id}"): Rule("engines:read"),
        ("GET", "/slas/{id}/instances"): Rule("engines:read"),
        ("GET", "/clock"): Rule("engines:read"),
        ("POST", "/clock/advance"): Rule("engines:write"),
        ("GET", "/packs"): Rule("packs:read"),
        ("GET", "/packs/{name}"): Rule("packs:read"),
        ("POST", "/packs/{name}/enable"): Rule("packs:write"),
        ("POST", "/packs/{name}/disable"): Rule("packs:write"),
        ("GET", "/packs/{name}/checks"): Rule("packs:write"),
        ("GET", "/packs/{name}/reports"): Rule("packs:read"),
        ("GET", "/packs/{name}/reports/{report}"): Rule("packs:read"),
        ("POST", "/mfg/contracts/{id}/approve"): Rule("packs:write"),
        ("GET", "/mfg/{module}"): Rule("packs:read"),
        ("POST", "/mfg/{module}"): Rule("packs:write", create="pack_record"),
        ("GET", "/mfg/{module}/{id}"): Rule("packs:read"),
        ("PATCH", "/mfg/{module}/{id}"): Rule("packs:write"),
    }
    return {**rules, **plain}


RULES: dict[tuple[str, str], Rule] = _rules()

# The customer a record of each table belongs to, as the scope check sees it.
_SCOPE_SQL = {
    "customers": "SELECT tier, region_id, owner_rep_id FROM customers WHERE id = ?",
    "leads": "SELECT c.tier, l.region_id, l.owner_rep_id FROM leads l "
             "LEFT JOIN customers c ON c.id = l.customer_id WHERE l.id = ?",
    **{t: f"SELECT c.tier, c.region_id, c.owner_rep_id FROM {t} r "
          "JOIN customers c ON c.id = r.customer_id WHERE r.id = ?"
       for t in ("contacts", "opportunities", "activities")},
}


class Refused(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


def customer_scope(who: Principal, alias: str) -> list[tuple[str, list[Any]]]:
    """Conditions on customers (columns prefixed with ``alias``) for ``who``'s scope."""
    policy = who.policy
    out: list[tuple[str, list[Any]]] = []
    if policy.hidden_tiers:
        tiers = sorted(policy.hidden_tiers)
        out.append((f"{alias}tier NOT IN ({_marks(tiers)})", list(tiers)))
    if policy.scope == "own_region":
        out.append(_own(who, alias))
    return out


def _own(who: Principal, alias: str) -> tuple[str, list[Any]]:
    parts, params = [], []
    if who.rep_id is not None:
        parts.append(f"{alias}owner_rep_id = ?")
        params.append(who.rep_id)
    if who.regions:
        regions = sorted(who.regions)
        parts.append(f"{alias}region_id IN ({_marks(regions)})")
        params += regions
    return (f"({' OR '.join(parts)})" if parts else "1 = 0"), params


def scope_sql(who: Principal, entity: str) -> Scope | None:
    """The condition a restricted token adds to a listing of ``entity``."""
    if entity == "customers":
        conds = customer_scope(who, "c.")
    elif entity == "leads":
        conds = [_own(who, "")] if who.policy.scope == "own_region" else []
        hidden = sorted(who.policy.hidden_tiers)
        if hidden:
            conds.append((f"(customer_id IS NULL OR customer_id NOT IN (SELECT id FROM "
                          f"customers WHERE tier IN ({_marks(hidden)})))", list(hidden)))
    else:
        inner = customer_scope(who, "c.")
        conds = [(f"customer_id IN (SELECT c.id FROM customers c WHERE "
                  f"{' AND '.join(c for c, _ in inner)})",
                  [p for _, ps in inner for p in ps])] if inner else []
    if not conds:
        return None
    return " AND ".join(c for c, _ in conds), [p for _, ps in conds for p in ps]


def _customer_ids(value: Any, out: set[int]) -> None:
    if len(out) >= MAX_SUBJECTS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "customer_id" and isinstance(item, int):
                out.add(item)
            else:
                _customer_ids(item, out)
    elif isinstance(value, list):
        for item in value:
            _customer_ids(item, out)


class Guard:
    """Wraps every route's handler with the policy for named tokens."""

    def __init__(self, store: Store, audit: AuditLog,
                 entities: dict[str, EntityRoutes]) -> None:
        self.store, self.db, self.audit = store, store.db, audit
        self.entities = entities

    def app(self, routes: list[Route], **kwargs: Any) -> Starlette:
        """A Starlette application serving ``routes`` behind the policy."""
        wrapped = [Route(r.path, self.wrap(r.path, r.endpoint), methods=r.methods)
                   for r in routes]
        return Starlette(routes=wrapped, **kwargs)

    def wrap(self, path: str, endpoint: Any) -> Handler:
        async def guarded(request: Request) -> Response:
            return await self.handle(request, path, endpoint)
        return guarded

    async def handle(self, request: Request, path: str, endpoint: Handler) -> Response:
        who = principal_of(request.scope)
        method = "GET" if request.method == "HEAD" else request.method
        rule = RULES[(method, path)]
        try:
            if rule.permission is not None and not who.may(rule.permission):
                raise Refused("forbidden", f"role {who.role} lacks the permission "
                                           f"{rule.permission}")
            await self._check_request(who, rule, request)
            if rule.listing and not who.unrestricted:
                response = await self.entities[rule.listing].listing(
                    request, scope_sql(who, rule.listing))
            else:
                response = await endpoint(request)
            return await self._shape(who, rule, request, response)
        except Refused as exc:
            await self.audit.record(Entry(
                who.name, who.role, rule.permission or "access",
                f"{method} {request.url.path}", outcome="refused", reason=exc.message,
                customer_id=_path_customer(rule, request)))
            raise ApiError(403, exc.code, exc.message, exc.field) from None

    async def _scope_row(self, table: str, id_: int) -> Row | None:
        return await self.db.fetch_one(_SCOPE_SQL[table], (id_,))

    async def _check_target(self, who: Principal, table: str, id_: int) -> None:
        row = await self._scope_row(table, id_)
        if row is not None and not who.sees(row):
            raise Refused("out_of_scope", f"{ENTITIES[table].singular} {id_} is outside "
                                          f"the scope of token {who.name!r}")

    async def _check_request(self, who: Principal, rule: Rule, request: Request) -> None:
        if rule.listing:
            for param, fld in FILTER_FIELDS.items():
                if param in request.query_params and who.masks(fld):
                    raise Refused("masked_field", f"{fld} is masked for role {who.role}: "
                                                  "it cannot be searched or sorted", param)
        restricted = not who.unrestricted
        if rule.target and restricted:
            raw = request.path_params.get("id", "")
            if raw.isdigit() and 0 < int(raw) <= MAX_ID:
                await self._check_target(who, rule.target, int(raw))
        if request.method in ("POST", "PATCH", "PUT") and restricted:
            await self._check_body(who, rule, request)

    async def _check_body(self, who: Principal, rule: Rule, request: Request) -> None:
        raw = await read_body(request)
        # Handed on to the handler, which reads the request body again.
        request._body = raw
        try:
            body = _dec.decode(raw) if raw.strip() else None
        except msgspec.DecodeError:
            return
        if not isinstance(body, dict):
            return
        for key in body:
            cls = who.masks(key)
            if cls is not None:
                raise Refused("masked_field", f"{key} is masked for role {who.role}: it "
                                              "cannot be written", key)
        await self._check_refs(who, rule, request, body)

    async def _check_refs(self, who: Principal, rule: Rule, request: Request,
                          body: dict[str, Any]) -> None:
        """The records a created or changed record would belong to must be in scope."""
        kind = rule.create or (rule.target if request.method == "PATCH" else "")
        if kind == "customers":
            current: Row = {"tier": "normal"}
            if rule.target:
                current = await self._scope_row("customers", _int(request.path_params["id"])
                                                ) or current
            merged: Row = {**current, **{k: body[k] for k in ("tier", "region_id", "owner_rep_id")
                                    if k in body}}
            if not who.sees(merged):
                raise Refused("out_of_scope", f"the customer would be outside the scope of "
                                              f"token {who.name!r}")
            return
        refs: list[tuple[str, Any]] = []
        if kind in ("contacts", "opportunities", "activities", "pack_record", "leads", "orders"):
            refs.append(("customers", body.get("customer_id")))
        if kind == "events":
            events = body.get("events", [body])
            refs += [("customers", e.get("customer_id")) for e in events
                     if isinstance(e, dict)]
        if kind == "agent_run":
            refs.append(("leads", body.get("lead_id")))
        if kind == "leads" and rule.create and not _lead_in_scope(who, body):
            raise Refused("out_of_scope", f"the lead would be outside the scope of token "
                                          f"{who.name!r}")
        for table, ref in refs:
            if isinstance(ref, int) and 0 < ref <= MAX_ID:
                await self._check_target(who, table, ref)

    async def _shape(self, who: Principal, rule: Rule, request: Request,
                     response: Response) -> Response:
        if isinstance(response, StreamingResponse):
            if rule.permission == "stream:read" and not who.unrestricted:
                response.body_iterator = self._stream(who, response.body_iterator)
            return response
        if not rule.mask or response.status_code >= 300 or not response.body:
            return response
        data = _dec.decode(response.body)
        if not rule.target and not rule.listing and not who.unrestricted:
            data = await self._visible_only(who, data)
        shown = mask(data, who)
        fields = sensitive_keys(shown)
        if fields:
            subjects: set[int] = set()
            _customer_ids(shown, subjects)
            if rule.target == "customers" or rule.listing == "customers":
                _top_ids(shown, subjects)
            await self.audit.record(Entry(
                who.name, who.role, "read", f"{request.method} {request.url.path}",
                customer_id=_path_customer(rule, request), subjects=sorted(subjects),
                details={"fields": sorted(fields)}))
        return json_response(shown, response.status_code)

    async def _visible_only(self, who: Principal, data: Any) -> Any:
        """Drop the items of customers out of scope; refuse a single such record."""
        items = data.get("items") if isinstance(data, dict) else None
        if isinstance(items, list):
            seen = await self._sees_all(who, {i.get("customer_id") for i in items
                                              if isinstance(i, dict)})
            data["items"] = [i for i in items if not isinstance(i, dict)
                             or seen.get(i.get("customer_id"), True)]
            return data
        if isinstance(data, dict) and isinstance(data.get("customer_id"), int):
            cid = data["customer_id"]
            if not (await self._sees_all(who, {cid}))[cid]:
                raise Refused("out_of_scope", f"the record belongs to a customer outside "
                                              f"the scope of token {who.name!r}")
        return data

    async def _sees_all(self, who: Principal, ids: set[Any]) -> dict[Any, bool]:
        wanted = sorted(i for i in ids if isinstance(i, int))
        if not wanted:
            return {}
        rows = await self.db.fetch_all(
            f"SELECT id, tier, region_id, owner_rep_id FROM customers WHERE id IN "
            f"({_marks(wanted)})", wanted)
        found = {int(r["id"]): who.sees(r) for r in rows}
        return {i: found.get(i, False) for i in wanted}

    async def _stream(self, who: Principal, body: AsyncIterable[Any]) -> AsyncIterator[bytes]:
        """The change stream without messages about customers out of scope, masked."""
        seen: dict[Any, bool] = {}
        async for chunk in body:
            out: list[bytes] = []
            for block in bytes(chunk).split(b"\n\n"):
                if not block:
                    continue
                if not block.startswith(b"id:"):
                    out.append(block + b"\n\n")
                    continue
                head, _, data = block.partition(b"\ndata: ")
                message = _dec.decode(data)
                cid = message.get("customer_id")
                if cid is not None and cid not in seen:
                    seen.update(await self._sees_all(who, {cid}))
                if cid is not None and not seen.get(cid, False):
                    continue
                message["payload"] = mask(message["payload"], who)
                out.append(head + b"\ndata: " + _enc.encode(message) + b"\n\n")
            if out:
                yield b"".join(out)


def _int(raw: str) -> int:
    return int(raw) if raw.isdigit() and int(raw) <= MAX_ID else 0


def _path_customer(rule: Rule, request: Request) -> int | None:
    if rule.target != "customers":
        return None
    value = _int(request.path_params.get("id", ""))
    return value or None


def _top_ids(value: Any, out: set[int]) -> None:
    """Ids of customer records shown: the record itself, the items of a page, a 360."""
    if not isinstance(value, dict):
        return
    items = value.get("items")
    records = items if isinstance(items, list) else [value.get("customer", value)]
    out.update(r["id"] for r in records if isinstance(r, dict) and isinstance(r.get("id"), int))


def _lead_in_scope(who: Principal, body: dict[str, Any]) -> bool:
    if who.policy.scope != "own_region":
        return True
    return (who.rep_id is not None and body.get("owner_rep_id") == who.rep_id) or (
        body.get("region_id") in who.regions)


def guarded_entities(store: Store) -> dict[str, EntityRoutes]:
    return {name: EntityRoutes(name, store) for name in ENTITIES}


__all__ = ["RULES", "Guard", "Refused", "Rule", "customer_scope", "guarded_entities",
           "scope_sql"]
