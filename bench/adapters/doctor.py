"""``crmbench doctor``: what a run against a target would measure, before it writes anything.

It names the adapter, which credentials are set (names and sources, never values),
whether the target answers, what it reports about itself (edition, remaining API
allocation), which capabilities will be measured and what blocks the others, and, for
vendor platforms, the rate plan: the scenario's rate set against the documented quotas
(scaled or refused, and by which quota). It opens the adapter and reads; it never calls
``preflight`` (which may seed records) or anything else that writes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.adapters.base import Guarded, RunPlan
from bench.adapters.registry import create_adapter, load_adapter, redact_url, scheme_of
from bench.adapters.saas.common import VendorAdapter
from bench.adapters.saas.http import redact
from bench.adapters.saas.quota import plan_rate
from bench.errors import CrmBenchError, TargetUnreachable, UserError
from bench.scenarios.config import Scenario

# Not a real run: the plan is computed, nothing is created under this id.
DOCTOR_RUN_ID = "doctor"


def _plan(scenario: Scenario) -> RunPlan:
    return RunPlan(
        run_id=DOCTOR_RUN_ID, scenario=scenario.name,
        estimated_calls=int(scenario.rate * scenario.phases.total_s * 1.1) + 100,
        rate=scenario.rate if scenario.workload else 0.0, duration_s=scenario.phases.total_s,
        users=scenario.users, mix=dict(scenario.mix), probe_rate=scenario.probe_rate,
    )


def _capabilities(adapter: Any) -> tuple[dict[str, int], list[str], dict[str, str]]:
    """Counts by support, the ids that will be measured, and the reason for each other
    (the adapter's own declarations: some depend on its settings or on the org)."""
    caps = adapter.capabilities
    measured = [cid for cid, c in caps.items() if c.support == "supported"]
    blocked = {cid: f"{c.support}: {c.note}" if c.note else c.support
               for cid, c in caps.items() if c.support != "supported"}
    return dict(Counter(c.support for c in caps.values())), measured, blocked


def _rate_plan(adapter: Any, scenario: Scenario | None) -> dict[str, Any] | None:
    """The rate plan of ``scenario`` on a vendor adapter (None elsewhere)."""
    if scenario is None or not isinstance(adapter, VendorAdapter):
        return None
    plan = _plan(scenario)
    found = plan_rate(adapter.quotas(), plan, concurrency=adapter.concurrency())
    out = found.to_json()
    out["scenario"] = f"{scenario.name} ({scenario.profile})"
    out["summary"] = found.summary()
    return out


def diagnose(target: str, scenario: Scenario | None = None) -> dict[str, Any]:
    """Everything ``doctor`` reports about ``target``; ``exit_code`` says how it went."""
    cls = load_adapter(scheme_of(target))
    adapter = create_adapter(target)
    counts, measured, blocked = _capabilities(adapter)
    report: dict[str, Any] = {
        "target": redact_url(target), "adapter": f"{cls.__module__}:{cls.__qualname__}",
        "platform": cls.platform, "guarded": isinstance(adapter, Guarded),
        "capabilities": counts, "measured": measured, "blocked": blocked,
        "credentials": [], "credentials_file": None, "status": "ok", "message": "",
        "version": None, "facts": {}, "rate_plan": None, "exit_code": 0,
    }
    try:
        creds = adapter.credential_report()
    except UserError as exc:
        report.update(status="credentials-refused", message=str(exc), exit_code=exc.exit_code)
        return report
    if creds is not None:
        report["credentials"] = [dataclasses.asdict(f) for f in creds.fields]
        report["credentials_file"] = creds.file
    # The documented quotas are known before any call: the plan shows even without access.
    report["rate_plan"] = _rate_plan(adapter, scenario)
    try:
        adapter.open()
    except TargetUnreachable as exc:
        message = str(exc)
        status = ("no-credentials" if message.startswith("no credentials") else
                  "not-measurable" if message.startswith("not measurable") else "unreachable")
        report.update(status=status, message=redact(message), exit_code=exc.exit_code)
        return report
    except CrmBenchError as exc:
        report.update(status="refused", message=redact(str(exc)), exit_code=exc.exit_code)
        return report
    try:
        report["version"] = adapter.platform_version()
        try:
            report["facts"] = adapter.target_facts()
        except CrmBenchError as exc:
            report["facts"] = {"error": redact(str(exc))}
        # Again, now with what the platform said is left of its allocations.
        report["rate_plan"] = _rate_plan(adapter, scenario)
        report["capabilities"], report["measured"], report["blocked"] = _capabilities(adapter)
    finally:
        adapter.close()
    report["message"] = "the target answers and the credentials are accepted"
    return report


def print_doctor(report: dict[str, Any], console: Console) -> None:
    """The report as a table on ``console``."""
    table = Table(title=f"crmbench doctor: {report['target']}", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("adapter", f"{report['adapter']} (platform {report['platform']})")
    for cred in report["credentials"]:
        state = (f"[green]set[/] ({cred['source']})" if cred["set"] else "[red]missing[/]")
        table.add_row(f"credential {cred['field']}", f"{cred['env']}: {state}")
    if report["credentials_file"]:
        table.add_row("credentials file", report["credentials_file"])
    colour = "green" if report["exit_code"] == 0 else "red"
    table.add_row("status", f"[{colour}]{report['status']}[/]")
    if report["message"]:
        table.add_row("message", report["message"])
    if report["version"]:
        table.add_row("version", str(report["version"]))
    for key, value in report["facts"].items():
        table.add_row(key, str(value))
    plan = report.get("rate_plan")
    if plan:
        table.add_row("rate plan", escape(f"{plan['scenario']}: {plan['summary']}"))
        for line in plan["quotas"]:
            table.add_row("quota", escape(line))
    table.add_row("capabilities", ", ".join(f"{n} {k}" for k, n in
                                            sorted(report["capabilities"].items())))
    table.add_row("measurable (declared)", ", ".join(report["measured"]) or "nothing")
    for cid, why in report["blocked"].items():
        table.add_row(f"not measured: {cid}", escape(why))
    table.add_row("guarded", "yes: preflight checks, tagged records, cleanup"
                  if report["guarded"] else "no")
    console.print(table)
