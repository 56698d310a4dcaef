"""Several service processes on one PostgreSQL database: what they tell each other, who owns timers.

Each process keeps one dedicated connection that LISTENs on the channels of its schema:
``stream`` (change-stream messages committed: read them from the table), ``state`` (a
workflow, SLA, pack switch or agent configuration changed: reload it, then answer on
``ack``) and ``sla`` (SLA instances started or met, for the owner of the deadline heap).
A state change is announced inside its transaction; the request that made it returns once
every other process has acknowledged the reload (or after ``SETTLE_TIMEOUT_S``).

One process owns the timers (SLA deadlines, workflow schedules): the one holding a session
advisory lock on its listening connection. The lock dies with the process or connection,
and another process takes it within ``OWNER_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from reference_impl.db import Executor

log = logging.getLogger("reference_impl.cluster")

# Advisory lock keys (first half; the second is a hash of the schema, so that services on
# other schemas of the same database do not contend).
STREAM_LOCK = 0x63726D01
OWNER_LOCK = 0x63726D02
INIT_LOCK = 0x63726D03
STREAM_SEQUENCE = "crmbench_stream_seq"
SETTLE_TIMEOUT_S = 2.0
OWNER_POLL_S = 0.5
# pg_notify payloads must stay below 8,000 bytes.
MAX_PAYLOAD = 7_000

Reloader = Callable[[str], Awaitable[None]]
OwnerHook = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """This process's place among ``workers`` processes started together at ``epoch``."""

    workers: int
    index: int
    # When the service started (ISO, as stored): agent runs begun earlier were interrupted.
    epoch: str


class Cluster:
    """The listening connection, state-change announcements with acknowledgements, timer
    ownership."""

    def __init__(self, db: Any, config: ClusterConfig) -> None:
        self.db = db
        self.config = config
        self.key = 0
        self.owner = False
        # Names this process in announcements and acknowledgements.
        self.id = uuid.uuid4().hex[:12]
        self.reloaders: dict[str, Reloader] = {}
        self.owner_hooks: list[OwnerHook] = []
        self.on_stream: Callable[[], None] = lambda: None
        self.on_sla: Callable[[str], None] = lambda _payload: None
        self._conn: Any = None
        self._pending: dict[str, tuple[set[str], asyncio.Event]] = {}
        self._changes: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, topic: str) -> str:
        return f"crmbench_{self.key & 0xFFFFFFFF:08x}_{topic}"

    async def start(self) -> None:
        """Listen, and create what the processes share (stream sequence, lookup indexes)."""
        self.key = int(await self.db.fetch_val("SELECT hashtext(current_schema())"))
        async with self.db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (INIT_LOCK, self.key))
            await tx.execute(f"CREATE SEQUENCE IF NOT EXISTS {STREAM_SEQUENCE}")
            # Writes look up the open SLA instances of a record or customer in the database,
            # since another process may have started them.
            await tx.execute("CREATE INDEX IF NOT EXISTS ix_sla_instances_open_record "
                             "ON sla_instances (object, record_id) WHERE state = 'open'")
            await tx.execute("CREATE INDEX IF NOT EXISTS ix_sla_instances_open_customer "
                             "ON sla_instances (customer_id) WHERE state = 'open'")
        await self._connect()
        self._spawn(self._apply_loop(), "cluster-apply")
        self._spawn(self._owner_loop(), "cluster-owner")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.owner:
            await self._set_owner(False)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.db.url, timeout=10)
        await conn.add_listener(self.channel("stream"), self._heard_stream)
        await conn.add_listener(self.channel("state"), self._heard_state)
        await conn.add_listener(self.channel("ack"), self._heard_ack)
        await conn.add_listener(self.channel("sla"), self._heard_sla)
        self._conn = conn

    def _heard_stream(self, *_args: Any) -> None:
        self.on_stream()

    def _heard_sla(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.on_sla(payload)

    def _heard_state(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, key, sender, token = payload.split(" ")
        if sender != self.id:
            self._changes.put_nowait((kind, key, token))

    def _heard_ack(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        token, sender = payload.split(" ")
        entry = self._pending.get(token)
        if entry is not None:
            entry[0].add(sender)
            if len(entry[0]) >= self.config.workers - 1:
                entry[1].set()

    async def _apply_loop(self) -> None:
        while True:
            kind, key, token = await self._changes.get()
            reload = self.reloaders.get(kind)
            try:
                if reload is not None:
                    await reload(key)
                if token != "-":
                    await self.db.execute("SELECT pg_notify(?, ?)",
                                          (self.channel("ack"), f"{token} {self.id}"))
            except Exception:
                log.exception("reloading %s %s announced by another process failed", kind, key)

    async def announce(self, tx: Executor, kind: str, key: object, *, wait: bool = True
                       ) -> str | None:
        """Tell the other processes, when ``tx`` commits, to reload ``kind`` ``key``.

        With ``wait``, returns a token for :meth:`settle`.
        """
        token = uuid.uuid4().hex[:16] if wait else "-"
        if wait:
            self._pending[token] = (set(), asyncio.Event())
        await tx.execute("SELECT pg_notify(?, ?)",
                         (self.channel("state"), f"{kind} {key} {self.id} {token}"))
        return token if wait else None

    async def settle(self, token: str | None) -> None:
        """Wait until every other process has reloaded what ``token``'s announcement named."""
        if token is None:
            return
        entry = self._pending.get(token)
        if entry is None:
            return
        try:
            if self.config.workers > 1:
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await entry[1].wait()
        except TimeoutError:
            log.warning("not every process acknowledged a state change within %.1f s",
                        SETTLE_TIMEOUT_S)
        finally:
            self._pending.pop(token, None)

    def forget(self, token: str | None) -> None:
        """Drop the wait for an announcement whose transaction rolled back."""
        if token is not None:
            self._pending.pop(token, None)

    async def notify(self, tx: Executor, topic: str, payload: str) -> None:
        await tx.execute("SELECT pg_notify(?, ?)", (self.channel(topic), payload))

    async def _set_owner(self, owned: bool) -> None:
        self.owner = owned
        for hook in self.owner_hooks:
            try:
                await hook(owned)
            except Exception:
                log.exception("switching timer ownership failed")

    async def _owner_loop(self) -> None:
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    if self.owner:
                        await self._set_owner(False)
                    await self._connect()
                    # Notifications may have been missed: reload everything once.
                    for reload in self.reloaders.values():
                        await reload("*")
                    self.on_stream()
                if not self.owner and await self._conn.fetchval(
                        "SELECT pg_try_advisory_lock($1, $2)", OWNER_LOCK, self.key):
                    await self._set_owner(True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster connection failed; retrying")
                with contextlib.suppress(Exception):
                    if self._conn is not None:
                        await self._conn.close()
            await asyncio.sleep(OWNER_POLL_S)


async def announce(cluster: Cluster | None, tx: Executor, kind: str, key: object,
                   *, wait: bool = True) -> str | None:
    """:meth:`Cluster.announce`, nothing when the service runs as one process."""
    if cluster is None:
        return None
    return await cluster.announce(tx, kind, key, wait=wait)


async def settle(cluster: Cluster | None, token: str | None) -> None:
    if cluster is not None:
        await cluster.settle(token)
