"""Run results as reports and comparisons read them: loading, bundles, tolerant access.

An input is a result file (``result.schema.json``), a folder of result files, or a
baseline bundle (``{"crmbench_baseline": 1, "results": [result, ...]}``, written by
``crmbench gate --write-baseline``). ``target.platform`` names the platform (falling back
to the adapter scheme). Probes add two optional top-level keys, read when present:

    "dimensions": {                       # the measured dimensions of the catalogue
      "agent_latency": {                  # any key; "capability" names the dimension
        "capability": "agent.latency",
        "status": "pass" | "fail" | "unsupported" | "not-measured",
        "value": 89.0,                    # headline figure: a number, or a level name
        "unit": "ms",
        "p50": 80.1, "p95": 120.0, "p99": 150.2,        # numbers, optional
        "reason": "why not-measured, or why it failed",
        "evidence": {...},                # what the probe observed, in short
        "histogram": "HISTF...",          # optional LatencyHistogram encoding
        "breakdown": {"identify": 12.0},  # optional, per step: a number in `unit`, or a
                                          # summary {"mean": .., "p50": ..} in ms
        "curve": [{"nodes": 10, "deploy_s": 0.1, "run_s": 0.2}]   # optional
      }
    },
    "capabilities": {
      "agent.takeover": {"status": "pass", "evidence": "..." | {...}, "reason": "..."}
    }

Anything missing (key, entry or field) reads as "not-measured"; wrong types are ignored.
Statuses of older files ("not-measurable", "not measured") read as their current word.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.adapters.base import FAULT_STATUSES, Status
from bench.errors import UserError
from bench.probes.verdict import VerdictStatus, read_status
from bench.results.store import read_result, validate, write_result

BUNDLE_KEY = "crmbench_baseline"
BUNDLE_VERSION = 1


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


# What counts as a failed call (the capacity SLO's error share, crud.mixed): faults and
# rate limiting. A refusal, a not-found or an operation the platform does not offer is an
# answer, not a failure to serve the load (a platform that never reopens a won deal
# refuses to, at any rate).
FAILURES = (*(s.value for s in FAULT_STATUSES), Status.rate_limited.value)


def failures(overall: dict[str, Any]) -> int:
    """Calls of a result's ``overall`` (or one operation) that failed."""
    statuses = overall.get("statuses") or {}
    return sum(int(statuses.get(s, 0)) for s in FAILURES)


