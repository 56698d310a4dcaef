"""A fake Salesforce org for the adapter's probes, beyond the REST subset of ``fakes.py``.

Replays the documented exchanges of: Account updates that publish Change Data Capture
events (to the fake Pub/Sub server), sObject Collections PATCH, Tooling API queries and
PlatformEventChannelMember, the Agent API (sessions and synchronous messages), Tooling API
Flow create / FlowDefinition deactivate / Flow delete with the REST flow action that runs
the flow by interpreting its metadata, entitlement objects' describe, the Metadata API's
REST deployRequest (zip parsed, entitlement processes and milestone types kept), Cases
whose CaseMilestone turns violated on the fake's clock, and managed package installs.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import re
import zipfile
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, ClassVar
from xml.etree import ElementTree

import httpx

from tests.bench.saas.fake_salesforce import SCHEMA
from tests.bench.saas.fake_salesforce_pubsub import FakePubSub, account_change
from tests.bench.saas.fakes import FakeSalesforce, V

AGENT_HOST = "api.salesforce.com"
NS = "{http://soap.sforce.com/2006/04/metadata}"
T = f"{V}/tooling"


def _epoch_iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class FakeSalesforceOrg(FakeSalesforce):
    """The REST fake plus the APIs the probes use (see the module)."""

    pubsub: FakePubSub | None = None
    cdc_selected: bool = False
    # The run-as user may not read channel members (no "View Setup and Configuration").
    members_refused: bool = False
    agent_ids: set[str] = field(default_factory=lambda: {"0XxFAKEAGENT001"})
    agent_reply: list[dict[str, Any]] = field(default_factory=lambda: [
        {"type": "Inform", "id": "m1", "message": "The lead is qualified and routed."}])
    agent_messages: list[dict[str, Any]] = field(default_factory=list)
    ended_sessions: list[tuple[str, str]] = field(default_factory=list)
    # Flows: creation refused above this many elements, runs fail above the other.
    flow_create_limit: int = 10_000
    flow_run_limit: int = 10_000
    flows: dict[str, dict[str, Any]] = field(default_factory=dict)
    entitlements: bool = True
    min_milestone_minutes: int = 1
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    milestone_types: set[str] = field(default_factory=set)
    deploys: dict[str, dict[str, Any]] = field(default_factory=dict)
    installed: set[str] = field(default_factory=set)
    install_polls: int = 2
    now: float = 1_750_000_000.0
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    PREFIX: ClassVar[dict[str, str]] = {
        **FakeSalesforce.PREFIX, "Case": "500", "Entitlement": "550", "CaseMilestone": "5Rt",
        "SlaProcess": "552", "MilestoneType": "557"}

    def advance(self, seconds: float) -> None:
        self.now += seconds

    # ------------------------------------------------------------------ routing

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == AGENT_HOST:
            self.requests.append(request)
            return self._agent(request)
        if path.startswith(T) or path.startswith(f"{V}/metadata/") \
                or path.startswith(f"{V}/actions/") or path.endswith("/describe") \
                or (request.method == "PATCH" and "/sobjects/Account" in path) \
                or (request.method == "PATCH" and path == f"{V}/composite/sobjects") \
                or (request.method == "POST" and path == f"{V}/sobjects/Case") \
                or (request.method == "DELETE" and path.startswith(f"{V}/sobjects/")):
            auth = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if auth not in self.valid_tokens:
                return httpx.Response(401, json=[{"message": "Session expired or invalid",
                                                  "errorCode": "INVALID_SESSION_ID"}])
            self.requests.append(request)
            return self._extended(request)
        return super().handle(request)

    def _extended(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith(T):
            return self._tooling(request, path[len(T):])
        if path.startswith(f"{V}/metadata/deployRequest"):
            return self._deploy(request)
        if path.startswith(f"{V}/actions/custom/flow/"):
            return self._run_flow(path.rsplit("/", 1)[1], json.loads(request.content))
        if path.endswith("/describe"):
            sobject = path.split("/")[-2]
            if sobject in ("Entitlement", "CaseMilestone", "SlaProcess") and not self.entitlements:
                return self._json(404, [{"errorCode": "NOT_FOUND",
                                         "message": "The requested resource does not exist"}])
            if sobject in SCHEMA:
                return self._describe(sobject)
            return self._json(200, {"name": sobject, "fields": []})
        if path == f"{V}/composite/sobjects":
            return self._patch_collection(json.loads(request.content))
        if path == f"{V}/sobjects/Case":
            return self._new_case(json.loads(request.content))
        if request.method == "DELETE":
            sobject, rid = path.split("/")[-2:]
            if self.records.get(sobject, {}).pop(rid, None) is None:
                return self._json(404, [{"errorCode": "ENTITY_IS_DELETED", "message": rid}])
            return httpx.Response(204)
        rid = path.rsplit("/", 1)[1]
        return self._patch_account(rid, json.loads(request.content))

    # ------------------------------------------------------------------ change events

    def _changed(self, rid: str, changes: dict[str, Any]) -> None:
        self.records["Account"][rid].update(changes)
        if self.pubsub is not None and self.cdc_selected:
            self.pubsub.publish("/data/AccountChangeEvent",
                                account_change(rid, changes, int(self.now * 1000)))

    def _patch_account(self, rid: str, changes: dict[str, Any]) -> httpx.Response:
        if rid not in self.records.get("Account", {}):
            return self._json(404, [{"errorCode": "NOT_FOUND", "message": "no such record"}])
        self._changed(rid, changes)
        return httpx.Response(204)

    def _patch_collection(self, body: dict[str, Any]) -> httpx.Response:
        records = body["records"]
        assert len(records) <= 200
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids)), "sObject Collections refuse duplicate ids"
        results = []
        for rec in records:
            fields = {k: v for k, v in rec.items() if k not in ("attributes", "id")}
            assert rec["attributes"]["type"] == "Account"
            self._changed(rec["id"], fields)
            results.append({"id": rec["id"], "success": True, "errors": []})
        return self._json(200, results)

    # ------------------------------------------------------------------ agent API

    def _agent(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/einstein/ai-agent/v1")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.valid_tokens:
            return httpx.Response(401, json={"message": "invalid token"})
        start = re.fullmatch(r"/agents/(\w+)/sessions", path)
        if start and request.method == "POST":
            body = json.loads(request.content)
            if start.group(1) not in self.agent_ids:
                return httpx.Response(404, json={"message": "agent not found"})
            assert body["instanceConfig"]["endpoint"].startswith("https://")
            assert body["externalSessionKey"]
            sid = f"sess-{next(self._seq)}"
            return httpx.Response(200, json={"sessionId": sid, "messages": [
                {"type": "Inform", "id": "greet", "message": "Hi, how can I help?"}]})
        send = re.fullmatch(r"/sessions/([\w-]+)/messages", path)
        if send and request.method == "POST":
            body = json.loads(request.content)
            assert body["message"]["type"] == "Text" and body["message"]["sequenceId"] == 1
            self.agent_messages.append(body["message"])
            return httpx.Response(200, json={"messages": self.agent_reply})
        end = re.fullmatch(r"/sessions/([\w-]+)", path)
        if end and request.method == "DELETE":
            self.ended_sessions.append((end.group(1),
                                        request.headers.get("x-session-end-reason", "")))
            return httpx.Response(200, json={"messages": [{"type": "SessionEnded"}]})
        return httpx.Response(404, json={"message": f"no route {path}"})

    # ------------------------------------------------------------------ Tooling API

    def _tooling(self, request: httpx.Request, path: str) -> httpx.Response:
        if path == "/query":
            return self._tooling_query(request.url.params["q"])
        if path == "/sobjects/PlatformEventChannelMember" and request.method == "POST":
            body = json.loads(request.content)
            assert body["Metadata"] == {"eventChannel": "ChangeEvents",
                                        "selectedEntity": "AccountChangeEvent"}
            self.cdc_selected = True
            return self._json(201, {"id": "0v8FAKE", "success": True, "errors": []})
        if path == "/sobjects/Flow" and request.method == "POST":
            return self._create_flow(json.loads(request.content))
        match = re.fullmatch(r"/sobjects/(\w+)(?:/(\w+))?", path)
        if match and match.group(1) == "FlowDefinition" and request.method == "PATCH":
            for flow in self.flows.values():
                if flow["definition"] == match.group(2):
                    flow["active"] = json.loads(request.content)["Metadata"][
                        "activeVersionNumber"] not in (0, None)
            return httpx.Response(204)
        if match and match.group(1) == "Flow" and request.method == "DELETE":
            flow = self.flows.get(str(match.group(2)))
            if flow is None or flow["active"]:
                return self._json(400, [{"errorCode": "DELETE_FAILED",
                                         "message": "an active flow version can't be deleted"}])
            del self.flows[str(match.group(2))]
            return httpx.Response(204)
        if match:
            return self._packages(request, match.group(1), match.group(2))
        return self._json(404, [{"errorCode": "NOT_FOUND", "message": path}])

    def _tooling_query(self, soql: str) -> httpx.Response:
        if "FROM PlatformEventChannelMember" in soql and self.members_refused:
            return self._json(403, [{"errorCode": "INSUFFICIENT_ACCESS_OR_READONLY",
                                     "message": "insufficient access rights"}])
        if "FROM PlatformEventChannelMember" in soql:
            rows = [{"Id": "0v8FAKE", "DeveloperName": "ChangeEvents_AccountChangeEvent",
                     "SelectedEntity": "AccountChangeEvent"}] if self.cdc_selected else []
        elif "FROM Flow WHERE Id = " in soql:
            fid = soql.rsplit("'", 2)[1]
            rows = ([{"Id": fid, "DefinitionId": self.flows[fid]["definition"]}]
                    if fid in self.flows else [])
        elif "FROM InstalledSubscriberPackage" in soql:
            rows = [{"Id": f"0A3{v[3:]}", "SubscriberPackageVersionId": v}
                    for v in self.installed]
        else:
            raise AssertionError(f"fake Tooling API cannot answer {soql!r}")
        return self._json(200, {"size": len(rows), "totalSize": len(rows), "done": True,
                                "records": rows})

    def _create_flow(self, body: dict[str, Any]) -> httpx.Response:
        meta = body["Metadata"]
        assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|_(?!_))*[A-Za-z0-9]", body["FullName"])
        assert meta["processType"] == "AutoLaunchedFlow" and meta["status"] == "Active"
        count = len(meta.get("assignments", [])) + len(meta.get("recordUpdates", []))
        if count > self.flow_create_limit:
            return self._json(400, [{"errorCode": "FIELD_INTEGRITY_EXCEPTION",
                                     "message": f"flow too large: {count} elements"}])
        fid = f"301FAKE{next(self._seq):08d}"
        self.flows[fid] = {"name": body["FullName"], "meta": meta, "active": True,
                           "definition": f"300FAKE{next(self._seq):08d}"}
        return self._json(201, {"id": fid, "success": True, "errors": []})

    def _run_flow(self, name: str, body: dict[str, Any]) -> httpx.Response:
        flow = next((f for f in self.flows.values() if f["name"] == name), None)
        if flow is None or not flow["active"]:
            return self._json(404, [{"errorCode": "NOT_FOUND", "message": name}])
        meta = flow["meta"]
        inputs = body["inputs"][0]
        variables = {v["name"]: (v.get("value") or {}).get("numberValue")
                     for v in meta["variables"]}
        variables.update({k: v for k, v in inputs.items()})
        elements = {e["name"]: ("assign", e) for e in meta.get("assignments", [])}
        elements.update({e["name"]: ("update", e) for e in meta.get("recordUpdates", [])})
        target, executed = meta["start"]["connector"]["targetReference"], 0
        while target is not None:
            kind, element = elements[target]
            executed += 1
            if executed > self.flow_run_limit:
                return self._json(200, [{"actionName": name, "isSuccess": False, "errors": [
                    {"statusCode": "UNKNOWN_EXCEPTION",
                     "message": "Apex CPU time limit exceeded"}], "outputValues": None}])
            if kind == "assign":
                for item in element["assignmentItems"]:
                    assert item["operator"] == "Add"
                    variables[item["assignToReference"]] += item["value"]["numberValue"]
            else:
                (flt,) = element["filters"]
                rid = variables[flt["value"]["elementReference"]]
                self.records[element["object"]][rid].update({
                    a["field"]: variables[a["value"]["elementReference"]]
                    for a in element["inputAssignments"]})
            target = (element.get("connector") or {}).get("targetReference")
        return self._json(200, [{"actionName": name, "isSuccess": True, "errors": None,
                                 "outputValues": {"Flow__InterviewStatus": "Finished"}}])

    # ------------------------------------------------------------------ packages

    def _packages(self, request: httpx.Request, sobject: str, rid: str | None
                  ) -> httpx.Response:
        if sobject == "PackageInstallRequest" and request.method == "POST":
            version = json.loads(request.content)["SubscriberPackageVersionKey"]
            rid = f"0HfFAKE{next(self._seq):08d}"
            self.deploys[rid] = {"version": version, "polls": 0}
            return self._json(201, {"id": rid, "success": True, "errors": []})
        if sobject == "PackageInstallRequest" and rid in self.deploys:
            job = self.deploys[rid]
            job["polls"] += 1
            if job["polls"] >= self.install_polls:
                self.installed.add(job["version"])
                return self._json(200, {"Id": rid, "Status": "SUCCESS", "Errors": None})
            return self._json(200, {"Id": rid, "Status": "IN_PROGRESS", "Errors": None})
        if sobject == "SubscriberPackageVersionUninstallRequest" and request.method == "POST":
            self.installed.discard(json.loads(request.content)["SubscriberPackageVersionId"])
            return self._json(201, {"id": "06yFAKE", "success": True, "errors": []})
        if sobject == "SubscriberPackageVersionUninstallRequest":
            return self._json(200, {"Id": rid, "Status": "Success"})
        return self._json(404, [{"errorCode": "NOT_FOUND", "message": sobject}])

    # ------------------------------------------------------------------ entitlements

    def _deploy(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            did = request.url.path.rsplit("/", 1)[1]
            return self._json(200, {"id": did, "deployResult": self.deploys[did]})
        ctype = request.headers["Content-Type"]
        parts = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + request.content)
        form = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                for p in parts.iter_parts()}
        assert json.loads(form["json"])["deployOptions"]["rollbackOnError"] is True
        with zipfile.ZipFile(io.BytesIO(form["file"])) as zf:
            files = {n: zf.read(n).decode() for n in zf.namelist()}
        did = f"0AfFAKE{next(self._seq):08d}"
        problem = self._apply(files)
        self.deploys[did] = ({"done": True, "status": "Succeeded"} if problem is None else
                             {"done": True, "status": "Failed", "details": {
                                 "componentFailures": [{"problem": problem}]}})
        return self._json(201, {"id": did, "deployResult": {"done": False,
                                                            "status": "Pending"}})

    def _apply(self, files: dict[str, str]) -> str | None:
        if "destructiveChanges.xml" in files:
            root = ElementTree.fromstring(files["destructiveChanges.xml"])
            for types in root.iter(f"{NS}types"):
                for member in types.iter(f"{NS}members"):
                    self.processes.pop(str(member.text), None)
                    self.milestone_types.discard(str(member.text))
            return None
        for path, text in files.items():
            root = ElementTree.fromstring(text)
            if path.startswith("milestoneTypes/"):
                self.milestone_types.add(path.split("/")[1].removesuffix(".milestoneType"))
            elif path.startswith("entitlementProcesses/"):
                minutes = int(root.findtext(f"{NS}milestones/{NS}minutesToComplete") or -1)
                if minutes < self.min_milestone_minutes:
                    return f"Time Trigger (Minutes): enter a value of at least " \
                           f"{self.min_milestone_minutes}"
                name = str(root.findtext(f"{NS}name"))
                assert root.findtext(f"{NS}SObjectType") == "Case"
                pid = self.add("SlaProcess", Name=name, IsActive=True)
                self.processes[name.lower()] = {"id": pid, "minutes": minutes}
        return None

    def _new_case(self, fields: dict[str, Any]) -> httpx.Response:
        cid = self.add("Case", **fields)
        entitlement = self.records.get("Entitlement", {}).get(fields.get("EntitlementId", ""))
        if entitlement is not None:
            process = next(p for p in self.processes.values()
                           if p["id"] == entitlement["SlaProcessId"])
            self.add("CaseMilestone", CaseId=cid, StartTime=self.now,
                     Deadline=self.now + process["minutes"] * 60)
        return self._json(201, {"id": cid, "success": True, "errors": []})

    def _query(self, soql: str) -> httpx.Response:
        if "FROM CaseMilestone" in soql:
            case = soql.rsplit("'", 2)[1]
            rows = [{"Id": m["Id"], "IsViolated": self.now > m["Deadline"],
                     "IsCompleted": False, "StartDate": _epoch_iso(m["StartTime"]),
                     "TargetDate": _epoch_iso(m["Deadline"])}
                    for m in self.records.get("CaseMilestone", {}).values()
                    if m["CaseId"] == case]
            return self._page(rows)
        if "FROM SlaProcess" in soql:
            name = soql.split("Name = '", 1)[1].split("'", 1)[0]
            rows = [{"Id": r["Id"]} for r in self.records.get("SlaProcess", {}).values()
                    if r["Name"] == name and name.lower() in self.processes]
            return self._page(rows)
        return super()._query(soql)
