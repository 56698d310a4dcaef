"""Scenario packs: declarative bundles switched on and off at run time, without a restart.

A pack brings modules (objects and their fields), workflows, SLAs and reports. Module
records live in ``pack_records`` (disabling keeps the data, enabling needs no DDL); the
pack's workflows and SLAs are deployed through their engines on first enable, and disabled
(workflows refuse runs and ignore triggers, SLAs start no instances) while the pack is off;
``pack_items`` remembers what a pack deployed, so enabling again deploys nothing twice.
Reports are group-by aggregations over module records. The manufacturing pack has 12
modules; its contracts follow IATF 16949: approval is frozen while the customer's PPAP for
the contract's part lacks any of the 18 PPAP elements. Acceptance checks exercise each
module, workflow, SLA and report for real inside a transaction that is rolled back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from reference_impl.cluster import announce, settle
from reference_impl.db import Database, Executor, Row
from reference_impl.sla import SlaCreate, SlaEngine
from reference_impl.store import StoreError, now_iso
from reference_impl.workflows import WorkflowDeploy, WorkflowEngine, compile_doc

if TYPE_CHECKING:
    from reference_impl.cluster import Cluster

PPAP_ELEMENTS = (
    "design_records", "engineering_change_documents", "customer_engineering_approval",
    "design_fmea", "process_flow_diagram", "process_fmea", "control_plan",
    "measurement_system_analysis", "dimensional_results", "material_performance_results",
    "initial_process_studies", "qualified_laboratory_documentation",
    "appearance_approval_report", "sample_production_parts", "master_sample",
    "checking_aids", "customer_specific_requirements", "part_submission_warrant",
)

# module -> (description, {field: (type, required)}); "key" names the field indexed as key.
Fields = dict[str, tuple[str, bool]]


@dataclass(frozen=True)
class Module:
    name: str
    title: str
    fields: Fields
    key: str | None = None


MANUFACTURING: tuple[Module, ...] = (
    Module("sites", "Plants and service sites", {"name": ("str", True), "country": ("str", True)},
           "name"),
    Module("bom", "Bill of materials", {"product_sku": ("str", True), "lines": ("list", True)},
           "product_sku"),
    Module("equipment", "Equipment serial numbers",
           {"serial_number": ("str", True), "model": ("str", True), "site": ("str", False)},
           "serial_number"),
    Module("spare_parts", "Spare-parts inventory per site",
           {"sku": ("str", True), "site": ("str", True), "quantity": ("int", True)}, "sku"),
    Module("ppap", "PPAP submissions (18 elements)",
           {"part_number": ("str", True), "elements": ("list", True)}, "part_number"),
    Module("contracts", "Contracts with IATF 16949 approval",
           {"part_number": ("str", True), "value": ("float", False)}, "part_number"),
    Module("work_orders", "Maintenance work orders",
           {"serial_number": ("str", True), "description": ("str", True)}, "serial_number"),
    Module("quality_issues", "8D non-conformance reports",
           {"part_number": ("str", True), "description": ("str", True)}, "part_number"),
    Module("warranty_claims", "Warranty claims",
           {"serial_number": ("str", True), "amount": ("float", True)}, "serial_number"),
    Module("calibration", "Gauge calibration records",
           {"gauge": ("str", True), "due": ("str", True)}, "gauge"),
    Module("suppliers", "Approved suppliers",
           {"name": ("str", True), "rating": ("float", False)}, "name"),
    Module("service_visits", "Field service visits",
           {"serial_number": ("str", True), "scheduled_for": ("str", True)}, "serial_number"),
)


@dataclass(frozen=True)
class Report:
    """``measures``: (output name, "count" | "sum", field or None) per column."""

    name: str
    title: str
    module: str
    group_by: tuple[str, ...]
    measures: tuple[tuple[str, str, str | None], ...]


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    modules: tuple[Module, ...]
    workflows: tuple[dict[str, Any], ...] = ()
    slas: tuple[tuple[str, dict[str, Any]], ...] = ()
    reports: tuple[Report, ...] = ()


_PLANT_HOURS = {"timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "08:00", "end": "17:00"}
MANUFACTURING_PACK = Pack(
    "manufacturing", "Discrete manufacturing (IATF 16949)", MANUFACTURING,
    workflows=(
        {"name": "manufacturing/large-deal-ppap-review", "timeout_s": 30, "nodes": [
            {"id": "negotiation", "type": "trigger", "on": "stage.changed",
             "stage": "negotiation"},
            {"id": "large", "type": "condition", "field": "amount", "op": ">=",
             "value": 100_000},
            {"id": "ask-quality", "type": "action", "action": "notify", "channel": "quality",
             "subject": "Large deal in negotiation: confirm the customer's PPAP status"}],
         "edges": [["negotiation", "large"], ["large", "ask-quality", "true"]]},
        {"name": "manufacturing/weekly-calibration-review", "timeout_s": 30, "nodes": [
            {"id": "weekly", "type": "trigger", "on": "schedule", "cron": "0 7 * * mon",
             "timezone": "UTC"},
            {"id": "remind", "type": "action", "action": "notify", "channel": "quality",
             "subject": "Weekly review of gauges due for calibration"}],
         "edges": [["weekly", "remind"]]},
    ),
    slas=(
        ("service-lead-first-contact", {
            "name": "Service lead: first contact within 4 working hours", "level": "action",
            "action": "first_contact", "object": "lead", "within_s": 4 * 3600,
            "calendar": _PLANT_HOURS, "escalation": {"notify": "director"}}),
        ("proposal-to-negotiation", {
            "name": "Quote answered within 5 working days", "level": "process",
            "object": "opportunity", "from_stage": "proposal", "to_stage": "negotiation",
            "within_s": 5 * 9 * 3600, "calendar": _PLANT_HOURS}),
    ),
    reports=(
        Report("spare_parts_by_site", "Spare parts on hand per site", "spare_parts",
               ("site",), (("quantity", "sum", "quantity"), ("skus", "count", None))),
        Report("contracts_by_status", "Contracts by approval status", "contracts",
               ("status",), (("contracts", "count", None), ("value", "sum", "value"))),
        Report("quality_issues_by_part", "Open 8D reports per part", "quality_issues",
               ("part_number",), (("issues", "count", None),)),
    ),
)
PACKS: dict[str, Pack] = {"manufacturing": MANUFACTURING_PACK}
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                       "list": (list,)}


class _Rollback(Exception):
    pass


def _sample(mod: Module, customer: int | None) -> dict[str, Any]:
    """A valid record of ``mod`` for acceptance checks."""
    sample: dict[str, Any] = {"customer_id": customer}
    for key, (kind, _req) in mod.fields.items():
        sample[key] = {"str": f"probe-{key}", "int": 3, "float": 1.5, "list": []}[kind]
    if mod.name == "bom":
        sample["lines"] = [{"component_sku": "C-1", "quantity": 2}]
    return sample


def _module(pack: str, name: str) -> Module:
    for mod in PACKS[pack].modules:
        if mod.name == name:
            return mod
    raise StoreError(404, "not_found", f"pack {pack} has no module {name!r}")


def validate(mod: Module, data: dict[str, Any], partial: bool) -> dict[str, Any]:
    """Check a module record against its declared fields; unknown fields are refused."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "customer_id":
            continue
        spec = mod.fields.get(key)
        if spec is None or key == "status":
            raise StoreError(422, "validation_error", f"{mod.name} has no field {key!r}", key)
        if isinstance(value, bool) or not isinstance(value, _TYPES[spec[0]]):
            raise StoreError(422, "validation_error", f"{key} must be of type {spec[0]}", key)
        out[key] = value
    if not partial:
        for key, (_kind, required) in mod.fields.items():
            if required and key not in out:
                raise StoreError(422, "validation_error", f"{key} is required", key)
    if mod.name == "ppap":
        unknown = [e for e in out.get("elements", []) if e not in PPAP_ELEMENTS]
        if unknown:
            raise StoreError(422, "validation_error", f"unknown PPAP elements {unknown}",
                             "elements")
    return out


