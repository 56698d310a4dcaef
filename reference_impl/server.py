"""Start the reference CRM: prepare the database (load fixtures), then serve HTTP.

Settings beyond the command line come from the environment: ``CRMBENCH_STREAM_RETENTION``
(change-stream messages kept, default 100,000), ``CRMBENCH_AGENT_SCORER`` (dotted path of
the lead-intake scorer, default the built-in rule-based one) and ``CRMBENCH_NATS_URL``
(consume customer-data events from the JetStream subject ``crmbench.events`` too).

``workers`` > 1 serves from that many processes on one listening socket, bound here and
shared; it needs PostgreSQL (see reference_impl.cluster for what the processes share). The
parent forwards SIGTERM and SIGINT to them; should one die, it stops the others and exits 1.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from reference_impl.db import open_database
from reference_impl.errors import UserError
from reference_impl.loader import LoadInfo, prepare

if TYPE_CHECKING:
    import uvicorn

    from reference_impl.access import TokenTable
    from reference_impl.cluster import ClusterConfig
    from reference_impl.slowdown import Slowdown

log = logging.getLogger("reference_impl.server")
STOP_TIMEOUT_S = 15.0

Say = Callable[[str], None]


def default_db_url(data: Path | None) -> str:
    folder = data if data is not None else Path(".")
    return f"sqlite:///{(folder / 'reference.sqlite3').resolve()}"


def resolve_token() -> tuple[str, bool]:
    """The API token from ``CRMBENCH_API_TOKEN``, or a new one; the flag tells which."""
    token = os.environ.get("CRMBENCH_API_TOKEN", "").strip()
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def load(db_url: str, data: Path | None, *, reset: bool, say: Say) -> LoadInfo:
    """Create the schema and load ``data`` into the database at ``db_url``."""

    async def run() -> LoadInfo:
        db = open_database(db_url)
        await db.connect()
        try:
            return await prepare(db, data, reset=reset, progress=say)
        finally:
            await db.close()

    return asyncio.run(run())


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def make_server(
    app: Any, host: str, port: int, *, log_level: str = "warning", loop: str = "uvloop",
    slowdown: Slowdown | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``build_app``'s app that ends open change streams on shutdown.

    Each response of known length leaves in one write, and the hot routes are answered
    without an ASGI cycle (reference_impl.http1); ``slowdown`` slows both paths alike.
    """
    import uvicorn

    from reference_impl.http1 import OneWriteProtocol, eager_protocol
    from reference_impl.slowdown import slowed, slowed_eager

    asgi, eager = app, app
    if slowdown is not None:
        asgi, eager = slowed(app, slowdown), slowed_eager(app, slowdown)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn waits for open responses before the lifespan shutdown; SSE never ends.
            app.state.hub.close_subscribers()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        asgi, host=host, port=port, log_level=log_level,
        access_log=False, loop=loop, lifespan="on",
        http=eager_protocol(eager) if hasattr(eager, "eager_handler") else OneWriteProtocol,
        timeout_graceful_shutdown=10,
        # Nothing reads the client's address or scheme: no X-Forwarded-* rewriting per request.
        proxy_headers=False,
        # Clients keep pooled connections idle for seconds between requests; closing them
        # after uvicorn's default 5 s races with a client sending on them (a reset).
        timeout_keep_alive=75,
    )
    return Server(config)


def check_workers(db_url: str, workers: int, *, test_clock: bool = False) -> None:
    """Refuse a process count the database (or the test clock) cannot serve correctly."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    if workers == 1:
        return
    if urlsplit(db_url).scheme.lower() not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise UserError(
            f"--workers {workers} needs PostgreSQL (--db postgresql://...): SQLite is served "
            "by one process only"
        )
    if test_clock:
        raise UserError("--test-clock runs in one process only: drop --workers or --test-clock")


def serve(
    db_url: str, host: str, port: int, token: str, *, log_level: str = "warning",
    nats_url: str | None = None, test_clock: bool = False, slowdown: Slowdown | None = None,
    workers: int = 1, tokens: TokenTable | None = None,
) -> None:
    """Serve the API with uvicorn (uvloop and httptools) until interrupted.

    ``tokens`` are the named tokens with roles (see reference_impl.access) beside ``token``.
    """
    check_workers(db_url, workers, test_clock=test_clock)
    if workers > 1:
        _supervise(db_url, host, port, token, workers, log_level=log_level,
                   nats_url=nats_url, slowdown=slowdown, tokens=tokens)
        return
    _serve_one(db_url, host, port, token, log_level=log_level, nats_url=nats_url,
               test_clock=test_clock, slowdown=slowdown, tokens=tokens)


def _serve_one(
    db_url: str, host: str, port: int, token: str, *, log_level: str, nats_url: str | None,
    test_clock: bool = False, slowdown: Slowdown | None, cluster: ClusterConfig | None = None,
    sock: socket.socket | None = None, tokens: TokenTable | None = None,
) -> bool:
    """Serve until stopped; False when the application failed to start."""
    from reference_impl.agents import load_scorer
    from reference_impl.api import build_app
    from reference_impl.stream import DEFAULT_RETENTION

    scorer_path = os.environ.get("CRMBENCH_AGENT_SCORER", "").strip()
    app = build_app(
        open_database(db_url), token=token,
        stream_retention=_env_int("CRMBENCH_STREAM_RETENTION", DEFAULT_RETENTION),
        scorer=load_scorer(scorer_path) if scorer_path else None,
        nats_url=nats_url or os.environ.get("CRMBENCH_NATS_URL", "").strip() or None,
        test_clock=test_clock, cluster=cluster, tokens=tokens,
    )
    # Everything loaded so far lives as long as the process: keep it out of the cycle
    # collector, and collect less often, so full collections do not stall requests.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    server = make_server(app, host, port, log_level=log_level, slowdown=slowdown)
    server.run(sockets=[sock] if sock is not None else None)
    return bool(server.started)


def _worker(
    db_url: str, host: str, port: int, token: str, log_level: str, nats_url: str | None,
    slowdown: Slowdown | None, cluster: ClusterConfig, sock: socket.socket,
    tokens: TokenTable | None = None,
) -> None:
    """One of several serving processes (spawned: a fresh interpreter, no inherited loop)."""
    if not _serve_one(db_url, host, port, token, log_level=log_level, nats_url=nats_url,
                      slowdown=slowdown, cluster=cluster, sock=sock, tokens=tokens):
        sys.exit(3)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _supervise(
    db_url: str, host: str, port: int, token: str, workers: int, *, log_level: str,
    nats_url: str | None, slowdown: Slowdown | None, tokens: TokenTable | None = None,
) -> None:
    """Start ``workers`` processes on one socket; return when all have stopped."""
    from reference_impl.cluster import ClusterConfig
    from reference_impl.store import now_iso

    sock = _bind(host, port)
    epoch = now_iso()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker, name=f"crmbench-worker-{i}",
            args=(db_url, host, port, token, log_level, nats_url, slowdown,
                  ClusterConfig(workers, i, epoch), sock, tokens),
        )
        for i in range(workers)
    ]
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        for proc in procs:
            proc.start()
        # The children hold their own copies; the parent no longer accepts on it.
        sock.close()
        while not stopping:
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.2)
            dead = [p for p in procs if p.exitcode is not None]
            if dead and not stopping:
                for proc in dead:
                    log.error("worker %s (pid %s) exited with code %s; stopping the others",
                              proc.name, proc.pid, proc.exitcode)
                failed = True
                break
    finally:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            if proc.pid is None:
                continue
            proc.join(STOP_TIMEOUT_S)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SystemExit(1)
