"""Cores of a local target and of the load generator (bench.measure.cpus)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from bench.measure.cpus import CpuSplit, affinity_of, spawning_on, split_cpus, usable_cpus
from bench.scenarios.config import load_scenario
from bench.scenarios.runner import RunRequest, run
from bench.scenarios.session import cpu_plan
from tests.bench.test_run import scenario_file

CHILD = "import os; print(sorted(os.sched_getaffinity(0)))"


def test_split_gives_the_last_core_to_the_target() -> None:
    assert split_cpus([0, 1]) == CpuSplit(server=(1,), generator=(0,))
    assert split_cpus([3, 0, 2, 1]) == CpuSplit(server=(3,), generator=(0, 1, 2))
    assert split_cpus([5]) is None
    assert split_cpus([]) is None
    assert CpuSplit((1,), (0,)).to_json() == {"server": [1], "generator": [0]}


def test_only_a_single_sqlite_reference_crm_is_pinned() -> None:
    expected = split_cpus()
    assert cpu_plan("reference://embedded") == expected
    assert cpu_plan("reference://embedded?slowdown_ms=1") == expected
    pg = "postgresql://postgres@127.0.0.1:5432/test"
    assert cpu_plan(f"reference://embedded?db={pg}") is None
    assert cpu_plan(f"reference://embedded?db={pg}&workers=2") is None
    assert cpu_plan("noop://?delay_ms=1") is None
    assert cpu_plan("reference+http://127.0.0.1:8000") is None
    # No more generator processes than the cores left for them.
    cores = len(usable_cpus())
    assert cpu_plan("reference://embedded", generators=cores - 1) == expected
    assert cpu_plan("reference://embedded", generators=cores) is None


def test_a_child_started_inside_runs_on_the_cores_given() -> None:
    before = usable_cpus()
    core = before[-1]
    with spawning_on([core]):
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                             check=True).stdout
    assert out.strip() == f"[{core}]"
    # The harness itself is back on every core it had.
    assert usable_cpus() == before


def test_other_threads_keep_their_cores() -> None:
    before = usable_cpus()
    seen: list[list[int]] = []
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait(10)
        seen.append(sorted(os.sched_getaffinity(0)))
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with spawning_on([before[0]]):
        inside.set()
        assert done.wait(10)
    thread.join()
    assert seen == [before]


def test_no_cores_given_changes_nothing() -> None:
    before = usable_cpus()
    with spawning_on(None):
        assert usable_cpus() == before
    with spawning_on([]):
        assert usable_cpus() == before


def _placement(root: int) -> dict[str, list[int]]:
    """Affinity of the embedded server and of the load generator among root's children."""
    out: dict[str, list[int]] = {}
    for proc in psutil.Process(root).children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
            if "bench serve" in line:
                out["server"] = affinity_of(proc.pid)
            elif "bench.scenarios.driver" in line:
                out["generator"] = affinity_of(proc.pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.skipif(split_cpus() is None, reason="pinning needs two usable cores")
def test_a_run_pins_the_embedded_crm_and_the_generator(tmp_path: Path,
                                                       small_fixtures: Path) -> None:
    split = split_cpus()
    assert split is not None
    before = usable_cpus()
    scenario = load_scenario(str(scenario_file(tmp_path, users=10, rate=40, measure=2)),
                             profile="quick")
    seen: list[dict[str, list[int]]] = []

    def on_interval(*_args: object) -> None:
        if not seen:
            seen.append(_placement(os.getpid()))

    report = run(RunRequest(scenario, target="reference://embedded", fixtures=small_fixtures,
                            out=tmp_path / "runs", calibrate=False),
                 say=lambda _m: None, on_interval=on_interval)
    assert report.result["complete"], report.result.get("abort_reason")
    assert seen == [split.to_json()]
    assert report.result["target"]["cpus"] == split.to_json()
    # The harness's own process is not narrowed.
    assert usable_cpus() == before

    unpinned = run(RunRequest(scenario, target="reference://embedded", fixtures=small_fixtures,
                              out=tmp_path / "runs2", calibrate=False, pin=False),
                   say=lambda _m: None)
    assert "cpus" not in unpinned.result["target"]