@dataclass(frozen=True)
class Run:
    """One run result and where it was read from."""

    source: str
    result: dict[str, Any]

    @property
    def platform(self) -> str:
        target = self.result.get("target") or {}
        return str(target.get("platform") or target.get("adapter") or "unknown")

    @property
    def scenario(self) -> dict[str, Any]:
        scenario: dict[str, Any] = self.result.get("scenario") or {}
        return scenario

    @property
    def measured(self) -> bool:
        """Complete and holding mixed-workload operations."""
        return bool(self.result.get("complete")) and bool(self.result.get("operations"))

    @property
    def problem(self) -> str | None:
        """Why the run cannot be trusted (incomplete or invalid), or None."""
        if not self.result.get("complete"):
            if self.result.get("finished_at") is None and not self.result.get("abort_reason"):
                # Written while the run went on, and never replaced: the harness was killed
                # (SIGKILL, power loss) or is still running.
                return ("incomplete: checkpoint of a run that never finished (killed, or "
                        "still running)")
            return f"incomplete: {self.result.get('abort_reason') or 'the run did not finish'}"
        if not self.result.get("valid"):
            reasons = "; ".join(self.result.get("invalid_reasons") or []) or "no reason given"
            return f"invalid: {reasons}"
        return None

    @property
    def noisy(self) -> bool:
        """Flagged noisy by the harness: reported, but no evidence for a comparison."""
        noise = self.result.get("noise")
        return isinstance(noise, dict) and bool(noise.get("noisy"))

    @property
    def exclusion(self) -> str | None:
        """Why reports leave the run out of every figure (incomplete or invalid), or None.

        A noisy run stays in the figures, flagged: what disturbed it is part of its result.
        It is no evidence for a gate (see ``crmbench gate``).
        """
        return self.problem

    @property
    def noise_note(self) -> str | None:
        """Why the harness flagged the run noisy, or None."""
        if not self.noisy:
            return None
        return f"noisy: {'; '.join(self.noise_reasons) or 'no reason given'}"

    @property
    def label(self) -> str | None:
        """The server configuration named by ``crmbench run --label`` (older files: None)."""
        label = (self.result.get("target") or {}).get("label")
        return str(label) if label else None

    @property
    def customers(self) -> int | None:
        """Fixture size: customers in the target's keyspace, when the run recorded it."""
        keyspace = (self.result.get("fixtures") or {}).get("keyspace") or {}
        count = keyspace.get("customers") if isinstance(keyspace, dict) else None
        return int(count) if isinstance(count, int) and not isinstance(count, bool) else None

    @property
    def noise_reasons(self) -> list[str]:
        noise = self.result.get("noise")
        reasons = noise.get("reasons") if isinstance(noise, dict) else None
        return [str(r) for r in reasons] if isinstance(reasons, list) else []

    def operations(self) -> dict[str, dict[str, Any]]:
        """Per-operation figures plus ``overall`` (empty when nothing was measured)."""
        ops: dict[str, dict[str, Any]] = dict(self.result.get("operations") or {})
        if ops and self.result.get("overall"):
            ops["overall"] = self.result["overall"]
        return ops

    def dimensions(self) -> dict[str, dict[str, Any]]:
        """Probe entries by dimension id (their ``capability``, else their key)."""
        raw = self.result.get("dimensions")
        if not isinstance(raw, dict):
            return {}
        return {str(e.get("capability") or key): e for key, e in raw.items()
                if isinstance(e, dict)}

    def dimension(self, dim_id: str) -> dict[str, Any] | None:
        return self.dimensions().get(dim_id)

    def dimension_number(self, dim_id: str, key: str) -> float | None:
        entry = self.dimension(dim_id)
        return _number(entry.get(key)) if entry else None

    def capability(self, cap_id: str) -> dict[str, Any] | None:
        raw = self.result.get("capabilities")
        entry = raw.get(cap_id) if isinstance(raw, dict) else None
        return entry if isinstance(entry, dict) else None

    def measure_samples(self) -> list[float]:
        """Completed requests per second during the measurement phase."""
        return [
            float(row.get("completed", row.get("rate", 0)))
            for row in self.result.get("timeline") or []
            if row.get("phase") == "measure"
        ]


def status_of(entry: dict[str, Any] | None) -> VerdictStatus:
    """A probe entry's status: ``pass`` for a bare figure, ``not-measured`` when unknown."""
    entry = entry or {}
    status = entry.get("status")
    if status is None and entry.get("value") is not None:
        return "pass"
    return read_status(status) or "not-measured"


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.is_file())
        if not files:
            raise UserError(f"{path} holds no .json result files")
        return files
    return [path]


def _read(path: Path) -> list[Run]:
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"result file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a JSON result file: {exc}") from exc
    if isinstance(head, dict) and BUNDLE_KEY in head:
        runs = []
        for i, result in enumerate(head.get("results") or []):
            problems = validate(result) if isinstance(result, dict) else ["not an object"]
            if problems:
                raise UserError(f"{path}: results[{i}] does not match the result schema: "
                                f"{problems[0]}")
            runs.append(Run(f"{path}#{i}", result))
        if not runs:
            raise UserError(f"{path}: the baseline bundle holds no results")
        return runs
    return [Run(str(path), read_result(path))]


def load_runs(paths: Iterable[Path]) -> list[Run]:
    """Read result files, folders of them and baseline bundles, in the order given."""
    runs = [run for path in paths for file in _expand(path) for run in _read(file)]
    if not runs:
        raise UserError("no run results given")
    return runs


def by_platform(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by platform, in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.platform, []).append(run)
    return groups


def write_bundle(runs: Sequence[Run], path: Path, note: str) -> Path:
    """Store runs as one baseline file (the load generator's log path is dropped)."""
    results = [{k: v for k, v in run.result.items() if k != "log"} for run in runs]
    return write_result(path, {BUNDLE_KEY: BUNDLE_VERSION, "note": note, "results": results})
