"""Adapters: the no-op adapter, the registry, and the reference adapter against a served CRM."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.adapters.base import (
    ActivityInput,
    Adapter,
    CustomerChanges,
    Keyspace,
    LeadInput,
    SearchQuery,
    Status,
)
from bench.adapters.embedded import EmbeddedReference, free_port
from bench.adapters.noop import NoopAdapter
from bench.adapters.reference import ReferenceAdapter
from bench.adapters.registry import (
    adapter_classes,
    create_adapter,
    describe_adapters,
    installed_schemes,
    load_adapter,
    redact_url,
    scheme_of,
)
from bench.errors import TargetUnreachable, UserError

LEAD = LeadInput(company_name="Acme GmbH", contact_name="Jo Doe", region_id=1,
                 email="jo@acme.test", product_interest=[1, 2])
ACTIVITY = ActivityInput(customer_id=1, type="call", subject="follow-up", rep_id=1)


def _every_verb(adapter: Adapter) -> list[Status]:
    return [
        adapter.get_customer(1),
        adapter.customer_360(1),
        adapter.search_customers(SearchQuery(name_prefix="a", limit=5)),
        adapter.search_customers(SearchQuery(region_id=1, tier="normal", limit=5)),
        adapter.list_leads(1, limit=10),
        adapter.create_lead(LEAD),
        adapter.log_activity(ACTIVITY),
        adapter.update_opportunity_stage(1, "proposal"),
        adapter.update_customer(1, CustomerChanges(website="https://acme.test", employees=7)),
    ]


# ------------------------------------------------------------------ noop


def test_noop_parses_delay_and_keyspace() -> None:
    adapter = NoopAdapter.from_url("noop://?delay_ms=1.5&customers=10")
    assert adapter.delay_ms == 1.5
    assert adapter.keyspace() == Keyspace(10, 200_000, 500, 30, 2_000)
    default = NoopAdapter.from_url("noop://")
    assert default.delay_ms == 0
    assert default.keyspace().customers == 100_000
    assert default.platform_version() == "noop"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("noop://?delay_ms=-1", "delay_ms must be a finite number >= 0"),
        ("noop://?delay_ms=fast", "delay_ms must be a number"),
        ("noop://?delay_ms=nan", "delay_ms must be a finite number"),
        ("noop://?delay_ms=", "delay_ms must be a number"),
        ("noop://?delay=1", "unknown parameter 'delay'"),
        ("noop://?delay_ms=1&delay_ms=2", "given more than once"),
        ("noop://?customers=0", "customers must be at least 1"),
        ("noop://?customers=1.5", "customers must be a whole number"),
        ("noop://somehost", "takes no host or path"),
    ],
)
def test_noop_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        NoopAdapter.from_url(url)


def test_noop_verbs_succeed_after_the_delay() -> None:
    adapter = NoopAdapter.from_url("noop://?delay_ms=2")
    assert isinstance(adapter, Adapter)
    adapter.open()
    start = time.perf_counter()
    statuses = _every_verb(adapter)
    elapsed = time.perf_counter() - start
    adapter.close()
    assert statuses == [Status.ok] * len(statuses)
    assert elapsed >= len(statuses) * 0.002
    assert all(c.support == "unsupported" for c in NoopAdapter.capabilities.values())


# ------------------------------------------------------------------ registry


def test_registry_lists_and_creates_adapters() -> None:
    assert {"noop", "reference", "reference+http"} <= set(installed_schemes())
    classes = adapter_classes()
    assert classes["noop"] is NoopAdapter
    assert classes["reference"] is classes["reference+http"] is ReferenceAdapter
    assert scheme_of("reference://embedded") == "reference"
    assert scheme_of("Reference+HTTP://h:1") == "reference+http"
    assert isinstance(create_adapter("noop://?delay_ms=0"), NoopAdapter)
    described = {d["scheme"]: d for d in describe_adapters()}
    assert described["reference+http"]["class"] == "bench.adapters.reference:ReferenceAdapter"
    assert described["reference+http"]["capabilities"]["crud.mixed"]["support"] == "supported"
    assert "error" not in described["noop"]


def test_unknown_scheme_lists_the_installed_ones() -> None:
    with pytest.raises(UserError, match=r"no adapter for URL scheme 'salesfarce'.*noop"):
        create_adapter("salesfarce://x")
    with pytest.raises(UserError, match="not a URL"):
        scheme_of("just-a-name")
    with pytest.raises(UserError, match="no adapter"):
        load_adapter("nope")


def test_redact_url_hides_secrets() -> None:
    assert redact_url("reference+http://bob:hunter2@h:8000/p") == "reference+http://h:8000/p"
    redacted = redact_url(
        "x://h/p?token=abc&api_key=k1&region=eu&X-Amz-Signature=s&sig=z&delay_ms=1&Password=pw"
    )
    assert redacted == "x://h/p?region=eu&delay_ms=1"
    assert redact_url("noop://?delay_ms=1") == "noop://?delay_ms=1"


@pytest.mark.parametrize(
    "url", ["reference+http://user:s3cr3t@127.0.0.1:8000", "reference+http://s3cr3t@127.0.0.1"]
)
def test_reference_refuses_credentials_in_the_url(url: str) -> None:
    with pytest.raises(UserError, match="CRMBENCH_API_TOKEN") as info:
        ReferenceAdapter.from_url(url)
    assert "s3cr3t" not in str(info.value)


def test_reference_url_forms() -> None:
    adapter = ReferenceAdapter.from_url("reference+http://127.0.0.1:9001/api/")
    assert (adapter.host, adapter.port, adapter.prefix) == ("127.0.0.1", 9001, "/api")
    assert ReferenceAdapter.from_url("reference://localhost").port == 8000
    with pytest.raises(UserError, match="EmbeddedReference"):
        ReferenceAdapter.from_url("reference://embedded")
    with pytest.raises(UserError, match="no query"):
        ReferenceAdapter.from_url("reference+http://h:1?token=x")


def test_unused_port_is_unreachable_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMBENCH_API_TOKEN", "whatever")
    adapter = ReferenceAdapter.from_url(f"reference+http://127.0.0.1:{free_port()}")
    start = time.perf_counter()
    with pytest.raises(TargetUnreachable, match=r"127\.0\.0\.1:"):
        adapter.open()
    adapter.close()
    assert time.perf_counter() - start < 5


# ------------------------------------------------------------------ against a served CRM


@pytest.fixture(scope="module")
def fixture_copy(small_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small fixtures, copied so the cached database is made here, not in the shared set."""
    out = tmp_path_factory.mktemp("adapters") / "small"
    shutil.copytree(small_fixtures, out)
    return out


