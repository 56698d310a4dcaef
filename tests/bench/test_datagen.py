"""Tests of the fixture generator: determinism, schema fidelity, integrity and safety."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from bench.datagen import generate as gen
from bench.datagen.generate import generate, is_current
from bench.errors import FixtureError, UserError
from reference_impl.fixtures import manifest_hash, read_manifest
from reference_impl.schema import FIXTURE_TABLES, TABLES_BY_NAME, TIERS, Table

DTYPES = {
    "id": pl.Int64, "int": pl.Int64, "float": pl.Float64, "text": pl.String,
    "ts": pl.String, "json": pl.String, "bool": pl.Boolean,
}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SCALED = (
    "customers", "customer_tags", "contacts", "orders", "order_lines", "opportunities",
    "leads", "activities", "events",
)


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fx") / "p1000"
    generate(out, customers=1000, seed=42)
    return out


def load(dir: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(dir / f"{table}.parquet")


def test_same_seed_gives_identical_bytes(fx: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, customers=1000, seed=42)
    assert (again / "manifest.json").read_bytes() == (fx / "manifest.json").read_bytes()
    for table in FIXTURE_TABLES:
        name = f"{table.name}.parquet"
        assert (again / name).read_bytes() == (fx / name).read_bytes(), name


def test_different_seed_gives_different_data(fx: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(other, customers=1000, seed=43)
    assert manifest_hash(other) != manifest_hash(fx)
    a, b = read_manifest(fx)["tables"], read_manifest(other)["tables"]
    assert a["customers"]["sha256"] != b["customers"]["sha256"]
    assert a["events"]["sha256"] != b["events"]["sha256"]


def test_manifest_content(fx: Path) -> None:
    text = (fx / "manifest.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert data["format"] == 1
    assert data["profile"] == {"customers": 1000, "seed": 42, "locale": "en_US"}
    assert data["generator"].startswith("crmbench ")
    assert set(data["versions"]) == {"python", "polars", "pyarrow", "numpy", "faker"}
    assert set(data["tables"]) == {t.name for t in FIXTURE_TABLES}
    for name, entry in data["tables"].items():
        assert entry["file"] == f"{name}.parquet"
        assert entry["rows"] == load(fx, name).height
    assert manifest_hash(fx) == hashlib.sha256((fx / "manifest.json").read_bytes()).hexdigest()
    assert sorted(p.name for p in fx.iterdir()) == sorted(
        ["manifest.json", *(f"{t.name}.parquet" for t in FIXTURE_TABLES)]
    )


@pytest.mark.parametrize("table", FIXTURE_TABLES, ids=lambda t: t.name)
def test_columns_and_dtypes_match_schema(fx: Path, table: Table) -> None:
    t = TABLES_BY_NAME[table.name]
    frame = load(fx, t.name)
    assert tuple(frame.columns) == t.column_names
    assert frame.height > 0
    for col in t.columns:
        assert frame.schema[col.name] == DTYPES[col.kind], col.name
        if not col.nullable:
            assert frame[col.name].null_count() == 0, col.name
        if col.kind == "ts":
            assert frame[col.name].str.contains(ISO.pattern).all(), col.name
    if t.has_identity:
        assert frame["id"].to_list() == list(range(1, frame.height + 1))
    assert frame.select(t.primary_key).is_duplicated().sum() == 0


def test_foreign_keys_are_valid(fx: Path) -> None:
    ids = {t.name: set(load(fx, t.name)["id"].to_list()) for t in FIXTURE_TABLES if t.has_identity}
    checked = 0
    for table in FIXTURE_TABLES:
        frame = load(fx, table.name)
        for col in table.columns:
            if col.references:
                values = set(frame[col.name].drop_nulls().to_list())
                assert values <= ids[col.references], f"{table.name}.{col.name}"
                checked += 1
    assert checked >= 15


def test_order_totals_and_lines(fx: Path) -> None:
    orders, lines = load(fx, "orders"), load(fx, "order_lines")
    sums = lines.group_by("order_id").agg(pl.col("amount").sum().alias("lines"))
    joined = orders.join(sums, left_on="id", right_on="order_id", how="left")
    assert joined["lines"].null_count() == 0, "every order has at least one line"
    assert (joined["total_amount"] - joined["lines"]).abs().max() < 0.01  # type: ignore[operator]
    assert ((lines["quantity"] * lines["unit_price"]).round(2) - lines["amount"]).abs().max() < 1e-6  # type: ignore[operator]
    first = lines.group_by("order_id").agg(pl.col("line_no").min())["line_no"]
    assert (first == 1).all()
    assert 2.0 < lines.height / orders.height < 3.0
    assert lines["product_id"].value_counts()["count"].max() > 5 * lines.height / 50  # type: ignore[operator]


def test_customers_are_consistent(fx: Path) -> None:
    customers, reps = load(fx, "customers"), load(fx, "reps")
    assert customers["name_key"].to_list() == [n.lower() for n in customers["name"].to_list()]
    assert customers["name"].n_unique() == customers.height
    assert (customers["updated_at"] >= customers["created_at"]).all()
    assert customers["created_at"].min() >= "2021-01-01"  # type: ignore[operator]
    assert customers["created_at"].max() < "2026-01-01"  # type: ignore[operator]
    assert set(customers["tier"].unique().to_list()) <= set(TIERS)
    assert (customers["tier"] == "normal").mean() > 0.7  # type: ignore[operator]
    owner = customers.join(reps, left_on="owner_rep_id", right_on="id", suffix="_rep")
    assert (owner["region_id"] == owner["region_id_rep"]).all()
    assert 0.75 < customers["consent_marketing"].mean() < 0.95  # type: ignore[operator]
    for table in ("contacts", "opportunities", "leads"):
        frame = load(fx, table)
        assert (frame["updated_at"] >= frame["created_at"]).all(), table


def test_json_columns(fx: Path) -> None:
    products = load(fx, "products").height
    for text in load(fx, "leads")["product_interest"].to_list():
        ids = json.loads(text)
        assert 1 <= len(ids) <= 3 and ids == sorted(set(ids))
        assert all(1 <= i <= products for i in ids)
    events = load(fx, "events")
    for text in events["properties"].head(500).to_list():
        assert isinstance(json.loads(text), dict)
    top = events["type"].value_counts(sort=True)["type"].head(2).to_list()
    assert top == ["page_view", "email_open"]
    leads = load(fx, "leads")
    assert (leads["status"] == "open").mean() > 0.5  # type: ignore[operator]
    assert 0.3 < leads["customer_id"].is_not_null().mean() < 0.5  # type: ignore[operator]
    assert (leads.height, events.height) == (500, 10_000)


def test_orders_are_skewed(fx: Path) -> None:
    per_customer = np.sort(load(fx, "orders")["customer_id"].value_counts()["count"].to_numpy())
    top = per_customer[::-1][: 1000 // 10].sum()
    assert top > 0.3 * per_customer.sum()
    assert len(per_customer) < 1000, "some customers have no orders"


def test_tables_scale_with_customers(fx: Path, tmp_path: Path) -> None:
    bigger = tmp_path / "p2000"
    generate(bigger, customers=2000, seed=42)
    small, large = read_manifest(fx)["tables"], read_manifest(bigger)["tables"]
    for name in SCALED:
        ratio = large[name]["rows"] / small[name]["rows"]
        assert 1.7 < ratio < 2.3, (name, ratio)
    assert large["regions"]["rows"] == small["regions"]["rows"] == 30


def test_read_manifest_detects_damage(fx: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fx, copy)
    assert read_manifest(copy)["profile"]["customers"] == 1000
    target = copy / "orders.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(FixtureError, match="does not match its manifest"):
        read_manifest(copy)
    target.unlink()
    with pytest.raises(FixtureError, match="missing"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(FixtureError, match="not valid JSON"):
        read_manifest(copy)
    (copy / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(FixtureError, match="malformed"):
        read_manifest(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FixtureError, match=r"manifest\.json"):
        read_manifest(copy)
    with pytest.raises(FixtureError):
        manifest_hash(copy)
    with pytest.raises(FixtureError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 99}, "between 100 and 10,000,000"),
        ({"customers": 10_000_001}, "between 100 and 10,000,000"),
        ({"locale": "fr_FR"}, "locale must be one of en_US, zh_CN"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_inputs(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        generate(tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="refusing"):
        generate(out, customers=100)
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_replaces_previous_profile_atomically(tmp_path: Path) -> None:
    out = tmp_path / "fx"
    out.mkdir()  # an empty directory is fine to fill
    calls: list[tuple[str, int, int]] = []
    generate(out, customers=100, seed=1, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [t.name for t in FIXTURE_TABLES]
    assert [c[1] for c in calls] == list(range(1, len(FIXTURE_TABLES) + 1))
    assert {c[2] for c in calls} == {len(FIXTURE_TABLES)}
    first = manifest_hash(out)
    assert is_current(out, customers=100, seed=1, locale="en_US")
    assert not is_current(out, customers=100, seed=2, locale="en_US")

    def interrupt(table: str, done: int, total: int) -> None:
        if table == "orders":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(out, customers=100, seed=2, progress=interrupt)
    assert manifest_hash(out) == first
    read_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx"]

    generate(out, customers=100, seed=2)
    assert manifest_hash(out) != first
    assert read_manifest(out)["profile"]["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx"]


def test_interrupted_first_run_leaves_nothing(tmp_path: Path) -> None:
    def interrupt(table: str, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "fx", customers=100, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_zh_cn_names(tmp_path: Path) -> None:
    out = tmp_path / "zh"
    generate(out, customers=200, seed=3, locale="zh_CN")
    customers, contacts = load(out, "customers"), load(out, "contacts")
    assert all(not n.isascii() for n in customers["name"].to_list())
    assert customers["name"].n_unique() == customers.height
    assert sum(not n.isascii() for n in contacts["last_name"].to_list()) == contacts.height
    assert customers["name_key"].to_list() == [n.lower() for n in customers["name"].to_list()]
    assert all(e.isascii() for e in contacts["email"].drop_nulls().to_list())
    assert read_manifest(out)["profile"]["locale"] == "zh_CN"


@pytest.mark.parametrize(
    ("customers", "locale", "chunk_rows"), [(1000, "en_US", 97), (200, "zh_CN", 13)]
)
def test_chunk_size_does_not_change_bytes(
    tmp_path: Path, customers: int, locale: str, chunk_rows: int
) -> None:
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    generate(whole, customers=customers, seed=9, locale=locale, chunk_rows=10_000_000)
    generate(chunked, customers=customers, seed=9, locale=locale, chunk_rows=chunk_rows)
    assert (chunked / "manifest.json").read_bytes() == (whole / "manifest.json").read_bytes()
    for table in FIXTURE_TABLES:
        name = f"{table.name}.parquet"
        assert (chunked / name).read_bytes() == (whole / name).read_bytes(), name


def test_row_groups_have_a_fixed_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "ROW_GROUP_SIZE", 1000)
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, customers=300, seed=4, chunk_rows=333)
    generate(b, customers=300, seed=4, chunk_rows=2048)
    for table in FIXTURE_TABLES:
        name = f"{table.name}.parquet"
        meta = pq.ParquetFile(a / name).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(s == 1000 for s in sizes[:-1]), (name, sizes)
        assert 0 < sizes[-1] <= 1000, (name, sizes)
        assert sum(sizes) == read_manifest(a)["tables"][table.name]["rows"]
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert pq.ParquetFile(a / "events.parquet").metadata.num_row_groups == 3


def test_ids_follow_time(fx: Path) -> None:
    for table, column in (
        ("orders", "ordered_at"), ("activities", "created_at"), ("events", "occurred_at")
    ):
        frame = load(fx, table)
        assert frame["id"].to_list() == list(range(1, frame.height + 1))
        assert frame[column].is_sorted(), table
    activities = load(fx, "activities")
    assert (activities["occurred_at"] <= activities["created_at"]).all()
    lines = load(fx, "order_lines")
    assert lines["order_id"].is_sorted()


def test_no_spill_files_are_left(fx: Path) -> None:
    assert all(p.suffix in (".parquet", ".json") for p in fx.iterdir())


def test_invalid_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="chunk_rows"):
        generate(tmp_path / "out", customers=100, chunk_rows=0)
    assert not (tmp_path / "out").exists()
