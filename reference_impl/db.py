"""Database backends behind one small async interface: SQLite (WAL) and PostgreSQL (asyncpg).

SQL is written once with ``?`` placeholders; the PostgreSQL backend rewrites them to
``$n``. SQLite runs in the event-loop thread: indexed point queries take tens of
microseconds, less than a hop to a worker thread would. Reads use their own connection so
they only ever see committed data; writes are serialised by one lock. The write-ahead log
is folded into the database file by a background thread, not by the commit that happens
to cross SQLite's threshold (a copy and an fsync that would stall the event loop).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import polars as pl

from reference_impl.errors import DatabaseError, UserError
from reference_impl.schema import Dialect

Row = dict[str, Any]
Params = Sequence[Any]

log = logging.getLogger("reference_impl.db")

CHECKPOINT_INTERVAL_S = 0.2
# Should the background thread fall behind, a commit checkpoints once the log reaches this
# many pages (64 MiB), instead of SQLite's 1,000 (4 MiB).
BACKSTOP_PAGES = 16_384
STATEMENT_CACHE = 1024


class IntegrityViolation(Exception):
    """A constraint of the database refused a write."""


class Executor(Protocol):
    """Statements that run inside or outside a transaction."""

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...
    async def fetch_val(self, sql: str, params: Params = ()) -> Any: ...
    async def execute(self, sql: str, params: Params = ()) -> int: ...


class Database(Executor, Protocol):
    dialect: Dialect
    url_for_display: str

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> Any: ...
    async def bulk_insert(self, table: str, frame: pl.DataFrame) -> None: ...
    async def run_script(self, statements: Sequence[str]) -> None: ...
    async def reset_identity(self, table: str) -> None: ...


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def open_database(url: str, pool_size: int = 10) -> Database:
    """Pick the backend for a URL: ``sqlite:///path``, ``postgresql://...``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        path, _, query = url.split("://", 1)[1].partition("?")
        synchronous = _sqlite_synchronous(url, query)
        # sqlite:///relative/file and sqlite:////absolute/file, as elsewhere.
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise UserError(f"database URL {url!r} names no file: use sqlite:///path/to/file")
        return SqliteDatabase(Path(path) if path != ":memory:" else Path(":memory:"),
                              synchronous=synchronous)
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return PostgresDatabase(url.replace("postgresql+asyncpg://", "postgresql://"), pool_size)
    raise UserError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///FILE or postgresql://..."
    )


# SQLite's synchronous settings in WAL mode: NORMAL syncs at checkpoints, so a commit
# survives a crash of the process but not of the machine; FULL syncs the WAL at every
# commit, so it survives power loss too.
SYNCHRONOUS = ("normal", "full")


def _sqlite_synchronous(url: str, query: str) -> str:
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(params) - {"synchronous"})
    if unknown:
        raise UserError(f"database URL {_redact(url)}: unknown option {', '.join(unknown)}; "
                        "sqlite:///FILE takes ?synchronous=normal|full")
    value = params.get("synchronous", "normal").lower()
    if value not in SYNCHRONOUS:
        raise UserError(f"database URL {_redact(url)}: synchronous must be normal (durable "
                        "against a process crash) or full (durable against power loss)")
    return value


def _names(cur: sqlite3.Cursor) -> list[str]:
    return [d[0] for d in cur.description]


class _SqliteExecutor:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # Rows come back as plain tuples and become dicts here: cheaper than building a
    # sqlite3.Row for every row only to copy it into a dict.
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        # INSERT/UPDATE ... RETURNING come here too: a refused write is an IntegrityViolation.
        try:
            cur = self._conn.execute(sql, params)
            row = cur.fetchone()
        except sqlite3.IntegrityError as exc:
            raise IntegrityViolation(str(exc)) from exc
        return dict(zip(_names(cur), row, strict=True)) if row is not None else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        cur = self._conn.execute(sql, params)
        rows = cur.fetchall()
        if not rows:
            return []
        names = _names(cur)
        return [dict(zip(names, r, strict=True)) for r in rows]

    async def fetch_val(self, sql: str, params: Params = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.IntegrityError as exc:
            raise IntegrityViolation(str(exc)) from exc


class Checkpointer(threading.Thread):
    """Copies committed pages from the write-ahead log into the database file, off the loop.

    PASSIVE checkpoints neither wait for nor block readers and writers; sqlite3 releases the
    GIL while one runs, so the copy and its fsync use the other core.
    """

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL_S) -> None:
        super().__init__(name=f"sqlite-checkpoint {path.name}", daemon=True)
        self.path = path
        self.interval = interval
        self.runs = 0
        # (busy, frames in the log, frames copied) of the last checkpoint, as SQLite gives it.
        self.last: tuple[int, int, int] | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("background checkpoints of %s are off: %s", self.path, exc)
            return
        failed = False
        try:
            while not self._halt.wait(self.interval):
                try:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    if not failed:
                        log.warning("background checkpoint of %s failed: %s", self.path, exc)
                    failed = True
                    continue
                failed = False
                self.last = (int(busy), int(frames), int(copied))
                self.runs += 1
        finally:
            conn.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


