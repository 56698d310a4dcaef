"""Domain operations of the reference CRM over any :class:`~reference_impl.db.Database`.

Every multi-row write runs in one transaction: it writes everything or nothing.
References are checked inside the transaction so a dangling id is reported by field name.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec
from msgspec import Struct

from reference_impl import models as m
from reference_impl.db import Database, Executor, IntegrityViolation, Row
from reference_impl.schema import NAME_KEY_PREFIX, OPEN_STAGES, TABLES_BY_NAME, Dialect, Kind


class StoreError(Exception):
    """An expected refusal, mapped to a 4xx response by the API."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class NotFound(StoreError):
    def __init__(self, entity: str, id_: int) -> None:
        super().__init__(404, "not_found", f"{entity} {id_} does not exist")


def now_iso() -> str:
    # isoformat is the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ") for this century, and
    # a third cheaper on every write.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def iso_utc(value: dt.datetime) -> str:
    """A datetime as the stored ISO-8601 UTC text (naive ones are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Entity:
    """How one API resource maps to its table."""

    name: str
    singular: str
    table: str
    create: type[Struct]
    update: type[Struct]
    references: dict[str, str]
    filters: dict[str, str] = field(default_factory=dict)
    immutable: frozenset[str] = frozenset()

    @cached_property
    def kinds(self) -> dict[str, Kind]:
        return {c.name: c.kind for c in TABLES_BY_NAME[self.table].columns}

    @cached_property
    def bools(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.kinds.items() if v == "bool")

    @cached_property
    def jsons(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.kinds.items() if v == "json")


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "customers", "customer", "customers", m.CustomerCreate, m.CustomerUpdate,
            {"region_id": "regions", "owner_rep_id": "reps"},
        ),
        Entity(
            "contacts", "contact", "contacts", m.ContactCreate, m.ContactUpdate,
            {"customer_id": "customers"}, {"customer_id": "int"},
        ),
        Entity(
            "leads", "lead", "leads", m.LeadCreate, m.LeadUpdate,
            {"region_id": "regions", "owner_rep_id": "reps", "customer_id": "customers"},
            {"status": "text", "owner_rep_id": "int", "customer_id": "int", "region_id": "int"},
        ),
        Entity(
            "opportunities", "opportunity", "opportunities", m.OpportunityCreate,
            m.OpportunityUpdate, {"customer_id": "customers", "owner_rep_id": "reps"},
            {"customer_id": "int", "stage": "text", "owner_rep_id": "int"},
        ),
        Entity(
            "activities", "activity", "activities", m.ActivityCreate, m.ActivityUpdate,
            {"customer_id": "customers", "contact_id": "contacts", "rep_id": "reps"},
            {"customer_id": "int", "rep_id": "int"},
        ),
    )
}


def _to_db(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, separators=(",", ":"))
    if kind == "ts" and isinstance(value, dt.datetime):
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def present(entity: Entity, row: Row) -> Row:
    """Turn a stored row into its API shape (booleans, JSON columns), in place."""
    for key in entity.bools:
        value = row.get(key)
        if value is not None:
            row[key] = bool(value)
    for key in entity.jsons:
        value = row.get(key)
        if value is not None:
            row[key] = msgspec.json.decode(value)
    row.pop("name_key", None)
    return row


_TAGS = "tags__"
_CUSTOMER_COLS = TABLES_BY_NAME["customers"].column_names
_REGION_COLS = TABLES_BY_NAME["regions"].column_names
_OWNER_COLS = ("id", "name", "email", "phone", "region_id", "role")
_STATS_COLS = ("orders", "lifetime_value", "last_order_at")


def _tags_sql(dialect: Dialect, customer: str) -> str:
    """A scalar subquery: the customer's tags as a JSON array."""
    if dialect == "postgresql":
        return (f"(SELECT json_agg(tag ORDER BY tag) FROM customer_tags "
                f"WHERE customer_id = {customer})")
    return f"(SELECT json_group_array(tag) FROM customer_tags WHERE customer_id = {customer})"


def _tag_list(raw: str | None) -> list[str]:
    # Sorted here: SQLite's json_group_array takes no ORDER BY; tags compare in binary
    # order on both backends.
    return sorted(msgspec.json.decode(raw)) if raw else []


