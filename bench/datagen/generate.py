"""Deterministic, fast fixture generator for the CRM benchmark.

Faker is called only a few thousand times to build vocabulary pools; every table is then
sampled with numpy (one PCG64 stream per table) and assembled with vectorised polars
string operations, so the 100k-customer profile takes seconds. The output is one Parquet
file per fixture table plus ``manifest.json``; the same seed and package versions give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Final, TypedDict

import numpy as np
import numpy.typing as npt
import polars as pl

from bench import __version__
from bench.datagen import vocab
from bench.errors import FixtureError, UserError
from reference_impl.schema import (
    ACTIVITY_TYPES,
    EVENT_TYPES,
    FIXTURE_TABLES,
    LEAD_STATUSES,
    OPPORTUNITY_STAGES,
    REP_ROLES,
    TIERS,
    Kind,
    Table,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Column = pl.Series | IntArray | FloatArray | BoolArray
ProgressFn = Callable[[str, int, int], None]

MANIFEST_FORMAT: Final = 1
MANIFEST_NAME: Final = "manifest.json"
LOCALES: Final = ("en_US", "zh_CN")
MIN_CUSTOMERS: Final = 100
MAX_CUSTOMERS: Final = 10_000_000
# Fixed so that fixtures never depend on the day they were generated.
REFERENCE_TS: Final = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY: Final = 86_400
YEAR: Final = 365 * DAY
ROW_GROUP_SIZE: Final = 131_072
ZSTD_LEVEL: Final = 3
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
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- manifest


class TableEntry(TypedDict):
    """One fixture file as recorded in the manifest."""

    file: str
    rows: int
    sha256: str


class Profile(TypedDict):
    """The inputs that determine a fixture profile."""

    customers: int
    seed: int
    locale: str


class Manifest(TypedDict):
    """Content of ``manifest.json``: what was generated, by which versions, and file hashes."""

    format: int
    profile: Profile
    generator: str
    versions: dict[str, str]
    tables: dict[str, TableEntry]


def manifest_json(manifest: Manifest) -> str:
    """The canonical (byte-stable) text of a manifest."""
    return json.dumps(manifest, sort_keys=True, indent=2) + "\n"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_hash(dir: Path) -> str:
    """SHA-256 of the ``manifest.json`` bytes: the identity of a fixture profile."""
    path = Path(dir) / MANIFEST_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise FixtureError(f"cannot read fixture manifest {path}: {exc.strerror or exc}") from exc


def read_manifest(dir: Path) -> dict[str, Any]:
    """Load ``<dir>/manifest.json`` and check that every listed file exists and matches it."""
    dir = Path(dir)
    path = dir / MANIFEST_NAME
    if not dir.is_dir():
        raise FixtureError(f"fixture directory {dir} does not exist; generate the fixtures first")
    if not path.is_file():
        raise FixtureError(
            f"{dir} holds no {MANIFEST_NAME}: it is not a generated fixture directory "
            "(or generation did not finish); generate the fixtures again"
        )
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FixtureError(f"fixture manifest {path} is not valid JSON: {exc}") from exc
    _check_manifest_shape(data, path)
    tables: dict[str, dict[str, Any]] = data["tables"]
    missing = [t.name for t in FIXTURE_TABLES if t.name not in tables]
    if missing:
        raise FixtureError(f"fixture manifest {path} lists no table(s) {', '.join(missing)}")
    for name, entry in tables.items():
        file = dir / entry["file"]
        if not file.is_file():
            raise FixtureError(f"fixture file {file} for table {name!r} is missing")
        actual = _sha256_file(file)
        if actual != entry["sha256"]:
            raise FixtureError(
                f"fixture file {file} does not match its manifest (sha256 {actual[:12]}..., "
                f"expected {entry['sha256'][:12]}...): it was modified or is incomplete; "
                "generate the fixtures again"
            )
    return data  # type: ignore[no-any-return]


def _check_manifest_shape(data: Any, path: Path) -> None:
    def bad(what: str) -> FixtureError:
        return FixtureError(f"fixture manifest {path} is malformed: {what}")

    if not isinstance(data, dict):
        raise bad("top level is not an object")
    if data.get("format") != MANIFEST_FORMAT:
        raise bad(f"format is {data.get('format')!r}, this crmbench reads format {MANIFEST_FORMAT}")
    profile = data.get("profile")
    fields = (("customers", int), ("seed", int), ("locale", str))
    if not isinstance(profile, dict) or not all(isinstance(profile.get(k), t) for k, t in fields):
        raise bad("'profile' must hold integer 'customers' and 'seed' and a string 'locale'")
    tables = data.get("tables")
    if not isinstance(tables, dict):
        raise bad("'tables' is not an object")
    for name, entry in tables.items():
        if not isinstance(entry, dict):
            raise bad(f"entry for table {name!r} is not an object")
        file, rows, sha = entry.get("file"), entry.get("rows"), entry.get("sha256")
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise bad(f"table {name!r} has no plain file name")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise bad(f"table {name!r} has no valid row count")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise bad(f"table {name!r} has no valid sha256")


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
        "numpy": np.__version__,
        "faker": faker_version,
    }


def generate(
    out: Path,
    customers: int = 100_000,
    seed: int = 42,
    locale: str = "en_US",
    progress: ProgressFn | None = None,
) -> Manifest:
    """Generate a fixture profile into ``out``, atomically replacing an earlier profile there.

    ``progress(table, done, total)`` is called after each table file is written.
    """
    _validate(customers, seed, locale)
    out = Path(out).resolve()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():  # left behind by a killed run that had the same pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        world = _World(customers, seed, locale, _build_pools(seed, locale))
        tables: dict[str, TableEntry] = {}
        total = len(FIXTURE_TABLES)
        for done, table in enumerate(FIXTURE_TABLES, start=1):
            frame = _frame(table, _BUILDERS[table.name](world, _rng(seed, table.name)))
            file = f"{table.name}.parquet"
            frame.write_parquet(
                tmp / file,
                compression="zstd",
                compression_level=ZSTD_LEVEL,
                statistics=True,
                row_group_size=ROW_GROUP_SIZE,
            )
            tables[table.name] = {
                "file": file, "rows": frame.height, "sha256": _sha256_file(tmp / file)
            }
            del frame
            if progress is not None:
                progress(table.name, done, total)
        manifest: Manifest = {
            "format": MANIFEST_FORMAT,
            "profile": {"customers": customers, "seed": seed, "locale": locale},
            "generator": _generator(),
            "versions": _versions(),
            "tables": tables,
        }
        (tmp / MANIFEST_NAME).write_text(manifest_json(manifest), encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


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


# --------------------------------------------------------------------------- sampling helpers


def _rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream per table, so changing one table never shifts another.
    key = zlib.crc32(stream.encode())
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key])))


def _cdf(weights: Sequence[float] | npt.NDArray[np.floating[Any]]) -> FloatArray:
    c: FloatArray = np.cumsum(np.asarray(weights, dtype=np.float64))
    out: FloatArray = c / c[-1]
    return out


def _sample(rng: np.random.Generator, cdf: FloatArray, size: int) -> IntArray:
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, len(cdf) - 1).astype(np.int64)


def _uniform(rng: np.random.Generator, high: int, size: int) -> IntArray:
    return rng.integers(0, high, size, dtype=np.int64)


def _between(rng: np.random.Generator, lo: IntArray, hi: IntArray | int) -> IntArray:
    """Random integers in [lo, hi) row by row (hi > lo)."""
    span = np.asarray(hi, dtype=np.int64) - lo
    return lo + np.floor(rng.random(len(lo)) * span).astype(np.int64)


def _pick(pool: Sequence[str], idx: IntArray) -> pl.Series:
    return pl.Series(values=list(pool), dtype=pl.String).gather(idx)


def _str(values: IntArray, width: int = 0) -> pl.Series:
    s = pl.Series(values).cast(pl.String)
    return s.str.zfill(width) if width else s


def _strftime(seconds: IntArray, fmt: str) -> pl.Series:
    return (pl.Series(seconds, dtype=pl.Int64) * 1000).cast(pl.Datetime("ms")).dt.strftime(fmt)


def _iso(seconds: IntArray) -> pl.Series:
    return _strftime(seconds, ISO_FORMAT)


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
        rng = _rng(seed, "pools")
        first_roman = _unique([fake.first_romanized_name().lower() for _ in range(500)])
        last_roman = _unique([fake.last_romanized_name().lower() for _ in range(500)])
        first_ascii = [first_roman[i] for i in _uniform(rng, len(first_roman), len(first))]
        last_ascii = [last_roman[i] for i in _uniform(rng, len(last_roman), len(last))]
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


@dataclass
class _World:
    """Sizes and cross-table facts that later tables sample from (indices are 0-based)."""

    n: int
    seed: int
    locale: str
    pools: _Pools
    region_cdf: FloatArray = field(default_factory=_empty_float)
    sales_ids: IntArray = field(default_factory=_empty_int)
    sales_start: IntArray = field(default_factory=_empty_int)
    sales_count: IntArray = field(default_factory=_empty_int)
    product_cents: IntArray = field(default_factory=_empty_int)
    product_cdf: FloatArray = field(default_factory=_empty_float)
    cust_region: IntArray = field(default_factory=_empty_int)
    cust_tier: IntArray = field(default_factory=_empty_int)
    cust_owner: IntArray = field(default_factory=_empty_int)
    cust_created: IntArray = field(default_factory=_empty_int)
    cust_weight: FloatArray = field(default_factory=_empty_float)
    cust_name: pl.Series = field(default_factory=pl.Series)
    cust_domain: pl.Series = field(default_factory=pl.Series)
    contact_start: IntArray = field(default_factory=_empty_int)
    contact_count: IntArray = field(default_factory=_empty_int)
    order_lines: pl.DataFrame | None = None

    @property
    def zh(self) -> bool:
        return self.locale == "zh_CN"

    def sales_rep(self, rng: np.random.Generator, region: IntArray) -> IntArray:
        """A random sales rep (role "rep") of each given region, as rep ids."""
        offset = np.floor(rng.random(len(region)) * self.sales_count[region]).astype(np.int64)
        ids: IntArray = self.sales_ids[self.sales_start[region] + offset]
        return ids

    def person_names(
        self, rng: np.random.Generator, size: int
    ) -> tuple[pl.Series, pl.Series, pl.Series, pl.Series]:
        """(first, last, first_ascii, last_ascii) for ``size`` random people."""
        p = self.pools
        fi = _uniform(rng, len(p.first), size)
        la = _uniform(rng, len(p.last), size)
        return (
            _pick(p.first, fi), _pick(p.last, la), _pick(p.first_ascii, fi), _pick(p.last_ascii, la)
        )

    def full_name(self, first: pl.Series, last: pl.Series) -> pl.Series:
        return last + first if self.zh else first + " " + last

    def phones(self, rng: np.random.Generator, size: int) -> pl.Series:
        if self.zh:
            head = _pick(("13", "15", "17", "18", "19"), _uniform(rng, 5, size))
            return (
                "+86-" + head + _str(_uniform(rng, 10, size)) + "-"
                + _str(_uniform(rng, 10_000, size), 4) + "-" + _str(_uniform(rng, 10_000, size), 4)
            )
        return (
            "+1-" + _str(rng.integers(201, 990, size, dtype=np.int64)) + "-"
            + _str(rng.integers(200, 1000, size, dtype=np.int64)) + "-"
            + _str(_uniform(rng, 10_000, size), 4)
        )

    def emails(
        self, rng: np.random.Generator, first: pl.Series, last: pl.Series, domain: pl.Series
    ) -> pl.Series:
        """Addresses in the usual corporate patterns: first.last, flast, first + digits."""
        size = len(first)
        pattern = _sample(rng, _cdf((0.6, 0.25, 0.15)), size)
        digits = _str(rng.integers(1, 100, size, dtype=np.int64))
        local = _where(
            pattern == 0,
            first + "." + last,
            _where(pattern == 1, first.str.slice(0, 1) + last, first + digits),
        )
        return local + "@" + domain

    def companies(
        self, rng: np.random.Generator, industry: IntArray
    ) -> tuple[pl.Series, pl.Series]:
        """Company names for the given industries, and an ASCII web domain for each."""
        size = len(industry)
        p = self.pools
        word_idx = industry * 3 + _uniform(rng, 3, size)
        if self.zh:
            city = _pick(p.cities, _uniform(rng, len(p.cities), size))
            words = [w for _, _, zh in vocab.INDUSTRIES for w in zh]
            suffix = _sample(rng, _cdf(vocab.ZH_COMPANY_SUFFIX_WEIGHTS), size)
            name = _concat(
                [
                    _nulls(city, rng.random(size) < 0.4),
                    _pick(p.stems, _uniform(rng, len(p.stems), size)),
                    _pick(words, word_idx),
                    _pick(vocab.ZH_COMPANY_SUFFIXES, suffix),
                ]
            )
            syl = vocab.PINYIN
            host = _concat(
                [
                    _pick(syl, _uniform(rng, len(syl), size)),
                    _pick(syl, _uniform(rng, len(syl), size)),
                    _nulls(_pick(syl, _uniform(rng, len(syl), size)), rng.random(size) < 0.5),
                ]
            )
            tld = _pick(vocab.TLDS_ZH, _uniform(rng, len(vocab.TLDS_ZH), size))
            return name, host + tld
        first = _pick(p.stems, _uniform(rng, len(p.stems), size))
        second = _pick(p.stems, _uniform(rng, len(p.stems), size))
        shape = rng.random(size)
        stem = _where(
            shape < 0.7, first, _where(shape < 0.85, first + " & " + second, first + "-" + second)
        )
        word = _pick([w for _, en, _ in vocab.INDUSTRIES for w in en], word_idx)
        suffix = _sample(rng, _cdf(vocab.EN_COMPANY_SUFFIX_WEIGHTS), size)
        name = stem + " " + word + " " + _pick(vocab.EN_COMPANY_SUFFIXES, suffix)
        tld = _pick(vocab.TLDS_EN, _uniform(rng, len(vocab.TLDS_EN), size))
        return name, _ascii_slug(stem + word) + tld


# --------------------------------------------------------------------------- tables


def _regions(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    count = len(vocab.REGIONS)
    w.region_cdf = _cdf(rng.lognormal(0.0, 0.6, count))
    return {
        "id": np.arange(1, count + 1, dtype=np.int64),
        "name": pl.Series([r[0] for r in vocab.REGIONS]),
        "country": pl.Series([r[1] for r in vocab.REGIONS]),
    }


def _reps(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    regions = len(vocab.REGIONS)
    total = _scaled(w.n, 500, 3 * regions)
    managers = round(total * 0.1)
    extra = total - 2 * regions - managers
    rep, manager, director = (REP_ROLES.index(r) for r in ("rep", "manager", "director"))
    # One director and at least one sales rep per region, so every customer gets a local owner.
    region = np.concatenate(
        [
            np.arange(regions), np.arange(regions),
            _sample(rng, w.region_cdf, managers), _sample(rng, w.region_cdf, extra),
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
    first, last, first_a, last_a = w.person_names(rng, total)
    local = _uniquify(first_a + "." + last_a, "")
    return {
        "id": ids,
        "name": w.full_name(first, last),
        "email": local + "@sales.crmbench.example",
        "phone": w.phones(rng, total),
        "region_id": region + 1,
        "role": _pick(REP_ROLES, role),
    }


def _products(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    total = _scaled(w.n, 2000, 50)
    cats = vocab.PRODUCT_CATEGORIES
    cat = _sample(rng, _cdf(rng.uniform(0.5, 1.5, len(cats))), total)
    ids = np.arange(1, total + 1, dtype=np.int64)
    nouns = [noun for c in cats for noun in (c[4] if w.zh else c[3])]
    noun = _pick(nouns, cat * 4 + _uniform(rng, 4, total))
    brand = _pick(w.pools.stems, _uniform(rng, len(w.pools.stems), total))
    series = _pick(vocab.PRODUCT_SERIES, _uniform(rng, len(vocab.PRODUCT_SERIES), total))
    model = _str(rng.integers(1, 100, total, dtype=np.int64) * 10)
    name = (brand + noun if w.zh else brand + " " + noun) + " " + series + " " + model
    median = np.asarray([c[2] for c in cats])[cat]
    price = np.clip(rng.lognormal(np.log(median), 1.0), 6.0, 50_000.0)
    # Whole units minus one cent: list prices like 399.99.
    w.product_cents = np.floor(price).astype(np.int64) * 100 - 1
    # Zipf-like popularity over a random ranking of the catalogue.
    w.product_cdf = _cdf(1.0 / (rng.permutation(total) + 1.0) ** 0.8)
    return {
        "id": ids,
        "sku": _pick([c[1] for c in cats], cat) + "-" + _str(ids, 6),
        "name": name,
        "category": _pick([c[0] for c in cats], cat),
        "unit_price": w.product_cents / 100.0,
    }


def _inventory(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    products, regions = len(w.product_cents), len(vocab.REGIONS)
    size = products * regions
    qty = np.floor(rng.lognormal(np.log(40.0), 1.0, size)).astype(np.int64)
    qty[rng.random(size) < 0.12] = 0
    return {
        "product_id": np.repeat(np.arange(1, products + 1, dtype=np.int64), regions),
        "region_id": np.tile(np.arange(1, regions + 1, dtype=np.int64), products),
        "quantity": qty,
    }


def _customers(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    n = w.n
    # Sorted so that ids grow with creation time, as in a real database.
    created = np.sort(rng.integers(REFERENCE_TS - 5 * YEAR, REFERENCE_TS - DAY, n, dtype=np.int64))
    region = _sample(rng, w.region_cdf, n)
    tier = _sample(rng, _cdf((0.01, 0.05, 0.14, 0.80)), n)
    industry = _sample(rng, _cdf(rng.dirichlet(np.full(len(vocab.INDUSTRIES), 4.0))), n)
    owner = w.sales_rep(rng, region)
    employees_median = np.asarray([8000.0, 1200.0, 250.0, 40.0])[tier]
    employees = np.maximum(1, np.rint(rng.lognormal(np.log(employees_median), 1.0))).astype(
        np.int64
    )
    revenue = np.round(employees * rng.lognormal(np.log(120_000.0), 0.6, n), 2)
    name, domain = w.companies(rng, industry)
    # Repeated Chinese names get a number in full-width brackets, the local convention.
    name = _uniquify(name, "\uff08", "\uff09") if w.zh else _uniquify(name, " ")
    website = _nulls("https://www." + domain, rng.random(n) < 0.18)
    updated = created + np.floor(rng.random(n) ** 2 * (REFERENCE_TS - created)).astype(np.int64)
    engagement = np.asarray([4.0, 2.5, 1.5, 1.0])[tier]
    w.cust_region, w.cust_tier, w.cust_owner, w.cust_created = region, tier, owner, created
    w.cust_weight = rng.lognormal(0.0, 1.2, n) * engagement
    w.cust_name, w.cust_domain = name, domain
    return {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "name": name,
        "name_key": name.str.to_lowercase(),
        "industry": _pick([i[0] for i in vocab.INDUSTRIES], industry),
        "region_id": region + 1,
        "tier": _pick(TIERS, tier),
        "owner_rep_id": owner,
        "employees": employees,
        "annual_revenue": revenue,
        "website": website,
        "consent_marketing": rng.random(n) < 0.85,
        "consent_profiling": rng.random(n) < 0.60,
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }


def _customer_tags(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    counts = _sample(rng, _cdf((0.20, 0.38, 0.22, 0.12, 0.08)), w.n)
    cust = np.repeat(np.arange(w.n, dtype=np.int64), counts)
    tag_cdf = _cdf(1.0 / (rng.permutation(len(vocab.TAGS)) + 2.0) ** 0.8)
    tag = _sample(rng, tag_cdf, len(cust))
    high = vocab.TAGS.index("high-value")
    big = np.flatnonzero((w.cust_tier <= TIERS.index("vip")) & (rng.random(w.n) < 0.6))
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
    return {
        "customer_id": frame["customer_id"],
        "tag": _pick(vocab.TAGS, frame["tag"].to_numpy()),
    }


def _contacts(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    counts = 1 + rng.poisson(2.0, w.n).astype(np.int64)
    w.contact_count = counts
    w.contact_start = np.cumsum(counts) - counts
    cust = np.repeat(np.arange(w.n, dtype=np.int64), counts)
    size = len(cust)
    first, last, first_a, last_a = w.person_names(rng, size)
    titles = vocab.ZH_TITLES if w.zh else vocab.EN_TITLES
    title = _where(
        rng.random(size) < 0.7,
        _pick(titles, _uniform(rng, len(titles), size)),
        _pick(w.pools.jobs, _uniform(rng, len(w.pools.jobs), size)),
    )
    email = w.emails(rng, first_a, last_a, w.cust_domain.gather(cust))
    created = _between(rng, w.cust_created[cust], REFERENCE_TS)
    updated = _between(rng, created, REFERENCE_TS)
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": cust + 1,
        "first_name": first,
        "last_name": last,
        "title": _nulls(title, rng.random(size) < 0.15),
        "email": _nulls(email, rng.random(size) < 0.10),
        "phone": _nulls(w.phones(rng, size), rng.random(size) < 0.25),
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }


def _orders(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    # Skewed volume: a lognormal appetite per customer, damped for recently created ones.
    tenure = 0.2 + 0.8 * (REFERENCE_TS - w.cust_created) / (5 * YEAR)
    appetite = w.cust_weight * tenure
    counts = rng.poisson(5.0 * appetite / appetite.mean()).astype(np.int64)
    cust = np.repeat(np.arange(w.n, dtype=np.int64), counts)
    ordered = _between(rng, w.cust_created[cust], REFERENCE_TS)
    order = np.lexsort((cust, ordered))
    cust, ordered = cust[order], ordered[order]
    size = len(cust)
    status = _where(
        REFERENCE_TS - ordered < 21 * DAY,
        _pick(
            vocab.ORDER_STATUSES_RECENT,
            _sample(rng, _cdf(vocab.ORDER_STATUSES_RECENT_WEIGHTS), size),
        ),
        _pick(vocab.ORDER_STATUSES_OLD, _sample(rng, _cdf(vocab.ORDER_STATUSES_OLD_WEIGHTS), size)),
    )
    currency = _pick([r[2] for r in vocab.REGIONS], w.cust_region[cust])

    lines = 1 + rng.poisson(1.5, size).astype(np.int64)
    starts = np.cumsum(lines) - lines
    order_idx = np.repeat(np.arange(size, dtype=np.int64), lines)
    line_no = np.arange(len(order_idx), dtype=np.int64) - np.repeat(starts, lines) + 1
    product = _sample(rng, w.product_cdf, len(order_idx))
    bulk = np.asarray([5, 3, 2, 1], dtype=np.int64)[w.cust_tier[cust[order_idx]]]
    qty = rng.geometric(0.4, len(order_idx)).astype(np.int64) * bulk
    discount = np.asarray([0, 5, 10, 15, 20], dtype=np.int64)[
        _sample(rng, _cdf((0.55, 0.15, 0.12, 0.10, 0.08)), len(order_idx))
    ]
    # Money in integer cents, so that order totals equal the sum of their lines exactly.
    unit_cents = (w.product_cents[product] * (100 - discount) + 50) // 100
    amount_cents = qty * unit_cents
    total_cents = np.add.reduceat(amount_cents, starts) if size else _empty_int()
    w.order_lines = pl.DataFrame(
        {
            "order_id": order_idx + 1,
            "line_no": line_no,
            "product_id": product + 1,
            "quantity": qty,
            "unit_price": unit_cents / 100.0,
            "amount": amount_cents / 100.0,
        }
    )
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": cust + 1,
        "ordered_at": _iso(ordered),
        "status": status,
        "currency": currency,
        "total_amount": total_cents / 100.0,
    }


def _order_lines(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    frame, w.order_lines = w.order_lines, None
    if frame is None:
        raise RuntimeError("bug: order_lines built before orders")
    return {name: frame[name] for name in frame.columns}


def _opportunities(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    counts = rng.poisson(2.0, w.n).astype(np.int64)
    cust = np.repeat(np.arange(w.n, dtype=np.int64), counts)
    size = len(cust)
    stage = _sample(rng, _cdf((0.20, 0.17, 0.13, 0.10, 0.24, 0.16)), size)
    closed = stage >= OPPORTUNITY_STAGES.index("closed_won")
    owner = np.where(
        rng.random(size) < 0.85, w.cust_owner[cust], w.sales_rep(rng, w.cust_region[cust])
    )
    deals = vocab.DEAL_NAMES_ZH if w.zh else vocab.DEAL_NAMES_EN
    name = w.cust_name.gather(cust) + " - " + _pick(deals, _uniform(rng, len(deals), size))
    amount_median = np.asarray([250_000.0, 80_000.0, 30_000.0, 8_000.0])[w.cust_tier[cust]]
    amount = np.round(rng.lognormal(np.log(amount_median), 0.8), 2)
    lo = np.maximum(w.cust_created[cust], REFERENCE_TS - 2 * YEAR)
    created = _between(rng, lo, REFERENCE_TS)
    close = created + rng.integers(14, 181, size, dtype=np.int64) * DAY
    close = np.minimum(close, REFERENCE_TS - 1)
    # Open deals may have a past expected close: stale pipeline is realistic.
    expected = created + rng.integers(30, 366, size, dtype=np.int64) * DAY
    updated = np.where(closed, close, _between(rng, created, REFERENCE_TS))
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": cust + 1,
        "owner_rep_id": owner,
        "name": name,
        "stage": _pick(OPPORTUNITY_STAGES, stage),
        "amount": amount,
        "expected_close": _strftime(np.where(closed, close, expected), "%Y-%m-%d"),
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }


def _leads(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    size = _scaled(w.n, 50_000, 50)
    status = _sample(rng, _cdf((0.70, 0.12, 0.08, 0.06, 0.04)), size)
    converted = status == LEAD_STATUSES.index("converted")
    linked = converted | (rng.random(size) < 0.375)
    cust = _uniform(rng, w.n, size)
    industry = _uniform(rng, len(vocab.INDUSTRIES), size)
    new_name, new_domain = w.companies(rng, industry)
    company = _where(linked, w.cust_name.gather(cust), new_name)
    domain = _where(linked, w.cust_domain.gather(cust), new_domain)
    first, last, first_a, last_a = w.person_names(rng, size)
    region = np.where(linked, w.cust_region[cust], _sample(rng, w.region_cdf, size))
    is_open = status == LEAD_STATUSES.index("open")
    owner = _nulls(pl.Series(w.sales_rep(rng, region)), is_open & (rng.random(size) < 0.5))
    interest = _product_lists(rng, w.product_cdf, _sample(rng, _cdf((0.5, 0.3, 0.2)), size) + 1)
    # Open leads are mostly recent; older ones have usually been worked on.
    age = np.floor(rng.random(size) ** np.where(is_open, 2.0, 1.0) * YEAR).astype(np.int64)
    created = REFERENCE_TS - 1 - age
    updated = _between(rng, created, REFERENCE_TS)
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": _nulls(pl.Series(cust + 1), ~linked),
        "company_name": company,
        "contact_name": w.full_name(first, last),
        "email": _nulls(w.emails(rng, first_a, last_a, domain), rng.random(size) < 0.15),
        "phone": _nulls(w.phones(rng, size), rng.random(size) < 0.30),
        "source": _pick(vocab.LEAD_SOURCES, _sample(rng, _cdf(vocab.LEAD_SOURCE_WEIGHTS), size)),
        "status": _pick(LEAD_STATUSES, status),
        "region_id": region + 1,
        "owner_rep_id": owner,
        "product_interest": interest,
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }


def _product_lists(rng: np.random.Generator, cdf: FloatArray, count: IntArray) -> pl.Series:
    """JSON lists of ``count`` (1-3) distinct popular product ids, ascending."""
    size = len(count)
    picks = np.stack([_sample(rng, cdf, size) for _ in range(3)], axis=1)
    for col in (1, 2):
        # Redraw collisions uniformly; with 50+ products one or two rounds suffice.
        for _ in range(100):
            clash = np.zeros(size, dtype=np.bool_)
            for prev in range(col):
                clash |= picks[:, col] == picks[:, prev]
            clash &= count > col
            if not clash.any():
                break
            picks[clash, col] = _uniform(rng, len(cdf), int(clash.sum()))
    picks = np.where(np.arange(3) < count[:, None], picks, np.iinfo(np.int64).max - 1)
    picks.sort(axis=1)
    ids = [_str(picks[:, k] + 1) for k in range(3)]
    return _concat(
        ["[", ids[0], _nulls(", " + ids[1], count < 2), _nulls(", " + ids[2], count < 3), "]"]
    )


def _activities(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    size = _scaled(w.n, 100_000, 100)
    cust = _sample(rng, _cdf(w.cust_weight), size)
    contact = w.contact_start[cust] + np.floor(
        rng.random(size) * w.contact_count[cust]
    ).astype(np.int64)
    kind = _sample(rng, _cdf((0.30, 0.30, 0.15, 0.15, 0.10)), size)
    subjects = vocab.ACTIVITY_SUBJECTS_ZH if w.zh else vocab.ACTIVITY_SUBJECTS_EN
    subject_pool = [s for per_type in subjects for s in per_type]
    subject_idx = kind * 4 + _uniform(rng, 4, size)
    lo = np.maximum(w.cust_created[cust], REFERENCE_TS - 2 * YEAR)
    occurred = _between(rng, lo, REFERENCE_TS)
    created = np.minimum(occurred + _uniform(rng, 2 * DAY, size), REFERENCE_TS - 1)
    # Ids follow the time rows were recorded, as an append-only log would have them.
    order = np.lexsort((occurred, created))
    cust, contact, kind = cust[order], contact[order], kind[order]
    subject_idx, occurred, created = subject_idx[order], occurred[order], created[order]
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": cust + 1,
        "contact_id": _nulls(pl.Series(contact + 1), rng.random(size) < 0.08),
        "rep_id": _nulls(pl.Series(w.cust_owner[cust]), rng.random(size) < 0.06),
        "type": _pick(ACTIVITY_TYPES, kind),
        "subject": _pick(subject_pool, subject_idx),
        "occurred_at": _iso(occurred),
        "created_at": _iso(created),
    }


def _events(w: _World, rng: np.random.Generator) -> dict[str, Column]:
    size = _scaled(w.n, 1_000_000, 1000)
    cust = _sample(rng, _cdf(w.cust_weight), size)
    kind = _sample(rng, _cdf(vocab.EVENT_TYPE_WEIGHTS), size)
    occurred = REFERENCE_TS - 1 - _uniform(rng, 180 * DAY, size)
    occurred = np.maximum(occurred, w.cust_created[cust])
    order = np.lexsort((cust, occurred))
    cust, kind, occurred = cust[order], kind[order], occurred[order]
    parts: list[pl.DataFrame] = []
    for k, name in enumerate(EVENT_TYPES):
        pos = np.flatnonzero(kind == k)
        props = _event_properties(rng, name, len(pos))
        parts.append(pl.DataFrame({"pos": pos, "properties": props}))
    properties = pl.concat(parts).sort("pos")["properties"]
    return {
        "id": np.arange(1, size + 1, dtype=np.int64),
        "customer_id": cust + 1,
        "type": _pick(EVENT_TYPES, kind),
        "occurred_at": _iso(occurred),
        "properties": properties,
    }


def _event_properties(rng: np.random.Generator, kind: str, size: int) -> pl.Series:
    """Small JSON objects whose keys depend on the event type."""

    def pick(values: Sequence[str]) -> pl.Series:
        return _pick([json.dumps(v) for v in values], _uniform(rng, len(values), size))

    def flag(p: float) -> pl.Series:
        return _pick(("false", "true"), (rng.random(size) < p).astype(np.int64))

    def number(lo: int, hi: int) -> pl.Series:
        return _str(rng.integers(lo, hi, size, dtype=np.int64))

    if kind == "page_view":
        return '{"page": ' + pick(vocab.PAGES) + ', "duration_s": ' + number(1, 600) + "}"
    if kind == "email_open":
        return '{"campaign": ' + pick(vocab.CAMPAIGNS) + ', "device": ' + pick(vocab.DEVICES) + "}"
    if kind == "download":
        return '{"asset": ' + pick(vocab.ASSETS) + ', "gated": ' + flag(0.4) + "}"
    if kind == "support_call":
        return (
            '{"channel": ' + pick(vocab.CHANNELS) + ', "duration_s": ' + number(30, 3600)
            + ', "resolved": ' + flag(0.8) + "}"
        )
    if kind == "pricing_view":
        return '{"plan": ' + pick(vocab.PLANS) + ', "discount": ' + flag(0.3) + "}"
    if kind == "purchase":
        return '{"items": ' + number(1, 6) + ', "coupon": ' + flag(0.2) + "}"
    raise RuntimeError(f"bug: no properties for event type {kind!r}")


_BUILDERS: Final[dict[str, Callable[[_World, np.random.Generator], dict[str, Column]]]] = {
    "regions": _regions,
    "reps": _reps,
    "products": _products,
    "inventory": _inventory,
    "customers": _customers,
    "customer_tags": _customer_tags,
    "contacts": _contacts,
    "orders": _orders,
    "order_lines": _order_lines,
    "opportunities": _opportunities,
    "leads": _leads,
    "activities": _activities,
    "events": _events,
}
