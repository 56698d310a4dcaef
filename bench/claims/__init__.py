"""Published vendor claims: figures nobody has reproduced, shown beside measurements.

The default file is vendor-claims-2026q1.toml beside this module. A claims file has
a ``[source]`` table, a ``[dimensions]`` table naming the claimed figures and one
``[platforms.<key>]`` table per platform, whose keys match ``target.platform`` of results.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError

DEFAULT_CLAIMS = Path(__file__).parent / "vendor-claims-2026q1.toml"

# Claimed figure key -> (dimension id of the capability catalogue, key of the note beside it).
CLAIM_KEYS: dict[str, tuple[str, str | None]] = {
    "agent_latency_ms": ("agent.latency", "agent_note"),
    "event_delay_ms": ("cdp.event_delay", "event_note"),
    "pack_enable": ("pack.enable_time", None),
    "workflow_max_nodes": ("workflow.max_nodes", "workflow_note"),
    "sla_granularity": ("sla.granularity", None),
}


@dataclass(frozen=True)
class Claim:
    """One claimed figure of one platform."""

    platform: str
    dimension: str
    value: float | str
    note: str | None


@dataclass(frozen=True)
class Claims:
    """A claims file: where the figures come from, and the figures by platform."""

    path: Path
    source: dict[str, Any]
    names: dict[str, str]
    claims: list[Claim] = field(default_factory=list)

    def for_platform(self, platform: str) -> dict[str, Claim]:
        """Claims of one platform by dimension id."""
        return {c.dimension: c for c in self.claims if c.platform == platform}

    @property
    def source_line(self) -> str:
        """Title, date and verification state of the source, for captions."""
        verified = "verified" if self.source.get("verified") else "not verified"
        title = self.source.get("title", self.path.name)
        return f"{title} ({self.source.get('date', 'undated')}, {verified})"


def load_claims(path: Path | None = None) -> Claims:
    """Read a claims file (default: the copy shipped with the package)."""
    path = path or DEFAULT_CLAIMS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"claims file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    platforms = data.get("platforms")
    if not isinstance(platforms, dict):
        raise UserError(f"{path}: no [platforms.<key>] tables")
    claims: list[Claim] = []
    for key, table in platforms.items():
        if not isinstance(table, dict):
            raise UserError(f"{path}: platforms.{key} is not a table")
        for figure, (dimension, note_key) in CLAIM_KEYS.items():
            value = table.get(figure)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                continue
            note = table.get(note_key) if note_key else None
            claims.append(Claim(key, dimension, value, str(note) if note else None))
    names = {key: str(t.get("name", key)) for key, t in platforms.items()}
    return Claims(path, dict(data.get("source", {})), names, claims)
