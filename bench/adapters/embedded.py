"""``reference://embedded``: a reference CRM started for one run, from a pristine database copy.

The loaded SQLite database is cached beside the fixtures (``reference.sqlite3``) and copied
for each run, so every run starts from the same state without reloading.

The URL may name another build and a calibration slowdown (for ``crmbench ab``):
``reference://embedded?source=DIR`` serves the reference CRM of the checkout in DIR (its
own database cache, loaded by its own code), ``slowdown_ms`` and ``slowdown_pct`` inject
CPU work per request and ``delay_ms`` a wait (``reference_impl.slowdown``),
``db=postgresql://...`` serves from that database instead (the fixtures are loaded into it
when it is empty; runs are not reset between them) and ``workers=N`` serves from N
processes, which needs ``db``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bench.errors import DatabaseError, TargetUnreachable, UserError
from bench.measure.cpus import spawning_on

Say = Callable[[str], None]

CACHE_NAME = "reference.sqlite3"
DEFAULT_CUSTOMERS = 100_000
DEFAULT_SEED = 42
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


EMBEDDED_URL = "reference://embedded"
URL_OPTIONS = ("source", "slowdown_ms", "slowdown_pct", "delay_ms", "db", "workers",
               "durability")
# What an acknowledged write survives: a crash of the service process, or power loss.
DURABILITY = {"crash": "normal", "power": "full"}


@dataclass(frozen=True)
class EmbeddedOptions:
    """What a ``reference://embedded?...`` URL asks for beyond the default build."""

    source: Path | None = None
    slowdown_ms: float = 0.0
    slowdown_pct: float = 0.0
    delay_ms: float = 0.0
    db: str | None = None
    workers: int = 1
    durability: str = "crash"


def parse_embedded(url: str) -> EmbeddedOptions | None:
    """The options of an embedded-target URL, or None when ``url`` is not one."""
    base, _, query = url.partition("?")
    if base != EMBEDDED_URL:
        return None
    params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(params) - set(URL_OPTIONS))
    if unknown:
        raise UserError(f"{url}: unknown option {', '.join(unknown)}; "
                        f"{EMBEDDED_URL} takes {', '.join(URL_OPTIONS)}")
    one = {k: v[-1] for k, v in params.items()}
    source = None
    if "source" in one:
        source = Path(one["source"]).expanduser().resolve()
        if not (source / "reference_impl").is_dir() or not (source / "bench").is_dir():
            raise UserError(f"{url}: {source} is not a crmbench checkout "
                            "(no reference_impl/ and bench/ in it)")
    numbers = {}
    for key in ("slowdown_ms", "slowdown_pct", "delay_ms"):
        if key in one:
            try:
                numbers[key] = float(one[key])
            except ValueError:
                raise UserError(f"{url}: {key} must be a number, not {one[key]!r}") from None
            if not 0 <= numbers[key] <= 1000:
                raise UserError(f"{url}: {key} must be between 0 and 1000")
    db = one.get("db") or None
    if db is not None and not db.startswith(("postgresql://", "postgres://")):
        raise UserError(f"{url}: db must be a postgresql:// URL")
    workers = 1
    if "workers" in one:
        if not one["workers"].isdigit() or not 1 <= int(one["workers"]) <= 64:
            raise UserError(f"{url}: workers must be a whole number from 1 to 64")
        workers = int(one["workers"])
    if workers > 1 and db is None:
        raise UserError(f"{url}: workers={workers} needs PostgreSQL: add db=postgresql://...")
    durability = one.get("durability", "crash")
    if durability not in DURABILITY:
        raise UserError(f"{url}: durability must be crash (SQLite synchronous=NORMAL, the "
                        "default) or power (synchronous=FULL)")
    if durability == "power" and db is not None:
        raise UserError(f"{url}: durability applies to SQLite; PostgreSQL's own settings "
                        "(fsync, synchronous_commit) decide it")
    return EmbeddedOptions(source=source, db=db, workers=workers, durability=durability,
                           **numbers)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Parallel runs on one fixture folder must not generate or load it twice at once.
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sqlite_files(db: Path) -> tuple[Path, Path, Path]:
    return db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")


