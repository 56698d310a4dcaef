"""The OpenAPI 3.1 document of the reference CRM: every constraint the server enforces and
every status it answers, built from the msgspec request models and the table definitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from reference_impl import agents
from reference_impl import models as m
from reference_impl.access import FIELD_CLASSES, PERMISSIONS, ROLES
from reference_impl.privacy import ConsentUpdate
from reference_impl.routes.tokens import TokenIssue
from reference_impl.schema import AGENT_RUN_STATUSES, TABLES_BY_NAME, TIERS
from reference_impl.sla import SlaCreate
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION, HEARTBEAT_S
from reference_impl.web import (
    DEFAULT_LIMIT,
    MAX_BODY,
    MAX_ID,
    MAX_LIMIT,
    MAX_QUERY_TEXT,
    MAX_WORKFLOW_BODY,
)
from reference_impl.workflows import RunCreate, WorkflowDeploy

# path -> (record schema, create body, update body, list filters: name -> schema)
_NO_NUL = "^[^\\x00]*$"
_TEXT_PARAM = {"type": "string", "maxLength": MAX_QUERY_TEXT, "pattern": _NO_NUL}
_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_ENTITIES: dict[str, tuple[str, type[msgspec.Struct], type[msgspec.Struct], dict[str, Any]]] = {
    "customers": ("Customer", m.CustomerCreate, m.CustomerUpdate, {
        "name_prefix": {**_TEXT_PARAM, "description": "case-insensitive name prefix"},
        "region_id": _ID_SCHEMA,
        "tier": {"type": "string", "enum": list(TIERS)},
        "tag": _TEXT_PARAM,
        "owner_rep_id": _ID_SCHEMA,
    }),
    "contacts": ("Contact", m.ContactCreate, m.ContactUpdate, {"customer_id": _ID_SCHEMA}),
    "leads": ("Lead", m.LeadCreate, m.LeadUpdate, {
        "status": _TEXT_PARAM, "owner_rep_id": _ID_SCHEMA, "customer_id": _ID_SCHEMA,
        "region_id": _ID_SCHEMA,
    }),
    "opportunities": ("Opportunity", m.OpportunityCreate, m.OpportunityUpdate, {
        "customer_id": _ID_SCHEMA, "stage": _TEXT_PARAM, "owner_rep_id": _ID_SCHEMA,
    }),
    "activities": ("Activity", m.ActivityCreate, m.ActivityUpdate,
                   {"customer_id": _ID_SCHEMA, "rep_id": _ID_SCHEMA}),
}
# Records as the API shows them: the table's columns, less internal ones, plus these
# optional ones.
_RECORD_EXTRAS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "customers": (("name_key",), {"tags": {
        "type": "array", "items": {"type": "string"},
        "description": "sorted; in single records, not in lists"}}),
}
_KIND_TYPES = {"id": "integer", "int": "integer", "float": "number", "text": "string",
               "bool": "boolean", "ts": "string"}

_MIB = 1024 * 1024
_ERROR_TEXT = {
    400: "Bad request: an unknown, repeated or invalid query or path parameter, a "
         "non-numeric Content-Length, or a body that is empty or not JSON",
    401: "Missing or wrong bearer token (with `WWW-Authenticate: Bearer`)",
    403: "Refused by the policy of the token's role: `forbidden` (no permission), "
         "`out_of_scope` (a record of another region, owner or a hidden tier) or "
         "`masked_field` (a masked field searched or written; `field` names it)",
    404: "No such resource",
    409: "Conflict with the stored data",
    413: f"Body larger than {MAX_BODY // _MIB} MiB ({MAX_BODY:,} bytes)",
    415: "Content-Type is not application/json",
    422: "Body or reference fails validation (`field` names the offending one)",
    503: "The database does not answer",
}
_BODY_ERRORS = (400, 413, 415, 422)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}

_DESCRIPTION = f"""The reference CRM of crmbench.

