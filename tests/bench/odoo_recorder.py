"""Record the Odoo adapter's JSON-RPC exchanges with a live Odoo 17, and replay them.

Run against a freshly initialised database (``crm`` installed, no demo data)::

    CRMBENCH_ODOO_URL=odoo+http://127.0.0.1:8069/crmbench_odoo CRMBENCH_ODOO_LOGIN=admin \\
    CRMBENCH_ODOO_API_KEY=... .venv/bin/python -m tests.bench.odoo_recorder

It runs :func:`session` (a fixture load and every verb) and writes each request and the
server's answer to ``tests/bench/data/odoo/session.json``. The API key is replaced by a
placeholder and Odoo's tracebacks (``error.data.debug``) are dropped; nothing else is
changed. The CI tests replay the file through :class:`ReplayTransport`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.adapters.base import (
    ActivityInput,
    CustomerChanges,
    LeadInput,
    SearchQuery,
    Stage,
    Status,
)
from bench.adapters.odoo import KEY_ENV, LOGIN_ENV, OdooAdapter
from bench.errors import TargetUnreachable

CASSETTE = Path(__file__).parent / "data" / "odoo" / "session.json"
KEY_PLACEHOLDER = "<api-key>"
FIXTURE_CUSTOMERS, FIXTURE_SEED = 100, 5
WRONG_KEY = "not-a-valid-key"


def _scrub(value: Any, secret: str) -> Any:
    """The value with the secret replaced, and without Odoo's server tracebacks."""
    if isinstance(value, str):
        return KEY_PLACEHOLDER if secret and value == secret else value
    if isinstance(value, list):
        return [_scrub(v, secret) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, secret) for k, v in value.items() if k != "debug"}
    return value


def match_key(request: dict[str, Any]) -> str:
    """What identifies a request in a recording: everything but its id and volatile values."""
    params = dict(request.get("params") or {})
    args = list(params.get("args") or [])
    # The load record carries the wall-clock time of the load.
    if len(args) > 5 and args[3:5] == ["ir.config_parameter", "set_param"]:
        args[5] = args[5][:1]
    params["args"] = args
    return json.dumps(params, sort_keys=True)


class RecordingTransport(httpx.BaseTransport):
    """Passes requests to the live server and keeps each exchange, scrubbed."""

    def __init__(self, secret: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._secret = secret
        self._lock = threading.Lock()
        self.exchanges: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        body = response.read()
        exchange = {"request": _scrub(json.loads(request.content), self._secret),
                    "status": response.status_code,
                    "response": _scrub(json.loads(body), self._secret)}
        with self._lock:
            self.exchanges.append(exchange)
        return httpx.Response(response.status_code, content=body,
                              headers={"Content-Type": "application/json"})


class ReplayTransport(httpx.BaseTransport):
    """Answers each request with the recorded answer to the same request, in order."""

    def __init__(self, exchanges: list[dict[str, Any]]) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, deque[dict[str, Any]]] = {}
        for exchange in exchanges:
            self._answers.setdefault(match_key(exchange["request"]), deque()).append(exchange)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        key = match_key(_scrub(sent, ""))
        with self._lock:
            queue = self._answers.get(key)
            if not queue:
                raise AssertionError(f"no recorded answer for {key[:300]}")
            exchange = queue.popleft()
        answer = dict(exchange["response"], id=sent.get("id"))
        return httpx.Response(exchange["status"], json=answer)

    def unused(self) -> int:
        """How many recorded answers were not asked for."""
        return sum(len(q) for q in self._answers.values())


def session(make: Callable[[str], OdooAdapter], fixtures: Path, state_dir: Path
            ) -> dict[str, Any]:
    """Load a fixture profile, run every verb and the error cases; return the outcomes."""
    from bench.adapters.load import load_fixtures

    out: dict[str, Any] = {}
    try:
        make(WRONG_KEY).open()
        out["open_with_wrong_key"] = "opened"
    except TargetUnreachable:
        out["open_with_wrong_key"] = "TargetUnreachable"
    adapter = make("")
    adapter.open()
    try:
        out["version"] = adapter.platform_version()
        outcome = load_fixtures(adapter, fixtures, target="odoo+http://recorded/db",
                                state_dir=state_dir)
        out["loaded_rows"] = dict(outcome.record.rows)
        out["reloaded_customers"] = _reload(adapter, fixtures)
        keys = adapter.keyspace()
        out["keyspace"] = keys.counts()
        record = adapter.loaded_profile()
        out["loaded_profile_sha256"] = record.manifest_sha256 if record else None
        out["statuses"] = _verbs(adapter, keys.ids("customers")[0], keys.ids("reps")[0],
                                 keys.ids("opportunities")[0], keys.ids("regions")[0])
    finally:
        adapter.close()
    return out


