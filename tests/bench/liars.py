"""In-process targets that lie to the engine probes, one lie each; every probe must fail them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import gevent.queue

from bench.adapters.base import Status, StreamMessage


class Target:
    """An in-process target with the Engines and Realtime verbs; by default it says ok."""

    min_sla_s = 0.1

    def __init__(self) -> None:
        self.stream: gevent.queue.Queue[StreamMessage] = gevent.queue.Queue()
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        self.ids = 0

    def publish(self, type_: str, payload: dict[str, Any]) -> None:
        import time

        self.ids += 1
        self.stream.put(StreamMessage(seq=self.ids, type=type_, customer_id=None,
                                      payload=payload, received_ns=time.perf_counter_ns()))

    def subscribe(self, types: Sequence[str], after: int | None = None
                  ) -> Iterator[StreamMessage]:
        while True:
            msg = self.stream.get()
            if msg.type in types:
                yield msg

    def _new(self, kind: str, fields: dict[str, Any]) -> tuple[Status, dict[str, Any]]:
        self.ids += 1
        self.records[(kind, self.ids)] = {**fields, "id": self.ids}
        return Status.ok, self.records[(kind, self.ids)]

    # Realtime verbs the probes use
    def send_events(self, events: Any) -> Status: return Status.ok
    def start_agent_run(self, lead_id: Any, quantity: Any = None) -> Any: return Status.ok, "r"
    def agent_run(self, run_id: str) -> Any: return Status.ok, {}
    def agent_config(self, changes: Any = None) -> Any: return Status.ok, {}
    def customer_profile(self, customer_id: Any) -> Any: return Status.ok, {}
    def create_customer_record(self, fields: Any) -> Any: return Status.ok, 1
    def create_product_record(self, fields: Any) -> Any: return Status.ok, 1
    def set_stock(self, product_id: Any, region_id: Any, quantity: int) -> Status:
        return Status.ok
    def create_order_record(self, customer_id: Any, lines: Any) -> Any: return Status.ok, 1
    def human_queue(self, run_ids: Any) -> Any: return Status.ok, set()
    def create_lead_record(self, lead: Any) -> Any: return Status.ok, self._new("lead", {})[1]["id"]
    def get_customer(self, customer_id: Any) -> Status: return Status.ok

    # Engines verbs
    def deploy_workflow(self, doc: dict[str, Any]) -> Any: return Status.ok, {"id": 7, "version": 1}
    def run_workflow(self, wid: int, input: Any, wait: bool = True) -> Any:
        return Status.ok, {"status": "completed", "executed_nodes": 10**9}
    def workflow_run(self, run_id: str) -> Any: return Status.ok, {}
    def resume_workflow(self, wid: int) -> Any: return Status.ok, {}
    def workflow_lineage(self, wid: int) -> Any: return Status.ok, {}
    def create_sla(self, definition: Any) -> Any: return Status.ok, {"id": 1}
    def sla_instances(self, sla_id: int) -> Any: return Status.ok, []
    def advance_clock(self, seconds: float) -> Status: return Status.unsupported
    def enable_pack(self, name: str) -> Any: return Status.ok, {}
    def disable_pack(self, name: str) -> Any: return Status.ok, {}
    def pack_checks(self, name: str) -> Any: return Status.ok, {"checks": [], "all_passed": True}
    def create_opportunity_record(self, fields: Any) -> Any:
        return Status.ok, self._new("opportunity", fields)[1]["id"]
    def pack_state(self, name: str) -> Any: return Status.ok, {"enabled": False}
    def create_pack_record(self, module: str, fields: Any) -> Any: return self._new(module, fields)
    def get_pack_record(self, module: str, rid: Any) -> Any:
        return Status.ok, self.records.get((module, int(rid)), {})
    def update_pack_record(self, module: str, rid: Any, fields: Any) -> Any: return Status.ok, {}
    def approve_contract(self, cid: Any) -> Any: return Status.ok, {"status": "approved"}
    def read_record(self, object: str, rid: Any) -> Any: return Status.ok, {}
    def update_record(self, object: str, rid: Any, fields: Any) -> Any: return Status.ok, {}
    def update_opportunity_stage(self, oid: Any, stage: Any) -> Status: return Status.ok
    def log_activity(self, activity: Any) -> Status: return Status.ok
