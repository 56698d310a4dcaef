"""A small JSON-RPC 2.0 CRM on 127.0.0.1 for adapter tests, with an in-memory store.

It behaves as RPC platforms do, not as the reference CRM: record ids are UUID strings,
every answer is HTTP 200 (failures are ``error`` objects), and reading a missing record
gives an empty list. Methods take ``params`` as an object:

    records.create  {model, rows}          -> [id, ...]
    records.read    {model, ids}           -> [record, ...] (only those that exist)
    records.search  {model, where, limit}  -> [record, ...] (equality; ``name`` by prefix)
    records.write   {model, ids, values}   -> true; error 404 when an id does not exist
    records.ids     {model}                -> every id, in creation order
    meta.get / meta.set {key[, value]}     -> a stored JSON value (null when unset)
    version         {}                     -> {"server": ...}

``fail_next`` holds error objects answered (once each) instead of the next calls.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ("region", "rep", "partner", "opportunity", "lead", "activity")
NOT_FOUND = 404
STAGES = ("new", "qualified", "proposition", "won", "lost")


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class FakeRpcCrm:
    """The store and the methods; thread-safe, as the server handles calls in threads."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in MODELS}
        self.meta: dict[str, Any] = {}
        self.fail_next: list[dict[str, Any]] = []
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _model(self, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
        model = params.get("model")
        if model not in self.records:
            raise RpcError(-32602, f"unknown model {model!r}")
        return self.records[str(model)]

    def create(self, params: dict[str, Any]) -> list[str]:
        table = self._model(params)
        ids = []
        for row in params["rows"]:
            if params.get("model") == "opportunity" and row.get("stage") not in STAGES:
                raise RpcError(1, f"invalid stage {row.get('stage')!r}")
            rid = str(uuid.uuid4())
            table[rid] = {**row, "id": rid}
            ids.append(rid)
        return ids

    def read(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        table = self._model(params)
        return [table[i] for i in params["ids"] if i in table]

    def search(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        table = self._model(params)
        where = dict(params.get("where") or {})
        prefix = str(where.pop("name", "") or "")
        limit = int(params.get("limit", 80))
        found = [r for r in table.values()
                 if str(r.get("name", "")).startswith(prefix)
                 and all(r.get(k) == v for k, v in where.items())]
        return found[:limit]

    def write(self, params: dict[str, Any]) -> bool:
        table = self._model(params)
        missing = [i for i in params["ids"] if i not in table]
        if missing:
            raise RpcError(NOT_FOUND, f"records {missing} do not exist")
        values = params["values"]
        if params.get("model") == "opportunity" and values.get("stage", "new") not in STAGES:
            raise RpcError(1, f"invalid stage {values.get('stage')!r}")
        for i in params["ids"]:
            table[i].update(values)
        return True

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "records.create": self.create, "records.read": self.read,
            "records.search": self.search, "records.write": self.write,
            "records.ids": lambda p: list(self._model(p)),
            "meta.get": lambda p: self.meta.get(str(p["key"])),
            "meta.set": lambda p: self.meta.update({str(p["key"]): p["value"]}) is None,
            "version": lambda p: {"server": "fake-rpc-crm 1.0"},
        }
        if method not in methods:
            raise RpcError(-32601, f"method {method!r} not found")
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            if self.fail_next:
                error = self.fail_next.pop(0)
                raise RpcError(int(error["code"]), str(error.get("message", "")))
            try:
                return methods[method](params)
            except (KeyError, TypeError, ValueError) as exc:
                raise RpcError(-32602, f"invalid params: {exc}") from None

    def answer(self, body: bytes) -> dict[str, Any]:
        try:
            call = json.loads(body)
        except ValueError:
            return {"jsonrpc": "2.0", "id": None,
                    "error": {"code": -32700, "message": "parse error"}}
        try:
            result = self.handle(str(call.get("method")), dict(call.get("params") or {}))
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": call.get("id"),
                    "error": {"code": exc.code, "message": str(exc)}}
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


@contextmanager
def serve_fake(fake: FakeRpcCrm | None = None) -> Iterator[tuple[FakeRpcCrm, int]]:
    """Serve a fake on a free port of 127.0.0.1 for the ``with`` block."""
    crm = fake or FakeRpcCrm()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = json.dumps(crm.answer(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield crm, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