@pytest.fixture(scope="module")
def served(fixture_copy: Path) -> Iterator[EmbeddedReference]:
    with EmbeddedReference(fixture_copy) as server:
        yield server


@pytest.fixture()
def adapter(served: EmbeddedReference, monkeypatch: pytest.MonkeyPatch) -> Iterator[Adapter]:
    monkeypatch.setenv("CRMBENCH_API_TOKEN", served.token)
    adapter = create_adapter(served.url)
    adapter.open()
    yield adapter
    adapter.close()


def test_every_verb_against_the_reference(adapter: Adapter) -> None:
    assert isinstance(adapter, ReferenceAdapter)
    assert _every_verb(adapter) == [Status.ok] * 9


def test_expected_refusals_are_statuses(adapter: Adapter) -> None:
    assert adapter.get_customer(10**9) == Status.not_found
    assert adapter.customer_360(10**9) == Status.not_found
    assert adapter.update_opportunity_stage(10**9, "won") == Status.not_found
    assert adapter.update_customer(1, CustomerChanges(employees=-1)) == Status.rejected
    assert adapter.create_lead(LeadInput("A", "B", region_id=10**6)) == Status.rejected


def test_keyspace_and_version(adapter: Adapter, fixture_copy: Path) -> None:
    tables = json.loads((fixture_copy / "manifest.json").read_text())["tables"]
    expected = Keyspace(*(int(tables[t]["rows"]) for t in
                          ("customers", "opportunities", "reps", "regions", "products")))
    got = adapter.keyspace()
    # Other tests in this module create leads; the keyspace is the highest id.
    assert dataclasses.replace(got, leads=0) == expected
    assert got.leads >= int(tables["leads"]["rows"])
    version = adapter.platform_version()
    assert version is not None
    assert version.startswith("reference-crm ")
    assert "sqlite" in version


def test_the_token_stays_secret(served: EmbeddedReference, adapter: Adapter) -> None:
    assert served.token not in repr(adapter)
    assert served.token not in str(adapter)
    assert served.token not in repr(served)


def test_wrong_token_is_a_user_error(
    served: EmbeddedReference, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMBENCH_API_TOKEN", "not-the-token")
    adapter = ReferenceAdapter.from_url(served.url)
    with pytest.raises(UserError, match="rejected the API token; set CRMBENCH_API_TOKEN") as info:
        adapter.open()
    adapter.close()
    assert "not-the-token" not in str(info.value)


def test_missing_token_is_a_user_error(
    served: EmbeddedReference, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRMBENCH_API_TOKEN", raising=False)
    adapter = ReferenceAdapter.from_url(served.url)
    with pytest.raises(UserError, match="requires an API token"):
        adapter.open()
    adapter.close()


def test_a_killed_server_gives_transport_error_statuses(
    fixture_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedReference(fixture_copy) as server:
        monkeypatch.setenv("CRMBENCH_API_TOKEN", server.token)
        adapter = ReferenceAdapter.from_url(server.url)
        adapter.open()
        assert adapter.get_customer(1) == Status.ok
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.alive()
        assert _every_verb(adapter) == [Status.transport_error] * 9
        adapter.close()


def _max_lead(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM leads").fetchone()[0])


def test_embedded_runs_start_from_the_same_state(
    fixture_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "run.sqlite3"
    cache = fixture_copy / "reference.sqlite3"
    with EmbeddedReference(fixture_copy, db_path=work) as server:
        monkeypatch.setenv("CRMBENCH_API_TOKEN", server.token)
        adapter = ReferenceAdapter.from_url(server.url)
        adapter.open()
        assert adapter.create_lead(LEAD) == Status.ok
        adapter.close()
    assert not server.alive()
    assert _max_lead(work) == _max_lead(cache) + 1
    assert not cache.with_name("reference.sqlite3-wal").exists()


def test_embedded_durability_option() -> None:
    from bench.adapters.embedded import parse_embedded

    assert parse_embedded("reference://embedded").durability == "crash"  # type: ignore[union-attr]
    power = parse_embedded("reference://embedded?durability=power")
    assert power is not None and power.durability == "power"
    with pytest.raises(UserError, match="durability must be crash"):
        parse_embedded("reference://embedded?durability=always")
    with pytest.raises(UserError, match="applies to SQLite"):
        parse_embedded("reference://embedded?durability=power&db=postgresql://x@127.0.0.1/y")