def _reload(adapter: OdooAdapter, fixtures: Path) -> bool:
    """Whether sending a loaded customer batch again answers the same keys, creating none."""
    import pyarrow.parquet as pq

    keys = adapter.keyspace()
    # Rows already on Odoo are found by their marker and not written: references can be any.
    rows = [dict(r, region_id=keys.ids("regions")[0], owner_rep_id=keys.ids("reps")[0])
            for r in pq.read_table(fixtures / "customers.parquet").slice(0, 10).to_pylist()]
    first = adapter.load_rows("customers", rows)
    again = adapter.load_rows("customers", rows)
    return first[0] is Status.ok and first == again and len(set(first[1])) == 10


def _verbs(adapter: OdooAdapter, customer: Any, rep: Any, opportunity: Any, region: Any
           ) -> dict[str, str]:
    """Each verb on a known record and on a missing one, and two refused calls."""
    missing = 10**9
    calls: dict[str, Callable[[], Status]] = {
        "get_customer": lambda: adapter.get_customer(customer),
        "get_customer_missing": lambda: adapter.get_customer(missing),
        "customer_360": lambda: adapter.customer_360(customer),
        "customer_360_missing": lambda: adapter.customer_360(missing),
        "search_customers": lambda: adapter.search_customers(SearchQuery(name_prefix="a")),
        "search_customers_region": lambda: adapter.search_customers(
            SearchQuery(name_prefix="", region_id=region, limit=5)),
        "list_leads": lambda: adapter.list_leads(rep),
        "create_lead": lambda: adapter.create_lead(LeadInput(
            "Acme", "Jo Doe", email="jo@example.com", customer_id=customer)),
        "log_activity": lambda: adapter.log_activity(ActivityInput(customer, "call", "Hello")),
        "log_activity_missing": lambda: adapter.log_activity(
            ActivityInput(missing, "call", "Hello")),
        "update_customer": lambda: adapter.update_customer(
            customer, CustomerChanges(website="https://new.example")),
        "update_customer_missing": lambda: adapter.update_customer(
            missing, CustomerChanges(website="https://new.example")),
        "stage_missing": lambda: adapter.update_opportunity_stage(missing, "won"),
        "lost_missing": lambda: adapter.update_opportunity_stage(missing, "lost"),
        "unknown_method": lambda: adapter._kw("res.partner", "no_such_method", [[customer]])[0],
        "invalid_record": lambda: adapter._kw("res.partner", "create", [[{"name": False}]])[0],
    }
    out = {name: call().value for name, call in calls.items()}
    stages: tuple[Stage, ...] = (
        "open", "qualified", "lost", "proposal", "negotiation", "won", "lost", "open")
    for step, stage in enumerate(stages):
        out[f"stage_{step}_{stage}"] = adapter.update_opportunity_stage(opportunity, stage).value
    return out


def make_fixtures(out: Path) -> Path:
    """The small fixture profile of the recording (generated, deterministic)."""
    from bench.datagen.generate import generate

    generate(out, customers=FIXTURE_CUSTOMERS, seed=FIXTURE_SEED)
    return out


def main() -> None:
    url = os.environ["CRMBENCH_ODOO_URL"]
    key = os.environ[KEY_ENV]
    live = OdooAdapter.from_url(url)
    recorder = RecordingTransport(key)

    def make(wrong: str) -> OdooAdapter:
        return OdooAdapter(live.base_url, live.database, os.environ[LOGIN_ENV],
                           wrong or key, transport=recorder)

    with tempfile.TemporaryDirectory() as tmp:
        outcomes = session(make, make_fixtures(Path(tmp) / "fixtures"), Path(tmp) / "loads")
    CASSETTE.parent.mkdir(parents=True, exist_ok=True)
    CASSETTE.write_text(json.dumps({
        "recorded_from": f"odoo+http://{urlsplit(live.base_url).netloc}/{live.database}",
        "login": os.environ[LOGIN_ENV], "database": live.database,
        "fixtures": {"customers": FIXTURE_CUSTOMERS, "seed": FIXTURE_SEED},
        "outcomes": outcomes, "exchanges": recorder.exchanges}, indent=1) + "\n")
    print(json.dumps(outcomes, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
