"""Deterministic, fast fixture generator for the CRM benchmark.

Faker is called only a few thousand times to build vocabulary pools. Every random value is
then a function of (seed, table, stream, row number), and strings are assembled with
vectorised polars operations, so each table is built and appended to its Parquet file in
chunks: memory is bounded by the chunk size plus a few small arrays per customer, and the
chunk size does not change the output. Tables whose ids follow time (orders, activities,
events) are sorted through spill files on disk. The output is one Parquet file per fixture
table plus ``manifest.json``; the same seed and package versions give byte-identical files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import special

from bench.datagen import vocab
from reference_impl import __version__
from reference_impl.errors import FixtureError, UserError
from reference_impl.fixtures import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    Manifest,
    TableEntry,
    manifest_json,
    read_manifest,
    sha256_file,
)
from reference_impl.schema import (
    ACTIVITY_TYPES,
    EVENT_TYPES,
    FIXTURE_TABLES,
    LEAD_STATUSES,
    OPPORTUNITY_STAGES,
    REP_ROLES,
    TABLES_BY_NAME,
    TIERS,
    Kind,
    Table,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
AnyIntArray = npt.NDArray[np.integer[Any]]
Column = pl.Series | AnyIntArray | FloatArray | BoolArray
ProgressFn = Callable[[str, int, int], None]

LOCALES: Final = ("en_US", "zh_CN")
MIN_CUSTOMERS: Final = 100
MAX_CUSTOMERS: Final = 10_000_000
# Fixed so that fixtures never depend on the day they were generated.
REFERENCE_TS: Final = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY: Final = 86_400
YEAR: Final = 365 * DAY
ROW_GROUP_SIZE: Final = 131_072
# Rows built at a time; memory grows with it, the output does not change.
CHUNK_ROWS: Final = 2 * ROW_GROUP_SIZE
# Files of one on-disk sort; kept well below the usual limit of open files.
MAX_SPILL_BINS: Final = 1000
# Chunks waiting for the writer thread.
WRITE_QUEUE: Final = 1
# Level 1 compresses these files as well as level 3 does, in two thirds of the time.
ZSTD_LEVEL: Final = 1
ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

_DTYPES: Final[dict[Kind, pl.DataType]] = {
    "id": pl.Int64(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "text": pl.String(),
    "ts": pl.String(),
    "json": pl.String(),
    "bool": pl.Boolean(),
}
ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    "id": pa.int64(),
    "int": pa.int64(),
    "float": pa.float64(),
    "text": pa.large_string(),
    "ts": pa.large_string(),
    "json": pa.large_string(),
    "bool": pa.bool_(),
}
# Columns with few distinct values; dictionary-encoding the others costs time and gains
# little, as they fall back to plain encoding anyway.
_DICTIONARY_COLUMNS: Final = frozenset(
    {
        "category", "country", "currency", "expected_close", "first_name", "industry",
        "last_name", "line_no", "quantity", "region_id", "role", "source", "stage", "status",
        "subject", "tag", "tier", "title", "type",
    }
)


def is_current(out: Path, customers: int, seed: int, locale: str) -> bool:
    """Whether ``out`` already holds intact fixtures that ``generate`` would reproduce exactly.

    That needs the same profile and the same generator and package versions, since those
    decide the bytes.
    """
    try:
        data = read_manifest(Path(out))
    except FixtureError:
        return False
    return bool(
        data["profile"] == {"customers": customers, "seed": seed, "locale": locale}
        and data.get("generator") == _generator()
        and data.get("versions") == _versions()
    )


# --------------------------------------------------------------------------- entry point


def _validate(customers: int, seed: int, locale: str) -> None:
    if not isinstance(customers, int) or isinstance(customers, bool):
        raise UserError(f"customers must be an integer, got {customers!r}")
    if not MIN_CUSTOMERS <= customers <= MAX_CUSTOMERS:
        raise UserError(
            f"customers must be between {MIN_CUSTOMERS:,} and {MAX_CUSTOMERS:,}, got {customers:,}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise UserError(f"seed must be an integer between 0 and 2**63-1, got {seed!r}")
    if locale not in LOCALES:
        raise UserError(f"locale must be one of {', '.join(LOCALES)}, got {locale!r}")


def _check_target(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"fixture output {out} exists and is not a directory")
    if (out / MANIFEST_NAME).is_file() or not any(out.iterdir()):
        return
    raise UserError(
        f"fixture output {out} is a non-empty directory without {MANIFEST_NAME}; "
        "refusing to replace it (choose another directory or empty it)"
    )


def _replace(tmp: Path, out: Path) -> None:
    _check_target(out)
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _generator() -> str:
    return f"crmbench {__version__}"


def _versions() -> dict[str, str]:
    try:
        faker_version = package_version("faker")
    except PackageNotFoundError:  # pragma: no cover - faker is a hard dependency
        faker_version = "unknown"
    return {
        "python": platform.python_version(),
        "polars": pl.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "faker": faker_version,
    }


def generate(
    out: Path,
    customers: int = 100_000,
    seed: int = 42,
    locale: str = "en_US",
    progress: ProgressFn | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Manifest:
    """Generate a fixture profile into ``out``, atomically replacing an earlier profile there.

    ``progress(table, done, total)`` is called after each table file is written. Tables are
    built ``chunk_rows`` rows at a time; the chunk size bounds memory and does not change
    the output.
    """
    _validate(customers, seed, locale)
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise UserError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    out = Path(out).resolve()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left behind by a killed run that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    output = _Output(tmp)
    try:
        world = _World(customers, seed, locale, _build_pools(seed, locale), chunk_rows)
        tables: dict[str, TableEntry] = {}
        total = len(FIXTURE_TABLES)
        for table in FIXTURE_TABLES:
            if table.name in tables:
                continue
            names = _PRODUCES.get(table.name, (table.name,))
            _BUILDERS[table.name](world, output)
            for name in names:
                tables[name] = output.finish(name)
                if progress is not None:
                    progress(name, len(tables), total)
        manifest: Manifest = {
            "format": MANIFEST_FORMAT,
            "profile": {"customers": customers, "seed": seed, "locale": locale},
            "generator": _generator(),
            "versions": _versions(),
            "tables": tables,
        }
        (tmp / MANIFEST_NAME).write_text(manifest_json(manifest), encoding="utf-8")
        output.close()
        _replace(tmp, out)
    except BaseException:
        output.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------- output


def _frame(table: Table, columns: dict[str, Column]) -> pl.DataFrame:
    if list(columns) != list(table.column_names):
        raise RuntimeError(f"bug: {table.name} built columns {list(columns)}")
    series: list[pl.Series] = []
    for col in table.columns:
        values = columns[col.name]
        s = values if isinstance(values, pl.Series) else pl.Series(values)
        s = s.rename(col.name).cast(_DTYPES[col.kind])
        if not col.nullable and s.null_count():
            raise RuntimeError(f"bug: {table.name}.{col.name} has nulls")
        series.append(s)
    return pl.DataFrame(series)


class _TableWriter:
    """Appends chunks to one Parquet file in row groups of exactly ``ROW_GROUP_SIZE`` rows
    (the last one shorter), so the bytes do not depend on how the rows were chunked."""

    def __init__(self, path: Path, table: Table) -> None:
        self.path = path
        self.schema = pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in table.columns]
        )
        dictionary = [c.name for c in table.columns if c.name in _DICTIONARY_COLUMNS]
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            use_dictionary=dictionary or False,  # type: ignore[arg-type]  # stubs lack lists
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            write_statistics=True,
        )
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        data = frame.to_arrow().cast(self.schema)
        self.pending.append(data)
        self.pending_rows += data.num_rows
        self.rows += data.num_rows
        if self.pending_rows >= ROW_GROUP_SIZE:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.pending:
            return
        data = pa.concat_tables(self.pending)
        start = 0
        while data.num_rows - start >= ROW_GROUP_SIZE or (final and start < data.num_rows):
            # One contiguous chunk per row group: page boundaries follow the rows only.
            part = data.slice(start, ROW_GROUP_SIZE).combine_chunks()
            self.writer.write_table(part, row_group_size=ROW_GROUP_SIZE)
            start += part.num_rows
        rest = data.slice(start)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self) -> None:
        self._flush(final=True)
        self.writer.close()


class _Output:
    """The table files of one generation run, each written by appending chunks.

    Encoding and compression run on a writer thread (pyarrow releases the GIL there), so
    they overlap with building the next chunk; a short queue bounds the memory this takes.
    """

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.writers: dict[str, _TableWriter] = {}
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fixture-writer")
        self.queue: deque[Future[None]] = deque()

    def write(self, table: str, columns: dict[str, Column]) -> None:
        frame = _frame(TABLES_BY_NAME[table], columns)
        self._submit(self._writer(table).write, frame)

    def _writer(self, table: str) -> _TableWriter:
        writer = self.writers.get(table)
        if writer is None:
            writer = _TableWriter(self.dir / f"{table}.parquet", TABLES_BY_NAME[table])
            self.writers[table] = writer
        return writer

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.queue.append(self.thread.submit(fn, *args))
        while len(self.queue) > WRITE_QUEUE:
            self.queue.popleft().result()

    def _drain(self) -> None:
        while self.queue:
            self.queue.popleft().result()

    def finish(self, table: str) -> TableEntry:
        """Close a table's file and describe it for the manifest."""
        writer = self._writer(table)
        self._submit(writer.close)
        self._drain()
        del self.writers[table]
        return {"file": writer.path.name, "rows": writer.rows, "sha256": sha256_file(writer.path)}

    def close(self) -> None:
        self.thread.shutdown()

    def abort(self) -> None:
        for future in self.queue:
            future.cancel()
        self.thread.shutdown()
        self.queue.clear()
        for writer in self.writers.values():
            with contextlib.suppress(Exception):
                writer.writer.close()
        self.writers.clear()