class PackService:
    """Pack switches (kept in memory and in ``packs``) and module records."""

    def __init__(self, db: Database, workflows: WorkflowEngine, slas: SlaEngine) -> None:
        self.db = db
        self.workflows = workflows
        self.slas = slas
        self.enabled: dict[str, bool] = dict.fromkeys(PACKS, False)
        # What each pack deployed: (kind, key) -> workflow or SLA id.
        self.items: dict[str, dict[tuple[str, str], int]] = {n: {} for n in PACKS}
        # Set when other processes serve the same database: switches are announced to them.
        self.cluster: Cluster | None = None

    async def start(self) -> None:
        if self.cluster is not None:
            # Before loading: a change announced meanwhile is then read again, never lost.
            self.cluster.reloaders["pack"] = self.reload
        await self.reload("*")

    async def reload(self, _key: str) -> None:
        """Read every pack's switch and deployed items from the database."""
        for r in await self.db.fetch_all("SELECT name, enabled FROM packs"):
            if r["name"] in self.enabled:
                self.enabled[r["name"]] = bool(r["enabled"])
        for r in await self.db.fetch_all("SELECT * FROM pack_items"):
            if r["pack"] in self.items:
                self.items[r["pack"]][(r["kind"], r["key"])] = int(r["ref_id"])

    def describe(self, name: str) -> dict[str, Any]:
        if name not in PACKS:
            raise StoreError(404, "not_found", f"no pack named {name!r}")
        pack, items = PACKS[name], self.items[name]
        return {"name": name, "title": pack.title, "enabled": self.enabled[name],
                "modules": [{"name": m.name, "title": m.title,
                             "fields": {k: v[0] for k, v in m.fields.items()},
                             **({"elements": list(PPAP_ELEMENTS)} if m.name == "ppap" else {})}
                            for m in pack.modules],
                "workflows": [{"name": w["name"], "id": items.get(("workflow", w["name"]))}
                              for w in pack.workflows],
                "slas": [{"key": k, "name": d["name"], "level": d["level"],
                          "id": items.get(("sla", k))} for k, d in pack.slas],
                "reports": [{"name": r.name, "title": r.title, "module": r.module}
                            for r in pack.reports]}

    async def switch(self, name: str, on: bool) -> dict[str, Any]:
        """Enable or disable; idempotent, and records are kept either way.

        Enabling deploys the bundle before the switch flips, so a pack is never on without
        its workflows and SLAs; disabling flips the switch first.
        """
        self.describe(name)
        started = time.perf_counter()
        if on:
            await self._bundle(name, True)
        if self.db.dialect == "postgresql":
            sql = ("INSERT INTO packs (name, enabled, updated_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, "
                   "updated_at = EXCLUDED.updated_at")
        else:
            sql = "INSERT OR REPLACE INTO packs (name, enabled, updated_at) VALUES (?, ?, ?)"
        async with self.db.transaction() as tx:
            await tx.execute(sql, (name, on, now_iso()))
            token = await announce(self.cluster, tx, "pack", name)
        await settle(self.cluster, token)
        changed = self.enabled[name] != on
        self.enabled[name] = on
        if not on:
            await self._bundle(name, False)
        return {**self.describe(name), "changed": changed,
                "switch_ms": round((time.perf_counter() - started) * 1000, 3)}

    async def _bundle(self, name: str, on: bool) -> None:
        """Deploy (first time), re-enable or disable the pack's workflows and SLAs."""
        pack, items = PACKS[name], self.items[name]
        for doc in pack.workflows:
            wid = items.get(("workflow", doc["name"]))
            if on:
                wanted = compile_doc(msgspec.convert(doc, WorkflowDeploy))
                if wid is None or await self.workflows.latest_differs(wid, wanted.doc):
                    wid = int((await self.workflows.deploy(wanted, time.perf_counter()))["id"])
                    await self._remember(name, "workflow", doc["name"], wid)
            if wid is not None:
                await self.workflows.set_enabled(wid, on)
        for key, definition in pack.slas:
            sid = items.get(("sla", key))
            if on and sid is None:
                created = await self.slas.create(msgspec.convert(definition, SlaCreate),
                                                 (name, key))
                sid = int(created["id"])
                await self._remember(name, "sla", key, sid)
            if sid is not None:
                await self.slas.set_active(sid, on)

    async def _remember(self, pack: str, kind: str, key: str, ref: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM pack_items WHERE pack = ? AND kind = ? AND key = ?",
                             (pack, kind, key))
            await tx.execute("INSERT INTO pack_items (pack, kind, key, ref_id) "
                             "VALUES (?, ?, ?, ?)", (pack, kind, key, ref))
        self.items[pack][(kind, key)] = ref

    async def report(self, name: str, report: str) -> dict[str, Any]:
        """Run one of the pack's reports over its module records."""
        self.describe(name)
        self.require(name)
        found = next((r for r in PACKS[name].reports if r.name == report), None)
        if found is None:
            raise StoreError(404, "not_found", f"pack {name} has no report {report!r}")
        t0 = time.perf_counter()
        rows = await run_report(self.db, self.db.dialect, name, found)
        return {"pack": name, "report": found.name, "title": found.title,
                "columns": [*found.group_by, *(m[0] for m in found.measures)], "rows": rows,
                "generated_at": now_iso(),
                "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}

    def require(self, name: str) -> None:
        if not self.enabled.get(name, False):
            raise StoreError(404, "pack_disabled", f"the {name} pack is not enabled")

    async def create(self, ex: Executor, pack: str, module: str, data: dict[str, Any]
                     ) -> Row:
        mod = _module(pack, module)
        values = validate(mod, data, partial=False)
        customer = data.get("customer_id")
        if customer is not None and (not isinstance(customer, int) or await ex.fetch_val(
                "SELECT 1 FROM customers WHERE id = ?", (customer,)) is None):
            raise StoreError(422, "unknown_reference", f"customer {customer} does not exist",
                             "customer_id")
        if module in ("ppap", "contracts") and customer is None:
            raise StoreError(422, "validation_error", "customer_id is required", "customer_id")
        if module == "contracts":
            values["status"] = "draft"
        ts = now_iso()
        new_id = await ex.fetch_val(
            "INSERT INTO pack_records (pack, module, customer_id, key, data, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (pack, module, customer, values.get(mod.key or "") if mod.key else None,
             json.dumps(values), ts, ts),
        )
        return await self.get(ex, pack, module, int(new_id))

    async def get(self, ex: Executor, pack: str, module: str, id_: int) -> Row:
        row = await ex.fetch_one(
            "SELECT * FROM pack_records WHERE id = ? AND pack = ? AND module = ?",
            (id_, pack, module))
        if row is None:
            raise StoreError(404, "not_found", f"{module} record {id_} does not exist")
        return {"id": row["id"], "module": module, "customer_id": row["customer_id"],
                **json.loads(row["data"]), "created_at": row["created_at"],
                "updated_at": row["updated_at"]}

    async def records(self, ex: Executor, pack: str, module: str, limit: int,
                   after: int | None) -> dict[str, Any]:
        _module(pack, module)
        rows = await ex.fetch_all(
            "SELECT id FROM pack_records WHERE pack = ? AND module = ? AND id > ? "
            "ORDER BY id LIMIT ?", (pack, module, after or 0, limit + 1))
        items = [await self.get(ex, pack, module, int(r["id"])) for r in rows[:limit]]
        return {"items": items, "next_after": items[-1]["id"] if len(rows) > limit else None,
                "limit": limit}

    async def update(self, ex: Executor, pack: str, module: str, id_: int,
                     data: dict[str, Any]) -> Row:
        mod = _module(pack, module)
        current = await self.get(ex, pack, module, id_)
        values = validate(mod, data, partial=True)
        if module == "ppap" and "elements" in values:
            # Submissions accumulate: a PATCH adds elements to those already submitted.
            values["elements"] = sorted(set(current["elements"]) | set(values["elements"]))
        stored = {k: v for k, v in current.items()
                  if k not in ("id", "module", "customer_id", "created_at", "updated_at")}
        stored.update(values)
        await ex.execute("UPDATE pack_records SET data = ?, updated_at = ? WHERE id = ?",
                         (json.dumps(stored), now_iso(), id_))
        return await self.get(ex, pack, module, id_)

    async def missing_ppap(self, ex: Executor, customer_id: int, part: str) -> list[str]:
        rows = await ex.fetch_all(
            "SELECT data FROM pack_records WHERE module = 'ppap' AND customer_id = ? "
            "AND key = ?", (customer_id, part))
        have: set[str] = set()
        for r in rows:
            have.update(json.loads(r["data"])["elements"])
        return [e for e in PPAP_ELEMENTS if e not in have]

    async def approve(self, ex: Executor, id_: int) -> Row:
        """IATF 16949: frozen (409) while the customer's PPAP for the part is incomplete."""
        contract = await self.get(ex, "manufacturing", "contracts", id_)
        missing = await self.missing_ppap(ex, int(contract["customer_id"]),
                                          str(contract["part_number"]))
        if missing:
            raise StoreError(
                409, "approval_frozen",
                f"approval frozen (IATF 16949): PPAP for part {contract['part_number']} "
                f"lacks {len(missing)} element(s): {', '.join(missing)}", "ppap")
        contract.pop("id")
        data = {k: v for k, v in contract.items()
                if k not in ("module", "customer_id", "created_at", "updated_at")}
        data["status"] = "approved"
        await ex.execute("UPDATE pack_records SET data = ?, updated_at = ? WHERE id = ?",
                         (json.dumps(data), now_iso(), id_))
        return await self.get(ex, "manufacturing", "contracts", id_)

    async def checks(self, name: str) -> dict[str, Any]:
        """Run every module's acceptance check in one transaction that is rolled back."""
        self.describe(name)
        results: list[dict[str, Any]] = []
        if self.enabled[name]:
            try:
                async with self.db.transaction() as tx:
                    customer = await tx.fetch_val("SELECT MIN(id) FROM customers")
                    for mod in PACKS[name].modules:
                        results += await self._check(tx, name, mod, customer)
                    results += await self._check_bundle(tx, name, customer)
                    raise _Rollback
            except _Rollback:
                pass
        else:
            results = [{"module": m.name, "check": "enabled", "passed": False,
                        "detail": "pack disabled"} for m in PACKS[name].modules]
        return {"pack": name, "enabled": self.enabled[name], "checks": results,
                "all_passed": bool(results) and all(r["passed"] for r in results)}

    async def _check(self, tx: Executor, pack: str, mod: Module, customer: int | None
                     ) -> list[dict[str, Any]]:
        sample = _sample(mod, customer)
        out: list[dict[str, Any]] = []
        try:
            if mod.name == "contracts":
                sample["part_number"] = "probe-part"
                contract = await self.create(tx, pack, "contracts", sample)
                try:
                    await self.approve(tx, int(contract["id"]))
                    frozen = "approved without PPAP"
                except StoreError as exc:
                    frozen = "" if exc.code == "approval_frozen" else exc.message
                out.append({"module": mod.name, "check": "approval frozen without PPAP",
                            "passed": not frozen, "detail": frozen or "409 approval_frozen"})
                ppap = await self.create(tx, pack, "ppap", {
                    "customer_id": customer, "part_number": "probe-part",
                    "elements": list(PPAP_ELEMENTS[:9])})
                await self.update(tx, pack, "ppap", int(ppap["id"]),
                                  {"elements": list(PPAP_ELEMENTS[9:])})
                approved = await self.approve(tx, int(contract["id"]))
                out.append({"module": mod.name, "check": "approval released with full PPAP",
                            "passed": approved["status"] == "approved",
                            "detail": f"status {approved['status']}"})
                return out
            created = await self.create(tx, pack, mod.name, sample)
            read = await self.get(tx, pack, mod.name, int(created["id"]))
            same = all(read[k] == v for k, v in sample.items() if k != "customer_id")
            out.append({"module": mod.name, "check": "create and read back", "passed": same,
                        "detail": f"record {created['id']}"})
        except StoreError as exc:
            out.append({"module": mod.name, "check": "create and read back", "passed": False,
                        "detail": exc.message})
        return out

    async def _check_bundle(self, tx: Executor, name: str, customer: int | None
                            ) -> list[dict[str, Any]]:
        pack, items = PACKS[name], self.items[name]
        out: list[dict[str, Any]] = []
        for doc in pack.workflows:
            wid = items.get(("workflow", doc["name"]))
            status = self.workflows.status(wid) if wid is not None else "not deployed"
            out.append({"module": "workflows", "check": f"{doc['name']} deployed and active",
                        "passed": status == "active", "detail": f"status {status}"})
        for key, _definition in pack.slas:
            sid = items.get(("sla", key))
            active = sid is not None and sid in self.slas.defs and sid not in self.slas.inactive
            out.append({"module": "slas", "check": f"{key} defined and active",
                        "passed": active, "detail": f"sla {sid}" if sid else "not defined"})
        for report in pack.reports:
            # A record of the report's module goes in first, so the report has a row to show.
            mod = _module(name, report.module)
            try:
                await self.create(tx, name, mod.name, _sample(mod, customer))
                rows = await run_report(tx, self.db.dialect, name, report)
                passed = any(all(r.get(g) is not None for g in report.group_by) for r in rows)
                detail = f"{len(rows)} row(s)"
            except StoreError as exc:
                passed, detail = False, exc.message
            out.append({"module": "reports", "check": f"{report.name} answers",
                        "passed": passed, "detail": detail})
        return out


async def run_report(ex: Executor, dialect: str, pack: str, report: Report
                     ) -> list[dict[str, Any]]:
    """Group module records by the report's fields; at most 1,000 groups, largest first."""
    pg = dialect == "postgresql"

    def field(name: str, number: bool = False) -> str:
        # Field names come from pack definitions, never from a request.
        if pg:
            return f"((data::jsonb ->> '{name}')::numeric)" if number else \
                f"(data::jsonb ->> '{name}')"
        return f"json_extract(data, '$.{name}')"

    cols = [f"{field(g)} AS {g}" for g in report.group_by]
    for out, fn, src in report.measures:
        cols.append(f"COUNT(*) AS {out}" if fn == "count" else
                    f"SUM({field(src or '', number=True)}) AS {out}")
    groups = ", ".join(str(i + 1) for i in range(len(report.group_by)))
    rows = await ex.fetch_all(
        f"SELECT {', '.join(cols)} FROM pack_records WHERE pack = ? AND module = ? "
        f"GROUP BY {groups} ORDER BY {len(report.group_by) + 1} DESC, {groups} LIMIT 1000",
        (pack, report.module))
    return [{k: float(v) if isinstance(v, Decimal) else v for k, v in r.items()} for r in rows]
