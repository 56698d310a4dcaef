"""A deliberate, documented slowdown of the reference CRM, for gate calibration only.

The power check of ``crmbench ab`` and ``crmbench gate`` needs a build that is known to be
slower. ``ms`` and ``pct`` burn CPU, as slower code would: a fixed time per request and/or
a share of the request's own handling time; ``delay_ms`` waits without using CPU, as a
slower downstream call would (a CPU slowdown of 1 ms at 1,000 req/s would need a core of
its own). All are spent just before the response starts, on the ASGI path (``slowed``) and on the
hot routes' direct path alike (``slowed_eager``). They are served only when
``CRMBENCH_TEST_MODE=1`` is set, never on a real deployment.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from reference_impl.errors import UserError

TEST_MODE_ENV = "CRMBENCH_TEST_MODE"
MAX_MS = 1000.0
MAX_PCT = 1000.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Slowdown:
    """Added to every HTTP request: CPU for ``ms`` plus ``pct`` of its handling, then a wait
    of ``delay_ms``."""

    ms: float = 0.0
    pct: float = 0.0
    delay_ms: float = 0.0

    @property
    def active(self) -> bool:
        return self.ms > 0 or self.pct > 0 or self.delay_ms > 0

    def to_dict(self) -> dict[str, float]:
        return {"ms": self.ms, "pct": self.pct, "delay_ms": self.delay_ms}


def checked(ms: float, pct: float, delay_ms: float = 0.0) -> Slowdown:
    """A slowdown from user input; refused outside test mode or out of range."""
    slowdown = Slowdown(float(ms), float(pct), float(delay_ms))
    if (not 0 <= slowdown.ms <= MAX_MS or not 0 <= slowdown.pct <= MAX_PCT
            or not 0 <= slowdown.delay_ms <= MAX_MS):
        raise UserError(f"slowdown must be 0-{MAX_MS:g} ms, 0-{MAX_PCT:g} % and a delay of "
                        f"0-{MAX_MS:g} ms, got {slowdown.ms:g} ms, {slowdown.pct:g} % and "
                        f"{slowdown.delay_ms:g} ms")
    if not slowdown.active:
        return slowdown
    if os.environ.get(TEST_MODE_ENV) != "1":
        raise UserError(f"an injected slowdown is for gate calibration only: set "
                        f"{TEST_MODE_ENV}=1 to serve one")
    return slowdown


def _burn(ns: int) -> None:
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def slowed(app: ASGIApp, slowdown: Slowdown) -> ASGIApp:
    """``app`` with the slowdown spent before each HTTP response starts."""
    if not slowdown.active:
        return app
    fixed_ns = int(slowdown.ms * 1_000_000)
    share = slowdown.pct / 100.0
    delay_s = slowdown.delay_ms / 1000.0

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter_ns()

        async def send_late(message: Message) -> None:
            if message["type"] == "http.response.start":
                _burn(fixed_ns + int((time.perf_counter_ns() - start) * share))
                if delay_s:
                    await asyncio.sleep(delay_s)
            await send(message)

        await app(scope, receive, send_late)

    return wrapped


class SlowedEager:
    """The direct path of the hot routes (reference_impl.http1's ``EagerApp``) with the
    slowdown spent before each response, as ``slowed`` spends it on the ASGI path."""

    def __init__(self, app: Any, slowdown: Slowdown) -> None:
        self.app = app
        self.fixed_ns = int(slowdown.ms * 1_000_000)
        self.share = slowdown.pct / 100.0
        self.delay_s = slowdown.delay_ms / 1000.0

    def eager_handler(self, scope: Scope) -> Any:
        return self.app.eager_handler(scope)

    async def respond(self, handler: Any, request: Any) -> Any:
        start = time.perf_counter_ns()
        response = await self.app.respond(handler, request)
        _burn(self.fixed_ns + int((time.perf_counter_ns() - start) * self.share))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return response


def slowed_eager(app: Any, slowdown: Slowdown) -> Any:
    """``app``'s direct path with the slowdown; ``app`` itself when there is none."""
    return SlowedEager(app, slowdown) if slowdown.active else app