class _Spill:
    """An external sort of int64 keys (with an optional payload) through files on disk.

    Rows go to files by key range; each range is then read back and sorted on its own, so
    memory holds one range at a time. Equal keys keep the order in which they were added.
    """

    def __init__(self, dir: Path, key_limit: int, rows: int, chunk_rows: int, payload: bool):
        self.dir = dir
        dir.mkdir()
        bins = max(1, min(MAX_SPILL_BINS, -(-4 * rows // chunk_rows)))
        self.width = -(-key_limit // bins)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.columns = 2 if payload else 1
        self.chunk_rows = chunk_rows

    def add(self, key: IntArray, payload: IntArray | None = None) -> None:
        bins = len(self.counts)
        # 16-bit bins sort stably by radix.
        bin = (key // self.width).astype(np.int16)
        order = np.argsort(bin, kind="stable")
        data = key[order] if payload is None else np.stack([key[order], payload[order]], axis=1)
        bounds = np.searchsorted(bin[order], np.arange(bins + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            with (self.dir / f"{b}.bin").open("ab") as fh:
                np.ascontiguousarray(data[bounds[b] : bounds[b + 1]], dtype=np.int64).tofile(fh)
        self.counts += np.bincount(bin, minlength=bins)

    def sorted_chunks(self) -> Iterator[tuple[IntArray, IntArray]]:
        """(keys, payloads) in key order, about ``chunk_rows`` at a time."""
        bins, b = len(self.counts), 0
        while b < bins:
            end, rows = b + 1, int(self.counts[b])
            while end < bins and rows + self.counts[end] <= self.chunk_rows:
                rows += int(self.counts[end])
                end += 1
            parts = [self._read(k) for k in range(b, end) if self.counts[k]]
            b = end
            if not parts:
                continue
            data = np.concatenate(parts)
            if self.columns == 1:
                # Equal keys are equal rows: no need for a stable sort.
                data.sort()
                yield data, data
                continue
            data = data.reshape(-1, self.columns)
            order = np.argsort(data[:, 0], kind="stable")
            yield data[order, 0], data[order, 1]
        shutil.rmtree(self.dir, ignore_errors=True)

    def _read(self, b: int) -> IntArray:
        path = self.dir / f"{b}.bin"
        data: IntArray = np.fromfile(path, dtype=np.int64)
        path.unlink()
        return data


# --------------------------------------------------------------------------- sampling helpers

_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX2: Final = np.uint64(0x94D049BB133111EB)


class _Draws:
    """Counter-based random numbers for one table.

    Value ``i`` of a named stream depends only on the seed, the table, the stream name and
    ``i`` (a SplitMix64 hash), so a table comes out the same whichever chunks it is built
    in, and changing one stream never shifts another.
    """

    def __init__(self, seed: int, table: str) -> None:
        self.seed = seed
        self.table = table

    def _key(self, stream: str) -> np.uint64:
        text = f"{self.seed}/{self.table}/{stream}".encode()
        return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))

    def random(self, stream: str, index: IntArray) -> FloatArray:
        """Uniform floats in the open interval (0, 1)."""
        x = np.asarray(index, dtype=np.int64).astype(np.uint64)
        x *= _GOLDEN
        x += self._key(stream)
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
        x >>= np.uint64(11)
        out = x.astype(np.float64)
        out += 0.5
        out *= 2.0**-53
        return out

    def integers(
        self, stream: str, index: IntArray, low: IntArray | int, high: IntArray | int
    ) -> IntArray:
        """Integers in [low, high), row by row (high > low)."""
        lo = np.asarray(low, dtype=np.int64)
        span = np.asarray(high, dtype=np.int64) - lo
        step = np.floor(self.random(stream, index) * span).astype(np.int64)
        out: IntArray = lo + np.minimum(step, span - 1)
        return out

    def choice(self, stream: str, index: IntArray, cdf: FloatArray) -> IntArray:
        """Indices drawn with the probabilities of a cumulative distribution."""
        u = self.random(stream, index)
        if len(cdf) < 4096:
            idx = np.searchsorted(cdf, u, side="right")
        else:
            # Sorted needles walk a large table in order: several times fewer cache misses.
            order = np.argsort(u)
            idx = np.empty(len(u), dtype=np.int64)
            idx[order] = np.searchsorted(cdf, u[order], side="right")
        return np.minimum(idx, len(cdf) - 1).astype(np.int64)

    def lognormal(
        self, stream: str, index: IntArray, mean: FloatArray | float, sigma: float
    ) -> FloatArray:
        out: FloatArray = np.exp(mean + sigma * special.ndtri(self.random(stream, index)))
        return out

    def poisson(self, stream: str, index: IntArray, lam: float) -> IntArray:
        k = np.arange(int(lam + 12 * np.sqrt(lam) + 30), dtype=np.float64)
        cdf = np.cumsum(np.exp(k * np.log(lam) - lam - special.gammaln(k + 1)))
        idx = np.searchsorted(cdf, self.random(stream, index), side="left")
        return np.minimum(idx, len(cdf) - 1).astype(np.int64)

    def geometric(self, stream: str, index: IntArray, p: float) -> IntArray:
        """Trials until the first success (1, 2, ...)."""
        tries = np.ceil(np.log(self.random(stream, index)) / np.log1p(-p))
        out: IntArray = np.maximum(1, tries).astype(np.int64)
        return out

    def permutation(self, stream: str, size: int) -> IntArray:
        out: IntArray = np.argsort(self.random(stream, np.arange(size)), kind="stable")
        return out


def _rng(seed: int, stream: str) -> np.random.Generator:
    # For draws over all customers at once (no chunks), where numpy's samplers are simplest.
    key = zlib.crc32(stream.encode())
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key])))


def _cdf(weights: Sequence[float] | npt.NDArray[np.floating[Any]]) -> FloatArray:
    c: FloatArray = np.cumsum(np.asarray(weights, dtype=np.float64))
    out: FloatArray = c / c[-1]
    return out


def _ranges(total: int, rows: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, total, rows):
        yield lo, min(total, lo + rows)


def _child_ranges(counts: IntArray, rows: int) -> Iterator[tuple[int, int, int]]:
    """``(lo, hi, first)``: parent ranges whose children number about ``rows``, and the
    child row number that each range starts at."""
    ends = np.cumsum(counts)
    lo, n = 0, len(counts)
    while lo < n:
        first = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, first + rows, side="right"))
        hi = min(max(hi, lo + 1), lo + rows, n)
        yield lo, hi, first
        lo = hi