Every refusal has the body `{{"error": {{"code", "message", "field"}}}}`. Query parameters \
not listed for an operation, or given twice, are refused with 400. Request bodies are JSON \
of at most {MAX_BODY // _MIB} MiB ({MAX_WORKFLOW_BODY // _MIB} MiB for `POST /workflows`); \
larger ones get 413. A method a path does not serve gets 405 with an `Allow` header naming \
those it does; `HEAD` is served wherever `GET` is. Every path but `/health` and \
`/openapi.json` needs `Authorization: Bearer <token>`: the service token, or a named token \
bound to a role (`GET /me` tells which). A role may be refused an operation (403), see only \
the customers of its scope and tiers, and see fields of a masked class (contact data: \
`email`, `phone`, `first_name`, `last_name`, `contact_name`; preferences: `consent_*`, \
`tags`, `counters`) as `{{"masked": "<class>"}}` wherever they appear, the change stream and \
exports included; a masked field cannot be searched, sorted or written. Integers are written \
without a fraction or exponent (`7`, not `7.0`), dates and times as RFC 3339 text."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(codes: Iterable[int], too_large: int = MAX_BODY) -> dict[str, Any]:
    out = {str(c): {"description": _ERROR_TEXT[c], **_json(_ref("Error"))}
           for c in sorted(set(codes))}
    if "413" in out and too_large != MAX_BODY:
        out["413"]["description"] = f"Body larger than {too_large // _MIB} MiB"
    return out


def _query(name: str, schema: dict[str, Any], desc: str = "") -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": False, "schema": schema}
    if desc:
        out["description"] = desc
    return out


def _path(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": schema or {"type": "string"}}


_PAGING = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                     "default": DEFAULT_LIMIT}, f"page size (default {DEFAULT_LIMIT})"),
    _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_ID},
           "return items with an id greater than this (from next_after)"),
]
_ID = _path("id", _ID_SCHEMA)
_AGENT = _path("agent", {"type": "string", "enum": ["lead_intake"]})
_NULLABLE_INT = {"type": ["integer", "null"]}
_OBJECT = {"type": "object"}


