"""An external plugin for a JSON-RPC CRM, end to end: load, a quick run, capability probes.

The plugin (rpc_plugin.py) is installed as its own distribution would be: a dist-info
folder with a ``crmbench.adapters`` entry point on the path, nothing changed in crmbench.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.adapters.base import CustomerChanges, LeadInput, SearchQuery, Status
from bench.adapters.embedded import free_port
from bench.adapters.load import ensure_loaded, load_fixtures, loaded_record, state_paths
from bench.adapters.registry import create_adapter
from bench.errors import TargetUnreachable, UserError
from tests.bench.rpc_fake import FakeRpcCrm, RpcError, serve_fake

HERE = Path(__file__).parent
PLUGIN = HERE / "rpc_plugin.py"
LOADED = ("regions", "reps", "customers", "opportunities", "leads")
SCENARIO = """
version = 1
name = "rpc-quick"
users = 4
rate = 20
arrival = "pacing"

[mix]
get_customer = 3
search_customers = 2
list_leads = 1
create_lead = 1
log_activity = 1
update_opportunity_stage = 1
update_customer = 1

[probes]
agent_rate = 1
event_rate = 1

[profiles.quick]
warmup_s = 0.5
measure_s = 2
cooldown_s = 0.5
calibration_s = 0
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the plugin module and its distribution's entry point."""
    root = tmp_path_factory.mktemp("site")
    shutil.copy(PLUGIN, root / "rpc_plugin.py")
    info = root / "crmbench_rpc_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crmbench-rpc-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text('[crmbench.adapters]\nrpc = rpc_plugin:RpcAdapter\n')
    return root


@pytest.fixture()
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(site))
    # Processes the harness starts (load generators) find the plugin the same way.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(site), str(HERE.parent.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return site


@pytest.fixture()
def fake() -> Iterator[tuple[FakeRpcCrm, str]]:
    with serve_fake() as (crm, port):
        yield crm, f"rpc://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.datagen.generate import generate

    out = tmp_path_factory.mktemp("fixtures") / "tiny"
    generate(out, customers=100, seed=3)
    return out


def _rows(fixtures: Path, table: str) -> int:
    manifest = json.loads((fixtures / "manifest.json").read_text())
    return int(manifest["tables"][table]["rows"])


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def test_the_plugin_is_one_small_module() -> None:
    assert len(PLUGIN.read_text().splitlines()) <= 300
    imports = [line for line in PLUGIN.read_text().splitlines() if line.startswith("from bench")]
    assert all(line.startswith(("from bench.adapters.base ", "from bench.errors "))
               for line in imports)


def test_errors_map_to_distinct_statuses(
    installed: Path, fake: tuple[FakeRpcCrm, str], fixtures: Path, tmp_path: Path
) -> None:
    crm, url = fake
    adapter = create_adapter(url)
    adapter.open()
    try:
        load_fixtures(adapter, fixtures, target=url, state_dir=tmp_path)
        customer = adapter.keyspace().ids("customers")[0]
        assert isinstance(customer, str) and len(customer) == 36
        assert adapter.get_customer(customer) is Status.ok
        assert adapter.get_customer("no-such-id") is Status.not_found
        assert adapter.update_customer("no-such-id", CustomerChanges(website="x")) \
            is Status.not_found
        assert adapter.update_opportunity_stage(
            adapter.keyspace().ids("opportunities")[0], "won") is Status.ok
        assert adapter.customer_360(customer) is Status.unsupported
        crm.fail_next.append({"code": -32000, "message": "worker crashed"})
        assert adapter.search_customers(SearchQuery(name_prefix="A")) is Status.server_error
        crm.fail_next.append({"code": 7, "message": "field required"})
        assert adapter.create_lead(LeadInput("Acme", "Jo")) is Status.rejected
        rep = adapter.keyspace().ids("reps")[0]
        crm.fail_next.append({"code": -32601, "message": "no such method"})
        assert adapter.list_leads(rep) is Status.unsupported
    finally:
        adapter.close()
    down = create_adapter(f"rpc://127.0.0.1:{free_port()}")
    with pytest.raises(TargetUnreachable, match="answered transport_error"):
        down.open()


