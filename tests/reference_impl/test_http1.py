"""Responses of known length leave the server in one write; streamed ones are not held."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from reference_impl.http1 import OneWrite, OneWriteProtocol


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
