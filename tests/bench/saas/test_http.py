"""Shared vendor plumbing: secrets, credentials, backoff, the limiter, the token box."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import httpx
import pytest

from bench.adapters.saas.http import (
    ClientThrottled,
    RetryPolicy,
    Secret,
    SlidingWindow,
    TokenBox,
    VendorClient,
    load_credentials,
    redact,
)
from bench.errors import TargetUnreachable, UserError

ENV = {"client_id": "DEMO_CLIENT_ID", "client_secret": "DEMO_CLIENT_SECRET"}


class FakeClock:
    """A monotonic clock that moves only when told (or when the fake sleep is called)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# ------------------------------------------------------------------ secrets


def test_secret_never_prints_its_value() -> None:
    secret = Secret("s3cr3t-value-123")
    assert str(secret) == "***" and repr(secret) == "Secret('***')"
    assert f"{secret} {secret!r}" == "*** Secret('***')"
    assert secret.reveal() == "s3cr3t-value-123"
    assert secret == Secret("s3cr3t-value-123") and secret != Secret("other-value-456")


def test_redact_removes_registered_values_and_secret_shapes() -> None:
    Secret("registered-token-ABCDEF")
    text = redact(
        "GET https://q.example/cgi-bin/gettoken?corpid=ww1&corpsecret=sh0wn&x=1 "
        "Authorization: Bearer 00D!abc.def body {\"access_token\": \"tok\", \"ok\": 1} "
        "and registered-token-ABCDEF inline"
    )
    assert "sh0wn" not in text and "00D!abc.def" not in text and '"tok"' not in text
    assert "registered-token-ABCDEF" not in text
    assert "corpid=ww1" in text and "x=1" in text and '"ok": 1' in text


def test_httpx_request_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={}))
    with httpx.Client(transport=transport) as client:
        client.get("https://qyapi.example/cgi-bin/gettoken",
                   params={"corpid": "ww1", "corpsecret": "leaky-secret-999"})
    assert "HTTP Request" in caplog.text
    assert "leaky-secret-999" not in caplog.text


# ------------------------------------------------------------------ credentials


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = _write(tmp_path / "c.toml",
                  '[demo]\nclient_id = "from-file-id"\nclient_secret = "from-file-secret"\n')
    creds = load_credentials("demo", ENV, environ={"DEMO_CLIENT_ID": "from-env-id"}, path=file)
    assert creds.complete
    assert creds["client_id"].reveal() == "from-env-id"
    assert creds["client_secret"].reveal() == "from-file-secret"
    described = {d["field"]: d for d in creds.describe()}
    assert described["client_id"]["source"] == "env DEMO_CLIENT_ID"
    assert described["client_secret"]["source"] == f"file {file}"
    assert "from-file-secret" not in repr(creds) + str(creds.describe())


def test_missing_credentials_name_the_variables(tmp_path: Path) -> None:
    creds = load_credentials("demo", ENV, environ={}, path=tmp_path / "absent.toml")
    assert not creds.complete
    assert creds.missing == ("DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET")
    assert "set DEMO_CLIENT_ID and DEMO_CLIENT_SECRET" in creds.hint()
    assert "[demo]" in creds.hint()


def test_a_credentials_file_inside_a_git_work_tree_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.chdir(repo)
    file = _write(repo / "credentials.toml", '[demo]\nclient_id = "x-123456"\n')
    with pytest.raises(UserError, match="inside the git work tree"):
        load_credentials("demo", ENV, environ={}, path=file)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX only")
