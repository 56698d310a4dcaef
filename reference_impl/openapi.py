"""The OpenAPI 3.1 document of the reference CRM, built from the msgspec request models."""

from __future__ import annotations

from typing import Any

import msgspec

from reference_impl import models as m
from reference_impl.schema import AGENT_RUN_STATUSES, TIERS
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION, HEARTBEAT_S

_ENTITIES: dict[str, tuple[str, type[msgspec.Struct], type[msgspec.Struct], list[str]]] = {
    "customers": ("Customer", m.CustomerCreate, m.CustomerUpdate, []),
    "contacts": ("Contact", m.ContactCreate, m.ContactUpdate, ["customer_id"]),
    "leads": ("Lead", m.LeadCreate, m.LeadUpdate,
              ["status", "owner_rep_id", "customer_id", "region_id"]),
    "opportunities": ("Opportunity", m.OpportunityCreate, m.OpportunityUpdate,
                      ["customer_id", "stage", "owner_rep_id"]),
    "activities": ("Activity", m.ActivityCreate, m.ActivityUpdate, ["customer_id", "rep_id"]),
}

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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Missing or wrong bearer token", 404: "Not found",
            409: "Conflict", 413: "Body larger than 1 MiB", 415: "Not JSON",
            422: "Validation failed"}
    return {str(c): {"description": text[c], **_json(_ref("Error"))} for c in codes}


def _query(name: str, kind: str = "integer", desc: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind},
            "description": desc}


_PAGING = [
    _query("limit", desc="page size, 1..500 (default 50)"),
    _query("after", desc="return items with an id greater than this (from next_after)"),
]
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_AGENT = {"name": "agent", "in": "path", "required": True,
          "schema": {"type": "string", "enum": ["lead_intake"]}}

_NULLABLE_INT = {"type": ["integer", "null"]}
_OBJECT = {"type": "object"}

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


