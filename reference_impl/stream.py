"""The change stream: an outbox written with each change, fanned out over Server-Sent Events.

Messages are written to ``stream_messages`` in the same transaction as the change that caused
them (:func:`publish` inside :meth:`StreamHub.transaction`) and handed to live subscribers
right after the commit, from memory: no subscriber ever polls the database.

Sequence numbers are handed out by the hub itself, the single writer of the stream, without
an await between taking a number and registering it as in flight; at start numbering
continues after the highest stored seq (pruning always keeps that row), so numbers survive
restarts and are never reused. The hub delivers in seq order and never past a seq whose
transaction is still open: a message committed early on PostgreSQL, where concurrent
transactions may commit in any order, waits for its predecessors to commit or roll back
(rolled-back numbers are skipped). ``delivered`` is thus a watermark below which every
message is committed; a new subscriber replays up to it from the table and takes the rest
live, with no gap and no duplicate. Unlike a database sequence or identity column, this
needs no lock held until commit, so publishing transactions still commit in parallel; the
price is one service process per database.

Served by several processes (PostgreSQL, ``crmbench serve --workers N``), numbers come from
a database sequence taken under a transaction-level advisory lock held until commit, so
seq order is commit order: once seq n + 1 is visible, every lower seq has committed or
rolled back for good. The transaction also sends a notification; every process then reads
the rows above its ``delivered`` watermark in seq order and hands them to its subscribers
(and polls once a second, should a notification be lost).

Retention: the last ``DEFAULT_RETENTION`` (100,000) sequence numbers, set per service with
``CRMBENCH_STREAM_RETENTION``; older messages are deleted by a background task. Resuming
from below the retained window first yields a ``stream.gap`` message
``{"requested_after": N, "oldest_available": M}`` with seq ``M - 1`` (not stored). Each
subscriber has a bounded buffer (``DEFAULT_QUEUE``, 10,000); when it overflows the
subscriber is disconnected and can resume with ``after``. Idle streams get ``: ping`` every
15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from reference_impl.db import Database, Executor, Params, Row
from reference_impl.store import now_iso

if TYPE_CHECKING:
    from reference_impl.cluster import Cluster

log = logging.getLogger("reference_impl.stream")

DEFAULT_RETENTION = 100_000
DEFAULT_QUEUE = 10_000
HEARTBEAT_S = 15.0
REPLAY_PAGE = 1_000
PRUNE_INTERVAL_S = 1.0
POLL_INTERVAL_S = 1.0
_ROWS_PER_INSERT = 500

_enc = msgspec.json.Encoder()


def frame(seq: int, type_: str, customer_id: int | None, at: str, payload: bytes) -> bytes:
    """One SSE message; ``payload`` is already JSON, so replayed rows are never re-encoded."""
    head = _enc.encode({"seq": seq, "type": type_, "customer_id": customer_id, "at": at})
    data = head[:-1] + b',"payload":' + payload + b"}"
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, type_.encode(), data)


@dataclass(slots=True)
class Message:
    seq: int
    type: str
    customer_id: int | None
    at: str
    payload: bytes
    _frame: bytes = b""

    def frame(self) -> bytes:
        # Encoded once, however many subscribers receive it.
        if not self._frame:
            self._frame = frame(self.seq, self.type, self.customer_id, self.at, self.payload)
        return self._frame


@dataclass(frozen=True, slots=True)
class Filter:
    """Which messages a subscriber wants; a type ending in ``.*`` matches a whole family."""

    types: frozenset[str] | None = None
    customer_id: int | None = None

    @property
    def exact(self) -> frozenset[str] | None:
        """The types as a plain set, None when there is no type filter or it has wildcards."""
        if self.types is None or any(t.endswith(".*") for t in self.types):
            return None
        return self.types

    def matches(self, msg: Message) -> bool:
        if self.customer_id is not None and msg.customer_id != self.customer_id:
            return False
        if self.types is None or msg.type in self.types:
            return True
        return any(t.endswith(".*") and msg.type.startswith(t[:-1]) for t in self.types)


class Outbox:
    """A transaction that collects stream messages; usable wherever an Executor is."""

    __slots__ = ("_tx", "messages", "pending")

    def __init__(self, tx: Executor) -> None:
        self._tx = tx
        self.pending: list[tuple[str, int | None, str, bytes]] = []
        self.messages: list[Message] = []

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        return await self._tx.fetch_one(sql, params)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._tx.fetch_all(sql, params)

    async def fetch_val(self, sql: str, params: Params = ()) -> Any:
        return await self._tx.fetch_val(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._tx.execute(sql, params)


def publish(tx: Outbox, type_: str, customer_id: int | None, payload: dict[str, Any]) -> None:
    """Queue a message; it is stored when ``tx`` ends and delivered once it has committed."""
    tx.pending.append((type_, customer_id, now_iso(), _enc.encode(payload)))


class Subscriber:
    """One live stream's bounded buffer; fan-out appends, the SSE response drains."""

    __slots__ = ("buffer", "closed", "filter", "limit", "wake")

    def __init__(self, flt: Filter, limit: int) -> None:
        self.filter = flt
        self.limit = limit
        self.buffer: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.closed: str | None = None

    def offer(self, msg: Message) -> bool:
        """Buffer ``msg`` if it matches; False when the buffer overflowed."""
        if not self.filter.matches(msg):
            return True
        if len(self.buffer) >= self.limit:
            self.close("overflow")
            return False
        self.buffer.append(msg)
        self.wake.set()
        return True

    def close(self, reason: str) -> None:
        self.closed = reason
        self.buffer.clear()
        self.wake.set()

    async def take(self, timeout: float) -> list[Message] | None:
        """Everything buffered, waiting up to ``timeout`` s; None when nothing came."""
        if not self.buffer and self.closed is None:
            self.wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                return None
        batch = list(self.buffer)
        self.buffer.clear()
        return batch


