"""Gate settings: defaults, a ``[gate]`` table in a TOML file, then flags.

A gate settings file (``ci/gate.toml``) or a scenario file may hold::

    [gate]
    p50 = "10%"          # change of p50 latency that counts: relative ...
    p99 = "20% and 1ms"  # ... or absolute (ms), or both (both must be exceeded)
    throughput = "10%"
    alpha = 0.05         # family-wise significance level
    min_runs = 5         # runs a side before run-to-run spread is known
    scope = "overall"    # gated metrics: "overall" (+ dimensions) or "all" (+ per operation)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.results.collect import Run

DEFAULT_SEED = 20260215
SCOPES = ("overall", "all")
Scope = Literal["overall", "all"]
_PART = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|ms)?\s*$")


@dataclass(frozen=True)
class Threshold:
    """A change that counts: relative (0.10 = 10 %), absolute (in the metric's unit), or both."""

    rel: float | None = None
    abs: float | None = None

    def exceeded(self, base: float, current: float) -> bool:
        """Whether ``current`` differs from ``base`` by more than every part given."""
        diff = abs(current - base)
        rel_ok = self.rel is None or (base > 0 and diff / base > self.rel)
        abs_ok = self.abs is None or diff > self.abs
        return rel_ok and abs_ok

    def __str__(self) -> str:
        parts = []
        if self.rel is not None:
            parts.append(f"{self.rel * 100:g}%")
        if self.abs is not None:
            parts.append(f"{self.abs:g}ms")
        return " and ".join(parts) or "any"


def parse_threshold(raw: str | float, name: str, *, absolute: bool = True) -> Threshold:
    """``"10%"``, ``"10"``, ``"1ms"``, ``"10% and 1ms"``; refuses anything else."""
    text = str(raw).strip()
    rel = abs_ = None
    for part in re.split(r"\s*(?:and|\+|,)\s*", text):
        m = _PART.match(part)
        if not m:
            raise UserError(f"{name}: {raw!r} is not a threshold like 10%, 1ms or "
                            "'10% and 1ms'")
        value, unit = float(m.group(1)), m.group(2) or "%"
        if unit == "ms":
            if not absolute:
                raise UserError(f"{name}: {raw!r}: only a percentage applies here")
            if not 0 < value < 60_000 or abs_ is not None:
                raise UserError(f"{name}: {raw!r}: give one absolute part above 0 ms")
            abs_ = value
        else:
            if not 0 < value < 1000 or rel is not None:
                raise UserError(f"{name}: {raw!r}: give one percentage above 0%")
            rel = value / 100.0
    return Threshold(rel, abs_)


def parse_percent(raw: str | float, name: str) -> float:
    """``"10%"``, ``"10"`` or ``10`` -> 0.10; refuses what is not a positive percentage."""
    found = parse_threshold(raw, name, absolute=False)
    assert found.rel is not None
    return found.rel


@dataclass(frozen=True)
class Thresholds:
    """What counts as a change per metric, the significance level and the gated scope."""

    p50: Threshold = Threshold(rel=0.10)
    p99: Threshold = Threshold(rel=0.20)
    throughput: Threshold = Threshold(rel=0.10)
    alpha: float = 0.05
    min_runs: int = 5
    scope: Scope = "overall"

    def of(self, metric: str) -> Threshold:
        found: Threshold = getattr(self, metric)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"p50": str(self.p50), "p99": str(self.p99), "throughput": str(self.throughput),
                "alpha": self.alpha, "min_runs": self.min_runs, "scope": self.scope}


KEYS = ("p50", "p99", "throughput", "alpha", "min_runs", "scope")


def check_setting(key: str, value: Any, where: str) -> Any:
    """One ``[gate]`` setting or flag, checked and converted."""
    if key in ("p50", "p99"):
        return parse_threshold(value, where)
    if key == "throughput":
        return parse_threshold(value, where, absolute=False)
    if key == "alpha":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise UserError(f"{where} must be a number between 0 and 1")
        return float(value)
    if key == "min_runs":
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 1000:
            raise UserError(f"{where} must be a whole number of runs from 2 to 1000")
        return value
    if key == "scope":
        if value not in SCOPES:
            raise UserError(f"{where} must be one of {', '.join(SCOPES)}")
        return value
    raise UserError(f"{where}: unknown setting")


def thresholds_from_file(path: Path) -> dict[str, Any]:
    """The ``[gate]`` table of a gate settings file or a scenario file (may be empty)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"settings file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    table = data.get("gate", {})
    if not isinstance(table, dict):
        raise UserError(f"{path}: [gate] must be a table")
    unknown = set(table) - set(KEYS)
    if unknown:
        raise UserError(f"{path}: [gate] has unknown keys: {', '.join(sorted(unknown))}")
    return {k: check_setting(k, v, f"{path}: gate.{k}") for k, v in table.items()}


def resolve_thresholds(
    settings: Path | None, runs: Sequence[Run], flags: dict[str, Any]
) -> Thresholds:
    """Defaults, then the settings file (else the runs' scenario file), then flags."""
    if settings is None:
        sources = {run.scenario.get("source") for run in runs} - {None}
        found = [Path(str(s)) for s in sources if Path(str(s)).is_file()]
        settings = found[0] if len(found) == 1 else None
    values = thresholds_from_file(settings) if settings else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return replace(Thresholds(), **values)
