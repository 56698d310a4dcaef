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
from bench.results.compare import Change, Comparison, compare, gate, holm, paired_test
from bench.results.export import bencher_bmf, github_benchmark
from bench.results.store import validate
from bench.results.thresholds import (
    Threshold,
    Thresholds,
    parse_percent,
    parse_threshold,
    resolve_thresholds,
)

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


JITTER = (0.97, 0.99, 1.0, 1.01, 1.03)


def repeated(base: dict[str, Any], factor: float, tag: str) -> list[dict[str, Any]]:
    """Five runs around ``factor`` times the base latency, as repetitions differ."""
    return [rescaled_summaries(base, factor * j, f"{tag}{i}") for i, j in enumerate(JITTER)]


def overall(comparison: Comparison, metric: str) -> Change:
    return next(c for c in comparison.changes if (c.subject, c.metric) == ("overall", metric))


def test_one_run_a_side_is_inconclusive_not_a_regression(
    base: dict[str, Any], p99_regression: dict[str, Any]
) -> None:
    # The requests of one run are no independent samples: a 30% tail shift between two
    # single runs is within what whole runs do, so nothing is tested and nothing fails.
    outcome = gate(runs_of(base), runs_of(p99_regression), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None and outcome.comparison.inconclusive
    p99 = overall(outcome.comparison, "p99")
    assert p99.verdict == "inconclusive" and p99.p_worse is None
    assert "4 more base run(s) needed" in p99.note


def test_single_current_run_is_judged_by_the_baseline_spread(base: dict[str, Any]) -> None:
    baseline = runs_of(*repeated(base, 1.0, "b"))
    slow = rescaled_summaries(base, 1.3, "slow")
    outcome = gate(baseline, runs_of(slow), Thresholds())
    assert outcome.exit_code == 1
    assert outcome.comparison is not None
    p99 = overall(outcome.comparison, "p99")
    assert p99.method == "baseline spread"
    assert p99.change == pytest.approx(0.3, abs=0.01)
    assert p99.p_adjusted is not None and p99.p_adjusted < 0.01
    within = rescaled_summaries(base, 1.02, "within")
    assert gate(baseline, runs_of(within), Thresholds()).exit_code == 0
    # Too few baseline runs: the spread is unknown.
    few = gate(baseline[:3], runs_of(slow), Thresholds())
    assert few.exit_code == 0 and few.comparison is not None
    assert "2 more base run(s) needed" in overall(few.comparison, "p99").note


def test_noise_level_difference_passes(base: dict[str, Any]) -> None:
    outcome = gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*repeated(base, 1.03, "c")),
                   Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None
    assert not outcome.comparison.regressions
    assert overall(outcome.comparison, "p50").verdict == "unchanged"


def test_improvement_is_reported_not_failed(base: dict[str, Any]) -> None:
    outcome = gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*repeated(base, 0.7, "f")),
                   Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None
    improved = {(c.subject, c.metric) for c in outcome.comparison.improvements}
    assert {("overall", "p50"), ("overall", "p99")} <= improved


def test_noisy_runs_are_no_evidence(base: dict[str, Any]) -> None:
    slow = repeated(base, 1.3, "n")
    for run in slow:
        run["noise"] = {"noisy": True, "reasons": ["steal time 14.0 % > 10 %"]}
    outcome = gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*slow), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None and outcome.comparison.inconclusive
    assert any("noisy, not used as evidence (steal time" in n for n in outcome.comparison.notes)


def test_runs_from_another_machine_are_inconclusive(base: dict[str, Any]) -> None:
    other = repeated(base, 1.5, "o")
    for run in other:
        run["machine_info"] = {**run["machine_info"], "logical_cores": 16}
    outcome = gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*other), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None and outcome.comparison.inconclusive
    assert any("other machines" in n for n in outcome.comparison.notes)


