"""Reports: matrix cells (measured, claimed, not-measured), formats, capability report."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from bench.adapters.base import CAPABILITY_IDS
from bench.claims import load_claims
from bench.errors import UserError
from bench.measure.hdr import LatencyHistogram
from bench.report.build import assemble
from bench.results.collect import Run, load_runs
from tests.bench.test_compare import EXAMPLE, cli, example_result, scale_histogram, scaled

CLAIMED_PLATFORMS = ("salesforce", "fxiaoke", "ec", "dabei")
NO_CREDENTIALS = "no credentials: set SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET"


def probed(base: dict[str, Any]) -> dict[str, Any]:
    """A second reference run carrying probe results for every measured dimension."""
    out = scaled(base, latency=1.02, run_id="probed")
    delays = scale_histogram(base["overall"]["histograms"]["intended"], lambda v: v * 60)
    steps = {step: {"count": 200, "p50": ms, "mean": ms}
             for step, ms in (("identify", 6.0), ("history", 9.5), ("inventory", 8.0),
                              ("quote", 12.0), ("notify", 6.0))}
    out["dimensions"] = {
        "agent_latency": {
            "capability": "agent.latency", "status": "pass", "value": 41.5, "unit": "ms",
            "p50": 41.5, "p95": 60.2, "p99": 75.0, "count": 200, "lost": 0,
            "breakdown": steps, "observed_via": "the change stream",
        },
        "event_delay": {"capability": "cdp.event_delay", "status": "pass", "value": 101.0,
                        "unit": "ms", "p50": 101.0, "p99": 780.0, "histogram": delays},
        "pack_enable": {"capability": "pack.enable_time", "status": "pass", "value": 2.4,
                        "unit": "s"},
        "workflow_max_nodes": {
            "capability": "workflow.max_nodes", "status": "pass", "value": 1000,
            "unit": "nodes", "curve": [{"nodes": n, "deploy_s": 0.002 * n, "run_s": 0.0005 * n}
                                       for n in (10, 50, 100, 500, 1000)],
        },
        "sla_granularity": {"capability": "sla.granularity", "status": "pass",
                            "value": "action", "unit": "level"},
    }
    out["capabilities"] = {
        "agent.takeover": {"status": "pass", "evidence": {
            "request": "POST /agents/lead-intake/runs", "response": {"status": 202,
                                                                    "queue": "human"}}},
        "cdp.erase": {"status": "fail", "reason": "an export after erasure still held 3 records",
                      "evidence": "GET /customers/42/export -> 200, 3 records"},
        "pack.hotplug": {"status": "unsupported", "reason": "declared by the adapter"},
    }
    return out


def vendor_unmeasured(base: dict[str, Any]) -> dict[str, Any]:
    """What a vendor run without credentials writes: complete false, nothing measured."""
    out = copy.deepcopy(base)
    empty = LatencyHistogram()
    op = {"count": 0, "statuses": {}, "errors": 0, "throughput": 0.0, "late": 0,
          "latency_ms": {"intended": empty.summary(), "actual": empty.summary()},
          "histograms": {"intended": empty.encode(), "actual": empty.encode()}}
    out.update(run_id="vendor", complete=False, valid=False, abort_reason=NO_CREDENTIALS,
               invalid_reasons=[NO_CREDENTIALS], operations={}, overall=op, timeline=[],
               harness_overhead=None)
    out["target"] = {"adapter": "salesforce", "platform": "salesforce", "url": "salesforce://",
                     "platform_version": None}
    return out


def report_inputs(folder: Path) -> list[Path]:
    """Result files of three runs: reference twice (once with probes), salesforce unmeasured."""
    folder.mkdir(parents=True, exist_ok=True)
    base = example_result()
    paths = []
    for name, result in (("ref.json", base), ("probed.json", probed(base)),
                         ("vendor.json", vendor_unmeasured(base))):
        paths.append(folder / name)
        paths[-1].write_text(json.dumps(result))
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return report_inputs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, inputs: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(cli(), ["report", *map(str, inputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def matrix(report_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(report_dir / "matrix.parquet")


def cell(df: pl.DataFrame, row: str, platform: str, source: str = "measured") -> dict[str, Any]:
    found = df.filter((pl.col("row") == row) & (pl.col("platform") == platform)
                      & (pl.col("source") == source)).to_dicts()
    assert len(found) == 1, (row, platform, source)
    return found[0]


def test_every_format_is_written(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    assert names == {"matrix.md", "capabilities.md", "matrix.csv", "matrix.parquet",
                     "results.json", "capabilities.xml", "report.html"}
    assert pl.read_csv(report_dir / "matrix.csv").height == pl.read_parquet(
        report_dir / "matrix.parquet").height


def test_platform_columns_include_claimed_platforms(matrix: pl.DataFrame) -> None:
    assert matrix["platform"].unique(maintain_order=True).to_list() == [
        "reference", *CLAIMED_PLATFORMS]


def test_measured_cells_with_repetitions_have_intervals(matrix: pl.DataFrame) -> None:
    p99 = cell(matrix, "crud.mixed.p99", "reference")
    assert p99["n"] == 2 and p99["status"] == "pass"
    assert p99["low"] <= p99["value"] <= p99["high"]
    assert "[" in p99["text"] and "(2 runs)" in p99["text"]
    agent = cell(matrix, "agent.latency", "reference")
    assert agent["value"] == 41.5 and agent["text"] == "41.5 ms, p99 75.0 ms (1 run) · G1"
    assert cell(matrix, "sla.granularity", "reference")["text"] == "action (1 run) · G1"
    assert cell(matrix, "workflow.max_nodes", "reference")["value"] == 1000


def test_unmeasured_cells_say_why(matrix: pl.DataFrame) -> None:
    for row in ("agent.latency", "crud.mixed.p50", "sla.granularity"):
        assert cell(matrix, row, "salesforce")["text"] == f"not-measured: {NO_CREDENTIALS}"
        assert cell(matrix, row, "dabei")["text"] == "not-measured: no run result"


def test_claims_are_separate_entries(matrix: pl.DataFrame, report_dir: Path) -> None:
    claimed = matrix.filter(pl.col("source") == "claimed")
    assert set(claimed["status"]) == {"claimed"}
    assert claimed.filter(pl.col("platform") == "reference").is_empty()
    sf = cell(matrix, "agent.latency", "salesforce", "claimed")
    assert sf["value"] == 210 and sf["text"].startswith("claimed: 210 ms")
    assert cell(matrix, "workflow.max_nodes", "dabei", "claimed")["text"].startswith(
        "claimed: unlimited")
    measured = matrix.filter(pl.col("source") == "measured")
    assert not measured["text"].str.contains("claimed").any()
    md = (report_dir / "matrix.md").read_text()
    assert "| | **claimed** (not measured) |" in md.replace("|  |", "| |")
    assert "_claimed: 210 ms (requires the separately purchased Einstein Agent module)_" in md


def test_an_invalid_run_alone_gives_no_figure(tmp_path: Path) -> None:
    broken = example_result()
    broken["valid"], broken["invalid_reasons"] = False, ["loop lag p99 14 ms exceeds 10 ms"]
    report = assemble([Run("bad.json", broken)], None)
    [p99] = [c for c in report.cells if c.row == "crud.mixed.p99"]
    assert p99.status == "not-measured" and p99.value is None
    assert p99.text == ("not-measured: every run excluded: invalid: loop lag p99 14 ms "
                        "exceeds 10 ms")


def test_tolerant_reader_ignores_malformed_probe_entries() -> None:
    result = example_result()
    result["dimensions"] = {"agent_latency": {"capability": "agent.latency", "status": "weird",
                                              "value": True},
                            "cdp.event_delay": "not a table"}
    result["capabilities"] = {"cdp.audit": {"status": "bogus"}, "cdp.erase": []}
    report = assemble([Run("odd.json", result)], None)
    texts = {c.row: c.text for c in report.cells}
    assert texts["agent.latency"] == "not-measured: no probe result"
    assert texts["cdp.event_delay"] == "not-measured: no probe result"
    caps = {c.capability: c for c in report.capabilities}
    assert caps["cdp.audit"].status == "not-measured"
    assert caps["cdp.erase"].reason == "no probe result"


def test_capability_report_covers_every_id(report_dir: Path) -> None:
    root = ET.parse(report_dir / "capabilities.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {f"capabilities.{p}" for p in ("reference", *CLAIMED_PLATFORMS)}
    assert int(root.get("tests", 0)) == len(CAPABILITY_IDS) * len(suites)
    ref = {c.get("name"): c for c in suites["capabilities.reference"].iter("testcase")}
    assert list(ref) == list(CAPABILITY_IDS)
    assert ref["agent.takeover"].find("failure") is None
    assert ref["agent.takeover"].find("skipped") is None
    assert ref["crud.mixed"].find("skipped") is None
    failure = ref["cdp.erase"].find("failure")
    assert failure is not None and "3 records" in failure.get("message", "")
    assert ref["pack.hotplug"].find("skipped").get("message", "").startswith("unsupported")
    assert ref["agent.explain"].find("skipped").get("message") == \
        "not-measured: no probe result"
    sf = {c.get("name"): c for c in suites["capabilities.salesforce"].iter("testcase")}
    assert NO_CREDENTIALS in sf["crud.mixed"].find("skipped").get("message", "")
    md = (report_dir / "capabilities.md").read_text()
    for cap in CAPABILITY_IDS:
        assert md.count(f"`{cap}`") == 1 + len(CLAIMED_PLATFORMS)
    assert '"queue":"human"' in md
    assert "pass 7 · fail 1 · unsupported 1 · not-measured 17" in md


def test_results_json_is_machine_readable(report_dir: Path) -> None:
    data = json.loads((report_dir / "results.json").read_text())
    assert data["platforms"] == ["reference", *CLAIMED_PLATFORMS]
    example = json.loads(EXAMPLE.read_text())["run_id"]
    assert {r["run_id"] for r in data["runs"]} == {example, "probed", "vendor"}
    assert [r["problem"] for r in data["runs"]][2] == f"incomplete: {NO_CREDENTIALS}"
    overall = next(o for o in data["operations"] if o["operation"] == "overall")
    assert overall["runs"] == 2 and overall["count"] == 240_000
    assert len(data["capabilities"]) == len(CAPABILITY_IDS) * 5


def test_html_embeds_plotly_once_and_nothing_external(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    # plotly.js travels once, gzip-compressed; the charts are data, drawn by one loader.
    assert page.count('id="plotly-gz"') == 1
    assert page.count('id="figures-gz"') == 1
    assert page.count('class="plotly-graph-div"') == 7
    assert len(page.encode()) < 2_500_000
    assert "<script src" not in page and "<link" not in page
    for section in ("Runs: provenance and validity", "Comparative matrix", "Capabilities",
                    "CLAIMED · not measured", NO_CREDENTIALS):
        assert section in page


def test_png_export_without_a_browser_says_so(tmp_path: Path, inputs: list[Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from choreographer.browsers.chromium import Chromium

    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    result = CliRunner().invoke(cli(), ["report", str(inputs[0]), "--out", str(tmp_path),
                                        "--format", "md,json", "--png"])
    assert result.exit_code == 0, result.output
    assert "PNG export skipped: no Chromium or Chrome browser found" in result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"matrix.md", "capabilities.md",
                                                    "results.json"}


def test_default_folder_and_json_listing(tmp_path: Path, inputs: list[Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli(), ["report", str(inputs[0]), "--format", "json",
                                        "--json", "--no-claims"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert Path(listing["out"]).parent == Path("reports")
    assert [Path(f).name for f in listing["files"]] == ["results.json"]
    assert json.loads((tmp_path / listing["files"][0]).read_text())["platforms"] == ["reference"]


def test_bad_input_is_a_user_error(tmp_path: Path, inputs: list[Path]) -> None:
    runner = CliRunner()
    bad_format = runner.invoke(cli(), ["report", str(inputs[0]), "--format", "md,pdf"])
    assert isinstance(bad_format.exception, UserError)
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    junk = runner.invoke(cli(), ["report", str(tmp_path / "junk.json")])
    assert isinstance(junk.exception, UserError)
    with pytest.raises(UserError):
        load_runs([tmp_path / "missing"])


def test_claims_file_loads() -> None:
    claims = load_claims()
    assert set(claims.names) == set(CLAIMED_PLATFORMS)
    assert claims.for_platform("dabei")["workflow.max_nodes"].value == "unlimited"
    assert claims.for_platform("ec")["agent.latency"].note == \
        "depends on the WeCom API; fluctuates"
    assert "not verified" in claims.source_line


def test_claims_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "claims.toml"
    bad.write_text("[source]\ntitle = 'x'\n")
    with pytest.raises(UserError, match="platforms"):
        load_claims(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_claims(tmp_path / "none.toml")


def test_workflow_chart_names_each_platforms_fitted_doubling() -> None:
    from bench.report.charts import workflow_scaling
    from bench.results.collect import Run

    def run(platform: str, fitted: float | None) -> Run:
        dim = {"capability": "workflow.max_nodes", "fitted_doubling_ratio": fitted,
               "curve": [{"nodes": n, "deploy_s": 1e-4 * n, "run_s": 1e-5 * n}
                         for n in (1024, 2048, 4096)]}
        return Run(platform, {"target": {"platform": platform},
                              "dimensions": {"workflow_max_nodes": dim}})

    chart = workflow_scaling({"reference": [run("reference", 2.04)], "other": [run("other", None)]})
    titles = {t.legendgroup: t.legendgrouptitle.text for t in chart.figure.data}
    assert titles == {"reference": "reference: x2.04 per doubling", "other": "other"}


def test_old_status_words_read_as_the_one_vocabulary() -> None:
    result = example_result()
    result["dimensions"] = {"agent_latency": {"capability": "agent.latency",
                                              "status": "not measured", "reason": "old file"}}
    result["capabilities"] = {"cdp.audit": {"status": "not-measurable", "reason": "no API"}}
    report = assemble([Run("old.json", result)], None)
    texts = {c.row: c.text for c in report.cells}
    assert texts["agent.latency"] == "not-measured: old file"
    caps = {c.capability: c for c in report.capabilities}
    assert caps["cdp.audit"].status == "not-measured" and caps["cdp.audit"].reason == "no API"
    assert {c.status for c in report.cells} <= {"pass", "fail", "unsupported", "not-measured",
                                                "claimed"}


def test_probe_only_runs_show_no_load() -> None:
    from bench.report.runs import run_summary

    result = example_result()
    result["scenario"] = {**result["scenario"], "name": "sla", "workload": False}
    assert run_summary(Run("sla.json", result))["scenario"].endswith("probes only, no load")
    assert "users" in run_summary(Run("mixed.json", example_result()))["scenario"]


def test_the_committed_example_result_reads_as_the_typed_model() -> None:
    from bench.results.model import decode_result, to_builtins

    raw = EXAMPLE.read_bytes()
    typed = decode_result(raw)
    assert isinstance(typed.overall.histograms.intended, LatencyHistogram)
    assert typed.overall.histograms.intended.count == typed.overall.count
    # Written back, it is the same data: the typed model is the published schema.
    assert to_builtins(typed) == json.loads(raw)