def _children(lo: int, counts: IntArray, first: int) -> tuple[IntArray, IntArray]:
    """(parent, row number) of every child of parents ``lo, lo + 1, ...``."""
    parent = lo + np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return parent, first + np.arange(len(parent), dtype=np.int64)


def _arange(lo: int, hi: int) -> IntArray:
    return np.arange(lo, hi, dtype=np.int64)


def _pick(pool: Sequence[str], idx: AnyIntArray) -> pl.Series:
    return pl.Series(values=list(pool), dtype=pl.String).gather(idx)


def _str(values: IntArray, width: int = 0) -> pl.Series:
    s = pl.Series(values).cast(pl.String)
    return s.str.zfill(width) if width else s


def _strftime(seconds: IntArray, fmt: str) -> pl.Series:
    return (pl.Series(seconds, dtype=pl.Int64) * 1000).cast(pl.Datetime("ms")).dt.strftime(fmt)


# ISO timestamps are spelled from a table of days and one of seconds of the day: several
# times faster than formatting each one.
_ISO_FIRST_DAY: Final = (REFERENCE_TS - 6 * YEAR) // DAY
_ISO_LAST_DAY: Final = REFERENCE_TS // DAY + 2 * 365


@functools.cache
def _iso_tables() -> tuple[pl.Series, pl.Series]:
    days = np.arange(_ISO_FIRST_DAY, _ISO_LAST_DAY, dtype=np.int64) * DAY
    seconds = np.arange(DAY, dtype=np.int64)
    return _strftime(days, "%Y-%m-%dT"), _strftime(seconds, "%H:%M:%SZ")


def _iso(seconds: IntArray) -> pl.Series:
    if not len(seconds):
        return pl.Series([], dtype=pl.String)
    day = seconds // DAY
    if day.min() < _ISO_FIRST_DAY or day.max() >= _ISO_LAST_DAY:
        return _strftime(seconds, ISO_FORMAT)
    days, times = _iso_tables()
    return days.gather(day - _ISO_FIRST_DAY) + times.gather(seconds % DAY)


def _nulls(s: pl.Series, mask: BoolArray) -> pl.Series:
    out = s.clone()
    idx = np.flatnonzero(mask)
    if len(idx):
        out.scatter(idx, None)
    return out


def _where(mask: BoolArray, a: pl.Series, b: pl.Series) -> pl.Series:
    cond = pl.lit(pl.Series(mask))
    return pl.select(pl.when(cond).then(pl.lit(a)).otherwise(pl.lit(b))).to_series()


def _concat(parts: Sequence[pl.Series | str]) -> pl.Series:
    """Row-wise concatenation that skips null parts (a plain ``+`` would give null)."""
    return pl.select(pl.concat_str([pl.lit(p) for p in parts], ignore_nulls=True)).to_series()


def _uniquify(names: pl.Series, before: str, after: str = "") -> pl.Series:
    """Turn repeats of a value into ``<value><before>2<after>``, ``...3...`` and so on."""
    n = pl.col("n")
    k = n.cum_count().over("n")
    return (
        pl.DataFrame({"n": names})
        .select(
            pl.when(k > 1)
            .then(pl.concat_str([n, pl.lit(before), k.cast(pl.String), pl.lit(after)]))
            .otherwise(n)
        )
        .to_series()
    )


