"""The adapter contract: the verbs a workload needs, each returning a :class:`Status`.

An adapter subclasses :class:`BaseAdapter` and overrides only what its platform has: every
verb defaults to ``Status.unsupported`` and every hook to "nothing to do" (YCSB's ``DB``).
Adapters are synchronous (they run inside gevent-patched load-generator processes) and
never time themselves: :func:`~bench.adapters.timing.timed_call` does. An adapter returns
a Status for every expected outcome and raises only for programming or configuration
faults. Records are addressed by opaque keys (:data:`Key`) taken from the adapter's
:class:`Keyspace`. The guide is docs/adapters.md.

Optional verb groups are separate protocols an adapter opts into by implementing them:
:class:`Realtime` (agents, events, change stream), :class:`~bench.adapters.engines.Engines`
(workflows, SLAs, packs) and :class:`Guarded` (live third-party systems).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

# A record's key on the platform: an integer id, a UUID string, an object id...
Key = int | str


class Status(StrEnum):
    """Outcome of one adapter call."""

    ok = "ok"
    # The record does not exist (HTTP 404, an empty result where one row was asked for).
    not_found = "not_found"
    # The platform has no such operation, or the adapter does not implement it.
    unsupported = "unsupported"
    # The platform (or the adapter's client-side limiter) refused because of a rate limit.
    rate_limited = "rate_limited"
    # The platform refused the request (HTTP 4xx, an RPC error object for bad input).
    rejected = "rejected"
    # No answer in time (connect or read timeout, HTTP 408/504).
    timeout = "timeout"
    # The connection failed: refused, reset, broken framing.
    transport_error = "transport_error"
    # The platform failed (HTTP 5xx, an RPC server-fault error object).
    server_error = "server_error"
    # Anything else: an answer the adapter could not read, an exception in the verb.
    error = "error"


# Statuses that mean the call failed rather than being answered.
FAULT_STATUSES: tuple[Status, ...] = (
    Status.timeout, Status.transport_error, Status.server_error, Status.error,
)

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


def declared(
    supported: Mapping[str, str] | None = None,
    default: Support = "unknown",
    note: str = "",
    *,
    unsupported: Mapping[str, str] | None = None,
    not_measurable: Mapping[str, str] | None = None,
) -> dict[str, Capability]:
    """A declaration of every capability id: each mapping gives ids and why; others ``default``."""
    caps = {cid: Capability(default, note) for cid in CAPABILITY_IDS}
    groups: tuple[tuple[Support, Mapping[str, str] | None], ...] = (
        ("supported", supported), ("unsupported", unsupported),
        ("not-measurable", not_measurable),
    )
    seen: set[str] = set()
    for support, entries in groups:
        for cid, why in (entries or {}).items():
            if cid not in caps:
                raise ValueError(f"unknown capability id {cid!r}")
            if cid in seen:
                raise ValueError(f"capability {cid!r} is declared twice")
            seen.add(cid)
            caps[cid] = Capability(support, why)
    return caps


# ------------------------------------------------------------------ operation inputs

# Stage changes of the workload; each adapter maps them onto its platform's stages.
Stage = Literal["open", "qualified", "proposal", "negotiation", "won", "lost"]
STAGES: tuple[Stage, ...] = ("open", "qualified", "proposal", "negotiation", "won", "lost")


@dataclass(frozen=True)
class SearchQuery:
    """Customers whose name starts with ``name_prefix``; the other filters are extensions."""

    name_prefix: str | None = None
    region_id: Key | None = None
    tier: str | None = None
    tag: str | None = None
    limit: int = 20


@dataclass(frozen=True)
class LeadInput:
    """A new lead: company, contact and source are core; the rest are extensions."""

    company_name: str
    contact_name: str
    region_id: Key | None = None
    email: str | None = None
    source: str = "web"
    customer_id: Key | None = None
    product_interest: list[Key] = field(default_factory=list)


@dataclass(frozen=True)
class ActivityInput:
    """A logged call, e-mail, meeting, note or visit on a customer."""

    customer_id: Key
    type: str
    subject: str
    rep_id: Key | None = None


@dataclass(frozen=True)
class CustomerChanges:
    """A customer update: ``website`` is core; ``employees`` and the consent are extensions."""

    website: str | None = None
    employees: int | None = None
    consent_marketing: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set, by their names."""
        return {k: v for k, v in (("website", self.website), ("employees", self.employees),
                                  ("consent_marketing", self.consent_marketing))
                if v is not None}


# ------------------------------------------------------------------ keyspace

KINDS: tuple[str, ...] = ("customers", "opportunities", "reps", "regions", "products", "leads")