def test_runs_placed_on_other_cores_are_inconclusive(base: dict[str, Any]) -> None:
    pinned = repeated(base, 1.0, "p")
    for run in pinned:
        run["target"] = {**run["target"], "cpus": {"server": [1], "generator": [0]}}
    # A slower current side whose target shared its cores with the generator: not a regression.
    unpinned = repeated(base, 1.5, "u")
    for run in unpinned:
        run["target"].pop("cpus", None)
    outcome = gate(runs_of(*pinned), runs_of(*unpinned), Thresholds())
    assert outcome.exit_code == 0
    assert outcome.comparison is not None and outcome.comparison.inconclusive
    assert any("placed target and load generator differently (base target on core 1, "
               "generator on 0; current unpinned)" in n for n in outcome.comparison.notes)
    # Placed alike on both sides, the same slowdown is a regression.
    same = repeated(base, 1.5, "s")
    for run in same:
        run["target"] = {**run["target"], "cpus": {"server": [1], "generator": [0]}}
    assert gate(runs_of(*pinned), runs_of(*same), Thresholds()).exit_code == 1


def test_absolute_threshold_ignores_sub_millisecond_moves(base: dict[str, Any]) -> None:
    # p50 1.5 ms -> 1.95 ms is +30% but under 1 ms: with "10% and 1ms" it does not count.
    t = Thresholds(p50=parse_threshold("10% and 1ms", "p50"),
                   p99=parse_threshold("20% and 5ms", "p99"))
    outcome = gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*repeated(base, 1.3, "c")), t)
    assert outcome.exit_code == 0
    assert outcome.comparison is not None
    assert overall(outcome.comparison, "p50").verdict == "unchanged"
    assert gate(runs_of(*repeated(base, 1.0, "b")), runs_of(*repeated(base, 2.0, "c")),
                t).exit_code == 1


def test_paired_test_detects_a_consistent_shift_and_not_noise() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(0.4, 0.15, size=6)
    same = a * rng.lognormal(0, 0.05, size=6)
    slower = a * 1.25 * rng.lognormal(0, 0.05, size=6)
    found = paired_test(list(zip(a, slower, strict=True)))
    assert found is not None
    change, low, high, p_up, _ = found
    assert low < change < high and change == pytest.approx(0.25, abs=0.08)
    assert p_up < 0.001
    null = paired_test(list(zip(a, same, strict=True)))
    assert null is not None and null[3] > 0.01
    assert paired_test([(1.0, 2.0)]) is None


def test_holm_adjusts_in_order() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


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
    before = repeated(base, 1.0, "b")
    outcome = gate(runs_of(*before), runs_of(*repeated(base, 1.3, "a")), Thresholds())
    assert outcome.exit_code == 1
    assert outcome.comparison is not None
    p99 = overall(outcome.comparison, "p99")
    assert p99.method == "mann-whitney"
    assert p99.p_worse == pytest.approx(1 / 252)  # exact: all 5 above all 5
    assert p99.base is not None and p99.base.n == 5
    assert p99.base.low <= p99.base.value <= p99.base.high
    same = repeated(base, 1.02, "s")
    assert gate(runs_of(*before), runs_of(*same), Thresholds()).exit_code == 0


def test_large_change_without_significance_is_not_a_regression(base: dict[str, Any]) -> None:
    # Medians move by +33%, but the repetitions overlap: U test p = 0.21.
    before = [rescaled_summaries(base, f, f"b{f}") for f in (1.0, 1.1, 1.2, 2.0, 2.1)]
    after = [rescaled_summaries(base, f, f"a{f}") for f in (1.05, 1.15, 1.6, 2.1, 2.2)]
    comparison = compare(runs_of(*before), runs_of(*after), Thresholds())
    p50 = overall(comparison, "p50")
    assert p50.change is not None and p50.change > 0.10
    assert p50.verdict == "not significant"
    assert p50.p_worse is not None and p50.p_worse > 0.05


def test_per_operation_metrics_are_gated_only_with_scope_all(base: dict[str, Any]) -> None:
    before = repeated(base, 1.0, "b")
    after = repeated(base, 1.3, "a")
    narrow = compare(runs_of(*before), runs_of(*after), Thresholds())
    op = next(c for c in narrow.changes if c.subject == "customer_360" and c.metric == "p50")
    assert not op.gated and op not in narrow.regressions
    wide = compare(runs_of(*before), runs_of(*after), Thresholds(scope="all"))
    op = next(c for c in wide.changes if c.subject == "customer_360" and c.metric == "p50")
    # 27 gated tests: Holm asks p < 0.05/27, which 5 runs a side cannot give (1/252).
    assert op.gated and op.verdict == "not significant"


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
    repeats = []
    for j in JITTER:
        run = copy.deepcopy(with_dims)
        run["dimensions"]["agent_latency"].update(p50=1.7 * j, p99=13.4 * j)
        repeats.append(run)
    comparison = compare(runs_of(*repeats), runs_of(slower), Thresholds())
    agent = [c for c in comparison.changes if c.subject == "agent.latency"]
    assert {c.metric for c in agent} == {"p50", "p99"}
    assert all(c.verdict == "regression" for c in agent)


