"""Start the reference CRM: prepare the database (load fixtures), then serve HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from reference_impl.db import open_database
from reference_impl.loader import LoadInfo, prepare

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


def serve(db_url: str, host: str, port: int, token: str, *, log_level: str = "warning") -> None:
    """Serve the API with uvicorn (uvloop and httptools) until interrupted."""
    import uvicorn

    from reference_impl.api import build_app

    app = build_app(open_database(db_url), token=token)
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False,
        loop="uvloop", http="httptools", lifespan="on",
    )
