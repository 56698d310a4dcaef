"""Start the reference CRM: prepare the database (load fixtures), then serve HTTP.

Settings beyond the command line come from the environment: ``CRMBENCH_STREAM_RETENTION``
(change-stream messages kept, default 100,000), ``CRMBENCH_AGENT_SCORER`` (dotted path of
the lead-intake scorer, default the built-in rule-based one) and ``CRMBENCH_NATS_URL``
(consume customer-data events from the JetStream subject ``crmbench.events`` too).
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError
from reference_impl.db import open_database
from reference_impl.loader import LoadInfo, prepare

if TYPE_CHECKING:
    import uvicorn

    from reference_impl.slowdown import Slowdown

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
    asgi: Any = None,
) -> uvicorn.Server:
    """A uvicorn server for ``build_app``'s app (or ``asgi`` wrapping it) that ends open
    change streams on shutdown."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # uvicorn waits for open responses before the lifespan shutdown; SSE never ends.
            app.state.hub.close_subscribers()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app if asgi is None else asgi, host=host, port=port, log_level=log_level,
        access_log=False, loop=loop, http="httptools", lifespan="on", timeout_graceful_shutdown=10,
        # Nothing reads the client's address or scheme: no X-Forwarded-* rewriting per request.
        proxy_headers=False,
        # Clients keep pooled connections idle for seconds between requests; closing them
        # after uvicorn's default 5 s races with a client sending on them (a reset).
        timeout_keep_alive=75,
    )
    return Server(config)


def serve(
    db_url: str, host: str, port: int, token: str, *, log_level: str = "warning",
    nats_url: str | None = None, test_clock: bool = False, slowdown: Slowdown | None = None,
) -> None:
    """Serve the API with uvicorn (uvloop and httptools) until interrupted."""
    from reference_impl.agents import load_scorer
    from reference_impl.api import build_app
    from reference_impl.slowdown import slowed
    from reference_impl.stream import DEFAULT_RETENTION

    scorer_path = os.environ.get("CRMBENCH_AGENT_SCORER", "").strip()
    app = build_app(
        open_database(db_url), token=token,
        stream_retention=_env_int("CRMBENCH_STREAM_RETENTION", DEFAULT_RETENTION),
        scorer=load_scorer(scorer_path) if scorer_path else None,
        nats_url=nats_url or os.environ.get("CRMBENCH_NATS_URL", "").strip() or None,
        test_clock=test_clock,
    )
    # Everything loaded so far lives as long as the process: keep it out of the cycle
    # collector, and collect less often, so full collections do not stall requests.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    asgi = slowed(app, slowdown) if slowdown is not None else None
    make_server(app, host, port, log_level=log_level, asgi=asgi).run()