@dataclass(frozen=True)
class Keyspace:
    """The records a workload draws from: counts, and the keys when they are not 1..n.

    Without ``keys`` (or for a kind it does not list) the keys are the integers 1..count,
    as on the reference CRM. Any kind may be empty.
    """

    customers: int
    opportunities: int
    reps: int
    regions: int
    products: int = 0
    leads: int = 0
    keys: Mapping[str, Sequence[Key]] | None = field(default=None, compare=False)

    @classmethod
    def from_keys(cls, **kinds: Sequence[Key]) -> Keyspace:
        """A keyspace of explicit keys, e.g. ``from_keys(customers=[...], reps=[...])``."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown keyspace kinds: {sorted(unknown)}")
        keys = {kind: list(kinds.get(kind, ())) for kind in KINDS}
        n = {kind: len(v) for kind, v in keys.items()}
        return cls(n["customers"], n["opportunities"], n["reps"], n["regions"], n["products"],
                   n["leads"], keys=keys)

    def ids(self, kind: str) -> Sequence[Key]:
        """The keys of one kind, in a fixed order (positions are what workloads draw)."""
        if kind not in KINDS:
            raise ValueError(f"unknown keyspace kind {kind!r}")
        if self.keys is not None and kind in self.keys:
            return self.keys[kind]
        return range(1, int(getattr(self, kind)) + 1)

    def counts(self) -> dict[str, int]:
        """How many records of each kind: what a result file records."""
        return {kind: int(getattr(self, kind)) for kind in KINDS}

    def to_json(self) -> dict[str, Any]:
        """The keyspace for the load generators' configuration (keys only where not 1..n)."""
        out: dict[str, Any] = dict(self.counts())
        explicit = {kind: list(ids) for kind in KINDS
                    if not isinstance(ids := self.ids(kind), range)}
        if explicit:
            out["keys"] = explicit
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Keyspace:
        """Inverse of :meth:`to_json`; a plain dict of counts means keys 1..n."""
        c = {kind: int(data.get(kind, 0)) for kind in KINDS}
        keys = data.get("keys") or {}
        for kind, ids in keys.items():
            if kind not in KINDS or len(ids) != c[kind]:
                raise ValueError(f"keyspace keys of {kind!r} do not match its count")
        return cls(c["customers"], c["opportunities"], c["reps"], c["regions"], c["products"],
                   c["leads"], keys={k: list(v) for k, v in keys.items()} if keys else None)


# ------------------------------------------------------------------ hooks


@dataclass(frozen=True)
class GeneratorSettings:
    """What a load-generator process tells its adapter before ``open()``."""

    # Calls this process may have in flight at once (size a connection pool to it).
    concurrency: int
    # The generator's precise alarm: wait until this perf_counter_ns stamp.
    sleep_until: Callable[[int], None] | None = None
    # Load-generator processes of the run: a client-side limiter takes its share of a quota.
    processes: int = 1


@dataclass(frozen=True)
class CredentialField:
    """One credential an adapter needs: where it comes from and whether it is set."""

    field: str
    env: str
    set: bool
    source: str | None = None


@dataclass(frozen=True)
class CredentialReport:
    """Which credentials are set (never their values), for ``crmbench doctor``."""

    fields: tuple[CredentialField, ...]
    file: str | None = None


@dataclass(frozen=True)
class LoadRecord:
    """What fixture profile a target holds: written when a load finishes, read by runs."""

    manifest_sha256: str
    profile: Mapping[str, Any]
    rows: Mapping[str, int]
    adapter: str
    loaded_at: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"manifest_sha256": self.manifest_sha256, "profile": dict(self.profile),
                "rows": dict(self.rows), "adapter": self.adapter, "loaded_at": self.loaded_at,
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadRecord:
        return cls(str(data["manifest_sha256"]), dict(data.get("profile") or {}),
                   {str(k): int(v) for k, v in (data.get("rows") or {}).items()},
                   str(data.get("adapter", "")), str(data.get("loaded_at", "")),
                   float(data.get("seconds", 0.0)))


# ------------------------------------------------------------------ the contract


