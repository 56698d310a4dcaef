"""A fault-injecting TCP proxy in front of a live target, for the tests of target faults.

Each accepted connection is served according to the proxy's current ``fault``:

    pass        bytes go both ways untouched
    latency     every answer is held back for ``delay_s`` before it is forwarded
    slow_body   the answer's head is forwarded, its body trickles one byte per ``delay_s``
    reset       the request is read, then the connection is reset (RST)
    half_open   the request is read and nothing ever comes back; the connection stays open
    http_503    the target is not asked: 503 with a JSON error body
    http_429    the target is not asked: 429 with ``Retry-After``
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

FAULTS = ("pass", "latency", "slow_body", "reset", "half_open", "http_503", "http_429")


def _answer(code: int, reason: str, extra: str = "") -> bytes:
    body = b'{"error": {"code": "injected", "message": "injected fault", "field": null}}'
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class FaultProxy:
    """Listens on 127.0.0.1; forwards to ``upstream`` with the fault that is set."""

    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.3) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.fault = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        self._stalled = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.append(client)
            threading.Thread(target=self._serve, args=(client, self.fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: str) -> None:
        with suppress(OSError):
            if fault in ("reset", "half_open", "http_503", "http_429"):
                client.recv(65536)
                if fault == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                elif fault == "http_503":
                    client.sendall(_answer(503, "Service Unavailable"))
                elif fault == "http_429":
                    client.sendall(_answer(429, "Too Many Requests", "Retry-After: 1\r\n"))
                # half_open: keep the connection, never answer.
                if fault != "half_open":
                    self._drain(client)
                return
            upstream = socket.create_connection(self.upstream)
            self._open.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "pass"),
                             daemon=True).start()
            self._pump(upstream, client, fault)

    def stall_open(self) -> None:
        """From now on, connections already open forward nothing more (they stay open)."""
        self._stalled.set()

    def _pump(self, src: socket.socket, dst: socket.socket, fault: str) -> None:
        head_sent = False
        with suppress(OSError):
            while data := src.recv(65536):
                if self._stalled.is_set():
                    self._stalled.wait()
                    continue
                if fault == "latency":
                    time.sleep(self.delay_s)
                    dst.sendall(data)
                elif fault == "slow_body":
                    head, sep, body = b"", b"", data
                    if not head_sent:
                        head, sep, body = data.partition(b"\r\n\r\n")
                        head_sent = bool(sep)
                        if not sep:  # the head goes on in the next chunk
                            head, body = data, b""
                    dst.sendall(head + sep)
                    for i in range(len(body)):
                        time.sleep(self.delay_s)
                        dst.sendall(body[i:i + 1])
                else:
                    dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    @staticmethod
    def _drain(client: socket.socket) -> None:
        with suppress(OSError):
            client.shutdown(socket.SHUT_WR)
            while client.recv(65536):
                pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._open:
            with suppress(OSError):
                sock.close()


@contextmanager
def fault_proxy(base_url: str, delay_s: float = 0.3) -> Iterator[FaultProxy]:
    """A proxy in front of ``http://host:port``; closed at the end."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    proxy = FaultProxy((host, int(port)), delay_s)
    try:
        yield proxy
    finally:
        proxy.close()
