"""``tryton://embedded``: a trytond started for one run from the installed packages.

Nothing is installed here: the ``tryton`` extra brings trytond and its modules. The first
start initialises a database with ``sale_opportunity`` and its dependencies (about a
minute on SQLite) into a cache folder, with a generated admin password kept beside it;
each run serves a copy of that database, so it starts empty and fast, and the harness
loads the fixtures through the adapter's load hook. ``?db=postgresql://USER@HOST:PORT/NAME``
is parsed but not served yet: start trytond on PostgreSQL and use ``tryton+http://``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from bench.adapters.embedded import free_port, stop_server, tail
from bench.adapters.tryton import PASSWORD_ENV, USER_ENV
from bench.errors import TargetUnreachable, UserError

Say = Callable[[str], None]

EMBEDDED_URL = "tryton://embedded"
MODULES = ("sale_opportunity",)
DATABASE = "crmbench"
START_TIMEOUT = 120.0
INIT_TIMEOUT = 900.0
ADMIN = "admin"


@dataclass(frozen=True)
class TrytonOptions:
    """What a ``tryton://embedded[?db=...]`` URL asks for."""

    db: str | None = None


def parse_tryton_embedded(url: str) -> TrytonOptions | None:
    """The options of an embedded Tryton URL, or None when ``url`` is not one."""
    base, _, query = url.partition("?")
    if base != EMBEDDED_URL:
        if base.startswith("tryton://"):
            raise UserError(f"tryton:// supports only {EMBEDDED_URL}[?db=postgresql://...]; "
                            "use tryton+http://HOST:PORT/DATABASE for a running trytond")
        return None
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"db"})
    if unknown:
        raise UserError(f"{url}: unknown option {', '.join(unknown)}; {EMBEDDED_URL} takes db")
    db = params["db"][-1] if "db" in params else None
    if db in (None, "", "sqlite"):
        return TrytonOptions()
    assert db is not None
    if not db.startswith(("postgresql://", "postgres://")):
        raise UserError(f"{url}: db must be sqlite or a postgresql:// URL")
    return TrytonOptions(db=db)


def _executable(name: str) -> str:
    """A trytond script of this Python environment (or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise UserError(f"{name} is not installed: pip install 'crmbench[tryton]'")
    return found


def _trytond_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trytond")
    except PackageNotFoundError:
        raise UserError("trytond is not installed: pip install 'crmbench[tryton]'") from None


def cache_root() -> Path:
    """Where initialised databases are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crmbench" / "tryton"


class EmbeddedTryton:
    """Run trytond on 127.0.0.1 for the duration of a ``with`` block."""

    def __init__(self, options: TrytonOptions | None = None, *, say: Say | None = None,
                 keep_log: Path | None = None, cache: Path | None = None) -> None:
        self.options = options or TrytonOptions()
        self._say: Say = say or (lambda _msg: None)
        self.keep_log = keep_log
        key = hashlib.sha256(f"{_trytond_version()} {' '.join(MODULES)}".encode())
        self.cache = (cache or cache_root()) / key.hexdigest()[:12]
        self.port: int | None = None
        # Each run serves its own copy under its own name: load records kept beside the
        # results, keyed by the target URL, never describe another run's database.
        self._database = DATABASE
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"EmbeddedTryton(cache={str(self.cache)!r}, port={self.port})"

    @property
    def database(self) -> str:
        return self._database

    @property
    def url(self) -> str:
        return f"tryton+http://127.0.0.1:{self.port}/{self.database}"

    @property
    def env(self) -> dict[str, str]:
        """The credentials the adapter reads (the generated admin password)."""
        return {USER_ENV: ADMIN, PASSWORD_ENV: self._password()}

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the embedded trytond is not running")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _password(self) -> str:
        path = self.cache / "admin.password"
        if not path.is_file():
            self.cache.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _config(self, folder: Path, *, port: int | None = None) -> Path:
        """A trytond configuration file for SQLite databases in ``folder``."""
        lines = ["[database]", "uri = sqlite://", f"path = {folder}"]
        if port is not None:
            lines += ["[web]", f"listen = 127.0.0.1:{port}"]
        path = folder / "trytond.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _admin(self, config: Path, log: Path) -> None:
        """Initialise the database: every module, then sale_opportunity and dependencies."""
        password_file = self.cache / "admin.password"
        self._password()
        env = {**os.environ, "TRYTONPASSFILE": str(password_file)}
        with open(log, "ab") as out:
            done = subprocess.run(
                [_executable("trytond-admin"), "-c", str(config), "-d", DATABASE,
                 "--all", "-u", *MODULES, "--activate-dependencies",
                 "--email", "admin@example.invalid"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=INIT_TIMEOUT, check=False)
        if done.returncode != 0:
            raise TargetUnreachable(f"trytond-admin could not initialise {DATABASE} "
                                    f"(exit {done.returncode}); its log ends with:\n{tail(log)}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Parallel runs must not initialise the same cache twice at once.
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def prepare(self) -> Path:
        """Initialise the cached SQLite database if needed; return its path."""
        with self._locked():
            done = self.cache / f"{DATABASE}.sqlite"
            if done.is_file():
                return done
            work = Path(tempfile.mkdtemp(prefix="crmbench-tryton-init-", dir=self.cache))
            try:
                self._say(f"initialising a Tryton database with {', '.join(MODULES)} "
                          "(one time, about a minute)")
                started = time.monotonic()
                (work / f"{DATABASE}.sqlite").touch()
                self._admin(self._config(work), self.cache / "init.log")
                self._say(f"initialised in {time.monotonic() - started:.0f} s")
                os.replace(work / f"{DATABASE}.sqlite", done)
                return done
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> EmbeddedTryton:
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _start(self) -> None:
        if self.options.db is not None:
            self._prepare_postgres()
        cached = self.prepare()
        self._tmp = Path(tempfile.mkdtemp(prefix="crmbench-tryton-"))
        self._database = f"{DATABASE}_{secrets.token_hex(4)}"
        shutil.copyfile(cached, self._tmp / f"{self._database}.sqlite")
        self.port = free_port()
        config = self._config(self._tmp, port=self.port)
        self._say(f"starting trytond on 127.0.0.1:{self.port}")
        with open(self._tmp / "server.log", "wb") as log:
            self._proc = subprocess.Popen(
                [_executable("trytond"), "-c", str(config), "-d", self.database],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _prepare_postgres(self) -> None:
        """PostgreSQL is not served yet: say how to measure Tryton on it."""
        raise UserError(f"{EMBEDDED_URL}?db=postgresql://... is not available yet: start "
                        "trytond on PostgreSQL yourself and use tryton+http://HOST:PORT/DB")

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._tmp is not None
        url = f"http://127.0.0.1:{self.port}/rpc/"
        call = {"id": 0, "method": "common.server.version", "params": []}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise TargetUnreachable(
                    f"trytond exited with code {self._proc.returncode} before answering; "
                    f"its log ends with:\n{tail(self._tmp / 'server.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.post(url, json=call, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TargetUnreachable(
                    f"trytond did not answer {url} within {START_TIMEOUT:.0f} s; its log "
                    f"ends with:\n{tail(self._tmp / 'server.log')}")
            time.sleep(0.2)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        tmp, self._tmp = self._tmp, None
        stop_server(proc, tmp, self.keep_log)
