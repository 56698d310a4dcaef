"""No-code workflows on both backends: validation, DAG execution, versions, breaker, lineage."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from reference_impl.workflows import Compiled, CompiledCache, Node, WorkflowDeploy, compile_doc
from tests.conftest import API_TOKEN, app_client

TOKEN = API_TOKEN


@pytest.fixture(scope="module")
def client(module_db_url: str, small_fixtures: Path) -> Iterator[TestClient]:
    with app_client(module_db_url, small_fixtures, test_clock=True) as c:
        yield c


def messages(client: TestClient, type_: str) -> list[dict[str, Any]]:
    """Stored change-stream messages of one type, oldest first."""
    db = client.app.state.hub.db  # type: ignore[attr-defined]
    assert client.portal is not None
    rows = client.portal.call(
        db.fetch_all, "SELECT payload FROM stream_messages WHERE type = ? ORDER BY seq",
        (type_,),
    )
    return [json.loads(r["payload"]) for r in rows]


def deploy(client: TestClient, name: str, nodes: list[dict[str, Any]],
           edges: list[list[str]], **extra: Any) -> Any:
    return client.post("/workflows", json={"name": name, "nodes": nodes, "edges": edges,
                                           **extra})


def diamond(branches: int) -> tuple[list[dict[str, Any]], list[list[str]]]:
    nodes: list[dict[str, Any]] = [{"id": "t", "type": "trigger", "on": "manual"},
                                   {"id": "p", "type": "parallel"}, {"id": "j", "type": "join"}]
    edges = [["t", "p"]]
    for b in range(branches):
        nodes.append({"id": f"b{b}", "type": "action", "action": "set", "field": f"x{b}",
                      "value": b})
        edges += [["p", f"b{b}"], [f"b{b}", "j"]]
    return nodes, edges


@pytest.mark.parametrize(
    ("nodes", "edges", "field", "words"),
    [
        ([{"id": "a", "type": "join"}, {"id": "b", "type": "join"}],
         [["a", "b"], ["b", "a"]], "nodes[", "cycle"),
        ([{"id": "a", "type": "join"}], [["a", "ghost"]], "edges[0]", "ghost"),
        ([{"id": "a", "type": "join"}, {"id": "b", "type": "teleport"}], [], "nodes[1]",
         "teleport"),
        ([{"id": "t", "type": "trigger", "on": "record.created", "object": "opportunity"},
          {"id": "c", "type": "condition", "field": "amount", "op": ">", "value": "big"}],
         [["t", "c"]], "nodes[1]", "type error"),
        ([{"id": "a", "type": "join"}, {"id": "a", "type": "join"}], [], "nodes[1]",
         "duplicate"),
    ],
    ids=["cycle", "dangling", "unknown-type", "type-error", "duplicate-id"],
)
def test_invalid_documents_are_refused_naming_the_node(
    client: TestClient, nodes: list[dict[str, Any]], edges: list[list[str]], field: str,
    words: str,
) -> None:
    resp = deploy(client, "bad", nodes, edges)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_workflow" and err["field"].startswith(field)
    assert words in err["message"]


def test_parallel_branches_and_join_run_each_node_once(client: TestClient) -> None:
    nodes, edges = diamond(5)
    created = deploy(client, "diamond", nodes, edges)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["nodes"] == 8 and doc["edges"] == 11 and doc["deploy_ms"] >= 0
    run = client.post(f"/workflows/{doc['id']}/runs", json={"input": {}, "wait": True})
    assert run.status_code == 200, run.text
    body = run.json()
    assert body["status"] == "completed" and body["executed_nodes"] == 8
    again = client.get(f"/workflows/runs/{body['run_id']}").json()
    assert again["status"] == "completed" and again["executed_nodes"] == 8
    assert body["run_id"] in [m["run_id"] for m in messages(client, "workflow.completed")]


def test_condition_skips_the_other_branch(client: TestClient) -> None:
    nodes = [{"id": "c", "type": "condition", "field": "amount", "op": ">", "value": 1000},
             {"id": "hi", "type": "action", "action": "set", "field": "big", "value": True},
             {"id": "lo", "type": "action", "action": "noop"}, {"id": "j", "type": "join"}]
    edges = [["c", "hi", "true"], ["c", "lo", "false"], ["hi", "j"], ["lo", "j"]]
    wid = deploy(client, "cond", nodes, edges).json()["id"]
    run = client.post(f"/workflows/{wid}/runs", json={"input": {"amount": 5000}}).json()
    assert run["status"] == "completed" and run["executed_nodes"] == 3


def test_versions_and_async_runs(client: TestClient) -> None:
    first = deploy(client, "versioned", *diamond(1)).json()
    second = deploy(client, "versioned", *diamond(3)).json()
    assert second["id"] == first["id"] and second["version"] == first["version"] + 1
    wid = first["id"]
    latest = client.post(f"/workflows/{wid}/runs", json={"wait": False})
    assert latest.status_code == 202 and latest.json()["status"] == "running"
    run_id = latest.json()["run_id"]
    deadline = time.monotonic() + 10
    while (state := client.get(f"/workflows/runs/{run_id}").json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state["executed_nodes"] == 6 and state["version"] == 2
    old = client.post(f"/workflows/{wid}/runs", json={"version": 1}).json()
    assert old["executed_nodes"] == 4 and old["version"] == 1
    assert client.get(f"/workflows/{wid}", params={"version": 1}).json()["version"] == 1


def test_breaker_pauses_after_three_failures(client: TestClient) -> None:
    nodes = [{"id": "c", "type": "condition", "field": "amount", "op": ">", "value": 1000}]
    wid = deploy(client, "fragile", nodes, []).json()["id"]
    for _ in range(3):
        run = client.post(f"/workflows/{wid}/runs", json={"input": {"amount": "lots"}})
        assert run.json()["status"] == "failed" and "type error" in run.json()["error"]
    refused = client.post(f"/workflows/{wid}/runs", json={"input": {"amount": 1}})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "workflow_paused"
    paused = [m for m in messages(client, "workflow.paused") if m["workflow_id"] == wid]
    assert len(paused) == 1 and paused[0]["notify"] == "administrators"
    assert client.post(f"/workflows/{wid}/resume").json()["status"] == "active"
    ok = client.post(f"/workflows/{wid}/runs", json={"input": {"amount": 1}}).json()
    assert ok["status"] == "completed"


def test_wait_node_times_out_on_the_test_clock(client: TestClient) -> None:
    nodes = [{"id": "w", "type": "wait", "seconds": 120}]
    wid = deploy(client, "slow", nodes, [], timeout_s=60).json()["id"]
    run_id = client.post(f"/workflows/{wid}/runs", json={"wait": False}).json()["run_id"]
    client.post("/clock/advance", json={"seconds": 121})
    deadline = time.monotonic() + 10
    while (state := client.get(f"/workflows/runs/{run_id}").json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state["status"] == "timed_out"


def test_lineage_lists_reads_writes_and_integrations(client: TestClient) -> None:
    nodes = [
        {"id": "t", "type": "trigger", "on": "record.created", "object": "lead"},
        {"id": "c", "type": "condition", "field": "source", "op": "==", "value": "web"},
        {"id": "s", "type": "action", "action": "set_field", "field": "status",
         "value": "contacted"},
        {"id": "n", "type": "action", "action": "notify", "channel": "email"},
    ]
    wid = deploy(client, "lineage", nodes, [["t", "c"], ["c", "s", "true"], ["s", "n"]]).json()
    lineage = client.get(f"/workflows/{wid['id']}/lineage").json()
    assert {(r["object"], r["field"]) for r in lineage["reads"]} == {("lead", "source")}
    assert {(w["object"], w["field"]) for w in lineage["writes"]} == {("lead", "status")}
    assert [i["channel"] for i in lineage["integrations"]] == ["email"]


def test_record_created_trigger_sets_a_field_and_notifies(client: TestClient) -> None:
    nodes = [
        {"id": "t", "type": "trigger", "on": "record.created", "object": "lead"},
        {"id": "c", "type": "condition", "field": "source", "op": "==", "value": "trade_show"},
        {"id": "s", "type": "action", "action": "set_field", "field": "status",
         "value": "qualified"},
        {"id": "n", "type": "action", "action": "notify", "channel": "email"},
    ]
    deploy(client, "auto", nodes, [["t", "c"], ["c", "s", "true"], ["s", "n"]])
    lead = client.post("/leads", json={"company_name": "Trigger Co", "contact_name": "A B",
                                       "region_id": 1, "source": "trade_show"}).json()
    deadline = time.monotonic() + 10
    while client.get(f"/leads/{lead['id']}").json()["status"] != "qualified":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert any(m["record_id"] == lead["id"] for m in messages(client, "workflow.notification"))


def test_large_documents_are_accepted_and_run(client: TestClient) -> None:
    nodes, edges = diamond(5_000)
    doc = deploy(client, "big", nodes, edges).json()
    run = client.post(f"/workflows/{doc['id']}/runs", json={}).json()
    assert run["executed_nodes"] == 5_003


def _wait_for_notification(client: TestClient, workflow_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found = [m for m in messages(client, "workflow.notification")
                 if m["workflow_id"] == workflow_id]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "no workflow.notification"
        time.sleep(0.02)


def test_stage_change_and_event_triggers_start_runs(client: TestClient) -> None:
    staged = deploy(client, "on-stage", [
        {"id": "t", "type": "trigger", "on": "stage.changed", "stage": "negotiation"},
        {"id": "n", "type": "action", "action": "notify", "channel": "slack"}],
        [["t", "n"]]).json()["id"]
    evented = deploy(client, "on-event", [
        {"id": "t", "type": "trigger", "on": "event", "event_type": "purchase"},
        {"id": "n", "type": "action", "action": "notify", "channel": "email"}],
        [["t", "n"]]).json()["id"]
    opp = client.post("/opportunities", json={
        "customer_id": 1, "owner_rep_id": 1, "name": "Trigger deal", "stage": "proposal",
        "amount": 10.0, "expected_close": "2030-01-01"}).json()["id"]
    client.post(f"/opportunities/{opp}/stage", json={"stage": "negotiation"})
    assert _wait_for_notification(client, staged)["record_id"] == opp
    resp = client.post("/events", json={
        "customer_id": 1, "type": "purchase", "occurred_at": "2026-01-01T00:00:00Z",
        "idempotency_key": f"wf-{time.time_ns()}"})
    assert resp.status_code == 202, resp.text
    _wait_for_notification(client, evented)


def test_schedule_trigger_runs_when_due_on_the_test_clock(client: TestClient) -> None:
    bad = deploy(client, "bad-schedule", [{"id": "t", "type": "trigger", "on": "schedule"}], [])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "nodes[0]"
    assert "exactly one of seconds" in bad.json()["error"]["message"]
    wid = deploy(client, "every-10-min", [
        {"id": "t", "type": "trigger", "on": "schedule", "seconds": 600},
        {"id": "n", "type": "action", "action": "notify", "channel": "email"}],
        [["t", "n"]]).json()["id"]
    assert not [m for m in messages(client, "workflow.notification")
                if m["workflow_id"] == wid]
    assert client.post("/clock/advance", json={"seconds": 601}).status_code == 200
    _wait_for_notification(client, wid)


def _clock_now(client: TestClient) -> float:
    now = client.get("/clock").json()["now"]
    return dt.datetime.strptime(now, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _advance(client: TestClient, seconds: float) -> None:
    assert client.post("/clock/advance", json={"seconds": seconds}).status_code == 200


def _runs(client: TestClient, workflow_id: int, type_: str = "workflow.completed") -> int:
    return sum(1 for m in messages(client, type_) if m["workflow_id"] == workflow_id)


def _wait_for_runs(client: TestClient, workflow_id: int, count: int) -> None:
    """Wait until ``count`` runs completed, then make sure no extra run follows."""
    deadline = time.monotonic() + 10
    while _runs(client, workflow_id) < count:
        assert time.monotonic() < deadline, f"fewer than {count} runs"
        time.sleep(0.02)
    time.sleep(0.3)
    assert _runs(client, workflow_id) == count


def _cron_flow(client: TestClient, name: str, trigger: dict[str, Any],
               expected: list[float]) -> int:
    """A scheduled workflow that notifies only when scheduled_at is one of ``expected``."""
    created = deploy(client, name, [
        {"id": "t", "type": "trigger", "on": "schedule", **trigger},
        {"id": "c", "type": "condition", "field": "scheduled_at", "op": "in",
         "value": [_iso(at) for at in expected]},
        {"id": "n", "type": "action", "action": "notify", "channel": "email"}],
        [["t", "c"], ["c", "n", "true"]])
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_cron_schedule_runs_once_per_boundary_on_the_test_clock(client: TestClient) -> None:
    now = _clock_now(client)
    boundary = (now // 300 + 1) * 300
    _advance(client, boundary - now + 60)
    fires = [boundary + 300 * k for k in range(1, 6)]
    wid = _cron_flow(client, "every-5-min", {"cron": "*/5 * * * *"}, fires)
    _advance(client, 200)
    time.sleep(0.5)
    assert _runs(client, wid) == 0
    _advance(client, 41)
    _wait_for_runs(client, wid, 1)
    for k in range(2, 5):
        _advance(client, 300)
        _wait_for_runs(client, wid, k)
    assert _runs(client, wid, "workflow.notification") == 4
    # A week behind: one run for the missed boundary, then the next boundary after now.
    _advance(client, 7 * 86_400)
    _wait_for_runs(client, wid, 5)
    assert _runs(client, wid, "workflow.notification") == 5
    _advance(client, 300)
    _wait_for_runs(client, wid, 6)


def test_cron_schedule_honours_its_timezone(client: TestClient) -> None:
    now = _clock_now(client)
    day = 86_400
    one_am = (now + 120 - 3_600) // day * day + day + 3_600
    _advance(client, one_am - now - 60)
    wid = _cron_flow(client, "nine-in-shanghai",
                     {"cron": "0 9 * * *", "timezone": "Asia/Shanghai"}, [one_am])
    time.sleep(0.5)
    assert _runs(client, wid) == 0
    _advance(client, 61)
    _wait_for_runs(client, wid, 1)
    assert _wait_for_notification(client, wid)["workflow_id"] == wid


@pytest.mark.parametrize(
    ("trigger", "words"),
    [
        ({"on": "schedule", "cron": "61 * * * *"}, "Bad minute"),
        ({"on": "schedule", "cron": "*/5 * * *"}, "Wrong number of fields"),
        ({"on": "schedule", "cron": "0 */5 * * * *"}, "five fields"),
        ({"on": "schedule", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
         "unknown timezone 'Mars/Olympus'"),
        ({"on": "schedule", "cron": "*/5 * * * *", "seconds": 300}, "exactly one"),
        ({"on": "schedule", "seconds": 60, "timezone": "UTC"}, "cron schedules only"),
        ({"on": "manual", "cron": "*/5 * * * *"}, "schedule triggers"),
    ],
    ids=["bad-field", "four-fields", "six-fields", "bad-timezone", "seconds-and-cron",
         "timezone-without-cron", "cron-on-manual"],
)
def test_bad_schedules_are_refused_naming_the_trigger(
    client: TestClient, trigger: dict[str, Any], words: str
) -> None:
    resp = deploy(client, "bad-cron", [
        {"id": "n", "type": "action", "action": "noop"},
        {"id": "t", "type": "trigger", **trigger}], [["t", "n"]])
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_workflow" and err["field"] == "nodes[1]"
    assert words in err["message"]


def test_compiled_cache_evicts_the_least_recently_used() -> None:
    def compiled(n: int) -> Compiled:
        return compile_doc(WorkflowDeploy(name="c", nodes=[
            Node(id=f"n{i}", type="join") for i in range(n)]))

    cache = CompiledCache(10)
    cache.put((1, 1), compiled(4))
    cache.put((1, 2), compiled(4))
    assert cache.get((1, 1)) is not None
    cache.put((1, 3), compiled(4))
    assert (1, 2) not in cache and (1, 1) in cache and cache.nodes == 8
    cache.put((2, 1), compiled(11))
    assert (2, 1) not in cache and cache.nodes == 8 and len(cache) == 2


def test_versions_pushed_out_of_the_cache_still_run(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.app.state.workflows  # type: ignore[attr-defined]
    monkeypatch.setattr(engine, "compiled", CompiledCache(20))
    sizes = {}
    wid = 0
    for branches in range(1, 7):
        doc = deploy(client, "cached", *diamond(branches)).json()
        wid = doc["id"]
        sizes[doc["version"]] = doc["nodes"]
        assert engine.compiled.nodes <= 20
    assert (wid, min(sizes)) not in engine.compiled
    for version, nodes in sizes.items():
        got = client.get(f"/workflows/{wid}", params={"version": version}).json()
        assert got["version"] == version and len(got["nodes"]) == nodes
        run = client.post(f"/workflows/{wid}/runs", json={"version": version}).json()
        assert run["status"] == "completed" and run["executed_nodes"] == nodes
        assert engine.compiled.nodes <= 20


def test_a_document_is_stored_as_sent_and_runs_again_from_storage(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = client.app.state.workflows  # type: ignore[attr-defined]
    monkeypatch.setattr(engine, "compiled", CompiledCache(0))  # every use reads storage
    nodes, edges = diamond(2)
    nodes[3]["id"], edges[1][1], edges[2][0] = "prüfung ✓", "prüfung ✓", "prüfung ✓"
    body = json.dumps({"name": "stored as sent", "nodes": nodes, "edges": edges},
                      indent=2, ensure_ascii=False).encode()
    resp = client.post("/workflows", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 201, resp.text
    wid = resp.json()["id"]
    db = client.app.state.hub.db  # type: ignore[attr-defined]
    assert client.portal is not None
    stored = client.portal.call(
        db.fetch_val, "SELECT doc FROM workflow_versions WHERE workflow_id = ?", (wid,))
    assert stored == body.decode()
    got = client.get(f"/workflows/{wid}").json()
    assert [n["id"] for n in got["nodes"]] == [n["id"] for n in nodes]
    assert got["edges"] == edges
    run = client.post(f"/workflows/{wid}/runs", json={}).json()
    assert run["status"] == "completed" and run["executed_nodes"] == len(nodes)
