"""The audit trail: append-only entries chained by SHA-256, queryable, verifiable.

Each entry's ``hash`` is the SHA-256 of the previous entry's hash and the entry's canonical
JSON (sorted keys, no spaces), the first one chained to 64 zeros; changing, removing or
reordering any entry breaks every hash after it. The database refuses UPDATE and DELETE on
``audit_log`` (triggers), and appends are serialised (one write transaction at a time on
SQLite, an advisory lock on PostgreSQL), so seq numbers are gap-free and hashes chain.
Entries name who, what, when and why refused, never the values of personal data.

``python -m reference_impl.audit verify --db URL`` checks a database's chain offline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from reference_impl.db import Database, Executor, Row, open_database
from reference_impl.store import now_iso

GENESIS = "0" * 64
AUDIT_LOCK = 0x63726D04
VERIFY_PAGE = 1_000
_enc = msgspec.json.Encoder(order="sorted")
_dec = msgspec.json.Decoder()
HASHED = ("seq", "at", "actor", "role", "action", "route", "customer_id", "outcome", "reason",
          "details")

_PG_TRIGGERS = (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)
_SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for op in ("UPDATE", "DELETE")
)


@dataclass(slots=True)
class Entry:
    """What happened, before it has a place in the chain."""

    actor: str
    role: str
    action: str
    route: str
    outcome: str = "ok"
    reason: str | None = None
    customer_id: int | None = None
    subjects: Sequence[int] = ()
    details: dict[str, Any] = field(default_factory=dict)


def entry_hash(prev: str, doc: dict[str, Any]) -> str:
    """The chain link of one entry (``doc`` holds the HASHED fields)."""
    body = _enc.encode({k: doc[k] for k in HASHED})
    return hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()


def _doc(row: Row) -> dict[str, Any]:
    out = dict(row)
    details = out["details"]
    out["details"] = _dec.decode(details) if isinstance(details, str | bytes) else details
    return out


class AuditLog:
    """Appends to, reads and verifies the chained audit trail in the service's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        """Install the append-only triggers (idempotent)."""
        if self.db.dialect == "postgresql":
            async with self.db.transaction() as tx:
                await tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))",
                                 (AUDIT_LOCK,))
                for sql in _PG_TRIGGERS:
                    await tx.execute(sql)
        else:
            for sql in _SQLITE_TRIGGERS:
                await self.db.execute(sql)

    async def append(self, tx: Executor, entry: Entry) -> dict[str, Any]:
        """Chain ``entry`` after the newest one, inside the caller's transaction."""
        if self.db.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))",
                             (AUDIT_LOCK,))
        head = await tx.fetch_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        prev = head["hash"] if head is not None else GENESIS
        subjects = sorted({*entry.subjects, *([entry.customer_id] if entry.customer_id else [])})
        details = {**entry.details, "subjects": subjects} if subjects else entry.details
        doc: dict[str, Any] = {
            "seq": int(head["seq"]) + 1 if head is not None else 1, "at": now_iso(),
            "actor": entry.actor, "role": entry.role, "action": entry.action,
            "route": entry.route, "customer_id": entry.customer_id, "outcome": entry.outcome,
            "reason": entry.reason, "details": details,
        }
        doc["prev_hash"], doc["hash"] = prev, entry_hash(prev, doc)
        await tx.execute(
            "INSERT INTO audit_log (seq, at, actor, role, action, route, customer_id, outcome, "
            "reason, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (doc["seq"], doc["at"], doc["actor"], doc["role"], doc["action"], doc["route"],
             doc["customer_id"], doc["outcome"], doc["reason"],
             _enc.encode(details).decode(), prev, doc["hash"]),
        )
        for cid in subjects:
            await tx.execute("INSERT INTO audit_subjects (audit_seq, customer_id) VALUES (?, ?)",
                             (doc["seq"], cid))
        return doc

    async def record(self, entry: Entry) -> dict[str, Any]:
        """Append ``entry`` in a transaction of its own."""
        async with self.db.transaction() as tx:
            return await self.append(tx, entry)

    async def query(
        self, *, customer_id: int | None, action: str | None, actor: str | None,
        outcome: str | None, after: int | None, limit: int,
    ) -> dict[str, Any]:
        """A page of entries in seq order, filtered by subject, action, actor or outcome."""
        clauses = ["a.seq > ?"]
        params: list[Any] = [after or 0]
        join = ""
        if customer_id is not None:
            join = " JOIN audit_subjects s ON s.audit_seq = a.seq AND s.customer_id = ?"
            params.insert(0, customer_id)
        for col, value in (("action", action), ("actor", actor), ("outcome", outcome)):
            if value is not None:
                clauses.append(f"a.{col} = ?")
                params.append(value)
        rows = await self.db.fetch_all(
            f"SELECT a.* FROM audit_log a{join} WHERE {' AND '.join(clauses)} "
            "ORDER BY a.seq LIMIT ?", [*params, limit + 1])
        items = [_doc(r) for r in rows[:limit]]
        return {"items": items, "next_after": items[-1]["seq"] if len(rows) > limit else None,
                "limit": limit}

    async def about(self, ex: Executor, customer_id: int, after: int, limit: int) -> list[Row]:
        """Entries about one customer, for its export."""
        rows = await ex.fetch_all(
            "SELECT a.* FROM audit_log a JOIN audit_subjects s ON s.audit_seq = a.seq "
            "WHERE s.customer_id = ? AND a.seq > ? ORDER BY a.seq LIMIT ?",
            (customer_id, after, limit))
        return [_doc(r) for r in rows]

    async def verify(self) -> dict[str, Any]:
        """Recompute the chain from the first entry; name the first entry that breaks it."""
        prev, expected_seq, count = GENESIS, 1, 0
        while True:
            rows = await self.db.fetch_all(
                "SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (expected_seq, VERIFY_PAGE))
            for row in rows:
                doc = _doc(row)
                problem = None
                if doc["seq"] != expected_seq:
                    problem = f"entry {expected_seq} is missing"
                elif doc["prev_hash"] != prev:
                    problem = f"entry {doc['seq']} does not point at the entry before it"
                elif entry_hash(prev, doc) != doc["hash"]:
                    problem = f"entry {doc['seq']} was changed after it was written"
                if problem is not None:
                    return {"ok": False, "entries": count, "first_bad_seq": expected_seq,
                            "problem": problem, "head": prev}
                prev, expected_seq, count = doc["hash"], expected_seq + 1, count + 1
            if len(rows) < VERIFY_PAGE:
                return {"ok": True, "entries": count, "first_bad_seq": None, "problem": None,
                        "head": prev}


async def _verify_url(url: str) -> dict[str, Any]:
    db = open_database(url)
    await db.connect()
    try:
        return await AuditLog(db).verify()
    finally:
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``verify --db URL``: print the verdict as JSON; exit 0 when the chain holds, else 1."""
    parser = argparse.ArgumentParser(prog="python -m reference_impl.audit")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="Recompute the audit chain of a database.")
    verify.add_argument("--db", required=True, help="Database URL of the reference CRM.")
    args = parser.parse_args(argv)
    result = asyncio.run(_verify_url(args.db))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
