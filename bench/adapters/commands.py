"""Command functions for live targets, registered by bench/cli.py: doctor and cleanup.

``doctor`` tells whether a target can be measured: which adapter serves it, which
credentials are set (names and sources, never values), whether it answers, and what it
reports about itself (edition, remaining API allocation). ``cleanup`` deletes what an
interrupted run left behind. Tables go to stderr, ``--json`` output to stdout.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bench.adapters.base import Guarded
from bench.adapters.registry import create_adapter, load_adapter, redact_url, scheme_of
from bench.adapters.saas.common import check_run_id
from bench.adapters.saas.http import redact
from bench.errors import CrmBenchError, TargetUnreachable, UserError

err = Console(stderr=True, soft_wrap=True)

TargetOption = Annotated[
    str,
    typer.Option("--target", "-t",
                 help="Target URL, e.g. salesforce://acme.my.salesforce.com or fxiaoke://open.fxiaoke.com."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report on stdout as JSON.")]


def diagnose(target: str) -> dict[str, Any]:
    """Everything ``doctor`` reports about ``target``; ``exit_code`` says how it went."""
    scheme = scheme_of(target)
    cls = load_adapter(scheme)
    adapter = create_adapter(target)
    report: dict[str, Any] = {
        "target": redact_url(target),
        "adapter": f"{cls.__module__}:{cls.__qualname__}",
        "platform": cls.platform,
        "guarded": isinstance(adapter, Guarded),
        "capabilities": dict(Counter(c.support for c in cls.capabilities.values())),
        "credentials": [],
        "credentials_file": None,
        "status": "ok",
        "message": "",
        "version": None,
        "facts": {},
        "exit_code": 0,
    }
    try:
        creds = adapter.credential_report()
    except UserError as exc:
        report.update(status="credentials-refused", message=str(exc), exit_code=exc.exit_code)
        return report
    if creds is not None:
        report["credentials"] = [dataclasses.asdict(f) for f in creds.fields]
        report["credentials_file"] = creds.file
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
    finally:
        adapter.close()
    report["message"] = "the target answers and the credentials are accepted"
    return report


def _print_doctor(report: dict[str, Any]) -> None:
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
    table.add_row("capabilities", ", ".join(f"{n} {k}" for k, n in
                                            sorted(report["capabilities"].items())))
    table.add_row("guarded", "yes: preflight checks, tagged records, cleanup"
                  if report["guarded"] else "no")
    err.print(table)


def doctor_cmd(target: TargetOption, json_out: JsonOption = False) -> None:
    """Check that a target can be measured: adapter, credentials, connection, allocation."""
    report = diagnose(target)
    if json_out:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_doctor(report)
    raise typer.Exit(report["exit_code"])


def cleanup_cmd(
    target: TargetOption,
    run_id: Annotated[str, typer.Option("--run-id", help="Id of the run whose records go.")],
    json_out: JsonOption = False,
) -> None:
    """Delete every record a run created on a live target (after an interrupted run)."""
    check_run_id(run_id)
    adapter = create_adapter(target)
    if not isinstance(adapter, Guarded):
        raise UserError(
            f"{scheme_of(target)} targets are not guarded adapters; a run creates nothing "
            "there that crmbench could clean up"
        )
    adapter.open()
    try:
        with err.status(f"deleting records of run {run_id} on {redact_url(target)}"):
            deleted = adapter.cleanup(run_id)
    finally:
        adapter.close()
    result = {"target": redact_url(target), "run_id": run_id, "deleted": deleted}
    if json_out:
        typer.echo(json.dumps(result))
    else:
        err.print(f"[green]deleted {deleted} records[/] of run {run_id} on {result['target']}")
    raise typer.Exit(0)
