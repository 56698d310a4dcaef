"""The capability report: every catalogue id per platform with status, evidence and reason.

Statuses are those of the capability catalogue (pass, fail, unsupported, not-measured). The
measured dimensions take theirs from the matrix; the mixed workload passes when valid runs
had no failed call (faults, timeouts, rate limiting; refusals and not-found are answers).
Several runs of a platform (column: platform and configuration label) combine as fail >
pass > unsupported > not-measured; excluded runs (incomplete, invalid) give no verdict
beyond their declared unsupported capabilities.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.adapters.base import CAPABILITY_IDS
from bench.probes.verdict import STATUSES, read_status
from bench.report.matrix import Cell, fmt, unmeasured_reason
from bench.report.runs import run_summary, target_text, validity_text
from bench.results.collect import FAILURES, Run, failures, status_of

EVIDENCE_CHARS = 240
PRIORITY = ("fail", "pass", "unsupported", "not-measured")
# What a dimension probe observed, when it gives no "evidence" of its own.
OBSERVED = ("count", "sent", "acked", "lost", "send_failures", "rate", "observed_via")


@dataclass(frozen=True)
class CapabilityStatus:
    """One capability of one platform."""

    platform: str
    capability: str
    status: str
    evidence: str
    reason: str | None


def short(evidence: Any) -> str:
    """Evidence in one line: text as is, structures as compact JSON, both clipped."""
    if evidence is None:
        return ""
    text = evidence if isinstance(evidence, str) else json.dumps(
        evidence, separators=(",", ":"), sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 1] + "…"


def _mixed(platform: str, runs: Sequence[Run]) -> CapabilityStatus:
    measured = [r for r in runs if r.measured]
    valid = [r for r in measured if r.exclusion is None]
    if not valid:
        reason = measured[0].exclusion if measured else unmeasured_reason(runs)
        return CapabilityStatus(platform, "crud.mixed", "not-measured", "", reason)
    requests = sum(int(r.result["overall"]["count"]) for r in valid)
    errors = sum(failures(r.result["overall"]) for r in valid)
    lat = valid[0].result["overall"]["latency_ms"]["intended"]
    answers = _other_answers(valid)
    evidence = (f"{requests:,} requests in {len(valid)} run(s), {errors:,} failed"
                + (f" (other answers: {answers})" if answers else "") + "; first run: "
                f"p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} ms, "
                f"{fmt(valid[0].result['overall']['throughput'])} req/s")
    if errors:
        failed = {k: v for k, v in _other_answers(valid).items() if k in FAILURES}
        return CapabilityStatus(platform, "crud.mixed", "fail", evidence,
                                f"{errors:,} of {requests:,} requests failed: {failed}")
    return CapabilityStatus(platform, "crud.mixed", "pass", evidence, None)


def _other_answers(valid: Sequence[Run]) -> dict[str, int]:
    """Statuses other than ok over the runs, failed or not."""
    statuses: dict[str, int] = {}
    for r in valid:
        for name, count in r.result["overall"]["statuses"].items():
            if name != "ok":
                statuses[name] = statuses.get(name, 0) + int(count)
    return statuses


def _probed(platform: str, cap: str, runs: Sequence[Run]) -> CapabilityStatus:
    # Declarations (unsupported) of an incomplete run still hold; its results do not.
    entries = [e for r in runs if (e := r.capability(cap)) is not None
               and (r.exclusion is None or status_of(e) == "unsupported")]
    if not entries:
        return CapabilityStatus(platform, cap, "not-measured", "", unmeasured_reason(runs))
    status = min((status_of(e) for e in entries), key=PRIORITY.index)
    chosen = next(e for e in entries if status_of(e) == status)
    reason = chosen.get("reason")
    failed = sum(status_of(e) == "fail" for e in entries)
    if status == "fail" and len(entries) > 1:
        reason = f"failed in {failed} of {len(entries)} runs" + (f": {reason}" if reason else "")
    if status == "not-measured" and not reason:
        reason = "the probe gave no reason"
    return CapabilityStatus(platform, cap, status, short(chosen.get("evidence")),
                            str(reason) if reason else None)


def _from_cell(cell: Cell, runs: Sequence[Run]) -> CapabilityStatus:
    status = read_status(cell.status) or "not-measured"
    entry = next((e for r in runs if (e := r.dimension(cell.dimension)) is not None), {})
    evidence = cell.text if status in ("pass", "fail") else ""
    observed = entry.get("evidence") or {k: entry[k] for k in OBSERVED if k in entry}
    extra = short(observed) if observed else ""
    if extra:
        evidence = f"{evidence}; {extra}" if evidence else extra
    return CapabilityStatus(cell.platform, cell.dimension, status, evidence, cell.reason)


def statuses(groups: dict[str, list[Run]], cells: Sequence[Cell]) -> list[CapabilityStatus]:
    """Every capability id for every platform of the matrix."""
    platforms = list(dict.fromkeys(c.platform for c in cells))
    measured = {(c.platform, c.dimension): c for c in cells
                if c.source == "measured" and c.dimension != "crud.mixed"}
    out = []
    for platform in platforms:
        runs = groups.get(platform, [])
        for cap in CAPABILITY_IDS:
            if cap == "crud.mixed":
                out.append(_mixed(platform, runs))
            elif (platform, cap) in measured:
                out.append(_from_cell(measured[(platform, cap)], runs))
            else:
                out.append(_probed(platform, cap, runs))
    return out


def records(items: Sequence[CapabilityStatus]) -> list[dict[str, Any]]:
    return [asdict(i) for i in items]


def counts(items: Sequence[CapabilityStatus]) -> dict[str, int]:
    """How many capabilities have each status."""
    return {s: sum(i.status == s for i in items) for s in STATUSES}


def _by_platform(items: Sequence[CapabilityStatus]) -> dict[str, list[CapabilityStatus]]:
    out: dict[str, list[CapabilityStatus]] = {}
    for item in items:
        out.setdefault(item.platform, []).append(item)
    return out


def markdown(
    items: Sequence[CapabilityStatus], groups: dict[str, list[Run]], names: dict[str, str]
) -> str:
    """capabilities.md: per platform, its runs' provenance and every capability."""
    parts = ["# Capability report", "",
             "Statuses: **pass** (verified on the target), **fail** "
             "(tried and wrong), **unsupported** (declared absent), **not-measured** (with "
             "the reason). Declared support is never reported as pass.", ""]
    for platform, caps in _by_platform(items).items():
        title = names.get(platform, platform)
        parts += [f"## {platform}" + (f" ({title})" if title != platform else ""), ""]
        runs = groups.get(platform, [])
        if runs:
            for run in runs:
                s = run_summary(run)
                parts.append(f"- run `{s['run_id']}` at {s['started_at']}: {target_text(s)}, "
                             f"commit {s['commit']}, {s['scenario']}, {s['fixture_size']}; "
                             f"{s['machine']}; {validity_text(s)}")
        else:
            parts.append("- no run result for this platform")
        tally = counts(caps)
        parts += ["", " · ".join(f"{k} {v}" for k, v in tally.items()), "",
                  "| capability | status | evidence | reason |", "|---|---|---|---|"]
        for c in caps:
            cells = [f"`{c.capability}`", f"**{c.status}**", c.evidence or "—", c.reason or "—"]
            parts.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        parts.append("")
    return "\n".join(parts)


