"""The ``report``, ``compare`` and ``gate`` commands (registered by bench.cli).

Tables and progress go to stderr; ``--json`` and ``--markdown`` output goes to stdout.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bench.errors import UserError
from bench.results.thresholds import (
    DEFAULT_SEED,
    Thresholds,
    parse_threshold,
    resolve_thresholds,
)

if TYPE_CHECKING:
    from bench.results.collect import Run
    from bench.results.compare import Comparison

err = Console(stderr=True, soft_wrap=True)

ResultsArg = Annotated[
    list[Path],
    typer.Argument(help="Run result files, folders of them, or baseline bundles.",
                   show_default=False),
]
P50 = Annotated[str | None, typer.Option(
    "--p50", help="p50 latency threshold: 10%, 1ms or '10% and 1ms'.")]
P99 = Annotated[str | None, typer.Option(
    "--p99", help="p99 latency threshold: 20%, 2ms or '20% and 2ms'.")]
MIN_RUNS = Annotated[int | None, typer.Option(
    "--min-runs", help="Runs a side before the run-to-run spread counts as known (default 5).",
    min=2, max=1000)]
SCOPE = Annotated[str | None, typer.Option(
    "--scope", help="Gated metrics: overall (and dimensions; default) or all (every operation "
    "too, Holm-adjusted).")]
THROUGHPUT = Annotated[
    str | None, typer.Option("--throughput", help="Throughput threshold, e.g. 10%.")]
ALPHA = Annotated[
    float | None,
    typer.Option(help="Significance level of the tests (default 0.05).", min=1e-6, max=0.5)]
SETTINGS = Annotated[
    Path | None,
    typer.Option(help="TOML file with a [gate] table (gate settings or a scenario file); "
                 "default: the current runs' scenario file, if it has one.")]
MARKDOWN = Annotated[
    bool, typer.Option("--markdown", help="Print the comparison as Markdown on stdout.")]
JSON = Annotated[bool, typer.Option("--json", help="Print the comparison as JSON on stdout.")]
SEED = Annotated[int, typer.Option(help="Seed of the bootstrap intervals.")]


def gate_thresholds(
    settings: Path | None, runs: Sequence[Run], p50: str | None, p99: str | None,
    throughput: str | None, alpha: float | None, min_runs: int | None = None,
    scope: str | None = None,
) -> Thresholds:
    from bench.results.thresholds import check_setting

    flags: dict[str, object] = {
        "p50": parse_threshold(p50, "--p50") if p50 is not None else None,
        "p99": parse_threshold(p99, "--p99") if p99 is not None else None,
        "throughput": parse_threshold(throughput, "--throughput", absolute=False)
        if throughput is not None else None,
        "alpha": alpha,
        "min_runs": min_runs,
        "scope": check_setting("scope", scope, "--scope") if scope is not None else None,
    }
    return resolve_thresholds(settings, runs, flags)


def _print_comparison(comparison: Comparison, markdown: bool, json_out: bool) -> None:
    from bench.report.comparison import markdown as to_markdown
    from bench.report.comparison import table

    if not err.is_terminal:
        err.width = max(err.width, 160)
    err.print(table(comparison))
    if markdown:
        typer.echo(to_markdown(comparison), nl=False)
    elif json_out:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))


def _label(paths: Sequence[Path]) -> str:
    return " ".join(map(str, paths)) if len(paths) <= 3 else f"{len(paths)} inputs"


def _one_output(markdown: bool, json_out: bool) -> None:
    if markdown and json_out:
        raise UserError("choose one of --markdown and --json")


def report_cmd(
    results: ResultsArg,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: reports/<UTC time>/).")
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", help="Comma-separated: md,html,csv,parquet,json,junit.")
    ] = "md,html,csv,parquet,json,junit",
    claims: Annotated[
        Path | None,
        typer.Option(help="Vendor claims TOML (default: the copy shipped with crmbench)."),
    ] = None,
    no_claims: Annotated[
        bool, typer.Option("--no-claims", help="Show measured figures only.")
    ] = False,
    png: Annotated[
        bool, typer.Option("--png", help="Also export every chart as PNG (kaleido + Chromium).")
    ] = False,
    seed: SEED = DEFAULT_SEED,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the written files as JSON on stdout.")
    ] = False,
) -> None:
    """Write the comparative matrix, report.html and the capability report for run results."""
    from bench.claims import load_claims
    from bench.report.build import FORMATS, assemble, write
    from bench.results.collect import load_runs

    chosen = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown or not chosen:
        raise UserError(f"--format: unknown {', '.join(unknown) or '(none given)'}; "
                        f"choose from {','.join(FORMATS)}")
    runs = load_runs(results)
    if no_claims and claims is not None:
        raise UserError("choose one of --claims and --no-claims")
    folder = out or Path("reports") / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    with err.status(f"building the report of {len(runs)} run(s)"):
        report = assemble(runs, None if no_claims else load_claims(claims), seed=seed)
        written = write(report, folder, chosen, png=png, say=lambda m: err.print(m, markup=False))
    for run in runs:
        if run.problem:
            err.print(f"[yellow]{escape(run.source)}: {escape(run.problem)}[/]", highlight=False)
    err.print(f"[green]wrote {len(written)} files to {escape(str(folder))}[/]")
    if json_out:
        typer.echo(json.dumps({"out": str(folder), "files": [str(p) for p in written]},
                              indent=2))


def compare_cmd(
    base: Annotated[Path, typer.Argument(help="Base runs: a result, a folder or a bundle.")],
    current: Annotated[Path, typer.Argument(help="Current runs: a result, a folder or a bundle.")],
    p50: P50 = None,
    p99: P99 = None,
    throughput: THROUGHPUT = None,
    alpha: ALPHA = None,
    min_runs: MIN_RUNS = None,
    scope: SCOPE = None,
    settings: SETTINGS = None,
    markdown: MARKDOWN = False,
    json_out: JSON = False,
    seed: SEED = DEFAULT_SEED,
) -> None:
    """Change of p50, p99 and throughput per operation and dimension, with significance."""
    from bench.results.collect import load_runs
    from bench.results.compare import compare

    _one_output(markdown, json_out)
    base_runs, current_runs = load_runs([base]), load_runs([current])
    thresholds = gate_thresholds(settings, current_runs, p50, p99, throughput, alpha, min_runs,
                             scope)
    comparison = compare(base_runs, current_runs, thresholds, seed=seed,
                         base_label=str(base), current_label=str(current))
    _print_comparison(comparison, markdown, json_out)


def gate_cmd(
    current: ResultsArg,
    baseline: Annotated[
        Path, typer.Option(help="Baseline: a result file or a bundle (see --write-baseline).")
    ],
    p50: P50 = None,
    p99: P99 = None,
    throughput: THROUGHPUT = None,
    alpha: ALPHA = None,
    min_runs: MIN_RUNS = None,
    scope: SCOPE = None,
    settings: SETTINGS = None,
    markdown: MARKDOWN = False,
    json_out: JSON = False,
    github_benchmark: Annotated[
        Path | None,
        typer.Option(help="Write github-action-benchmark customSmallerIsBetter JSON here."),
    ] = None,
    bmf: Annotated[
        Path | None, typer.Option(help="Write Bencher Metric Format JSON here.")
    ] = None,
    write_baseline: Annotated[
        bool,
        typer.Option("--write-baseline",
                     help="Store the current runs as the new baseline file instead of gating."),
    ] = False,
    seed: SEED = DEFAULT_SEED,
) -> None:
    """Exit 1 on a significant regression beyond its threshold, 3 on an invalid run, else 0."""
    from bench.results.collect import load_runs, write_bundle
    from bench.results.compare import gate
    from bench.results.export import bencher_bmf
    from bench.results.export import github_benchmark as gab_entries

    _one_output(markdown, json_out)
    current_runs = load_runs(current)
    problems = [f"{r.source}: {r.problem}" for r in current_runs if r.problem]
    if write_baseline:
        problems += [f"{r.source}: noisy ({'; '.join(r.noise_reasons)})"
                     for r in current_runs if r.noisy and not r.problem]
        if problems:
            for p in problems:
                err.print(f"[red]{escape(p)}[/]", highlight=False)
            err.print("[red]baseline not written: every run must be complete, valid and not "
                      "noisy[/]")
            raise typer.Exit(3)
        note = f"written by crmbench gate --write-baseline at {dt.datetime.now(dt.UTC):%Y-%m-%d}"
        write_bundle(current_runs, baseline, note)
        err.print(f"[green]baseline of {len(current_runs)} run(s) written to "
                  f"{escape(str(baseline))}[/]")
        return
    if github_benchmark is not None:
        github_benchmark.write_text(json.dumps(gab_entries(current_runs, seed), indent=1) + "\n")
        err.print(f"github-action-benchmark JSON written to {github_benchmark}", markup=False)
    if bmf is not None:
        bmf.write_text(json.dumps(bencher_bmf(current_runs, seed), indent=1) + "\n")
        err.print(f"Bencher Metric Format JSON written to {bmf}", markup=False)
    baseline_runs = load_runs([baseline])
    thresholds = gate_thresholds(settings, current_runs, p50, p99, throughput, alpha, min_runs,
                             scope)
    result = gate(baseline_runs, current_runs, thresholds, seed=seed,
                  baseline_label=str(baseline), current_label=_label(current))
    if result.comparison is None:
        for p in result.problems:
            err.print(f"[red]{escape(p)}[/]", highlight=False)
        err.print("[red]gate: a run is invalid or incomplete (exit 3)[/]")
        raise typer.Exit(result.exit_code)
    _print_comparison(result.comparison, markdown, json_out)
    improvements = len(result.comparison.improvements)
    if result.exit_code:
        err.print(f"[red]gate: {len(result.comparison.regressions)} significant regression(s) "
                  f"beyond threshold (exit 1); {improvements} improvement(s)[/]")
        raise typer.Exit(result.exit_code)
    if result.comparison.inconclusive:
        err.print("[yellow]gate: inconclusive, nothing could be tested (see the notes); "
                  "not failing the build[/]")
        return
    err.print(f"[green]gate: no significant regression; {improvements} improvement(s)[/]")
