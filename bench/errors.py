"""crmbench's exception tree, shared with the reference CRM (see :mod:`reference_impl.errors`).

The classes are defined in the service package so that it imports nothing from ``bench``.
"""

from __future__ import annotations

from reference_impl.errors import (
    CrmBenchError,
    DatabaseError,
    FixtureError,
    TargetUnreachable,
    UserError,
)


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT from Ctrl-C, SIGTERM, SIGHUP): runs end in order."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def stop_reason(exc: BaseException) -> str:
    """The result's reason for a run stopped by ``exc`` (a KeyboardInterrupt)."""
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    return "interrupted by the user (SIGINT)" if name == "SIGINT" else f"stopped by {name}"


__all__ = ["CrmBenchError", "DatabaseError", "FixtureError", "Interrupted", "TargetUnreachable",
           "UserError", "stop_reason"]
