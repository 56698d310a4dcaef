"""Micro benchmarks of the reference CRM's hot paths (pytest-benchmark, not run by `pytest`).

Run: ``python -m pytest benchmarks -p benchmark --benchmark-autosave``; compare with a
saved run: ``--benchmark-compare --benchmark-compare-fail=median:10%``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import msgspec
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.conftest import CUSTOMERS
from reference_impl import cdp
from reference_impl import models as m
from reference_impl.agents import LeadIntakeConfig, Qualify, RuleScorer, RunContext
from reference_impl.api import decode_bytes
from reference_impl.db import Database
from reference_impl.store import Store

CUSTOMER_BODY = msgspec.json.encode({
    "name": "Acme Machining", "industry": "manufacturing", "region_id": 3, "tier": "key",
    "owner_rep_id": 12, "employees": 420, "annual_revenue": 12_500_000.0,
    "consent_profiling": True, "tags": ["cnc", "automotive"],
    "contacts": [{"first_name": "Ada", "last_name": "Lee", "email": "ada@acme.example"}],
})


def test_request_decode(benchmark: BenchmarkFixture) -> None:
    """Decode and validate a customer-create body, as the API does for every write."""
    body = benchmark(decode_bytes, CUSTOMER_BODY, m.CustomerCreate)
    assert body.name == "Acme Machining"


def test_response_encode(benchmark: BenchmarkFixture, db: Database,
                         loop: asyncio.AbstractEventLoop) -> None:
    """Encode a customer-360 document, the largest response of the mixed workload."""
    row = loop.run_until_complete(Store(db).customer_360(1))
    assert benchmark(msgspec.json.encode, row).startswith(b"{")


def test_customer_360_query(benchmark: BenchmarkFixture, db: Database,
                            loop: asyncio.AbstractEventLoop) -> None:
    """The customer-360 read: profile, contacts, orders with lines, opportunities, activities."""
    store = Store(db)
    ids = itertools.cycle(range(1, CUSTOMERS + 1))
    doc = benchmark(lambda: loop.run_until_complete(store.customer_360(next(ids))))
    assert "contacts" in doc


def test_profile_recompute_per_event(benchmark: BenchmarkFixture) -> None:
    """Apply one behavioural event to a customer profile and recompute its tags."""
    profile = cdp.Profile.from_row(None)
    ids = itertools.count(1)
    now = time.time()
    types = itertools.cycle(("pricing_view", "page_view", "email_open", "support_call"))

    def apply() -> dict[str, float]:
        return profile.apply(next(ids), next(types), "2026-11-01T10:00:00Z", now - 3600,
                             {"discount": True}, True, now)

    tags = benchmark(apply)
    assert set(tags) == {"price_sensitivity", "engagement", "churn_risk"}


def test_agent_qualify_step(benchmark: BenchmarkFixture, db: Database,
                            loop: asyncio.AbstractEventLoop) -> None:
    """The lead-intake agent's first step: read the linked customer and score the lead."""
    lead: dict[str, Any] | None = loop.run_until_complete(db.fetch_one(
        "SELECT * FROM leads WHERE customer_id IS NOT NULL ORDER BY id LIMIT 1"))
    assert lead is not None
    step = Qualify()

    def run() -> Any:
        ctx = RunContext(db=db, run_id=0, lead=dict(lead), quantity=None,
                         config=LeadIntakeConfig(), scorer=RuleScorer())
        return loop.run_until_complete(step.run(ctx))

    result = benchmark(run)
    assert 0.0 <= result.confidence <= 1.0
