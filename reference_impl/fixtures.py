"""The fixture format as read by every consumer: ``manifest.json`` and its integrity checks.

The generator (``bench.datagen``) writes it; the reference CRM's loader and the harness
read it. A profile is identified by the SHA-256 of its manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Final, TypedDict

from reference_impl.errors import FixtureError
from reference_impl.schema import FIXTURE_TABLES

MANIFEST_FORMAT: Final = 1
MANIFEST_NAME: Final = "manifest.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")



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


def sha256_file(path: Path) -> str:
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
        actual = sha256_file(file)
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


