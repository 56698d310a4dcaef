"""uvicorn's httptools protocol, with each response of known length leaving in one write.

uvicorn writes a response's status line and headers when the application sends
``http.response.start`` and the body in a second write: two ``send`` calls and two TCP
segments per response, and a second wake-up of the client reading it. Here the cycle of
each request writes through ``OneWrite``: a head that announces a ``content-length`` waits
for the body, which every response of known length sends next, and both leave in one write.
Any other write (a chunked head, the change stream's server-sent events, ``100 Continue``)
goes out at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