class SqliteDatabase(_SqliteExecutor):
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        self.path = path
        self.synchronous = synchronous
        self.url_for_display = f"sqlite:///{path}" + (
            f"?synchronous={synchronous}" if synchronous != "normal" else "")
        self._write: sqlite3.Connection | None = None
        self._read: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self.checkpointer: Checkpointer | None = None

    def _open(self) -> sqlite3.Connection:
        # The statement cache holds every distinct statement of the hot paths (SQLite's
        # default of 128 is outgrown by the column combinations of inserts and updates).
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30,
            cached_statements=STATEMENT_CACHE,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA mmap_size=1073741824")
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def connect(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write = self._open()
            self._read = self._write if str(self.path) == ":memory:" else self._open()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {self.path}: {exc}") from exc
        # Reads share the write connection while no transaction is open: SQLite empties a
        # connection's page cache whenever another connection has committed, so a separate
        # reader would start cold after every write of a mixed workload. While a
        # transaction is open (suspended between statements), reads use their own
        # connection and see committed data only.
        self._conn = self._write
        if str(self.path) != ":memory:":
            self._write.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self.checkpointer = Checkpointer(self.path)
            self.checkpointer.start()

    async def close(self) -> None:
        if self.checkpointer is not None:
            # Joined before the connections close: the last close folds what is left.
            self.checkpointer.stop()
            self.checkpointer = None
        for conn in {id(c): c for c in (self._read, self._write) if c is not None}.values():
            conn.close()
        self._read = self._write = None

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteExecutor]:
        assert self._write is not None, "database not connected"
        async with self._lock:
            with self._reads_apart():
                self._write.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteExecutor(self._write)
                except BaseException:
                    self._write.execute("ROLLBACK")
                    raise
                self._write.execute("COMMIT")

    @contextmanager
    def _reads_apart(self) -> Iterator[None]:
        """Reads go to the read connection while a transaction is open on the write one."""
        assert self._read is not None and self._write is not None, "database not connected"
        self._conn = self._read
        try:
            yield
        finally:
            self._conn = self._write

    async def bulk_insert(self, table: str, frame: pl.DataFrame) -> None:
        assert self._write is not None
        marks = ", ".join("?" * frame.width)
        sql = f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({marks})"
        async with self._lock:
            with self._reads_apart():
                self._write.execute("BEGIN")
                try:
                    self._write.executemany(sql, frame.iter_rows())
                except BaseException:
                    self._write.execute("ROLLBACK")
                    raise
                self._write.execute("COMMIT")

    async def run_script(self, statements: Sequence[str]) -> None:
        async with self.transaction() as tx:
            for stmt in statements:
                await tx.execute(stmt)

    async def reset_identity(self, table: str) -> None:
        return None


@lru_cache(maxsize=4096)
def _pg_sql(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _m: f"${next(counter)}", sql)


class _PgExecutor:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        import asyncpg

        # INSERT/UPDATE ... RETURNING come here too: a refused write is an IntegrityViolation.
        try:
            row = await self._conn.fetchrow(_pg_sql(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityViolation(str(exc)) from exc
        return dict(row) if row is not None else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(_pg_sql(sql), *params)]

    async def fetch_val(self, sql: str, params: Params = ()) -> Any:
        return await self._conn.fetchval(_pg_sql(sql), *params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        import asyncpg

        try:
            status: str = await self._conn.execute(_pg_sql(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityViolation(str(exc)) from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


async def _keep_session(conn: Any) -> None:
    """Give a connection back to the pool as it is.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`` at every release: one more round trip and statement per query, about a
    sixth of PostgreSQL's CPU on the mixed workload. Pooled connections hold no session
    state to undo: they take transaction-level advisory locks and ``SET LOCAL`` only, and
    LISTEN and the timer owner's session lock live on dedicated connections
    (``reference_impl.cluster``). An open transaction is still rolled back by asyncpg.
    """
    return None


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.url_for_display = _redact(url)
        self.pool_size = pool_size
        self._pool: Any = None

    async def connect(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=10,
                reset=_keep_session,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {self.url_for_display}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        row = await self._pool.fetchrow(_pg_sql(sql), *params)
        return dict(row) if row is not None else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return [dict(r) for r in await self._pool.fetch(_pg_sql(sql), *params)]

    async def fetch_val(self, sql: str, params: Params = ()) -> Any:
        return await self._pool.fetchval(_pg_sql(sql), *params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgExecutor]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgExecutor(conn)

    async def bulk_insert(self, table: str, frame: pl.DataFrame) -> None:
        # CSV written by polars and parsed by the server: no per-row Python work.
        data = io.BytesIO(frame.write_csv(include_header=False, null_value="").encode())
        async with self._pool.acquire() as conn, conn.transaction():
            # Fixture files are checked against their manifest and generated with intact
            # keys: skipping per-row foreign-key triggers makes COPY several times faster.
            # Only a superuser may do so; others load with the checks on.
            if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
                await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.copy_to_table(
                table, source=data, columns=frame.columns, format="csv", null=""
            )

    async def run_script(self, statements: Sequence[str]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            for stmt in statements:
                await conn.execute(stmt)

    async def reset_identity(self, table: str) -> None:
        await self._pool.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )
