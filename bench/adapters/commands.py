"""Adapter command functions, registered by bench/cli.py: doctor, cleanup, load, adapters.

``doctor`` tells whether a target can be measured: which adapter serves it, which
credentials are set (names and sources, never values), whether it answers, and what it
reports about itself (edition, remaining API allocation). ``cleanup`` deletes what an
interrupted run left behind. ``load`` puts a fixture profile into a target through the
adapter's load hook; ``adapters`` lists the installed adapters; ``fixtures schema``
prints the fixture format. Tables go to stderr, ``--json`` output to stdout.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bench.adapters.base import Adapter, Guarded
from bench.adapters.doctor import diagnose, print_doctor
from bench.adapters.load import (
    DEFAULT_BATCH,
    DEFAULT_STATE_DIR,
    LoadOutcome,
    load_fixtures,
    loaded_record,
    state_paths,
)
from bench.adapters.registry import (
    create_adapter,
    describe_adapters,
    redact_url,
    scheme_of,
)
from bench.adapters.saas.common import check_run_id
from bench.datagen import DEFAULT_FIXTURES
from bench.errors import UserError
from reference_impl.fixtures import manifest_hash

SUPPORT_ORDER = ("supported", "unsupported", "not-measurable", "unknown")

err = Console(stderr=True, soft_wrap=True)

TargetOption = Annotated[
    str,
    typer.Option("--target", "-t",
                 help="Target URL, e.g. salesforce://acme.my.salesforce.com or fxiaoke://open.fxiaoke.com."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report on stdout as JSON.")]


def doctor_cmd(
    target: TargetOption,
    scenario: Annotated[str, typer.Option(help="Scenario whose rate is planned against the "
                                          "platform's quotas.")] = "mixed",
    profile: Annotated[str | None, typer.Option(help="Profile of that scenario.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Check that a target can be measured: adapter, credentials, connection, allocation,
    what will be measured, at which rate and under which quotas, and what blocks the rest.
    Nothing is written to the target."""
    from bench.scenarios.config import load_scenario

    found = load_scenario(scenario, profile=profile)
    report = diagnose(target, found)
    if json_out:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        print_doctor(report, err)
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


def load_cmd(
    target: TargetOption,
    fixtures: Annotated[Path, typer.Option(help="Fixture profile to load.")] = DEFAULT_FIXTURES,
    batch: Annotated[int, typer.Option(help="Rows per load_rows call.", min=1,
                                       max=100_000)] = DEFAULT_BATCH,
    state_dir: Annotated[Path, typer.Option(help="Folder of load journals and records.",
                                            envvar="CRMBENCH_LOAD_STATE_DIR")] = (
        DEFAULT_STATE_DIR
    ),
    json_out: JsonOption = False,
) -> None:
    """Load a fixture profile into a target through its adapter (resumable, batched)."""
    adapter = create_adapter(target)
    adapter.open()
    try:
        journal = state_paths(adapter, target, state_dir)[0]
        record = loaded_record(adapter, target, state_dir)
        if (record is not None and not journal.is_file()
                and record.manifest_sha256 == manifest_hash(fixtures)):
            err.print(f"[green]{redact_url(target)} already holds fixture profile "
                      f"{record.manifest_sha256[:12]}[/] (loaded {record.loaded_at})")
            outcome = None
        else:
            outcome = _load_with_progress(adapter, fixtures, target, state_dir, batch)
    finally:
        adapter.close()
    if outcome is not None:
        where = "on the platform and " if outcome.on_platform else ""
        err.print(
            f"[green]loaded {outcome.rows_now:,} records in {outcome.seconds:.1f} s "
            f"({outcome.rate:,.0f} records/s)[/]; profile "
            f"{outcome.record.manifest_sha256[:12]} recorded {where}in "
            f"{state_paths(adapter, target, state_dir)[1]}"
        )
        record = outcome.record
    if json_out and record is not None:
        extra = ({"rows_now": outcome.rows_now, "seconds": outcome.seconds,
                  "records_per_s": outcome.rate, "resumed": outcome.resumed}
                 if outcome is not None else {"rows_now": 0})
        typer.echo(json.dumps({"target": redact_url(target), **record.to_json(), **extra},
                              indent=2))


def _load_with_progress(
    adapter: Adapter, fixtures: Path, target: str, state_dir: Path, batch: int
) -> LoadOutcome:
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def update(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        return load_fixtures(adapter, fixtures, target=target, state_dir=state_dir,
                             batch=batch, say=lambda m: err.print(m), progress=update)


def adapters_cmd(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Every capability with its note.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """List installed adapters and the capabilities they declare."""
    described = describe_adapters()
    if json_out:
        typer.echo(json.dumps(described, indent=2))
        return
    if not verbose:
        table = Table(title="capabilities declared by the installed adapters "
                      "(--verbose: each one)", title_justify="left")
        table.add_column("scheme", no_wrap=True, overflow="fold")
        table.add_column("adapter", no_wrap=True, overflow="fold")
        for support in SUPPORT_ORDER:
            table.add_column(support, justify="right")
        for entry in described:
            if entry.get("error"):
                table.add_row(entry["scheme"], f"[red]{entry['error']}[/]")
                continue
            counts = Counter(c["support"] for c in entry["capabilities"].values())
            table.add_row(entry["scheme"], str(entry["name"]),
                          *(str(counts.get(k, 0)) for k in SUPPORT_ORDER))
        if not err.is_terminal:
            err.width = max(err.width, 110)
        err.print(table)
        return
    for entry in described:
        table = Table(title=f"{entry['scheme']}  ({entry.get('class', '')})", title_justify="left")
        table.add_column("capability")
        table.add_column("declared")
        table.add_column("note")
        if entry.get("error"):
            table.add_row("-", "[red]error[/]", str(entry["error"]))
        for cid, cap in (entry.get("capabilities") or {}).items():
            colour = {"supported": "green", "unsupported": "red"}.get(cap["support"], "yellow")
            table.add_row(cid, f"[{colour}]{cap['support']}[/]", cap.get("note", ""))
        err.print(table)


def fixtures_schema_cmd() -> None:
    """Print the fixture tables and columns as Markdown (docs/fixtures.md)."""
    from bench.datagen.schema_doc import fixture_schema_markdown

    typer.echo(fixture_schema_markdown(), nl=False)