def _op(
    summary: str,
    ok: Mapping[str, tuple[str, Mapping[str, Any] | None]],
    *errors: int,
    params: Iterable[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    description: str | None = None,
    too_large: int = MAX_BODY,
) -> dict[str, Any]:
    """One authenticated operation; 400, 401 and 403 always, the body refusals with a body."""
    codes = {400, 401, 403, *errors, *(_BODY_ERRORS if body is not None else ())}
    responses: dict[str, Any] = {}
    for status, (text, schema) in ok.items():
        responses[status] = {"description": text, **(_json(dict(schema)) if schema else {})}
    out: dict[str, Any] = {"summary": summary,
                           "responses": {**responses, **_errors(codes, too_large)}}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = {"required": True, **_json(body)}
    return out


_STREAM_DESCRIPTION = f"""Server-Sent Events of changes: `id: <seq>`, `event: <type>`, \
`data: {{"seq", "type", "customer_id", "at", "payload"}}`.

Types: `profile.updated`, `agent.completed`, `agent.escalated`, `agent.failed` (more to come); \
`stream.gap` when resuming below the retained window (payload `requested_after`, \
`oldest_available`; seq `oldest_available - 1`). Sequence numbers increase strictly and are \
never reused, across restarts. Resume with `after` or the `Last-Event-ID` header: every \
retained message with a higher seq follows, in order, then live ones, without gap or \
duplicate. Without either, only live messages are sent. Retention: the last \
{DEFAULT_RETENTION:,} sequence numbers (`CRMBENCH_STREAM_RETENTION`). A subscriber more than \
{DEFAULT_QUEUE:,} messages behind is disconnected and may resume. The first line is the \
comment `: subscribed <last_seq>`; idle streams get `: ping` every {HEARTBEAT_S:g} s."""

_RESPONSES: dict[str, dict[str, Any]] = {
    "StreamMessage": {
        "type": "object",
        "required": ["seq", "type", "customer_id", "at", "payload"],
        "properties": {"seq": {"type": "integer"}, "type": {"type": "string"},
                       "customer_id": _NULLABLE_INT,
                       "at": {"type": "string", "description": "server time, ISO-8601 UTC"},
                       "payload": _OBJECT},
    },
    "StreamInfo": {
        "type": "object",
        "required": ["last_seq", "oldest_seq", "retention"],
        "properties": {"last_seq": {"type": "integer"}, "oldest_seq": _NULLABLE_INT,
                       "retention": {"type": "integer"}},
    },
    "EventsAccepted": {
        "type": "object",
        "required": ["accepted", "duplicates", "events"],
        "properties": {
            "accepted": {"type": "integer", "description": "events stored now"},
            "duplicates": {"type": "integer",
                           "description": "events whose idempotency key was already stored "
                                          "or repeated in the batch"},
            "events": {"type": "array", "items": {
                "type": "object", "required": ["idempotency_key", "id", "duplicate"],
                "properties": {"idempotency_key": {"type": "string"},
                               "id": {"type": "integer"}, "duplicate": {"type": "boolean"}}}},
        },
    },
    "Tag": {
        "type": "object",
        "required": ["value", "formula", "weights", "inputs", "source_events"],
        "properties": {"value": {"type": "number", "minimum": 0, "maximum": 1},
                       "formula": {"type": "string"}, "weights": _OBJECT, "inputs": _OBJECT,
                       "source_events": {"type": "array", "items": {"type": "integer"},
                                         "maxItems": 20}},
    },
    "Profile": {
        "type": "object",
        "required": ["customer_id", "counters", "tags", "tags_suppressed", "updated_at"],
        "properties": {
            "customer_id": {"type": "integer"},
            "counters": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"count": {"type": "integer"},
                                                 "last_at": {"type": "string"}}}},
            "tags": {"type": "object", "additionalProperties": _ref("Tag")},
            "tags_suppressed": {"type": ["string", "null"]},
            "updated_at": {"type": ["string", "null"]},
        },
    },
    "AgentRunStarted": {
        "type": "object", "required": ["run_id", "status"],
        "properties": {"run_id": {"type": "string"}, "status": {"const": "running"}},
    },
    "AgentRun": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string"}, "agent": {"type": "string"},
            "lead_id": {"type": "integer"}, "customer_id": _NULLABLE_INT,
            "owner_rep_id": _NULLABLE_INT,
            "status": {"type": "string", "enum": list(AGENT_RUN_STATUSES)},
            "started_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]},
            "duration_ms": {"type": ["number", "null"]}, "quantity": _NULLABLE_INT,
            "escalation_reasons": {"type": "array", "items": {"type": "string"}},
            "quote": {"type": ["object", "null"]},
            "decision_log": {"type": "array", "items": {
                "type": "object",
                "required": ["step", "intent", "inputs", "output", "confidence", "rule",
                             "duration_ms"],
                "properties": {"step": {"type": "string"}, "intent": {"type": "string"},
                               "inputs": _OBJECT, "output": _OBJECT,
                               "confidence": {"type": "number"}, "rule": {"type": "string"},
                               "duration_ms": {"type": "number"}}}},
            "error": {"type": ["string", "null"]},
        },
    },
    "AgentConfig": {
        "type": "object",
        "properties": {
            "agent": {"type": "string"}, "min_confidence": {"type": "number"},
            "max_quote": {"type": "number"},
            "escalate_tiers": {"type": "array", "items": {"enum": list(TIERS)}},
            "scorer": {"type": "string"}, "updated_at": {"type": ["string", "null"]},
        },
    },
}


def _record(table: str) -> dict[str, Any]:
    """A stored record as the API shows it, from its table's columns."""
    drop, extra = _RECORD_EXTRAS.get(table, ((), {}))
    props: dict[str, Any] = {}
    for col in TABLES_BY_NAME[table].columns:
        if col.name in drop:
            continue
        kind = _KIND_TYPES.get(col.kind)
        props[col.name] = {} if kind is None else {
            "type": [kind, "null"] if col.nullable else kind}
        if col.name in FIELD_CLASSES and kind is not None:
            props[col.name] = {"anyOf": [props[col.name], _ref("Masked")]}
    required = list(props)
    props.update({k: {"anyOf": [v, _ref("Masked")]} if k in FIELD_CLASSES else v
                  for k, v in extra.items()})
    return {"type": "object", "required": required, "properties": props}


def _page(items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_after", "limit"],
        "properties": {
            "items": {"type": "array", "items": items},
            "next_after": {**_NULLABLE_INT, "description": "pass as `after` for the next page; "
                                                          "null on the last"},
            "limit": {"type": "integer"},
        },
    }