class StreamHub:
    """Sequence numbers, outbox writes, in-order fan-out to subscribers, replay, retention."""

    def __init__(
        self,
        db: Database,
        *,
        retention: int = DEFAULT_RETENTION,
        queue_size: int = DEFAULT_QUEUE,
        heartbeat: float = HEARTBEAT_S,
    ) -> None:
        if retention < 1 or queue_size < 1:
            raise ValueError("retention and queue_size must be at least 1")
        self.db = db
        self.retention = retention
        self.queue_size = queue_size
        self.heartbeat = heartbeat
        self.delivered = 0
        self._next = 1
        self._inflight: set[int] = set()  # first seq of each open transaction's messages
        self._ready: dict[int, list[Message]] = {}
        self._subscribers: set[Subscriber] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruned_upto = 0
        # Set when other processes publish too: numbering and delivery go through the database.
        self.cluster: Cluster | None = None
        self._poke = asyncio.Event()

    async def start(self) -> None:
        if self.cluster is not None:
            await self._start_shared(self.cluster)
        else:
            last = await self.db.fetch_val("SELECT MAX(seq) FROM stream_messages")
            self.delivered = int(last or 0)
            self._next = self.delivered + 1
        self._spawn(self._prune_loop(), "stream-prune")

    async def _start_shared(self, cluster: Cluster) -> None:
        from reference_impl.cluster import STREAM_LOCK, STREAM_SEQUENCE

        async with self.db.transaction() as tx:
            await tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (STREAM_LOCK, cluster.key))
            last = int(await tx.fetch_val("SELECT COALESCE(MAX(seq), 0) FROM stream_messages"))
            row = await tx.fetch_one(f"SELECT last_value, is_called FROM {STREAM_SEQUENCE}")
            assert row is not None
            taken = int(row["last_value"]) if row["is_called"] else 0
            if last > taken:
                # Numbers handed out by a single-process run before this one.
                await tx.execute(f"SELECT setval('{STREAM_SEQUENCE}', ?, true)", (last,))
        self.delivered = last
        cluster.on_stream = self._poke.set
        self._spawn(self._pump(), "stream-pump")

    async def _pump(self) -> None:
        """Deliver what other processes (and this one) committed, in seq order."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL_S):
                    await self._poke.wait()
            self._poke.clear()
            try:
                while True:
                    page = await self._read(self.delivered, 2**62, Filter(), REPLAY_PAGE)
                    if not page:
                        break
                    # No await from here on: a new subscriber sees the watermark and its
                    # buffer move together.
                    self._deliver(page)
                    self.delivered = page[-1].seq
                    if len(page) < REPLAY_PAGE:
                        break
            except Exception:
                log.exception("reading the change stream failed; retrying")
                await asyncio.sleep(0.5)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_subscribers(self) -> None:
        """End every open stream, so that a server shutting down need not wait for them."""
        for sub in list(self._subscribers):
            sub.close("shutdown")
        self._subscribers.clear()

    async def stop(self) -> None:
        self.close_subscribers()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Outbox]:
        """A database transaction whose published messages go out after it commits."""
        if self.cluster is not None:
            async with self.db.transaction() as tx:
                shared = Outbox(tx)
                yield shared
                if shared.pending:
                    await self._write_shared(shared, self.cluster)
            if shared.messages:
                self._poke.set()
            return
        box: Outbox | None = None
        committing = False
        try:
            async with self.db.transaction() as tx:
                box = Outbox(tx)
                yield box
                if box.pending:
                    await self._write(box)
                committing = True
        except BaseException:
            if box is not None and box.messages:
                if committing:
                    # The commit failed or was interrupted: it may still have happened.
                    self._spawn(self._verify(box.messages), "stream-verify")
                else:
                    self._resolve(box.messages, committed=False)
            raise
        if box.messages and self._resolve(box.messages, committed=True):
            # Let the woken subscribers write before this request's own response goes out.
            await asyncio.sleep(0)

    async def _write(self, box: Outbox) -> None:
        # Allocated without an await, so no other task sees the counter between the
        # allocation and the registration as in flight.
        first = self._next
        self._next += len(box.pending)
        self._inflight.add(first)
        seq = first - 1
        for type_, customer_id, at, payload in box.pending:
            seq += 1
            box.messages.append(Message(seq, type_, customer_id, at, payload))
        box.pending.clear()
        await self._insert(box)

    async def _insert(self, box: Outbox) -> None:
        for start in range(0, len(box.messages), _ROWS_PER_INSERT):
            chunk = box.messages[start:start + _ROWS_PER_INSERT]
            params: list[Any] = []
            for m in chunk:
                params += (m.seq, m.type, m.customer_id, m.at, m.payload.decode())
            await box.execute(
                "INSERT INTO stream_messages (seq, type, customer_id, at, payload) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)),
                params,
            )

    async def _write_shared(self, box: Outbox, cluster: Cluster) -> None:
        from reference_impl.cluster import STREAM_LOCK, STREAM_SEQUENCE

        # Held until commit: no process takes a higher number before this one is settled.
        await box.execute("SELECT pg_advisory_xact_lock(?, ?)", (STREAM_LOCK, cluster.key))
        count = len(box.pending)
        seq = int(await box.fetch_val(
            f"SELECT setval('{STREAM_SEQUENCE}', nextval('{STREAM_SEQUENCE}') + ? - 1, true)"
            " - ?", (count, count)))
        for type_, customer_id, at, payload in box.pending:
            seq += 1
            box.messages.append(Message(seq, type_, customer_id, at, payload))
        box.pending.clear()
        await self._insert(box)
        await cluster.notify(box, "stream", "")

    def _resolve(self, messages: list[Message], *, committed: bool) -> bool:
        """Settle one transaction's seqs and deliver what no open transaction precedes.

        Returns whether any subscriber was handed a message.
        """
        first = messages[0].seq
        self._inflight.discard(first)
        if committed:
            self._ready[first] = messages
        barrier = min(self._inflight) if self._inflight else self._next
        woke = False
        if self._ready:
            for start in sorted(self._ready):
                if start >= barrier:
                    break
                woke = self._deliver(self._ready.pop(start)) or woke
        self.delivered = barrier - 1
        return woke

    def _deliver(self, messages: list[Message]) -> bool:
        woke = False
        for sub in list(self._subscribers):
            before = len(sub.buffer)
            for msg in messages:
                if not sub.offer(msg):
                    self._subscribers.discard(sub)
                    break
            woke = woke or len(sub.buffer) > before
        return woke

    async def _verify(self, messages: list[Message]) -> None:
        delay = 0.05
        while True:
            try:
                found = await self.db.fetch_val(
                    "SELECT 1 FROM stream_messages WHERE seq = ?", (messages[0].seq,)
                )
            except Exception:
                log.warning("cannot tell yet whether stream seq %d committed", messages[0].seq)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._resolve(messages, committed=found is not None)
            return

    async def _read(self, after: int, upto: int, flt: Filter, limit: int) -> list[Message]:
        sql = (
            "SELECT seq, type, customer_id, at, payload FROM stream_messages "
            "WHERE seq > ? AND seq <= ?"
        )
        params: list[Any] = [after, upto]
        if flt.customer_id is not None:
            sql += " AND customer_id = ?"
            params.append(flt.customer_id)
        if flt.exact is not None:
            sql += f" AND type IN ({', '.join('?' * len(flt.exact))})"
            params += sorted(flt.exact)
        rows = await self.db.fetch_all(sql + " ORDER BY seq LIMIT ?", [*params, limit])
        return [
            Message(int(r["seq"]), r["type"], r["customer_id"], r["at"], r["payload"].encode())
            for r in rows
        ]

    async def oldest_seq(self, last: int) -> int:
        """Lowest seq still served; ``last + 1`` when nothing is retained."""
        low = await self.db.fetch_val("SELECT MIN(seq) FROM stream_messages")
        floor = max(0, last - self.retention) + 1
        return max(floor, int(low) if low is not None else last + 1)

    async def info(self) -> dict[str, int | None]:
        last = self.delivered
        oldest = await self.oldest_seq(last)
        return {
            "last_seq": last,
            "oldest_seq": oldest if oldest <= last else None,
            "retention": self.retention,
        }

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_INTERVAL_S)
            upto = self.delivered - self.retention
            if upto <= self._pruned_upto:
                continue
            try:
                # The newest row stays: after a restart, numbering continues from it.
                await self.db.execute(
                    "DELETE FROM stream_messages WHERE seq <= ? AND seq < "
                    "(SELECT MAX(seq) FROM stream_messages)",
                    (upto,),
                )
            except Exception:
                log.exception("pruning the change stream failed; retrying")
                continue
            self._pruned_upto = upto

    async def events(self, after: int | None, flt: Filter) -> AsyncIterator[bytes]:
        """The SSE body: retained messages after ``after`` (if given), then live ones."""
        sub = Subscriber(flt, self.queue_size)
        self._subscribers.add(sub)
        # Nothing awaited since subscribing: everything up to `last` is committed (replayed
        # from the table), everything after it arrives in the buffer.
        last = self.delivered
        try:
            yield b": subscribed %d\n\n" % last
            if after is not None and after < last:
                oldest = await self.oldest_seq(last)
                if after + 1 < oldest:
                    yield frame(
                        oldest - 1, "stream.gap", None, now_iso(),
                        _enc.encode({"requested_after": after, "oldest_available": oldest}),
                    )
                    after = oldest - 1
                while after < last:
                    page = await self._read(after, last, flt, REPLAY_PAGE)
                    if not page:
                        break
                    chunk = b"".join(m.frame() for m in page if flt.matches(m))
                    if chunk:
                        yield chunk
                    after = page[-1].seq
            sent = last if after is None else max(last, after)
            while sub.closed is None:
                batch = await sub.take(self.heartbeat)
                if batch is None:
                    yield b": ping\n\n"
                    continue
                out = [m.frame() for m in batch if m.seq > sent]
                if out:
                    sent = batch[-1].seq
                    yield b"".join(out)
            if sub.closed == "overflow":
                yield b": disconnected: subscriber too slow; resume with after=%d\n\n" % sent
        except Exception:
            # Headers are sent: ending the stream is all that is left; the client resumes.
            log.exception("change stream subscriber failed")
        finally:
            self._subscribers.discard(sub)