def test_an_interrupted_load_resumes_without_duplicates(
    installed: Path, fake: tuple[FakeRpcCrm, str], fixtures: Path, tmp_path: Path
) -> None:
    crm, url = fake
    adapter = create_adapter(url)
    adapter.open()
    try:
        # A server fault is retried; the fourth batch is refused, which stops the load.
        crm.fail_next.append({"code": -32000, "message": "busy"})
        calls = crm.calls.get("records.create", 0)
        original = crm.create
        seen = {"n": 0}

        def flaky(params: dict[str, Any]) -> list[str]:
            seen["n"] += 1
            if seen["n"] == 4:
                raise RpcError(3, "refused")
            return original(params)

        crm.create = flaky  # type: ignore[method-assign]
        with pytest.raises(UserError, match="resumes from that batch"):
            load_fixtures(adapter, fixtures, target=url, state_dir=tmp_path, batch=40,
                          sleep=lambda _s: None)
        journal = state_paths(adapter, url, tmp_path)[0]
        assert journal.is_file() and loaded_record(adapter, url, tmp_path) is None
        crm.create = original  # type: ignore[method-assign]
        outcome = load_fixtures(adapter, fixtures, target=url, state_dir=tmp_path, batch=40)
        assert outcome.resumed and crm.calls["records.create"] > calls
        assert not journal.is_file()
        counts = {m: len(r) for m, r in crm.records.items()}
        assert counts == {"region": _rows(fixtures, "regions"), "rep": _rows(fixtures, "reps"),
                          "partner": _rows(fixtures, "customers"),
                          "opportunity": _rows(fixtures, "opportunities"),
                          "lead": _rows(fixtures, "leads"), "activity": 0}
        # References were mapped onto the platform's keys of the rows loaded before.
        partners = set(crm.records["partner"])
        assert all(o["partner_id"] in partners for o in crm.records["opportunity"].values())
        assert outcome.record.rows["customers"] == _rows(fixtures, "customers")
        assert crm.meta["crmbench.load"]["manifest_sha256"] == outcome.record.manifest_sha256
    finally:
        adapter.close()


def test_ensure_loaded_loads_an_empty_target_once(
    installed: Path, fake: tuple[FakeRpcCrm, str], fixtures: Path, tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    crm, url = fake
    adapter = create_adapter(url)
    adapter.open()
    said: list[str] = []
    try:
        first = ensure_loaded(adapter, fixtures, said.append, target=url, state_dir=tmp_path)
        assert first is not None and any("records/s" in m for m in said)
        creates = crm.calls["records.create"]
        again = ensure_loaded(adapter, fixtures, said.append, target=url, state_dir=tmp_path)
        assert again == first and crm.calls["records.create"] == creates
        from bench.datagen.generate import generate

        other = tmp_path_factory.mktemp("other") / "p"
        generate(other, customers=100, seed=4)
        with pytest.raises(UserError, match="holds fixture profile"):
            ensure_loaded(adapter, other, said.append, target=url, state_dir=tmp_path)
    finally:
        adapter.close()


def test_load_run_and_probes_through_the_cli(
    installed: Path, fake: tuple[FakeRpcCrm, str], fixtures: Path, tmp_path: Path
) -> None:
    crm, url = fake
    state = tmp_path / "loads"
    proc = _cli("load", "--target", url, "--fixtures", str(fixtures), "--state-dir",
                str(state), "--json")
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert loaded["rows"]["customers"] == _rows(fixtures, "customers")
    assert loaded["records_per_s"] > 0 and "records/s" in proc.stderr
    assert len(crm.records["partner"]) == _rows(fixtures, "customers")
    scenario = tmp_path / "rpc.toml"
    scenario.write_text(SCENARIO)
    proc = _cli("run", "--target", url, "--scenario", str(scenario), "--profile", "quick",
                "--no-calibrate", "--out", str(tmp_path / "runs"), "--json")
    # A busy machine may rightly mark the run invalid (3); it must still have run.
    assert proc.returncode in (0, 3), proc.stderr
    result = json.loads(Path(json.loads(proc.stdout)["result"]).read_text())
    ops = result["operations"]
    assert ops["get_customer"]["statuses"].get("ok", 0) > 0
    assert ops["update_opportunity_stage"]["statuses"].get("ok", 0) > 0
    assert set(ops["get_customer"]["statuses"]) <= {"ok", "not_found"}
    assert len(crm.records["activity"]) > 0
    caps = result["capabilities"]
    for cid in ("agent.steps", "agent.takeover", "agent.explain", "cdp.realtime",
                "cdp.tags_explained"):
        assert caps[cid]["status"] == "unsupported", (cid, caps[cid])


def test_a_run_loads_an_empty_target_and_records_its_profile(
    installed: Path, fake: tuple[FakeRpcCrm, str], fixtures: Path, tmp_path: Path
) -> None:
    crm, url = fake
    assert not crm.records["partner"]
    scenario = tmp_path / "rpc.toml"
    scenario.write_text(SCENARIO)
    proc = _cli("run", "--target", url, "--scenario", str(scenario), "--profile", "quick",
                "--no-calibrate", "--fixtures", str(fixtures), "--load-state",
                str(tmp_path / "loads"), "--out", str(tmp_path / "runs"), "--json")
    assert proc.returncode in (0, 3), proc.stderr
    assert "records/s" in proc.stderr
    assert len(crm.records["partner"]) == _rows(fixtures, "customers")
    result = json.loads(Path(json.loads(proc.stdout)["result"]).read_text())
    wanted = hashlib.sha256((fixtures / "manifest.json").read_bytes()).hexdigest()
    assert result["fixtures"]["manifest_sha256"] == wanted
    assert result["fixtures"]["keyspace"]["customers"] == _rows(fixtures, "customers")
    assert result["operations"]["get_customer"]["statuses"].get("ok", 0) > 0
