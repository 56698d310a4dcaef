"""Statistics for comparisons: bootstrap intervals (for display) and Mann-Whitney U.

Every function that resamples takes a seeded ``numpy.random.Generator``, so a report
or a gate decision is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from hdrh.histogram import HdrHistogram
from numpy.typing import NDArray
from scipy.stats import mannwhitneyu

from bench.measure.hdr import LatencyHistogram

N_BOOT = 2000
LEVEL = 0.95

FloatArray = NDArray[np.float64]


def boot_median(
    values: Sequence[float], rng: np.random.Generator, n_boot: int = N_BOOT
) -> FloatArray:
    """Bootstrap distribution of the median of repetitions."""
    x = np.asarray(values, dtype=np.float64)
    out: FloatArray = np.median(x[rng.integers(0, len(x), size=(n_boot, len(x)))], axis=1)
    return out


def boot_mean(
    values: Sequence[float], rng: np.random.Generator, n_boot: int = N_BOOT
) -> FloatArray:
    """Bootstrap distribution of the mean (per-second throughput samples)."""
    x = np.asarray(values, dtype=np.float64)
    out: FloatArray = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return out


def interval(boot: FloatArray) -> tuple[float, float]:
    """Two-sided 95% percentile interval of a bootstrap distribution."""
    low, high = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class Buckets:
    """The recorded values of an HDR histogram: bucket values (ms) and their counts."""

    values_ms: FloatArray
    counts: NDArray[np.int64]

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _rank(self, p: float) -> int:
        # The rank HdrHistogram.get_value_at_percentile uses, so figures match the summaries.
        return max(int(p / 100.0 * self.total + 0.5), 1)

    def percentile(self, p: float) -> float:
        """Value at percentile ``p`` (0-100), as HdrHistogram reports it."""
        cum = np.cumsum(self.counts)
        index = int(np.searchsorted(cum, self._rank(p), side="left"))
        return float(self.values_ms[min(index, len(self.values_ms) - 1)])

    def percentiles(self, ps: Sequence[float]) -> FloatArray:
        """Values at several percentiles in one pass."""
        cum = np.cumsum(self.counts)
        ranks = [self._rank(p) for p in ps]
        idx = np.minimum(np.searchsorted(cum, ranks, side="left"), len(self.values_ms) - 1)
        out: FloatArray = self.values_ms[idx]
        return out

    def boot_percentile(
        self, p: float, rng: np.random.Generator, n_boot: int = N_BOOT
    ) -> FloatArray:
        """Bootstrap distribution of the ``p`` percentile, resampling the recorded values."""
        # The percentile of a resample of N recorded values is its r-th order statistic,
        # F^-1(U_(r)) with U_(r) ~ Beta(r, N - r + 1): drawing U_(r) gives the exact
        # bootstrap distribution without materialising N values per resample.
        n = self.total
        r = self._rank(p)
        u = rng.beta(r, n - r + 1, size=n_boot) * n
        cum = np.cumsum(self.counts)
        idx = np.minimum(np.searchsorted(cum, u, side="left"), len(self.values_ms) - 1)
        out: FloatArray = self.values_ms[idx]
        return out


def buckets(encoded: str | Sequence[str]) -> Buckets:
    """Recorded values of one encoded histogram, or of several merged with ``add``."""
    parts = [encoded] if isinstance(encoded, str) else list(encoded)
    merged = LatencyHistogram.decode(parts[0])
    for part in parts[1:]:
        merged.add(LatencyHistogram.decode(part))
    # LatencyHistogram keeps bucket values private; decode its encoding with hdrh itself.
    h = HdrHistogram.decode(merged.encode().encode("ascii"))
    size = min(h.counts_len, len(h.counts))
    counts = np.ctypeslib.as_array(h.counts)[:size].astype(np.int64)
    nonzero = np.nonzero(counts)[0]
    values = np.array(
        [h.get_highest_equivalent_value(h.get_value_from_index(int(i))) for i in nonzero],
        dtype=np.float64,
    ) / 1000.0
    return Buckets(values, counts[nonzero])


Alternative = Literal["greater", "less"]


def mann_whitney_p(
    current: Sequence[float], base: Sequence[float], alternative: Alternative
) -> float:
    """One-sided Mann-Whitney U p-value that ``current`` is stochastically greater/less."""
    # scipy uses the exact null distribution for small samples without ties (our usual
    # 5 repetitions), where the normal approximation is poor; with ties, tie-corrected z.
    return float(mannwhitneyu(current, base, alternative=alternative).pvalue)
