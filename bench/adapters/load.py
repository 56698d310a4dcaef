"""The load hook's driver: a fixture profile into a platform, batch by batch, resumable.

The adapter names the fixture tables it takes (``load_tables``, in load order) and creates
rows through ``load_rows``, returning each row's key. References to tables loaded before
(``customer_id``, ``owner_rep_id``...) reach the adapter already mapped onto those keys.
Every finished batch is appended to a journal (``<state dir>/<target>.journal.jsonl``):
an interrupted load resumes at the first batch not in it, so at most one batch is sent
twice. When the last table is in, the load record (profile, manifest hash, rows, time) is
kept on the platform if the adapter can (``record_profile``) and always beside the
results (``<state dir>/<target>.loaded.json``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.adapters.base import Adapter, Key, LoadRecord, Status
from bench.adapters.registry import redact_url
from bench.errors import UserError
from reference_impl.fixtures import manifest_hash, read_manifest
from reference_impl.schema import FIXTURE_TABLES, TABLES_BY_NAME

DEFAULT_STATE_DIR = Path("reports/loads")
DEFAULT_BATCH = 500
# Answers worth the same batch again after a pause; others stop the load.
RETRY_STATUSES = frozenset(
    {Status.rate_limited, Status.timeout, Status.transport_error, Status.server_error}
)
RETRIES = 5
BACKOFF_S = 0.5

Say = Callable[[str], None]
# table, rows of the table done, rows of the table in all
Progress = Callable[[str, int, int], None]


@dataclass
class LoadState:
    """What an interrupted load had finished: rows per table and the keys of loaded ids."""

    manifest_sha256: str
    done: dict[str, int] = field(default_factory=dict)
    keys: dict[str, dict[int, Key]] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadOutcome:
    """A finished load: its record, rows sent now, and whether it resumed an earlier one."""

    record: LoadRecord
    rows_now: int
    seconds: float
    resumed: bool
    on_platform: bool

    @property
    def rate(self) -> float:
        """Records per second of this session."""
        return self.rows_now / self.seconds if self.seconds > 0 else 0.0


def _slug(adapter: Adapter, target: str) -> str:
    digest = hashlib.sha256(redact_url(target).encode()).hexdigest()[:12]
    return f"{adapter.name.replace('+', '-')}-{digest}"


def state_paths(adapter: Adapter, target: str, state_dir: Path) -> tuple[Path, Path]:
    """The journal and the load record of ``target`` in ``state_dir``."""
    slug = _slug(adapter, target)
    return state_dir / f"{slug}.journal.jsonl", state_dir / f"{slug}.loaded.json"


def loaded_record(adapter: Adapter, target: str, state_dir: Path = DEFAULT_STATE_DIR
                  ) -> LoadRecord | None:
    """What the target holds: the record kept on the platform, else the one beside results."""
    record = adapter.loaded_profile()
    if record is not None:
        return record
    path = state_paths(adapter, target, state_dir)[1]
    if not path.is_file():
        return None
    return LoadRecord.from_json(json.loads(path.read_text()))


def _check_tables(adapter: Adapter) -> tuple[str, ...]:
    names = tuple(adapter.load_tables)
    if not names:
        raise UserError(
            f"the {adapter.name} adapter has no load hook (load_tables is empty): its platform "
            "is loaded another way; the reference CRM loads a profile itself when it starts "
            "(crmbench serve --data DIR; reference://embedded does so for every run)"
        )
    known = [t.name for t in FIXTURE_TABLES]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{adapter.name}.load_tables names no fixture table: {unknown}")
    for i, name in enumerate(names):
        later = [c.references for c in TABLES_BY_NAME[name].columns
                 if c.references in names[i + 1:]]
        if later:
            raise ValueError(f"{adapter.name}.load_tables: {name} comes before {later[0]}, "
                             "which it references")
    return names


def _read_journal(path: Path, wanted: str) -> LoadState | None:
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    if not lines:
        return None
    other = str(json.loads(lines[0]).get("manifest_sha256", "?"))
    if other != wanted:
        raise UserError(
            f"an interrupted load of another fixture profile ({other[:12]}) is recorded in "
            f"{path}; empty the target and delete that file, or load that profile to finish it"
        )
    state = LoadState(wanted)
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            # The last line of a load killed while writing it: that batch is sent again.
            break
        table = entry["table"]
        state.done[table] = state.done.get(table, 0) + int(entry["count"])
        state.keys.setdefault(table, {}).update({int(k): v for k, v in entry["keys"]})
    return state


def _decoded(table: str, rows: list[dict[str, Any]], state: LoadState) -> list[dict[str, Any]]:
    """JSON columns as values and references onto the keys of tables already loaded."""
    columns = TABLES_BY_NAME[table].columns
    json_cols = [c.name for c in columns if c.kind == "json"]
    refs = [(c.name, state.keys[c.references]) for c in columns
            if c.references is not None and c.references in state.keys]
    for row in rows:
        for name in json_cols:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        for name, mapping in refs:
            if row[name] is not None:
                row[name] = mapping.get(int(row[name]))
    return rows


def _batches(path: Path, size: int, skip: int) -> Iterator[list[dict[str, Any]]]:
    with pq.ParquetFile(path) as file:
        seen = 0
        for batch in file.iter_batches(batch_size=size):
            rows: list[dict[str, Any]] = batch.to_pylist()
            if seen + len(rows) <= skip:
                seen += len(rows)
                continue
            yield rows[max(skip - seen, 0):]
            seen += len(rows)


def _send(adapter: Adapter, table: str, rows: Sequence[Mapping[str, Any]], offset: int,
          sleep: Callable[[float], None]) -> list[Key | None]:
    """One batch, again after transient failures; anything else stops the load."""
    status = Status.error
    for attempt in range(RETRIES + 1):
        status, keys = adapter.load_rows(table, rows)
        if status is Status.ok:
            if len(keys) != len(rows):
                raise UserError(f"{adapter.name}.load_rows returned {len(keys)} keys for "
                                f"{len(rows)} rows of {table}")
            return keys
        if status not in RETRY_STATUSES or attempt == RETRIES:
            break
        sleep(BACKOFF_S * 2 ** attempt)
    raise UserError(
        f"loading {table} rows {offset + 1}-{offset + len(rows)} was answered "
        f"{status.value}; the load stopped there and resumes from that batch when run again"
    )


def load_fixtures(
    adapter: Adapter, fixtures: Path, *, target: str, state_dir: Path = DEFAULT_STATE_DIR,
    batch: int = DEFAULT_BATCH, say: Say | None = None, progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LoadOutcome:
    """Load (or finish loading) the profile in ``fixtures`` through the adapter's load hook."""
    tell = say or (lambda _msg: None)
    names = _check_tables(adapter)
    manifest = read_manifest(fixtures)
    wanted = manifest_hash(fixtures)
    journal, record_path = state_paths(adapter, target, state_dir)
    state = _read_journal(journal, wanted)
    resumed = state is not None
    if state is None:
        state = LoadState(wanted)
        state_dir.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps({"manifest_sha256": wanted, "adapter": adapter.name,
                                       "target": redact_url(target)}) + "\n")
    else:
        tell(f"resuming an interrupted load: {sum(state.done.values()):,} rows are in")
    start = time.perf_counter()
    sent = 0
    with journal.open("a") as log:
        for name in names:
            total = int(manifest["tables"][name]["rows"])
            done = state.done.get(name, 0)
            identity = TABLES_BY_NAME[name].has_identity
            ids = state.keys.setdefault(name, {})
            for rows in _batches(fixtures / manifest["tables"][name]["file"], batch, done):
                fixture_ids = [int(r["id"]) for r in rows] if identity else []
                keys = _send(adapter, name, _decoded(name, rows, state), done, sleep)
                pairs = {i: k for i, k in zip(fixture_ids, keys, strict=False) if k is not None}
                ids.update(pairs)
                log.write(json.dumps({"table": name, "count": len(rows),
                                      "keys": list(pairs.items())}) + "\n")
                log.flush()
                done += len(rows)
                sent += len(rows)
                if progress is not None:
                    progress(name, done, total)
            state.done[name] = done
    seconds = time.perf_counter() - start
    record = LoadRecord(
        manifest_sha256=wanted, profile=dict(manifest["profile"]),
        rows={n: state.done.get(n, 0) for n in names}, adapter=adapter.name,
        loaded_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), seconds=seconds,
    )
    on_platform = adapter.record_profile(record) is Status.ok
    record_path.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    journal.unlink()
    return LoadOutcome(record, sent, seconds, resumed, on_platform)


