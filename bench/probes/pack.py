"""The scenario-pack probe: pack.enable_time (enable call -> all checks pass), re-enable
time and idempotency, pack.hotplug and pack.manufacturing."""

from __future__ import annotations

import time
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import Status
from bench.adapters.engines import Engines
from bench.probes.registry import Findings, Probe, ProbeContext, register
from bench.probes.verdict import Verdict, verdict

PACK_IDS = ("pack.hotplug", "pack.manufacturing")


class PackOptions(msgspec.Struct, frozen=True, rename={
        "name": "pack_name", "timeout_s": "pack_timeout_s"}):
    """``[engines]`` settings: which pack, and how long its checks may take to pass."""

    name: str = "manufacturing"
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

# ---------------------------------------------------------------------------- packs


def _checks_pass(adapter: Engines, name: str, timeout: float) -> tuple[bool, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, checks = adapter.pack_checks(name)
        if status is Status.ok and checks:
            last = checks
            if checks.get("all_passed"):
                return True, checks
        gevent.sleep(0.05)
    return False, last


# Checks of what a pack brings besides its modules (workflows, SLAs, reports).
BUNDLE_PARTS = ("workflows", "slas", "reports")


def probe_pack(adapter: Engines, ctx: ProbeContext, options: PackOptions) -> Findings:
    """pack.enable_time (enable call -> all checks pass), re-enable time and idempotency."""
    name, timeout, run_id, say = options.name, options.timeout_s, ctx.run_id, ctx.say
    dim: dict[str, Any] = {"capability": "pack.enable_time", "unit": "s", "value": None,
                           "modules": None, "bundle": None, "reenable_s": None,
                           "idempotent": False}
    _status, before = adapter.pack_state(name)
    was_on = bool((before or {}).get("enabled"))
    if was_on:
        adapter.disable_pack(name)
    t0 = time.perf_counter()
    status, _ = adapter.enable_pack(name)
    passed, checks = _checks_pass(adapter, name, timeout) if status is Status.ok else (False, {})
    caps: dict[str, Verdict] = {}
    if not passed:
        dim.update(status="fail", reason=f"enable answered {status.value}; checks did not all "
                   f"pass within {timeout:g} s")
        failed = verdict("fail", checks or None, dim["reason"])
        return dim, {"pack.hotplug": failed, "pack.manufacturing": failed}
    dim["value"] = round(time.perf_counter() - t0, 6)
    found = {c.get("module") for c in checks.get("checks", [])}
    dim["modules"] = len(found - set(BUNDLE_PARTS))
    dim["bundle"] = {part: sum(c.get("module") == part for c in checks.get("checks", []))
                     for part in BUNDLE_PARTS}
    say(f"pack {name}: checks pass {dim['value']} s after enabling")
    again, _ = adapter.enable_pack(name)
    made, record = adapter.create_pack_record("equipment", {
        "serial_number": f"probe-{run_id}", "model": "crmbench probe"})
    off, _ = adapter.disable_pack(name)
    off_again, _ = adapter.disable_pack(name)
    record_id = (record or {}).get("id", 0)
    hidden = adapter.get_pack_record("equipment", record_id)[0]
    t0 = time.perf_counter()
    adapter.enable_pack(name)
    reenabled, _ = _checks_pass(adapter, name, timeout)
    dim["reenable_s"] = round(time.perf_counter() - t0, 6) if reenabled else None
    kept_status, kept = adapter.get_pack_record("equipment", record_id)
    dim["idempotent"] = (again is Status.ok and off is Status.ok and off_again is Status.ok)
    kept_ok = kept_status is Status.ok and (kept or {}).get("serial_number") == f"probe-{run_id}"
    hot = {"idempotent": dim["idempotent"], "hidden_while_disabled": hidden.value,
           "data_kept": kept_ok, "reenable_s": dim["reenable_s"]}
    ok = dim["idempotent"] and made is Status.ok and hidden is not Status.ok and kept_ok
    caps["pack.hotplug"] = verdict("pass" if ok else "fail", hot,
                                None if ok else "enable/disable/enable did not behave")
    caps["pack.manufacturing"] = _manufacturing(adapter, run_id, checks)
    if not was_on:
        adapter.disable_pack(name)
    dim["status"] = "pass"
    return dim, caps


def _manufacturing(adapter: Any, run_id: str, checks: dict[str, Any]) -> Verdict:
    modules = {c.get("module") for c in checks.get("checks", []) if c.get("passed")}
    needed = {"bom", "equipment", "spare_parts", "ppap", "contracts"}
    if not needed <= modules:
        return verdict("fail", sorted(modules), f"modules missing or failing: "
                                             f"{sorted(needed - modules)}")
    part = f"probe-{run_id}"
    status, contract = adapter.create_pack_record("contracts",
                                                  {"customer_id": 1, "part_number": part})
    status2, ppap = adapter.create_pack_record("ppap", {
        "customer_id": 1, "part_number": part, "elements": ["design_records"]})
    if status is not Status.ok or status2 is not Status.ok or not contract or not ppap:
        return verdict("fail", reason="could not create a contract and a PPAP submission")
    frozen, _ = adapter.approve_contract(contract["id"])
    _st, pack = adapter.pack_state("manufacturing")
    elements = [f for m in (pack or {}).get("modules", []) if m.get("name") == "ppap"
                for f in m.get("elements", [])]
    adapter.update_pack_record("ppap", ppap["id"], {"elements": elements})
    released, done = adapter.approve_contract(contract["id"])
    ok = (frozen is Status.rejected and released is Status.ok
          and (done or {}).get("status") == "approved")
    evidence = {"modules": sorted(modules), "incomplete_ppap": frozen.value,
                "complete_ppap": released.value}
    return verdict("pass" if ok else "fail", evidence,
                None if ok else "approval not frozen then released by PPAP completeness")


PROBE = register(Probe(
    name="pack", trigger=("engines", "pack"), needs=(Engines,), options=PackOptions,
    dimension="pack.enable_time", result_key="pack", capabilities=PACK_IDS, run=probe_pack,
))
