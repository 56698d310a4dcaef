"""Customer-data events on both backends: idempotency, atomic batches, explained tags, consent,
and durability across a killed server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LIVE_TOKEN, LiveCrm, SseStream, start_live_crm

_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NOW = _NOW.strftime("%Y-%m-%dT%H:%M:%SZ")


def _customer(c: httpx.Client, consent: bool = True) -> int:
    resp = c.post("/customers", json={"name": "CDP Probe", "industry": "x", "region_id": 1,
                                      "owner_rep_id": 1, "consent_profiling": consent})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _event(customer_id: int, type_: str = "page_view", key: str | None = None,
           **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "type": type_, "occurred_at": NOW,
            "idempotency_key": key or f"cdp-{uuid.uuid4().hex}", **extra}


def _post(c: httpx.Client, body: Any, status: int = 202) -> dict[str, Any]:
    resp = c.post("/events", json=body)
    assert resp.status_code == status, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_duplicates_are_stored_and_counted_once(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        cid = _customer(c)
        start = c.get("/stream/info").json()["last_seq"]
        one = _event(cid, key=f"dup-{uuid.uuid4().hex}")
        first = _post(c, one)
        assert first == {"accepted": 1, "duplicates": 0, "events": [
            {"idempotency_key": one["idempotency_key"], "id": first["events"][0]["id"],
             "duplicate": False}]}
        two = _event(cid, "download")
        again = _post(c, {"events": [one, two, two]})
        assert (again["accepted"], again["duplicates"]) == (1, 2)
        flags = [(e["idempotency_key"], e["duplicate"]) for e in again["events"]]
        assert flags == [(one["idempotency_key"], True), (two["idempotency_key"], False),
                         (two["idempotency_key"], True)]
        ids = [e["id"] for e in again["events"]]
        assert ids[0] == first["events"][0]["id"] and ids[1] == ids[2] != ids[0]
        counters = c.get(f"/customers/{cid}/profile").json()["counters"]
        assert counters["page_view"]["count"] == 1
        assert counters["download"]["count"] == 1
        with live_crm.stream(after=start, customer_id=cid) as s:
            got = s.take(2)
            marker = _event(cid)
            _post(c, marker)
            assert s.next()["data"]["payload"]["idempotency_key"] == marker["idempotency_key"]
        assert [m["data"]["payload"]["event_id"] for m in got] == ids[:2]


def test_a_bad_event_rejects_the_whole_batch(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        cid = _customer(c)
        batch = [_event(cid) for _ in range(5)]
        bad = [*batch[:3], _event(10**12), batch[4]]
        err = _post(c, {"events": bad}, 422)["error"]
        assert (err["code"], err["field"]) == ("unknown_reference", "events[3].customer_id")
        bad = [*batch[:2], {**batch[2], "type": "telepathy"}, *batch[3:]]
        assert _post(c, {"events": bad}, 422)["error"]["field"] == "events[2].type"
        big = {f"k{i}": "x" * 200 for i in range(25)}
        bad = [batch[0], {**batch[1], "properties": big}, *batch[2:]]
        assert _post(c, {"events": bad}, 422)["error"]["field"] == "events[1].properties"
        assert c.get(f"/customers/{cid}/profile").json()["counters"] == {}
        done = _post(c, {"events": batch})
        assert (done["accepted"], done["duplicates"]) == (5, 0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": None}, "occurred_at"),
        ({"occurred_at": "2026-01-05T10:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"properties": {f"p{i}": i for i in range(33)}}, "properties"),
        ({"properties": [1]}, "properties"),
        ({"customer_id": 0}, "customer_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_events_are_422_with_the_field(
    live_crm: LiveCrm, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**_event(1), **change}.items() if v is not None}
    with live_crm.client() as c:
        err = _post(c, body, 422)["error"]
        assert (err["code"], err["field"]) == ("validation_error", field)
        batch_err = _post(c, {"events": [_event(1), body]}, 422)["error"]
        assert batch_err["field"] == f"events[1].{field}"


def test_batch_size_and_body_shape(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        assert _post(c, {"events": []}, 422)["error"]["field"] == "events"
        many = [_event(1, key=f"n{i}") for i in range(1001)]
        assert _post(c, {"events": many}, 422)["error"]["field"] == "events"
        assert c.post("/events", content=b"[1]").status_code == 422
        assert c.post("/events", content=b"{").json()["error"]["code"] == "malformed_json"


def test_tags_explain_formula_weights_inputs_and_sources(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        cid = _customer(c)
        sent = [_event(cid, "pricing_view"),
                _event(cid, "pricing_view", properties={"discount": True}),
                _event(cid, "support_call"), _event(cid, "page_view")]
        ids = [e["id"] for e in _post(c, {"events": sent})["events"]]
        profile = c.get(f"/customers/{cid}/profile").json()
    assert profile["tags_suppressed"] is None
    stored_at = _NOW.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert profile["counters"]["pricing_view"] == {"count": 2, "last_at": stored_at}
    tags = profile["tags"]
    assert set(tags) == {"price_sensitivity", "engagement", "churn_risk"}
    for tag in tags.values():
        assert set(tag) == {"value", "formula", "weights", "inputs", "source_events"}
        assert 0.0 <= tag["value"] <= 1.0 and round(tag["value"], 2) == tag["value"]
        assert tag["formula"] and tag["weights"] and tag["inputs"]
        assert len(tag["source_events"]) <= 20
    price = tags["price_sensitivity"]
    assert price["inputs"] == {"pricing_views": 2, "discount_signals": 1, "total_events": 4}
    # 0.5 * 2/5 + 0.3 * 1/3 + 0.2 * 2/4
    assert price["value"] == 0.4
    assert price["source_events"] == ids[:2]
    assert price["weights"] == {"pricing_views": 0.5, "discount_signals": 0.3,
                                "pricing_share": 0.2}
    assert tags["engagement"]["source_events"] == [ids[0], ids[1], ids[3]]
    assert tags["engagement"]["inputs"]["engaged_events_30d"] == 3
    assert tags["engagement"]["inputs"]["days_since_last_engagement"] < 1
    assert tags["churn_risk"]["source_events"] == [ids[2], ids[3]]
    assert tags["churn_risk"]["inputs"]["support_calls_90d"] == 1


def test_without_profiling_consent_counters_stay_and_tags_go(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        cid = _customer(c, consent=False)
        start = c.get("/stream/info").json()["last_seq"]
        _post(c, _event(cid, "pricing_view"))
        profile = c.get(f"/customers/{cid}/profile").json()
        assert profile["counters"]["pricing_view"]["count"] == 1
        assert profile["tags"] == {}
        assert profile["tags_suppressed"] == "consent_profiling is false"
        with live_crm.stream(after=start, customer_id=cid) as s:
            assert s.next()["data"]["payload"]["tags"] == {}
        profiled = _customer(c)
        _post(c, _event(profiled, "pricing_view"))
        assert c.get(f"/customers/{profiled}/profile").json()["tags"]
        c.patch(f"/customers/{profiled}", json={"consent_profiling": False})
        withdrawn = c.get(f"/customers/{profiled}/profile").json()
        assert withdrawn["tags"] == {}
        assert withdrawn["tags_suppressed"] == "consent_profiling is false"
        c.patch(f"/customers/{profiled}", json={"consent_profiling": True})
        assert c.get(f"/customers/{profiled}/profile").json()["tags"] == {}


def test_profile_of_unknown_and_new_customers(live_crm: LiveCrm) -> None:
    with live_crm.client() as c:
        assert c.get("/customers/999999999/profile").json()["error"]["code"] == "not_found"
        cid = _customer(c)
        assert c.get(f"/customers/{cid}/profile").json() == {
            "customer_id": cid, "counters": {}, "tags": {}, "tags_suppressed": None,
            "updated_at": None}


def _serve(db: str, data: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "serve", "--data", str(data), "--db", db,
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CRMBENCH_API_TOKEN": "restart-token"},
    )


def _ready(proc: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("serve did not answer /health within 60 s")


def test_acknowledged_events_survive_kill_9(tmp_path: Path, small_fixtures: Path) -> None:
    from tests.reference_impl.test_serve import _free_port

    db_file = tmp_path / "restart.sqlite3"
    db = f"sqlite:///{db_file}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer restart-token"}
    proc = _serve(db, small_fixtures, port)
    acked: dict[str, int] = {}
    try:
        _ready(proc, base)
        with httpx.Client(base_url=base, headers=auth, timeout=10) as c:
            for i in range(20):
                body: Any = _event(1 + i % 5) if i % 2 else {
                    "events": [_event(1 + i % 5) for _ in range(10)]}
                for e in _post(c, body)["events"]:
                    acked[e["idempotency_key"]] = e["id"]
            last_seq = c.get("/stream/info").json()["last_seq"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert len(acked) == 110 and last_seq >= 110

    conn = sqlite3.connect(db_file)
    try:
        stored = dict(conn.execute("SELECT idempotency_key, id FROM cdp_events").fetchall())
    finally:
        conn.close()
    assert all(stored.get(k) == v for k, v in acked.items())

    proc = _serve(db, small_fixtures, port)
    try:
        _ready(proc, base)
        with httpx.Client(base_url=base, headers=auth, timeout=10) as c:
            assert c.get("/stream/info").json()["last_seq"] == last_seq
            with c.stream("GET", "/stream", params={"after": 0}) as resp:
                stream = SseStream(resp.iter_lines())
                replayed = stream.take(last_seq)
                assert [m["id"] for m in replayed] == list(range(1, last_seq + 1))
                assert {m["data"]["payload"]["event_id"] for m in replayed} == set(acked.values())
                fresh = _post(c, _event(1))["events"][0]["id"]
                assert fresh > max(acked.values())
                assert stream.next()["id"] == last_seq + 1
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from([NOW, "2026-13-01T00:00:00Z", "page_view", "k:1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=8,
)
_event_bodies = st.dictionaries(
    st.sampled_from(["customer_id", "type", "properties", "occurred_at", "idempotency_key",
                     "events", "x"]),
    _values, max_size=6,
)
_paths = st.sampled_from([
    "/events", "/customers/1/profile", "/customers/0/profile", "/stream/info",
    "/agents/lead_intake/runs", "/agents/lead_intake/config", "/agents/queue",
    "/agents/runs/1", "/agents/runs/%00", "/agents/x/config",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]), path=_paths,
       body=_event_bodies | st.builds(lambda e: {"events": e}, st.lists(_event_bodies,
                                                                          max_size=3)),
       query=st.dictionaries(st.sampled_from(["limit", "after", "x"]),
                             st.text(max_size=5), max_size=2))
def test_new_routes_never_answer_500(
    live_crm: LiveCrm, method: str, path: str, body: dict[str, Any], query: dict[str, str]
) -> None:
    with live_crm.client() as c:
        resp = c.request(method, path, params=query, content=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert set(resp.json()["error"]) == {"code", "message", "field"}


def test_nats_jetstream_ingest_feeds_the_same_path(db_url: str, small_fixtures: Path) -> None:
    nats = pytest.importorskip("nats")
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        pytest.skip("no NATS server at 127.0.0.1:4222")
    from reference_impl.api import build_app
    from reference_impl.db import open_database
    from reference_impl.server import load

    load(db_url, small_fixtures, reset=False, say=lambda _m: None)
    app = build_app(open_database(db_url), token=LIVE_TOKEN, nats_url="nats://127.0.0.1:4222")
    tag = uuid.uuid4().hex[:12]
    ingest = app.state.nats_ingest
    ingest.subject, ingest.stream, ingest.durable = f"crmbench.test.{tag}", f"T_{tag}", tag
    single, pair = _event(1), [_event(2), _event(3)]

    async def publish(*bodies: Any) -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            js = nc.jetstream()
            for body in bodies:
                await js.publish(ingest.subject, json.dumps(body).encode())
        finally:
            await nc.close()

    async def drop_stream() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            await nc.jetstream().delete_stream(ingest.stream)
        finally:
            await nc.close()

    live, stop = start_live_crm(app)
    try:
        with live.client() as c:
            start = c.get("/stream/info").json()["last_seq"]
        with live.stream(after=start) as s:
            asyncio.run(publish(single, {"events": pair}, single, {"customer_id": "bad"}))
            got = s.take(3)
            marker = _event(4)
            asyncio.run(publish(marker))
            last = s.next()
    finally:
        stop()
        asyncio.run(drop_stream())
    keys = [m["data"]["payload"]["idempotency_key"] for m in got]
    assert keys == [single["idempotency_key"], *(e["idempotency_key"] for e in pair)]
    assert last["data"]["payload"]["idempotency_key"] == marker["idempotency_key"]
