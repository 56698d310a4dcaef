"""The one place where adapter calls are timed and their statuses counted.

Adapters never time themselves. :func:`timed_call` stamps ``perf_counter_ns`` right
before and after the call, turns an unexpected exception into ``Status.error`` (a crashed
verb must not stop a load generator), and hands the sample to whoever listens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.adapters.base import Status

log = logging.getLogger("crmbench.timing")


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed call: the operation, its outcome and three stamps on one clock."""

    op: str
    status: Status
    intended_ns: int
    start_ns: int
    end_ns: int

    @property
    def service_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def response_ns(self) -> int:
        """Latency from the intended send time: what a user of an open system waits."""
        return self.end_ns - self.intended_ns


def timed_call(op: str, intended_ns: int, fn: Callable[..., Status], *args: Any) -> Sample:
    """Call ``fn(*args)`` and time it; exceptions become ``Status.error``."""
    start = time.perf_counter_ns()
    try:
        status = fn(*args)
    except Exception:
        log.debug("adapter call %s raised", op, exc_info=True)
        status = Status.error
    end = time.perf_counter_ns()
    if not isinstance(status, Status):
        log.debug("adapter call %s returned %r, not a Status", op, status)
        status = Status.error
    return Sample(op, status, intended_ns, start, end)
