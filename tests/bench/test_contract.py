"""The adapter contract: declarations, the error model, keyspaces, the neutral workload."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.adapters.base import (
    CAPABILITY_IDS,
    BaseAdapter,
    CustomerChanges,
    Keyspace,
    LeadInput,
    Status,
    declared,
    status_for_http,
    status_for_rpc,
)
from bench.adapters.load import _check_tables
from bench.adapters.noop import NoopAdapter
from bench.cli import app
from bench.datagen.schema_doc import fixture_schema_markdown
from bench.errors import UserError
from bench.scenarios.mixed import KeyChooser, MixedWorkload
from reference_impl.schema import FIXTURE_TABLES

ROOT = Path(__file__).resolve().parents[2]


def test_the_fixture_schema_document_matches_the_code() -> None:
    committed = (ROOT / "docs" / "fixtures.md").read_text()
    assert committed == fixture_schema_markdown(), (
        "docs/fixtures.md is stale: crmbench fixtures schema > docs/fixtures.md")


def test_fixture_tables_are_in_load_order() -> None:
    seen: set[str] = set()
    for table in FIXTURE_TABLES:
        assert all(c.references in seen for c in table.columns if c.references), table.name
        seen.add(table.name)


def test_declarations_mark_ids_supported_unsupported_or_not_measurable() -> None:
    caps = declared({"crud.mixed": "api"}, unsupported={"agent.steps": "no agents"},
                    not_measurable={"sla.field": "UI only"})
    assert set(caps) == set(CAPABILITY_IDS)
    assert (caps["crud.mixed"].support, caps["agent.steps"].support,
            caps["sla.field"].support, caps["cdp.audit"].support) == (
        "supported", "unsupported", "not-measurable", "unknown")
    assert caps["agent.steps"].note == "no agents"
    with pytest.raises(ValueError, match="declared twice"):
        declared({"crud.mixed": "a"}, unsupported={"crud.mixed": "b"})
    with pytest.raises(ValueError, match="unknown capability"):
        declared(unsupported={"nope": "x"})


@pytest.mark.parametrize(("code", "status"), [
    (200, Status.ok), (204, Status.ok), (404, Status.not_found), (429, Status.rate_limited),
    (400, Status.rejected), (403, Status.rejected), (408, Status.timeout),
    (504, Status.timeout), (501, Status.unsupported), (500, Status.server_error),
    (503, Status.server_error),
])
def test_http_codes_map_to_distinct_statuses(code: int, status: Status) -> None:
    assert status_for_http(code) is status


@pytest.mark.parametrize(("body", "kw", "status"), [
    ({"jsonrpc": "2.0", "id": 1, "result": [{"id": "a"}]}, {"one": True}, Status.ok),
    ({"jsonrpc": "2.0", "id": 1, "result": []}, {"one": True}, Status.not_found),
    ({"jsonrpc": "2.0", "id": 1, "result": None}, {"one": True}, Status.not_found),
    ({"jsonrpc": "2.0", "id": 1, "result": []}, {}, Status.ok),
    ({"error": {"code": -32601, "message": "x"}}, {}, Status.unsupported),
    ({"error": {"code": -32602, "message": "x"}}, {}, Status.rejected),
    ({"error": {"code": -32603, "message": "x"}}, {}, Status.server_error),
    ({"error": {"code": -32050, "message": "x"}}, {}, Status.server_error),
    ({"error": {"code": 2, "message": "x"}}, {}, Status.rejected),
    ({"error": {"code": 429}}, {"codes": {429: Status.rate_limited}}, Status.rate_limited),
    ({"error": "text"}, {}, Status.rejected),
    ({"jsonrpc": "2.0", "id": 1}, {}, Status.error),
    ("not json-rpc", {}, Status.error),
    ({"result": 1}, {"http_status": 502}, Status.server_error),
])
def test_rpc_bodies_map_to_distinct_statuses(
    body: object, kw: dict[str, object], status: Status
) -> None:
    assert status_for_rpc(body, **kw) is status  # type: ignore[arg-type]


def test_the_base_class_answers_unsupported_for_every_verb() -> None:
    class Minimal(BaseAdapter):
        name: ClassVar[str] = "minimal"
        platform: ClassVar[str] = "minimal"

    adapter = Minimal()
    assert adapter.get_customer("k") is Status.unsupported
    assert adapter.update_customer(1, CustomerChanges(website="x")) is Status.unsupported
    assert adapter.load_rows("customers", [{}]) == (Status.unsupported, [])
    assert adapter.credential_report() is None and adapter.target_facts() == {}
    with pytest.raises(UserError, match="no load hook"):
        _check_tables(adapter)


def test_keyspaces_travel_as_counts_or_keys() -> None:
    plain = Keyspace(5, 7, 2, 3)
    assert plain.to_json() == {"customers": 5, "opportunities": 7, "reps": 2, "regions": 3,
                               "products": 0, "leads": 0}
    assert list(plain.ids("customers")) == [1, 2, 3, 4, 5]
    assert Keyspace.from_json(plain.to_json()) == plain
    opaque = Keyspace.from_keys(customers=["a", "b"], reps=["r"], regions=[1, 2])
    data = opaque.to_json()
    assert data["customers"] == 2 and data["keys"]["customers"] == ["a", "b"]
    back = Keyspace.from_json(data)
    assert list(back.ids("customers")) == ["a", "b"] and list(back.ids("products")) == []
    assert back.counts() == opaque.counts()
    with pytest.raises(ValueError, match="do not match"):
        Keyspace.from_json({"customers": 3, "keys": {"customers": ["a"]}})


def test_key_chooser_draws_positions_the_same_way_for_any_keys() -> None:
    numbers = KeyChooser(50, seed=9)
    keys = [f"k{i}" for i in range(1, 51)]
    names = KeyChooser(keys, seed=9)
    drawn = [numbers() for _ in range(2000)]
    assert [names() for _ in range(2000)] == [f"k{i}" for i in drawn]
    # Zipf on positions: a few keys get most draws, and they are spread over the range.
    counts = np.bincount(np.array(drawn, dtype=np.int64))
    assert counts.max() > 10 * np.median(counts[1:])
    with pytest.raises(ValueError, match="empty"):
        KeyChooser([], seed=1)()


def test_the_workload_uses_keys_and_allows_no_products() -> None:
    keyspace = Keyspace.from_keys(customers=["c1", "c2"], opportunities=["o1"],
                                  reps=["r1"], regions=["eu"])
    work = MixedWorkload(NoopAdapter(), keyspace, {"create_lead": 1, "get_customer": 1,
                                                   "update_customer": 1,
                                                   "update_opportunity_stage": 1}, seed=3)
    seen: dict[str, list[object]] = {}
    for _ in range(200):
        op, _fn, args = work.next()
        seen.setdefault(op, []).append(args[0])
    assert set(seen["get_customer"]) <= {"c1", "c2"}
    assert set(seen["update_opportunity_stage"]) == {"o1"}
    leads = [a for a in seen["create_lead"] if isinstance(a, LeadInput)]
    assert leads and all(lead.product_interest == [] and lead.region_id == "eu"
                         for lead in leads)
    with pytest.raises(ValueError, match="update_opportunity_stage needs opportunities"):
        MixedWorkload(NoopAdapter(), Keyspace.from_keys(customers=["c"]),
                      {"update_opportunity_stage": 1}, seed=1)


def test_adapters_lists_one_line_per_adapter() -> None:
    result = CliRunner().invoke(app, ["adapters"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.startswith("│")]
    assert len(lines) == len({line.split("│")[1].strip() for line in lines}) >= 8
    assert any(line.split("│")[1].strip() == "noop" and "26" in line for line in lines)
    verbose = CliRunner().invoke(app, ["adapters", "--verbose"], env={"COLUMNS": "200"})
    assert "crud.mixed" in verbose.output
