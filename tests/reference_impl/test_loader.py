"""Bulk loading of fixture files batch by batch."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from bench.datagen.generate import generate
from bench.errors import FixtureError
from reference_impl import loader
from reference_impl.db import open_database
from reference_impl.fixtures import sha256_file
from reference_impl.loader import prepare


def test_small_batches_load_every_row(
    db_url: str, small_fixtures: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "LOAD_BATCH_ROWS", 97)

    async def scenario() -> None:
        db = open_database(db_url)
        await db.connect()
        try:
            info = await prepare(db, small_fixtures)
            for name in ("customers", "orders", "order_lines", "events"):
                expected = pl.read_parquet(small_fixtures / f"{name}.parquet").height
                assert info.rows[name] == expected
                assert await db.fetch_val(f"SELECT COUNT(*) FROM {name}") == expected
            last = await db.fetch_val("SELECT MAX(id) FROM events")
            assert last == info.rows["events"]
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_file_with_other_columns_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "fx"
    generate(data, customers=100, seed=5)
    # Swap in a file with the wrong columns and a matching manifest entry.
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    pl.DataFrame({"id": [1], "nope": ["x"]}).write_parquet(broken / "regions.parquet")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["tables"]["regions"]["sha256"] = sha256_file(broken / "regions.parquet")
    (broken / "manifest.json").write_text(json.dumps(manifest))

    async def scenario() -> None:
        db = open_database(f"sqlite:///{tmp_path / 'crm.sqlite3'}")
        await db.connect()
        try:
            with pytest.raises(FixtureError, match="do not match the schema"):
                await prepare(db, broken)
        finally:
            await db.close()

    asyncio.run(scenario())
