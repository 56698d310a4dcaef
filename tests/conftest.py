"""Shared fixtures: database backends, small fixture profiles, a reference CRM served live."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SMALL_CUSTOMERS = 1_000


def _docker_available() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    import docker

    try:
        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _pg_reachable(url: str) -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    """A PostgreSQL server: CRMBENCH_DATABASE_URL, a testcontainer, or the local one.

    Under CI (CI=true) an unreachable server fails the run instead of skipping.
    """
    url = os.environ.get("CRMBENCH_DATABASE_URL", "")
    if url.startswith("postgres"):
        yield url
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as pg:
            yield pg.get_connection_url()
        return
    url = "postgresql://postgres@127.0.0.1:5432/test"
    problem = _pg_reachable(url)
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL tests must run in CI, but {url} is unreachable: {problem}")
        pytest.skip(f"no PostgreSQL reachable at {url}: {problem}")
    yield url


def _schema_url(postgres_base_url: str) -> Iterator[str]:
    import asyncpg

    schema = f"crmbench_t_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_base_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in postgres_base_url else "?"
    yield f"{postgres_base_url}{sep}search_path={schema}"
    asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture()
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A fresh, empty schema on the PostgreSQL server, dropped afterwards."""
    yield from _schema_url(postgres_base_url)


@pytest.fixture(scope="module")
def module_postgres_url(postgres_base_url: str) -> Iterator[str]:
    """Like postgres_url, shared by the tests of one module."""
    yield from _schema_url(postgres_base_url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Both backends, one database per test module."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'crm.sqlite3'}"
    return str(request.getfixturevalue("module_postgres_url"))


@pytest.fixture(scope="session")
def small_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-customer fixture profile, generated once per test session."""
    from bench.datagen.generate import generate

    out = tmp_path_factory.mktemp("fixtures") / "small"
    generate(out, customers=SMALL_CUSTOMERS, seed=7)
    return out


LIVE_TOKEN = "live-token"


class SseStream:
    """An open change-stream response, parsed message by message."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines

    def next(self) -> dict[str, Any]:
        """The next message: ``{"id", "event", "data"}``; comments are skipped."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if "data" in fields:
                    return {"id": int(fields["id"]), "event": fields["event"],
                            "data": json.loads(fields["data"])}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        raise AssertionError("the change stream ended")

    def take(self, count: int) -> list[dict[str, Any]]:
        return [self.next() for _ in range(count)]


@dataclass
class LiveCrm:
    """A reference CRM served by uvicorn in a thread, for tests that need real streaming."""

    base: str
    app: Any

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {LIVE_TOKEN}"}, timeout=10
        )

    @contextmanager
    def stream(self, headers: dict[str, str] | None = None, **params: Any) -> Iterator[SseStream]:
        """Subscribe to /stream; returns once the subscription is registered."""
        with self.client() as c, c.stream(
            "GET", "/stream", params=params, headers=headers or {}
        ) as resp:
            assert resp.status_code == 200, resp.read().decode()
            lines = resp.iter_lines()
            first = next(lines)
            assert first.startswith(": subscribed"), first
            yield SseStream(lines)


def start_live_crm(app: Any) -> tuple[LiveCrm, Callable[[], None]]:
    """Serve ``app`` on a free port in a thread; returns the handle and a stop function."""
    from reference_impl.server import make_server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(app, "127.0.0.1", port, loop="asyncio")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            pytest.fail("the in-thread reference CRM did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)
        sock.close()

    return LiveCrm(f"http://127.0.0.1:{port}", app), stop


@pytest.fixture(scope="module")
def live_crm(module_db_url: str, small_fixtures: Path) -> Iterator[LiveCrm]:
    """The reference CRM over HTTP on both backends, with the small fixtures loaded."""
    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(module_db_url, small_fixtures, reset=False, say=lambda _m: None)
    live, stop = start_live_crm(build_app(open_database(module_db_url), token=LIVE_TOKEN))
    try:
        yield live
    finally:
        stop()


API_TOKEN = "test-token"


@contextmanager
def app_client(
    db_url: str, fixtures: Path, *, test_clock: bool = False, raise_server_exceptions: bool = True
) -> Iterator[Any]:
    """The reference CRM in-process on ``db_url`` loaded with ``fixtures``, token already set."""
    from starlette.testclient import TestClient

    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(db_url, fixtures, reset=False, say=lambda _m: None)
    app = build_app(open_database(db_url), token=API_TOKEN, test_clock=test_clock)
    with TestClient(app, headers={"Authorization": f"Bearer {API_TOKEN}"},
                    raise_server_exceptions=raise_server_exceptions) as client:
        yield client
