"""Shared state of the micro benchmarks: one event loop and a small loaded SQLite database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.datagen.generate import generate
from reference_impl.db import Database, open_database
from reference_impl.loader import prepare

CUSTOMERS = 1_000


@pytest.fixture(scope="session")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for the session: the database connection belongs to it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def db(
    tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop
) -> Iterator[Database]:
    """The reference CRM's SQLite database holding a 1,000-customer profile."""
    data: Path = tmp_path_factory.mktemp("fixtures") / "small"
    generate(data, customers=CUSTOMERS, seed=7)
    database = open_database(f"sqlite:///{tmp_path_factory.mktemp('db') / 'crm.sqlite3'}")
    loop.run_until_complete(database.connect())
    loop.run_until_complete(prepare(database, data))
    yield database
    loop.run_until_complete(database.close())
