"""Command line of crmbench: parses, calls, prints. Progress goes to stderr, data to stdout."""

from __future__ import annotations

import json
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bench import __version__
from bench.errors import CrmBenchError, UserError

err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="crmbench",
    help="Benchmark harness and capability test suite for CRM platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
fixtures_app = typer.Typer(help="Generate and inspect fixture datasets.", no_args_is_help=True)
app.add_typer(fixtures_app, name="fixtures")

DEFAULT_FIXTURES = Path("fixtures/data/default")
DEFAULT_LOAD_STATE = Path("reports/loads")
RunFixturesOption = Annotated[
    Path | None,
    typer.Option(help="Fixture profile for reference://embedded, and what an empty target is "
                 "loaded with through its adapter's load hook (default: fixtures/data/default;"
                 " named here, a target holding another profile is refused)."),
]
LoadStateOption = Annotated[
    Path, typer.Option(help="Folder of load journals and records (as for crmbench load).",
                       envvar="CRMBENCH_LOAD_STATE_DIR"),
]

LabelOption = Annotated[
    str | None, typer.Option(help="Server configuration of the target, e.g. 'workers=2': "
                             "reports never pool runs of different labels."),
]


class Locale(StrEnum):
    en_US = "en_US"
    zh_CN = "zh_CN"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crmbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Benchmark harness and capability test suite for CRM platforms."""


@fixtures_app.command("generate")
def fixtures_generate(
    customers: Annotated[int, typer.Option(help="Number of customers; every table scales.")] = (
        100_000
    ),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 42,
    locale: Annotated[Locale, typer.Option(help="Faker locale of names.")] = Locale.en_US,
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_FIXTURES,
    force: Annotated[bool, typer.Option(help="Regenerate even if the folder is current.")] = (
        False
    ),
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest on stdout.")] = (
        False
    ),
) -> None:
    """Generate a fixture profile as Parquet files with a manifest.json."""
    from bench.datagen.generate import generate, is_current

    if not force and is_current(out, customers=customers, seed=seed, locale=locale.value):
        err.print(f"[green]fixtures in {out} are current[/] (use --force to regenerate)")
        manifest = json.loads((out / "manifest.json").read_text())
    else:
        start = time.perf_counter()
        with err.status(f"generating {customers:,} customers into {out}") as status:

            def progress(table: str, done: int, total: int) -> None:
                status.update(f"generating fixtures: {table} ({done}/{total})")

            result = generate(
                out, customers=customers, seed=seed, locale=locale.value, progress=progress
            )
        manifest = dict(result)
        rows = sum(int(t["rows"]) for t in manifest["tables"].values())
        err.print(
            f"[green]wrote {rows:,} rows in {len(manifest['tables'])} tables to {out} "
            f"in {time.perf_counter() - start:.1f} s[/]"
        )
    if json_out:
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))


DbOption = Annotated[
    str | None,
    typer.Option(
        help="Database URL: sqlite:///FILE (default: reference.sqlite3 in the data "
        "folder; add ?synchronous=full for writes that survive power loss, not only a "
        "crash of the service) or postgresql://user@host:port/db.",
        envvar="CRMBENCH_DATABASE_URL",
    ),
]
NatsOption = Annotated[
    str | None,
    typer.Option(help="Also ingest customer-data events from NATS JetStream subject "
                 "crmbench.events at this URL (e.g. nats://127.0.0.1:4222).",
                 envvar="CRMBENCH_NATS_URL"),
]
TestClockOption = Annotated[
    bool,
    typer.Option(help="Enable GET /clock and POST /clock/advance, so tests can move "
                 "the service's time (never on a real deployment)."),
]
SlowdownMsOption = Annotated[
    float,
    typer.Option(help="Gate calibration only (needs CRMBENCH_TEST_MODE=1): burn this many "
                 "ms of CPU in every request."),
]
SlowdownPctOption = Annotated[
    float,
    typer.Option(help="Gate calibration only (needs CRMBENCH_TEST_MODE=1): burn this share "
                 "of each request's handling time again, in %."),
]
DelayMsOption = Annotated[
    float,
    typer.Option(help="Gate calibration only (needs CRMBENCH_TEST_MODE=1): wait this many "
                 "ms, without CPU, before every response."),
]
TokensOption = Annotated[
    Path | None,
    typer.Option(help="TOML file of named tokens with roles (see README, 'Roles').",
                 envvar="CRMBENCH_TOKENS_FILE"),
]
RoleTokenOption = Annotated[
    list[str] | None,
    typer.Option(help="Generate a named token: ROLE:NAME[:REP_ID][@REGION,...]; "
                 "repeatable; its secret is printed once."),
]
ServeWorkersOption = Annotated[
    int,
    typer.Option(help="Serve from this many processes on one port (more than 1 needs "
                 "PostgreSQL).", min=1),
]


@app.command()
def serve(
    db: DbOption = None,
    data: Annotated[
        Path | None, typer.Option(help="Fixture folder to load (from 'fixtures generate').")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    reset: Annotated[
        bool, typer.Option(help="Drop what the database holds and load the fixtures anew.")
    ] = False,
    load_only: Annotated[
        bool, typer.Option(help="Load the fixtures, report the time and exit.")
    ] = False,
    test_clock: TestClockOption = False,
    nats: NatsOption = None,
    slowdown_ms: SlowdownMsOption = 0.0,
    slowdown_pct: SlowdownPctOption = 0.0,
    delay_ms: DelayMsOption = 0.0,
    workers: ServeWorkersOption = 1,
    tokens: TokensOption = None,
    role_token: RoleTokenOption = None,
) -> None:
    """Run the reference CRM over HTTP (token from CRMBENCH_API_TOKEN, else generated)."""
    from reference_impl.server import check_workers, default_db_url, load, resolve_token
    from reference_impl.server import serve as run_server
    from reference_impl.slowdown import checked

    slowdown = checked(slowdown_ms, slowdown_pct, delay_ms)

    if data is not None and not (data / "manifest.json").is_file():
        raise UserError(
            f"{data} holds no fixture profile (manifest.json missing); "
            f"run: crmbench fixtures generate --out {data}"
        )
    url = db or default_db_url(data)
    check_workers(url, workers, test_clock=test_clock)
    info = load(url, data, reset=reset, say=lambda msg: err.print(msg))
    if info.loaded_now:
        total = sum(info.rows.values())
        err.print(f"[green]loaded {total:,} rows in {info.seconds:.1f} s[/]")
    if load_only:
        return
    token, generated = resolve_token()
    from reference_impl.access import resolve_access

    named, made = resolve_access(tokens, role_token or [], service_token=token)
    err.print(f"reference CRM on http://{host}:{port}  (OpenAPI: /openapi.json)"
              + (f", {workers} processes" if workers > 1 else ""))
    if generated:
        err.print(f"API token (set CRMBENCH_API_TOKEN to choose one): {token}")
    for new in made:
        err.print(f"token {new.principal.name} ({new.principal.role}): {new.secret}",
                  markup=False)
    if test_clock:
        err.print("[yellow]test clock enabled: POST /clock/advance moves the service's time[/]")
    if slowdown.active:
        err.print(f"[yellow]injected slowdown: {slowdown.ms:g} ms + {slowdown.pct:g} % of "
                  f"CPU and a {slowdown.delay_ms:g} ms wait per request (gate calibration)[/]")
    run_server(url, host, port, token, nats_url=nats, test_clock=test_clock, slowdown=slowdown,
               workers=workers, tokens=named)


class Profile(StrEnum):
    quick = "quick"
    standard = "standard"
    full = "full"


class OverQuota(StrEnum):
    scale = "scale"
    refuse = "refuse"


AllowProductionOption = Annotated[
    bool, typer.Option(help="Allow a run against a production org of a live vendor.")
]
PinOption = Annotated[
    bool,
    typer.Option(help="Run an embedded reference CRM of one SQLite process on a core of its "
                 "own and the load generator on the others (with two cores or more)."),
]
OverQuotaOption = Annotated[
    OverQuota,
    typer.Option(help="When a vendor's documented quotas allow less than the scenario's rate: "
                 "scale the run to what they allow (said in the result) or refuse it."),
]


@app.command()
def run(
    target: Annotated[
        str,
        typer.Option(
            help="Target URL: reference://embedded, reference+http://HOST:PORT, "
            "noop://?delay_ms=1, ...",
            envvar="CRMBENCH_TARGET",
        ),
    ] = "reference://embedded",
    scenario: Annotated[str, typer.Option(help="Scenario name or TOML file.")] = "mixed",
    profile: Annotated[
        Profile | None,
        typer.Option(help="Phase lengths: quick (~30 s), standard (~3 min), full (~6 min)."),
    ] = None,
    users: Annotated[int | None, typer.Option(help="Concurrent users.", min=1)] = None,
    rate: Annotated[float | None, typer.Option(help="Target total rate, req/s.", min=0.001)] = (
        None
    ),
    workers: Annotated[
        int, typer.Option(help="Locust worker processes on this machine.", min=1, max=64)
    ] = 1,
    out: Annotated[Path, typer.Option(help="Folder for the result files.")] = Path(
        "reports/runs"
    ),
    fixtures: RunFixturesOption = None,
    load_state: LoadStateOption = DEFAULT_LOAD_STATE,
    calibrate: Annotated[
        bool, typer.Option(help="Measure the harness overhead against a no-op target first.")
    ] = True,
    allow_production: AllowProductionOption = False,
    over_quota: OverQuotaOption = OverQuota.scale,
    remote_workers: Annotated[
        int,
        typer.Option(help="Also wait for this many workers started on other hosts with "
                     "'crmbench worker --master HOST:PORT'.", min=0, max=1000),
    ] = 0,
    master_bind: Annotated[
        str, typer.Option(help="Address the Locust master listens on for workers.")
    ] = "127.0.0.1",
    master_port: Annotated[
        int | None, typer.Option(help="Port of the Locust master (default: a free one).")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the result path and headline figures on stdout.")
    ] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option("--report", help="Also write the report of this run (matrix, report.html, "
                     "capability report) into this folder."),
    ] = None,
    label: LabelOption = None,
    pin: PinOption = True,
) -> None:
    """Run a workload scenario against a target and write its result file."""
    from bench.report.progress import RunProgress
    from bench.scenarios.config import load_scenario
    from bench.scenarios.runner import RunRequest, check_target_url
    from bench.scenarios.runner import run as run_scenario

    resolved = load_scenario(
        scenario, profile=profile.value if profile else None, users=users, rate=rate
    )
    check_target_url(target)
    request = RunRequest(resolved, target=target, workers=workers, out=out,
                         fixtures=fixtures or DEFAULT_FIXTURES, fixtures_given=bool(fixtures),
                         load_state=load_state, calibrate=calibrate,
                         allow_production=allow_production, remote_workers=remote_workers,
                         master_bind=master_bind, master_port=master_port, label=label,
                         over_quota=over_quota.value, pin=pin)
    with RunProgress(err, resolved) as progress:
        report = run_scenario(request, say=progress.say, on_interval=progress.update)
    _print_run(report.path, report.result)
    if report_dir is not None:
        _write_report(report.path, report_dir)
    if json_out:
        typer.echo(json.dumps(_headline(report.path, report.result), indent=2))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _print_run(path: Path, result: dict[str, Any]) -> None:
    """What a run measured, whether it can be trusted, and where its result is."""
    from bench.report.progress import probes_table, summary_table

    if not err.is_terminal:
        err.width = max(err.width, 132)
    if result["operations"]:
        err.print(summary_table(result))
    if result.get("dimensions") or result.get("capabilities"):
        err.print(probes_table(result))
    if result["scenario"].get("workload") is False:
        err.print("probes only: no load was sent")
    if result["complete"] and result["valid"]:
        err.print(f"[green]result written to {path}[/]")
    else:
        why = "; ".join(result["invalid_reasons"]) or "incomplete"
        err.print(f"[yellow]result written to {path}, marked "
                  f"{'invalid' if result['complete'] else 'incomplete'}: {escape(why)}[/]")
    noise = result.get("noise") or {}
    if noise.get("noisy"):
        err.print(f"[yellow]run flagged noisy (no evidence for a gate): "
                  f"{escape('; '.join(noise['reasons']))}[/]")
    if noise.get("server_cpu_ms_per_request") is not None:
        err.print(f"server CPU {noise['server_cpu_ms_per_request']:.3f} ms per request "
                  f"({noise['server_cpu_pct']:.0f} % of a core); steal "
                  f"{noise.get('steal_pct', 0):.1f} %, other processes "
                  f"{noise.get('other_cpu_pct', 0):.0f} % of a core")


def _write_report(result_path: Path, report_dir: Path) -> None:
    from bench.claims import load_claims
    from bench.report.build import FORMATS, assemble, write
    from bench.results.collect import load_runs

    built = assemble(load_runs([result_path]), load_claims(None))
    written = write(built, report_dir, list(FORMATS), say=lambda m: err.print(m, markup=False))
    err.print(f"[green]report: {len(written)} files in {escape(str(report_dir))}[/]")


@app.command()
def ab(
    b: Annotated[str, typer.Option("--b", help="Target B (the candidate), e.g. "
                                   "'reference://embedded?source=../head'.")],
    a: Annotated[str, typer.Option("--a", help="Target A (the base).")] = "reference://embedded",
    scenario: Annotated[str, typer.Option(help="Scenario name or TOML file.")] = "mixed",
    profile: Annotated[
        Profile, typer.Option(help="Phase lengths of every round.")] = Profile.quick,
    users: Annotated[int | None, typer.Option(help="Concurrent users.", min=1)] = None,
    rate: Annotated[float | None, typer.Option(help="Target total rate, req/s.", min=0.001)] = (
        None
    ),
    pairs: Annotated[int, typer.Option(help="Usable pairs of rounds (A and B) to run.",
                                       min=2, max=200)] = 5,
    max_pairs: Annotated[
        int | None,
        typer.Option(help="Pairs to try at most when rounds are noisy or invalid "
                     "(default 2 x --pairs).", min=2, max=400),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the rounds and ab.json.")] = Path(
        "reports/ab"
    ),
    fixtures: Annotated[
        Path, typer.Option(help="Fixture profile for reference://embedded.")
    ] = DEFAULT_FIXTURES,
    p50: Annotated[str | None, typer.Option("--p50", help="p50 threshold: 10%, 1ms or "
                                            "'10% and 1ms'.")] = None,
    p99: Annotated[str | None, typer.Option("--p99", help="p99 threshold.")] = None,
    alpha: Annotated[float | None, typer.Option(help="Significance level.", min=1e-6,
                                                max=0.5)] = None,
    scope: Annotated[str | None, typer.Option(help="Gated metrics: overall or all.")] = None,
    settings: Annotated[
        Path | None, typer.Option(help="TOML file with a [gate] table (default: the "
                                  "scenario's own).")] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the result as Markdown on stdout.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print ab.json on stdout.")] = False,
    pin: PinOption = True,
) -> None:
    """Interleaved A/B of two targets or builds on this machine (ABBA rounds, paired test);
    exit 1 when B is significantly worse beyond a threshold."""
    from bench.report.commands import gate_thresholds
    from bench.report.comparison import markdown as to_markdown
    from bench.report.comparison import table
    from bench.report.progress import RunProgress
    from bench.scenarios.ab import AbRequest, run_ab, summary
    from bench.scenarios.config import load_scenario
    from bench.scenarios.runner import check_target_url

    if markdown and json_out:
        raise UserError("choose one of --markdown and --json")
    resolved = load_scenario(scenario, profile=profile.value, users=users, rate=rate)
    check_target_url(a)
    check_target_url(b)
    thresholds = gate_thresholds(settings or Path(resolved.source), [], p50, p99, None, alpha,
                                 None, scope)
    request = AbRequest(resolved, a=a, b=b, thresholds=thresholds, pairs=pairs,
                        max_pairs=max_pairs, out=out, fixtures=fixtures, pin=pin)
    with RunProgress(err, resolved) as progress:
        outcome = run_ab(request, say=progress.say, on_interval=progress.update)
    if outcome.comparison is not None:
        if not err.is_terminal:
            err.width = max(err.width, 160)
        err.print(table(outcome.comparison))
        if markdown:
            typer.echo(to_markdown(outcome.comparison), nl=False)
    if json_out:
        typer.echo(outcome.path.read_text(), nl=False)
    colour = "red" if outcome.exit_code else "green"
    err.print(f"[{colour}]{escape(summary(outcome))}[/]")
    err.print(f"rounds and ab.json in {escape(str(outcome.path.parent))}")
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@app.command()
def capacity(
    target: Annotated[
        str, typer.Option(help="Target URL.", envvar="CRMBENCH_TARGET")
    ] = "reference://embedded",
    scenario: Annotated[str, typer.Option(help="Scenario name or TOML file.")] = "mixed",
    profile: Annotated[
        Profile, typer.Option(help="Phase lengths of every step.")] = Profile.quick,
    users: Annotated[int | None, typer.Option(help="Concurrent users.", min=1)] = None,
    slo_p99: Annotated[float, typer.Option("--slo-p99", help="SLO: p99 (ms) from the "
                                           "intended send time.", min=0.001)] = 50.0,
    max_errors: Annotated[str, typer.Option(help="SLO: largest share of errors.")] = "1%",
    start: Annotated[float, typer.Option(help="First offered rate, req/s.", min=0.001)] = 250.0,
    max_rate: Annotated[float, typer.Option(help="Highest rate to offer, req/s.",
                                            min=0.001)] = 8000.0,
    factor: Annotated[float, typer.Option(help="Rate multiplier between steps.")] = 2.0,
    bisect: Annotated[int, typer.Option(help="Bisection steps after the first failure.",
                                        min=0, max=10)] = 3,
    workers: Annotated[
        int, typer.Option(help="Locust worker processes on this machine.", min=1, max=64)
    ] = 1,
    out: Annotated[Path, typer.Option(help="Folder for the steps and the capacity result.")] = (
        Path("reports/capacity")
    ),
    fixtures: Annotated[
        Path, typer.Option(help="Fixture profile for reference://embedded.")
    ] = DEFAULT_FIXTURES,
    label: LabelOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the capacity on stdout.")] = (
        False
    ),
    pin: PinOption = True,
) -> None:
    """Highest offered rate at which the workload holds the SLO (step up, then bisect)."""
    from bench.report.progress import RunProgress
    from bench.results.thresholds import parse_percent
    from bench.scenarios.capacity import CapacityRequest, Slo, find_capacity
    from bench.scenarios.config import load_scenario
    from bench.scenarios.runner import check_target_url

    resolved = load_scenario(scenario, profile=profile.value, users=users)
    check_target_url(target)
    request = CapacityRequest(
        resolved, target, Slo(slo_p99, parse_percent(max_errors, "--max-errors")),
        start_rate=start, max_rate=max_rate, factor=factor, bisect_steps=bisect,
        workers=workers, out=out, fixtures=fixtures, label=label, pin=pin)
    with RunProgress(err, resolved) as progress:
        path, entry = find_capacity(request, say=progress.say, on_interval=progress.update)
    for point in entry["curve"]:
        mark = "holds" if point["holds"] else point["why"]
        err.print(f"{point['offered_rate']:>9,.0f} req/s  p50 {point['p50_ms'] or 0:8.2f} ms  "
                  f"p99 {point['p99_ms'] or 0:9.2f} ms  {escape(mark)}", highlight=False)
    if entry["value"] is None:
        err.print(f"[red]capacity: {escape(entry['reason'])}[/]")
    else:
        least = "at least " if entry.get("at_least") else ""
        err.print(f"[green]capacity at {escape(entry['slo'])}: {least}"
                  f"{entry['value']:,.0f} req/s[/]")
    err.print(f"result written to {escape(str(path))}")
    if json_out:
        typer.echo(json.dumps({"result": str(path), **entry}, indent=2))
    if entry["value"] is None:
        raise typer.Exit(1)


def _headline(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    ops = result["operations"]
    overhead = result.get("harness_overhead") or {}
    return {
        "result": str(path),
        "complete": result["complete"],
        "valid": result["valid"],
        "invalid_reasons": result["invalid_reasons"],
        "load": result["load"],
        "operations": {
            op: {"count": o["count"], "errors": o["errors"], "throughput": o["throughput"],
                 "intended_ms": {k: o["latency_ms"]["intended"][k] for k in ("p50", "p99")},
                 "actual_ms": {k: o["latency_ms"]["actual"][k] for k in ("p50", "p99")}}
            for op, o in ops.items()
        },
        "harness_overhead": overhead.get("latency_ms"),
        "noise": {k: v for k, v in (result.get("noise") or {}).items() if k != "limits"},
    }


@app.command()
def worker(
    master: Annotated[str, typer.Option(help="HOST:PORT of the master started by 'crmbench run'.")],
    index: Annotated[int, typer.Option(help="Worker number, for seeds and logs.", min=0)] = 0,
) -> None:
    """Join a run on another host as a Locust worker (credentials from the environment)."""
    host, sep, port = master.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--master must be HOST:PORT, got {master!r}")
    # The worker is a gevent process of its own: replace this one rather than patch it.
    os.execv(sys.executable, [sys.executable, "-m", "bench.scenarios.driver", "--role", "worker",
                              "--master-host", host, "--master-port", port,
                              "--index", str(index)])


def _register_commands() -> None:
    from bench.adapters.commands import (
        adapters_cmd,
        cleanup_cmd,
        doctor_cmd,
        fixtures_schema_cmd,
        load_cmd,
    )
    from bench.report.commands import compare_cmd, gate_cmd, report_cmd

    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
    app.command("gate")(gate_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("cleanup")(cleanup_cmd)
    app.command("load")(load_cmd)
    app.command("adapters")(adapters_cmd)
    fixtures_app.command("schema")(fixtures_schema_cmd)


_register_commands()


def _interruptible() -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop a run in order (partial result kept, the signal named),
    even when this process was started with SIGINT ignored, as a background job of a
    non-interactive shell is."""
    import signal

    from bench.errors import Interrupted

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def main() -> None:
    """Console entry point: user errors are printed without a traceback."""
    _interruptible()
    try:
        app()
    except CrmBenchError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
