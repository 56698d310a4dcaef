"""sla.granularity on Salesforce: the shortest milestone an entitlement process accepts, and
whether its violation shows, timed on the harness's clock.

Salesforce's service levels are entitlement processes whose milestones run on Cases (and
Work Orders) (Salesforce Help, "Entitlement Management"; Metadata API, EntitlementProcess
and MilestoneType). The probe first checks that the org has them (``describe`` of
Entitlement, CaseMilestone and SlaProcess: an org without Entitlement Management answers
404 NOT_FOUND, and the level is reported unsupported with that answer). It then deploys,
through the Metadata API's REST ``deployRequest``, a milestone type and an active
entitlement process on Case with one milestone of 0, 1, 2, 5 then 15 minutes until one is
accepted: the smallest accepted is the granularity. A Case is opened under an entitlement
on that process, and its CaseMilestone is read every few seconds until ``IsViolated``
turns true: the time from the Case's creation to that reading (harness clock) against the
milestone's minutes gives the detection lag; ``TargetDate - StartDate`` is kept as the
platform's word. Everything the probe made is removed afterwards (records deleted, the
process and milestone type deployed as destructive changes).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any, Protocol
from xml.sax.saxutils import escape

import httpx

from bench.adapters.saas.common import json_or_empty, tag_prefix
from bench.errors import UserError

CANDIDATE_MINUTES = (0, 1, 2, 5, 15)
POLL_S = 5.0
DEPLOY_POLL_S = 2.0
DEPLOY_TIMEOUT_S = 300.0
# After the milestone's deadline, how long a violation is still awaited.
GRACE_S = 300.0
METADATA_NS = "http://soap.sforce.com/2006/04/metadata"
REQUIRED = ("Entitlement", "CaseMilestone", "SlaProcess")


class SlaOrg(Protocol):
    """What the milestone probe needs of the adapter."""

    api_version: str
    clock: Callable[[], float]

    @property
    def _data(self) -> str: ...

    def _api(self, method: str, path: str, *, setup: bool, **kw: Any) -> httpx.Response: ...

    def _expect(self, resp: httpx.Response, what: str) -> Any: ...

    def _query_all(self, soql: str) -> list[dict[str, Any]]: ...

    def _sleep_fn(self) -> Callable[[float], None]: ...


def _error_text(resp: httpx.Response) -> str:
    body = json_or_empty(resp)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return f"{body[0].get('errorCode')}: {body[0].get('message')}"[:300]
    return f"HTTP {resp.status_code}"


def entitlement_gap(org: SlaOrg) -> str | None:
    """Why the org has no entitlement management (the API's answer), or None."""
    for sobject in REQUIRED:
        resp = org._api("GET", f"{org._data}/sobjects/{sobject}/describe", setup=True)
        if resp.status_code >= 300:
            return (f"the org has no {sobject} object (describe answered "
                    f"{_error_text(resp)}): Entitlement Management is not enabled")
    return None


def _package(types: dict[str, list[str]], version: str) -> str:
    body = "".join(
        f"<types>{''.join(f'<members>{escape(m)}</members>' for m in members)}"
        f"<name>{kind}</name></types>" for kind, members in types.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?><Package xmlns="{METADATA_NS}">{body}'
            f"<version>{version}</version></Package>")


def process_files(name: str, milestone: str, minutes: int, version: str) -> dict[str, str]:
    """The zip entries of a milestone type and an active Case process with one milestone."""
    process = (
        f'<?xml version="1.0" encoding="UTF-8"?><EntitlementProcess xmlns="{METADATA_NS}">'
        "<SObjectType>Case</SObjectType><active>true</active>"
        "<exitCriteriaFilterItems><field>Case.IsClosed</field><operation>equals</operation>"
        "<value>true</value></exitCriteriaFilterItems>"
        f"<milestones><milestoneName>{escape(milestone)}</milestoneName>"
        f"<minutesToComplete>{minutes}</minutesToComplete>"
        "<useCriteriaStartTime>false</useCriteriaStartTime></milestones>"
        f"<name>{escape(name)}</name></EntitlementProcess>")
    kind = (f'<?xml version="1.0" encoding="UTF-8"?><MilestoneType xmlns="{METADATA_NS}">'
            "<recurrenceType>none</recurrenceType></MilestoneType>")
    return {
        "package.xml": _package({"EntitlementProcess": [name.lower()],
                                 "MilestoneType": [milestone]}, version),
        f"entitlementProcesses/{name.lower()}.entitlementProcess": process,
        f"milestoneTypes/{milestone}.milestoneType": kind,
    }


def removal_files(name: str, milestone: str, version: str) -> dict[str, str]:
    destroy = {"EntitlementProcess": [name.lower()], "MilestoneType": [milestone]}
    return {"package.xml": _package({}, version),
            "destructiveChanges.xml": _package(destroy, version)}


def deploy(org: SlaOrg, files: dict[str, str]) -> tuple[bool, str | None]:
    """Deploy a zip through ``POST /metadata/deployRequest``; (succeeded, first problem)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    options = {"deployOptions": {"singlePackage": True, "rollbackOnError": True}}
    resp = org._api("POST", f"{org._data}/metadata/deployRequest", setup=True, files={
        "json": (None, json.dumps(options), "application/json"),
        "file": ("deploy.zip", buf.getvalue(), "application/zip")})
    body = org._expect(resp, "Metadata API deploy")
    deploy_id = str(body["id"])
    sleep, deadline = org._sleep_fn(), time.monotonic() + DEPLOY_TIMEOUT_S
    while True:
        result = (org._expect(org._api(
            "GET", f"{org._data}/metadata/deployRequest/{deploy_id}", setup=True,
            params={"includeDetails": "true"}), "Metadata API deploy status")
            or {}).get("deployResult") or {}
        if result.get("done"):
            break
        if time.monotonic() > deadline:
            return False, f"deploy {deploy_id} not done after {DEPLOY_TIMEOUT_S:g} s"
        sleep(DEPLOY_POLL_S)
    if result.get("status") == "Succeeded":
        return True, None
    failures = (result.get("details") or {}).get("componentFailures") or []
    first = failures[0] if failures else {}
    return False, str(first.get("problem") or result.get("errorMessage")
                      or result.get("status"))[:300]


def _created(org: SlaOrg, sobject: str, fields: dict[str, Any]) -> str:
    resp = org._api("POST", f"{org._data}/sobjects/{sobject}", setup=True, json=fields)
    return str(org._expect(resp, f"creating the SLA probe's {sobject}")["id"])


def _seconds(value: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class MilestoneCase:
    """The probe's Account, Entitlement and Case on the deployed process."""

    def __init__(self, org: SlaOrg, run_id: str, process: str) -> None:
        self.org, self.run_id, self.process = org, run_id, process
        self.made: list[tuple[str, str]] = []

    def open(self) -> tuple[str, float, float]:
        rows = self.org._query_all(
            "SELECT Id FROM SlaProcess WHERE Name = '" + self.process + "' AND IsActive = true")
        if not rows:
            raise LookupError(f"the deployed process {self.process} is not active")
        tag = tag_prefix(self.run_id)
        account = _created(self.org, "Account", {"Name": f"{tag}sla probe"})
        self.made.append(("Account", account))
        entitlement = _created(self.org, "Entitlement", {
            "Name": f"{tag}sla probe", "AccountId": account, "SlaProcessId": rows[0]["Id"],
            "StartDate": dt.date.today().isoformat()})
        self.made.append(("Entitlement", entitlement))
        t0 = self.org.clock()
        case = _created(self.org, "Case", {"Subject": f"{tag}sla probe",
                                           "AccountId": account, "EntitlementId": entitlement})
        t1 = self.org.clock()
        self.made.append(("Case", case))
        return case, t0, t1

    def milestone(self, case: str) -> dict[str, Any] | None:
        rows = self.org._query_all(
            "SELECT Id, IsViolated, IsCompleted, StartDate, TargetDate FROM CaseMilestone "
            f"WHERE CaseId = '{case}'")
        return rows[0] if rows else None

    def close(self) -> list[str]:
        left = []
        for sobject, rid in reversed(self.made):
            resp = self.org._api("DELETE", f"{self.org._data}/sobjects/{sobject}/{rid}",
                                 setup=True)
            if resp.status_code >= 300:
                left.append(f"{sobject} {rid}")
        return left


def watch(org: SlaOrg, case: MilestoneCase, case_id: str, t0: float, t1: float,
          minutes: int) -> dict[str, Any]:
    """Read the CaseMilestone until it shows violated (or the grace after its deadline)."""
    window = minutes * 60.0
    sleep = org._sleep_fn()
    readings: list[dict[str, Any]] = []
    out: dict[str, Any] = {"milestone_s": window, "violated": False, "readings": readings}
    while True:
        r0 = org.clock()
        row = case.milestone(case_id)
        r1 = org.clock()
        if row is not None and "server_window_s" not in out:
            start, target = _seconds(row.get("StartDate")), _seconds(row.get("TargetDate"))
            out["server_window_s"] = (None if start is None or target is None
                                      else round(target - start, 3))
            out["target_date"] = row.get("TargetDate")
        violated = bool(row and row.get("IsViolated"))
        readings.append({"after_s": round(r1 - t0, 3), "violated": violated,
                         "found": row is not None})
        if violated:
            out.update(violated=True, seen_after_s=round(r1 - t0, 3),
                       lag_s=round(r1 - t0 - window, 3),
                       early=(r1 - t0) < window)
            return out
        if r0 - t1 > window + GRACE_S:
            return out
        sleep(POLL_S)


def measure_milestones(org: SlaOrg, run_id: str, say: Callable[[str], None]
                       ) -> dict[str, Any]:
    """The sla.granularity entry: smallest accepted milestone, and its violation observed."""
    dim: dict[str, Any] = {"capability": "sla.granularity", "unit": "minutes", "value": None,
                           "object": "Case", "interface": "Entitlement Management: "
                           "entitlement process milestones (Metadata API deploy, REST)",
                           "lag_clock": "harness, real time"}
    gap = entitlement_gap(org)
    if gap is not None:
        return {**dim, "status": "unsupported", "reason": gap}
    suffix = "".join(c if c.isalnum() else "_" for c in run_id)
    name, milestone = f"crmbench_sla_{suffix}", f"crmbench_first_response_{suffix}"
    tried: list[dict[str, Any]] = []
    minutes = None
    for candidate in CANDIDATE_MINUTES:
        ok, problem = deploy(org, process_files(name, milestone, candidate, org.api_version))
        tried.append({"minutes": candidate, "accepted": ok, "problem": problem})
        say(f"salesforce milestone of {candidate} min: "
            f"{'accepted' if ok else 'refused: ' + str(problem)}")
        if ok:
            minutes = candidate
            break
    dim["tried"] = tried
    if minutes is None:
        return {**dim, "status": "fail", "reason": "no milestone time was accepted"}
    dim["value"] = minutes
    case = MilestoneCase(org, run_id, name)
    seen: dict[str, Any] | None = None
    error = ""
    try:
        case_id, t0, t1 = case.open()
        seen = watch(org, case, case_id, t0, t1, minutes)
    except (LookupError, UserError) as exc:
        error = str(exc)
    finally:
        left = case.close()
        removed, problem = deploy(org, removal_files(name, milestone, org.api_version))
        if not removed:
            left.append(f"EntitlementProcess {name} and MilestoneType {milestone}: {problem}")
    if left:
        dim["left_behind"] = left
    if seen is None:
        return {**dim, "status": "fail", "reason": f"the probe Case could not be opened: {error}"}
    dim["violation"] = seen
    if not seen["violated"]:
        return {**dim, "status": "fail", "reason": (
            f"the {minutes}-minute milestone did not show violated within {GRACE_S:g} s after "
            "its deadline")}
    if seen["early"]:
        return {**dim, "status": "fail", "reason": (
            f"violated {seen['seen_after_s']} s after the Case opened, before its "
            f"{minutes}-minute deadline")}
    say(f"salesforce milestone violation seen {seen['lag_s']} s after its deadline")
    return {**dim, "status": "pass", "breach_lag_ms": round(seen["lag_s"] * 1000, 3)}