def test_a_credentials_file_others_can_read_is_refused(tmp_path: Path) -> None:
    file = _write(tmp_path / "c.toml", '[demo]\nclient_id = "x-123456"\n', mode=0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_credentials("demo", ENV, environ={}, path=file)


def test_a_broken_credentials_file_is_a_user_error(tmp_path: Path) -> None:
    file = _write(tmp_path / "c.toml", "[demo\nclient_id = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_credentials("demo", ENV, environ={}, path=file)


def test_the_credentials_file_comes_from_crmbench_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = _write(tmp_path / "elsewhere.toml",
                  '[demo]\nclient_id = "file-id-123"\nclient_secret = "file-secret-123"\n')
    monkeypatch.setenv("CRMBENCH_CREDENTIALS", str(file))
    creds = load_credentials("demo", ENV, environ=dict(os.environ))
    assert creds.complete and creds.file == file


# ------------------------------------------------------------------ backoff


def test_full_jitter_stays_under_the_exponential_ceiling() -> None:
    policy = RetryPolicy(attempts=6, base_s=0.5, cap_s=4.0)
    rng = random.Random(7)
    for attempt in range(6):
        ceiling = min(4.0, 0.5 * 2 ** attempt)
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8
    assert policy.backoff(0, rng, retry_after=3.0) >= 3.0
    assert policy.backoff(0, rng, retry_after=99.0) == 4.0


def test_setup_calls_back_off_on_429_and_503_then_succeed() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(503),
               httpx.Response(200, json={"ok": True})]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    clock = FakeClock()
    client = VendorClient("Demo", transport=httpx.MockTransport(handler), sleep=clock.sleep,
                          rng=random.Random(1), retry=RetryPolicy(attempts=5, base_s=0.5))
    resp = client.setup("GET", "https://api.example/x")
    assert resp.status_code == 200 and len(seen) == 3
    assert len(clock.slept) == 2 and clock.slept[0] >= 2.0
    assert 0 <= clock.slept[1] <= 1.0
    assert client.retries == 2


def test_setup_calls_that_never_succeed_name_the_host() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    clock = FakeClock()
    client = VendorClient("Demo", transport=httpx.MockTransport(handler), sleep=clock.sleep,
                          retry=RetryPolicy(attempts=3))
    with pytest.raises(TargetUnreachable, match=r"Demo at api\.example does not answer"):
        client.setup("GET", "https://api.example/x")
    assert len(clock.slept) == 2


def test_timed_sends_never_retry() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429)

    client = VendorClient("Demo", transport=httpx.MockTransport(handler))
    assert client.send("GET", "https://api.example/x").status_code == 429
    assert len(calls) == 1


# ------------------------------------------------------------------ limiter


def test_sliding_window_counts_per_key_with_a_fake_clock() -> None:
    clock = FakeClock()
    window = SlidingWindow(3, 20.0, clock=clock, sleep=clock.sleep)
    assert [window.try_acquire("a") for _ in range(4)] == [True, True, True, False]
    assert window.try_acquire("b")
    clock.now += 19.9
    assert not window.try_acquire("a")
    clock.now += 0.2
    assert window.try_acquire("a")


def test_acquire_sleeps_until_the_oldest_call_leaves_the_window() -> None:
    clock = FakeClock()
    window = SlidingWindow(2, 10.0, clock=clock, sleep=clock.sleep)
    window.acquire()
    clock.now += 4.0
    window.acquire()
    waited = window.acquire()
    assert waited == pytest.approx(6.0)
    assert clock.slept == [pytest.approx(6.0)]


def test_a_throttled_send_is_refused_without_sending() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    clock = FakeClock()
    client = VendorClient(
        "Demo", limiter=SlidingWindow(1, 20.0, clock=clock, sleep=clock.sleep),
        transport=httpx.MockTransport(handler),
    )
    client.send("GET", "https://api.example/x", limit_key="/x")
    with pytest.raises(ClientThrottled):
        client.send("GET", "https://api.example/x", limit_key="/x")
    assert len(sent) == 1
    client.setup("GET", "https://api.example/x", limit_key="/x")
    assert len(sent) == 2 and clock.slept == [pytest.approx(20.0)]


# ------------------------------------------------------------------ tokens


def test_token_box_refreshes_once_per_stale_token_and_on_expiry() -> None:
    clock = FakeClock()
    issued: list[str] = []

    def fetch() -> tuple[Secret, float | None]:
        issued.append(f"token-number-{len(issued)}")
        return Secret(issued[-1]), 7200.0

    box = TokenBox(fetch, clock=clock, margin_s=600.0)
    first = box.get()
    assert box.get() is first and box.fetches == 1
    second = box.refresh(first)
    assert box.refresh(first) is second and box.fetches == 2
    clock.now += 6599
    assert box.get() is second
    clock.now += 2
    assert box.get().reveal() == "token-number-2"