def _customer_sql(dialect: Dialect) -> str:
    return (f"SELECT c.*, {_tags_sql(dialect, 'c.id')} AS {_TAGS} FROM customers c "
            "WHERE c.id = ?")


def _c360_head_sql(dialect: Dialect) -> str:
    cols = ", ".join(
        [f"c.{c}" for c in _CUSTOMER_COLS]
        + [f"{_tags_sql(dialect, 'c.id')} AS {_TAGS}"]
        + [f"r.{c} AS region__{c}" for c in _REGION_COLS]
        + [f"o.{c} AS owner__{c}" for c in _OWNER_COLS]
        + [f"s.{c} AS stats__{c}" for c in _STATS_COLS]
    )
    return (
        f"SELECT {cols} FROM customers c "
        "LEFT JOIN regions r ON r.id = c.region_id "
        "LEFT JOIN reps o ON o.id = c.owner_rep_id "
        "CROSS JOIN (SELECT COUNT(*) AS orders, COALESCE(SUM(total_amount), 0) AS "
        "lifetime_value, MAX(ordered_at) AS last_order_at FROM orders WHERE customer_id = ?) s "
        "WHERE c.id = ?"
    )


def _c360_pg_sql() -> str:
    """customer_360 in one PostgreSQL statement ($1 the customer id, $2 the number of recent
    orders, $3 of recent activities): the head row of ``_c360_head_sql`` plus each list
    as a JSON array of whole rows, in the order and limits of the statements it replaces."""
    head = _c360_head_sql("postgresql").replace("FROM orders WHERE customer_id = ?",
                                                "FROM orders WHERE customer_id = $1")
    head = head.replace("WHERE c.id = ?", "WHERE c.id = $1")
    recent = ("SELECT * FROM orders WHERE customer_id = $1 "
              "ORDER BY ordered_at DESC, id DESC LIMIT $2")
    stages = ", ".join(f"'{stage}'" for stage in OPEN_STAGES)
    lists = {
        "contacts__": "SELECT * FROM contacts WHERE customer_id = $1 ORDER BY id LIMIT 100",
        "orders__": recent,
        "lines__": ("SELECT l.*, p.name AS product_name, p.sku FROM order_lines l "
                    "JOIN products p ON p.id = l.product_id "
                    f"WHERE l.order_id IN (SELECT id FROM ({recent}) o)"),
        "opportunities__": (f"SELECT * FROM opportunities WHERE customer_id = $1 "
                            f"AND stage IN ({stages}) ORDER BY id"),
        "activities__": ("SELECT * FROM activities WHERE customer_id = $1 "
                         "ORDER BY occurred_at DESC, id DESC LIMIT $3"),
    }
    # json_agg keeps the order of its own ORDER BY only: each repeats its list's order.
    order = {
        "contacts__": "x.id", "orders__": "x.ordered_at DESC, x.id DESC",
        "lines__": "x.order_id, x.line_no", "opportunities__": "x.id",
        "activities__": "x.occurred_at DESC, x.id DESC",
    }
    extra = ", ".join(f"(SELECT json_agg(x ORDER BY {order[key]}) FROM ({sql}) x) AS {key}"
                      for key, sql in lists.items())
    select, _, rest = head.partition(" FROM customers c ")
    sql = f"{select}, {extra} FROM customers c {rest}"
    assert "?" not in sql, "numbered parameters only: the executor numbers each ? anew"
    return sql


def _floats(table: str) -> tuple[str, ...]:
    return tuple(c.name for c in TABLES_BY_NAME[table].columns if c.kind == "float")


# The lists of the 360 view, as JSON arrays in the one-statement form (PostgreSQL).
_C360_LISTS = ("contacts__", "orders__", "lines__", "opportunities__", "activities__")
# JSON writes a whole double without its point (5899.0 as 5899): these turn back to float.
_C360_FLOATS = {
    "contacts__": _floats("contacts"), "orders__": _floats("orders"),
    "lines__": _floats("order_lines"), "opportunities__": _floats("opportunities"),
    "activities__": _floats("activities"),
}


