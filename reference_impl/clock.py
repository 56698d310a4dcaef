"""The service clock: real time, or real time plus an offset moved by ``POST /clock/advance``."""

from __future__ import annotations

import asyncio
import datetime as dt
import time


class Clock:
    """Seconds since the epoch; with ``test`` set, ``advance`` moves time forward."""

    def __init__(self, test: bool = False) -> None:
        self.test = test
        self.offset = 0.0
        self._moved = asyncio.Condition() if test else None

    def now(self) -> float:
        return time.time() + self.offset

    def iso(self, at: float | None = None) -> str:
        value = self.now() if at is None else at
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    async def advance(self, seconds: float) -> None:
        self.offset += seconds
        if self._moved is not None:
            async with self._moved:
                self._moved.notify_all()

    async def sleep(self, seconds: float) -> None:
        """Sleep until the clock has moved ``seconds`` on, by real time or by advances."""
        until = self.now() + seconds
        if self._moved is None:
            await asyncio.sleep(seconds)
            return
        async with self._moved:
            while (left := until - self.now()) > 0:
                try:
                    async with asyncio.timeout(left):
                        await self._moved.wait()
                except TimeoutError:
                    pass