def ensure_loaded(
    adapter: Adapter, fixtures: Path, say: Say, *, target: str,
    state_dir: Path = DEFAULT_STATE_DIR, progress: Progress | None = None,
) -> LoadRecord | None:
    """Make an opened target hold the profile in ``fixtures`` if it is empty; say what it holds.

    Returns the load record, or None when the adapter has no load hook or the target holds
    data crmbench did not load (it is used as it is). A target holding another loaded
    profile is refused.
    """
    if not adapter.load_tables:
        return None
    wanted = manifest_hash(fixtures)
    record = loaded_record(adapter, target, state_dir)
    if record is not None and record.manifest_sha256 == wanted:
        return record
    journal = state_paths(adapter, target, state_dir)[0]
    if record is not None and not journal.is_file():
        raise UserError(
            f"{redact_url(target)} holds fixture profile {record.manifest_sha256[:12]}, not "
            f"{wanted[:12]} of {fixtures}; empty it first or run with that profile"
        )
    if not journal.is_file() and adapter.keyspace().customers > 0:
        say(f"{redact_url(target)} holds data crmbench did not load; it is used as it is")
        return None
    say(f"loading {fixtures} into {redact_url(target)}")
    outcome = load_fixtures(adapter, fixtures, target=target, state_dir=state_dir, say=say,
                            progress=progress)
    say(f"loaded {outcome.rows_now:,} records in {outcome.seconds:.1f} s "
        f"({outcome.rate:,.0f} records/s)")
    return outcome.record
