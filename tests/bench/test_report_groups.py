"""Comparable reports: groups never pooled, excluded runs listed, the common load, summary."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.claims import load_claims
from bench.report.build import Report, assemble, matrix_markdown, operation_rows, results_json
from bench.report.groups import build
from bench.results.collect import Run, load_runs
from bench.results.store import validate
from tests.bench.test_compare import EXAMPLE, cli, example_result

ROOT = Path(__file__).resolve().parents[2]
SLO = "p99 <= 50 ms, errors <= 1%"


@cache
def _example() -> dict[str, Any]:
    return example_result()


def result(platform: str, rate: float, *, run_id: str, p50: float = 5.0, users: int = 50,
           label: str | None = None, customers: int = 20_000, invalid: str | None = None,
           noisy: str | None = None) -> dict[str, Any]:
    """A mixed-workload result of ``platform`` at an offered load, with a distinct p50."""
    out = copy.deepcopy(_example())
    out["run_id"] = run_id
    out["scenario"].update(rate=rate, users=users)
    out["target"].update(platform=platform, adapter=platform)
    if label:
        out["target"]["label"] = label
    out["fixtures"]["keyspace"]["customers"] = customers
    out["overall"]["latency_ms"]["intended"]["p50"] = p50
    if invalid:
        out["valid"], out["invalid_reasons"] = False, [invalid]
    if noisy:
        out["noise"] = {**out["noise"], "noisy": True, "reasons": [noisy]}
    return out


def capacity(platform: str, value: float, *, at_least: bool = False) -> dict[str, Any]:
    """What `crmbench capacity` writes: no operations, a crud.capacity dimension."""
    out = result(platform, 400.0, run_id=f"{platform}-capacity")
    out["scenario"]["name"] = "mixed-capacity"
    out.update(operations={}, timeline=[])
    out["dimensions"] = {"crud_capacity": {
        "capability": "crud.capacity", "status": "pass", "value": value, "unit": "req/s",
        "slo": SLO, "at_least": at_least, "curve": []}}
    return out


def runs(*results: dict[str, Any]) -> list[Run]:
    return [Run(f"{r['run_id']}.json", r) for r in results]


def cells_of(report: Report, row: str) -> dict[str, Any]:
    return {c.platform: c for c in report.cells if c.row == row and c.source == "measured"}


@pytest.fixture(scope="module")
def odoo_and_reference() -> Report:
    """Odoo at 20 req/s (two configurations) and an invalid 50; the reference at 20 and 50."""
    return assemble(runs(
        result("odoo", 20, run_id="o20w", p50=45.0, label="workers=2"),
        result("odoo", 20, run_id="o20w-b", p50=47.0, label="workers=2"),
        result("odoo", 50, run_id="o50w", p50=940.0, label="workers=2",
               invalid="achieved 42.8 of 50 req/s"),
        result("odoo", 20, run_id="o20t", p50=60.0, label="threaded"),
        result("odoo", 100, run_id="o100t", p50=9900.0, label="threaded"),
        result("reference", 20, run_id="r20", p50=2.1, customers=100_000),
        result("reference", 50, run_id="r50", p50=2.7, customers=100_000),
        result("reference", 50, run_id="r50-noisy", p50=30.0, customers=100_000,
               noisy="steal 14 % exceeds 10 %"),
        capacity("reference", 4000.0, at_least=True),
        capacity("odoo", 40.0),
    ), load_claims(None))


def test_two_loads_or_labels_of_one_platform_are_two_groups() -> None:
    groups = build(runs(result("odoo", 20, run_id="a"), result("odoo", 50, run_id="b"),
                        result("odoo", 20, run_id="c", label="workers=2"),
                        result("odoo", 20, run_id="d", customers=100_000),
                        result("odoo", 20, run_id="e")))
    assert [[r.result["run_id"] for r in g.runs] for g in groups] == [
        ["a", "e"], ["b"], ["c"], ["d"]]
    assert [g.id for g in groups] == ["G1", "G2", "G3", "G4"]
    assert groups[2].key.column == "odoo (workers=2)"
    assert "20,000 customers" in groups[0].title and "100,000 customers" in groups[3].title


def test_cells_come_from_one_group_and_name_it(odoo_and_reference: Report) -> None:
    report = odoo_and_reference
    p50 = cells_of(report, "crud.mixed.p50")
    assert set(p50) >= {"odoo (workers=2)", "odoo (threaded)", "reference"}
    workers = p50["odoo (workers=2)"]
    # Only the two runs at 20 req/s: the 50 req/s run is another group (and invalid).
    assert workers.n == 2 and workers.value == 46.0 and workers.group is not None
    assert workers.text.endswith(f"· {workers.group}")
    group = next(g for g in report.groups if g.id == workers.group)
    assert (group.key.rate, group.key.label) == (20.0, "workers=2")
    assert p50["odoo (threaded)"].value == 60.0 and p50["odoo (threaded)"].n == 1
    assert p50["reference"].value == 2.1
    assert workers.label == "mixed workload p50 at 20 req/s, 50 users"


def test_common_load_is_the_highest_every_platform_held(odoo_and_reference: Report) -> None:
    common = odoo_and_reference.common
    assert (common.rate, common.users) == (20.0, 50)
    assert "every platform (odoo, reference)" in common.note


def test_no_common_load_is_said() -> None:
    report = assemble(runs(result("odoo", 20, run_id="o"), result("reference", 50, run_id="r")),
                      None)
    assert report.common.rate is None
    assert "no common load" in report.common.note
    assert "odoo: 20 req/s, 50 users" in report.common.note
    p99 = cells_of(report, "crud.mixed.p99")
    assert p99["odoo"].status == p99["reference"].status == "not-measured"
    assert p99["reference"].reason == "no common load; valid runs at 50 req/s"
    assert "## Summary" in matrix_markdown(report)


def test_a_platform_without_a_run_at_the_common_load_says_so() -> None:
    report = assemble(runs(result("odoo", 20, run_id="o", label="workers=2"),
                           result("odoo", 50, run_id="t", label="threaded"),
                           result("reference", 20, run_id="r"),
                           result("reference", 50, run_id="r2")), None)
    # Odoo held 50 req/s in one configuration: the other says it has no run there.
    assert report.common.rate == 50.0
    p50 = cells_of(report, "crud.mixed.p50")
    assert p50["odoo (threaded)"].status == "pass"
    assert p50["odoo (workers=2)"].reason == ("no valid run at 50 req/s, 50 users; "
                                              "valid runs at 20 req/s")


def test_excluded_runs_are_listed_and_left_out(odoo_and_reference: Report) -> None:
    report = odoo_and_reference
    data = results_json(report)
    left = {e["run_id"]: e["why"] for e in data["excluded"]}
    assert left == {"o50w": "invalid: achieved 42.8 of 50 req/s"}
    md = matrix_markdown(report)
    assert "**Excluded runs (1)**" in md
    assert "`o50w` (odoo (workers=2), G2): invalid: achieved 42.8 of 50 req/s" in md
    # No figure anywhere carries the excluded run's latency.
    assert 940.0 not in {c.value for c in report.cells}
    groups = {g["group"]: g for g in data["groups"]}
    assert groups["G2"]["runs"] == 0 and groups["G2"]["excluded"] == 1
    assert groups["G2"]["p50_ms"] is None
    ops = operation_rows(report.groups)
    assert "G2" not in {o["group"] for o in ops}
    overall = [o for o in ops if o["operation"] == "overall"]
    assert sum(o["runs"] for o in overall) == 7
    assert "Excluded runs (1)" in _html(report)


def test_noisy_runs_stay_in_the_figures_flagged(odoo_and_reference: Report) -> None:
    report = odoo_and_reference
    data = results_json(report)
    assert {e["run_id"]: e["why"] for e in data["noisy"]} == {
        "r50-noisy": "noisy: steal 14 % exceeds 10 %"}
    groups = {g["group"]: g for g in data["groups"]}
    noisy_group = next(g for g in groups.values() if g["platform"] == "reference"
                       and g["rate"] == 50)
    assert noisy_group["runs"] == 2
    md = matrix_markdown(report)
    assert "**Noisy runs (1)**" in md and "no evidence for a gate" in md
    assert "Noisy runs (1)" in _html(report)


def test_a_probe_figure_only_in_an_excluded_run_is_not_shown() -> None:
    bad = result("reference", 50, run_id="n", invalid="achieved 40 of 50 req/s")
    bad["dimensions"] = {"agent_latency": {"capability": "agent.latency", "status": "pass",
                                           "value": 41.5, "unit": "ms"}}
    agent = cells_of(assemble(runs(bad), None), "agent.latency")["reference"]
    assert agent.status == "not-measured" and agent.value is None
    assert agent.reason == "only in excluded runs: invalid: achieved 40 of 50 req/s"


def test_capacity_row_and_summary(odoo_and_reference: Report) -> None:
    report = odoo_and_reference
    cap = cells_of(report, "crud.capacity")
    assert cap["reference"].text.startswith(f"at least 4,000 req/s at {SLO} (1 run) · G")
    assert cap["odoo"].value == 40.0
    summaries = {s.platform: s for s in report.summaries}
    ref = summaries["reference"]
    assert ref.capacity == cap["reference"].text
    assert ref.latency.startswith("p50 2.10 ms, p99 ")
    assert ref.latency.endswith(", 100,000 customers)")
    assert summaries["odoo (workers=2)"].latency.endswith("(G1, 20,000 customers)")
    assert ref.verdicts["pass"] >= 1 and sum(ref.verdicts.values()) == 26
    assert ref.claims == "no claims"
    assert summaries["salesforce"].claims == "5 claimed figure(s), none checked: no run result"
    md = matrix_markdown(report)
    assert md.index("## Summary") < md.index("## Matrix") < md.index("## Groups") \
        < md.index("## Runs")
    assert "| platform | capacity | latency at 20 req/s, 50 users | capability verdicts" in md
    page = _html(report)
    assert page.index('id="summary"') < page.index('id="matrix"') < page.index('id="groups"')
    assert "latency at 20 req/s, 50 users" in page


def test_provenance_shows_fixture_size_and_configuration(odoo_and_reference: Report) -> None:
    data = results_json(odoo_and_reference)
    run = next(r for r in data["runs"] if r["run_id"] == "o20w")
    assert run["label"] == "workers=2" and run["fixture_size"] == "20,000 customers"
    assert run["group"] == "G1"
    md = matrix_markdown(odoo_and_reference)
    assert "| G1 | odoo | workers=2 | o20w |" in md and "100,000 customers (manifest" in md
    assert "| reference | — (no --label) |" in md


def _html(report: Report) -> str:
    from bench.report import html
    from bench.report.matrix import frame

    return html.page(report, frame(report.cells), "no claims file")


def test_old_result_files_still_read(tmp_path: Path) -> None:
    files = sorted((ROOT / "reports" / "examples").glob("*.json"))
    assert EXAMPLE in files
    found = load_runs(files)
    assert all(r.label is None for r in found)
    report = assemble(found, None)
    assert report.groups[0].key.label is None
    assert report.groups[0].key.customers == 100_000
    assert report.common.rate == 1000.0
    result = CliRunner().invoke(cli(), ["report", *map(str, files), "--out", str(tmp_path),
                                        "--format", "md,json", "--no-claims"])
    assert result.exit_code == 0, result.output
    # A new results.json keeps every key of the committed example report (it only adds).
    old = json.loads((ROOT / "reports" / "example" / "results.json").read_text())
    new = json.loads((tmp_path / "results.json").read_text())
    assert set(old) <= set(new)
    assert set(old["runs"][0]) <= set(new["runs"][0])
    assert set(old["operations"][0]) <= set(new["operations"][0])
    assert set(old["matrix"][0]) <= set(new["matrix"][0])


def test_label_is_an_optional_schema_field() -> None:
    from bench.results.model import decode_result, to_builtins

    labelled = result("odoo", 20, run_id="x", label="workers=2")
    assert validate(labelled) == []
    typed = decode_result(labelled)
    assert typed.target.label == "workers=2"
    assert to_builtins(typed)["target"]["label"] == "workers=2"
    assert "label" not in to_builtins(decode_result(_example()))["target"]


def test_run_takes_a_label_into_the_result(tmp_path: Path) -> None:
    from bench.cli import app
    from bench.scenarios.config import load_scenario
    from bench.scenarios.runner import RunRequest, _record

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--label" in result.output
    request = RunRequest(load_scenario("mixed", profile="quick"), label="workers=2")
    assert _record(request, "id", tmp_path / "log").target.label == "workers=2"


def test_a_checkpoint_left_by_a_killed_run_is_shown_incomplete_and_never_pooled() -> None:
    done = result("reference", 50, run_id="done", p50=2.0)
    killed = result("reference", 50, run_id="killed", p50=99.0)
    killed.update(complete=False, finished_at=None, abort_reason=None)
    report = assemble(runs(done, killed), load_claims())
    left = {e["run_id"]: e["why"] for e in results_json(report)["excluded"]}
    assert left == {"killed": "incomplete: checkpoint of a run that never finished (killed, "
                              "or still running)"}
    assert 99.0 not in {c.value for c in report.cells}


def test_the_no_op_baseline_does_not_decide_the_common_load() -> None:
    report = assemble(runs(result("odoo", 20, run_id="o"), result("reference", 20, run_id="r"),
                           result("noop", 1000, run_id="n", users=500)), None)
    assert report.common.rate == 20


def test_crud_mixed_fails_on_faults_not_on_refusals() -> None:
    from bench.report.capabilities import _mixed

    def mixed(other: dict[str, int]) -> str:
        out = result("tryton", 20, run_id="t")
        out["overall"].update(count=1000, statuses={"ok": 1000 - sum(other.values()), **other})
        return _mixed("tryton", runs(out)).status

    assert mixed({"rejected": 40, "unsupported": 30, "not_found": 5}) == "pass"
    assert mixed({"timeout": 1}) == "fail"
    assert mixed({"server_error": 2, "rejected": 3}) == "fail"
