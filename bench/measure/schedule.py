"""Open-model send schedules: per-user intended send times, wake-ups and lateness accounting.

All times are `time.perf_counter_ns()` integers.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import heapq
import itertools
import os
import random
import sys
import time
from typing import Any, Generic, Literal, TypeVar

NS_PER_S = 1_000_000_000
DEFAULT_LATE_TOLERANCE_NS = 1_000_000

PacerMode = Literal["pacing", "poisson"]
T = TypeVar("T")


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


class WakeQueue(Generic[T]):
    """Waiters ordered by deadline; equal deadlines wake in the order they were added."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when_ns: int, waiter: T) -> bool:
        """Add a waiter; return whether it is now the earliest (the timer must move)."""
        seq = next(self._seq)
        heapq.heappush(self._heap, (when_ns, seq, waiter))
        return self._heap[0][1] == seq

    def next_ns(self) -> int | None:
        """The earliest deadline, or None when nobody waits."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ns: int) -> list[T]:
        """Remove and return, earliest first, every waiter whose deadline is <= now_ns."""
        due: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            due.append(heapq.heappop(heap)[2])
        return due


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2000000


class MonotonicTimer:
    """A Linux timerfd on CLOCK_MONOTONIC, the clock of ``perf_counter_ns``.

    It becomes readable at an absolute deadline with microsecond precision, where event
    loop timers (libev, libuv, selectors) round their poll timeout up to whole ms.
    """

    def __init__(self) -> None:
        if not self.available():
            raise OSError("timerfd on the perf_counter clock needs Linux")
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._settime = self._libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p]
        fd = int(self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self._fd = fd
        self._spec = _Itimerspec()
        self.armed_ns: int | None = None

    @staticmethod
    def available() -> bool:
        """Whether timerfd exists here and shares its clock with perf_counter_ns."""
        if not sys.platform.startswith("linux"):
            return False
        impl = time.get_clock_info("perf_counter").implementation
        return impl == "clock_gettime(CLOCK_MONOTONIC)"

    def fileno(self) -> int:
        return self._fd

    def arm(self, when_ns: int | None) -> None:
        """Fire once at perf_counter_ns ``when_ns`` (past deadlines fire at once); None disarms."""
        value = self._spec.it_value
        if when_ns is None:
            value.tv_sec = value.tv_nsec = 0
        else:
            # An all-zero value would disarm instead of firing.
            value.tv_sec, value.tv_nsec = divmod(max(when_ns, 1), NS_PER_S)
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed_ns = when_ns

    def consume(self) -> bool:
        """Reset readability; return whether the timer had fired."""
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return False
        self.armed_ns = None
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GeventAlarm:
    """Wakes gevent greenlets at their deadlines to within tens of microseconds.

    ``gevent.sleep`` wakes up to a millisecond late (libev rounds its epoll timeout up to
    whole ms), which alone makes a few percent of sends late. Here every waiter parks on
    a ``Waiter``; one timerfd, armed at the earliest deadline, is watched by the hub,
    whose callback wakes all waiters that are due. Without timerfd it falls back to
    ``gevent.sleep``.
    """

    def __init__(self, use_timerfd: bool = True) -> None:
        # Imported here: the harness itself loads this module without gevent.
        import gevent

        self._gevent: Any = gevent
        self.queue: WakeQueue[Any] = WakeQueue()
        self.timer: MonotonicTimer | None = None
        self._watcher: Any = None
        self.wakeups = 0
        if use_timerfd and MonotonicTimer.available():
            self.timer = MonotonicTimer()
            self._watcher = gevent.get_hub().loop.io(self.timer.fileno(), 1)
            self._watcher.start(self._fire)

    @property
    def precise(self) -> bool:
        return self.timer is not None

    def sleep_until(self, when_ns: int) -> None:
        """Block this greenlet until perf_counter_ns() >= when_ns.

        A past deadline still yields once: a user behind its schedule would otherwise send
        its whole backlog without ever letting the hub poll, tick or stop the run.
        """
        delay = when_ns - time.perf_counter_ns()
        if delay <= 0:
            self._gevent.sleep(0)
            return
        if self.timer is None:
            self._gevent.sleep(delay / NS_PER_S)
            return
        from gevent.hub import Waiter

        waiter = Waiter()
        if self.queue.push(when_ns, waiter):
            self.timer.arm(when_ns)
        waiter.get()

    def _fire(self) -> None:
        # Runs in the hub: each switch runs one woken user until it blocks again. One
        # batch per call: waiters that fall due meanwhile wait for the next loop
        # iteration (the timer, re-armed in the past, is readable at once), so that an
        # overloaded generator still lets the hub poll sockets and run its other timers.
        timer = self.timer
        assert timer is not None
        timer.consume()
        for waiter in self.queue.pop_due(time.perf_counter_ns()):
            self.wakeups += 1
            waiter.switch(None)
        timer.arm(self.queue.next_ns())

    def close(self) -> None:
        """Stop watching the timer; waiters still parked are woken at once."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self.timer is not None:
            run = self._gevent.get_hub().loop.run_callback
            for waiter in self.queue.pop_due(sys.maxsize):
                run(waiter.switch, None)
            self.timer.close()
            self.timer = None
