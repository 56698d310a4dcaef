"""Open-model send schedules: per-user intended send times and lateness accounting.

All times are `time.perf_counter_ns()` integers.
"""

from __future__ import annotations

import bisect
import random
import time
from typing import Literal

NS_PER_S = 1_000_000_000
DEFAULT_LATE_TOLERANCE_NS = 1_000_000

PacerMode = Literal["pacing", "poisson"]


class Pacer:
    """Intended send times for one simulated user: random phase, then fixed or Poisson gaps."""

    def __init__(
        self,
        period_s: float,
        rng: random.Random,
        mode: PacerMode = "pacing",
        start_ns: int | None = None,
    ) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s!r}")
        if mode not in ("pacing", "poisson"):
            raise ValueError(f"mode must be 'pacing' or 'poisson', got {mode!r}")
        self.period_s = period_s
        self.mode: PacerMode = mode
        self._rng = rng
        self._period_ns = round(period_s * NS_PER_S)
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns
        # The random phase keeps users created together from firing in the same instant.
        self.phase_ns = int(rng.random() * self._period_ns)
        self._anchor_ns = self.start_ns + self.phase_ns
        self._sent = 0
        self._next_ns = self._anchor_ns

    def peek(self) -> int:
        """The next intended send time, without advancing."""
        return self._next_ns

    def next_intended(self) -> int:
        """Return the next intended send time and advance the schedule."""
        current = self._next_ns
        self._sent += 1
        if self.mode == "pacing":
            # Computed from the anchor so rounding never accumulates into drift.
            self._next_ns = self._anchor_ns + self._sent * self._period_ns
        else:
            gap_s = self._rng.expovariate(1.0 / self.period_s)
            self._next_ns = current + round(gap_s * NS_PER_S)
        return current


def is_late(
    intended_ns: int, actual_ns: int, tolerance_ns: int = DEFAULT_LATE_TOLERANCE_NS
) -> bool:
    """Whether a send started more than `tolerance_ns` after its intended time."""
    return actual_ns - intended_ns > tolerance_ns


class LateCounter:
    """Counts sends and how many of them started late."""

    def __init__(self, tolerance_ns: int = DEFAULT_LATE_TOLERANCE_NS) -> None:
        self.tolerance_ns = tolerance_ns
        self.total = 0
        self.late = 0

    def observe(self, intended_ns: int, actual_ns: int) -> bool:
        """Count one send; return whether it was late."""
        self.total += 1
        late = is_late(intended_ns, actual_ns, self.tolerance_ns)
        if late:
            self.late += 1
        return late

    def add(self, other: LateCounter) -> None:
        """Merge another counter (e.g. from another process) into this one."""
        self.total += other.total
        self.late += other.late

    @property
    def fraction(self) -> float:
        """Share of sends that were late; 0.0 when nothing was sent."""
        return self.late / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Plain values for a result file."""
        return {
            "sends": self.total,
            "late": self.late,
            "late_fraction": round(self.fraction, 6),
            "tolerance_ms": self.tolerance_ns / 1_000_000,
        }


def user_period(users: int, rate_per_s: float) -> float:
    """Per-user pacing period (seconds) so that `users` together send `rate_per_s`."""
    if users <= 0:
        raise ValueError(f"users must be positive, got {users}")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
    return users / rate_per_s


def burst_fraction(send_times_ns: list[int], window_ns: int) -> float:
    """Largest fraction of sends falling in any half-open window of `window_ns` length."""
    if not send_times_ns:
        return 0.0
    if window_ns <= 0:
        raise ValueError(f"window_ns must be positive, got {window_ns}")
    times = sorted(send_times_ns)
    # The busiest window can always be taken to start at a send.
    best = max(bisect.bisect_left(times, t + window_ns, lo=i) - i for i, t in enumerate(times))
    return best / len(times)
