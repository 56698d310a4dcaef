"""The harness's own subscription to a target's change stream, for probes to wait on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent

from bench.adapters.base import Realtime, StreamMessage

STREAM_TIMEOUT_S = 10.0
Match = Callable[[StreamMessage], bool]


class Listener:
    """Collects stream messages of some types in a greenlet while the probe runs.

    Only messages received after the listener started, and after a probe's own ``since_ns``
    (``time.perf_counter_ns``), are ever matched: an older message cannot answer a probe.
    """

    def __init__(self, adapter: Any, types: list[str]) -> None:
        self.messages: list[StreamMessage] = []
        self.error: str | None = None
        self._adapter = adapter
        self._types = types
        self.started_ns = time.perf_counter_ns()
        self._greenlet = gevent.spawn(self._run) if isinstance(adapter, Realtime) else None
        gevent.sleep(0.3)

    def _run(self) -> None:
        try:
            for msg in self._adapter.subscribe(self._types):
                if msg.received_ns >= self.started_ns:
                    self.messages.append(msg)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def find(self, match: Match, since_ns: int = 0) -> StreamMessage | None:
        """The first message received so far (after ``since_ns``) that matches."""
        return next((m for m in self.messages if m.received_ns >= since_ns and match(m)), None)

    def wait_for(self, match: Match, timeout: float = STREAM_TIMEOUT_S,
                 since_ns: int = 0) -> StreamMessage | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(match, since_ns)
            if found is not None or self._greenlet is None:
                return found
            gevent.sleep(0.005)
        return None

    def close(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
