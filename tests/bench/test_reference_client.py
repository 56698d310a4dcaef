"""The reference adapter's keep-alive HTTP/1.1 connections, against scripted local servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from bench.adapters.base import Status
from bench.adapters.reference import ReferenceAdapter, _Connection

Script = Callable[[socket.socket, int], bool]
Serve = Callable[[Script], tuple[int, list[bytes]]]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            while len(body) < int(value):
                body += conn.recv(65536)
    return head


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a server whose ``script(conn, n)`` answers the n-th request (False: close)."""
    listeners: list[socket.socket] = []

    def start(script: Script) -> tuple[int, list[bytes]]:
        srv = socket.create_server(("127.0.0.1", 0))
        listeners.append(srv)
        heads: list[bytes] = []

        def run() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                with conn:
                    while head := _read_request(conn):
                        heads.append(head)
                        if not script(conn, len(heads)):
                            break

        threading.Thread(target=run, daemon=True).start()
        return srv.getsockname()[1], heads

    yield start
    for srv in listeners:
        srv.close()


def _json(conn: socket.socket, body: bytes = b'{"ok":true}', extra: bytes = b"",
          keep: bool = True) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)
    return keep


def test_content_length_chunked_and_unframed_bodies(serve: Serve) -> None:
    def script(conn: socket.socket, n: int) -> bool:
        if n == 1:
            _json(conn, b'{"a":1}')
        elif n == 2:
            conn.sendall(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\n{\"b\"\r\n3;x=1\r\n:2}\r\n0\r\n\r\n")
        elif n == 3:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
            return False
        return True

    port, heads = serve(script)
    conn = _Connection("127.0.0.1", port)
    try:
        assert conn.exchange(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n") == (200, b'{"a":1}', True)
        assert conn.exchange(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n") == (201, b'{"b":2}', True)
        assert conn.exchange(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n") == (204, b"", True)
        assert conn.exchange(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n") == (200, b"until close", False)
    finally:
        conn.close()
    assert [h.split(b" ")[1] for h in heads] == [b"/a", b"/b", b"/c", b"/d"]


def test_connection_close_is_not_reused(serve: Serve) -> None:
    port, _heads = serve(lambda conn, n: _json(conn, extra=b"Connection: close\r\n", keep=False))
    conn = _Connection("127.0.0.1", port)
    try:
        assert conn.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[2] is False
    finally:
        conn.close()


def test_garbage_is_a_transport_error(serve: Serve) -> None:
    def script(conn: socket.socket, n: int) -> bool:
        conn.sendall(b"SSH-2.0-nope\r\n\r\n")
        return False

    port, _heads = serve(script)
    conn = _Connection("127.0.0.1", port)
    try:
        with pytest.raises(OSError, match=r"not an HTTP/1\.1 status line"):
            conn.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        conn.close()


def _adapter(port: int, monkeypatch: pytest.MonkeyPatch) -> ReferenceAdapter:
    monkeypatch.setenv("CRMBENCH_API_TOKEN", "tok")
    adapter = ReferenceAdapter.from_url(f"reference+http://127.0.0.1:{port}")
    # The verbs only need an open adapter; /health and /stats are not scripted here.
    adapter._client = object()  # type: ignore[assignment]
    return adapter


def test_verbs_reuse_one_connection_and_send_the_token_and_body(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, heads = serve(lambda conn, n: _json(conn))
    adapter = _adapter(port, monkeypatch)
    assert adapter.get_customer(7) is Status.ok
    assert adapter.update_opportunity_stage(3, "won") is Status.ok
    assert len(adapter._idle) == 1
    assert heads[0].startswith(b"GET /customers/7 HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok" in heads[0]
    assert heads[1].startswith(b"POST /opportunities/3/stage HTTP/1.1\r\n")
    assert b"Content-Length: 22" in heads[1]  # {"stage":"closed_won"}
    adapter._client = None
    adapter.close()
    assert adapter._idle == []


def test_a_kept_alive_connection_closed_by_the_target_is_retried_once(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server answers, then closes without saying so: the next request meets a dead
    # connection before any answer and goes again on a new one.
    port, heads = serve(lambda conn, n: _json(conn, keep=False))
    adapter = _adapter(port, monkeypatch)
    assert adapter.get_customer(1) is Status.ok
    assert adapter.get_customer(2) is Status.ok
    assert [h.split(b" ")[1] for h in heads] == [b"/customers/1", b"/customers/2"]
    adapter._client = None
    adapter.close()


def test_refused_connection_is_a_transport_error_status(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = _adapter(port, monkeypatch)
    assert adapter.get_customer(1) is Status.transport_error
