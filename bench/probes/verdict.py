"""The one verdict vocabulary of probes, results, reports and JUnit.

``pass`` (observed on the target), ``fail`` (tried and wrong), ``unsupported`` (declared
absent by the adapter) and ``not-measured`` (with the reason). Older result files and
reports used other words for the last; :func:`read_status` maps them when reading.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

VerdictStatus = Literal["pass", "fail", "unsupported", "not-measured"]
STATUSES: tuple[VerdictStatus, ...] = get_args(VerdictStatus)
# Words written before the vocabulary was one; read as their current equivalent.
OLD_WORDS: dict[str, VerdictStatus] = {
    "not-measurable": "not-measured", "not measurable": "not-measured",
    "not measured": "not-measured", "measured": "pass",
}


class Verdict(msgspec.Struct, frozen=True, omit_defaults=True):
    """One capability's status with what was observed and why."""

    status: VerdictStatus
    evidence: Any = None
    reason: str | None = None


def verdict(status: VerdictStatus, evidence: Any = None, reason: str | None = None) -> Verdict:
    """A verdict; an empty reason is left out."""
    return Verdict(status, evidence, reason or None)


def read_status(word: object) -> VerdictStatus | None:
    """The current word for a status read from a file (old words mapped), else None."""
    return _BY_WORD.get(word) if isinstance(word, str) else None


_BY_WORD: dict[str, VerdictStatus] = {**{s: s for s in STATUSES}, **OLD_WORDS}
