"""`crmbench serve` with named tokens: generated secrets printed once, given ones never."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.reference_impl.test_serve import _free_port, _start, _wait_ready


def test_serve_creates_named_tokens_and_prints_only_generated_secrets(
        tmp_path: Path, small_fixtures: Path) -> None:
    port = _free_port()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('version = 1\n[[tokens]]\nname = "ana"\nrole = "analyst"\n'
                      'token_env = "ANA_SECRET"\n')
    db = f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    proc = _start(["--data", str(small_fixtures), "--db", db, "--port", str(port),
                   "--tokens", str(tokens), "--role-token", "auditor:otto"],
                  {"CRMBENCH_API_TOKEN": "svc-secret", "ANA_SECRET": "ana-secret"})
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base)
        ana = httpx.get(f"{base}/me", headers={"Authorization": "Bearer ana-secret"})
        assert ana.json()["role"] == "analyst"
        svc = httpx.get(f"{base}/me", headers={"Authorization": "Bearer svc-secret"})
        assert svc.json()["role"] == "admin"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert "svc-secret" not in err and "ana-secret" not in err
    line = next(x for x in err.splitlines() if x.startswith("token otto (auditor): "))
    secret = line.rsplit(" ", 1)[1]
    assert err.count(secret) == 1
