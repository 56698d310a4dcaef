"""Targets that lie to the agent, customer-data and mixed-workload checks, in process.

Each wraps an honest adapter and distorts one kind of answer; the probe it targets must
fail it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench.adapters.base import EventInput, Key, Status, StreamMessage


class Liar:
    """Passes every verb to the honest adapter unless a subclass overrides it."""

    def __init__(self, honest: Any) -> None:
        self.honest = honest

    def __getattr__(self, name: str) -> Any:
        return getattr(self.honest, name)


def _entry(step: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"step": step, "intent": "x", "inputs": {"any": 1}, "output": output,
            "confidence": 0.9, "rule": "always", "duration_ms": 1.0}


CANNED_LOG = [_entry("qualify", {"score": 0.9}),
              _entry("purchase_history", {"orders": 3, "lifetime_value": 1234.0}),
              _entry("inventory", {"stock": 10}), _entry("quote", {"total": 999.0}),
              _entry("notify", {"decision": "notify"})]


class ConstantAgent(Liar):
    """Every run completes at once with the same canned decision log and quote."""

    def start_agent_run(self, lead_id: Key, quantity: int | None = None) -> tuple[Status, str]:
        return Status.ok, str(lead_id)

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any]]:
        return Status.ok, {"run_id": run_id, "status": "completed", "escalation_reasons": [],
                           "quote": {"total": 999.0}, "decision_log": list(CANNED_LOG)}


class WrongSteps(Liar):
    """Real outcomes, but five log entries with six keys whose names and order are wrong."""

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]:
        status, run = self.honest.agent_run(run_id)
        if run is not None and run.get("decision_log"):
            names = ["lookup", "score", "fetch", "compute", "done"]
            run["decision_log"] = [{**e, "step": n} for e, n in
                                   zip(reversed(run["decision_log"]), names, strict=False)]
        return status, run


class NoQueue(Liar):
    """Says escalated, but nothing ever reaches the human queue."""

    def human_queue(self, run_ids: Sequence[str]) -> tuple[Status, set[str]]:
        return Status.ok, set()


class EchoedTags(Liar):
    """Tags that cite what was sent (idempotency keys) with a constant value."""

    def customer_profile(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        status, profile = self.honest.customer_profile(customer_id)
        if profile is not None:
            for tag in (profile.get("tags") or {}).values():
                tag["value"] = 0.83
                tag["source_events"] = ["key-1", "key-2"]
        return status, profile


class ClaimedUpdates(Liar):
    """Acknowledges events and announces profile updates, but never changes a profile."""

    def __init__(self, honest: Any) -> None:
        super().__init__(honest)
        self.sent: list[EventInput] = []

    def send_events(self, events: Sequence[EventInput]) -> Status:
        self.sent.extend(events)
        return Status.ok

    def subscribe(self, types: Sequence[str], after: int | None = None
                  ) -> Iterator[StreamMessage]:
        import gevent

        seen = 0
        while True:
            while seen < len(self.sent):
                ev = self.sent[seen]
                seen += 1
                yield StreamMessage(seen, "profile.updated", ev.customer_id, {
                    "idempotency_key": ev.idempotency_key, "event_id": seen,
                    "customer_id": ev.customer_id}, time.perf_counter_ns())
            gevent.sleep(0.01)


class AlwaysOk:
    """Answers 200 to every workload call, and garbage when read back."""

    name = "always-ok"

    def get_customer(self, customer_id: Key) -> Status:
        return Status.ok

    def update_customer(self, customer_id: Key, changes: Any) -> Status:
        return Status.ok

    def read_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        return Status.ok, {"id": 1, "name": "whatever"}
