"""A crmbench adapter for a JSON-RPC CRM (``rpc://HOST:PORT``), written as an external plugin.

It follows docs/adapters.md and imports only crmbench's public adapter contract. Its own
distribution registers it:

    [project.entry-points."crmbench.adapters"]
    rpc = "rpc_plugin:RpcAdapter"

The platform (tests/bench/rpc_fake.py) keys records by UUID strings, answers every call
with HTTP 200 (failures are JSON-RPC error objects, 404 for a missing record on write)
and reads of missing records return an empty list.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from bench.adapters.base import (
    ActivityInput,
    BaseAdapter,
    Capability,
    CustomerChanges,
    GeneratorSettings,
    Key,
    Keyspace,
    LeadInput,
    LoadRecord,
    SearchQuery,
    Stage,
    Status,
    declared,
    status_for_rpc,
)
from bench.errors import TargetUnreachable, UserError

# The workload's stage vocabulary, and the fixture's stages, on this platform's pipeline.
STAGES: dict[str, str] = {
    "open": "new", "qualified": "qualified", "proposal": "proposition",
    "negotiation": "proposition", "won": "won", "lost": "lost",
}
FIXTURE_STAGES: dict[str, str] = {
    "prospecting": "new", "qualification": "qualified", "proposal": "proposition",
    "negotiation": "proposition", "closed_won": "won", "closed_lost": "lost",
}
# This platform's own error codes; JSON-RPC's reserved ones status_for_rpc knows.
CODES: dict[int, Status] = {404: Status.not_found}
LOAD_RECORD_KEY = "crmbench.load"
NOT_HERE = "the platform has no such feature"


def _region(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "country": row["country"]}


def _rep(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "email": row["email"], "region_id": row["region_id"]}


def _partner(row: Mapping[str, Any]) -> dict[str, Any]:
    # ``ref`` keeps the fixture id: a platform with unique refs could make loads idempotent.
    return {"name": row["name"], "region_id": row["region_id"], "tier": row["tier"],
            "user_id": row["owner_rep_id"], "website": row["website"], "ref": row["id"]}


def _opportunity(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["name"], "partner_id": row["customer_id"],
            "stage": FIXTURE_STAGES[row["stage"]], "amount": row["amount"]}


def _lead(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": row["company_name"], "contact_name": row["contact_name"],
            "email": row["email"], "user_id": row["owner_rep_id"], "status": row["status"]}


# Fixture table -> (model, row mapping), in load order.
LOADS = {"regions": ("region", _region), "reps": ("rep", _rep),
         "customers": ("partner", _partner), "opportunities": ("opportunity", _opportunity),
         "leads": ("lead", _lead)}


class RpcAdapter(BaseAdapter):
    """Adapter of ``rpc://host:port``: records.* methods over JSON-RPC 2.0 at ``/rpc``."""

    name: ClassVar[str] = "rpc"
    platform: ClassVar[str] = "fake-rpc"
    load_tables: ClassVar[tuple[str, ...]] = tuple(LOADS)
    capabilities: ClassVar[dict[str, Capability]] = declared(
        {"crud.mixed": "records.read/search/create/write over JSON-RPC"},
        unsupported={cid: NOT_HERE for cid in (
            "agent.latency", "agent.steps", "agent.takeover", "agent.explain",
            "cdp.event_delay", "cdp.realtime", "cdp.tags_explained",
            "sla.granularity", "sla.field", "sla.process", "sla.action", "sla.status",
            "sla.escalation", "workflow.max_nodes", "workflow.dag", "workflow.breaker",
            "workflow.lineage", "pack.enable_time", "pack.hotplug", "pack.manufacturing",
        )},
    )

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.concurrency = 16
        self._client: httpx.Client | None = None
        self._version: str | None = None
        self._ids = itertools.count(1)

    @classmethod
    def from_url(
        cls, url: str, *, env: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> RpcAdapter:
        parts = urlsplit(url)
        if parts.scheme != "rpc" or not parts.hostname or not parts.port:
            raise UserError(f"expected rpc://HOST:PORT, got {url!r}")
        return cls(parts.hostname, parts.port)

    def prepare_generator(self, settings: GeneratorSettings) -> None:
        self.concurrency = settings.concurrency

    def open(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency,
                              max_keepalive_connections=self.concurrency)
        self._client = httpx.Client(base_url=f"http://{self.host}:{self.port}",
                                    timeout=httpx.Timeout(30.0, connect=5.0), limits=limits)
        status, result = self._rpc("version")
        if status is not Status.ok:
            self.close()
            raise TargetUnreachable(f"rpc://{self.host}:{self.port} answered {status.value}")
        self._version = str(result["server"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def platform_version(self) -> str | None:
        return self._version

    def _rpc(self, method: str, *, one: bool = False, **params: Any) -> tuple[Status, Any]:
        """One call; transport faults, timeouts and error objects become statuses."""
        if self._client is None:
            raise RuntimeError("RpcAdapter used before open()")
        call = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            resp = self._client.post("/rpc", json=call)
            body = resp.json()
        except httpx.TimeoutException:
            return Status.timeout, None
        except httpx.TransportError:
            return Status.transport_error, None
        except ValueError:
            return Status.error, None
        status = status_for_rpc(body, http_status=resp.status_code, one=one, codes=CODES)
        return status, body.get("result") if status is Status.ok else None

    def _ids_of(self, model: str) -> list[Key]:
        status, ids = self._rpc("records.ids", model=model)
        if status is not Status.ok:
            raise TargetUnreachable(f"listing {model} ids was answered {status.value}")
        return list(ids)

    def keyspace(self) -> Keyspace:
        """Every record id, listed once per run by the harness (products: none here)."""
        return Keyspace.from_keys(
            customers=self._ids_of("partner"), opportunities=self._ids_of("opportunity"),
            reps=self._ids_of("rep"), regions=self._ids_of("region"),
            leads=self._ids_of("lead"),
        )

    # -------------------------------------------------------------- workload verbs

    def get_customer(self, customer_id: Key) -> Status:
        return self._rpc("records.read", one=True, model="partner", ids=[customer_id])[0]

    def search_customers(self, query: SearchQuery) -> Status:
        where: dict[str, Any] = {"name": query.name_prefix or ""}
        if query.region_id is not None:
            where["region_id"] = query.region_id
        # Tags are not a field here: that filter is an extension this adapter ignores.
        if query.tier is not None:
            where["tier"] = query.tier
        return self._rpc("records.search", model="partner", where=where,
                         limit=query.limit)[0]

    def list_leads(self, owner_rep_id: Key, limit: int = 20) -> Status:
        return self._rpc("records.search", model="lead",
                         where={"user_id": owner_rep_id, "status": "open"}, limit=limit)[0]

    def create_lead(self, lead: LeadInput) -> Status:
        row = {"name": lead.company_name, "contact_name": lead.contact_name,
               "email": lead.email, "status": "open"}
        return self._rpc("records.create", model="lead", rows=[row])[0]

    def log_activity(self, activity: ActivityInput) -> Status:
        row = {"partner_id": activity.customer_id, "type": activity.type,
               "subject": activity.subject}
        return self._rpc("records.create", model="activity", rows=[row])[0]

    def update_opportunity_stage(self, opportunity_id: Key, stage: Stage) -> Status:
        return self._rpc("records.write", model="opportunity", ids=[opportunity_id],
                         values={"stage": STAGES[stage]})[0]

    def update_customer(self, customer_id: Key, changes: CustomerChanges) -> Status:
        # Employees and the marketing consent have no field here: extensions, ignored.
        if changes.website is None:
            return Status.unsupported
        return self._rpc("records.write", model="partner", ids=[customer_id],
                         values={"website": changes.website})[0]

    # -------------------------------------------------------------- load hook

    def load_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[Status, list[Key | None]]:
        model, shape = LOADS[table]
        status, ids = self._rpc("records.create", model=model, rows=[shape(r) for r in rows])
        return status, list(ids) if status is Status.ok else []

    def loaded_profile(self) -> LoadRecord | None:
        status, data = self._rpc("meta.get", key=LOAD_RECORD_KEY)
        return LoadRecord.from_json(data) if status is Status.ok and data else None

    def record_profile(self, record: LoadRecord) -> Status:
        return self._rpc("meta.set", key=LOAD_RECORD_KEY, value=record.to_json())[0]