def _components() -> dict[str, Any]:
    structs = [t for _, c, u, _ in _ENTITIES.values() for t in (c, u)] + [
        m.StageChange, m.EventIn, m.EventBatch, m.LeadIntakeRunCreate, m.AgentConfigUpdate,
        m.ClockAdvance, WorkflowDeploy, RunCreate, SlaCreate, ConsentUpdate, TokenIssue,
        agents.ProductIn, agents.StockIn, agents.OrderIn,
    ]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    components["Error"] = _ERROR
    components.update(_PRIVACY_SCHEMAS)
    components.update(_RESPONSES)
    components["Page"] = _page(_OBJECT)
    for path, (label, *_) in _ENTITIES.items():
        components[label] = _record(path)
        components[f"{label}Page"] = _page(_ref(label))
    components["Customer360"] = {
        "type": "object",
        "required": ["customer", "region", "owner", "contacts", "recent_orders", "order_stats",
                     "open_opportunities", "recent_activities"],
        "properties": {
            "customer": _ref("Customer"), "region": _record("regions"),
            "owner": _record("reps"),
            "contacts": {"type": "array", "items": _ref("Contact")},
            "recent_orders": {"type": "array", "items": _OBJECT},
            "order_stats": _OBJECT,
            "open_opportunities": {"type": "array", "items": _ref("Opportunity")},
            "recent_activities": {"type": "array", "items": _ref("Activity")},
        },
    }
    keyspace = ("customers", "opportunities", "reps", "regions", "products", "leads")
    components["Keyspace"] = {
        "type": "object", "required": list(keyspace),
        "properties": {t: {"type": "integer", "minimum": 0} for t in keyspace},
    }
    return components


