"""Optional adapter verbs for workflow, SLA and scenario-pack engines (issue 5).

A platform that implements :class:`Engines` can be probed for ``workflow.max_nodes``,
``sla.granularity`` and ``pack.enable_time``; one that does not is reported not-measured.
Records the probes create or change go through :class:`~bench.adapters.base.Realtime`.

A refusal (``Status.rejected``) may carry the platform's reason as
``{"refusal": <word>, "message": <text>}``; ``refusal`` is platform-neutral where a probe
needs to tell outcomes apart (``"frozen"``: an approval held back by the platform's rules).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from bench.adapters.base import Status


@runtime_checkable
class Engines(Protocol):
    """Deploy and run workflows, define SLAs, move a test clock, switch scenario packs."""

    # The shortest SLA time limit (seconds, real time) the platform accepts and tracks.
    min_sla_s: float

    def deploy_workflow(self, doc: dict[str, Any]) -> tuple[Status, dict[str, Any] | None]:
        """Deploy ``{"name", "nodes", "edges"}``; the answer has ``id`` and ``version``.

        A refused document answers ``Status.rejected`` with the refusal (see the module)."""

    def run_workflow(
        self, workflow_id: int, input: dict[str, Any], wait: bool = True
    ) -> tuple[Status, dict[str, Any] | None]:
        """Run the latest version; with ``wait`` the answer is the finished run."""

    def workflow_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]: ...

    def resume_workflow(self, workflow_id: int) -> tuple[Status, dict[str, Any] | None]: ...

    def workflow_lineage(self, workflow_id: int) -> tuple[Status, dict[str, Any] | None]: ...

    def create_sla(self, definition: dict[str, Any]) -> tuple[Status, dict[str, Any] | None]:
        """Define an SLA; the answer has its ``id``."""

    def sla_instances(self, sla_id: int) -> tuple[Status, list[dict[str, Any]] | None]: ...

    def advance_clock(self, seconds: float) -> Status:
        """Move the target's test clock; Status.unsupported when it has none."""

    def enable_pack(self, name: str) -> tuple[Status, dict[str, Any] | None]: ...

    def disable_pack(self, name: str) -> tuple[Status, dict[str, Any] | None]: ...

    def pack_checks(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        """``{"checks": [{"module", "check", "passed", "detail"}], "all_passed"}``."""

    def create_opportunity_record(
        self, fields: dict[str, Any]
    ) -> tuple[Status, Any | None]:
        """Create an opportunity (for process-level SLAs); return its id."""

    def pack_state(self, name: str) -> tuple[Status, dict[str, Any] | None]:
        """``{"enabled", "modules": [{"name", ...}]}`` of a scenario pack."""

    def create_pack_record(
        self, module: str, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        """Create a record of a pack module (``equipment``, ``contracts``, ``ppap``...)."""

    def get_pack_record(
        self, module: str, record_id: Any
    ) -> tuple[Status, dict[str, Any] | None]: ...

    def update_pack_record(
        self, module: str, record_id: Any, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]: ...

    def approve_contract(self, contract_id: Any) -> tuple[Status, dict[str, Any] | None]:
        """Ask for a contract's approval; while the pack's rules freeze it, ``rejected`` with
        ``{"refusal": "frozen", "message"}``."""

    def read_record(self, object: str, record_id: Any) -> tuple[Status, dict[str, Any] | None]:
        """Read a core record (``lead``, ``opportunity``, ``customer``) as stored."""

    def update_record(
        self, object: str, record_id: Any, fields: dict[str, Any]
    ) -> tuple[Status, dict[str, Any] | None]:
        """Change fields of a core record (``lead``, ``opportunity``, ``customer``)."""
