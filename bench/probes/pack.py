"""The scenario-pack probe: pack.enable_time (enable call -> the harness's own check passes),
re-enable time and idempotency, pack.hotplug and pack.manufacturing.

The pack's self-test (its ``checks``) is kept in the result as server-reported; no verdict
or time rests on it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import gevent
import msgspec

from bench.adapters.base import FAULT_STATUSES, Status
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


def _harness_check(adapter: Engines, run_id: str, attempt: int) -> bool:
    """The harness's own check of an enabled pack: a module record is created and read back."""
    serial = f"probe-{run_id}-enable-{attempt}"
    status, made = adapter.create_pack_record("equipment", {
        "serial_number": serial, "model": "crmbench probe"})
    if status is not Status.ok or not made or "id" not in made:
        return False
    status, read = adapter.get_pack_record("equipment", made["id"])
    return status is Status.ok and (read or {}).get("serial_number") == serial


def _enabled_by_harness(adapter: Engines, run_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        if _harness_check(adapter, run_id, attempt):
            return True
        gevent.sleep(0.05)
    return False


def _self_test(adapter: Engines, name: str) -> dict[str, Any]:
    """The pack's own checks, as the server reports them (labelled so, never a verdict)."""
    status, checks = adapter.pack_checks(name)
    return checks if status is Status.ok and checks else {}


class _Traffic:
    """Reads of a core record in a greenlet while the pack switches: any fault is downtime."""

    def __init__(self, adapter: Any) -> None:
        self.calls = 0
        self.faults: list[str] = []
        self._adapter = adapter
        self._greenlet = gevent.spawn(self._run)
        gevent.sleep(0.05)  # under way before the switch starts

    def _run(self) -> None:
        while True:
            status = self._adapter.get_customer(1)
            self.calls += 1
            if status in FAULT_STATUSES:
                self.faults.append(status.value)
            gevent.sleep(0.01)

    def stop(self) -> dict[str, Any]:
        self._greenlet.kill()
        return {"calls": self.calls, "faults": len(self.faults)}


# Checks of what a pack brings besides its modules (workflows, SLAs, reports).
BUNDLE_PARTS = ("workflows", "slas", "reports")


def probe_pack(adapter: Engines, ctx: ProbeContext, options: PackOptions) -> Findings:
    """pack.enable_time (enable call -> the harness's own check passes), re-enable time,
    idempotency and hot-plugging; the pack's self-test is kept, labelled server-reported."""
    name, timeout, run_id, say = options.name, options.timeout_s, ctx.run_id, ctx.say
    dim: dict[str, Any] = {"capability": "pack.enable_time", "unit": "s", "value": None,
                           "ends_when": "a module record is created and read back",
                           "server_reported": None, "reenable_s": None, "idempotent": False}
    _status, before = adapter.pack_state(name)
    was_on = bool((before or {}).get("enabled"))
    if was_on:
        adapter.disable_pack(name)
    traffic = _Traffic(adapter)
    t0 = time.perf_counter()
    status, _ = adapter.enable_pack(name)
    passed = status is Status.ok and _enabled_by_harness(adapter, run_id, timeout)
    elapsed = time.perf_counter() - t0
    if not passed:
        dim.update(status="fail", reason=f"enable answered {status.value}; a module record "
                   f"could not be created and read back within {timeout:g} s",
                   background=traffic.stop())
        failed = verdict("fail", None, dim["reason"])
        return dim, {"pack.hotplug": failed, "pack.manufacturing": failed}
    dim["value"] = round(elapsed, 6)
    say(f"pack {name}: a module record reads back {dim['value']} s after enabling")
    checks = _self_test(adapter, name)
    found = {c.get("module") for c in checks.get("checks", [])}
    dim["server_reported"] = {
        "source": "server-reported", "all_passed": checks.get("all_passed"),
        "modules": len(found - set(BUNDLE_PARTS)),
        "bundle": {part: sum(c.get("module") == part for c in checks.get("checks", []))
                   for part in BUNDLE_PARTS}}
    caps = {"pack.hotplug": _hotplug(adapter, name, run_id, timeout, dim),
            "pack.manufacturing": _manufacturing(adapter, run_id)}
    dim["background"] = traffic.stop()
    if dim["background"]["faults"]:
        caps["pack.hotplug"] = verdict("fail", dim["background"], "background reads failed "
                                       "while the pack was switched")
    if not was_on:
        adapter.disable_pack(name)
    dim["status"] = "pass"
    return dim, caps


def _hotplug(adapter: Engines, name: str, run_id: str, timeout: float,
             dim: dict[str, Any]) -> Verdict:
    again, _ = adapter.enable_pack(name)
    serial = f"probe-{run_id}"
    made, record = adapter.create_pack_record("equipment", {
        "serial_number": serial, "model": "crmbench probe"})
    off, _ = adapter.disable_pack(name)
    off_again, _ = adapter.disable_pack(name)
    record_id = (record or {}).get("id", 0)
    hidden = adapter.get_pack_record("equipment", record_id)[0]
    t0 = time.perf_counter()
    adapter.enable_pack(name)
    reenabled = _enabled_by_harness(adapter, f"{run_id}-re", timeout)
    dim["reenable_s"] = round(time.perf_counter() - t0, 6) if reenabled else None
    kept_status, kept = adapter.get_pack_record("equipment", record_id)
    dim["idempotent"] = (again is Status.ok and off is Status.ok and off_again is Status.ok)
    kept_ok = kept_status is Status.ok and (kept or {}).get("serial_number") == serial
    hot = {"idempotent": dim["idempotent"], "hidden_while_disabled": hidden.value,
           "data_kept": kept_ok, "reenable_s": dim["reenable_s"]}
    # Hidden means absent (404) or forbidden (403), never a fault or another refusal.
    is_hidden = hidden is Status.not_found
    ok = dim["idempotent"] and made is Status.ok and is_hidden and kept_ok
    return verdict("pass" if ok else "fail", hot,
                   None if ok else "enable/disable/enable did not behave")


def _manufacturing(adapter: Any, run_id: str) -> Verdict:
    """PPAP freeze: a contract is refused as frozen while its PPAP lacks documents (and a
    control contract without them stays frozen), and approved once they are all added."""
    part = f"probe-{run_id}"
    made = [adapter.create_pack_record("contracts", {"customer_id": 1, "part_number": p})
            for p in (part, f"{part}-control")]
    ppaps = [adapter.create_pack_record("ppap", {
        "customer_id": 1, "part_number": p, "elements": ["design_records"]})
        for p in (part, f"{part}-control")]
    if any(st is not Status.ok or not rec for st, rec in (*made, *ppaps)):
        return verdict("fail", reason="could not create the contracts and PPAP submissions")
    (_s, contract), (_c, control) = made
    # The control is asked first and last: a first refusal alone proves nothing.
    control_first = adapter.approve_contract(control["id"])
    frozen = adapter.approve_contract(contract["id"])
    patched, _ = adapter.update_pack_record("ppap", ppaps[0][1]["id"],
                                            {"elements": list(PPAP_ELEMENTS)})
    released, done = adapter.approve_contract(contract["id"])
    still = adapter.approve_contract(control["id"])
    evidence = {"incomplete_ppap": _refusal(frozen), "ppap_update": patched.value,
                "complete_ppap": released.value,
                "control_without_documents": [_refusal(control_first), _refusal(still)],
                "approved_status": (done or {}).get("status")}
    problems = [k for k, ok in (
        ("incomplete_ppap", evidence["incomplete_ppap"] == "frozen"),
        ("ppap_update", patched is Status.ok),
        ("complete_ppap", released is Status.ok and evidence["approved_status"] == "approved"),
        ("control_without_documents",
         evidence["control_without_documents"] == ["frozen", "frozen"]))
        if not ok]
    return verdict("fail" if problems else "pass", evidence,
                   f"not as documented: {', '.join(problems)}" if problems else None)


def _refusal(answer: tuple[Status, dict[str, Any] | None]) -> str:
    status, body = answer
    return str((body or {}).get("refusal")) if status is Status.rejected else status.value


# The documents of a complete PPAP submission (AIAG PPAP, 4th edition: 18 elements).
PPAP_ELEMENTS = (
    "design_records", "engineering_change_documents", "customer_engineering_approval",
    "design_fmea", "process_flow_diagram", "process_fmea", "control_plan",
    "measurement_system_analysis", "dimensional_results", "material_performance_results",
    "initial_process_studies", "qualified_laboratory_documentation",
    "appearance_approval_report", "sample_production_parts", "master_sample",
    "checking_aids", "customer_specific_requirements", "part_submission_warrant")


PROBE = register(Probe(
    name="pack", trigger=("engines", "pack"), needs=(Engines,), options=PackOptions,
    dimension="pack.enable_time", result_key="pack", capabilities=PACK_IDS, run=probe_pack,
))
