"""Target faults are classified, never mixed into latency; a stalled target ends the run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.adapters import reference
from bench.adapters.base import Status
from bench.adapters.reference import ReferenceAdapter
from bench.results.store import read_result
from tests.bench.faultproxy import FaultProxy, fault_proxy
from tests.conftest import LIVE_TOKEN, LiveCrm


@pytest.fixture()
def proxy(live_crm: LiveCrm) -> Iterator[FaultProxy]:
    with fault_proxy(live_crm.base, delay_s=0.3) as p:
        yield p


@pytest.fixture()
def adapter(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReferenceAdapter]:
    # A short network timeout keeps the stalled cases quick; 30 s in real runs.
    monkeypatch.setattr(reference, "NETWORK_TIMEOUT", 1.0)
    a = ReferenceAdapter.from_url(f"reference+http://127.0.0.1:{proxy.port}",
                                  env={"CRMBENCH_API_TOKEN": LIVE_TOKEN})
    a.open()
    yield a
    a.close()


@pytest.mark.parametrize(("fault", "expected"), [
    ("pass", Status.ok),
    ("latency", Status.ok),             # slower, but a whole answer in time
    ("slow_body", Status.timeout),      # the body would take minutes: no answer in time
    ("reset", Status.transport_error),
    ("half_open", Status.timeout),
    ("http_503", Status.server_error),
    ("http_429", Status.rate_limited),
])
def test_each_fault_lands_in_its_status(
    proxy: FaultProxy, adapter: ReferenceAdapter, fault: str, expected: Status
) -> None:
    proxy.fault = fault
    # A new connection for every call, so that each one meets the fault from the start.
    adapter._idle.clear()
    assert adapter.get_customer(1) is expected
    assert adapter.customer_360(1) is expected


def test_the_adapter_recovers_once_the_fault_is_gone(
    proxy: FaultProxy, adapter: ReferenceAdapter
) -> None:
    proxy.fault = "reset"
    adapter._idle.clear()
    assert adapter.get_customer(1) is Status.transport_error
    proxy.fault = "pass"
    assert adapter.get_customer(1) is Status.ok


def test_a_stalled_target_ends_the_run_with_exit_4(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    scenario = tmp_path / "stall.toml"
    scenario.write_text(
        'version = 1\nname = "stall"\nusers = 10\nrate = 40\narrival = "pacing"\n'
        "[mix]\nget_customer = 1\n"
        "[profiles.quick]\nwarmup_s = 0.5\nmeasure_s = 120\ncooldown_s = 0\n"
        "calibration_s = 0\n"
    )
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--target",
         f"reference+http://127.0.0.1:{proxy.port}", "--scenario", str(scenario),
         "--profile", "quick", "--no-calibrate", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CRMBENCH_API_TOKEN": LIVE_TOKEN},
    )
    time.sleep(8)  # preflight and a few seconds of load through the healthy proxy
    proxy.fault = "half_open"  # new connections now stall; so do the kept-alive ones:
    proxy.stall_open()
    _stdout, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 4, stderr
    [path] = out.glob("*.json")
    result = read_result(path)
    assert result["complete"] is False
    assert "target stopped answering" in result["abort_reason"], result["abort_reason"]
    assert result["overall"]["count"] > 0
