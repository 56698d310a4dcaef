"""Data-subject operations on one customer: consent, export and erasure, each audited.

Export streams NDJSON: a header line, one line per record (``{"section", "record"}``), and
a closing manifest line with the count per section and the SHA-256 of every byte before
it. Sections are read in pages of ``PAGE`` rows, so memory does not grow with history.
Erasure removes the customer and everything about it in one transaction, keeps an audit
entry naming only the customer id and the counts removed, and is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from reference_impl import models as m
from reference_impl.access import Principal, mask
from reference_impl.audit import AuditLog, Entry
from reference_impl.db import Executor, Row
from reference_impl.schema import TABLES_BY_NAME
from reference_impl.store import NotFound, Store, StoreError, now_iso
from reference_impl.stream import StreamHub, publish

if TYPE_CHECKING:
    from reference_impl.sla import SlaEngine

log = logging.getLogger("reference_impl.privacy")

FORMAT = "crmbench.export/1"
PAGE = 500
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class ConsentUpdate(Struct, forbid_unknown_fields=True, kw_only=True):
    """Consent flags to change (omitted ones stay) and why, for the audit trail."""

    consent_profiling: bool | UnsetType = UNSET
    consent_marketing: bool | UnsetType = UNSET
    reason: Annotated[str, Meta(max_length=200, pattern=r"^[^\x00]*$")] | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """Rows of one table about the customer, paged by ``key``."""

    name: str
    table: str
    where: str
    key: str = "id"


# Leads, and the agent runs and SLA instances of the customer's leads, count as its data.
_LEADS = "(SELECT id FROM leads WHERE customer_id = ?)"
SECTIONS = (
    Section("contacts", "contacts", "customer_id = ?"),
    Section("orders", "orders", "customer_id = ?"),
    Section("opportunities", "opportunities", "customer_id = ?"),
    Section("activities", "activities", "customer_id = ?"),
    Section("leads", "leads", "customer_id = ?"),
    Section("events", "events", "customer_id = ?"),
    Section("cdp_events", "cdp_events", "customer_id = ?"),
    Section("agent_runs", "agent_runs", f"(customer_id = ? OR lead_id IN {_LEADS})"),
    Section("sla_instances", "sla_instances",
            f"(customer_id = ? OR (object = 'lead' AND record_id IN {_LEADS}))"),
    Section("pack_records", "pack_records", "customer_id = ?"),
    Section("stream_messages", "stream_messages", "customer_id = ?", "seq"),
)


def present_row(table: str, row: Row) -> Row:
    """A stored row with its booleans and JSON columns decoded."""
    for col in TABLES_BY_NAME[table].columns:
        value = row.get(col.name)
        if value is None:
            continue
        if col.kind == "bool":
            row[col.name] = bool(value)
        elif col.kind == "json" and isinstance(value, str | bytes):
            row[col.name] = _dec.decode(value)
    row.pop("name_key", None)
    return row


def _params(section: Section, cid: int) -> list[Any]:
    return [cid] * section.where.count("?")


class Privacy:
    """Consent, export and erasure over the store, the change stream and the audit log."""

    def __init__(self, store: Store, hub: StreamHub, audit: AuditLog, slas: SlaEngine) -> None:
        self.store, self.hub, self.audit, self.slas = store, hub, audit, slas
        self.db = store.db

    async def consent(self, cid: int) -> dict[str, Any]:
        row = await self.db.fetch_one(
            "SELECT consent_profiling, consent_marketing, updated_at FROM customers "
            "WHERE id = ?", (cid,))
        if row is None:
            raise NotFound("customer", cid)
        profiling, marketing = bool(row["consent_profiling"]), bool(row["consent_marketing"])
        return {"customer_id": cid, "consent_profiling": profiling,
                "consent_marketing": marketing,
                "profiling": "active" if profiling else "stopped",
                "marketing": "allowed" if marketing else "stopped",
                "updated_at": row["updated_at"]}

    async def set_consent(self, who: Principal, route: str, cid: int,
                          body: ConsentUpdate) -> dict[str, Any]:
        """Change consent at once (withdrawn profiling also clears derived tags); audited."""
        before = await self.consent(cid)
        changes = {k: v for k in ("consent_profiling", "consent_marketing")
                   if (v := getattr(body, k)) is not UNSET}
        if not changes:
            raise StoreError(422, "validation_error", "no consent flag given")
        await self.store.update("customers", cid, m.CustomerUpdate(**changes))
        await self.audit.record(Entry(
            who.name, who.role, "consent", route, customer_id=cid,
            details={"changes": {k: [before[k], v] for k, v in changes.items()},
                     "reason": body.reason}))
        return await self.consent(cid)

    async def export_stream(self, who: Principal, route: str,
                            cid: int) -> AsyncIterator[bytes]:
        """Audit the export, then return its body; 404 when nothing about ``cid`` is stored."""
        customer = await self.db.fetch_one("SELECT id FROM customers WHERE id = ?", (cid,))
        if customer is None and not await self._leftovers(cid):
            raise NotFound("customer", cid)
        await self.audit.record(Entry(who.name, who.role, "export", route, customer_id=cid,
                                      details={"format": FORMAT}))
        return self._bundle(who, cid)

    async def _leftovers(self, cid: int) -> bool:
        for section in SECTIONS:
            found = await self.db.fetch_val(
                f"SELECT 1 FROM {section.table} WHERE {section.where} LIMIT 1",
                _params(section, cid))
            if found is not None:
                return True
        return False

    async def _bundle(self, who: Principal, cid: int) -> AsyncIterator[bytes]:
        head = {"format": FORMAT, "customer_id": cid, "generated_at": now_iso(),
                "generated_for": who.name, "masked_classes": sorted(who.policy.masked)}
        line = _enc.encode(head) + b"\n"
        digest = hashlib.sha256(line)
        counts: dict[str, int] = {}
        size = len(line)
        yield line
        async for section, record in self._records(cid):
            line = _enc.encode({"section": section, "record": mask(record, who)}) + b"\n"
            counts[section] = counts.get(section, 0) + 1
            digest.update(line)
            size += len(line)
            yield line
        yield _enc.encode({"manifest": {
            "sections": counts, "records": sum(counts.values()), "bytes": size,
            "sha256": digest.hexdigest(),
            "hashed": "every byte of the bundle before this line"}}) + b"\n"

    async def _records(self, cid: int) -> AsyncIterator[tuple[str, Row]]:
        try:
            customer = await self.store.get("customers", cid)
        except NotFound:
            customer = None
        if customer is not None:
            yield "customer", customer
        profile = await self.db.fetch_one(
            "SELECT * FROM cdp_profiles WHERE customer_id = ?", (cid,))
        if profile is not None:
            profile = present_row("cdp_profiles", profile)
            profile.pop("state", None)
            yield "profile", profile
        for section in SECTIONS:
            async for rows in self._pages(section, cid):
                await self._attach(section.name, rows)
                for row in rows:
                    yield section.name, row
        after = 0
        while True:
            entries = await self.audit.about(self.db, cid, after, PAGE)
            for entry in entries:
                yield "audit", entry
            if len(entries) < PAGE:
                return
            after = int(entries[-1]["seq"])

    async def _pages(self, section: Section, cid: int) -> AsyncIterator[list[Row]]:
        after: Any = 0
        key = section.key
        while True:
            rows = await self.db.fetch_all(
                f"SELECT * FROM {section.table} WHERE {section.where} AND {key} > ? "
                f"ORDER BY {key} LIMIT ?", [*_params(section, cid), after, PAGE])
            if rows:
                after = rows[-1][key]
                yield [present_row(section.table, r) for r in rows]
            if len(rows) < PAGE:
                return

    async def _attach(self, section: str, rows: list[Row]) -> None:
        """Order lines to their orders, stage history to its opportunities."""
        nested = {"orders": ("order_lines", "order_id", "lines", "line_no"),
                  "opportunities": ("opportunity_stage_changes", "opportunity_id",
                                    "stage_changes", "id")}.get(section)
        if nested is None or not rows:
            return
        table, fk, name, order = nested
        marks = ", ".join("?" * len(rows))
        children = await self.db.fetch_all(
            f"SELECT * FROM {table} WHERE {fk} IN ({marks}) ORDER BY {fk}, {order}",
            [r["id"] for r in rows])
        by_parent: dict[int, list[Row]] = {}
        for child in children:
            by_parent.setdefault(int(child[fk]), []).append(child)
        for row in rows:
            row[name] = by_parent.get(int(row["id"]), [])

    async def erase(self, who: Principal, route: str, cid: int) -> dict[str, Any]:
        """Remove ``cid`` everywhere; a repeated erasure answers with the first one's entry."""
        lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
        forget: list[int] = []
        async with self.hub.transaction() as tx:
            found = await tx.fetch_val(f"SELECT id FROM customers WHERE id = ?{lock}", (cid,))
            if found is None:
                return await self._erased_before(tx, cid)
            removed = await self._remove(tx, cid, forget)
            entry = await self.audit.append(tx, Entry(
                who.name, who.role, "erase", route, customer_id=cid,
                details={"removed": removed}))
            # Downstream consumers learn of the erasure; the message holds no personal data.
            publish(tx, "customer.erased", None, {"customer_id": cid,
                                                  "audit_seq": entry["seq"]})
        self.slas.forget_instances(forget)
        return {"customer_id": cid, "erased": True, "already_erased": False,
                "removed": removed, "audit_seq": entry["seq"]}

    async def _erased_before(self, tx: Executor, cid: int) -> dict[str, Any]:
        seq = await tx.fetch_val(
            "SELECT a.seq FROM audit_log a JOIN audit_subjects s ON s.audit_seq = a.seq "
            "WHERE s.customer_id = ? AND a.action = 'erase' AND a.outcome = 'ok' "
            "ORDER BY a.seq LIMIT 1", (cid,))
        if seq is None:
            raise NotFound("customer", cid)
        return {"customer_id": cid, "erased": False, "already_erased": True, "removed": {},
                "audit_seq": int(seq)}

    async def _remove(self, tx: Executor, cid: int, forget: list[int]) -> dict[str, int]:
        """Delete the customer's rows table by table; returns the count per table."""
        removed: dict[str, int] = {}
        counted: list[tuple[str, str]] = [
            ("customer_tags", "customer_id = ?"),
            ("order_lines", "order_id IN (SELECT id FROM orders WHERE customer_id = ?)"),
            ("opportunity_stage_changes",
             "opportunity_id IN (SELECT id FROM opportunities WHERE customer_id = ?)"),
            ("cdp_profiles", "customer_id = ?"),
        ]
        for table, where in counted:
            removed[table] = int(await tx.fetch_val(
                f"SELECT COUNT(*) FROM {table} WHERE {where}", (cid,)))
        sla = next(s for s in SECTIONS if s.name == "sla_instances")
        forget += [int(r["id"]) for r in await tx.fetch_all(
            f"SELECT id FROM sla_instances WHERE {sla.where}", _params(sla, cid))]
        # Children before parents: rows naming the customer's leads go before the leads.
        order = ("agent_runs", "sla_instances", "pack_records", "leads", "contacts", "orders",
                 "opportunities", "activities", "events", "cdp_events")
        by_name = {s.name: s for s in SECTIONS}
        for name in order:
            section = by_name[name]
            removed[name] = await tx.execute(
                f"DELETE FROM {section.table} WHERE {section.where}", _params(section, cid))
        removed["stream_messages"] = await self._forget_stream(tx, cid)
        removed["customers"] = await tx.execute("DELETE FROM customers WHERE id = ?", (cid,))
        return removed

    @staticmethod
    async def _forget_stream(tx: Executor, cid: int) -> int:
        # The newest message stays, emptied: after a restart numbering continues from it.
        gone = await tx.execute(
            "DELETE FROM stream_messages WHERE customer_id = ? AND seq < "
            "(SELECT MAX(seq) FROM stream_messages)", (cid,))
        return gone + await tx.execute(
            "UPDATE stream_messages SET customer_id = NULL, type = 'stream.redacted', "
            "payload = '{}' WHERE customer_id = ?", (cid,))


def verify_bundle(body: bytes) -> dict[str, Any]:
    """Check an export: the manifest's hash, byte and record counts match what precedes it."""
    cut = body.rstrip(b"\n").rfind(b"\n") + 1
    head, last = body[:cut], body[cut:]
    manifest = _dec.decode(last)["manifest"]
    lines = [_dec.decode(line) for line in head.splitlines()]
    counts: dict[str, int] = {}
    for line in lines[1:]:
        counts[line["section"]] = counts.get(line["section"], 0) + 1
    ok = (hashlib.sha256(head).hexdigest() == manifest["sha256"]
          and len(head) == manifest["bytes"] and counts == manifest["sections"])
    return {"ok": ok, "header": lines[0] if lines else None, "manifest": manifest,
            "records": [(line["section"], line["record"]) for line in lines[1:]]}

