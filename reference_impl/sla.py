"""SLAs at three levels (field, process, action), their instances, breach detection, escalation.

Levels: ``field`` (a field of a lead/customer/opportunity/contact is filled within T of the
record's creation), ``process`` (an opportunity reaches ``to_stage`` within T of entering
``from_stage``), ``action`` (``first_contact``: a lead is contacted within T of its creation,
i.e. its assignment: met by an activity logged for the lead's customer or by the lead's status
becoming contacted/qualified/converted; ``proposal``: an opportunity reaches the proposal
stage, or a later one, within T of its creation). Only the 24x7 calendar is supported.
Open instances sit in a deadline heap; a background task wakes at the earliest deadline, and
``POST /clock/advance`` (test clock) runs the same check before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from reference_impl.clock import Clock
from reference_impl.db import Row
from reference_impl.schema import OPPORTUNITY_STAGES, TABLES_BY_NAME
from reference_impl.store import StoreError, now_iso
from reference_impl.stream import StreamHub, publish

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
    calendar: Literal["24x7"] = "24x7"
    escalation: Escalation | None = None


def _bad(message: str, where: str) -> StoreError:
    return StoreError(422, "invalid_sla", message, where)


def validate(sla: SlaCreate) -> None:
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

    def __init__(self, hub: StreamHub, clock: Clock) -> None:
        self.hub = hub
        self.db = hub.db
        self.clock = clock
        self.defs: dict[int, SlaCreate] = {}
        self.open: dict[int, Instance] = {}
        # Writes look instances up by record and by customer, never by scanning them all.
        self.by_record: dict[tuple[str, int], set[int]] = {}
        self.by_customer: dict[int, set[int]] = {}
        self.heap: list[tuple[float, int]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return bool(self.defs)

    async def start(self) -> None:
        for r in await self.db.fetch_all("SELECT id, definition FROM slas"):
            self.defs[int(r["id"])] = msgspec.json.decode(r["definition"], type=SlaCreate)
        for r in await self.db.fetch_all("SELECT * FROM sla_instances WHERE state = 'open'"):
            self._track(Instance(int(r["id"]), int(r["sla_id"]), r["object"],
                                 int(r["record_id"]), r["customer_id"], float(r["started_s"]),
                                 float(r["deadline_s"])))
        self._task = asyncio.create_task(self._loop(), name="sla-checker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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

    async def create(self, sla: SlaCreate) -> dict[str, Any]:
        validate(sla)
        if sla.escalation is not None and sla.escalation.reassign_to is not None:
            found = await self.db.fetch_val("SELECT 1 FROM reps WHERE id = ?",
                                            (sla.escalation.reassign_to,))
            if found is None:
                raise _bad(f"rep {sla.escalation.reassign_to} does not exist",
                           "escalation.reassign_to")
        body = msgspec.json.encode(sla).decode()
        sid = int(await self.db.fetch_val(
            "INSERT INTO slas (definition, created_at) VALUES (?, ?) RETURNING id",
            (body, now_iso())))
        self.defs[sid] = sla
        return self.describe(sid)

    def describe(self, sid: int) -> dict[str, Any]:
        sla = self.defs.get(sid)
        if sla is None:
            raise StoreError(404, "not_found", f"SLA {sid} does not exist")
        return {"id": sid, **msgspec.to_builtins(sla)}

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
        started, deadline = float(r["started_s"]), float(r["deadline_s"])
        if r["state"] == "met":
            status = "met"
        elif r["state"] == "breached":
            status = "red"
        elif now >= started + sla.at_risk_fraction * (deadline - started):
            status = "yellow"
        else:
            status = "green"
        iso = self.clock.iso
        return {
            "id": r["id"], "sla_id": r["sla_id"], "object": r["object"],
            "record_id": r["record_id"], "status": status, "started_at": iso(started),
            "deadline": iso(deadline), "met_at": iso(r["met_s"]) if r["met_s"] else None,
            "breached_at": iso(r["breached_s"]) if r["breached_s"] else None,
            "detected_at": iso(r["detected_s"]) if r["detected_s"] else None,
        }

    async def _start(self, sid: int, obj: str, row: Row, met: bool) -> None:
        sla = self.defs[sid]
        if any(i.sla_id == sid and i.object == obj and i.record_id == row["id"]
               for i in self._for_record(obj, int(row["id"]))):
            return
        now = self.clock.now()
        customer = row["id"] if obj == "customer" else row.get("customer_id")
        iid = int(await self.db.fetch_val(
            "INSERT INTO sla_instances (sla_id, object, record_id, customer_id, started_s, "
            "deadline_s, state, met_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (sid, obj, row["id"], customer, now, now + sla.within_s,
             "met" if met else "open", now if met else None),
        ))
        if not met:
            self._track(Instance(iid, sid, obj, int(row["id"]), customer, now,
                                 now + sla.within_s))

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

    async def _meet(self, insts: list[Instance]) -> None:
        now = self.clock.now()
        for inst in insts:
            if self._untrack(inst.id) is not None:
                await self.db.execute(
                    "UPDATE sla_instances SET state = 'met', met_s = ? WHERE id = ? "
                    "AND state = 'open'", (now, inst.id))

    async def on_record(self, table: str, created: bool, row: Row, changed: set[str],
                        stage: tuple[str | None, str] | None) -> None:
        """Start and meet instances for one created or updated record."""
        obj = next((o for o, t in OBJECT_TABLES.items() if t == table), None)
        if table == "activities" and created and row.get("customer_id") is not None:
            await self._meet([
                self.open[i] for i in self.by_customer.get(row["customer_id"], ())
                if self.open[i].object == "lead"
                and self.defs[self.open[i].sla_id].action == "first_contact"])
            return
        if obj is None:
            return
        mine = self._for_record(obj, int(row["id"])) if not created else []
        for sid, sla in list(self.defs.items()):
            if sla.object != obj:
                continue
            if sla.level == "field":
                filled = row.get(sla.field or "") not in (None, "")
                if created:
                    await self._start(sid, obj, row, filled)
                elif filled:
                    await self._meet([i for i in mine if i.sla_id == sid])
            elif sla.level == "process":
                if stage is not None and stage[1] == sla.to_stage:
                    await self._meet([i for i in mine if i.sla_id == sid])
                if stage is not None and stage[1] == sla.from_stage:
                    await self._start(sid, obj, row, False)
            elif sla.action == "first_contact":
                if created:
                    await self._start(sid, obj, row, row.get("status") in CONTACTED)
                elif row.get("status") in CONTACTED:
                    await self._meet([i for i in mine if i.sla_id == sid])
            elif sla.action == "proposal":
                if created:
                    await self._start(sid, obj, row, row.get("stage") in PROPOSAL_OR_LATER)
                elif stage is not None and stage[1] in PROPOSAL_OR_LATER:
                    await self._meet([i for i in mine if i.sla_id == sid])

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
        await tx.execute(
            "UPDATE sla_instances SET state = 'breached', breached_s = ?, detected_s = ? "
            "WHERE id = ?", (inst.deadline, now, inst.id))
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