def test_markdown_stays_under_the_pull_request_limit(base: dict[str, Any]) -> None:
    comparison = compare(runs_of(*repeated(base, 1.0, "b")),
                         runs_of(*repeated(base, 1.3, "a")), Thresholds())
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
    settings.write_text('[gate]\np50 = "15% and 1ms"\np99 = 25\nalpha = 0.01\n'
                        'min_runs = 6\nscope = "all"\n')
    t = resolve_thresholds(settings, runs_of(base), {"p99": Threshold(0.3), "p50": None})
    assert (t.p50, t.p99, t.throughput, t.alpha) == (
        Threshold(0.15, 1.0), Threshold(0.3), Threshold(0.10), 0.01)
    assert (t.min_runs, t.scope) == (6, "all")
    assert parse_percent("10%", "x") == pytest.approx(0.1)
    assert parse_threshold("2ms", "x") == Threshold(None, 2.0)
    assert str(parse_threshold("10 % + 0.5 ms", "x")) == "10% and 0.5ms"
    for bad in ("ten", "-5%", "0", "1ms and 2ms", "5 s"):
        with pytest.raises(UserError):
            parse_threshold(bad, "--p99")
    with pytest.raises(UserError):
        parse_percent("1ms", "--throughput")
    settings.write_text('[gate]\nscope = "some"\n')
    with pytest.raises(UserError, match="scope"):
        resolve_thresholds(settings, runs_of(base), {})
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


def test_gate_command_exit_codes(tmp_path: Path, base: dict[str, Any]) -> None:
    runner = CliRunner()
    baseline = tmp_path / "baseline.json"
    folder = tmp_path / "base-runs"
    folder.mkdir()
    for i, run in enumerate(repeated(base, 1.0, "b")):
        write(folder / f"{i}.json", run)
    current = write(tmp_path / "current.json", base)
    made = runner.invoke(cli(), ["gate", "--baseline", str(baseline), "--write-baseline",
                                 str(folder)])
    assert made.exit_code == 0, made.output
    assert json.loads(baseline.read_text())["crmbench_baseline"] == 1
    assert len(load_runs([baseline])) == 5
    p99_regression = rescaled_summaries(base, 1.3, "slow")

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

    loose = runner.invoke(cli(), ["gate", "--baseline", str(baseline), str(slow), "--p99", "40%",
                                  "--p50", "40%"])
    assert loose.exit_code == 0, loose.output

    one = write(tmp_path / "one.json", base)
    unknown = runner.invoke(cli(), ["gate", "--baseline", str(one), str(slow)])
    assert unknown.exit_code == 0
    assert "inconclusive" in unknown.output

    broken = copy.deepcopy(base)
    broken["valid"], broken["invalid_reasons"] = False, ["achieved rate 80% of target"]
    invalid = runner.invoke(cli(), ["gate", "--baseline", str(baseline),
                                    str(write(tmp_path / "bad.json", broken))])
    assert invalid.exit_code == 3
    refused = runner.invoke(cli(), ["gate", "--baseline", str(tmp_path / "b2.json"),
                                    "--write-baseline", str(tmp_path / "bad.json")])
    assert refused.exit_code == 3 and not (tmp_path / "b2.json").exists()
    noisy = copy.deepcopy(base)
    noisy["noise"] = {"noisy": True, "reasons": ["steal time 14.0 % > 10 %"]}
    kept_out = runner.invoke(cli(), ["gate", "--baseline", str(tmp_path / "b3.json"),
                                     "--write-baseline", str(write(tmp_path / "n.json", noisy))])
    assert kept_out.exit_code == 3 and not (tmp_path / "b3.json").exists()
    assert "steal time" in kept_out.output


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