def _repeat_rank(keys: npt.NDArray[np.uint64]) -> IntArray:
    """For each key, how many equal keys come before it."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    pos = np.arange(len(keys), dtype=np.int64)
    starts = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]], pos, 0))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = pos - starts
    return rank


def _ascii_slug(s: pl.Series) -> pl.Series:
    return s.str.to_lowercase().str.replace_all("[^a-z0-9]", "")


def _scaled(n: int, per_100k: float, minimum: int) -> int:
    return max(minimum, round(n * per_100k / 100_000))


# --------------------------------------------------------------------------- vocabulary pools


@dataclass(frozen=True, slots=True)
class _Pools:
    """Faker-made name pools; ``*_ascii`` are parallel ASCII forms used in e-mail addresses."""

    first: list[str]
    first_ascii: list[str]
    last: list[str]
    last_ascii: list[str]
    stems: list[str]
    cities: list[str]
    jobs: list[str]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _build_pools(seed: int, locale: str) -> _Pools:
    from faker import Faker

    fake = Faker(locale, use_weighting=False)
    fake.seed_instance(seed)
    first = _unique([fake.first_name() for _ in range(3000)])
    last = _unique([fake.last_name() for _ in range(3000)])
    jobs = _unique([fake.job() for _ in range(800)])
    if locale == "zh_CN":
        d = _Draws(seed, "pools")
        first_roman = _unique([fake.first_romanized_name().lower() for _ in range(500)])
        last_roman = _unique([fake.last_romanized_name().lower() for _ in range(500)])
        fi = d.integers("first", np.arange(len(first)), 0, len(first_roman))
        la = d.integers("last", np.arange(len(last)), 0, len(last_roman))
        first_ascii = [first_roman[i] for i in fi]
        last_ascii = [last_roman[i] for i in la]
        stems = _unique([fake.company_prefix() for _ in range(2000)])
        cities = _unique([fake.city_name() for _ in range(1000)])
    else:
        first_ascii = [re.sub("[^a-z]", "", v.lower()) or "x" for v in first]
        last_ascii = [re.sub("[^a-z]", "", v.lower()) or "x" for v in last]
        stems = last
        cities = []
    return _Pools(first, first_ascii, last, last_ascii, stems, cities, jobs)


# --------------------------------------------------------------------------- shared state


def _empty_int() -> IntArray:
    return np.empty(0, dtype=np.int64)


def _empty_float() -> FloatArray:
    return np.empty(0, dtype=np.float64)


Codes = dict[str, npt.NDArray[np.integer[Any]]]


@dataclass
class _World:
    """Sizes and per-customer facts that later tables sample from (indices are 0-based).

    Everything here is a small array per customer (or per product, region, rep); customer
    names and domains are kept as pool indices (``cust_company``) and spelled out again for
    the rows that need them.
    """

    n: int
    seed: int
    locale: str
    pools: _Pools
    chunk_rows: int
    region_cdf: FloatArray = field(default_factory=_empty_float)
    sales_ids: IntArray = field(default_factory=_empty_int)
    sales_start: IntArray = field(default_factory=_empty_int)
    sales_count: IntArray = field(default_factory=_empty_int)
    product_cents: IntArray = field(default_factory=_empty_int)
    product_cdf: FloatArray = field(default_factory=_empty_float)
    cust_region: npt.NDArray[np.int16] = field(default_factory=lambda: np.empty(0, np.int16))
    cust_tier: npt.NDArray[np.int8] = field(default_factory=lambda: np.empty(0, np.int8))
    cust_owner: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    cust_created: IntArray = field(default_factory=_empty_int)
    cust_weight: FloatArray = field(default_factory=_empty_float)
    cust_company: Codes = field(default_factory=dict)
    contact_start: IntArray = field(default_factory=_empty_int)
    contact_count: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))

    @property
    def zh(self) -> bool:
        return self.locale == "zh_CN"

    def draws(self, table: str) -> _Draws:
        return _Draws(self.seed, table)

    def sales_rep(self, d: _Draws, index: IntArray, region: npt.NDArray[Any]) -> IntArray:
        """A random sales rep (role "rep") of each given region, as rep ids."""
        offset = np.floor(d.random("sales_rep", index) * self.sales_count[region]).astype(np.int64)
        ids: IntArray = self.sales_ids[self.sales_start[region] + offset]
        return ids

    def person_names(
        self, d: _Draws, index: IntArray
    ) -> tuple[pl.Series, pl.Series, pl.Series, pl.Series]:
        """(first, last, first_ascii, last_ascii) for random people."""
        p = self.pools
        fi = d.integers("person.first", index, 0, len(p.first))
        la = d.integers("person.last", index, 0, len(p.last))
        return (
            _pick(p.first, fi), _pick(p.last, la), _pick(p.first_ascii, fi), _pick(p.last_ascii, la)
        )

    def full_name(self, first: pl.Series, last: pl.Series) -> pl.Series:
        return last + first if self.zh else first + " " + last

    def phones(self, d: _Draws, index: IntArray) -> pl.Series:
        if self.zh:
            head = _pick(("13", "15", "17", "18", "19"), d.integers("phone.head", index, 0, 5))
            return (
                "+86-" + head + _str(d.integers("phone.digit", index, 0, 10)) + "-"
                + _str(d.integers("phone.mid", index, 0, 10_000), 4) + "-"
                + _str(d.integers("phone.end", index, 0, 10_000), 4)
            )
        return (
            "+1-" + _str(d.integers("phone.area", index, 201, 990)) + "-"
            + _str(d.integers("phone.mid", index, 200, 1000)) + "-"
            + _str(d.integers("phone.end", index, 0, 10_000), 4)
        )

    def emails(
        self, d: _Draws, index: IntArray, first: pl.Series, last: pl.Series, domain: pl.Series
    ) -> pl.Series:
        """Addresses in the usual corporate patterns: first.last, flast, first + digits."""
        pattern = d.choice("email.pattern", index, _cdf((0.6, 0.25, 0.15)))
        digits = _str(d.integers("email.digits", index, 1, 100))
        local = _where(
            pattern == 0,
            first + "." + last,
            _where(pattern == 1, first.str.slice(0, 1) + last, first + digits),
        )
        return local + "@" + domain

    def new_companies(self, d: _Draws, index: IntArray, industry: IntArray) -> Codes:
        """Random companies of the given industries, as pool indices (see ``companies``)."""
        p = self.pools
        codes = {
            "word": industry * 3 + d.integers("company.word", index, 0, 3),
            "stem": d.integers("company.stem", index, 0, len(p.stems)),
        }
        if self.zh:
            no_city = d.random("company.no_city", index) < 0.4
            city = d.integers("company.city", index, 0, len(p.cities))
            codes["city"] = np.where(no_city, -1, city)
            suffix_cdf = _cdf(vocab.ZH_COMPANY_SUFFIX_WEIGHTS)
            codes["suffix"] = d.choice("company.suffix", index, suffix_cdf)
            syl = len(vocab.PINYIN)
            codes["syl0"] = d.integers("company.syl0", index, 0, syl)
            codes["syl1"] = d.integers("company.syl1", index, 0, syl)
            two = d.random("company.two_syllables", index) < 0.5
            codes["syl2"] = np.where(two, -1, d.integers("company.syl2", index, 0, syl))
            codes["tld"] = d.integers("company.tld", index, 0, len(vocab.TLDS_ZH))
        else:
            codes["stem2"] = d.integers("company.stem2", index, 0, len(p.stems))
            shape = d.random("company.shape", index)
            codes["shape"] = (shape >= 0.7).astype(np.int64) + (shape >= 0.85)
            suffix_cdf = _cdf(vocab.EN_COMPANY_SUFFIX_WEIGHTS)
            codes["suffix"] = d.choice("company.suffix", index, suffix_cdf)
            codes["tld"] = d.integers("company.tld", index, 0, len(vocab.TLDS_EN))
        # Pools hold at most a few thousand entries.
        return {k: v.astype(np.int16) for k, v in codes.items()}

    def companies(self, codes: Codes) -> tuple[pl.Series, pl.Series]:
        """Company names and ASCII web domains spelled out from pool indices."""
        return self.company_names(codes), self.company_domains(codes)

    def company_names(self, codes: Codes) -> pl.Series:
        """Company names; a ``repeat`` code k > 0 marks the (k+1)-th company of a name,
        which gets a number."""
        p = self.pools
        if self.zh:
            city = codes["city"]
            words = [w for _, _, zh in vocab.INDUSTRIES for w in zh]
            name = _concat(
                [
                    _nulls(_pick(p.cities, np.maximum(city, 0)), city < 0),
                    _pick(p.stems, codes["stem"]),
                    _pick(words, codes["word"]),
                    _pick(vocab.ZH_COMPANY_SUFFIXES, codes["suffix"]),
                ]
            )
            # Repeated Chinese names get a number in full-width brackets, the local convention.
            before, after = "\uff08", "\uff09"
        else:
            word = _pick([w for _, en, _ in vocab.INDUSTRIES for w in en], codes["word"])
            suffix = _pick(vocab.EN_COMPANY_SUFFIXES, codes["suffix"])
            name = self._stem(codes) + " " + word + " " + suffix
            before, after = " ", ""
        repeat = codes.get("repeat")
        if repeat is not None and repeat.any():
            numbered = name + before + _str(repeat.astype(np.int64) + 1) + after
            name = _where(repeat > 0, numbered, name)
        return name

    def company_domains(self, codes: Codes) -> pl.Series:
        if self.zh:
            syl = vocab.PINYIN
            last = codes["syl2"]
            host = _concat(
                [
                    _pick(syl, codes["syl0"]),
                    _pick(syl, codes["syl1"]),
                    _nulls(_pick(syl, np.maximum(last, 0)), last < 0),
                ]
            )
            return host + _pick(vocab.TLDS_ZH, codes["tld"])
        word = _pick([w for _, en, _ in vocab.INDUSTRIES for w in en], codes["word"])
        return _ascii_slug(self._stem(codes) + word) + _pick(vocab.TLDS_EN, codes["tld"])

    def _stem(self, codes: Codes) -> pl.Series:
        first = _pick(self.pools.stems, codes["stem"])
        second = _pick(self.pools.stems, codes["stem2"])
        shape = codes["shape"]
        return _where(
            shape == 0, first, _where(shape == 1, first + " & " + second, first + "-" + second)
        )

    def customer_codes(self, cust: IntArray) -> Codes:
        """The company codes of the given customers."""
        return {k: v[cust] for k, v in self.cust_company.items()}


# --------------------------------------------------------------------------- tables


def _regions(w: _World, out: _Output) -> None:
    d = w.draws("regions")
    count = len(vocab.REGIONS)
    w.region_cdf = _cdf(d.lognormal("weight", np.arange(count), 0.0, 0.6))
    out.write(
        "regions",
        {
            "id": np.arange(1, count + 1, dtype=np.int64),
            "name": pl.Series([r[0] for r in vocab.REGIONS]),
            "country": pl.Series([r[1] for r in vocab.REGIONS]),
        },
    )


def _reps(w: _World, out: _Output) -> None:
    d = w.draws("reps")
    regions = len(vocab.REGIONS)
    total = _scaled(w.n, 500, 3 * regions)
    managers = round(total * 0.1)
    extra = total - 2 * regions - managers
    rep, manager, director = (REP_ROLES.index(r) for r in ("rep", "manager", "director"))
    # One director and at least one sales rep per region, so every customer gets a local owner.
    region = np.concatenate(
        [
            np.arange(regions), np.arange(regions),
            d.choice("manager_region", np.arange(managers), w.region_cdf),
            d.choice("rep_region", np.arange(extra), w.region_cdf),
        ]
    ).astype(np.int64)
    role = np.concatenate(
        [
            np.full(regions, director), np.full(regions, rep),
            np.full(managers, manager), np.full(extra, rep),
        ]
    ).astype(np.int64)
    rank = np.zeros(len(REP_ROLES), dtype=np.int64)
    rank[[director, manager, rep]] = [0, 1, 2]
    order = np.lexsort((rank[role], region))
    region, role = region[order], role[order]
    ids = np.arange(1, total + 1, dtype=np.int64)
    is_sales = role == rep
    w.sales_ids = ids[is_sales]
    sales_region = region[is_sales]
    w.sales_start = np.searchsorted(sales_region, np.arange(regions)).astype(np.int64)
    w.sales_count = np.bincount(sales_region, minlength=regions).astype(np.int64)
    index = ids - 1
    first, last, first_a, last_a = w.person_names(d, index)
    local = _uniquify(first_a + "." + last_a, "")
    out.write(
        "reps",
        {
            "id": ids,
            "name": w.full_name(first, last),
            "email": local + "@sales.crmbench.example",
            "phone": w.phones(d, index),
            "region_id": region + 1,
            "role": _pick(REP_ROLES, role),
        },
    )


def _products(w: _World, out: _Output) -> None:
    d = w.draws("products")
    total = _scaled(w.n, 2000, 50)
    cats = vocab.PRODUCT_CATEGORIES
    index = np.arange(total, dtype=np.int64)
    cat_weight = 0.5 + d.random("category_weight", np.arange(len(cats)))
    cat = d.choice("category", index, _cdf(cat_weight))
    ids = index + 1
    nouns = [noun for c in cats for noun in (c[4] if w.zh else c[3])]
    noun = _pick(nouns, cat * 4 + d.integers("noun", index, 0, 4))
    brand = _pick(w.pools.stems, d.integers("brand", index, 0, len(w.pools.stems)))
    series = _pick(vocab.PRODUCT_SERIES, d.integers("series", index, 0, len(vocab.PRODUCT_SERIES)))
    model = _str(d.integers("model", index, 1, 100) * 10)
    name = (brand + noun if w.zh else brand + " " + noun) + " " + series + " " + model
    median = np.asarray([c[2] for c in cats])[cat]
    price = np.clip(d.lognormal("price", index, np.log(median), 1.0), 6.0, 50_000.0)
    # Whole units minus one cent: list prices like 399.99.
    w.product_cents = np.floor(price).astype(np.int64) * 100 - 1
    # Zipf-like popularity over a random ranking of the catalogue.
    w.product_cdf = _cdf(1.0 / (d.permutation("rank", total) + 1.0) ** 0.8)
    out.write(
        "products",
        {
            "id": ids,
            "sku": _pick([c[1] for c in cats], cat) + "-" + _str(ids, 6),
            "name": name,
            "category": _pick([c[0] for c in cats], cat),
            "unit_price": w.product_cents / 100.0,
        },
    )


def _inventory(w: _World, out: _Output) -> None:
    d = w.draws("inventory")
    products, regions = len(w.product_cents), len(vocab.REGIONS)
    for lo, hi in _ranges(products * regions, w.chunk_rows):
        index = _arange(lo, hi)
        qty = np.floor(d.lognormal("quantity", index, np.log(40.0), 1.0)).astype(np.int64)
        qty[d.random("sold_out", index) < 0.12] = 0
        out.write(
            "inventory",
            {"product_id": index // regions + 1, "region_id": index % regions + 1, "quantity": qty},
        )


def _customers(w: _World, out: _Output) -> None:
    n, d = w.n, w.draws("customers")
    # Per-customer facts for later tables are drawn for all customers at once: a few small
    # arrays; the other columns are drawn chunk by chunk.
    index = np.arange(n, dtype=np.int64)
    # Sorted so that ids grow with creation time, as in a real database.
    created = np.sort(d.integers("created", index, REFERENCE_TS - 5 * YEAR, REFERENCE_TS - DAY))
    region = d.choice("region", index, w.region_cdf)
    tier = d.choice("tier", index, _cdf((0.01, 0.05, 0.14, 0.80)))
    # Gamma(4) draws normalised: Dirichlet-distributed industry shares.
    shares = special.gammaincinv(4.0, d.random("industry_share", np.arange(len(vocab.INDUSTRIES))))
    industry = d.choice("industry", index, _cdf(shares))
    w.cust_owner = w.sales_rep(d, index, region).astype(np.int32)
    engagement = np.asarray([4.0, 2.5, 1.5, 1.0])[tier]
    w.cust_weight = d.lognormal("weight", index, 0.0, 1.2) * engagement
    w.cust_created = created
    w.cust_region, w.cust_tier = region.astype(np.int16), tier.astype(np.int8)
    w.cust_company = w.new_companies(d, index, industry)
    del index, region, tier, industry, engagement
    # Repeated names get a number: count repeats by a hash of each spelled-out name.
    hashes = np.empty(n, dtype=np.uint64)
    for lo, hi in _ranges(n, w.chunk_rows):
        name = w.company_names(w.customer_codes(_arange(lo, hi)))
        hashes[lo:hi] = name.hash(seed=0).to_numpy()
    w.cust_company["repeat"] = _repeat_rank(hashes).astype(np.int32)
    del hashes

    for lo, hi in _ranges(n, w.chunk_rows):
        ix = _arange(lo, hi)
        tier = w.cust_tier[lo:hi].astype(np.int64)
        created = w.cust_created[lo:hi]
        employees_median = np.asarray([8000.0, 1200.0, 250.0, 40.0])[tier]
        employees = np.maximum(
            1, np.rint(d.lognormal("employees", ix, np.log(employees_median), 1.0))
        ).astype(np.int64)
        revenue = np.round(employees * d.lognormal("revenue", ix, np.log(120_000.0), 0.6), 2)
        name, domain = w.companies(w.customer_codes(ix))
        website = _nulls("https://www." + domain, d.random("no_website", ix) < 0.18)
        age = REFERENCE_TS - created
        updated = created + np.floor(d.random("updated", ix) ** 2 * age).astype(np.int64)
        out.write(
            "customers",
            {
                "id": ix + 1,
                "name": name,
                "name_key": name.str.to_lowercase(),
                "industry": _pick(
                    [i[0] for i in vocab.INDUSTRIES], w.cust_company["word"][lo:hi] // 3
                ),
                "region_id": w.cust_region[lo:hi] + 1,
                "tier": _pick(TIERS, tier),
                "owner_rep_id": w.cust_owner[lo:hi],
                "employees": employees,
                "annual_revenue": revenue,
                "website": website,
                "consent_marketing": d.random("consent_marketing", ix) < 0.85,
                "consent_profiling": d.random("consent_profiling", ix) < 0.60,
                "created_at": _iso(created),
                "updated_at": _iso(updated),
            },
        )


def _customer_tags(w: _World, out: _Output) -> None:
    d = w.draws("customer_tags")
    counts = d.choice("count", np.arange(w.n), _cdf((0.20, 0.38, 0.22, 0.12, 0.08)))
    tag_cdf = _cdf(1.0 / (d.permutation("rank", len(vocab.TAGS)) + 2.0) ** 0.8)
    high = vocab.TAGS.index("high-value")
    for lo, hi, first in _child_ranges(counts, w.chunk_rows):
        cust, rows = _children(lo, counts[lo:hi], first)
        tag = d.choice("tag", rows, tag_cdf)
        ix = _arange(lo, hi)
        is_big = (w.cust_tier[lo:hi] <= TIERS.index("vip")) & (d.random("big", ix) < 0.6)
        big = ix[is_big]
        # Chunks hold whole customers, so de-duplicating per chunk is global.
        frame = (
            pl.DataFrame(
                {
                    "customer_id": np.concatenate([cust, big]) + 1,
                    "tag": np.concatenate([tag, np.full(len(big), high, dtype=np.int64)]),
                }
            )
            .unique(maintain_order=True)
            .sort("customer_id", maintain_order=True)
        )
        out.write(
            "customer_tags",
            {
                "customer_id": frame["customer_id"],
                "tag": _pick(vocab.TAGS, frame["tag"].to_numpy()),
            },
        )


def _contacts(w: _World, out: _Output) -> None:
    d = w.draws("contacts")
    counts = 1 + d.poisson("count", np.arange(w.n), 2.0)
    w.contact_count = counts.astype(np.int32)
    w.contact_start = np.cumsum(counts) - counts
    titles = vocab.ZH_TITLES if w.zh else vocab.EN_TITLES
    jobs = w.pools.jobs
    for lo, hi, start in _child_ranges(counts, w.chunk_rows):
        cust, rows = _children(lo, counts[lo:hi], start)
        first, last, first_a, last_a = w.person_names(d, rows)
        title = _where(
            d.random("title_kind", rows) < 0.7,
            _pick(titles, d.integers("title", rows, 0, len(titles))),
            _pick(jobs, d.integers("job", rows, 0, len(jobs))),
        )
        domain = w.company_domains(w.customer_codes(_arange(lo, hi)))
        email = w.emails(d, rows, first_a, last_a, domain.gather(cust - lo))
        created = d.integers("created", rows, w.cust_created[cust], REFERENCE_TS)
        updated = d.integers("updated", rows, created, REFERENCE_TS)
        out.write(
            "contacts",
            {
                "id": rows + 1,
                "customer_id": cust + 1,
                "first_name": first,
                "last_name": last,
                "title": _nulls(title, d.random("no_title", rows) < 0.15),
                "email": _nulls(email, d.random("no_email", rows) < 0.10),
                "phone": _nulls(w.phones(d, rows), d.random("no_phone", rows) < 0.25),
                "created_at": _iso(created),
                "updated_at": _iso(updated),
            },
        )


# Sort keys of time-ordered tables: seconds since a start, then a customer index (24 bits
# hold MAX_CUSTOMERS).
_CUST_BITS: Final = 24
_CUST_MASK: Final = (1 << _CUST_BITS) - 1


def _orders(w: _World, out: _Output) -> None:
    d = w.draws("orders")
    # Skewed volume: a lognormal appetite per customer, damped for recently created ones.
    tenure = 0.2 + 0.8 * (REFERENCE_TS - w.cust_created) / (5 * YEAR)
    appetite = w.cust_weight * tenure
    counts = _rng(w.seed, "orders").poisson(5.0 * appetite / appetite.mean()).astype(np.int64)
    del tenure, appetite
    # Ids follow order time: rows are made per customer, then sorted on disk by time.
    t0 = REFERENCE_TS - 5 * YEAR
    spill = _Spill(
        out.dir / ".orders", (5 * YEAR) << _CUST_BITS, int(counts.sum()), w.chunk_rows, False
    )
    for lo, hi, first in _child_ranges(counts, w.chunk_rows):
        cust, rows = _children(lo, counts[lo:hi], first)
        ordered = d.integers("ordered", rows, w.cust_created[cust], REFERENCE_TS)
        spill.add(((ordered - t0) << _CUST_BITS) | cust)
    del counts

    recent_cdf = _cdf(vocab.ORDER_STATUSES_RECENT_WEIGHTS)
    old_cdf = _cdf(vocab.ORDER_STATUSES_OLD_WEIGHTS)
    discount_cdf = _cdf((0.55, 0.15, 0.12, 0.10, 0.08))
    currencies = [r[2] for r in vocab.REGIONS]
    next_order = next_line = 0
    for keys, _ in spill.sorted_chunks():
        cust = keys & _CUST_MASK
        ordered = (keys >> _CUST_BITS) + t0
        size = len(keys)
        ids = next_order + np.arange(size, dtype=np.int64)
        status = _where(
            REFERENCE_TS - ordered < 21 * DAY,
            _pick(vocab.ORDER_STATUSES_RECENT, d.choice("status_recent", ids, recent_cdf)),
            _pick(vocab.ORDER_STATUSES_OLD, d.choice("status_old", ids, old_cdf)),
        )
        lines = 1 + d.poisson("lines", ids, 1.5)
        starts = np.cumsum(lines) - lines
        order_idx = np.repeat(np.arange(size, dtype=np.int64), lines)
        line_rows = next_line + np.arange(len(order_idx), dtype=np.int64)
        line_no = np.arange(len(order_idx), dtype=np.int64) - np.repeat(starts, lines) + 1
        product = d.choice("product", line_rows, w.product_cdf)
        bulk = np.asarray([5, 3, 2, 1], dtype=np.int64)[w.cust_tier[cust[order_idx]]]
        qty = d.geometric("quantity", line_rows, 0.4) * bulk
        discount = np.asarray([0, 5, 10, 15, 20], dtype=np.int64)[
            d.choice("discount", line_rows, discount_cdf)
        ]
        # Money in integer cents, so that order totals equal the sum of their lines exactly.
        unit_cents = (w.product_cents[product] * (100 - discount) + 50) // 100
        amount_cents = qty * unit_cents
        total_cents = np.add.reduceat(amount_cents, starts)
        out.write(
            "orders",
            {
                "id": ids + 1,
                "customer_id": cust + 1,
                "ordered_at": _iso(ordered),
                "status": status,
                "currency": _pick(currencies, w.cust_region[cust].astype(np.int64)),
                "total_amount": total_cents / 100.0,
            },
        )
        out.write(
            "order_lines",
            {
                "order_id": ids[order_idx] + 1,
                "line_no": line_no,
                "product_id": product + 1,
                "quantity": qty,
                "unit_price": unit_cents / 100.0,
                "amount": amount_cents / 100.0,
            },
        )
        next_order += size
        next_line += len(order_idx)


def _opportunities(w: _World, out: _Output) -> None:
    d = w.draws("opportunities")
    counts = d.poisson("count", np.arange(w.n), 2.0)
    stage_cdf = _cdf((0.20, 0.17, 0.13, 0.10, 0.24, 0.16))
    deals = vocab.DEAL_NAMES_ZH if w.zh else vocab.DEAL_NAMES_EN
    medians = np.asarray([250_000.0, 80_000.0, 30_000.0, 8_000.0])
    for lo, hi, first in _child_ranges(counts, w.chunk_rows):
        cust, rows = _children(lo, counts[lo:hi], first)
        stage = d.choice("stage", rows, stage_cdf)
        closed = stage >= OPPORTUNITY_STAGES.index("closed_won")
        region = w.cust_region[cust]
        owner = np.where(
            d.random("other_owner", rows) < 0.85, w.cust_owner[cust], w.sales_rep(d, rows, region)
        )
        names = w.company_names(w.customer_codes(_arange(lo, hi)))
        deal = _pick(deals, d.integers("deal", rows, 0, len(deals)))
        name = names.gather(cust - lo) + " - " + deal
        median = medians[w.cust_tier[cust]]
        amount = np.round(d.lognormal("amount", rows, np.log(median), 0.8), 2)
        start = np.maximum(w.cust_created[cust], REFERENCE_TS - 2 * YEAR)
        created = d.integers("created", rows, start, REFERENCE_TS)
        close = created + d.integers("close_days", rows, 14, 181) * DAY
        close = np.minimum(close, REFERENCE_TS - 1)
        # Open deals may have a past expected close: stale pipeline is realistic.
        expected = created + d.integers("expected_days", rows, 30, 366) * DAY
        updated = np.where(closed, close, d.integers("updated", rows, created, REFERENCE_TS))
        out.write(
            "opportunities",
            {
                "id": rows + 1,
                "customer_id": cust + 1,
                "owner_rep_id": owner,
                "name": name,
                "stage": _pick(OPPORTUNITY_STAGES, stage),
                "amount": amount,
                "expected_close": _strftime(np.where(closed, close, expected), "%Y-%m-%d"),
                "created_at": _iso(created),
                "updated_at": _iso(updated),
            },
        )


def _leads(w: _World, out: _Output) -> None:
    d = w.draws("leads")
    status_cdf = _cdf((0.70, 0.12, 0.08, 0.06, 0.04))
    source_cdf = _cdf(vocab.LEAD_SOURCE_WEIGHTS)
    for lo, hi in _ranges(_scaled(w.n, 50_000, 50), w.chunk_rows):
        rows = _arange(lo, hi)
        status = d.choice("status", rows, status_cdf)
        converted = status == LEAD_STATUSES.index("converted")
        linked = converted | (d.random("linked", rows) < 0.375)
        cust = d.integers("customer", rows, 0, w.n)
        industry = d.integers("industry", rows, 0, len(vocab.INDUSTRIES))
        new_name, new_domain = w.companies(w.new_companies(d, rows, industry))
        cust_name, cust_domain = w.companies(w.customer_codes(cust))
        company = _where(linked, cust_name, new_name)
        domain = _where(linked, cust_domain, new_domain)
        first, last, first_a, last_a = w.person_names(d, rows)
        region = np.where(linked, w.cust_region[cust], d.choice("region", rows, w.region_cdf))
        is_open = status == LEAD_STATUSES.index("open")
        unowned = is_open & (d.random("unowned", rows) < 0.5)
        owner = _nulls(pl.Series(w.sales_rep(d, rows, region)), unowned)
        interest = _product_lists(
            d, rows, w.product_cdf, d.choice("interest_count", rows, _cdf((0.5, 0.3, 0.2))) + 1
        )
        # Open leads are mostly recent; older ones have usually been worked on.
        shape = np.where(is_open, 2.0, 1.0)
        age = np.floor(d.random("age", rows) ** shape * YEAR).astype(np.int64)
        created = REFERENCE_TS - 1 - age
        updated = d.integers("updated", rows, created, REFERENCE_TS)
        email = w.emails(d, rows, first_a, last_a, domain)
        out.write(
            "leads",
            {
                "id": rows + 1,
                "customer_id": _nulls(pl.Series(cust + 1), ~linked),
                "company_name": company,
                "contact_name": w.full_name(first, last),
                "email": _nulls(email, d.random("no_email", rows) < 0.15),
                "phone": _nulls(w.phones(d, rows), d.random("no_phone", rows) < 0.30),
                "source": _pick(vocab.LEAD_SOURCES, d.choice("source", rows, source_cdf)),
                "status": _pick(LEAD_STATUSES, status),
                "region_id": region + 1,
                "owner_rep_id": owner,
                "product_interest": interest,
                "created_at": _iso(created),
                "updated_at": _iso(updated),
            },
        )


def _product_lists(d: _Draws, rows: IntArray, cdf: FloatArray, count: IntArray) -> pl.Series:
    """JSON lists of ``count`` (1-3) distinct popular product ids, ascending."""
    picks = np.stack([d.choice(f"interest{k}", rows, cdf) for k in range(3)], axis=1)
    for col in (1, 2):
        # Redraw collisions uniformly; with 50+ products one or two rounds suffice.
        for attempt in range(100):
            clash = np.zeros(len(rows), dtype=np.bool_)
            for prev in range(col):
                clash |= picks[:, col] == picks[:, prev]
            clash &= count > col
            if not clash.any():
                break
            picks[clash, col] = d.integers(f"interest{col}.{attempt}", rows[clash], 0, len(cdf))
    picks = np.where(np.arange(3) < count[:, None], picks, np.iinfo(np.int64).max - 1)
    picks.sort(axis=1)
    ids = [_str(picks[:, k] + 1) for k in range(3)]
    return _concat(
        ["[", ids[0], _nulls(", " + ids[1], count < 2), _nulls(", " + ids[2], count < 3), "]"]
    )


def _activities(w: _World, out: _Output) -> None:
    d = w.draws("activities")
    size = _scaled(w.n, 100_000, 100)
    cust_cdf = _cdf(w.cust_weight)
    # Ids follow the time rows were recorded (then the time they happened), as an
    # append-only log would have them: the sort key packs both, the customer rides along.
    t0, delay_bits = REFERENCE_TS - 2 * YEAR, 18
    late = (1 << delay_bits) - 1
    spill = _Spill(out.dir / ".activities", (2 * YEAR) << delay_bits, size, w.chunk_rows, True)
    for lo, hi in _ranges(size, w.chunk_rows):
        rows = _arange(lo, hi)
        cust = d.choice("customer", rows, cust_cdf)
        start = np.maximum(w.cust_created[cust], t0)
        occurred = d.integers("occurred", rows, start, REFERENCE_TS)
        delay = d.integers("delay", rows, 0, 2 * DAY)
        created = np.minimum(occurred + delay, REFERENCE_TS - 1)
        spill.add(((created - t0) << delay_bits) | (late - (created - occurred)), cust)
    del cust_cdf

    kind_cdf = _cdf((0.30, 0.30, 0.15, 0.15, 0.10))
    subjects = vocab.ACTIVITY_SUBJECTS_ZH if w.zh else vocab.ACTIVITY_SUBJECTS_EN
    subject_pool = [s for per_type in subjects for s in per_type]
    next_id = 0
    for keys, cust in spill.sorted_chunks():
        ids = next_id + np.arange(len(keys), dtype=np.int64)
        next_id += len(keys)
        created = (keys >> delay_bits) + t0
        occurred = created - (late - (keys & late))
        contact = w.contact_start[cust] + np.floor(
            d.random("contact", ids) * w.contact_count[cust]
        ).astype(np.int64)
        kind = d.choice("type", ids, kind_cdf)
        subject = kind * 4 + d.integers("subject", ids, 0, 4)
        out.write(
            "activities",
            {
                "id": ids + 1,
                "customer_id": cust + 1,
                "contact_id": _nulls(pl.Series(contact + 1), d.random("no_contact", ids) < 0.08),
                "rep_id": _nulls(
                    pl.Series(w.cust_owner[cust].astype(np.int64)), d.random("no_rep", ids) < 0.06
                ),
                "type": _pick(ACTIVITY_TYPES, kind),
                "subject": _pick(subject_pool, subject),
                "occurred_at": _iso(occurred),
                "created_at": _iso(created),
            },
        )


def _events(w: _World, out: _Output) -> None:
    d = w.draws("events")
    size = _scaled(w.n, 1_000_000, 1000)
    cust_cdf = _cdf(w.cust_weight)
    t0 = REFERENCE_TS - 180 * DAY
    spill = _Spill(out.dir / ".events", (180 * DAY) << _CUST_BITS, size, w.chunk_rows, False)
    for lo, hi in _ranges(size, w.chunk_rows):
        rows = _arange(lo, hi)
        cust = d.choice("customer", rows, cust_cdf)
        occurred = REFERENCE_TS - 1 - d.integers("age", rows, 0, 180 * DAY)
        occurred = np.maximum(occurred, w.cust_created[cust])
        spill.add(((occurred - t0) << _CUST_BITS) | cust)
    del cust_cdf

    kind_cdf = _cdf(vocab.EVENT_TYPE_WEIGHTS)
    pool, offsets = _event_property_pool()
    next_id = 0
    for keys, _ in spill.sorted_chunks():
        ids = next_id + np.arange(len(keys), dtype=np.int64)
        next_id += len(keys)
        # The type and its properties do not depend on customer or time: drawn by event id.
        kind = d.choice("type", ids, kind_cdf)
        code = np.zeros(len(ids), dtype=np.int64)
        for k, name in enumerate(EVENT_TYPES):
            pos = np.flatnonzero(kind == k)
            code[pos] = offsets[name] + _event_property_code(d, name, ids[pos])
        out.write(
            "events",
            {
                "id": ids + 1,
                "customer_id": (keys & _CUST_MASK) + 1,
                "type": _pick(EVENT_TYPES, kind),
                "occurred_at": _iso((keys >> _CUST_BITS) + t0),
                "properties": pool.gather(code),
            },
        )


def _json_strings(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(json.dumps(v) for v in values)


def _numbers(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(lo, hi))


_FLAG: Final = ("false", "true")
# Properties of each event type: (key, JSON values, chance of "true" for flags, else None
# for a uniform pick).
_EVENT_FIELDS: Final[dict[str, tuple[tuple[str, tuple[str, ...], float | None], ...]]] = {
    "page_view": (
        ("page", _json_strings(vocab.PAGES), None), ("duration_s", _numbers(1, 600), None)
    ),
    "email_open": (
        ("campaign", _json_strings(vocab.CAMPAIGNS), None),
        ("device", _json_strings(vocab.DEVICES), None),
    ),
    "download": (("asset", _json_strings(vocab.ASSETS), None), ("gated", _FLAG, 0.4)),
    "support_call": (
        ("channel", _json_strings(vocab.CHANNELS), None),
        ("duration_s", _numbers(30, 3600), None),
        ("resolved", _FLAG, 0.8),
    ),
    "pricing_view": (("plan", _json_strings(vocab.PLANS), None), ("discount", _FLAG, 0.3)),
    "purchase": (("items", _numbers(1, 6), None), ("coupon", _FLAG, 0.2)),
}


@functools.cache
def _event_property_pool() -> tuple[pl.Series, dict[str, int]]:
    """Every possible properties object (a few tens of thousands), and where each event
    type's objects start; events then only pick one by number."""
    texts: list[str] = []
    offsets: dict[str, int] = {}
    for kind in EVENT_TYPES:
        fields = _EVENT_FIELDS.get(kind)
        if fields is None:
            raise RuntimeError(f"bug: no properties for event type {kind!r}")
        offsets[kind] = len(texts)
        for combo in itertools.product(*(values for _, values, _ in fields)):
            pairs = (f'"{key}": {value}' for (key, _, _), value in zip(fields, combo, strict=True))
            texts.append("{" + ", ".join(pairs) + "}")
    return pl.Series(texts, dtype=pl.String), offsets


def _event_property_code(d: _Draws, kind: str, ids: IntArray) -> IntArray:
    """Random properties objects of one event type, as numbers within that type."""
    code = np.zeros(len(ids), dtype=np.int64)
    for key, values, chance in _EVENT_FIELDS[kind]:
        stream = f"{kind}.{key}"
        if chance is None:
            pick = d.integers(stream, ids, 0, len(values))
        else:
            pick = (d.random(stream, ids) < chance).astype(np.int64)
        code = code * len(values) + pick
    return code


_BUILDERS: Final[dict[str, Callable[[_World, _Output], None]]] = {
    "regions": _regions,
    "reps": _reps,
    "products": _products,
    "inventory": _inventory,
    "customers": _customers,
    "customer_tags": _customer_tags,
    "contacts": _contacts,
    "orders": _orders,
    "opportunities": _opportunities,
    "leads": _leads,
    "activities": _activities,
    "events": _events,
}
# Builders that write more than their own table, in manifest order.
_PRODUCES: Final[dict[str, tuple[str, ...]]] = {"orders": ("orders", "order_lines")}
