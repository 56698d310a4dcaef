"""The harness's own subscription to a target's change stream, for probes to wait on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent

from bench.adapters.base import Realtime, StreamMessage

STREAM_TIMEOUT_S = 10.0


class Listener:
    """Collects stream messages of some types in a greenlet while the probe runs."""

    def __init__(self, adapter: Any, types: list[str]) -> None:
        self.messages: list[StreamMessage] = []
        self.error: str | None = None
        self._adapter = adapter
        self._types = types
        self._greenlet = gevent.spawn(self._run) if isinstance(adapter, Realtime) else None
        gevent.sleep(0.3)

    def _run(self) -> None:
        try:
            for msg in self._adapter.subscribe(self._types):
                self.messages.append(msg)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def wait_for(self, match: Callable[[StreamMessage], bool],
                 timeout: float = STREAM_TIMEOUT_S) -> StreamMessage | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if match(msg):
                    return msg
            if self._greenlet is None:
                return None
            gevent.sleep(0.005)
        return None

    def close(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

