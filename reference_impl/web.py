"""Request reading and response writing shared by every route of the reference CRM.

Every refusal is a 4xx with ``{"error": {"code", "message", "field"}}``; bodies are
decoded and validated by msgspec before anything is written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reference_impl.store import Page, StoreError

log = logging.getLogger("reference_impl")

MAX_BODY = 1024 * 1024
# Only POST /workflows: a 100,000-node workflow document takes several MiB.
MAX_WORKFLOW_BODY = 32 * 1024 * 1024
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_ID = 2**53
# Longest text accepted in a query parameter (filters, prefixes, types).
MAX_QUERY_TEXT = 200
_encoder = msgspec.json.Encoder()
_FIELD_RE = re.compile(r"field `([^`]+)`")
_PATH_RE = re.compile(r" - at `([^`]+)`$")

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class JsonResponse(Response):
    """A JSON body with the headers Response would give it, built without its checks."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")
        ]


def encode(data: Any) -> bytes:
    return _encoder.encode(data)


def json_response(data: Any, status: int = 200) -> Response:
    return JsonResponse(_encoder.encode(data), status)


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    return _encoder.encode({"error": {"code": code, "message": message, "field": field}})


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    return JsonResponse(error_body(code, message, field), status)


def _validation_field(message: str) -> str | None:
    """The JSON path of the offending field in a msgspec validation message."""
    path_match = _PATH_RE.search(message)
    path = path_match.group(1) if path_match else "$"
    name = _FIELD_RE.search(message)
    if name:
        path = f"{path}.{name.group(1)}"
    if path == "$":
        return None
    return path[2:] if path.startswith("$.") else path


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body of a JSON request, refused when empty or of another media type."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"expected application/json, got {ctype}")
    body = await read_body(request, limit)
    if not body.strip():
        raise ApiError(400, "malformed_json", "request body is empty; a JSON object is expected")
    return body


async def decode(request: Request, kind: type[msgspec.Struct]) -> Any:
    return decode_bytes(await read_json(request), kind)


def decode_bytes(body: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "validation_error", str(exc), _validation_field(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc


async def json_object(request: Request) -> dict[str, Any]:
    """A JSON object body of no fixed shape (manufacturing records)."""
    try:
        data = msgspec.json.decode(await read_json(request))
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "a JSON object is expected")
    return data


def int_param(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", name) from None
    if not low <= value <= high:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be between {low} and {high}", name
        )
    return value


def path_id(request: Request) -> int:
    return int_param(request.path_params["id"], "id", 1, MAX_ID)


class Query:
    """Strict reading of query parameters: unknown or repeated ones are refused."""

    def __init__(self, request: Request, allowed: set[str] | frozenset[str]) -> None:
        # Parsed as Starlette's QueryParams would, without building one per request.
        raw: bytes = request.scope["query_string"]
        self.params: dict[str, str] = {}
        if not raw:
            return
        given: dict[str, list[str]] = {}
        for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            given.setdefault(key, []).append(value)
        for key, values in given.items():
            if key not in allowed:
                raise ApiError(
                    400, "invalid_parameter",
                    f"unknown query parameter {key!r}; allowed: {', '.join(sorted(allowed))}",
                    key,
                )
            if len(values) > 1:
                raise ApiError(400, "invalid_parameter", f"{key} given more than once", key)
            self.params[key] = values[0]

    def integer(self, name: str, low: int = 1, high: int = MAX_ID) -> int | None:
        raw = self.params.get(name)
        return None if raw is None else int_param(raw, name, low, high)

    def text(self, name: str, choices: tuple[str, ...] | None = None) -> str | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        if "\x00" in raw or len(raw) > MAX_QUERY_TEXT:
            raise ApiError(400, "invalid_parameter", f"{name} is not a valid value", name)
        if choices is not None and raw not in choices:
            raise ApiError(
                400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}", name
            )
        return raw

    def paging(self) -> tuple[int, int | None]:
        limit = self.integer("limit", 1, MAX_LIMIT)
        return (DEFAULT_LIMIT if limit is None else limit), self.integer("after", 0)


NO_PARAMS: frozenset[str] = frozenset()


def no_query(request: Request) -> None:
    """Refuse any query parameter."""
    if request.scope["query_string"]:
        Query(request, NO_PARAMS)


def page_response(page: Page, limit: int) -> Response:
    return json_response({"items": page.items, "next_after": page.next_after, "limit": limit})


def api_error_response(exc: ApiError | StoreError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.field)


def allowed_methods(routes: list[Any], path: str) -> str:
    """The ``Allow`` header for ``path``: every method some route of that path serves."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))


def http_error_response(exc: HTTPException, allow: str | None = None) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.status_code == 405 and allow:
        # RFC 9110, 15.5.6: a 405 names the methods the resource serves.
        response.raw_headers.append((b"allow", allow.encode("latin-1")))
    return response


def crash_response(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the server log")
