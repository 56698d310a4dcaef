"""`crmbench serve` as a real process over real HTTP, on both backends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )


def _wait_ready(proc: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"serve exited with {proc.returncode}: {err}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("serve did not answer /health within 60 s")


@pytest.fixture()
def served(db_url: str, small_fixtures: Path) -> Iterator[str]:
    port = _free_port()
    proc = _start(
        ["--data", str(small_fixtures), "--db", db_url, "--port", str(port)],
        {"CRMBENCH_API_TOKEN": "s3cret-token"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        yield base
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "s3cret-token" not in err, "the token from the environment must never be printed"


def test_served_over_http(served: str) -> None:
    auth = {"Authorization": "Bearer s3cret-token"}
    assert httpx.get(f"{served}/customers/1").status_code == 401
    assert httpx.get(f"{served}/openapi.json").status_code == 200
    resp = httpx.get(f"{served}/customers/1/360", headers=auth)
    assert resp.status_code == 200
    assert resp.json()["customer"]["id"] == 1
    bad = httpx.post(f"{served}/leads", content=b"{", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "malformed_json"


def test_generated_token_is_printed(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CRMBENCH_API_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "serve", "--db", f"sqlite:///{tmp_path / 'e.sqlite3'}",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    line = next(x for x in err.splitlines() if "API token" in x)
    token = line.rsplit(" ", 1)[-1]
    assert len(token) >= 24


def test_serve_refuses_missing_fixtures(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "serve", "--data", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "manifest.json missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_a_database_holding_other_data(
    tmp_path: Path, small_fixtures: Path
) -> None:
    from bench.datagen.generate import generate
    from reference_impl.server import load

    db = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    load(db, small_fixtures, reset=False, say=lambda _m: None)
    other = generate(tmp_path / "other", customers=200, seed=99)
    assert other
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "serve", "--data", str(tmp_path / "other"), "--db", db,
         "--load-only"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    assert "--reset" in proc.stderr