def build_openapi(version: str) -> dict[str, Any]:
    """Return the OpenAPI document as a plain dict."""
    structs = [t for _, c, u, _ in _ENTITIES.values() for t in (c, u)] + [
        m.StageChange, m.EventIn, m.EventBatch, m.LeadIntakeRunCreate, m.AgentConfigUpdate,
    ]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    components["Error"] = _ERROR
    components.update(_RESPONSES)
    components["Page"] = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"type": "object"}},
            "next_after": {"type": ["integer", "null"]},
            "limit": {"type": "integer"},
        },
    }
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness and backend", "security": [],
                            "responses": {"200": {"description": "Service is up"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI document"}}}},
    }
    for path, (label, create, update, filters) in _ENTITIES.items():
        params = list(_PAGING)
        if path == "customers":
            params += [
                _query("name_prefix", "string", "case-insensitive name prefix"),
                _query("region_id"), _query("tier", "string"), _query("tag", "string"),
                _query("owner_rep_id"),
            ]
        else:
            params += [_query(f, "string" if f in ("status", "stage") else "integer")
                       for f in filters]
        paths[f"/{path}"] = {
            "get": {"summary": f"List or search {path}", "parameters": params,
                    "responses": {"200": {"description": "A page", **_json(_ref("Page"))},
                                  **_errors(400, 401)}},
            "post": {"summary": f"Create a {label.lower()}",
                     "requestBody": {"required": True, **_json(_ref(create.__name__))},
                     "responses": {"201": {"description": "Created"},
                                   **_errors(400, 401, 409, 413, 415, 422)}},
        }
        paths[f"/{path}/{{id}}"] = {
            "parameters": [_ID],
            "get": {"summary": f"Read a {label.lower()}",
                    "responses": {"200": {"description": label}, **_errors(400, 401, 404)}},
            "patch": {"summary": f"Update a {label.lower()}",
                      "requestBody": {"required": True, **_json(_ref(update.__name__))},
                      "responses": {"200": {"description": "Updated"},
                                    **_errors(400, 401, 404, 409, 413, 415, 422)}},
            "delete": {"summary": f"Delete a {label.lower()}",
                       "responses": {"204": {"description": "Deleted"},
                                     **_errors(400, 401, 404, 409)}},
        }
    paths["/customers/{id}/360"] = {
        "parameters": [_ID],
        "get": {"summary": "Customer 360: profile, contacts, recent orders, open opportunities",
                "responses": {"200": {"description": "Customer 360 view"},
                              **_errors(400, 401, 404)}},
    }
    paths["/opportunities/{id}/stage"] = {
        "parameters": [_ID],
        "post": {"summary": "Move an opportunity to another stage (recorded in its history)",
                 "requestBody": {"required": True, **_json(_ref("StageChange"))},
                 "responses": {"200": {"description": "Updated"},
                               **_errors(400, 401, 404, 413, 415, 422)}},
    }
    paths["/stats"] = {
        "get": {"summary": "Highest id of customers, opportunities, reps, regions, products "
                           "and leads (0 when empty): the keyspace workloads draw ids from",
                "responses": {"200": {"description": "Highest id per table"},
                              **_errors(401)}},
    }
    paths.update(_stream_paths())
    paths.update(_engine_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "crmbench reference CRM", "version": version},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _stream_paths() -> dict[str, Any]:
    """Change stream, customer-data events and agents."""
    event_body = {"oneOf": [_ref("EventIn"), _ref("EventBatch")]}
    return {
        "/stream": {"get": {
            "summary": "Change stream (Server-Sent Events)",
            "description": _STREAM_DESCRIPTION,
            "parameters": [
                _query("types", "string", "comma-separated message types to receive; "
                       "`agent.*` stands for every type starting with `agent.`"),
                _query("customer_id", desc="only messages about this customer"),
                _query("after", desc="resume: messages with a higher seq, then live ones"),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "integer"}, "description": "like after"},
            ],
            "responses": {"200": {"description": "An endless event stream",
                                  "content": {"text/event-stream": {
                                      "schema": _ref("StreamMessage")}}},
                          **_errors(400, 401)},
        }},
        "/stream/info": {"get": {
            "summary": "Newest and oldest retained sequence numbers, and the retention",
            "responses": {"200": {"description": "Stream window", **_json(_ref("StreamInfo"))},
                          **_errors(401)},
        }},
        "/events": {"post": {
            "summary": "Ingest customer-data events: one, or {events: [...]} with up to 1,000",
            "description": "All or nothing. A repeated idempotency key is stored once and "
                           "reported as a duplicate with the original id. Each new event "
                           "updates the customer's profile in the same transaction and is "
                           "announced by one `profile.updated` stream message.",
            "requestBody": {"required": True, **_json(event_body)},
            "responses": {"202": {"description": "Stored (committed)",
                                  **_json(_ref("EventsAccepted"))},
                          **_errors(400, 401, 413, 415, 422)},
        }},
        "/customers/{id}/profile": {
            "parameters": [_ID],
            "get": {"summary": "Event counters and explained tags of a customer",
                    "responses": {"200": {"description": "Profile", **_json(_ref("Profile"))},
                                  **_errors(400, 401, 404)}},
        },
        "/agents/{agent}/runs": {
            "parameters": [_AGENT],
            "post": {"summary": "Start an agent run in the background",
                     "description": "Ends with one stream message, agent.completed or "
                                    "agent.escalated (agent.failed on an error).",
                     "requestBody": {"required": True, **_json(_ref("LeadIntakeRunCreate"))},
                     "responses": {"202": {"description": "Started",
                                           **_json(_ref("AgentRunStarted"))},
                                   **_errors(400, 401, 404, 413, 415, 422)}},
        },
        "/agents/runs/{run_id}": {
            "parameters": [{"name": "run_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A run with its decision log",
                    "responses": {"200": {"description": "Run", **_json(_ref("AgentRun"))},
                                  **_errors(401, 404)}},
        },
        "/agents/queue": {"get": {
            "summary": "Escalated runs awaiting a person, oldest first",
            "parameters": list(_PAGING),
            "responses": {"200": {"description": "A page of runs", **_json(_ref("Page"))},
                          **_errors(400, 401)},
        }},
        "/agents/{agent}/config": {
            "parameters": [_AGENT],
            "get": {"summary": "Takeover thresholds of the agent",
                    "responses": {"200": {"description": "Config",
                                          **_json(_ref("AgentConfig"))},
                                  **_errors(401, 404)}},
            "put": {"summary": "Change takeover thresholds (omitted fields stay); persisted",
                    "requestBody": {"required": True, **_json(_ref("AgentConfigUpdate"))},
                    "responses": {"200": {"description": "New config",
                                          **_json(_ref("AgentConfig"))},
                                  **_errors(400, 401, 404, 413, 415, 422)}},
        },
    }


