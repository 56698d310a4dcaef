"""HDR latency histogram in microseconds (1 us to 60 s, 3 significant digits).

Merge histograms with `add`; never average percentiles across processes or phases.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

SUMMARY_PERCENTILES: dict[str, float] = {
    "p50": 50.0,
    "p90": 90.0,
    "p95": 95.0,
    "p99": 99.0,
    "p99_9": 99.9,
}


def _new_hdr() -> Any:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


@lru_cache(maxsize=1)
def _median_values() -> npt.NDArray[np.float64]:
    """Median-equivalent value of every counts index (the same for every histogram here)."""
    h = _new_hdr()
    return np.array(
        [h._hdr_median_equiv_value(h.get_value_from_index(i)) for i in range(h.counts_len)],
        dtype=np.float64,
    )


def _restore(encoded: str, overflow: int) -> LatencyHistogram:
    hist = LatencyHistogram.decode(encoded)
    hist.overflow = overflow
    return hist


class LatencyHistogram:
    """Latency samples recorded in nanoseconds, stored in microseconds, reported in ms."""

    def __init__(self) -> None:
        self._h: Any = _new_hdr()
        # Samples outside [1 us, 60 s]; they are still recorded, clamped to the nearest bound.
        self.overflow: int = 0

    def record_ns(self, ns: int) -> None:
        """Record one latency given in nanoseconds (rounded up to whole microseconds)."""
        us = -(-ns // 1000)
        if us < LOWEST_US:
            us = LOWEST_US
            self.overflow += 1
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.overflow += 1
        self._h.record_value(us)

    def add(self, other: LatencyHistogram) -> None:
        """Merge another histogram's samples into this one."""
        self.overflow += other.overflow
        # hdrh's add takes min(self.min, other.min) where an empty histogram reports a min
        # of 0, which would corrupt this histogram's min; an empty merge is a no-op anyway.
        if other.count == 0:
            return
        self._h.add(other._h)

    @property
    def count(self) -> int:
        """Number of recorded samples (clamped ones included)."""
        return int(self._h.get_total_count())

    def percentile_ms(self, p: float) -> float:
        """Value at percentile `p` (0-100) in milliseconds; 0.0 when empty."""
        if self.count == 0:
            return 0.0
        return float(self._h.get_value_at_percentile(p)) / 1000.0

    @property
    def max_ms(self) -> float:
        """Largest recorded value in milliseconds (HDR-equivalent upper bound)."""
        return float(self._h.get_max_value()) / 1000.0

    @property
    def mean_ms(self) -> float:
        """Mean of recorded values in milliseconds."""
        total = self.count
        if total == 0:
            return 0.0
        # hdrh's own get_mean_value walks every bucket in Python (about 20 ms); the same
        # sum of count x median-equivalent value, vectorised.
        mids = _median_values()
        counts = np.ctypeslib.as_array(self._h.counts)[: len(mids)]
        return float(np.dot(counts, mids)) / total / 1000.0

    def summary(self) -> dict[str, float | int]:
        """Count plus p50/p90/p95/p99/p99.9/max/mean in milliseconds (3 decimals)."""
        out: dict[str, float | int] = {"count": self.count}
        values: dict[float, int] = {}
        if self.count:
            # One pass over the counts array instead of one per percentile.
            values = self._h.get_percentile_to_value_dict(list(SUMMARY_PERCENTILES.values()))
        for key, p in SUMMARY_PERCENTILES.items():
            out[key] = round(float(values.get(p, 0)) / 1000.0, 3)
        out["max"] = round(self.max_ms, 3)
        out["mean"] = round(self.mean_ms, 3)
        return out

    def encode(self) -> str:
        """hdrh compressed, base64-wrapped V2 encoding (the overflow counter is not included)."""
        raw = self._h.encode()
        return raw.decode("ascii") if isinstance(raw, bytes) else str(raw)

    @classmethod
    def decode(cls, s: str) -> LatencyHistogram:
        """Rebuild a histogram from `encode()` output."""
        decoded = HdrHistogram.decode(s.encode("ascii"))
        if (
            decoded.lowest_trackable_value != LOWEST_US
            or decoded.highest_trackable_value != HIGHEST_US
            or decoded.significant_figures != SIGNIFICANT_DIGITS
        ):
            raise ValueError(
                "encoded histogram has range "
                f"[{decoded.lowest_trackable_value}, {decoded.highest_trackable_value}] "
                f"with {decoded.significant_figures} digits; expected "
                f"[{LOWEST_US}, {HIGHEST_US}] with {SIGNIFICANT_DIGITS}"
            )
        hist = cls()
        hist._h = decoded
        return hist

    def reset(self) -> None:
        """Drop all samples and the overflow count."""
        self._h.reset()
        self.overflow = 0

    def __reduce__(self) -> tuple[Callable[[str, int], LatencyHistogram], tuple[str, int]]:
        # The hdrh counts live in a ctypes array, which cannot be pickled directly.
        return (_restore, (self.encode(), self.overflow))

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, overflow={self.overflow})"
