"""The OpenAPI 3.1 document of the reference CRM, built from the msgspec request models."""

from __future__ import annotations

from typing import Any

import msgspec

from reference_impl import models as m

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


def build_openapi(version: str) -> dict[str, Any]:
    """Return the OpenAPI document as a plain dict."""
    structs = [t for _, c, u, _ in _ENTITIES.values() for t in (c, u)] + [m.StageChange]
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    components["Error"] = _ERROR
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
