"""The adapter protocol: the verbs a workload needs, each returning a :class:`Status`.

Adapters are synchronous (they run inside gevent-patched load-generator processes) and
never time themselves: :class:`~bench.adapters.timing.TimedCall` does. An adapter returns
a Status for every expected outcome and raises only for programming or configuration
faults. Each adapter declares the capabilities of its platform (ids of the catalogue below).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable


class Status(StrEnum):
    """Outcome of one adapter call."""

    ok = "ok"
    not_found = "not_found"
    unsupported = "unsupported"
    rate_limited = "rate_limited"
    rejected = "rejected"
    error = "error"


Support = Literal["supported", "unsupported", "not-measurable", "unknown"]

# Capability ids of the catalogue, in its order.
CAPABILITY_IDS: tuple[str, ...] = (
    "agent.latency", "cdp.event_delay", "pack.enable_time", "workflow.max_nodes",
    "sla.granularity", "crud.mixed",
    "agent.steps", "agent.takeover", "agent.explain",
    "cdp.realtime", "cdp.tags_explained", "cdp.permissions", "cdp.consent", "cdp.export",
    "cdp.erase", "cdp.audit",
    "workflow.dag", "workflow.breaker", "workflow.lineage",
    "sla.field", "sla.process", "sla.action", "sla.status", "sla.escalation",
    "pack.hotplug", "pack.manufacturing",
)


@dataclass(frozen=True)
class Capability:
    """What an adapter declares about one capability of its platform, and on what basis."""

    support: Support
    note: str = ""


@dataclass(frozen=True)
class SearchQuery:
    name_prefix: str | None = None
    region_id: int | None = None
    tier: str | None = None
    tag: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class LeadInput:
    company_name: str
    contact_name: str
    region_id: int
    email: str | None = None
    source: str = "web"
    customer_id: int | None = None
    product_interest: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ActivityInput:
    customer_id: int
    type: str
    subject: str
    rep_id: int | None = None


@dataclass(frozen=True)
class Keyspace:
    """How many records of each kind the target holds; workloads draw ids from 1..n."""

    customers: int
    opportunities: int
    reps: int
    regions: int
    products: int
    leads: int = 0


@runtime_checkable
class Adapter(Protocol):
    """What every platform adapter implements."""

    name: ClassVar[str]
    # The platform's key in reports and claims files ("reference", "salesforce", ...).
    platform: ClassVar[str]
    capabilities: ClassVar[dict[str, Capability]]

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Adapter:
        """Build the adapter for a target URL.

        Credentials come from ``env`` (the process environment when None); ``run_id`` tags
        what the run creates on platforms that keep it.
        """

    def open(self) -> None:
        """Connect and check the target answers; raise TargetUnreachable if it does not."""

    def close(self) -> None: ...

    def platform_version(self) -> str | None: ...

    def keyspace(self) -> Keyspace: ...

    def get_customer(self, customer_id: int) -> Status: ...

    def customer_360(self, customer_id: int) -> Status: ...

    def search_customers(self, query: SearchQuery) -> Status: ...

    def list_leads(self, owner_rep_id: int, limit: int = 20) -> Status: ...

    def create_lead(self, lead: LeadInput) -> Status: ...

    def log_activity(self, activity: ActivityInput) -> Status: ...

    def update_opportunity_stage(self, opportunity_id: int, stage: str) -> Status: ...

    def update_customer(self, customer_id: int, changes: dict[str, Any]) -> Status: ...


@dataclass(frozen=True)
class EventInput:
    """One behavioural event for the platform's customer-data intake."""

    customer_id: int
    type: str
    idempotency_key: str
    occurred_at: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamMessage:
    """A message from the platform's change stream, stamped when the harness received it."""

    seq: int
    type: str
    customer_id: int | None
    payload: dict[str, Any]
    received_ns: int


@runtime_checkable
class Realtime(Protocol):
    """Optional verbs for agents, customer-data events and the change stream.

    Asynchronous outcomes (agent completion, profile updates) are observed through
    ``subscribe``, so the harness stamps sends and receipts on its own clock.
    """

    def send_events(self, events: Sequence[EventInput]) -> Status: ...

    def start_agent_run(
        self, lead_id: int, quantity: int | None = None
    ) -> tuple[Status, str | None]:
        """Start a lead-intake run; return its run id."""

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]:
        """The run's state and decision log."""

    def agent_config(
        self, changes: dict[str, Any] | None = None
    ) -> tuple[Status, dict[str, Any] | None]:
        """Read (or change) the agent's takeover thresholds."""

    def customer_profile(self, customer_id: int) -> tuple[Status, dict[str, Any] | None]: ...

    def create_lead_record(self, lead: LeadInput) -> tuple[Status, int | None]:
        """Create a lead and return its id (the workload's ``create_lead`` does not)."""

    def create_customer_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]: ...

    def subscribe(self, types: Sequence[str], after: int | None = None) -> Iterator[StreamMessage]:
        """Messages of the given types, live (or from ``after``), until the caller stops."""


@dataclass(frozen=True)
class RunPlan:
    """What a run intends to do, given to guarded adapters before any load is sent."""

    run_id: str
    scenario: str
    estimated_calls: int
    allow_production: bool = False


@runtime_checkable
class Guarded(Protocol):
    """Optional verbs of adapters for live third-party systems (paying customers' orgs).

    The harness calls ``preflight`` once before a run (it may refuse by raising
    ``UserError``, e.g. a production org without permission, or too little API allocation
    left) and ``cleanup`` after it, and ``crmbench cleanup`` calls it after an interrupted
    run. Every record an adapter creates carries its ``run_id`` so cleanup can find it.
    """

    run_id: str | None

    def preflight(self, plan: RunPlan) -> dict[str, Any]:
        """Check the run is safe; return facts for the result (remaining allocation...)."""

    def cleanup(self, run_id: str) -> int:
        """Delete every record tagged with ``run_id``; return how many were deleted."""


def declared(
    supported: dict[str, str] | None = None, default: Support = "unknown", note: str = ""
) -> dict[str, Capability]:
    """A full capability declaration: listed ids are supported, the rest get ``default``."""
    caps = {cid: Capability(default, note) for cid in CAPABILITY_IDS}
    for cid, why in (supported or {}).items():
        if cid not in caps:
            raise ValueError(f"unknown capability id {cid!r}")
        caps[cid] = Capability("supported", why)
    return caps


def status_for_http(code: int) -> Status:
    """Map an HTTP status code to the Status of an expected outcome."""
    if 200 <= code < 300:
        return Status.ok
    if code == 404:
        return Status.not_found
    if code == 429:
        return Status.rate_limited
    if code in (501,):
        return Status.unsupported
    if 400 <= code < 500:
        return Status.rejected
    return Status.error
