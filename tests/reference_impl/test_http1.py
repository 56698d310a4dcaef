"""Responses of known length leave the server in one write; streamed ones are not held; hot
routes are answered without an ASGI cycle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.server import ServerState

from reference_impl.http1 import OneWrite, OneWriteProtocol, eager_protocol
from reference_impl.web import JsonResponse


class Transport(asyncio.Transport):
    """Records every write, as a socket would send it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _exchange(app: Any, request: bytes) -> Transport:
    config = Config(app, lifespan="off", http=OneWriteProtocol, log_level="warning")
    config.load()
    transport = Transport()
    protocol = OneWriteProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(transport)
    protocol.data_received(request)
    for _ in range(20):
        await asyncio.sleep(0)
    return transport


async def _fixed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def _streamed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await asyncio.Event().wait()  # an open stream: the head and the first event are out


def test_a_response_of_known_length_is_one_write() -> None:
    transport = asyncio.run(_exchange(_fixed, b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 11" in head
    assert body == b'{"ok":true}'


def test_keep_alive_responses_each_leave_in_one_write() -> None:
    request = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"
    transport = asyncio.run(_exchange(_fixed, request * 3))
    assert len(transport.writes) == 3
    assert all(w.endswith(b'\r\n\r\n{"ok":true}') for w in transport.writes)


def test_a_head_request_gets_its_head_at_once() -> None:
    transport = asyncio.run(_exchange(_fixed, b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")


def test_a_streamed_response_is_not_held() -> None:
    async def run() -> Transport:
        return await asyncio.wait_for(
            _exchange(_streamed, b"GET /stream HTTP/1.1\r\nhost: a\r\n\r\n"), 5)

    transport = asyncio.run(run())
    joined = b"".join(transport.writes)
    assert b"transfer-encoding: chunked" in joined
    assert joined.endswith(b"9\r\ndata: 1\n\n\r\n")
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK")


def test_the_writer_holds_only_a_head_of_known_length() -> None:
    transport = Transport()
    writer = OneWrite(transport)
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(transport.writes) == 1
    writer.write(b"hi")
    assert transport.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    writer.close()
    assert transport.closed and len(transport.writes) == 2


# The direct path of the hot routes (EagerProtocol).


class HotApp:
    """An ASGI app whose ``/hot`` routes are answered by EagerProtocol's direct path."""

    def __init__(self, wait: bool = False) -> None:
        self.wait = wait
        self.seen: list[tuple[str, str, bytes]] = []
        self.asgi_paths: list[str] = []

    def eager_handler(self, scope: dict[str, Any]) -> Any:
        return self.handle if scope["path"].startswith("/hot") else None

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append((request.method, request.url.path, body))
        if self.wait:
            await asyncio.sleep(0.01)
        if request.url.path == "/hot/boom":
            raise ValueError("boom")
        return JsonResponse(b'{"n":%d}' % len(self.seen))

    async def respond(self, handler: Any, request: Request) -> Response:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ValueError:
            return JsonResponse(b'{"error":"boom"}', 500)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.asgi_paths.append(scope["path"])
        await _fixed(scope, receive, send)


def _eager(app: HotApp) -> tuple[Any, Transport]:
    config = Config(app, lifespan="off", log_level="warning")
    config.load()
    transport = Transport()
    protocol = eager_protocol(app)(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(transport)
    return protocol, transport


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.02)


def test_a_hot_route_is_answered_inside_data_received() -> None:
    async def run() -> None:
        app = HotApp()
        protocol, transport = _eager(app)
        protocol.data_received(b"GET /hot?q=1 HTTP/1.1\r\nhost: a\r\n\r\n")
        # No task, no turn of the loop: the response is out before data_received returns.
        assert len(transport.writes) == 1
        head, _, body = transport.writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 7" in head and b"connection: close" not in head
        assert body == b'{"n":1}'
        assert app.seen == [("GET", "/hot", b"")] and app.asgi_paths == []
        assert not transport.closed and not protocol.tasks

    asyncio.run(run())


def test_a_hot_post_gets_its_body_and_pipelined_requests_answer_in_order() -> None:
    async def run() -> None:
        app = HotApp()
        protocol, transport = _eager(app)
        post = (b"POST /hot/a HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\n"
                b"content-length: 8\r\n\r\n{\"x\": 1}")
        protocol.data_received(post + b"GET /other HTTP/1.1\r\nhost: a\r\n\r\n" + post[:40])
        protocol.data_received(post[40:])
        await _settle()
        # The third came while the second ran in the app: uvicorn's pipeline took it.
        assert app.seen == [("POST", "/hot/a", b'{"x": 1}')]
        assert app.asgi_paths == ["/other", "/hot/a"]
        assert [w.rpartition(b"\r\n\r\n")[2] for w in transport.writes] == [
            b'{"n":1}', b'{"ok":true}', b'{"ok":true}']
        protocol.data_received(post)
        assert app.seen[-1] == ("POST", "/hot/a", b'{"x": 1}') and len(app.seen) == 2

    asyncio.run(run())


def test_a_handler_that_waits_goes_on_in_a_task_and_holds_back_the_next_request() -> None:
    async def run() -> None:
        app = HotApp(wait=True)
        protocol, transport = _eager(app)
        get = b"GET /hot/%d HTTP/1.1\r\nhost: a\r\n\r\n"
        protocol.data_received(get % 1 + get % 2)
        assert transport.writes == [] and len(protocol.tasks) == 1
        await _settle()
        # The second was pipelined behind a running one: it took uvicorn's path, after it.
        assert [p for _, p, _ in app.seen] == ["/hot/1"]
        assert app.asgi_paths == ["/hot/2"]
        assert [w.rpartition(b"\r\n\r\n")[2] for w in transport.writes] == [
            b'{"n":1}', b'{"ok":true}']

    asyncio.run(run())


def test_a_failing_handler_gets_the_apps_error_response() -> None:
    async def run() -> None:
        protocol, transport = _eager(HotApp())
        protocol.data_received(b"GET /hot/boom HTTP/1.1\r\nhost: a\r\n\r\n")
        assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert transport.writes[0].endswith(b'{"error":"boom"}')

    asyncio.run(run())


def test_connection_close_and_http_1_0_end_the_connection_after_the_response() -> None:
    async def run(request: bytes) -> Transport:
        protocol, transport = _eager(HotApp())
        protocol.data_received(request)
        return transport

    for request in (b"GET /hot HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
                    b"GET /hot HTTP/1.0\r\n\r\n"):
        transport = asyncio.run(run(request))
        assert len(transport.writes) == 1 and transport.closed
        assert b"\r\nconnection: close\r\n" in transport.writes[0]


@pytest.mark.parametrize("request_bytes", [
    b"POST /hot HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}",
    b"POST /hot HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"POST /hot HTTP/1.1\r\nhost: a\r\ncontent-length: 70000\r\n\r\n" + b" " * 70000,
    b"GET /hot%2Fx HTTP/1.1\r\nhost: a\r\n\r\n",
])
def test_what_the_direct_path_does_not_take_goes_to_the_app(request_bytes: bytes) -> None:
    async def run() -> HotApp:
        app = HotApp()
        protocol, _ = _eager(app)
        protocol.data_received(request_bytes)
        await _settle()
        return app

    app = asyncio.run(run())
    assert app.seen == [] and len(app.asgi_paths) == 1


def test_a_connection_lost_while_the_handler_waits_gets_nothing_written() -> None:
    async def run() -> Transport:
        protocol, transport = _eager(HotApp(wait=True))
        protocol.data_received(b"GET /hot HTTP/1.1\r\nhost: a\r\n\r\n")
        protocol.connection_lost(ConnectionResetError())
        await _settle()
        return transport

    assert asyncio.run(run()).writes == []


def test_only_handlers_that_never_wait_take_the_direct_path(tmp_path: Any) -> None:
    from reference_impl.api import build_app
    from reference_impl.db import open_database

    def scope() -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": "/customers/1", "root_path": "",
                "headers": [(b"authorization", b"Bearer t")], "query_string": b""}

    sqlite = build_app(open_database(f"sqlite:///{tmp_path / 'crm.sqlite3'}"), token="t")
    assert sqlite.eager_handler(scope()) is not None  # type: ignore[attr-defined]
    wrong = scope() | {"headers": [(b"authorization", b"Bearer x")]}
    assert sqlite.eager_handler(wrong) is None  # type: ignore[attr-defined]
    # PostgreSQL handlers wait, and asyncpg may need a task (a connect under a timeout).
    postgres = build_app(open_database("postgresql://postgres@127.0.0.1:1/none"), token="t")
    assert postgres.eager_handler(scope()) is None  # type: ignore[attr-defined]