def build_openapi(version: str) -> dict[str, Any]:
    """Return the OpenAPI document as a plain dict."""
    paths: dict[str, Any] = {
        "/health": {"get": {
            "summary": "Liveness and backend", "security": [],
            "responses": {"200": {"description": "Service is up", **_json(_ref("Health"))},
                          "503": {"description": _ERROR_TEXT[503],
                                  **_json(_ref("Health"))}}}},
        "/openapi.json": {"get": {
            "summary": "This document", "security": [],
            "responses": {"200": {"description": "OpenAPI document", **_json(_OBJECT)}}}},
    }
    paths.update(_record_paths())
    paths.update(_stream_paths())
    paths.update(_agent_paths())
    paths.update(_engine_paths())
    paths.update(_pack_paths())
    paths.update(_privacy_paths())
    components = _components()
    components["Health"] = {
        "type": "object", "required": ["status", "version", "backend", "pid"],
        "properties": {"status": {"enum": ["ok", "degraded"]}, "version": {"type": "string"},
                       "backend": {"enum": ["sqlite", "postgresql"]},
                       "pid": {"type": "integer"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "crmbench reference CRM", "version": version,
                 "description": _DESCRIPTION},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _record_paths() -> dict[str, Any]:
    """CRUD of the five entities, the customer 360 view, stage changes and the keyspace."""
    paths: dict[str, Any] = {}
    for path, (label, create, update, filters) in _ENTITIES.items():
        name = label.lower()
        params = _PAGING + [_query(k, v) for k, v in filters.items()]
        paths[f"/{path}"] = {
            "get": _op(f"List or search {path}, in id order",
                       {"200": ("A page", _ref(f"{label}Page"))}, params=params),
            "post": _op(f"Create a {name}", {"201": ("Created", _ref(label))}, 409,
                        body=_ref(create.__name__)),
        }
        paths[f"/{path}/{{id}}"] = {
            "parameters": [_ID],
            "get": _op(f"Read a {name}", {"200": (label, _ref(label))}, 404),
            "patch": _op(f"Update a {name}", {"200": ("Updated", _ref(label))}, 404, 409,
                         body=_ref(update.__name__)),
            "delete": _op(f"Delete a {name}", {"204": ("Deleted", None)}, 404, 409),
        }
    paths["/customers/{id}/360"] = {"parameters": [_ID], "get": _op(
        "Customer 360: profile, contacts, recent orders, open opportunities",
        {"200": ("Customer 360 view", _ref("Customer360"))}, 404)}
    paths["/opportunities/{id}/stage"] = {"parameters": [_ID], "post": _op(
        "Move an opportunity to another stage (recorded in its history)",
        {"200": ("Updated", _ref("Opportunity"))}, 404, 409, body=_ref("StageChange"))}
    paths["/stats"] = {"get": _op(
        "Highest id of customers, opportunities, reps, regions, products and leads (0 when "
        "empty): the keyspace workloads draw ids from",
        {"200": ("Highest id per table", _ref("Keyspace"))})}
    return paths


def _stream_paths() -> dict[str, Any]:
    """Change stream, customer-data events and profiles."""
    type_re = r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?"
    stream = _op(
        "Change stream (Server-Sent Events)", {}, description=_STREAM_DESCRIPTION,
        params=[
            _query("types", {**_TEXT_PARAM, "pattern": f"^{type_re}(,{type_re})*$"},
                   "comma-separated message types to receive; `agent.*` stands for every "
                   "type starting with `agent.`"),
            _query("customer_id", _ID_SCHEMA, "only messages about this customer"),
            _query("after", {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                   "resume: messages with a higher seq, then live ones"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
             "description": "like after (ignored when after is given)"},
        ],
    )
    stream["responses"]["200"] = {
        "description": "An endless event stream",
        "content": {"text/event-stream": {"schema": _ref("StreamMessage")}}}
    return {
        "/stream": {"get": stream},
        "/stream/info": {"get": _op(
            "Newest and oldest retained sequence numbers, and the retention",
            {"200": ("Stream window", _ref("StreamInfo"))})},
        "/events": {"post": _op(
            f"Ingest customer-data events: one, or {{events: [...]}} with up to "
            f"{m.MAX_EVENTS_PER_BATCH:,}",
            {"202": ("Stored (committed)", _ref("EventsAccepted"))},
            description="All or nothing. A repeated idempotency key is stored once and "
                        "reported as a duplicate with the original id. Each new event updates "
                        "the customer's profile in the same transaction and is announced by "
                        "one `profile.updated` stream message. `properties` take at most "
                        f"{m.MAX_EVENT_PROPERTIES_BYTES:,} bytes as JSON.",
            body={"oneOf": [_ref("EventIn"), _ref("EventBatch")]})},
        "/customers/{id}/profile": {"parameters": [_ID], "get": _op(
            "Event counters and explained tags of a customer",
            {"200": ("Profile", _ref("Profile"))}, 404)},
    }


def _agent_paths() -> dict[str, Any]:
    """The lead-intake agent: runs, the escalation queue and its thresholds."""
    run_id = _path("run_id", {"type": "string", "description": "a run id (digits); any other "
                                                                "text is not found"})
    return {
        "/agents/{agent}/runs": {"parameters": [_AGENT], "post": _op(
            "Start an agent run in the background",
            {"202": ("Started", _ref("AgentRunStarted"))}, 404,
            description="Ends with one stream message, agent.completed or agent.escalated "
                        "(agent.failed on an error).",
            body=_ref("LeadIntakeRunCreate"))},
        "/agents/runs/{run_id}": {"parameters": [run_id], "get": _op(
            "A run with its decision log", {"200": ("Run", _ref("AgentRun"))}, 404)},
        "/agents/queue": {"get": _op(
            "Escalated runs awaiting a person, oldest first",
            {"200": ("A page of runs", _page(_ref("AgentRun")))}, params=_PAGING)},
        "/products": {"post": _op(
            "Add a product to the catalogue the agent's quote step prices from",
            {"201": ("Created", _OBJECT)}, body=_ref("ProductIn"))},
        "/inventory/{product_id}/{region_id}": {
            "parameters": [_path("product_id", _ID_SCHEMA), _path("region_id", _ID_SCHEMA)],
            "put": _op("Set a product's stock in a region, as the inventory step reads it",
                       {"200": ("Stock set", _OBJECT)}, 404, body=_ref("StockIn"))},
        "/orders": {"post": _op(
            "Record an order with its lines, as the purchase-history step reads it",
            {"201": ("Created", _OBJECT)}, body=_ref("OrderIn"),
            description="422 `unknown_reference` when the customer or a line's product "
                        "does not exist.")},
        "/agents/{agent}/config": {
            "parameters": [_AGENT],
            "get": _op("Takeover thresholds of the agent",
                       {"200": ("Config", _ref("AgentConfig"))}, 404),
            "put": _op("Change takeover thresholds (omitted fields stay); persisted",
                       {"200": ("New config", _ref("AgentConfig"))}, 404,
                       body=_ref("AgentConfigUpdate")),
        },
    }


def _engine_paths() -> dict[str, Any]:
    """Workflows, SLAs and the test clock."""
    run_id = _path("run_id", {"type": "string", "description": "32 hex digits"})
    one = {"200": ("Done", _OBJECT)}
    return {
        "/workflows": {"post": _op(
            "Deploy a workflow; re-deploying a name adds a version",
            {"201": ("Deployed", _OBJECT)}, 409, body=_ref("WorkflowDeploy"),
            too_large=MAX_WORKFLOW_BODY,
            description="422 `invalid_workflow` names the node or edge at fault: unknown "
                        "types, dangling edges, cycles, parameters that do not fit.")},
        "/workflows/{id}": {"parameters": [_ID], "get": _op(
            "A workflow version (latest unless ?version=)", one, 404,
            params=[_query("version", _ID_SCHEMA)])},
        "/workflows/{id}/runs": {"parameters": [_ID], "post": _op(
            "Run a workflow", {"200": ("The finished run (wait=true)", _OBJECT),
                               "202": ("Started (wait=false)", _OBJECT)}, 404, 409,
            description="409 workflow_paused or workflow_disabled (its pack is off); 422 when "
                        "a node needs a record or customer the input lacks.",
            body=_ref("RunCreate"))},
        "/workflows/runs/{run_id}": {"parameters": [run_id], "get": _op(
            "A workflow run", one, 404)},
        "/workflows/{id}/resume": {"parameters": [_ID], "post": _op(
            "Resume a workflow paused by its breaker", one, 404)},
        "/workflows/{id}/lineage": {"parameters": [_ID], "get": _op(
            "Objects and fields read and written, integrations used", one, 404)},
        "/slas": {
            "get": _op("SLA definitions", {"200": ("SLAs", {
                "type": "object", "required": ["items"],
                "properties": {"items": {"type": "array", "items": _OBJECT}}})}),
            "post": _op("Define an SLA", {"201": ("Defined", _OBJECT)}, body=_ref("SlaCreate"),
                        description="422 `invalid_sla` for parameters that do not fit the "
                                    "level and object."),
        },
        "/slas/{id}": {"parameters": [_ID], "get": _op("An SLA definition", one, 404)},
        "/slas/{id}/instances": {"parameters": [_ID], "get": _op(
            "SLA instances with status green|yellow|red|met", {"200": ("A page", _ref("Page"))},
            404, params=_PAGING)},
        "/clock": {"get": _op("The service clock; 404 unless started with --test-clock",
                              one, 404)},
        "/clock/advance": {"post": _op(
            "Move the test clock and run the SLA checker; 404 unless started with --test-clock",
            one, 404, body=_ref("ClockAdvance"))},
    }


def _pack_paths() -> dict[str, Any]:
    """Scenario packs and the manufacturing pack's records (404 while it is disabled)."""
    name = _path("name")
    module = _path("module")
    one = {"200": ("Done", _OBJECT)}
    record = {"type": "object", "description": "fields of the module (see GET /packs/{name})"}
    return {
        "/packs": {"get": _op("Enabled scenario packs", {"200": ("Packs", {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": _OBJECT}}})})},
        "/packs/{name}": {"parameters": [name], "get": _op("A pack", one, 404)},
        "/packs/{name}/enable": {"parameters": [name], "post": _op(
            "Enable a pack and deploy its workflows and SLAs (idempotent)", one, 404, 422)},
        "/packs/{name}/disable": {"parameters": [name], "post": _op(
            "Disable a pack (idempotent; data kept)", one, 404)},
        "/packs/{name}/checks": {"parameters": [name], "get": _op(
            "Run the pack's acceptance checks", one, 404)},
        "/packs/{name}/reports": {"parameters": [name], "get": _op(
            "The pack's reports", one, 404)},
        "/packs/{name}/reports/{report}": {"parameters": [name, _path("report")], "get": _op(
            "Run one of the pack's reports", one, 404)},
        "/mfg/{module}": {
            "parameters": [module],
            "get": _op("Records of a manufacturing module", {"200": ("A page", _ref("Page"))},
                       404, params=_PAGING),
            "post": _op("Create a record", {"201": ("Created", _OBJECT)}, 404, body=record),
        },
        "/mfg/{module}/{id}": {
            "parameters": [module, _ID],
            "get": _op("A record", one, 404),
            "patch": _op("Update a record (PPAP elements accumulate)", one, 404, body=record),
        },
        "/mfg/contracts/{id}/approve": {"parameters": [_ID], "post": _op(
            "Approve a contract; 409 approval_frozen while PPAP is incomplete", one, 404,
            409)},
    }


_STRINGS = {"type": "array", "items": {"type": "string"}}
_PRIVACY_SCHEMAS: dict[str, Any] = {
    "Masked": {"type": "object", "required": ["masked"], "additionalProperties": False,
               "properties": {"masked": {"enum": sorted(set(FIELD_CLASSES.values()))}},
               "description": "a value hidden from this token's role: the key stays"},
    "Me": {
        "type": "object",
        "required": ["name", "role", "rep_id", "regions", "permissions", "masked_classes",
                     "hidden_tiers", "scope"],
        "properties": {
            "name": {"type": "string"}, "role": {"enum": list(ROLES)},
            "rep_id": _NULLABLE_INT, "regions": {"type": "array", "items": {"type": "integer"}},
            "permissions": {"type": "array", "items": {"enum": list(PERMISSIONS)}},
            "masked_classes": _STRINGS, "hidden_tiers": _STRINGS,
            "scope": {"enum": ["all", "own_region"]}},
    },
    "Consent": {
        "type": "object",
        "required": ["customer_id", "consent_profiling", "consent_marketing", "profiling",
                     "marketing", "updated_at"],
        "properties": {
            "customer_id": {"type": "integer"},
            "consent_profiling": {"anyOf": [{"type": "boolean"}, _ref("Masked")]},
            "consent_marketing": {"anyOf": [{"type": "boolean"}, _ref("Masked")]},
            "profiling": {"enum": ["active", "stopped"]},
            "marketing": {"enum": ["allowed", "stopped"]},
            "updated_at": {"type": "string"}},
    },
    "Erasure": {
        "type": "object",
        "required": ["customer_id", "erased", "already_erased", "removed", "audit_seq"],
        "properties": {
            "customer_id": {"type": "integer"}, "erased": {"type": "boolean"},
            "already_erased": {"type": "boolean"},
            "removed": {"type": "object", "additionalProperties": {"type": "integer"},
                        "description": "rows removed per table (empty when already erased)"},
            "audit_seq": {"type": "integer", "description": "the erasure's audit entry"}},
    },
    "AuditEntry": {
        "type": "object",
        "required": ["seq", "at", "actor", "role", "action", "route", "customer_id",
                     "outcome", "reason", "details", "prev_hash", "hash"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1}, "at": {"type": "string"},
            "actor": {"type": "string", "description": "token name; `service` for the "
                                                       "service token"},
            "role": {"enum": list(ROLES)}, "action": {"type": "string"},
            "route": {"type": "string"}, "customer_id": _NULLABLE_INT,
            "outcome": {"enum": ["ok", "refused"]}, "reason": {"type": ["string", "null"]},
            "details": _OBJECT,
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    },
    "IssuedToken": {
        "type": "object",
        "required": ["name", "role", "rep_id", "regions", "permissions", "masked_classes",
                     "hidden_tiers", "scope", "token"],
        "properties": {"name": {"type": "string"}, "role": {"enum": list(ROLES)},
                       "rep_id": _NULLABLE_INT,
                       "regions": {"type": "array", "items": {"type": "integer"}},
                       "permissions": {"type": "array", "items": {"enum": list(PERMISSIONS)}},
                       "masked_classes": _STRINGS, "hidden_tiers": _STRINGS,
                       "scope": {"enum": ["all", "own_region"]},
                       "token": {"type": "string", "description": "the secret, shown once"}},
    },
    "AuditVerdict": {
        "type": "object",
        "required": ["ok", "entries", "first_bad_seq", "problem", "head"],
        "properties": {"ok": {"type": "boolean"}, "entries": {"type": "integer"},
                       "first_bad_seq": _NULLABLE_INT, "problem": {"type": ["string", "null"]},
                       "head": {"type": "string"}},
    },
}

_EXPORT_DESCRIPTION = """Streamed NDJSON, one JSON object per line: a header \
`{"format": "crmbench.export/1", "customer_id", "generated_at", "generated_for", \
"masked_classes"}`, then one line per record `{"section", "record"}` (sections: customer, \
profile, contacts, orders with their lines, opportunities with their stage changes, \
activities, leads, events, cdp_events, agent_runs, sla_instances, pack_records, \
stream_messages, audit), and last a manifest `{"manifest": {"sections": {name: count}, \
"records", "bytes", "sha256"}}` whose SHA-256 and byte count cover every byte before it. \
Audited. 404 when nothing about the customer is stored (after an erasure)."""


def _privacy_paths() -> dict[str, Any]:
    """Who am I, consent, export, erasure and the audit trail."""
    audit_params = [*_PAGING, _query("customer_id", _ID_SCHEMA, "entries about this customer"),
                    _query("action", _TEXT_PARAM, "read, export, erase, consent, or the "
                                                  "permission a refusal concerned"),
                    _query("actor", _TEXT_PARAM), _query("outcome",
                                                         {"enum": ["ok", "refused"]})]
    export = _op("Everything stored about one customer, as a verifiable bundle", {}, 404,
                 description=_EXPORT_DESCRIPTION)
    export["responses"]["200"] = {"description": "The bundle (NDJSON)",
                                  "content": {"application/x-ndjson": {"schema": _OBJECT}}}
    return {
        "/me": {"get": _op("The calling token: name, role, permissions, scope, masks",
                           {"200": ("Principal", _ref("Me"))})},
        "/customers/{id}/consent": {
            "parameters": [_ID],
            "get": _op("Consent flags and whether profiling and marketing run",
                       {"200": ("Consent", _ref("Consent"))}, 404),
            "put": _op("Withdraw or restore consent; takes effect at once, audited",
                       {"200": ("Consent now", _ref("Consent"))}, 404, 409,
                       body=_ref("ConsentUpdate"),
                       description="Withdrawn profiling stops tag computation for new "
                                   "events and clears the tags derived so far; agent steps "
                                   "that would use the profile skip it with the reason in "
                                   "their decision log. 422 when no flag is given."),
        },
        "/customers/{id}/export": {"parameters": [_ID], "get": export},
        "/customers/{id}/erase": {"parameters": [_ID], "post": _op(
            "Erase a customer everywhere (idempotent); the audit entry is kept",
            {"200": ("Erased now, or already", _ref("Erasure"))}, 404,
            description="Removes the customer, its contacts, orders, opportunities, "
                        "activities, leads, events, profile, agent runs, SLA instances, "
                        "pack records and change-stream messages in one transaction. A "
                        "repeated call answers with `already_erased`; 404 for an id never "
                        "stored.")},
        "/audit": {"get": _op("Audit entries in seq order (auditor, admin)",
                              {"200": ("A page", _page(_ref("AuditEntry")))},
                              params=audit_params)},
        "/audit/verify": {"get": _op(
            "Recompute the audit hash chain", {"200": ("Verdict", _ref("AuditVerdict"))})},
        "/tokens": {"post": _op(
            "Issue a role token (admin); its secret is in this answer only",
            {"201": ("The token", _ref("IssuedToken"))}, 409, body=_ref("TokenIssue"),
            description="The token lives in the serving process: with several worker "
                        "processes 409 not_shared; a name in use is 409 name_in_use; a "
                        "sales_rep without rep_id or regions, or the name `service`, is 422 "
                        "invalid_token. Audited without the secret.")},
        "/tokens/{name}": {"parameters": [_path("name")], "delete": _op(
            "Revoke a token issued at run time", {"204": ("Revoked", None)}, 404)},
    }
