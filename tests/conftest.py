"""Shared fixtures: database backends (SQLite file, PostgreSQL) and small fixture profiles."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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