def _op(summary: str, ok: str, *codes: int, body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary,
                           "responses": {ok: {"description": summary}, **_errors(*codes)}}
    if body:
        out["requestBody"] = {"required": True, **_json({"type": "object"})}
    return out


def _engine_paths() -> dict[str, Any]:
    """Workflows, SLAs, the test clock and scenario packs (bodies are described in prose)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    module = {"name": "module", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/workflows": {"post": _op(
            "Deploy a workflow {name, nodes: [{id, type, ...}], edges: [[from, to(, "
            "true|false)]], timeout_s}; bodies up to 32 MiB; re-deploying a name adds a "
            "version", "201", 400, 401, 409, 413, 415, 422, body=True)},
        "/workflows/{id}": {"parameters": [_ID], "get": _op(
            "A workflow version (latest unless ?version=)", "200", 400, 401, 404)},
        "/workflows/{id}/runs": {"parameters": [_ID], "post": _op(
            "Run a workflow {input, wait, version}: 200 finished run, or 202 when wait=false; "
            "409 workflow_paused or workflow_disabled (its pack is off)", "200", 400, 401,
            404, 409, 422, body=True)},
        "/workflows/runs/{run_id}": {"get": _op("A workflow run", "200", 401, 404)},
        "/workflows/{id}/resume": {"parameters": [_ID], "post": _op(
            "Resume a workflow paused by its breaker", "200", 401, 404)},
        "/workflows/{id}/lineage": {"parameters": [_ID], "get": _op(
            "Objects and fields read and written, integrations used", "200", 401, 404)},
        "/slas": {"get": _op("SLA definitions", "200", 401),
                  "post": _op("Define an SLA (level field|process|action; calendar \"24x7\" or "
                              "{timezone, days, start, end, holidays})", "201", 400, 401,
                              422, body=True)},
        "/slas/{id}": {"parameters": [_ID], "get": _op("An SLA definition", "200", 401, 404)},
        "/slas/{id}/instances": {"parameters": [_ID], "get": _op(
            "SLA instances with status green|yellow|red|met", "200", 400, 401, 404)},
        "/clock": {"get": _op("The service clock (test clock only)", "200", 401, 404)},
        "/clock/advance": {"post": _op(
            "Move the test clock {seconds} and run the SLA checker", "200", 401, 404, 422,
            body=True)},
        "/packs": {"get": _op("Scenario packs", "200", 401)},
        "/packs/{name}": {"parameters": [name], "get": _op("A pack", "200", 401, 404)},
        "/packs/{name}/enable": {"parameters": [name], "post": _op(
            "Enable a pack and deploy its workflows and SLAs (idempotent)", "200", 401, 404, 422)},
        "/packs/{name}/disable": {"parameters": [name], "post": _op(
            "Disable a pack (idempotent; data kept)", "200", 401, 404)},
        "/packs/{name}/checks": {"parameters": [name], "get": _op(
            "Run the pack's acceptance checks", "200", 401, 404)},
        "/packs/{name}/reports": {"parameters": [name], "get": _op(
            "The pack's reports", "200", 401, 404)},
        "/packs/{name}/reports/{report}": {
            "parameters": [name, {"name": "report", "in": "path", "required": True,
                                  "schema": {"type": "string"}}],
            "get": _op("Run one of the pack's reports", "200", 401, 404)},
        "/mfg/{module}": {"parameters": [module],
                          "get": _op("Records of a manufacturing module", "200", 400, 401, 404),
                          "post": _op("Create a record", "201", 400, 401, 404, 422,
                                      body=True)},
        "/mfg/{module}/{id}": {"parameters": [module, _ID],
                               "get": _op("A record", "200", 401, 404),
                               "patch": _op("Update a record (PPAP elements accumulate)",
                                            "200", 400, 401, 404, 422, body=True)},
        "/mfg/contracts/{id}/approve": {"parameters": [_ID], "post": _op(
            "Approve a contract; 409 approval_frozen while PPAP is incomplete", "200", 401,
            404, 409)},
    }