@runtime_checkable
class Adapter(Protocol):
    """What every platform adapter provides; :class:`BaseAdapter` has a default for each."""

    name: ClassVar[str]
    # The platform's key in reports and claims files ("reference", "salesforce", ...).
    platform: ClassVar[str]
    capabilities: ClassVar[dict[str, Capability]]
    # Fixture tables the load hook takes, in load order; empty when it has none.
    load_tables: ClassVar[tuple[str, ...]]
    sequential_keys: ClassVar[bool]

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Adapter:
        """Build the adapter for a target URL.

        Credentials come from ``env`` (the process environment when None); ``run_id`` tags
        what the run creates on platforms that keep it.
        """

    def prepare_generator(self, settings: GeneratorSettings) -> None: ...

    def open(self) -> None:
        """Connect and check the target answers; raise TargetUnreachable if it does not."""

    def close(self) -> None: ...

    def platform_version(self) -> str | None: ...

    def keyspace(self) -> Keyspace: ...

    def credential_report(self) -> CredentialReport | None: ...

    def target_facts(self) -> dict[str, Any]: ...

    def get_customer(self, customer_id: Key) -> Status: ...

    def customer_360(self, customer_id: Key) -> Status: ...

    def search_customers(self, query: SearchQuery) -> Status: ...

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status: ...

    def create_lead(self, lead: LeadInput) -> Status: ...

    def log_activity(self, activity: ActivityInput) -> Status: ...

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status: ...

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status: ...

    def load_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]: ...

    def loaded_profile(self) -> LoadRecord | None: ...

    def record_profile(self, record: LoadRecord) -> Status: ...


class BaseAdapter:
    """Defaults for every verb and hook: subclasses override what their platform has.

    Verbs answer ``Status.unsupported``; hooks do nothing. A subclass sets ``name``,
    ``platform`` and ``capabilities`` and implements ``from_url`` and ``keyspace``.
    """

    name: ClassVar[str]
    platform: ClassVar[str]
    capabilities: ClassVar[dict[str, Capability]] = declared()
    load_tables: ClassVar[tuple[str, ...]] = ()
    # Whether the keys are always the integers 1..count (then counts alone describe them).
    sequential_keys: ClassVar[bool] = False
    # The run this adapter works for (from ``from_url(run_id=...)``); None outside runs.
    run_id: str | None = None

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Self:
        """Build the adapter for a target URL (credentials from ``env``, never the URL)."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_url")

    # -------------------------------------------------------------- lifecycle hooks

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        """Called in each load-generator process before ``open()``; size pools here."""

    def open(self) -> None:
        """Connect and check the target answers; raise TargetUnreachable if it does not."""

    def close(self) -> None:
        """Release connections; the adapter may be opened again."""

    def platform_version(self) -> str | None:
        """The platform's own version or edition, for the result."""
        return None

    def keyspace(self) -> Keyspace:
        """The records the workload may use: called once per run, shared with generators."""
        raise NotImplementedError(f"{type(self).__name__} does not implement keyspace")

    def credential_report(self) -> CredentialReport | None:
        """Which credentials are set and where from; raise UserError if they are refused."""
        return None

    def target_facts(self) -> dict[str, Any]:
        """Facts about the target for ``crmbench doctor`` (edition, remaining allocation)."""
        return {}

    # -------------------------------------------------------------- workload verbs

    def get_customer(self, customer_id: Key) -> Status:
        """Read one customer record."""
        return Status.unsupported

    def customer_360(self, customer_id: Key) -> Status:
        """Read a customer with its contacts, open opportunities and recent activities."""
        return Status.unsupported

    def search_customers(self, query: SearchQuery) -> Status:
        """Find customers by name prefix (and the query's optional filters)."""
        return Status.unsupported

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        """List a sales rep's open leads, newest first."""
        return Status.unsupported

    def create_lead(self, lead: LeadInput) -> Status:
        """Create a lead."""
        return Status.unsupported

    def log_activity(self, activity: ActivityInput) -> Status:
        """Record an activity on a customer."""
        return Status.unsupported

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        """Move an opportunity to a stage of the workload's vocabulary (mapped here)."""
        return Status.unsupported

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        """Change fields of a customer; extensions without a counterpart may be ignored."""
        return Status.unsupported

    # -------------------------------------------------------------- load hook

    def load_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]:
        """Create fixture rows of one table (references already mapped); return their keys."""
        return Status.unsupported, []

    def loaded_profile(self) -> LoadRecord | None:
        """The load record kept on the platform, if it keeps one."""
        return None

    def record_profile(self, record: LoadRecord) -> Status:
        """Keep the load record on the platform; unsupported means the harness keeps it."""
        return Status.unsupported


# ------------------------------------------------------------------ optional groups


