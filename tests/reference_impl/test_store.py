"""Storage layer on both backends: atomic writes, loading, identity after bulk loads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.errors import DatabaseError, UserError
from reference_impl import db as dbmod
from reference_impl import models as m
from reference_impl.db import _pg_sql, _redact, open_database
from reference_impl.loader import prepare
from reference_impl.store import NotFound, Store


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_placeholders_are_rewritten_for_postgresql() -> None:
    assert _pg_sql("SELECT ? WHERE a = ? AND b = ?") == "SELECT $1 WHERE a = $2 AND b = $3"


def test_password_is_redacted_from_urls() -> None:
    shown = _redact("postgresql://bench:hunter2@db.internal:5432/crm")
    assert "hunter2" not in shown
    assert shown == "postgresql://bench:***@db.internal:5432/crm"


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://", "redis://localhost"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(UserError):
        open_database(url)


def test_unreachable_postgresql_is_a_clear_error() -> None:
    db = open_database("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        run(db.connect())


def test_load_counts_rows_and_is_idempotent(db_url: str, small_fixtures: Path) -> None:
    async def scenario() -> None:
        db = open_database(db_url)
        await db.connect()
        try:
            first = await prepare(db, small_fixtures)
            assert first.loaded_now
            assert first.rows["customers"] == 1000
            again = await prepare(db, small_fixtures)
            assert not again.loaded_now
            count = await db.fetch_val("SELECT COUNT(*) FROM customers")
            assert count == 1000
            store = Store(db)
            created = await store.create(
                "customers",
                m.CustomerCreate(name="After Load", industry="x", region_id=1, owner_rep_id=1),
            )
            # Identity continues after the bulk-loaded ids.
            assert created["id"] == 1001
        finally:
            await db.close()

    run(scenario())


def test_failed_transaction_writes_nothing(
    db_url: str, small_fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        db = open_database(db_url)
        await db.connect()
        try:
            await prepare(db, small_fixtures)
            store = Store(db)
            real_insert = store._insert

            async def failing(tx: Any, table: str, values: dict[str, Any]) -> int:
                if table == "contacts":
                    raise RuntimeError("disk on fire")
                return await real_insert(tx, table, values)

            monkeypatch.setattr(store, "_insert", failing)
            body = m.CustomerCreate(
                name="Half Written", industry="x", region_id=1, owner_rep_id=1,
                tags=["t1"], contacts=[m.NestedContact(first_name="A", last_name="B")],
            )
            with pytest.raises(RuntimeError):
                await store.create("customers", body)
            assert await db.fetch_val(
                "SELECT COUNT(*) FROM customers WHERE name_key = ?", ("half written",)
            ) == 0
            assert await db.fetch_val(
                "SELECT COUNT(*) FROM customer_tags WHERE tag = ?", ("t1",)
            ) == 0
        finally:
            await db.close()

    run(scenario())


def test_interrupted_load_is_redone(db_url: str, small_fixtures: Path) -> None:
    async def scenario() -> None:
        db = open_database(db_url)
        await db.connect()
        try:
            await prepare(db, small_fixtures)
            await db.execute("UPDATE crmbench_meta SET value = 'loading' WHERE key = 'state'")
            info = await prepare(db, small_fixtures)
            assert info.loaded_now
            assert await db.fetch_val("SELECT COUNT(*) FROM customers") == 1000
        finally:
            await db.close()

    run(scenario())


def test_the_write_ahead_log_is_folded_in_the_background(tmp_path: Path) -> None:
    """A big commit leaves the copy to the checkpoint thread, which catches up on its own."""

    async def scenario() -> None:
        db = open_database(f"sqlite:///{tmp_path / 'wal.sqlite3'}")
        await db.connect()
        try:
            assert isinstance(db, dbmod.SqliteDatabase) and db.checkpointer is not None
            # Reads outside a transaction share the writer (and its backstop); the reader
            # connection keeps SQLite's default.
            assert await db.fetch_val("PRAGMA wal_autocheckpoint") == dbmod.BACKSTOP_PAGES
            assert db._read is not None
            assert db._read.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
            async with db.transaction() as tx:
                assert await tx.fetch_val("PRAGMA wal_autocheckpoint") == dbmod.BACKSTOP_PAGES
                await tx.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body TEXT)")
                for _ in range(6):  # 6 MB: past SQLite's own 1,000-page threshold
                    await tx.execute("INSERT INTO blobs (body) VALUES (?)", ("x" * 1_000_000,))
            checkpointer = db.checkpointer
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                last = checkpointer.last
                if last is not None and last[1] > 1_000 and last[1] == last[2]:
                    break
                assert asyncio.get_running_loop().time() < deadline, last
                await asyncio.sleep(0.05)
            assert await db.fetch_val("SELECT COUNT(*) FROM blobs") == 6
        finally:
            await db.close()
        assert not checkpointer.is_alive()
        # The last connection to close folded and removed the log.
        assert not (tmp_path / "wal.sqlite3-wal").exists()

    run(scenario())


def test_reads_during_an_open_transaction_see_committed_data_only(tmp_path: Path) -> None:
    """Reads share the write connection, except while a transaction is open on it: a
    transaction suspended between statements must not show its changes to other requests."""

    async def scenario() -> None:
        db = open_database(f"sqlite:///{tmp_path / 'iso.sqlite3'}")
        await db.connect()
        try:
            assert isinstance(db, dbmod.SqliteDatabase)
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            await db.execute("INSERT INTO t (v) VALUES ('committed')")
            inside, outside = asyncio.Event(), asyncio.Event()

            async def writer() -> None:
                async with db.transaction() as tx:
                    await tx.execute("UPDATE t SET v = 'pending' WHERE id = 1")
                    inside.set()
                    await outside.wait()  # suspended mid-transaction
                    raise RuntimeError("rolled back")

            task = asyncio.create_task(writer())
            await inside.wait()
            assert await db.fetch_val("SELECT v FROM t WHERE id = 1") == "committed"
            outside.set()
            with pytest.raises(RuntimeError):
                await task
            assert await db.fetch_val("SELECT v FROM t WHERE id = 1") == "committed"
            async with db.transaction() as tx:
                await tx.execute("UPDATE t SET v = 'done' WHERE id = 1")
            assert await db.fetch_val("SELECT v FROM t WHERE id = 1") == "done"
            assert db._conn is db._write  # reads are back on the writer
        finally:
            await db.close()

    run(scenario())


@pytest.mark.parametrize(("suffix", "expected"), [("", 1), ("?synchronous=normal", 1),
                                                 ("?synchronous=full", 2)])
def test_sqlite_durability_follows_the_url(tmp_path: Path, suffix: str, expected: int) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'd.sqlite3'}{suffix}")
    assert isinstance(db, dbmod.SqliteDatabase)

    async def level() -> int:
        await db.connect()
        try:
            return int(await db.fetch_val("PRAGMA synchronous"))
        finally:
            await db.close()

    assert asyncio.run(level()) == expected


def test_an_unknown_sqlite_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="synchronous must be normal"):
        open_database(f"sqlite:///{tmp_path / 'd.sqlite3'}?synchronous=off")
    with pytest.raises(UserError, match="unknown option"):
        open_database(f"sqlite:///{tmp_path / 'd.sqlite3'}?journal=delete")


@pytest.mark.postgres
def test_pooled_postgresql_connections_are_given_back_without_a_reset(postgres_url: str) -> None:
    """A release sends nothing: asyncpg's default reset is a statement per query."""
    async def scenario() -> str:
        import asyncpg

        db = open_database(postgres_url, pool_size=1)
        await db.connect()
        try:
            pid = await db.fetch_val("SELECT pg_backend_pid()")
            await db.execute("CREATE TABLE pooled (x int)")
            assert await db.fetch_val("SELECT pg_backend_pid()") == pid
            watcher = await asyncpg.connect(postgres_url)
            try:
                last: str = await watcher.fetchval(
                    "SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
            finally:
                await watcher.close()
            return last
        finally:
            await db.close()

    assert run(scenario()) == "SELECT pg_backend_pid()"


@pytest.mark.postgres
def test_postgresql_360_view_in_one_statement_equals_the_six_statements(
        postgres_url: str, small_fixtures: Path) -> None:
    async def scenario() -> None:
        db = open_database(postgres_url)
        await db.connect()
        try:
            await prepare(db, small_fixtures)
            store = Store(db)
            # A whole double (an amount of 5899.0) must stay a float through JSON.
            await db.execute("UPDATE orders SET total_amount = 5899 WHERE customer_id = 3")
            await db.execute("UPDATE opportunities SET amount = 4102 WHERE customer_id = 3")
            compared = 0
            for cid in [*range(1, 120), 1000]:
                one = await store.customer_360(cid)
                six = await store._customer_360_parts(cid, 10, 10)
                assert one == six, cid
                assert [type(v) for o in one["recent_orders"] for v in o.values()] == [
                    type(v) for o in six["recent_orders"] for v in o.values()]
                compared += bool(one["recent_orders"] and one["recent_activities"])
            assert compared > 10
            view = await store.customer_360(3)
            assert all(type(o["total_amount"]) is float for o in view["recent_orders"])
            with pytest.raises(NotFound, match="customer 1001 does not exist"):
                await store.customer_360(1001)
        finally:
            await db.close()

    run(scenario())
