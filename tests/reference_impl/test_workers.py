"""`crmbench serve --workers 2` on PostgreSQL: two processes on one port, over real HTTP."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SseStream

TOKEN = "workers-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CRMBENCH_API_TOKEN": TOKEN},
    )


@pytest.fixture(scope="module")
def cluster(module_postgres_url: str, small_fixtures: Path) -> Iterator[str]:
    port = _free_port()
    proc = _serve(["--db", module_postgres_url, "--data", str(small_fixtures),
                   "--port", str(port), "--workers", "2"])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}: {proc.communicate()[1]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("serve --workers 2 did not answer /health")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _pid(client: httpx.Client) -> int:
    pid: int = client.get("/health").json()["pid"]
    return pid


def _two_processes(base: str, stack: ExitStack) -> tuple[httpx.Client, httpx.Client]:
    """Two clients whose (kept-alive) connections were accepted by different processes."""
    first = stack.enter_context(httpx.Client(base_url=base, headers=AUTH, timeout=10))
    pid = _pid(first)
    for _ in range(200):
        other = stack.enter_context(httpx.Client(base_url=base, headers=AUTH, timeout=10))
        if _pid(other) != pid:
            assert _pid(first) == pid, "a kept-alive connection changed process"
            return first, other
    pytest.fail("every connection went to the same process")


def _stream(client: httpx.Client, stack: ExitStack, **params: Any) -> SseStream:
    resp = stack.enter_context(client.stream("GET", "/stream", params=params))
    assert resp.status_code == 200
    lines = resp.iter_lines()
    assert next(lines).startswith(": subscribed")
    return SseStream(lines)


def _event(customer: int) -> dict[str, Any]:
    return {"customer_id": customer, "type": "page_view", "properties": {},
            "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
            "idempotency_key": uuid.uuid4().hex}


@pytest.mark.postgres
def test_changes_written_on_one_process_reach_a_subscriber_on_the_other(cluster: str) -> None:
    with ExitStack() as stack:
        a, b = _two_processes(cluster, stack)
        live = _stream(b, stack, types="profile.updated")
        # A third connection, on whichever process: the order holds across all writers.
        c = stack.enter_context(httpx.Client(base_url=cluster, headers=AUTH, timeout=10))
        sent = 0
        for i in range(30):
            writer = (a, a, b, c)[i % 4]
            assert writer.post("/events", json=_event(1 + i % 5)).status_code == 202
            sent += 1
        got = live.take(sent)
        seqs = [m["id"] for m in got]
        assert seqs == sorted(set(seqs)), "out of order or duplicated"
        replayed = _stream(a, stack, types="profile.updated", after=seqs[0] - 1).take(sent)
        assert [m["id"] for m in replayed] == seqs, "the live stream skipped a stored message"


@pytest.mark.postgres
def test_a_workflow_deployed_on_one_process_runs_on_the_other(cluster: str) -> None:
    doc = {"name": f"cross-{uuid.uuid4().hex[:8]}", "nodes": [
        {"id": "t", "type": "trigger", "on": "manual"},
        {"id": "n", "type": "action", "action": "noop"}], "edges": [["t", "n"]]}
    with ExitStack() as stack:
        a, b = _two_processes(cluster, stack)
        created = a.post("/workflows", json=doc)
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        assert b.get(f"/workflows/{wid}").status_code == 200
        run = b.post(f"/workflows/{wid}/runs", json={"input": {}, "wait": True})
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "completed"
        again = a.post("/workflows", json=doc)
        assert again.json()["version"] == 2
        assert b.get(f"/workflows/{wid}").json()["latest_version"] == 2


@pytest.mark.postgres
def test_each_sla_breach_is_emitted_once_with_two_processes(cluster: str) -> None:
    with ExitStack() as stack:
        a, b = _two_processes(cluster, stack)
        info = a.get("/stream/info").json()
        sla = a.post("/slas", json={"level": "field", "object": "lead", "field": "phone",
                                    "within_s": 1.0, "name": "phone within a second"})
        assert sla.status_code == 201, sla.text
        sid = sla.json()["id"]
        assert b.get(f"/slas/{sid}").status_code == 200
        leads = []
        for i in range(6):
            writer = a if i % 2 else b
            lead = writer.post("/leads", json={"company_name": f"Breach {i}",
                                               "contact_name": "Pat", "region_id": 1})
            assert lead.status_code == 201, lead.text
            leads.append(lead.json()["id"])
        live = _stream(b, stack, types="sla.breached", after=info["last_seq"])
        breached = [m["data"]["payload"]["record_id"] for m in live.take(len(leads))]
        assert sorted(breached) == sorted(leads)
        # Every instance is breached now: a second emission would already be stored.
        deadline = time.monotonic() + WAIT_S
        while True:
            items = a.get(f"/slas/{sid}/instances", params={"limit": 50}).json()["items"]
            if all(i["status"] == "red" for i in items) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [i["status"] for i in items] == ["red"] * len(leads)
        marker = a.post("/events", json=_event(1))
        assert marker.status_code == 202
        replay = _stream(a, stack, after=info["last_seq"])
        seen: list[int] = []
        while True:
            msg = replay.next()
            if msg["event"] == "sla.breached" and msg["data"]["payload"]["sla_id"] == sid:
                seen.append(msg["data"]["payload"]["instance_id"])
            if msg["event"] == "profile.updated":
                break
        assert sorted(seen) == sorted({i["id"] for i in items})


def test_workers_with_sqlite_are_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "serve", "--db", f"sqlite:///{tmp_path / 'x.sqlite3'}",
         "--port", str(_free_port()), "--workers", "2"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CRMBENCH_API_TOKEN": TOKEN},
    )
    assert done.returncode == 2
    assert "PostgreSQL" in done.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def test_embedded_url_takes_workers_and_a_database() -> None:
    from bench.adapters.embedded import EmbeddedOptions, parse_embedded
    from bench.errors import UserError

    url = "postgresql://postgres@127.0.0.1:5432/test"
    assert parse_embedded(f"reference://embedded?workers=2&db={url}") == EmbeddedOptions(
        db=url, workers=2)
    assert parse_embedded("reference://embedded") == EmbeddedOptions()
    for bad in ("workers=2", "workers=0", "workers=x&db=" + url, "db=sqlite:///x"):
        with pytest.raises(UserError):
            parse_embedded(f"reference://embedded?{bad}")


@pytest.mark.postgres
def test_embedded_target_serves_from_two_processes(postgres_url: str,
                                                    small_fixtures: Path) -> None:
    from bench.adapters.embedded import EmbeddedOptions, EmbeddedReference

    options = EmbeddedOptions(db=postgres_url, workers=2)
    with EmbeddedReference(small_fixtures, options=options) as ref, ExitStack() as stack:
        base = f"http://127.0.0.1:{ref.port}"
        auth = {"Authorization": f"Bearer {ref.token}"}
        pids = set()
        for _ in range(200):
            client = stack.enter_context(httpx.Client(base_url=base, headers=auth, timeout=10))
            pids.add(_pid(client))
            if len(pids) == 2:
                break
        assert len(pids) == 2
        assert client.get("/customers/1").status_code == 200
