"""Exception tree of crmbench.

    CrmBenchError                 root of every error raised on purpose
     +-- UserError                bad input or configuration; printed without a traceback
     |    +-- FixtureError        missing, incomplete or inconsistent fixture data
     |    +-- DatabaseError       database unreachable, or holding other data than asked
     +-- TargetUnreachable        the benchmark target does not answer (exit code 4)
"""

from __future__ import annotations


class CrmBenchError(Exception):
    """Root of all errors raised deliberately by crmbench."""

    exit_code = 1


class UserError(CrmBenchError):
    """An error caused by input or configuration; shown to the user without a traceback."""

    exit_code = 2


class FixtureError(UserError):
    """Fixture data is missing, incomplete or does not match its manifest."""


class DatabaseError(UserError):
    """The database cannot be reached or holds data other than requested."""

    exit_code = 4


class TargetUnreachable(CrmBenchError):
    """The benchmark target does not answer."""

    exit_code = 4
