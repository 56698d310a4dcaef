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

__all__ = ["CrmBenchError", "DatabaseError", "FixtureError", "TargetUnreachable", "UserError"]
