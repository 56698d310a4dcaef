"""Scenario packs: declarative bundles of modules switched on and off at run time.

The manufacturing pack has 12 modules stored in ``pack_records`` (so disabling keeps the
data, and enabling needs no DDL). Contracts follow IATF 16949: approval is frozen while the
customer's PPAP for the contract's part lacks any of the 18 PPAP elements. Acceptance checks
exercise each module for real inside a transaction that is rolled back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from reference_impl.db import Database, Executor, Row
from reference_impl.store import StoreError, now_iso

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
PACKS: dict[str, tuple[Module, ...]] = {"manufacturing": MANUFACTURING}
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                       "list": (list,)}


class _Rollback(Exception):
    pass


def _module(pack: str, name: str) -> Module:
    for mod in PACKS[pack]:
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

    def __init__(self, db: Database) -> None:
        self.db = db
        self.enabled: dict[str, bool] = dict.fromkeys(PACKS, False)

    async def start(self) -> None:
        for r in await self.db.fetch_all("SELECT name, enabled FROM packs"):
            if r["name"] in self.enabled:
                self.enabled[r["name"]] = bool(r["enabled"])

    def describe(self, name: str) -> dict[str, Any]:
        if name not in PACKS:
            raise StoreError(404, "not_found", f"no pack named {name!r}")
        return {"name": name, "enabled": self.enabled[name],
                "modules": [{"name": m.name, "title": m.title,
                             "fields": {k: v[0] for k, v in m.fields.items()},
                             **({"elements": list(PPAP_ELEMENTS)} if m.name == "ppap" else {})}
                            for m in PACKS[name]]}

    async def switch(self, name: str, on: bool) -> dict[str, Any]:
        """Enable or disable; idempotent, and records are kept either way."""
        self.describe(name)
        started = time.perf_counter()
        if self.db.dialect == "postgresql":
            sql = ("INSERT INTO packs (name, enabled, updated_at) VALUES (?, ?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, "
                   "updated_at = EXCLUDED.updated_at")
        else:
            sql = "INSERT OR REPLACE INTO packs (name, enabled, updated_at) VALUES (?, ?, ?)"
        await self.db.execute(sql, (name, on if self.db.dialect == "postgresql" else int(on),
                                    now_iso()))
        changed = self.enabled[name] != on
        self.enabled[name] = on
        return {**self.describe(name), "changed": changed,
                "switch_ms": round((time.perf_counter() - started) * 1000, 3)}

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
                    for mod in PACKS[name]:
                        results += await self._check(tx, name, mod, customer)
                    raise _Rollback
            except _Rollback:
                pass
        else:
            results = [{"module": m.name, "check": "enabled", "passed": False,
                        "detail": "pack disabled"} for m in PACKS[name]]
        return {"pack": name, "enabled": self.enabled[name], "checks": results,
                "all_passed": bool(results) and all(r["passed"] for r in results)}

    async def _check(self, tx: Executor, pack: str, mod: Module, customer: int | None
                     ) -> list[dict[str, Any]]:
        sample: dict[str, Any] = {"customer_id": customer}
        for key, (kind, _req) in mod.fields.items():
            sample[key] = {"str": f"probe-{key}", "int": 3, "float": 1.5,
                           "list": []}[kind]
        if mod.name == "bom":
            sample["lines"] = [{"component_sku": "C-1", "quantity": 2}]
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
