"""SLAs at three levels (field, process, action), their instances, breach detection, escalation.

Levels: ``field`` (a field of a lead/customer/opportunity/contact is filled within T of the
record's creation), ``process`` (an opportunity reaches ``to_stage`` within T of entering
``from_stage``), ``action`` (``first_contact``: a lead is contacted within T of its creation,
i.e. its assignment: met by an activity logged for the lead's customer or by the lead's status
becoming contacted/qualified/converted; ``proposal``: an opportunity reaches the proposal
stage, or a later one, within T of its creation). T runs around the clock (``"24x7"``) or
on a business calendar (working hours, weekdays, holidays in a time zone).

Instances start and are met inside the transaction that writes the record (a store write
hook), so a record and its SLA instances commit or roll back together; memory follows once
the transaction has committed. Open instances sit in a deadline heap; a background task
wakes at the earliest deadline, and ``POST /clock/advance`` (test clock) runs the same check
before it answers. A record that meets its SLA after the deadline, before the checker got to
it, is breached, not met.

Served by several processes, writes look open instances up in the database, and only the
process owning the timers keeps the heap: it loads the open instances when it takes over and
hears of those started or met elsewhere by notification. A breach is the conditional update
of an open instance, so each is detected and escalated once whoever checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from reference_impl import calendars
from reference_impl.calendars import BusinessCalendar, CalendarError
from reference_impl.clock import Clock
from reference_impl.cluster import MAX_PAYLOAD, announce, settle
from reference_impl.db import Executor, Row
from reference_impl.schema import OPPORTUNITY_STAGES, TABLES_BY_NAME
from reference_impl.store import AfterCommit, Change, StoreError, now_iso
from reference_impl.stream import StreamHub, publish

if TYPE_CHECKING:
    from reference_impl.cluster import Cluster

log = logging.getLogger("reference_impl.sla")
OBJECT_TABLES = {"lead": "leads", "customer": "customers", "opportunity": "opportunities",
                 "contact": "contacts"}
CONTACTED = frozenset({"contacted", "qualified", "converted"})
PROPOSAL_OR_LATER = frozenset({"proposal", "negotiation", "closed_won"})
Seconds = Annotated[float, Meta(gt=0, le=10 * 365 * 86_400)]


class Escalation(Struct, forbid_unknown_fields=True, kw_only=True):
    notify: Literal["director", "manager", "owner"] | None = None
    reassign_to: Annotated[int, Meta(ge=1)] | None = None


class SlaCreate(Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    level: Literal["field", "process", "action"]
    object: Literal["lead", "customer", "opportunity", "contact"]
    within_s: Seconds
    field: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    action: Literal["first_contact", "proposal"] | None = None
    name: Annotated[str, Meta(max_length=200)] | None = None
    at_risk_fraction: Annotated[float, Meta(gt=0, lt=1)] = 0.8
    calendar: Literal["24x7"] | BusinessCalendar = "24x7"
    escalation: Escalation | None = None


def _bad(message: str, where: str) -> StoreError:
    return StoreError(422, "invalid_sla", message, where)


def deadline(sla: SlaCreate, start: float, seconds: float | None = None) -> float:
    """When ``seconds`` (by default the SLA's T) of the SLA's time have passed since start."""
    span = sla.within_s if seconds is None else seconds
    if isinstance(sla.calendar, BusinessCalendar):
        return calendars.add(sla.calendar, start, span)
    return start + span


def validate(sla: SlaCreate, now: float) -> None:
    if isinstance(sla.calendar, BusinessCalendar):
        try:
            calendars.validate(sla.calendar)
            deadline(sla, now)
        except CalendarError as exc:
            raise _bad(str(exc), exc.field) from None
    if sla.level == "field":
        cols = {c.name: c for c in TABLES_BY_NAME[OBJECT_TABLES[sla.object]].columns}
        if sla.field not in cols or not cols[sla.field].nullable:
            raise _bad(f"{sla.object} has no optional field {sla.field!r}", "field")
    elif sla.level == "process":
        if sla.object != "opportunity":
            raise _bad("process SLAs are on opportunities", "object")
        for name in ("from_stage", "to_stage"):
            if getattr(sla, name) not in OPPORTUNITY_STAGES:
                raise _bad(f"{name} must be one of {', '.join(OPPORTUNITY_STAGES)}", name)
        if sla.from_stage == sla.to_stage:
            raise _bad("from_stage and to_stage are the same", "to_stage")
    else:
        wanted = {"first_contact": "lead", "proposal": "opportunity"}.get(sla.action or "")
        if wanted is None:
            raise _bad("action must be first_contact or proposal", "action")
        if sla.object != wanted:
            raise _bad(f"{sla.action} SLAs are on {wanted}s", "object")


@dataclass(slots=True)
class Instance:
    id: int
    sla_id: int
    object: str
    record_id: int
    customer_id: int | None
    started: float
    deadline: float


class SlaEngine:
    """Definitions, open instances (in memory and stored), the deadline heap."""

    # Entries of met instances stay in the heap until this many have piled up (and half).
    COMPACT_AFTER = 1_024

    def __init__(self, hub: StreamHub, clock: Clock) -> None:
        self.hub = hub
        self.db = hub.db
        self.clock = clock
        self.defs: dict[int, SlaCreate] = {}
        # SLAs of disabled packs: they start no instances; those already open run on.
        self.inactive: set[int] = set()
        self.owner: dict[int, tuple[str, str]] = {}
        self.open: dict[int, Instance] = {}
        # Writes look instances up by record and by customer, never by scanning them all.
        self.by_record: dict[tuple[str, int], set[int]] = {}
        self.by_customer: dict[int, set[int]] = {}
        self.heap: list[tuple[float, int]] = []
        # Heap entries of instances met before their deadline, dropped in bulk now and then.
        self._stale = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Set when other processes serve the same database (see the module docstring).
        self.cluster: Cluster | None = None
        self._tracking = False

    @property
    def listening(self) -> bool:
        return bool(self.defs)

    async def start(self) -> None:
        if self.cluster is not None:
            # Before loading: a change announced meanwhile is then read again, never lost.
            self.cluster.reloaders["sla"] = self.reload
            self.cluster.on_sla = self._heard
            await self.reload("*")
            self.cluster.owner_hooks.append(self.own)
            if self.cluster.owner:
                await self.own(True)
            return
        await self.reload("*")
        await self._load_open()
        self._task = asyncio.create_task(self._loop(), name="sla-checker")

    async def reload(self, key: str) -> None:
        """Read one SLA definition (or all, ``"*"``) from the database."""
        rows = await self.db.fetch_all(
            "SELECT * FROM slas" + ("" if key == "*" else " WHERE id = ?"),
            () if key == "*" else (int(key),))
        for r in rows:
            sid = int(r["id"])
            self.defs[sid] = msgspec.json.decode(r["definition"], type=SlaCreate)
            if r["active"]:
                self.inactive.discard(sid)
            else:
                self.inactive.add(sid)
            if r["pack"] is not None:
                self.owner[sid] = (r["pack"], r["pack_key"])

    async def _load_open(self) -> None:
        for r in await self.db.fetch_all("SELECT * FROM sla_instances WHERE state = 'open'"):
            if int(r["id"]) not in self.open:
                self._track(_instance(r))

    async def own(self, owned: bool) -> None:
        """Take over (or hand back) the deadline heap and its checker."""
        await self.stop()
        self._tracking = owned
        self.open, self.by_record, self.by_customer, self.heap = {}, {}, {}, []
        self._stale = 0
        if owned:
            await self._load_open()
            self._task = asyncio.create_task(self._loop(), name="sla-checker")

    def _heard(self, payload: str) -> None:
        """Instances started or met by any process, as the timer owner hears of them."""
        if not self._tracking:
            return
        news = msgspec.json.decode(payload)
        if news.get("reload"):
            task = asyncio.create_task(self._load_open())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return
        for iid, sid, obj, rid, cid, started, due in news["s"]:
            if iid not in self.open:
                self._track(Instance(iid, sid, obj, rid, cid, started, due))
        self._forget(news["m"])

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _track(self, inst: Instance) -> None:
        self.open[inst.id] = inst
        self.by_record.setdefault((inst.object, inst.record_id), set()).add(inst.id)
        if inst.customer_id is not None:
            self.by_customer.setdefault(inst.customer_id, set()).add(inst.id)
        if not self.heap or inst.deadline < self.heap[0][0]:
            self._wake.set()
        heapq.heappush(self.heap, (inst.deadline, inst.id))

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            wait = self.heap[0][0] - self.clock.now() if self.heap else 3_600.0
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            try:
                await self.check()
            except Exception:
                log.exception("SLA check failed; retrying")
                await asyncio.sleep(0.5)

    def clock_moved(self) -> None:
        """Wake the checker: its sleep to the earliest deadline was measured on the old time."""
        self._wake.set()

    async def create(self, sla: SlaCreate, pack: tuple[str, str] | None = None
                     ) -> dict[str, Any]:
        """Define an SLA; ``pack`` is (pack, key) for an SLA a pack brings."""
        validate(sla, self.clock.now())
        if sla.escalation is not None and sla.escalation.reassign_to is not None:
            found = await self.db.fetch_val("SELECT 1 FROM reps WHERE id = ?",
                                            (sla.escalation.reassign_to,))
            if found is None:
                raise _bad(f"rep {sla.escalation.reassign_to} does not exist",
                           "escalation.reassign_to")
        body = msgspec.json.encode(sla).decode()
        async with self.db.transaction() as tx:
            sid = int(await tx.fetch_val(
                "INSERT INTO slas (definition, created_at, pack, pack_key, active) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (body, now_iso(), pack[0] if pack else None, pack[1] if pack else None, True)))
            token = await announce(self.cluster, tx, "sla", sid)
        self.defs[sid] = sla
        if pack is not None:
            self.owner[sid] = pack
        await settle(self.cluster, token)
        return self.describe(sid)

    async def set_active(self, sid: int, active: bool) -> None:
        self.describe(sid)
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE slas SET active = ? WHERE id = ?", (active, sid))
            token = await announce(self.cluster, tx, "sla", sid)
        await settle(self.cluster, token)
        if active:
            self.inactive.discard(sid)
        else:
            self.inactive.add(sid)

    def describe(self, sid: int) -> dict[str, Any]:
        sla = self.defs.get(sid)
        if sla is None:
            raise StoreError(404, "not_found", f"SLA {sid} does not exist")
        owner = self.owner.get(sid)
        return {"id": sid, **msgspec.to_builtins(sla), "active": sid not in self.inactive,
                "pack": owner[0] if owner else None}

    async def instances(self, sid: int, limit: int, after: int | None) -> dict[str, Any]:
        sla = self.defs.get(sid)
        if sla is None:
            raise StoreError(404, "not_found", f"SLA {sid} does not exist")
        rows = await self.db.fetch_all(
            "SELECT * FROM sla_instances WHERE sla_id = ? AND id > ? ORDER BY id LIMIT ?",
            (sid, after or 0, limit + 1),
        )
        now = self.clock.now()
        items = [self._present(sla, r, now) for r in rows[:limit]]
        return {"items": items, "next_after": items[-1]["id"] if len(rows) > limit else None,
                "limit": limit}

    def _present(self, sla: SlaCreate, r: Row, now: float) -> dict[str, Any]:
        started, due = float(r["started_s"]), float(r["deadline_s"])
        if r["state"] == "met":
            status = "met"
        elif r["state"] == "breached":
            status = "red"
        elif now >= deadline(sla, started, sla.at_risk_fraction * sla.within_s):
            status = "yellow"
        else:
            status = "green"
        iso = self.clock.iso
        return {
            "id": r["id"], "sla_id": r["sla_id"], "object": r["object"],
            "record_id": r["record_id"], "status": status, "started_at": iso(started),
            "deadline": iso(due), "met_at": iso(r["met_s"]) if r["met_s"] else None,
            "breached_at": iso(r["breached_s"]) if r["breached_s"] else None,
            "detected_at": iso(r["detected_s"]) if r["detected_s"] else None,
        }

    async def _start(self, tx: Executor, sid: int, obj: str, row: Row, met: bool,
                     mine: list[Instance], out: list[Instance]) -> None:
        if any(i.sla_id == sid for i in mine):
            return
        sla = self.defs[sid]
        now = self.clock.now()
        due = deadline(sla, now)
        customer = row["id"] if obj == "customer" else row.get("customer_id")
        iid = int(await tx.fetch_val(
            "INSERT INTO sla_instances (sla_id, object, record_id, customer_id, started_s, "
            "deadline_s, state, met_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (sid, obj, row["id"], customer, now, due, "met" if met else "open",
             now if met else None),
        ))
        if not met:
            out.append(Instance(iid, sid, obj, int(row["id"]), customer, now, due))

    async def _open_for(self, tx: Executor, obj: str, record_id: int) -> list[Instance]:
        if self.cluster is None:
            return self._for_record(obj, record_id)
        rows = await tx.fetch_all("SELECT * FROM sla_instances WHERE object = ? AND "
                                  "record_id = ? AND state = 'open'", (obj, record_id))
        return [_instance(r) for r in rows]

    async def _open_leads_of(self, tx: Executor, customer_id: int) -> list[Instance]:
        if self.cluster is None:
            return [self.open[i] for i in self.by_customer.get(customer_id, ())
                    if self.open[i].object == "lead"]
        rows = await tx.fetch_all("SELECT * FROM sla_instances WHERE customer_id = ? AND "
                                  "state = 'open' AND object = 'lead'", (customer_id,))
        return [_instance(r) for r in rows]

    def _for_record(self, obj: str, record_id: int) -> list[Instance]:
        ids = self.by_record.get((obj, record_id), ())
        return [self.open[i] for i in ids if i in self.open]

    def _untrack(self, iid: int) -> Instance | None:
        inst = self.open.pop(iid, None)
        if inst is not None:
            ids = self.by_record.get((inst.object, inst.record_id))
            if ids is not None:
                ids.discard(iid)
                if not ids:
                    del self.by_record[(inst.object, inst.record_id)]
            if inst.customer_id is not None:
                cids = self.by_customer.get(inst.customer_id)
                if cids is not None:
                    cids.discard(iid)
                    if not cids:
                        del self.by_customer[inst.customer_id]
        return inst

    async def _meet(self, tx: Executor, insts: list[Instance], out: list[int]) -> None:
        now = self.clock.now()
        for inst in insts:
            # Past its deadline the instance is the checker's to breach, even if not yet seen.
            if inst.deadline > now and await tx.execute(
                    "UPDATE sla_instances SET state = 'met', met_s = ? WHERE id = ? "
                    "AND state = 'open'", (now, inst.id)):
                out.append(inst.id)

    async def on_change(self, tx: Executor, change: Change) -> AfterCommit | None:
        """Store write hook: start and meet instances in the record's transaction."""
        if not self.defs:
            return None
        started: list[Instance] = []
        met: list[int] = []
        await self._on_record(tx, change, started, met)
        if not (started or met):
            return None
        if self.cluster is not None:
            news = msgspec.json.encode({
                "s": [[i.id, i.sla_id, i.object, i.record_id, i.customer_id, i.started,
                       i.deadline] for i in started], "m": met}).decode()
            if len(news) > MAX_PAYLOAD:
                news = '{"reload": true}'
            await self.cluster.notify(tx, "sla", news)
            return None

        def follow() -> None:
            for inst in started:
                self._track(inst)
            self._forget(met)

        return follow

    def forget_instances(self, ids: list[int]) -> None:
        """Drop instances whose rows were deleted (an erased customer's) from the timers."""
        self._forget(ids)

    def _forget(self, met: list[int]) -> None:
        for iid in met:
            if self._untrack(iid) is not None:
                self._stale += 1
        if self._stale > self.COMPACT_AFTER and self._stale * 2 > len(self.heap):
            self.heap = [(i.deadline, i.id) for i in self.open.values()]
            heapq.heapify(self.heap)
            self._stale = 0

    async def _on_record(self, tx: Executor, change: Change, started: list[Instance],
                         met: list[int]) -> None:
        table, created, row, stage = change.table, change.created, change.row, change.stage
        obj = next((o for o, t in OBJECT_TABLES.items() if t == table), None)
        if table == "activities" and created and row.get("customer_id") is not None:
            await self._meet(tx, [
                i for i in await self._open_leads_of(tx, row["customer_id"])
                if i.sla_id in self.defs and self.defs[i.sla_id].action == "first_contact"], met)
            return
        if obj is None:
            return
        mine = await self._open_for(tx, obj, int(row["id"])) if not created else []
        for sid, sla in list(self.defs.items()):
            if sla.object != obj or sid in self.inactive:
                continue
            if sla.level == "field":
                filled = row.get(sla.field or "") not in (None, "")
                if created:
                    await self._start(tx, sid, obj, row, filled, mine, started)
                elif filled:
                    await self._meet(tx, [i for i in mine if i.sla_id == sid], met)
            elif sla.level == "process":
                if stage is not None and stage[1] == sla.to_stage:
                    await self._meet(tx, [i for i in mine if i.sla_id == sid], met)
                if stage is not None and stage[1] == sla.from_stage:
                    await self._start(tx, sid, obj, row, False, mine, started)
            elif sla.action == "first_contact":
                if created:
                    await self._start(tx, sid, obj, row, row.get("status") in CONTACTED,
                                      mine, started)
                elif row.get("status") in CONTACTED:
                    await self._meet(tx, [i for i in mine if i.sla_id == sid], met)
            elif sla.action == "proposal":
                if created:
                    await self._start(tx, sid, obj, row,
                                      row.get("stage") in PROPOSAL_OR_LATER, mine, started)
                elif stage is not None and stage[1] in PROPOSAL_OR_LATER:
                    await self._meet(tx, [i for i in mine if i.sla_id == sid], met)

    async def check(self) -> int:
        """Breach every open instance whose deadline has passed; returns how many."""
        async with self._lock:
            now = self.clock.now()
            due: list[Instance] = []
            while self.heap and self.heap[0][0] <= now:
                _deadline, iid = heapq.heappop(self.heap)
                inst = self._untrack(iid)
                if inst is not None:
                    due.append(inst)
            if not due:
                return 0
            async with self.hub.transaction() as tx:
                for inst in due:
                    await self._breach(tx, inst, now)
            return len(due)

    async def _breach(self, tx: Any, inst: Instance, now: float) -> None:
        sla = self.defs[inst.sla_id]
        if not await tx.execute(
                "UPDATE sla_instances SET state = 'breached', breached_s = ?, detected_s = ? "
                "WHERE id = ? AND state = 'open'", (inst.deadline, now, inst.id)):
            return  # met by a write that committed while this check waited for the lock
        publish(tx, "sla.breached", inst.customer_id, {
            "sla_id": inst.sla_id, "instance_id": inst.id, "level": sla.level,
            "object": inst.object, "record_id": inst.record_id,
            "deadline": self.clock.iso(inst.deadline), "detected_at": self.clock.iso(now),
            "lag_ms": round((now - inst.deadline) * 1000, 3),
        })
        esc = sla.escalation
        if esc is None:
            return
        table = OBJECT_TABLES[inst.object]
        record = await tx.fetch_one(f"SELECT * FROM {table} WHERE id = ?", (inst.record_id,))
        if record is None:
            return
        out: dict[str, Any] = {"sla_id": inst.sla_id, "instance_id": inst.id,
                               "object": inst.object, "record_id": inst.record_id,
                               "notified": None, "reassigned_to": None}
        if esc.notify is not None:
            out["notified"] = {"role": esc.notify,
                               "rep_id": await self._recipient(tx, esc.notify, record,
                                                               inst)}
        if esc.reassign_to is not None and "owner_rep_id" in record:
            await tx.execute(f"UPDATE {table} SET owner_rep_id = ?, updated_at = ? WHERE id = ?",
                             (esc.reassign_to, now_iso(), inst.record_id))
            out["reassigned_to"] = esc.reassign_to
        publish(tx, "sla.escalated", inst.customer_id, out)

    async def _recipient(self, tx: Any, role: str, record: Row, inst: Instance) -> int | None:
        if role == "owner":
            owner = record.get("owner_rep_id")
            return int(owner) if owner is not None else None
        region = record.get("region_id")
        if region is None and inst.customer_id is not None:
            region = await tx.fetch_val("SELECT region_id FROM customers WHERE id = ?",
                                        (inst.customer_id,))
        found = await tx.fetch_val(
            "SELECT id FROM reps WHERE region_id = ? AND role = ? ORDER BY id LIMIT 1",
            (region, role))
        return int(found) if found is not None else None


def _instance(r: Row) -> Instance:
    return Instance(int(r["id"]), int(r["sla_id"]), r["object"], int(r["record_id"]),
                    r["customer_id"], float(r["started_s"]), float(r["deadline_s"]))
