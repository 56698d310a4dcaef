"""Schema creation and bulk loading of a generated fixture profile into a database.

Tables are created without secondary indexes, filled in foreign-key order (SQLite
``executemany`` in one transaction, PostgreSQL ``COPY``), then indexed and analysed.
The loaded profile's manifest hash and a fingerprint of the schema are recorded; a
database that holds other data, or tables of another version, is refused rather than mixed.
A load that was cut off is detected and redone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from reference_impl.db import Database
from reference_impl.errors import DatabaseError, FixtureError
from reference_impl.fixtures import manifest_hash, read_manifest
from reference_impl.schema import (
    FIXTURE_TABLES,
    TABLES,
    TABLES_BY_NAME,
    Dialect,
    create_index_sql,
    create_table_sql,
)

Progress = Callable[[str], None]

META_TABLE = "crmbench_meta"
# Rows inserted at a time: one Parquet row group of the generator.
LOAD_BATCH_ROWS = 131_072


@dataclass(frozen=True)
class LoadInfo:
    fixture_hash: str | None
    loaded_now: bool
    seconds: float
    rows: dict[str, int]


def schema_hash(dialect: Dialect) -> str:
    """A fingerprint of the tables and indexes this version creates."""
    text = "\n".join([create_table_sql(t, dialect) for t in TABLES]
                     + [s for t in TABLES for s in create_index_sql(t)])
    return hashlib.sha256(text.encode()).hexdigest()


async def _table_exists(db: Database, name: str) -> bool:
    if db.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return await db.fetch_val(sql, (name,)) is not None
    return await db.fetch_val("SELECT to_regclass(?) IS NOT NULL", (name,)) is True


async def _meta(db: Database) -> dict[str, str]:
    if not await _table_exists(db, META_TABLE):
        return {}
    rows = await db.fetch_all(f"SELECT key, value FROM {META_TABLE}")
    return {r["key"]: r["value"] for r in rows}


async def _set_meta(db: Database, **values: str) -> None:
    async with db.transaction() as tx:
        for key, value in values.items():
            await tx.execute(f"DELETE FROM {META_TABLE} WHERE key = ?", (key,))
            await tx.execute(f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?)", (key, value))


async def drop_all(db: Database) -> None:
    cascade = " CASCADE" if db.dialect == "postgresql" else ""
    await db.run_script(
        [f"DROP TABLE IF EXISTS {t.name}{cascade}" for t in reversed(TABLES)]
        + [f"DROP TABLE IF EXISTS {META_TABLE}"]
    )


async def create_schema(db: Database, indexes: bool = True) -> None:
    statements = [f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"]
    statements += [create_table_sql(t, db.dialect) for t in TABLES]
    if indexes:
        statements += [s for t in TABLES for s in create_index_sql(t)]
    await db.run_script(statements)


async def _has_rows(db: Database) -> bool:
    if not await _table_exists(db, "customers"):
        return False
    return await db.fetch_val("SELECT 1 FROM customers LIMIT 1") is not None


async def _load_table(db: Database, name: str, path: Path) -> int:
    """Insert a fixture file batch by batch, so memory does not grow with the table."""
    columns = TABLES_BY_NAME[name].column_names
    with pq.ParquetFile(path) as file:
        found = tuple(file.schema_arrow.names)
        if found != columns:
            raise FixtureError(
                f"{path.name}: columns {list(found)} do not match the schema "
                f"{list(columns)}; regenerate the fixtures"
            )
        rows = 0
        for batch in file.iter_batches(batch_size=LOAD_BATCH_ROWS):
            frame = pl.DataFrame(pl.from_arrow(batch))
            await db.bulk_insert(name, frame)
            rows += frame.height
    return rows


async def prepare(
    db: Database, data: Path | None, *, reset: bool = False, progress: Progress | None = None
) -> LoadInfo:
    """Make ``db`` hold the schema and, when ``data`` is given, exactly that fixture profile."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    meta = await _meta(db)
    if meta.get("state") == "loading":
        say("a previous load was cut off; starting it again")
        reset = True
    if reset:
        await drop_all(db)
        meta = {}
    if data is None:
        await create_schema(db)
        return LoadInfo(meta.get("fixture_hash"), False, time.perf_counter() - start, {})

    manifest = read_manifest(data)
    wanted = manifest_hash(data)
    if meta.get("fixture_hash") == wanted and meta.get("schema_hash") != schema_hash(db.dialect):
        raise DatabaseError(
            f"database {db.url_for_display} holds fixture profile {wanted[:12]} in the tables "
            "of another crmbench version; start with --reset to load it anew"
        )
    if meta.get("fixture_hash") == wanted:
        await create_schema(db)
        say(f"database already holds fixture profile {wanted[:12]}")
        counts = {name: int(t["rows"]) for name, t in manifest["tables"].items()}
        return LoadInfo(wanted, False, time.perf_counter() - start, counts)
    if await _has_rows(db):
        raise DatabaseError(
            f"database {db.url_for_display} already holds other data "
            f"(fixture profile {meta.get('fixture_hash', 'unknown')[:12]}); "
            "start with --reset to replace it"
        )

    await drop_all(db)
    await create_schema(db, indexes=False)
    await _set_meta(db, state="loading")
    rows: dict[str, int] = {}
    for table in FIXTURE_TABLES:
        entry = manifest["tables"].get(table.name)
        if entry is None:
            raise FixtureError(f"fixture manifest in {data} lists no table {table.name!r}")
        t0 = time.perf_counter()
        rows[table.name] = await _load_table(db, table.name, data / entry["file"])
        say(f"loaded {table.name}: {rows[table.name]:,} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    await db.run_script([s for t in TABLES for s in create_index_sql(t)])
    for table in TABLES:
        if table.has_identity:
            await db.reset_identity(table.name)
    await db.run_script(["ANALYZE"])
    say(f"built indexes in {time.perf_counter() - t0:.1f} s")
    await _set_meta(db, state="ready", fixture_hash=wanted, schema_hash=schema_hash(db.dialect))
    return LoadInfo(wanted, True, time.perf_counter() - start, rows)
