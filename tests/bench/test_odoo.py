"""The Odoo 17 adapter: error model and URLs, a replay of recorded live answers, live runs.

The replay feeds the adapter the answers a live Odoo 17 gave to the same session
(tests/bench/odoo_recorder.py wrote them); the live test runs that session against the
Odoo named by CRMBENCH_ODOO_URL, and the container test against ``odoo:17`` where a
Docker daemon answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.adapters.base import CAPABILITY_IDS, Status
from bench.adapters.odoo import (
    KEY_ENV,
    LOGIN_ENV,
    STAGE_XMLIDS,
    OdooAdapter,
    status_for_odoo,
)
from bench.adapters.registry import load_adapter
from bench.errors import TargetUnreachable, UserError
from tests.conftest import _docker_available

from .odoo_recorder import (
    CASSETTE,
    KEY_PLACEHOLDER,
    ReplayTransport,
    make_fixtures,
    session,
)

CREDENTIALS = {LOGIN_ENV: "admin", KEY_ENV: "secret-key"}


def _error(name: str, message: str = "", code: int = 200) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "error": {
        "code": code, "message": "Odoo Server Error", "data": {"name": name, "message": message}}}


@pytest.mark.parametrize(("body", "http", "one", "status"), [
    ({"jsonrpc": "2.0", "id": 1, "result": [1]}, 200, False, Status.ok),
    ({"jsonrpc": "2.0", "id": 1, "result": []}, 200, True, Status.not_found),
    ({"jsonrpc": "2.0", "id": 1, "result": []}, 200, False, Status.ok),
    ({"jsonrpc": "2.0", "id": 1}, 200, False, Status.ok),
    ({"id": 1}, 200, False, Status.error),
    (_error("odoo.exceptions.MissingError"), 200, False, Status.not_found),
    (_error("odoo.exceptions.ValidationError"), 200, False, Status.rejected),
    (_error("odoo.exceptions.AccessError"), 200, False, Status.rejected),
    (_error("odoo.exceptions.AccessDenied"), 200, False, Status.rejected),
    (_error("builtins.AttributeError", "type object 'x' has no attribute 'y'"), 200, False,
     Status.unsupported),
    (_error("odoo.http.SessionExpiredException", code=100), 200, False, Status.rejected),
    (_error("psycopg2.errors.SerializationFailure"), 200, False, Status.server_error),
    ("not json-rpc", 200, False, Status.error),
    (None, 404, False, Status.not_found),
    (None, 429, False, Status.rate_limited),
    (None, 504, False, Status.timeout),
    (None, 502, False, Status.server_error),
])
def test_odoo_answers_map_to_statuses(body: object, http: int, one: bool,
                                      status: Status) -> None:
    assert status_for_odoo(body, http, one=one) is status


def test_urls_and_credentials() -> None:
    adapter = OdooAdapter.from_url("odoo+http://127.0.0.1:8069/crm?load_parallel=2",
                                   env=CREDENTIALS)
    assert (adapter.base_url, adapter.database, adapter.load_parallel) == (
        "http://127.0.0.1:8069", "crm", 2)
    assert "secret-key" not in repr(adapter)
    report = adapter.credential_report()
    assert report is not None and all(f.set for f in report.fields)
    assert "secret-key" not in repr(report)
    for bad in ("odoo+http://127.0.0.1:8069/", "odoo+http://127.0.0.1/crm",
                "http://127.0.0.1:8069/crm", "odoo+http://127.0.0.1:8069/crm?x=1",
                "odoo+http://127.0.0.1:8069/crm?load_parallel=many"):
        with pytest.raises(UserError):
            OdooAdapter.from_url(bad, env=CREDENTIALS)
    with pytest.raises(UserError, match=KEY_ENV):
        OdooAdapter.from_url("odoo+http://127.0.0.1:8069/crm", env={LOGIN_ENV: "admin"})


def test_registered_and_every_capability_declared_with_a_reason() -> None:
    assert load_adapter("odoo+http") is OdooAdapter
    caps = OdooAdapter.capabilities
    assert set(caps) == set(CAPABILITY_IDS)
    assert caps["crud.mixed"].support == "supported"
    for cid in ("agent.latency", "cdp.event_delay", "sla.granularity", "sla.field"):
        assert caps[cid].support == "unsupported", cid
    assert all(cap.note for cid, cap in caps.items() if cid != "crud.mixed")
    assert set(STAGE_XMLIDS) == {"open", "qualified", "proposal", "negotiation", "won"}


def test_unreachable_target() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    adapter = OdooAdapter("http://127.0.0.1:1", "crm", "admin", "k",
                          transport=httpx.MockTransport(refuse))
    with pytest.raises(TargetUnreachable):
        adapter.open()


# ------------------------------------------------------------------ recorded answers


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixtures(tmp_path_factory.mktemp("fixtures") / "odoo")


def _check(outcomes: dict[str, Any], fixtures: Path) -> None:
    manifest = json.loads((fixtures / "manifest.json").read_text())
    assert outcomes["open_with_wrong_key"] == "TargetUnreachable"
    assert (outcomes["version"] or "").startswith("Odoo 17")
    for kind in ("customers", "opportunities", "reps", "regions"):
        assert outcomes["keyspace"][kind] == manifest["tables"][kind]["rows"], kind
    assert outcomes["keyspace"]["leads"] >= manifest["tables"]["leads"]["rows"]
    assert outcomes["loaded_rows"]["activities"] == manifest["tables"]["activities"]["rows"]
    assert outcomes["reloaded_customers"] is True
    assert outcomes["loaded_profile_sha256"] == hashlib.sha256(
        (fixtures / "manifest.json").read_bytes()).hexdigest()
    statuses = outcomes["statuses"]
    for name, status in statuses.items():
        expected = "ok"
        if name.endswith("_missing"):
            expected = "not_found"
        elif name in ("unknown_method", "invalid_record"):
            expected = "unsupported" if name == "unknown_method" else "rejected"
        assert status == expected, (name, status)


def test_replay_of_a_recorded_live_session(fixtures: Path, tmp_path: Path) -> None:
    recorded = json.loads(CASSETTE.read_text())
    replay = ReplayTransport(recorded["exchanges"])

    def make(wrong: str) -> OdooAdapter:
        return OdooAdapter("http://odoo.invalid:8069", recorded["database"],
                           recorded["login"], wrong or KEY_PLACEHOLDER, transport=replay)

    outcomes = session(make, fixtures, tmp_path / "loads")
    assert outcomes == recorded["outcomes"]
    _check(outcomes, fixtures)
    assert replay.unused() == 0


# ------------------------------------------------------------------ live servers


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CRMBENCH_ODOO_URL"), reason="CRMBENCH_ODOO_URL unset")
def test_live_session(fixtures: Path, tmp_path: Path) -> None:
    live = OdooAdapter.from_url(os.environ["CRMBENCH_ODOO_URL"])

    def make(wrong: str) -> OdooAdapter:
        return OdooAdapter(live.base_url, live.database, os.environ[LOGIN_ENV],
                           wrong or os.environ[KEY_ENV])

    _check(session(make, fixtures, tmp_path / "loads"), fixtures)


@pytest.fixture(scope="module")
def odoo_container() -> Iterator[str]:
    if not _docker_available():
        pytest.skip("no Docker daemon answers")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    with Network() as net, DockerContainer("postgres:15").with_network(net) \
            .with_network_aliases("db").with_env("POSTGRES_USER", "odoo") \
            .with_env("POSTGRES_PASSWORD", "odoo").with_env("POSTGRES_DB", "postgres"), \
            DockerContainer("odoo:17").with_network(net).with_exposed_ports(8069) \
            .with_env("HOST", "db").with_command(
                "-- -d crmbench -i crm --without-demo=all") as odoo:
        url = f"http://{odoo.get_container_host_ip()}:{odoo.get_exposed_port(8069)}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                body = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
                    "service": "common", "method": "login",
                    "args": ["crmbench", "admin", "admin"]}}
                if httpx.post(f"{url}/jsonrpc", json=body, timeout=5).json().get("result"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        yield url.replace("http://", "odoo+http://") + "/crmbench"


@pytest.mark.slow
def test_container_session(odoo_container: str, fixtures: Path, tmp_path: Path) -> None:
    target = OdooAdapter.from_url(odoo_container, env={LOGIN_ENV: "admin", KEY_ENV: "admin"})

    def make(wrong: str) -> OdooAdapter:
        return OdooAdapter(target.base_url, target.database, "admin", wrong or "admin")

    _check(session(make, fixtures, tmp_path / "loads"), fixtures)
