"""The no-op adapter: every verb waits a configured delay and succeeds.

It measures the harness itself (scheduling, timing, recording) without any target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

from bench.adapters.base import (
    ActivityInput,
    BaseAdapter,
    Capability,
    CustomerChanges,
    GeneratorSettings,
    Key,
    Keyspace,
    LeadInput,
    SearchQuery,
    Stage,
    Status,
    declared,
)
from bench.errors import UserError

_KEYSPACE_DEFAULTS: dict[str, int] = {
    "customers": 100_000, "opportunities": 200_000, "reps": 500, "regions": 30, "products": 2_000,
}
_ALLOWED = ("delay_ms", *_KEYSPACE_DEFAULTS)


def _delay(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"noop URL: delay_ms must be a number of ms, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"noop URL: delay_ms must be a finite number >= 0, got {raw!r}")
    return value


def _count(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"noop URL: {key} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise UserError(f"noop URL: {key} must be at least 1, got {value}")
    return value


class NoopAdapter(BaseAdapter):
    """Adapter of ``noop://?delay_ms=1&customers=100000``: no target, constant latency."""

    name: ClassVar[str] = "noop"
    platform: ClassVar[str] = "noop"
    sequential_keys: ClassVar[bool] = True
    capabilities: ClassVar[dict[str, Capability]] = declared(
        default="unsupported", note="no-op target: measures the harness only"
    )

    def __init__(self, delay_ms: float = 0.0, keyspace: Keyspace | None = None) -> None:
        self.delay_ms = delay_ms
        self._delay_ns = round(delay_ms * 1_000_000)
        self._keyspace = keyspace or Keyspace.from_json(_KEYSPACE_DEFAULTS)
        # The load generator's precise alarm (prepare_generator): gevent.sleep rounds a 1 ms
        # delay up to as much as 2 ms, which would be counted as the target's latency.
        self.sleep_until: Callable[[int], None] | None = None

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> NoopAdapter:
        parts = urlsplit(url)
        if parts.scheme.lower() != "noop":
            raise UserError(f"not a noop URL: {url!r}")
        if parts.netloc or parts.path not in ("", "/"):
            raise UserError(
                f"noop URL takes no host or path, only query parameters: {url!r} "
                "(e.g. noop://?delay_ms=1)"
            )
        delay = 0.0
        counts = dict(_KEYSPACE_DEFAULTS)
        seen: set[str] = set()
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _ALLOWED:
                raise UserError(
                    f"noop URL: unknown parameter {key!r}; allowed: {', '.join(_ALLOWED)}"
                )
            if key in seen:
                raise UserError(f"noop URL: parameter {key!r} given more than once")
            seen.add(key)
            if key == "delay_ms":
                delay = _delay(raw)
            else:
                counts[key] = _count(key, raw)
        return cls(delay, Keyspace.from_json(counts))

    def __repr__(self) -> str:
        return f"NoopAdapter(delay_ms={self.delay_ms:g})"

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.sleep_until = settings.sleep_until

    def platform_version(self) -> str:
        return "noop"

    def keyspace(self) -> Keyspace:
        return self._keyspace

    def _wait(self) -> Status:
        # time.sleep is looked up per call: in a gevent monkey-patched load generator it is
        # gevent.sleep and yields to other users; in a plain process it blocks this thread,
        # which is what a synchronous caller expects. A zero delay skips the call entirely
        # so the harness overhead is measured without an extra hub switch.
        if self._delay_ns > 0:
            if self.sleep_until is not None:
                self.sleep_until(time.perf_counter_ns() + self._delay_ns)
            else:
                time.sleep(self.delay_ms / 1000.0)
        return Status.ok

    def get_customer(self, customer_id: Key) -> Status:
        return self._wait()

    def customer_360(self, customer_id: Key) -> Status:
        return self._wait()

    def search_customers(self, query: SearchQuery) -> Status:
        return self._wait()

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        return self._wait()

    def create_lead(self, lead: LeadInput) -> Status:
        return self._wait()

    def log_activity(self, activity: ActivityInput) -> Status:
        return self._wait()

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        return self._wait()

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        return self._wait()