def _checkpointed(db: Path) -> None:
    """Fold any pending write-ahead log into ``db`` so the file alone holds everything."""
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        conn = sqlite3.connect(db)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def stop_server(proc: subprocess.Popen[bytes] | None, tmp: Path | None,
                keep_log: Path | None) -> None:
    """Stop a local server process (TERM, then KILL), keep its log if asked, drop ``tmp``."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if tmp is not None:
        log = tmp / "server.log"
        if keep_log is not None and log.exists():
            # The server's own log explains any error the run recorded.
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, keep_log)
        shutil.rmtree(tmp, ignore_errors=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class EmbeddedReference:
    """Run a reference CRM subprocess on 127.0.0.1 for the duration of a ``with`` block.

    The per-run database goes to a temporary folder, or to ``db_path``, which is kept.
    """

    def __init__(
        self,
        fixtures: Path,
        *,
        db_path: Path | None = None,
        port: int | None = None,
        say: Say | None = None,
        keep_log: Path | None = None,
        test_clock: bool = False,
        options: EmbeddedOptions | None = None,
        cpus: Sequence[int] | None = None,
    ) -> None:
        self.fixtures = Path(fixtures)
        # The cores the service runs on (all of this process's when None).
        self.cpus = tuple(cpus) if cpus else None
        self.options = options or EmbeddedOptions()
        self.db_path = db_path
        self.port = port
        self.keep_log = keep_log
        self.test_clock = test_clock
        self._say: Say = say or (lambda _msg: None)
        self.token = secrets.token_urlsafe(24)
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"EmbeddedReference(fixtures={str(self.fixtures)!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"reference+http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the embedded reference CRM is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the embedded reference CRM is not running")
        return self._tmp / "server.log"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _source_env(self) -> tuple[dict[str, str], str | None]:
        env = {**os.environ, "CRMBENCH_API_TOKEN": self.token}
        source = self.options.source
        if source is None:
            return env, None
        env["PYTHONPATH"] = os.pathsep.join(
            [str(source), *filter(None, [os.environ.get("PYTHONPATH")])])
        return env, str(source)

    def _cache_path(self) -> Path:
        source = self.options.source
        if source is None:
            return self.fixtures / CACHE_NAME
        # Another build may store another schema: its cache is its own, keyed by its code.
        digest = hashlib.sha256()
        for part in ("schema.py", "loader.py", "db.py"):
            with contextlib.suppress(OSError):
                digest.update((source / "reference_impl" / part).read_bytes())
        return self.fixtures / f"reference-{digest.hexdigest()[:12]}.sqlite3"

    def _load_with_source(self, db_url: str) -> None:
        env, cwd = self._source_env()
        self._say(f"loading {self.fixtures} with the reference CRM of {cwd}")
        done = subprocess.run(
            [sys.executable, "-m", "bench", "serve", "--db", db_url,
             "--data", str(self.fixtures.resolve()), "--load-only"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            check=False,
        )
        if done.returncode != 0:
            raise TargetUnreachable(
                f"the reference CRM of {cwd} could not load {self.fixtures} "
                f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")

    def prepare(self) -> Path:
        """Generate the fixtures and load the cached database if needed; return its path."""
        from reference_impl.server import load

        cache = self._cache_path()
        with _locked(self.fixtures):
            if not (self.fixtures / "manifest.json").is_file():
                from bench.datagen.generate import generate

                self._say(
                    f"generating {DEFAULT_CUSTOMERS:,} customers into {self.fixtures} (one time)"
                )
                generate(self.fixtures, customers=DEFAULT_CUSTOMERS, seed=DEFAULT_SEED)
            if self.options.db is not None:
                # The database outlives the run: loaded once, when it is still empty.
                if self.options.source is not None:
                    self._load_with_source(self.options.db)
                else:
                    load(self.options.db, self.fixtures, reset=False, say=self._say)
                return cache
            if self.options.source is not None:
                self._load_with_source(f"sqlite:///{cache.resolve()}")
                _checkpointed(cache)
                return cache
            url = f"sqlite:///{cache.resolve()}"
            try:
                info = load(url, self.fixtures, reset=False, say=self._say)
            except DatabaseError:
                # The cache is ours: if it holds another profile, rebuild it rather than refuse.
                self._say(f"{cache} holds other fixture data or an older schema; loading it anew")
                for path in _sqlite_files(cache):
                    path.unlink(missing_ok=True)
                info = load(url, self.fixtures, reset=False, say=self._say)
            if info.loaded_now:
                self._say(f"cached the loaded database at {cache} in {info.seconds:.1f} s")
            _checkpointed(cache)
        return cache

    def __enter__(self) -> EmbeddedReference:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _start(self) -> None:
        cache = self.prepare()
        self._tmp = Path(tempfile.mkdtemp(prefix="crmbench-reference-"))
        db_url = self.options.db
        if db_url is None:
            work = self.db_path or self._tmp / "run.sqlite3"
            work.parent.mkdir(parents=True, exist_ok=True)
            for stale in _sqlite_files(work):
                stale.unlink(missing_ok=True)
            shutil.copyfile(cache, work)
            db_url = f"sqlite:///{work.resolve()}"
            if self.options.durability != "crash":
                db_url += f"?synchronous={DURABILITY[self.options.durability]}"
        if self.port is None:
            self.port = free_port()
        self._say(f"starting the reference CRM on 127.0.0.1:{self.port}")
        env, cwd = self._source_env()
        slow: list[str] = []
        if self.options.slowdown_ms or self.options.slowdown_pct or self.options.delay_ms:
            env["CRMBENCH_TEST_MODE"] = "1"
            slow = ["--slowdown-ms", str(self.options.slowdown_ms),
                    "--slowdown-pct", str(self.options.slowdown_pct),
                    "--delay-ms", str(self.options.delay_ms)]
        with open(self.log_path, "wb") as log, spawning_on(self.cpus):
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "bench", "serve", "--db", db_url,
                 "--host", "127.0.0.1", "--port", str(self.port),
                 *(["--test-clock"] if self.test_clock else []), *slow,
                 *(["--workers", str(self.options.workers)] if self.options.workers > 1 else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        health = f"http://127.0.0.1:{self.port}/health"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise TargetUnreachable(
                    f"the embedded reference CRM exited with code {self._proc.returncode} "
                    f"before answering; its log ends with:\n{tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(health, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise TargetUnreachable(
                    f"the embedded reference CRM did not answer {health} within "
                    f"{START_TIMEOUT:.0f} s; its log ends with:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        tmp, self._tmp = self._tmp, None
        stop_server(proc, tmp, self.keep_log)
