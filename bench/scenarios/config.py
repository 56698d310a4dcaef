"""Scenario files: TOML with a ``version`` key, validated against a published JSON Schema.

Precedence of settings: the file, then ``CRMBENCH_*`` environment variables
(``CRMBENCH_PROFILE``, ``CRMBENCH_USERS``, ``CRMBENCH_RATE``), then command-line flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from bench.errors import UserError
from bench.measure.noise import NoiseLimits
from bench.probes.registry import check_tables

SCENARIO_DIR = Path(__file__).parent
SCHEMA_PATH = SCENARIO_DIR / "scenario.schema.json"
OPERATIONS = (
    "customer_360", "search_customers", "list_leads", "get_customer", "create_lead",
    "update_opportunity_stage", "log_activity", "update_customer",
)


@dataclass(frozen=True)
class Phases:
    warmup_s: float
    measure_s: float
    cooldown_s: float
    calibration_s: float

    @property
    def total_s(self) -> float:
        return self.warmup_s + self.measure_s + self.cooldown_s


@dataclass(frozen=True)
class Validity:
    cpu_limit_pct: float = 90.0
    loop_lag_p99_ms: float = 10.0
    min_rate_fraction: float = 0.95
    late_tolerance_ms: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """A resolved scenario: file settings with environment and flags applied.

    A probe-only scenario (``workload = false``) has no users, rate or mix.
    """

    name: str
    description: str
    source: str
    sha256: str
    users: int
    rate: float
    arrival: str
    seed: int
    key_distribution: str
    zipf_exponent: float
    mix: dict[str, float]
    profile: str
    phases: Phases
    validity: Validity
    # Checked against the registered probes' option types when the file is read.
    probes: dict[str, Any]
    workload: bool = True
    engines: dict[str, Any] = field(default_factory=dict)
    noise: NoiseLimits = field(default_factory=NoiseLimits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def probe_rate(self) -> float:
        """Calls per second the in-run probes send beside the workload (agent runs, events)."""
        return sum(float(self.probes.get(k) or 0) for k in ("agent_rate", "event_rate"))


def available() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def _find(name_or_file: str) -> Path:
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"scenario file {path} does not exist")
        return path
    shipped = SCENARIO_DIR / f"{name_or_file}.toml"
    if not shipped.is_file():
        raise UserError(
            f"unknown scenario {name_or_file!r}; shipped: {', '.join(available())}, "
            "or give a path to a .toml file"
        )
    return shipped


MERGED_REQUIRED = ("users", "rate", "mix", "profiles")


def _read_merged(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], str]:
    """The file's settings over those of its ``base``; the digest covers every file read."""
    if path.resolve() in seen:
        raise UserError(f"{path}: scenario bases form a cycle")
    raw_bytes = path.read_bytes()
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    schema = json.loads(SCHEMA_PATH.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path)
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "(top level)"
        raise UserError(f"{path}: {where}: {first.message}")
    tables = {k: data[k] for k in ("probes", "engines") if k in data}
    problems = check_tables(tables)
    if problems:
        raise UserError(f"{path}: {problems[0]}")
    digest = hashlib.sha256(raw_bytes)
    base_name = data.pop("base", None)
    if base_name is None:
        return data, digest.hexdigest()
    base, base_digest = _read_merged(_find(base_name), (*seen, path.resolve()))
    digest.update(base_digest.encode())
    return _merge(base, data), digest.hexdigest()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_number(name: str, kind: type[int] | type[float]) -> int | float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def load_scenario(
    name_or_file: str = "mixed",
    *,
    profile: str | None = None,
    users: int | None = None,
    rate: float | None = None,
) -> Scenario:
    """Read, validate and resolve a scenario; raise UserError with the exact problem."""
    path = _find(name_or_file)
    data, digest = _read_merged(path, seen=())
    missing = [k for k in MERGED_REQUIRED if k not in data]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)} (in the file or its base)")

    profile = profile or os.environ.get("CRMBENCH_PROFILE") or "standard"
    if profile not in data["profiles"]:
        raise UserError(
            f"scenario {data['name']!r} has no profile {profile!r}; "
            f"it has: {', '.join(data['profiles'])}"
        )
    env_users = _env_number("CRMBENCH_USERS", int)
    env_rate = _env_number("CRMBENCH_RATE", float)
    final_users = int(users if users is not None else env_users or data["users"])
    final_rate = float(rate if rate is not None else env_rate or data["rate"])
    if final_users < 1:
        raise UserError(f"users must be at least 1, got {final_users}")
    if final_rate <= 0:
        raise UserError(f"rate must be positive, got {final_rate}")
    mix = {op: float(w) for op, w in data["mix"].items() if float(w) > 0}
    if not mix:
        raise UserError(f"{path}: mix: every weight is zero")
    prof = data["profiles"][profile]
    keys = data.get("keys", {})
    workload = bool(data.get("workload", True))
    if not workload:
        # Probes only: no users, no rate, no mix, whatever a base scenario says.
        final_users, final_rate, mix = 0, 0.0, {}
    return Scenario(
        name=data["name"],
        description=data.get("description", ""),
        source=str(path),
        sha256=digest,
        users=final_users,
        rate=final_rate,
        arrival=data.get("arrival", "pacing"),
        seed=int(data.get("seed", 1)),
        key_distribution=keys.get("distribution", "zipfian"),
        zipf_exponent=float(keys.get("zipf_exponent", 0.99)),
        mix=mix,
        profile=profile,
        phases=Phases(
            warmup_s=float(prof["warmup_s"]),
            measure_s=float(prof["measure_s"]),
            cooldown_s=float(prof["cooldown_s"]),
            calibration_s=float(prof.get("calibration_s", 0)),
        ),
        validity=Validity(**data.get("validity", {})),
        probes=dict(data.get("probes", {})),
        workload=workload,
        engines=dict(data.get("engines", {})),
        noise=NoiseLimits(**{k: float(v) for k, v in data.get("noise", {}).items()}),
    )
