"""The probe table: a probe added in one module, registered, configured and run end to end.

``read_your_writes`` is a probe of this test only: it creates customers and reads each back
at once, on the live target. Adding it took this one file (an in-tree probe takes its
module, its line in ``bench.probes.registry.MODULES`` and its test).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from bench.adapters.base import Realtime, Status
from bench.errors import UserError
from bench.probes.registry import PROBES, Findings, Probe, ProbeContext, register
from bench.probes.verdict import read_status, verdict
from bench.results.store import read_result
from bench.scenarios.config import load_scenario
from bench.scenarios.runner import RunRequest, run


class ReadYourWritesOptions(msgspec.Struct, frozen=True,
                            rename={"records": "read_your_writes_records"}):
    records: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3


def probe_read_your_writes(adapter: Realtime, ctx: ProbeContext,
                           options: ReadYourWritesOptions) -> Findings:
    """Each customer created is found by the very next read."""
    waits_ms, missing = [], 0
    for i in range(options.records):
        status, cid = adapter.create_customer_record({
            "name": f"crmbench probe {ctx.run_id} ryw {i}", "industry": "Retail",
            "region_id": 1, "owner_rep_id": 1, "tier": "normal"})
        if status is not Status.ok or cid is None:
            return None, {"crud.mixed": verdict("fail", reason=f"create answered {status}")}
        t0 = time.perf_counter()
        read = adapter.get_customer(cid)  # type: ignore[attr-defined]
        waits_ms.append(round((time.perf_counter() - t0) * 1e3, 3))
        missing += read is not Status.ok
    ctx.say(f"read your writes: {options.records - missing} of {options.records} found")
    found = verdict("pass" if not missing else "fail", {"read_ms": waits_ms},
                    f"{missing} records not found right after their creation" if missing
                    else None)
    return None, {"crud.mixed": found}


@pytest.fixture()
def read_your_writes() -> Iterator[Probe[ReadYourWritesOptions]]:
    probe = Probe(name="read_your_writes", trigger=("engines", "read_your_writes"),
                  needs=(Realtime,), options=ReadYourWritesOptions,
                  capabilities=("crud.mixed",), run=probe_read_your_writes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bench.probes.registry.PROBES", dict(PROBES))
        yield register(probe)


def scenario_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ryw.toml"
    path.write_text('version = 1\nbase = "mixed"\nname = "ryw"\nworkload = false\n'
                    f"[engines]\nread_your_writes = true\n{extra}")
    return path


def test_a_registered_probe_runs_in_a_probe_only_run(
    tmp_path: Path, small_fixtures: Path, read_your_writes: Probe[ReadYourWritesOptions]
) -> None:
    fixtures = tmp_path / "fx"
    shutil.copytree(small_fixtures, fixtures)
    scenario = load_scenario(str(scenario_file(tmp_path, "read_your_writes_records = 4\n")),
                             profile="quick")
    said: list[str] = []
    report = run(RunRequest(scenario, target="reference://embedded", fixtures=fixtures,
                            out=tmp_path / "runs"), say=said.append)
    result = read_result(report.path)
    assert report.exit_code == 0, result["invalid_reasons"]
    found = result["capabilities"]["crud.mixed"]
    assert found["status"] == "pass", found
    assert len(found["evidence"]["read_ms"]) == 4
    assert "read your writes: 4 of 4 found" in said
    # Probes only: no load offered, none reported.
    assert result["load"]["users"] == 0 and result["load"]["target_rate"] == 0
    assert result["operations"] == {} and result["scenario"]["workload"] is False


def test_its_settings_are_checked_like_every_probe_s(
    tmp_path: Path, read_your_writes: Probe[ReadYourWritesOptions]
) -> None:
    with pytest.raises(UserError, match=r"engines\.read_your_writes_records"):
        load_scenario(str(scenario_file(tmp_path, "read_your_writes_records = 0\n")))


def test_without_it_its_settings_are_unknown(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"engines\.read_your_writes: no probe takes it"):
        load_scenario(str(scenario_file(tmp_path)))


def test_old_words_read_as_the_one_vocabulary() -> None:
    assert read_status("not-measurable") == read_status("not measured") == "not-measured"
    assert read_status("measured") == "pass" and read_status("pass") == "pass"
    assert read_status("teleported") is None and read_status(None) is None
