"""uvicorn's httptools protocol, with each response of known length leaving in one write and
the application's hot routes answered from the parser's callback.

uvicorn writes a response's status line and headers when the application sends
``http.response.start`` and the body in a second write: two ``send`` calls and two TCP
segments per response, and a second wake-up of the client reading it. Here the cycle of
each request writes through ``OneWrite``: a head that announces a ``content-length`` waits
for the body, which every response of known length sends next, and both leave in one write.
Any other write (a chunked head, the change stream's server-sent events, ``100 Continue``)
goes out at once.

``EagerProtocol`` goes further for the routes the application dispatches directly (its
``eager_handler``): once such a request is complete, its handler runs at once, inside the
``data_received`` that brought it, and the response is written when it returns; no ASGI
cycle, no task and no extra turn of the event loop. The application offers only handlers
that do not wait (SQLite's): code that needs a current task (``asyncio.timeout``) must not
be reached from here. Should one wait all the same (on a lock), it goes on in a task.
Anything else (other routes, ``Expect: 100-continue``, a body over 64 KiB or of unknown
length, a request pipelined behind one still running, an upgrade) takes uvicorn's path.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ClassVar, Protocol

import httptools
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# uvicorn writes header names in lower case.
_LENGTH = b"\r\ncontent-length:"


class OneWrite:
    """The transport of a connection's request cycles: holds a head of known length until
    the next write, then sends both in one."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:5] == b"HTTP/" and _LENGTH in data:
            self._held = bytes(data)
        else:
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        # A head whose body never came is not sent: uvicorn closes such a response unfinished.
        self._held = None
        self._transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class OneWriteProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose request cycles write through one ``OneWrite``."""

    _writer: OneWrite | None = None

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # The cycle's task has been created, not run: it writes through the writer only.
        # A HEAD response writes no body after its head, so its head is never held.
        if (cycle is not None and cycle.transport is self.transport
                and self.scope["method"] != "HEAD"):
            if self._writer is None:
                self._writer = OneWrite(self.transport)
            cycle.transport = self._writer  # type: ignore[assignment]


Handler = Callable[[Request], Awaitable[Response]]


class EagerApp(Protocol):
    """What ``EagerProtocol`` needs of the application (``reference_impl.api.CrmApp``)."""

    def eager_handler(self, scope: dict[str, Any]) -> Handler | None:
        """The handler of a hot route whose credentials are good, else None."""

    async def respond(self, handler: Handler, request: Request) -> Response:
        """The handler's response, or the error response of what it raised."""


class _Eager:
    """The request-cycle state of an eagerly answered request, as uvicorn's protocol reads
    and writes it (``body``, ``more_body``, ``response_complete``, ``disconnected``,
    ``keep_alive``, ``message_event.set()``)."""

    __slots__ = ("body", "disconnected", "handler", "keep_alive", "message_event",
                 "more_body", "response_complete")

    def __init__(self, handler: Handler, keep_alive: bool) -> None:
        self.handler = handler
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.message_event = self

    def set(self) -> None:
        """The protocol wakes a waiting cycle here; nothing waits on an eager one."""


async def _no_more(*_args: Any) -> dict[str, Any]:
    # The whole body is handed over up front (Request._body); nothing reads further.
    return {"type": "http.disconnect"}


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Response], pending: Any) -> Generator[Any, Any, Response]:
    """Go on with ``coro``, started by hand and now waiting on ``pending``, inside a task."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # cancellation, passed on to where coro waits
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class EagerProtocol(OneWriteProtocol):
    """``OneWriteProtocol`` answering ``crm``'s hot routes without an ASGI cycle; subclass it
    per application with ``eager_protocol``."""

    crm: ClassVar[EagerApp]

    def on_headers_complete(self) -> None:
        handler = self._eager_handler()
        if handler is None:
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = _Eager(handler, keep_alive)  # type: ignore[assignment]

    def _eager_handler(self) -> Handler | None:
        cycle = self.cycle
        if (self.expect_100_continue or self.limit_concurrency is not None or self.root_path
                or (cycle is not None and not cycle.response_complete)
                or self.parser.should_upgrade() or self.transport.is_closing()):
            return None
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        if b"%" in raw_path:
            return None
        length: bytes | None = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return None
        if length is not None and not (length.isdigit() and int(length) <= HIGH_WATER_LIMIT):
            return None
        scope = self.scope
        scope["method"] = self.parser.get_method().decode("ascii")
        version = self.parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = raw_path.decode("ascii")
        scope["raw_path"] = raw_path
        scope["query_string"] = parsed.query or b""
        return self.crm.eager_handler(scope)  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is _Eager:
            cycle.body += body
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is not _Eager:
            super().on_message_complete()
            return
        cycle.more_body = False
        request = Request(self.scope, _no_more)  # type: ignore[arg-type]
        request._body = bytes(cycle.body)
        coro = self.crm.respond(cycle.handler, request)
        try:
            pending = coro.send(None)
        except StopIteration as done:
            self._answer(cycle, done.value)
            return
        task = self.loop.create_task(self._later(cycle, coro, pending))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _later(self, cycle: _Eager, coro: Coroutine[Any, Any, Response],
                     pending: Any) -> None:
        self._answer(cycle, await _resume(coro, pending))

    def _answer(self, cycle: _Eager, response: Response) -> None:
        cycle.response_complete = True
        if cycle.disconnected or self.transport.is_closing():
            return
        out: list[Any] = [STATUS_LINE[response.status_code]]
        for name, value in self.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            out += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            out.append(b"connection: close\r\n")
        out += (b"\r\n", response.body)
        self.transport.write(b"".join(out))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()


def eager_protocol(app: EagerApp) -> type[EagerProtocol]:
    """The protocol class answering ``app``'s hot routes eagerly."""
    return type("CrmEagerProtocol", (EagerProtocol,), {"crm": app})
