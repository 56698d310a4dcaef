"""Dabeicloud: no public API, so every dimension is not measurable and runs end with exit 4."""

from __future__ import annotations

import pytest

from bench.adapters.base import (
    CAPABILITY_IDS,
    ActivityInput,
    CustomerChanges,
    LeadInput,
    SearchQuery,
    Status,
)
from bench.adapters.registry import create_adapter
from bench.adapters.saas.dabei import DabeiAdapter
from bench.errors import TargetUnreachable, UserError


def test_everything_is_declared_not_measurable() -> None:
    caps = DabeiAdapter.capabilities
    assert set(caps) == set(CAPABILITY_IDS)
    assert {c.support for c in caps.values()} == {"not-measurable"}
    assert all(c.note == "no public API is documented" for c in caps.values())


def test_open_ends_the_run_with_a_clear_reason() -> None:
    adapter = create_adapter("dabei://")
    assert isinstance(adapter, DabeiAdapter)
    with pytest.raises(TargetUnreachable, match=r"^not measurable: Dabeicloud publishes no API") \
            as info:
        adapter.open()
    assert info.value.exit_code == 4
    with pytest.raises(TargetUnreachable):
        adapter.keyspace()
    assert adapter.platform_version() is None


def test_every_verb_is_unsupported() -> None:
    adapter = DabeiAdapter.from_url("dabei://tenant.example")
    assert [
        adapter.get_customer(1), adapter.customer_360(1),
        adapter.search_customers(SearchQuery(name_prefix="Ba")), adapter.list_leads(1),
        adapter.create_lead(LeadInput("A", "B", 1)),
        adapter.log_activity(ActivityInput(1, "call", "x")),
        adapter.update_opportunity_stage(1, "proposal"),
        adapter.update_customer(1, CustomerChanges()),
    ] == [Status.unsupported] * 8
    with pytest.raises(UserError, match="unknown parameter"):
        DabeiAdapter.from_url("dabei://?key=1")
