"""The run result as typed structures, serialised to the published ``result.schema.json``.

Histograms stay :class:`~bench.measure.hdr.LatencyHistogram` objects in the model; they
are encoded once, when the result is written (:func:`to_builtins`), and decoded once,
when a typed result is read (:func:`decode_result`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from bench.measure.hdr import LatencyHistogram
from bench.probes.verdict import Verdict

SCHEMA_VERSION = 1
Phase = Literal["warmup", "measure", "cooldown", "after"]


class Summary(msgspec.Struct):
    """Count and percentiles of a latency histogram, in milliseconds."""

    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    p99_9: float
    max: float
    mean: float


class Latency(msgspec.Struct):
    """From the intended send time (``intended``) and from the actual one (``actual``)."""

    intended: Summary
    actual: Summary


class Histograms(msgspec.Struct):
    intended: LatencyHistogram
    actual: LatencyHistogram


class Operation(msgspec.Struct):
    """One operation's (or all operations') figures over the measurement window."""

    count: int
    statuses: dict[str, int]
    errors: int
    throughput: float
    late: int
    latency_ms: Latency
    histograms: Histograms


class Tool(msgspec.Struct):
    name: str
    version: str


class Target(msgspec.Struct, omit_defaults=True):
    adapter: str
    platform: str
    url: str
    platform_version: str | None
    embedded: bool
    preflight: dict[str, Any] | None = None
    cleanup: dict[str, Any] | None = None
    # The server configuration named by `crmbench run --label` (e.g. "workers=2").
    label: str | None = None
    # The cores of a target the harness started and of the load generator, when pinned:
    # {"server": [1], "generator": [0]}.
    cpus: dict[str, list[int]] | None = None


class Fixtures(msgspec.Struct, omit_defaults=True):
    manifest_sha256: str | None
    keyspace: dict[str, int] | None = None
    reason: str | None = None


class Load(msgspec.Struct):
    """What the load generator offered and achieved; zeros when a run sent no load."""

    users: int
    target_rate: float
    achieved_rate: float
    workers: int
    arrival: str | None
    measure_s: float
    steady: bool


class ValidityLimits(msgspec.Struct):
    cpu_pct: float
    loop_lag_p99_ms: float
    min_rate_fraction: float
    late_tolerance_ms: float


class Validity(msgspec.Struct):
    """The load generator's own figures, judged against the limits."""

    generator_cpu_max_pct: float | None
    generator_cpu_mean_pct: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    achieved_rate: float
    target_rate: float
    rate_fraction: float | None
    late_sends: int
    late_fraction: float
    limits: ValidityLimits


class TimelinePoint(msgspec.Struct):
    """One second of the run."""

    t: int
    phase: str
    rate: int
    completed: int
    errors: int
    p50_ms: float
    p99_ms: float


class Overhead(msgspec.Struct, omit_defaults=True):
    """The harness's own latency against a no-op target (``error`` when it could not run)."""

    target: str
    latency_ms: Latency | None
    users: int | None = None
    rate: float | None = None
    measure_s: float | None = None
    count: int | None = None
    histograms: Histograms | None = None
    error: str | None = None
    after: dict[str, Any] | None = None
    drift_ms: dict[str, float] | None = None


class RunResult(msgspec.Struct, omit_defaults=True):
    """One run: provenance, validity, figures, probe dimensions and capability verdicts."""

    schema_version: int
    run_id: str
    tool: Tool
    started_at: str
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    scenario: dict[str, Any]
    log: str | None
    finished_at: str | None
    complete: bool
    interrupted: bool
    abort_reason: str | None
    valid: bool
    invalid_reasons: list[str]
    target: Target
    fixtures: Fixtures
    load: Load
    validity: Validity
    operations: dict[str, Operation]
    overall: Operation
    timeline: list[TimelinePoint]
    harness_overhead: Overhead | None
    noise: dict[str, Any]
    # Entries of different probes differ beyond "capability" and "status" (schema).
    dimensions: dict[str, dict[str, Any]]
    capabilities: dict[str, Verdict] = {}


def _enc(obj: Any) -> Any:
    if isinstance(obj, LatencyHistogram):
        return obj.encode()
    raise NotImplementedError(f"cannot serialise {type(obj).__name__}")


def _dec(kind: type, obj: Any) -> Any:
    if kind is LatencyHistogram and isinstance(obj, str):
        return LatencyHistogram.decode(obj)
    raise NotImplementedError(f"cannot read {kind.__name__}")


def to_builtins(result: Any) -> Any:
    """JSON-ready data of a result (or of anything holding typed parts); histograms are
    encoded here, once."""
    return msgspec.to_builtins(result, enc_hook=_enc)


def decode_result(data: bytes | dict[str, Any]) -> RunResult:
    """A typed result from a result file's bytes or data (histograms decoded here)."""
    if isinstance(data, bytes):
        return msgspec.json.decode(data, type=RunResult, dec_hook=_dec)
    return msgspec.convert(data, RunResult, dec_hook=_dec)


def summary(hist: LatencyHistogram) -> Summary:
    return Summary(**hist.summary())  # type: ignore[arg-type]


def operation(hists: Histograms, statuses: dict[str, int], late: int,
              seconds: float) -> Operation:
    """An operation's entry from its merged histograms and status counts."""
    count = sum(statuses.values())
    return Operation(
        count=count, statuses=dict(statuses), errors=count - statuses.get("ok", 0),
        throughput=round(count / seconds, 3) if seconds > 0 else 0.0, late=late,
        latency_ms=Latency(summary(hists.intended), summary(hists.actual)),
        histograms=hists,
    )


def empty_operation() -> Operation:
    return operation(Histograms(LatencyHistogram(), LatencyHistogram()), {}, 0, 1.0)
