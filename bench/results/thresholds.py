"""Gate thresholds: defaults, a ``[gate]`` table in a TOML file, then flags.

A gate settings file (``ci/gate.toml``) or a scenario file may hold::

    [gate]
    p50 = "10%"          # relative change of p50 latency that counts
    p99 = "20%"
    throughput = "10%"
    alpha = 0.05         # significance level
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UserError

if TYPE_CHECKING:
    from bench.results.collect import Run

DEFAULT_SEED = 20260215


@dataclass(frozen=True)
class Thresholds:
    """Relative change that counts (0.10 = 10%) per metric, and the significance level."""

    p50: float = 0.10
    p99: float = 0.20
    throughput: float = 0.10
    alpha: float = 0.05

    def of(self, metric: str) -> float:
        return float(getattr(self, metric))


def parse_percent(raw: str | float, name: str) -> float:
    """``"10%"``, ``"10"`` or ``10`` -> 0.10; refuses what is not a positive percentage."""
    text = str(raw).strip().removesuffix("%").strip()
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{name}: {raw!r} is not a percentage like 10%") from None
    if not 0 < value < 1000:
        raise UserError(f"{name}: {raw!r} must be a percentage above 0%")
    return value / 100.0


def thresholds_from_file(path: Path) -> dict[str, float]:
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
    unknown = set(table) - {"p50", "p99", "throughput", "alpha"}
    if unknown:
        raise UserError(f"{path}: [gate] has unknown keys: {', '.join(sorted(unknown))}")
    out = {k: parse_percent(v, f"{path}: gate.{k}") for k, v in table.items() if k != "alpha"}
    if "alpha" in table:
        alpha = table["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise UserError(f"{path}: gate.alpha must be a number between 0 and 1")
        out["alpha"] = float(alpha)
    return out


def resolve_thresholds(
    settings: Path | None, runs: Sequence[Run], flags: dict[str, float | None]
) -> Thresholds:
    """Defaults, then the settings file (else the runs' scenario file), then flags."""
    if settings is None:
        sources = {run.scenario.get("source") for run in runs} - {None}
        found = [Path(str(s)) for s in sources if Path(str(s)).is_file()]
        settings = found[0] if len(found) == 1 else None
    values = thresholds_from_file(settings) if settings else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return replace(Thresholds(), **values)
