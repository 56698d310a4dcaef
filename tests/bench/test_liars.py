"""Every lying target fails the probe it targets (issue: verify effects, not claims)."""

from __future__ import annotations

from typing import Any

from bench.adapters.base import Realtime, Status
from bench.adapters.engines import Engines
from bench.probes.pack import PackOptions, probe_pack
from bench.probes.registry import ProbeContext
from bench.probes.sla import SlaOptions, probe_sla
from bench.probes.workflow import WorkflowOptions, probe_workflow
from tests.bench.liars import Target

CTX = ProbeContext("liar", lambda _m: None)


def test_the_fake_serves_every_engine_and_realtime_verb() -> None:
    # Otherwise the probes would rightly say not-measured, and no lie would be tested.
    assert isinstance(Target(), Engines) and isinstance(Target(), Realtime)


def test_claimed_but_unexecuted_nodes_are_not_counted() -> None:
    # Every run "completed with every node executed", at once, and nothing happened.
    dim, _caps = probe_workflow(Target(), CTX, WorkflowOptions(cap=8, repeats=1, min_time_s=0))
    assert dim is not None and dim["value"] == 0 and dim["status"] == "fail"
    assert "no notification" in dim["reason"]


class _AnyRefusal(Target):
    """Refuses every document with a bare 4xx, valid or not."""

    def deploy_workflow(self, doc: dict[str, Any]) -> Any:
        return Status.rejected, None


def test_any_4xx_is_not_a_clear_error() -> None:
    _dim, caps = probe_workflow(_AnyRefusal(), CTX, WorkflowOptions(cap=2, repeats=1,
                                                                    min_time_s=0))
    assert caps["workflow.dag"].status == "fail"
    assert "does not name its problem" in (caps["workflow.dag"].reason or "")


class _EarlyBreach(Target):
    """Reports every record breached the moment it is created."""

    def create_sla(self, definition: Any) -> Any:
        self.sla = definition
        return Status.ok, {"id": 1}

    def create_lead_record(self, lead: Any) -> Any:
        status, rid = super().create_lead_record(lead)
        self.publish("sla.breached", {"sla_id": 1, "record_id": rid})
        return status, rid

    def create_opportunity_record(self, fields: Any) -> Any:
        status, rid = super().create_opportunity_record(fields)
        self.publish("sla.breached", {"sla_id": 1, "record_id": rid})
        return status, rid


def test_an_early_breach_fails() -> None:
    dim, caps = probe_sla(_EarlyBreach(), CTX, SlaOptions(real_time_s=0.2))
    assert dim is not None and dim["status"] == "fail"
    for level in ("field", "process", "action"):
        assert caps[f"sla.{level}"].status == "fail"
        assert "before the deadline" in (caps[f"sla.{level}"].reason or "")


class _StatusUnion(_EarlyBreach):
    """Breaches on time, but shows red, yellow and green in turn whatever the time."""

    shown = ("red", "yellow", "green")

    def create_lead_record(self, lead: Any) -> Any:
        status, rid = Target.create_lead_record(self, lead)
        self.last = rid
        return status, rid

    def create_opportunity_record(self, fields: Any) -> Any:
        status, rid = Target.create_opportunity_record(self, fields)
        self.last = rid
        return status, rid

    def sla_instances(self, sla_id: int) -> Any:
        self.reads = getattr(self, "reads", -1) + 1
        if self.reads == 1:
            self.publish("sla.breached", {"sla_id": 1, "record_id": self.last})
        return Status.ok, [{"record_id": self.last, "status": self.shown[self.reads % 3]}]


def test_a_union_of_statuses_is_not_the_status_at_each_time() -> None:
    _dim, caps = probe_sla(_StatusUnion(), CTX, SlaOptions(real_time_s=0.2))
    assert caps["sla.status"].status == "fail"


class _HiddenAs500(Target):
    """Disabling the pack makes its records fail with a server error."""

    def disable_pack(self, name: str) -> Any:
        self.off = True
        return Status.ok, {}

    def enable_pack(self, name: str) -> Any:
        self.off = False
        return Status.ok, {}

    def get_pack_record(self, module: str, rid: Any) -> Any:
        return (Status.server_error, None) if getattr(self, "off", False) else (
            super().get_pack_record(module, rid))


def test_hidden_as_500_is_not_hidden() -> None:
    _dim, caps = probe_pack(_HiddenAs500(), CTX, PackOptions(timeout_s=1))
    assert caps["pack.hotplug"].status == "fail"
    assert caps["pack.hotplug"].evidence["hidden_while_disabled"] == "server_error"


class _RejectFirst(_HiddenAs500):
    """Rejects the first approval of every contract, whatever its PPAP, then approves."""

    def get_pack_record(self, module: str, rid: Any) -> Any:
        return (Status.not_found, None) if getattr(self, "off", False) else (
            Target.get_pack_record(self, module, rid))

    def approve_contract(self, cid: Any) -> Any:
        seen = self.__dict__.setdefault("asked", set())
        if cid in seen:
            return Status.ok, {"status": "approved"}
        seen.add(cid)
        return Status.rejected, {"refusal": "frozen", "message": "no"}


def test_always_reject_first_is_not_a_ppap_freeze() -> None:
    _dim, caps = probe_pack(_RejectFirst(), CTX, PackOptions(timeout_s=1))
    assert caps["pack.manufacturing"].status == "fail"
    assert caps["pack.hotplug"].status == "pass"


def test_200_for_everything_fails_the_pack() -> None:
    # Records are never hidden and an incomplete PPAP approves.
    _dim, caps = probe_pack(Target(), CTX, PackOptions(timeout_s=1))
    assert caps["pack.hotplug"].status == "fail"
    assert caps["pack.manufacturing"].status == "fail"