def junit(items: Sequence[CapabilityStatus], groups: dict[str, list[Run]]) -> bytes:
    """JUnit XML: a test case per capability and platform; skipped when unsupported or
    not-measured."""
    root = ET.Element("testsuites", name="crmbench capabilities")
    total = {"tests": 0, "failures": 0, "skipped": 0}
    for platform, caps in _by_platform(items).items():
        tally = counts(caps)
        suite = ET.SubElement(root, "testsuite", name=f"capabilities.{platform}",
                              tests=str(len(caps)), failures=str(tally["fail"]),
                              errors="0", skipped=str(tally["unsupported"] + tally["not-measured"]))
        props = ET.SubElement(suite, "properties")
        for run in groups.get(platform, []):
            s = run_summary(run)
            ET.SubElement(props, "property", name=f"run.{s['run_id']}",
                          value=f"{s['target']} commit {s['commit']} {validity_text(s)}")
        for c in caps:
            case = ET.SubElement(suite, "testcase", name=c.capability,
                                 classname=f"crmbench.{platform}", time="0")
            if c.status == "fail":
                failure = ET.SubElement(case, "failure", message=c.reason or "failed")
                failure.text = c.evidence
            elif c.status in ("unsupported", "not-measured"):
                message = c.status + (f": {c.reason}" if c.reason else "")
                ET.SubElement(case, "skipped", message=message)
            elif c.evidence:
                ET.SubElement(case, "system-out").text = c.evidence
        total["tests"] += len(caps)
        total["failures"] += tally["fail"]
        total["skipped"] += tally["unsupported"] + tally["not-measured"]
    root.attrib.update({k: str(v) for k, v in total.items()})
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