@dataclass(frozen=True)
class EventInput:
    """One behavioural event for the platform's customer-data intake."""

    customer_id: Key
    type: str
    idempotency_key: str
    occurred_at: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamMessage:
    """A message from the platform's change stream, stamped when the harness received it."""

    seq: int
    type: str
    customer_id: Key | None
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
        self, lead_id: Key, quantity: int | None = None
    ) -> tuple[Status, str | None]:
        """Start a lead-intake run; return its run id."""

    def agent_run(self, run_id: str) -> tuple[Status, dict[str, Any] | None]:
        """The run's state and decision log."""

    def agent_config(
        self, changes: dict[str, Any] | None = None
    ) -> tuple[Status, dict[str, Any] | None]:
        """Read (or change) the agent's takeover thresholds."""

    def customer_profile(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]: ...

    def create_lead_record(self, lead: LeadInput) -> tuple[Status, int | None]:
        """Create a lead and return its id (the workload's ``create_lead`` does not)."""

    def create_customer_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]: ...

    def subscribe(self, types: Sequence[str], after: int | None = None) -> Iterator[StreamMessage]:
        """Messages of the given types, live (or from ``after``), until the caller stops."""

    def create_product_record(self, fields: dict[str, Any]) -> tuple[Status, int | None]:
        """Add a product (``sku``, ``name``, ``unit_price``) that the agent may quote."""

    def set_stock(self, product_id: Key, region_id: Key, quantity: int) -> Status:
        """Set the stock of a product in a region, as the agent's inventory step reads it."""

    def create_order_record(
        self, customer_id: Key, lines: Sequence[dict[str, Any]]
    ) -> tuple[Status, int | None]:
        """Record a customer's order; lines are ``product_id``, ``quantity``, ``unit_price``."""

    def human_queue(self, run_ids: Sequence[str]) -> tuple[Status, set[str] | None]:
        """Which of these agent runs wait in the human queue (read from the queue itself)."""


@runtime_checkable
class Readback(Protocol):
    """Optional verb with which the harness checks a sample of the workload's answers."""

    def read_customer(self, customer_id: Key) -> tuple[Status, dict[str, Any] | None]:
        """The customer record as stored (with its ``id``), to compare with what was asked."""


@dataclass(frozen=True)
class RunPlan:
    """What a run intends to do, given to guarded adapters before any load is sent."""

    run_id: str
    scenario: str
    estimated_calls: int
    allow_production: bool = False
    # The workload the run intends to send: vendors plan it against their quotas.
    rate: float = 0.0
    duration_s: float = 0.0
    users: int = 0
    mix: Mapping[str, float] = field(default_factory=dict)
    # Calls per second the in-run probes send beside the mix (agent runs, event batches);
    # they are not scaled, so the mix gets what the quotas leave.
    probe_rate: float = 0.0
    # What to do when the quotas allow less than ``rate``: "scale" the run, or "refuse".
    over_quota: str = "scale"


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
        """Check the run is safe; return facts for the result (remaining allocation...).

        It may seed the run's tagged records; ``crmbench doctor`` never calls it. A
        ``rate_plan`` fact (``RatePlan.to_json()``) makes the run go at its allowed rate,
        so plan it before any write: a refused plan then leaves nothing behind."""

    def cleanup(self, run_id: str) -> int:
        """Delete every record tagged with ``run_id``; return how many were deleted."""


# ------------------------------------------------------------------ error model


def status_for_http(code: int) -> Status:
    """Map an HTTP status code to the Status of an expected outcome."""
    if 200 <= code < 300:
        return Status.ok
    if code == 404:
        return Status.not_found
    if code == 429:
        return Status.rate_limited
    if code in (408, 504):
        return Status.timeout
    if code == 501:
        return Status.unsupported
    if 400 <= code < 500:
        return Status.rejected
    if code >= 500:
        return Status.server_error
    return Status.error


# JSON-RPC 2.0 reserved codes: method not found, and the server-fault range.
_RPC_METHOD_NOT_FOUND = -32601
_RPC_INTERNAL = -32603
_RPC_SERVER_RANGE = range(-32099, -31999)


def status_for_rpc(
    body: Any,
    *,
    http_status: int = 200,
    one: bool = False,
    codes: Mapping[int, Status] | None = None,
) -> Status:
    """Map a JSON-RPC answer (HTTP 200 with ``result`` or ``error``) to a Status.

    ``one``: the call asked for one record, so an empty or null result is ``not_found``.
    ``codes`` maps the platform's own error codes; JSON-RPC's reserved ones are known.
    """
    if http_status != 200:
        return status_for_http(http_status)
    if not isinstance(body, Mapping):
        return Status.error
    error = body.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, Mapping) else None
        if isinstance(code, int) and not isinstance(code, bool):
            if codes and code in codes:
                return codes[code]
            if code == _RPC_METHOD_NOT_FOUND:
                return Status.unsupported
            if code == _RPC_INTERNAL or code in _RPC_SERVER_RANGE:
                return Status.server_error
        return Status.rejected
    if "result" not in body:
        return Status.error
    if one and body["result"] in (None, [], {}):
        return Status.not_found
    return Status.ok
