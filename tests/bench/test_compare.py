"""Comparison and CI gate: significance tests, thresholds, exit codes, exports.

Synthetic runs are derived from the committed real run by rescaling its HDR histograms,
so a regression of known size can be injected. Every bootstrap is seeded.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from hdrh.histogram import HdrHistogram
from typer.testing import CliRunner

from bench.errors import UserError
from bench.measure.hdr import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS, LatencyHistogram
from bench.report.commands import compare_cmd, gate_cmd, report_cmd
from bench.report.comparison import MARKDOWN_LIMIT, markdown
from bench.results import stats
from bench.results.collect import Run, load_runs
from bench.results.compare import compare, gate
from bench.results.export import bencher_bmf, github_benchmark
from bench.results.store import validate
from bench.results.thresholds import Thresholds, parse_percent, resolve_thresholds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "reports" / "examples" / "mixed-reference-standard.json"
Scale = Callable[[float], float]


def example_result() -> dict[str, Any]:
    """The committed real run (standard profile, embedded reference CRM)."""
    result: dict[str, Any] = json.loads(EXAMPLE.read_text())
    result["target"]["platform"] = "reference"
    return result


def scale_histogram(encoded: str, scale: Scale) -> str:
    """Re-record every bucket of a histogram at ``scale(value_ms)``."""
    out = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    hist = stats.buckets(encoded)
    for value, count in zip(hist.values_ms, hist.counts, strict=True):
        out.record_value(max(LOWEST_US, round(scale(float(value)) * 1000)), int(count))
    raw = out.encode()
    return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)


def tail(factor: float, above_percentile: float, encoded: str) -> Scale:
    """Scale only the values above a percentile: moves p99, leaves p50 where it is."""
    cut = stats.buckets(encoded).percentile(above_percentile)
    return lambda v: v * factor if v > cut else v


def scaled(
    result: dict[str, Any], *, latency: float | None = None, tail_factor: float | None = None,
    throughput: float = 1.0, run_id: str = "synthetic",
) -> dict[str, Any]:
    """A copy of ``result`` with latencies (all, or the tail above p90) and rates scaled."""
    out = copy.deepcopy(result)
    out["run_id"] = run_id
    for op in [*out["operations"].values(), out["overall"]]:
        for kind in ("intended", "actual"):
            encoded = op["histograms"][kind]
            if tail_factor is not None:
                scale = tail(tail_factor, 90, encoded)
            else:
                factor = latency if latency is not None else 1.0
                scale = lambda v, f=factor: v * f  # noqa: E731
            op["histograms"][kind] = scale_histogram(encoded, scale)
            op["latency_ms"][kind] = LatencyHistogram.decode(op["histograms"][kind]).summary()
        op["count"] = round(op["count"] * throughput)
        op["statuses"] = {"ok": op["count"]}
        op["throughput"] = op["throughput"] * throughput
    for row in out["timeline"]:
        row["completed"] = round(row["completed"] * throughput)
        row["rate"] = round(row["rate"] * throughput)
    return out


def rescaled_summaries(result: dict[str, Any], factor: float, run_id: str) -> dict[str, Any]:
    """Latency summaries times ``factor``, histograms kept: the U test reads only summaries."""
    out = copy.deepcopy(result)
    out["run_id"] = run_id
    for op in [*out["operations"].values(), out["overall"]]:
        for summary in op["latency_ms"].values():
            summary.update({k: v * factor for k, v in summary.items() if k != "count"})
    return out


def runs_of(*results: dict[str, Any]) -> list[Run]:
    return [Run(f"mem#{i}", r) for i, r in enumerate(results)]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return example_result()


@pytest.fixture(scope="module")
def p99_regression(base: dict[str, Any]) -> dict[str, Any]:
    return scaled(base, tail_factor=1.3, run_id="tail30")


def test_scaled_histograms_are_valid_results(base: dict[str, Any],
                                             p99_regression: dict[str, Any]) -> None:
    assert validate(p99_regression) == []
    before, after = base["overall"]["latency_ms"]["intended"], \
        p99_regression["overall"]["latency_ms"]["intended"]
    assert after["p99"] == pytest.approx(before["p99"] * 1.3, rel=0.01)
    assert after["p50"] == pytest.approx(before["p50"], rel=0.002)
    assert after["count"] == before["count"]


def test_buckets_match_hdr_percentiles(base: dict[str, Any]) -> None:
    encoded = base["overall"]["histograms"]["intended"]
    hist, ref = stats.buckets(encoded), LatencyHistogram.decode(encoded)
    assert hist.total == ref.count
    for p in (1, 50, 90, 99, 99.9, 100):
        assert hist.percentile(p) == pytest.approx(ref.percentile_ms(p))
    assert list(hist.percentiles([50, 99])) == [hist.percentile(50), hist.percentile(99)]


def test_histogram_bootstrap_brackets_the_percentile(base: dict[str, Any]) -> None:
    hist = stats.buckets(base["overall"]["histograms"]["intended"])
    boot = hist.boot_percentile(99, np.random.default_rng(1))
    low, high = stats.interval(boot)
    assert low <= hist.percentile(99) <= high
    assert high / low < 1.2  # 120,000 samples pin p99 down well


def test_merged_histograms_add_samples(base: dict[str, Any]) -> None:
    encoded = base["overall"]["histograms"]["intended"]
    assert stats.buckets([encoded, encoded]).total == 2 * stats.buckets(encoded).total


def test_injected_p99_regression_fails_the_gate(base: dict[str, Any],
                                               p99_regression: dict[str, Any]) -> None:
    outcome = gate(runs_of(base), runs_of(p99_regression), Thresholds())
    assert outcome.exit_code == 1
    assert outcome.comparison is not None
    regressed = {(c.subject, c.metric) for c in outcome.comparison.regressions}
    assert ("overall", "p99") in regressed
    assert all(metric == "p99" for _, metric in regressed)
    overall = next(c for c in outcome.comparison.changes
                   if (c.subject, c.metric) == ("overall", "p99"))
    assert overall.change == pytest.approx(0.3, abs=0.02)
    assert overall.method == "bootstrap (histogram)"
    assert overall.p_worse is not None and overall.p_worse < 0.05


def test_noise_level_difference_passes(base: dict[str, Any]) -> None:
    noisy = scaled(base, latency=1.03, throughput=0.99, run_id="noise")
    outcome = gate(runs_of(base), runs_of(noisy), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None
    assert not outcome.comparison.regressions
    assert {c.verdict for c in outcome.comparison.changes} == {"unchanged"}


def test_improvement_is_reported_not_failed(base: dict[str, Any]) -> None:
    faster = scaled(base, latency=0.7, run_id="faster")
    outcome = gate(runs_of(base), runs_of(faster), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None
    improved = {(c.subject, c.metric) for c in outcome.comparison.improvements}
    assert {("overall", "p50"), ("overall", "p99")} <= improved


@pytest.mark.parametrize("breakage", ["invalid", "incomplete"])
def test_invalid_or_incomplete_run_exits_3(base: dict[str, Any], breakage: str) -> None:
    broken = copy.deepcopy(base)
    if breakage == "invalid":
        broken["valid"] = False
        broken["invalid_reasons"] = ["generator CPU 97% exceeds 90% of a core"]
    else:
        broken["complete"] = False
        broken["abort_reason"] = "interrupted by the user"
    outcome = gate(runs_of(base), runs_of(broken), Thresholds())
    assert outcome.exit_code == 3
    assert outcome.comparison is None
    assert breakage in outcome.problems[0]
    assert gate(runs_of(broken), runs_of(base), Thresholds()).exit_code == 3


def test_repetitions_use_mann_whitney(base: dict[str, Any]) -> None:
    jitter = (0.97, 0.99, 1.0, 1.01, 1.03)
    before = [rescaled_summaries(base, j, f"b{i}") for i, j in enumerate(jitter)]
    after = [rescaled_summaries(base, 1.3 * j, f"a{i}") for i, j in enumerate(jitter)]
    outcome = gate(runs_of(*before), runs_of(*after), Thresholds())
    assert outcome.exit_code == 1
    assert outcome.comparison is not None
    p99 = next(c for c in outcome.comparison.changes
               if (c.subject, c.metric) == ("overall", "p99"))
    assert p99.method == "mann-whitney"
    assert p99.p_worse == pytest.approx(1 / 252)  # exact: all 5 above all 5
    assert p99.base is not None and p99.base.n == 5
    assert p99.base.low <= p99.base.value <= p99.base.high
    same = [rescaled_summaries(base, j * 1.02, f"s{i}") for i, j in enumerate(jitter)]
    assert gate(runs_of(*before), runs_of(*same), Thresholds()).exit_code == 0


def test_large_change_without_significance_is_not_a_regression(base: dict[str, Any]) -> None:
    # Medians move by +33%, but the repetitions overlap: U test p = 0.21.
    before = [rescaled_summaries(base, f, f"b{f}") for f in (1.0, 1.1, 1.2, 2.0, 2.1)]
    after = [rescaled_summaries(base, f, f"a{f}") for f in (1.05, 1.15, 1.6, 2.1, 2.2)]
    comparison = compare(runs_of(*before), runs_of(*after), Thresholds())
    p50 = next(c for c in comparison.changes if (c.subject, c.metric) == ("overall", "p50"))
    assert p50.change is not None and p50.change > 0.10
    assert p50.verdict == "not significant"
    assert p50.p_worse is not None and p50.p_worse > 0.05


def test_comparison_is_reproducible(base: dict[str, Any],
                                    p99_regression: dict[str, Any]) -> None:
    first = compare(runs_of(base), runs_of(p99_regression), Thresholds(), seed=7).to_dict()
    again = compare(runs_of(base), runs_of(p99_regression), Thresholds(), seed=7).to_dict()
    assert first == again


def test_dimensions_are_compared_when_present(base: dict[str, Any]) -> None:
    hist = base["overall"]["histograms"]["intended"]
    with_dims = copy.deepcopy(base)
    with_dims["dimensions"] = {"agent_latency": {
        "capability": "agent.latency", "status": "pass", "value": 1.7, "unit": "ms",
        "p50": 1.7, "p99": 13.4, "histogram": hist}}
    slower = copy.deepcopy(with_dims)
    slower["dimensions"]["agent_latency"].update(
        p50=2.6, p99=20.0, histogram=scale_histogram(hist, lambda v: v * 1.5))
    comparison = compare(runs_of(with_dims), runs_of(slower), Thresholds())
    agent = [c for c in comparison.changes if c.subject == "agent.latency"]
    assert {c.metric for c in agent} == {"p50", "p99"}
    assert all(c.verdict == "regression" for c in agent)


def test_markdown_stays_under_the_pull_request_limit(base: dict[str, Any],
                                                      p99_regression: dict[str, Any]) -> None:
    comparison = compare(runs_of(base), runs_of(p99_regression), Thresholds())
    short = markdown(comparison)
    assert "regression" in short and "| overall | p99 (ms)" in short
    huge = replace(comparison, changes=comparison.changes * 400)
    text = markdown(huge)
    assert len(text) <= MARKDOWN_LIMIT
    assert "left out" in text
    first_row = next(line for line in text.splitlines() if line.startswith("| ") and "🔴" in line)
    assert "regression" in first_row


def test_thresholds_precedence(tmp_path: Path, base: dict[str, Any]) -> None:
    settings = tmp_path / "gate.toml"
    settings.write_text('[gate]\np50 = "15%"\np99 = 25\nalpha = 0.01\n')
    t = resolve_thresholds(settings, runs_of(base), {"p99": 0.3, "p50": None})
    assert (t.p50, t.p99, t.throughput, t.alpha) == (0.15, 0.3, 0.10, 0.01)
    assert parse_percent("10%", "x") == pytest.approx(0.1)
    for bad in ("ten", "-5%", "0"):
        with pytest.raises(UserError):
            parse_percent(bad, "--p99")
    settings.write_text("[gate]\np95 = 1\n")
    with pytest.raises(UserError, match="unknown keys"):
        resolve_thresholds(settings, runs_of(base), {})


def test_exports_follow_the_published_formats(base: dict[str, Any]) -> None:
    runs = runs_of(base)
    entries = github_benchmark(runs)
    assert entries and all(set(e) == {"name", "unit", "value", "range", "extra"}
                           for e in entries)
    assert all(isinstance(e["value"], float) and e["unit"] == "ms" for e in entries)
    names = {e["name"] for e in entries}
    assert "mixed/reference/overall p99" in names
    bmf = bencher_bmf(runs)
    latency = bmf["mixed/reference/overall/p99"]["latency"]
    assert latency["value"] == pytest.approx(base["overall"]["latency_ms"]["intended"]["p99"]
                                             * 1e6)
    assert latency["lower_value"] <= latency["value"] <= latency["upper_value"]
    assert set(bmf["mixed/reference/overall"]) == {"throughput"}


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
    app.command("gate")(gate_cmd)
    return app


def write(path: Path, result: dict[str, Any]) -> Path:
    path.write_text(json.dumps(result))
    return path


def test_gate_command_exit_codes(tmp_path: Path, base: dict[str, Any],
                                 p99_regression: dict[str, Any]) -> None:
    runner = CliRunner()
    baseline = tmp_path / "baseline.json"
    current = write(tmp_path / "current.json", base)
    made = runner.invoke(cli(), ["gate", "--baseline", str(baseline), "--write-baseline",
                                 str(current)])
    assert made.exit_code == 0, made.output
    assert json.loads(baseline.read_text())["crmbench_baseline"] == 1
    assert len(load_runs([baseline])) == 1

    same = runner.invoke(cli(), ["gate", "--baseline", str(baseline), str(current),
                                 "--markdown", "--github-benchmark", str(tmp_path / "gab.json"),
                                 "--bmf", str(tmp_path / "bmf.json")])
    assert same.exit_code == 0, same.output
    assert "no regression" in same.stdout
    assert json.loads((tmp_path / "gab.json").read_text())
    assert json.loads((tmp_path / "bmf.json").read_text())

    slow = write(tmp_path / "slow.json", p99_regression)
    failed = runner.invoke(cli(), ["gate", "--baseline", str(baseline), str(slow), "--json"])
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["regressions"] >= 1

    loose = runner.invoke(cli(), ["gate", "--baseline", str(baseline), str(slow), "--p99", "40%"])
    assert loose.exit_code == 0

    broken = copy.deepcopy(base)
    broken["valid"], broken["invalid_reasons"] = False, ["achieved rate 80% of target"]
    invalid = runner.invoke(cli(), ["gate", "--baseline", str(baseline),
                                    str(write(tmp_path / "bad.json", broken))])
    assert invalid.exit_code == 3
    refused = runner.invoke(cli(), ["gate", "--baseline", str(tmp_path / "b2.json"),
                                    "--write-baseline", str(tmp_path / "bad.json")])
    assert refused.exit_code == 3 and not (tmp_path / "b2.json").exists()


def test_compare_command_and_bad_input(tmp_path: Path, base: dict[str, Any],
                                       p99_regression: dict[str, Any]) -> None:
    runner = CliRunner()
    a, b = write(tmp_path / "a.json", base), write(tmp_path / "b.json", p99_regression)
    shown = runner.invoke(cli(), ["compare", str(a), str(b), "--markdown"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("### crmbench:")
    both = runner.invoke(cli(), ["compare", str(a), str(b), "--markdown", "--json"])
    assert isinstance(both.exception, UserError)
    missing = runner.invoke(cli(), ["compare", str(a), str(tmp_path / "nope.json")])
    assert isinstance(missing.exception, UserError)
    bad = runner.invoke(cli(), ["compare", str(a), str(b), "--p50", "lots"])
    assert isinstance(bad.exception, UserError)
