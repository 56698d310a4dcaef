"""The parts of the reference CRM behind its HTTP API, wired together, started and stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from reference_impl import cdp
from reference_impl import models as m
from reference_impl.agents import AgentRuntime, Scorer
from reference_impl.audit import AuditLog
from reference_impl.clock import Clock
from reference_impl.cluster import Cluster, ClusterConfig
from reference_impl.db import Database, Executor
from reference_impl.loader import create_schema
from reference_impl.packs import PackService
from reference_impl.privacy import Privacy
from reference_impl.sla import SlaEngine
from reference_impl.store import AfterCommit, Change, Store
from reference_impl.stream import DEFAULT_QUEUE, DEFAULT_RETENTION, StreamHub
from reference_impl.workflows import WorkflowEngine


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How ``build_app`` was asked to run the service."""

    init_schema: bool = True
    stream_retention: int = DEFAULT_RETENTION
    stream_queue: int = DEFAULT_QUEUE
    scorer: Scorer | None = None
    nats_url: str | None = None
    test_clock: bool = False
    cluster: ClusterConfig | None = None


class Services:
    """Store, change stream, engines and packs over one database; routes share one of these."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.init_schema = settings.init_schema
        self.store = Store(db)
        self.hub = StreamHub(db, retention=settings.stream_retention,
                             queue_size=settings.stream_queue)
        self.clock = Clock(settings.test_clock)
        self.workflows = WorkflowEngine(self.hub, self.clock)
        self.slas = SlaEngine(self.hub, self.clock)
        self.packs = PackService(db, self.workflows, self.slas)
        self.agents = AgentRuntime(self.hub, settings.scorer)
        self.audit = AuditLog(db)
        self.privacy = Privacy(self.store, self.hub, self.audit, self.slas)
        self.nats_ingest = (
            cdp.NatsIngest(self.hub, settings.nats_url) if settings.nats_url else None
        )
        self.peers = Cluster(db, settings.cluster) if settings.cluster is not None else None
        for part in (self.hub, self.workflows, self.slas, self.packs, self.agents):
            part.cluster = self.peers
        self.store.hooks += [self.slas.on_change, self.trigger_workflows]

    async def trigger_workflows(self, _tx: Executor, change: Change) -> AfterCommit | None:
        """Start triggered workflow runs once the record's transaction has committed."""
        workflows = self.workflows
        if not workflows.listening:
            return None
        return lambda: workflows.on_record(change.table, change.created, change.row,
                                           change.stage)

    def after_events(self, events: list[m.EventIn], result: dict[str, Any]) -> None:
        """Start the workflows that new customer-data events trigger."""
        if not self.workflows.listening:
            return
        for ev, outcome in zip(events, result["events"], strict=True):
            if not outcome["duplicate"]:
                self.workflows.on_record(
                    "events", True, {"id": outcome["id"], "customer_id": ev.customer_id,
                                     "type": ev.type, "properties": ev.properties},
                    None, ev.type)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Connect, start every part in order, and stop them in reverse."""
        await self.db.connect()
        try:
            if self.init_schema:
                await create_schema(self.db)
            await self.audit.start()
            if self.peers is not None:
                await self.peers.start()
            await self.hub.start()
            await self.workflows.start()
            await self.slas.start()
            await self.packs.start()
            try:
                await self.agents.start()
                if self.nats_ingest is not None:
                    await self.nats_ingest.start()
                yield
            finally:
                await self._stop()
        finally:
            await self.db.close()

    async def _stop(self) -> None:
        if self.nats_ingest is not None:
            await self.nats_ingest.stop()
        await self.agents.stop()
        await self.slas.stop()
        await self.workflows.stop()
        await self.hub.stop()
        if self.peers is not None:
            await self.peers.stop()