def _json_rows(raw: str | None, floats: tuple[str, ...]) -> list[Row]:
    if raw is None:
        return []
    rows: list[Row] = msgspec.json.decode(raw)
    if floats:
        for row in rows:
            for col in floats:
                value = row[col]
                if type(value) is int:
                    row[col] = float(value)
    return rows


@dataclass(frozen=True)
class Page:
    items: list[Row]
    next_after: int | None


@dataclass(frozen=True, slots=True)
class Change:
    """One created or updated record, as write hooks see it inside the transaction."""

    table: str
    created: bool
    row: Row
    stage: tuple[str | None, str] | None


AfterCommit = Callable[[], None]
# A condition on a table's rows (SQL with ``?`` marks) and its parameters.
Scope = tuple[str, list[Any]]
WriteHook = Callable[[Executor, Change], Awaitable[AfterCommit | None]]


class Store:
    """The reference CRM's data operations.

    Write hooks run inside the record's transaction (what they write commits or rolls back
    with the record); the callables they return run once it has committed.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.hooks: list[WriteHook] = []
        self._customer_sql = _customer_sql(db.dialect)
        self._c360_sql = _c360_head_sql(db.dialect)
        self._c360_pg_sql = _c360_pg_sql() if db.dialect == "postgresql" else None

    async def _run_hooks(self, tx: Executor, change: Change) -> list[AfterCommit]:
        done: list[AfterCommit] = []
        for hook in self.hooks:
            after = await hook(tx, change)
            if after is not None:
                done.append(after)
        return done

    async def _check_refs(
        self, tx: Executor, entity: Entity, values: dict[str, Any]
    ) -> None:
        """Refuse the first reference (in the entity's order) to a row that does not exist;
        all of them are looked up in one statement."""
        given = [(fld, table, values[fld]) for fld, table in entity.references.items()
                 if values.get(fld) is not None]
        if not given:
            return
        probes = ", ".join(f"(SELECT 1 FROM {table} WHERE id = ?) AS r{i}"
                           for i, (_, table, _) in enumerate(given))
        found = await tx.fetch_one(f"SELECT {probes}", [ref for _, _, ref in given])
        assert found is not None
        for (fld, table, ref), hit in zip(given, found.values(), strict=True):
            if hit is None:
                raise StoreError(
                    422, "unknown_reference", f"{fld} {ref} does not exist in {table}", fld
                )

    async def _insert(self, tx: Executor, table: str, values: dict[str, Any]) -> Row:
        """Insert one row; the row as stored comes back (RETURNING *)."""
        kinds = {c.name: c.kind for c in TABLES_BY_NAME[table].columns}
        cols = list(values)
        sql = (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            "RETURNING *"
        )
        row = await tx.fetch_one(sql, [_to_db(kinds[c], values[c]) for c in cols])
        assert row is not None
        return row

    async def _get(self, ex: Executor, entity: Entity, id_: int) -> Row:
        row = await ex.fetch_one(f"SELECT * FROM {entity.table} WHERE id = ?", (id_,))
        if row is None:
            raise NotFound(entity.singular, id_)
        return row

    async def _get_customer(self, ex: Executor, id_: int) -> Row:
        """A customer in its API shape with its tags, in one query."""
        row = await ex.fetch_one(self._customer_sql, (id_,))
        if row is None:
            raise NotFound("customer", id_)
        tags = row.pop(_TAGS)
        row = present(ENTITIES["customers"], row)
        row["tags"] = _tag_list(tags)
        return row

    async def get(self, name: str, id_: int) -> Row:
        if name == "customers":
            return await self._get_customer(self.db, id_)
        entity = ENTITIES[name]
        return present(entity, await self._get(self.db, entity, id_))

    async def create(self, name: str, body: Struct) -> Row:
        entity = ENTITIES[name]
        values = {f: getattr(body, f) for f in body.__struct_fields__}
        ts = now_iso()
        tags: list[str] = []
        contacts: list[m.NestedContact] = []
        if name == "customers":
            tags = sorted(set(values.pop("tags")))
            contacts = values.pop("contacts")
            values["name_key"] = values["name"].lower()
        if name == "activities" and values.get("occurred_at") is None:
            values["occurred_at"] = ts
        values["created_at"] = ts
        if "updated_at" in entity.kinds:
            values["updated_at"] = ts
        try:
            async with self.db.transaction() as tx:
                await self._check_refs(tx, entity, values)
                if name == "activities" and values.get("contact_id") is not None:
                    await self._check_contact_owner(tx, values["contact_id"], values["customer_id"])
                stored = await self._insert(tx, entity.table, values)
                new_id = int(stored["id"])
                for tag in tags:
                    await tx.execute(
                        "INSERT INTO customer_tags (customer_id, tag) VALUES (?, ?)", (new_id, tag)
                    )
                for contact in contacts:
                    cvals = {f: getattr(contact, f) for f in contact.__struct_fields__}
                    cvals.update(customer_id=new_id, created_at=ts, updated_at=ts)
                    await self._insert(tx, "contacts", cvals)
                if name == "opportunities":
                    await self._record_stage(tx, new_id, None, values["stage"], ts)
                row = present(entity, stored)
                if name == "customers":
                    row["tags"] = tags
                stage = (None, str(values["stage"])) if name == "opportunities" else None
                done = await self._run_hooks(tx, Change(name, True, row, stage))
        except IntegrityViolation as exc:
            raise StoreError(409, "conflict", f"write refused by a constraint: {exc}") from exc
        for after in done:
            after()
        return row

    async def _check_contact_owner(self, tx: Executor, contact_id: int, customer_id: int) -> None:
        owner = await tx.fetch_val("SELECT customer_id FROM contacts WHERE id = ?", (contact_id,))
        if owner is not None and owner != customer_id:
            raise StoreError(
                422, "invalid_reference",
                f"contact {contact_id} belongs to customer {owner}, not {customer_id}",
                "contact_id",
            )

    async def _record_stage(
        self, tx: Executor, opp_id: int, old: str | None, new: str, ts: str
    ) -> None:
        await tx.execute(
            "INSERT INTO opportunity_stage_changes (opportunity_id, from_stage, to_stage, "
            "changed_at) VALUES (?, ?, ?, ?)",
            (opp_id, old or "", new, ts),
        )

    async def update(self, name: str, id_: int, body: Struct) -> Row:
        entity = ENTITIES[name]
        values = m.changed_fields(body)
        kinds = entity.kinds
        ts = now_iso()
        tags = values.pop("tags", None) if name == "customers" else None
        if name == "customers" and "name" in values:
            values["name_key"] = str(values["name"]).lower()
        try:
            async with self.db.transaction() as tx:
                current = await self._get(tx, entity, id_)
                await self._check_refs(tx, entity, values)
                if name == "activities" and values.get("contact_id") is not None:
                    await self._check_contact_owner(
                        tx, int(values["contact_id"]), int(current["customer_id"])
                    )
                if "updated_at" in kinds and (values or tags is not None):
                    values["updated_at"] = ts
                stored = current
                if values:
                    cols = list(values)
                    updated = await tx.fetch_one(
                        f"UPDATE {entity.table} SET {', '.join(f'{c} = ?' for c in cols)} "
                        "WHERE id = ? RETURNING *",
                        [*(_to_db(kinds[c], values[c]) for c in cols), id_],
                    )
                    assert updated is not None  # the row is there: read above, in this tx
                    stored = updated
                stage: tuple[str | None, str] | None = None
                if name == "opportunities" and values.get("stage", current["stage"]) != current[
                    "stage"
                ]:
                    await self._record_stage(tx, id_, current["stage"], str(values["stage"]), ts)
                    stage = (current["stage"], str(values["stage"]))
                if name == "customers" and values.get("consent_profiling") is False:
                    # Withdrawn consent: what profiling derived so far goes too.
                    await tx.execute(
                        "UPDATE cdp_profiles SET tags = '{}', state = '{}' WHERE customer_id = ?",
                        (id_,),
                    )
                if tags is not None:
                    await tx.execute("DELETE FROM customer_tags WHERE customer_id = ?", (id_,))
                    for tag in sorted(set(tags)):
                        await tx.execute(
                            "INSERT INTO customer_tags (customer_id, tag) VALUES (?, ?)", (id_, tag)
                        )
                if name == "customers":
                    row = await self._get_customer(tx, id_)
                else:
                    row = present(entity, dict(stored))
                done = await self._run_hooks(tx, Change(name, False, row, stage))
        except IntegrityViolation as exc:
            raise StoreError(409, "conflict", f"write refused by a constraint: {exc}") from exc
        for after in done:
            after()
        return row

    async def delete(self, name: str, id_: int) -> None:
        entity = ENTITIES[name]
        try:
            async with self.db.transaction() as tx:
                if await tx.execute(f"DELETE FROM {entity.table} WHERE id = ?", (id_,)) == 0:
                    raise NotFound(entity.singular, id_)
        except IntegrityViolation as exc:
            raise StoreError(
                409, "conflict", f"{entity.singular} {id_} is still referenced: {exc}"
            ) from exc

    async def list_records(
        self, name: str, filters: dict[str, Any], limit: int, after: int | None,
        scope: Scope | None = None,
    ) -> Page:
        """A page in id order; ``scope`` adds a restricted token's condition."""
        entity = ENTITIES[name]
        where, params = self._where(filters, after)
        if scope is not None:
            where = f"{where} AND {scope[0]}" if where else f" WHERE {scope[0]}"
            params += scope[1]
        rows = await self.db.fetch_all(
            f"SELECT * FROM {entity.table}{where} ORDER BY id LIMIT ?", [*params, limit + 1]
        )
        return self._page(entity, rows, limit)

    @staticmethod
    def _where(
        filters: dict[str, Any], after: int | None, alias: str = ""
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in filters.items():
            clauses.append(f"{alias}{key} = ?")
            params.append(value)
        if after is not None:
            clauses.append(f"{alias}id > ?")
            params.append(after)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    @staticmethod
    def _page(entity: Entity, rows: Sequence[Row], limit: int) -> Page:
        items = [present(entity, r) for r in rows[:limit]]
        next_after = int(items[-1]["id"]) if len(rows) > limit else None
        return Page(items, next_after)

    async def search_customers(
        self,
        *,
        name_prefix: str | None,
        region_id: int | None,
        tier: str | None,
        tag: str | None,
        owner_rep_id: int | None,
        limit: int,
        after: int | None,
        scope: Scope | None = None,
    ) -> Page:
        entity = ENTITIES["customers"]
        filters: dict[str, Any] = {}
        if region_id is not None:
            filters["region_id"] = region_id
        if tier is not None:
            filters["tier"] = tier
        if owner_rep_id is not None:
            filters["owner_rep_id"] = owner_rep_id
        where, params = self._where(filters, after, "c.")
        clauses = [where[7:]] if where else []
        if name_prefix:
            key = name_prefix.lower()
            if len(key) >= 2:
                # Implied by the range; it lets the prefix index hand out rows in id order.
                clauses.append(f"{NAME_KEY_PREFIX} = ?")
                params.append(key[:2])
            # A range on the indexed key works as a prefix match on every backend.
            clauses.append("c.name_key >= ? AND c.name_key < ?")
            params += [key, key + "\U0010ffff"]
        if scope is not None:
            clauses.append(scope[0])
            params += scope[1]
        join, order = "", "c.id"
        if tag is not None:
            join = " JOIN customer_tags t ON t.customer_id = c.id AND t.tag = ?"
            params.insert(0, tag)
            # Ordering by the tag index's own column lets the LIMIT stop early instead
            # of sorting every tagged customer.
            order = "t.customer_id"
        sql = (
            f"SELECT c.* FROM customers c{join}"
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + f" ORDER BY {order} LIMIT ?"
        )
        rows = await self.db.fetch_all(sql, [*params, limit + 1])
        return self._page(entity, rows, limit)

    async def customer_360(self, id_: int, orders: int = 10, activities: int = 10) -> Row:
        if self._c360_pg_sql is not None:
            return await self._customer_360_pg(id_, orders, activities)
        return await self._customer_360_parts(id_, orders, activities)

    def _c360_head(self, id_: int, head: Row | None) -> tuple[Row, dict[str, Any]]:
        """The customer in its API shape, and its region, owner and order totals."""
        if head is None:
            raise NotFound("customer", id_)
        region = {c: head.pop(f"region__{c}") for c in _REGION_COLS}
        owner = {c: head.pop(f"owner__{c}") for c in _OWNER_COLS}
        stats = {c: head.pop(f"stats__{c}") for c in _STATS_COLS}
        tags = head.pop(_TAGS)
        customer = present(ENTITIES["customers"], head)
        customer["tags"] = _tag_list(tags)
        return customer, {
            "region": region if region["id"] is not None else None,
            "owner": owner if owner["id"] is not None else None,
            "order_stats": stats,
        }

    async def _customer_360_pg(self, id_: int, orders: int, activities: int) -> Row:
        """The 360 view in one statement: each list comes as a JSON array built by
        PostgreSQL, one round trip instead of six."""
        assert self._c360_pg_sql is not None
        head = await self.db.fetch_one(self._c360_pg_sql, (id_, orders, activities))
        lists = ({key: _json_rows(head.pop(key), _C360_FLOATS[key]) for key in _C360_LISTS}
                 if head is not None else {})
        customer, parts = self._c360_head(id_, head)
        recent = lists["orders__"]
        by_order: dict[int, list[Row]] = {}
        for line in lists["lines__"]:
            by_order.setdefault(int(line["order_id"]), []).append(line)
        for order in recent:
            order["lines"] = by_order.get(int(order["id"]), [])
        return {
            "customer": customer,
            "region": parts["region"],
            "owner": parts["owner"],
            "contacts": lists["contacts__"],
            "recent_orders": recent,
            "order_stats": parts["order_stats"],
            "open_opportunities": lists["opportunities__"],
            "recent_activities": lists["activities__"],
        }

    async def _customer_360_parts(self, id_: int, orders: int, activities: int) -> Row:
        db = self.db
        # The customer, its tags, region, owner and order totals come in one row.
        customer, parts = self._c360_head(id_, await db.fetch_one(self._c360_sql, (id_, id_)))
        contacts = await db.fetch_all(
            "SELECT * FROM contacts WHERE customer_id = ? ORDER BY id LIMIT 100", (id_,)
        )
        recent = await db.fetch_all(
            "SELECT * FROM orders WHERE customer_id = ? ORDER BY ordered_at DESC, id DESC "
            "LIMIT ?",
            (id_, orders),
        )
        if recent:
            marks = ", ".join("?" * len(recent))
            lines = await db.fetch_all(
                f"SELECT l.*, p.name AS product_name, p.sku FROM order_lines l "
                f"JOIN products p ON p.id = l.product_id WHERE l.order_id IN ({marks}) "
                "ORDER BY l.order_id, l.line_no",
                [o["id"] for o in recent],
            )
            by_order: dict[int, list[Row]] = {}
            for line in lines:
                by_order.setdefault(int(line["order_id"]), []).append(line)
            for order in recent:
                order["lines"] = by_order.get(int(order["id"]), [])
        marks = ", ".join("?" * len(OPEN_STAGES))
        opps = await db.fetch_all(
            f"SELECT * FROM opportunities WHERE customer_id = ? AND stage IN ({marks}) "
            "ORDER BY id",
            (id_, *OPEN_STAGES),
        )
        acts = await db.fetch_all(
            "SELECT * FROM activities WHERE customer_id = ? ORDER BY occurred_at DESC, id DESC "
            "LIMIT ?",
            (id_, activities),
        )
        return {
            "customer": customer,
            "region": parts["region"],
            "owner": parts["owner"],
            "contacts": contacts,
            "recent_orders": recent,
            "order_stats": parts["order_stats"],
            "open_opportunities": opps,
            "recent_activities": acts,
        }

    async def keyspace(self) -> dict[str, int]:
        """Highest id of each table workloads draw ids from (0 when empty); index-only, fast."""
        out: dict[str, int] = {}
        for table in ("customers", "opportunities", "reps", "regions", "products", "leads"):
            out[table] = int(await self.db.fetch_val(f"SELECT MAX(id) FROM {table}") or 0)
        return out

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in ("customers", "contacts", "leads", "opportunities", "orders", "activities"):
            out[table] = int(await self.db.fetch_val(f"SELECT COUNT(*) FROM {table}") or 0)
        return out
