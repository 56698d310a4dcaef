"""workflow.max_nodes on Salesforce: the largest autolaunched flow that is accepted and runs.

A probe flow of ``n`` elements is ``n - 1`` chained Assignment elements, each adding 1 to a
counter, then one Update Records element that writes the counter and the attempt's token
onto the probe's own Account. It is created active through the Tooling API (``POST
/tooling/sobjects/Flow`` with the flow's metadata), run through the REST API's flow action
(``POST /actions/custom/flow/<ApiName>``), and counts as executed only when the Account
read back afterwards holds that token and the counter ``n - 1``: every element ran, in
order, and the last one wrote. Sizes double from 1 up to the scenario's cap until one
fails, then bisect; each size is tried once (every attempt spends about six calls of the
org's daily API allocation). Every flow is deactivated and deleted after its attempt, and
the probe Account with it.

Documented limits (Salesforce Help, "General Flow Limits" and "Per-Transaction Flow
Limits"): the 2,000 executed elements per flow interview applied to flows up to API
version 56.0 and was removed from 57.0; an interview runs within the Apex per-transaction
limits (10,000 ms of CPU time, 150 DML statements, 100 SOQL queries), which bound how many
elements can run; a flow keeps at most 50 versions.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from bench.adapters.saas.common import json_or_empty, tag_prefix
from bench.probes.verdict import Verdict
from bench.probes.workflow import largest_passing

LIMITS_DOCUMENTED = (
    "Salesforce Help, General Flow Limits / Per-Transaction Flow Limits: no per-flow element "
    "cap; the 2,000 executed elements per interview applied up to API 56.0 and was removed "
    "from 57.0; per-transaction Apex limits apply (10,000 ms CPU, 150 DML statements, 100 "
    "SOQL queries); at most 50 versions per flow")
EXECUTED_MEANS = ("the flow's last element wrote the count of every assignment before it and "
                  "the attempt's token onto the probe Account, read back by the harness")


class FlowOrg(Protocol):
    """What the flow probe needs of the adapter."""

    api_version: str

    @property
    def _data(self) -> str: ...

    @property
    def _tooling(self) -> str: ...

    def _api(self, method: str, path: str, *, setup: bool, **kw: Any) -> httpx.Response: ...

    def _expect(self, resp: httpx.Response, what: str) -> Any: ...


def api_name(run_id: str, n: int, attempt: str) -> str:
    """A flow API name: letters, digits and single underscores, starting with a letter."""
    raw = f"crmbench_{run_id}_n{n}_{attempt}"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]", "_", raw)).strip("_")[:80]


def flow_metadata(label: str, n: int, api_version: str) -> dict[str, Any]:
    """An active autolaunched flow of exactly ``n`` elements (see the module)."""
    if n < 1:
        raise ValueError("a flow has at least one element")
    names = [f"a{i}" for i in range(1, n)] + ["write"]
    assignments = [{
        "name": name, "label": name, "locationX": 0, "locationY": 0,
        "assignmentItems": [{"assignToReference": "counter", "operator": "Add",
                             "value": {"numberValue": 1}}],
        "connector": {"targetReference": names[i + 1]},
    } for i, name in enumerate(names[:-1])]
    return {
        "apiVersion": float(api_version), "label": label, "processType": "AutoLaunchedFlow",
        "status": "Active", "interviewLabel": f"{label} {{!$Flow.CurrentDateTime}}",
        "start": {"locationX": 0, "locationY": 0,
                  "connector": {"targetReference": names[0]}},
        "assignments": assignments,
        "recordUpdates": [{
            "name": "write", "label": "write", "locationX": 0, "locationY": 0,
            "object": "Account", "filterLogic": "and",
            "filters": [{"field": "Id", "operator": "EqualTo",
                         "value": {"elementReference": "recordId"}}],
            "inputAssignments": [
                {"field": "Description", "value": {"elementReference": "token"}},
                {"field": "NumberOfEmployees", "value": {"elementReference": "counter"}}],
        }],
        "variables": [
            {"name": "recordId", "dataType": "String", "isInput": True, "isOutput": False,
             "isCollection": False},
            {"name": "token", "dataType": "String", "isInput": True, "isOutput": False,
             "isCollection": False},
            {"name": "counter", "dataType": "Number", "scale": 0, "isInput": False,
             "isOutput": False, "isCollection": False, "value": {"numberValue": 0}},
        ],
    }


def _errors(resp: httpx.Response) -> str:
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        first = body[0]
        errs = first.get("errors") or [first]
        text = "; ".join(f"{e.get('statusCode') or e.get('errorCode')}: {e.get('message')}"
                         for e in errs if isinstance(e, dict))
        return text[:300]
    return f"HTTP {resp.status_code}"


class FlowAttempts:
    """Creates, runs, checks and removes probe flows on one org, for one run."""

    def __init__(self, org: FlowOrg, run_id: str) -> None:
        self.org, self.run_id = org, run_id
        self.account: str | None = None
        self.left_behind: list[str] = []

    def __enter__(self) -> FlowAttempts:
        resp = self.org._api("POST", f"{self.org._data}/sobjects/Account", setup=True,
                             json={"Name": f"{tag_prefix(self.run_id)}flow probe"})
        self.account = str(self.org._expect(resp, "creating the flow probe's Account")["id"])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.account is not None:
            resp = self.org._api("DELETE", f"{self.org._data}/sobjects/Account/{self.account}",
                                 setup=True)
            if resp.status_code >= 300:
                self.left_behind.append(f"Account {self.account}")

    def attempt(self, n: int) -> dict[str, Any]:
        """Create an n-element flow, run it, read its effect back, delete it."""
        token = uuid.uuid4().hex
        name = api_name(self.run_id, n, token[:8])
        out: dict[str, Any] = {"nodes": n, "accepted": False, "executed": False,
                               "deploy_s": None, "run_s": None}
        t0 = time.perf_counter()
        resp = self.org._api("POST", f"{self.org._tooling}/sobjects/Flow", setup=True, json={
            "FullName": name, "Metadata": flow_metadata(name, n, self.org.api_version)})
        out["deploy_s"] = round(time.perf_counter() - t0, 6)
        created = json_or_empty(resp)
        if resp.status_code >= 300 or not isinstance(created, dict) or "id" not in created:
            out["error"] = f"creating the flow was refused: {_errors(resp)}"
            return out
        out["accepted"] = True
        try:
            self._run(name, token, n, out)
        finally:
            self._remove(str(created["id"]), name)
        return out

    def _run(self, name: str, token: str, n: int, out: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        resp = self.org._api("POST", f"{self.org._data}/actions/custom/flow/{name}",
                             setup=True,
                             json={"inputs": [{"recordId": self.account, "token": token}]})
        out["run_s"] = round(time.perf_counter() - t0, 6)
        results = json_or_empty(resp)
        first = results[0] if isinstance(results, list) and results else {}
        if resp.status_code >= 300 or not isinstance(first, dict) or not first.get("isSuccess"):
            out["error"] = f"running the flow failed: {_errors(resp)}"
            return
        resp = self.org._api("GET", f"{self.org._data}/sobjects/Account/{self.account}",
                             setup=True, params={"fields": "Description,NumberOfEmployees"})
        record = json_or_empty(resp)
        seen = ({k: record.get(k) for k in ("Description", "NumberOfEmployees")}
                if isinstance(record, dict) else {})
        out["read_back"] = seen
        if seen.get("Description") == token and seen.get("NumberOfEmployees") == n - 1:
            out["executed"] = True
        else:
            out["error"] = (f"the Account read back holds {seen}, not the token and the count "
                            f"{n - 1} the flow's last element writes")

    def _remove(self, version_id: str, name: str) -> None:
        """Deactivate the flow (FlowDefinition activeVersionNumber 0), delete its version."""
        rows = self._query(f"SELECT Id, DefinitionId FROM Flow WHERE Id = '{version_id}'")
        definition = rows[0].get("DefinitionId") if rows else None
        if definition:
            self.org._api("PATCH", f"{self.org._tooling}/sobjects/FlowDefinition/{definition}",
                          setup=True, json={"Metadata": {"activeVersionNumber": 0}})
        resp = self.org._api("DELETE", f"{self.org._tooling}/sobjects/Flow/{version_id}",
                             setup=True)
        if resp.status_code >= 300:
            self.left_behind.append(f"Flow {name} ({version_id})")

    def _query(self, soql: str) -> list[dict[str, Any]]:
        resp = self.org._api("GET", f"{self.org._tooling}/query", setup=True,
                             params={"q": soql})
        body = json_or_empty(resp)
        return list(body.get("records") or []) if isinstance(body, dict) else []


def search(attempts: FlowAttempts, cap: int, say: Callable[[str], None]
           ) -> tuple[list[dict[str, Any]], int,
                                                                 int | None]:
    """Doubling from 1 to ``cap`` until a size fails, then bisection (to 1 % of the size)."""
    curve: list[dict[str, Any]] = []

    def ok(n: int) -> bool:
        point = attempts.attempt(n)
        curve.append(point)
        say(f"salesforce flow {n} elements: create {point['deploy_s']} s, run "
            f"{point['run_s']} s, {'ok' if point['executed'] else point.get('error')}")
        return bool(point["executed"])

    good, bad = largest_passing(ok, cap)
    return curve, good, bad


def measure_flows(org: FlowOrg, run_id: str, cap: int, say: Callable[[str], None]
                  ) -> tuple[dict[str, Any], dict[str, Verdict]]:
    """The workflow.max_nodes entry and the workflow capabilities' verdicts."""
    dim: dict[str, Any] = {"capability": "workflow.max_nodes", "unit": "nodes", "cap": cap,
                           "repeats": 1, "value": None, "curve": [],
                           "interface": "Tooling API Flow (create, activate, delete) and "
                                        "REST flow action (run)",
                           "executed_means": EXECUTED_MEANS,
                           "limits_documented": LIMITS_DOCUMENTED}
    with FlowAttempts(org, run_id) as attempts:
        curve, good, bad = search(attempts, cap, say)
    dim.update(curve=curve, value=good or None, status="pass" if good else "fail")
    if bad is not None:
        first = next(p for p in curve if p["nodes"] == bad)
        dim["reason"] = f"first failing size {bad}: {first.get('error', 'failed')}"
    if attempts.left_behind:
        dim["left_behind"] = attempts.left_behind
    return dim, {}
