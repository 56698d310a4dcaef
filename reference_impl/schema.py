"""Relational schema of the reference CRM, shared by the fixture generator and the loader.

Each table lists its columns in storage order; fixture Parquet files carry exactly these
columns, in this order. Timestamps are ISO-8601 UTC strings (``2025-03-01T12:00:00Z``),
which sort correctly as text on every backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["id", "int", "float", "text", "bool", "ts", "json"]
Dialect = Literal["sqlite", "postgresql"]

TIERS = ("strategic", "vip", "key", "normal")
OPPORTUNITY_STAGES = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
OPEN_STAGES = OPPORTUNITY_STAGES[:4]
# The same expression in the index and in queries, so both backends match them up.
NAME_KEY_PREFIX = "substr(name_key, 1, 2)"
LEAD_STATUSES = ("open", "contacted", "qualified", "disqualified", "converted")
ACTIVITY_TYPES = ("call", "email", "meeting", "note", "visit")
EVENT_TYPES = ("page_view", "email_open", "download", "support_call", "pricing_view", "purchase")
CDP_EVENT_TYPES = (*EVENT_TYPES, "webinar", "chat")
AGENT_RUN_STATUSES = ("running", "completed", "escalated", "failed")
WORKFLOW_RUN_STATUSES = ("running", "completed", "failed", "timed_out")
REP_ROLES = ("rep", "manager", "director")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    references: str | None = None
    on_delete: Literal["cascade", "set null"] | None = None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ("id",)
    indexes: tuple[tuple[str, ...], ...] = ()
    fixture: bool = True
    unique: tuple[tuple[str, ...], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def has_identity(self) -> bool:
        return self.primary_key == ("id",) and self.columns[0].kind == "id"


def _c(name: str, kind: Kind, nullable: bool = False, ref: str | None = None,
       on_delete: Literal["cascade", "set null"] | None = None) -> Column:
    return Column(name, kind, nullable, ref, on_delete)


TABLES: tuple[Table, ...] = (
    Table("regions", (_c("id", "id"), _c("name", "text"), _c("country", "text"))),
    Table(
        "reps",
        (
            _c("id", "id"), _c("name", "text"), _c("email", "text"), _c("phone", "text"),
            _c("region_id", "int", ref="regions"), _c("role", "text"),
        ),
        indexes=(("region_id",),),
    ),
    Table(
        "products",
        (
            _c("id", "id"), _c("sku", "text"), _c("name", "text"), _c("category", "text"),
            _c("unit_price", "float"),
        ),
    ),
    Table(
        "inventory",
        (
            _c("product_id", "int", ref="products"), _c("region_id", "int", ref="regions"),
            _c("quantity", "int"),
        ),
        primary_key=("product_id", "region_id"),
    ),
    Table(
        "customers",
        (
            _c("id", "id"), _c("name", "text"), _c("name_key", "text"), _c("industry", "text"),
            _c("region_id", "int", ref="regions"), _c("tier", "text"),
            _c("owner_rep_id", "int", ref="reps"), _c("employees", "int"),
            _c("annual_revenue", "float"), _c("website", "text", nullable=True),
            _c("consent_marketing", "bool"), _c("consent_profiling", "bool"),
            _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        # Name-prefix search pages by id: within one two-letter prefix this index is in id
        # order already, so a page reads as many entries as it returns, not every match.
        # Filters page by id too: equal keys then id, so a page stops after LIMIT entries.
        indexes=(("name_key",), (NAME_KEY_PREFIX, "id", "name_key"),
                 ("region_id", "tier", "id"), ("tier",), ("owner_rep_id",)),
    ),
    Table(
        "customer_tags",
        (_c("customer_id", "int", ref="customers", on_delete="cascade"), _c("tag", "text")),
        primary_key=("customer_id", "tag"),
        indexes=(("tag", "customer_id"),),
    ),
    Table(
        "contacts",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("first_name", "text"), _c("last_name", "text"), _c("title", "text", nullable=True),
            _c("email", "text", nullable=True), _c("phone", "text", nullable=True),
            _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        indexes=(("customer_id",),),
    ),
    Table(
        "orders",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("ordered_at", "ts"), _c("status", "text"), _c("currency", "text"),
            _c("total_amount", "float"),
        ),
        # Ordered as the customer-360's recent orders, and covering its order totals.
        indexes=(("customer_id", "ordered_at", "id", "total_amount"),),
    ),
    Table(
        "order_lines",
        (
            _c("order_id", "int", ref="orders", on_delete="cascade"), _c("line_no", "int"),
            _c("product_id", "int", ref="products"), _c("quantity", "int"),
            _c("unit_price", "float"), _c("amount", "float"),
        ),
        primary_key=("order_id", "line_no"),
    ),
    Table(
        "opportunities",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("owner_rep_id", "int", ref="reps"), _c("name", "text"), _c("stage", "text"),
            _c("amount", "float"), _c("expected_close", "text"),
            _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        indexes=(("customer_id",), ("stage",)),
    ),
    Table(
        "opportunity_stage_changes",
        (
            _c("id", "id"),
            _c("opportunity_id", "int", ref="opportunities", on_delete="cascade"),
            _c("from_stage", "text"), _c("to_stage", "text"), _c("changed_at", "ts"),
        ),
        indexes=(("opportunity_id",),),
        fixture=False,
    ),
    Table(
        "leads",
        (
            _c("id", "id"),
            _c("customer_id", "int", nullable=True, ref="customers", on_delete="set null"),
            _c("company_name", "text"), _c("contact_name", "text"),
            _c("email", "text", nullable=True), _c("phone", "text", nullable=True),
            _c("source", "text"), _c("status", "text"), _c("region_id", "int", ref="regions"),
            _c("owner_rep_id", "int", nullable=True, ref="reps"),
            _c("product_interest", "json"), _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        # A rep's leads of one status page by id straight off the last index.
        indexes=(("status",), ("customer_id",), ("owner_rep_id", "status", "id")),
    ),
    Table(
        "activities",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("contact_id", "int", nullable=True, ref="contacts", on_delete="set null"),
            _c("rep_id", "int", nullable=True, ref="reps"), _c("type", "text"),
            _c("subject", "text"), _c("occurred_at", "ts"), _c("created_at", "ts"),
        ),
        indexes=(("customer_id", "occurred_at"),),
    ),
    Table(
        "events",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("type", "text"), _c("occurred_at", "ts"), _c("properties", "json"),
        ),
        indexes=(("customer_id", "occurred_at"),),
    ),
    # Customer-data events pushed through POST /events (the fixture ``events`` stay as is).
    Table(
        "cdp_events",
        (
            _c("id", "id"), _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("type", "text"), _c("occurred_at", "ts"), _c("received_at", "ts"),
            _c("idempotency_key", "text"), _c("properties", "json"),
        ),
        indexes=(("customer_id", "id"),),
        unique=(("idempotency_key",),),
        fixture=False,
    ),
    Table(
        "cdp_profiles",
        (
            _c("customer_id", "int", ref="customers", on_delete="cascade"),
            _c("counters", "json"), _c("tags", "json"), _c("state", "json"),
            _c("updated_at", "ts"),
        ),
        primary_key=("customer_id",),
        fixture=False,
    ),
    # The change stream's outbox; ``seq`` is handed out by the service (see stream.py).
    Table(
        "stream_messages",
        (
            _c("seq", "int"), _c("type", "text"), _c("customer_id", "int", nullable=True),
            _c("at", "ts"), _c("payload", "json"),
        ),
        primary_key=("seq",),
        fixture=False,
    ),
    Table(
        "agent_runs",
        (
            _c("id", "id"), _c("agent", "text"), _c("lead_id", "int"),
            _c("customer_id", "int", nullable=True), _c("owner_rep_id", "int", nullable=True),
            _c("status", "text"), _c("quantity", "int", nullable=True),
            _c("started_at", "ts"), _c("finished_at", "ts", nullable=True),
            _c("duration_ms", "float", nullable=True), _c("escalation_reasons", "json"),
            _c("quote", "json", nullable=True), _c("decision_log", "json"),
            _c("error", "text", nullable=True),
        ),
        # By customer: a customer's export and erasure find its runs without a scan.
        indexes=(("status", "id"), ("customer_id",), ("lead_id",)),
        fixture=False,
    ),
    Table(
        "agent_config",
        (_c("agent", "text"), _c("config", "json"), _c("updated_at", "ts")),
        primary_key=("agent",),
        fixture=False,
    ),
    # No-code workflows (workflows.py): one row per name, one per deployed version, runs.
    Table(
        "workflows",
        (
            _c("id", "id"), _c("name", "text"), _c("latest_version", "int"),
            _c("status", "text"), _c("failures", "int"), _c("trigger", "json", nullable=True),
            _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        unique=(("name",),),
        fixture=False,
    ),
    Table(
        "workflow_versions",
        (
            _c("workflow_id", "int", ref="workflows", on_delete="cascade"), _c("version", "int"),
            _c("doc", "json"), _c("deployed_at", "ts"),
        ),
        primary_key=("workflow_id", "version"),
        fixture=False,
    ),
    Table(
        "workflow_runs",
        (
            _c("run_id", "text"), _c("workflow_id", "int"), _c("version", "int"),
            _c("status", "text"), _c("executed_nodes", "int"), _c("duration_ms", "float"),
            _c("error", "text", nullable=True), _c("started_at", "ts"), _c("finished_at", "ts"),
        ),
        primary_key=("run_id",),
        indexes=(("workflow_id",),),
        fixture=False,
    ),
    # SLA definitions and their instances (sla.py); times are seconds on the service clock.
    Table(
        "slas",
        (
            _c("id", "id"), _c("definition", "json"), _c("created_at", "ts"),
            # A pack's SLA names its pack; disabling the pack deactivates it.
            _c("pack", "text", nullable=True), _c("pack_key", "text", nullable=True),
            _c("active", "bool"),
        ),
        fixture=False,
    ),
    Table(
        "sla_instances",
        (
            _c("id", "id"), _c("sla_id", "int", ref="slas", on_delete="cascade"),
            _c("object", "text"), _c("record_id", "int"), _c("customer_id", "int", nullable=True),
            _c("started_s", "float"), _c("deadline_s", "float"), _c("state", "text"),
            _c("met_s", "float", nullable=True), _c("breached_s", "float", nullable=True),
            _c("detected_s", "float", nullable=True),
        ),
        indexes=(("sla_id", "id"), ("state",), ("customer_id",)),
        fixture=False,
    ),
    # Scenario packs (packs.py): switch state and the records of pack modules.
    Table(
        "packs",
        (_c("name", "text"), _c("enabled", "bool"), _c("updated_at", "ts")),
        primary_key=("name",),
        fixture=False,
    ),
    Table(
        "pack_items",
        (
            _c("pack", "text"), _c("kind", "text"), _c("key", "text"), _c("ref_id", "int"),
        ),
        primary_key=("pack", "kind", "key"),
        fixture=False,
    ),
    Table(
        "pack_records",
        (
            _c("id", "id"), _c("pack", "text"), _c("module", "text"),
            _c("customer_id", "int", nullable=True), _c("key", "text", nullable=True),
            _c("data", "json"), _c("created_at", "ts"), _c("updated_at", "ts"),
        ),
        indexes=(("pack", "module", "id"), ("module", "customer_id", "key")),
        fixture=False,
    ),
    # The audit trail (audit.py): append-only, each entry chained to the one before by hash.
    Table(
        "audit_log",
        (
            _c("seq", "int"), _c("at", "ts"), _c("actor", "text"), _c("role", "text"),
            _c("action", "text"), _c("route", "text"), _c("customer_id", "int", nullable=True),
            _c("outcome", "text"), _c("reason", "text", nullable=True), _c("details", "json"),
            _c("prev_hash", "text"), _c("hash", "text"),
        ),
        primary_key=("seq",),
        indexes=(("action", "seq"),),
        fixture=False,
    ),
    # Every customer an audit entry is about (a list read is about each customer listed).
    Table(
        "audit_subjects",
        (_c("audit_seq", "int"), _c("customer_id", "int")),
        primary_key=("audit_seq", "customer_id"),
        indexes=(("customer_id", "audit_seq"),),
        fixture=False,
    ),
)

TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
FIXTURE_TABLES: tuple[Table, ...] = tuple(t for t in TABLES if t.fixture)

_SQL_TYPES: dict[Dialect, dict[Kind, str]] = {
    "sqlite": {
        "id": "INTEGER", "int": "INTEGER", "float": "REAL", "text": "TEXT",
        "bool": "INTEGER", "ts": "TEXT", "json": "TEXT",
    },
    "postgresql": {
        # Binary collation: the same order (and prefix ranges) as SQLite.
        "id": "BIGINT", "int": "BIGINT", "float": "DOUBLE PRECISION", "text": 'TEXT COLLATE "C"',
        "bool": "BOOLEAN", "ts": 'TEXT COLLATE "C"', "json": "TEXT",
    },
}


def create_table_sql(table: Table, dialect: Dialect) -> str:
    """DDL for one table, without secondary indexes (they are built after bulk loads)."""
    types = _SQL_TYPES[dialect]
    parts: list[str] = []
    for col in table.columns:
        if col.kind == "id" and table.has_identity:
            if dialect == "sqlite":
                parts.append(f"{col.name} INTEGER PRIMARY KEY")
            else:
                parts.append(f"{col.name} BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
            continue
        spec = f"{col.name} {types[col.kind]}"
        if not col.nullable:
            spec += " NOT NULL"
        if col.references:
            spec += f" REFERENCES {col.references}(id)"
            if col.on_delete:
                spec += f" ON DELETE {col.on_delete.upper()}"
        parts.append(spec)
    if not table.has_identity:
        parts.append(f"PRIMARY KEY ({', '.join(table.primary_key)})")
    parts += [f"UNIQUE ({', '.join(cols)})" for cols in table.unique]
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(parts)})"


def create_index_sql(table: Table) -> list[str]:
    return [
        f"CREATE INDEX IF NOT EXISTS ix_{table.name}_{_index_name(cols)} "
        f"ON {table.name} ({', '.join(cols)})"
        for cols in table.indexes
    ]


def _index_name(cols: tuple[str, ...]) -> str:
    return "_".join(re.sub(r"\W+", "_", c).strip("_") for c in cols)
