"""Latency buckets and the histogram type both Prometheus exporters share (the relay's and the load engine's).

Buckets (`LATENCY_BUCKETS_S`): 59 bounds from 100 µs to 60 s, ten per decade on the R10 preferred numbers
(1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8 times a power of ten), plus +Inf. The R10 numbers put a bound
exactly on the usual SLO thresholds (1, 2, 2.5, 5 ms, 10, 20, 25, 50 ms, ...), so "share of requests under
50 ms" is exact. `histogram_quantile` interpolates linearly inside a bucket, so its estimate and the true
quantile lie in the same bucket; the worst-case relative error is the widest bucket's width over its lower
bound: 28 % (1.25 -> 1.6 and 2.5 -> 3.15 of each decade; 25-27 % elsewhere; `MAX_QUANTILE_ERROR` holds the
figure computed from the bounds). Below 100 µs the first bucket starts at 0, so a quantile there is only
known to be under 100 µs; above 60 s only that it is over 60 s. Sharing them means relay and load
histograms line up in one dashboard.

Imports: the standard library and prometheus_client only (nothing of the relay server or the load engine).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "MAX_LABEL_VALUES",
    "MAX_QUANTILE_ERROR",
    "OTHER",
    "BucketHistogram",
    "bucket_quantile",
    "capped",
    "histogram_family",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MAX_LABEL_VALUES = 50
OTHER = "other"

_R10 = ("1", "1.25", "1.6", "2", "2.5", "3.15", "4", "5", "6.3", "8")


def _latency_buckets() -> tuple[float, ...]:
    # Built from decimal strings so that the `le` labels read 0.000125, not 0.00012500000000000003.
    bounds = [float(f"{m}e{exp}") for exp in range(-4, 1) for m in _R10]
    bounds += [float(f"{m}e1") for m in _R10 if float(m) < 6]  # 10 .. 50 s
    bounds.append(60.0)
    return tuple(bounds)


LATENCY_BUCKETS_S: tuple[float, ...] = _latency_buckets()
MAX_QUANTILE_ERROR: float = max(hi / lo - 1.0 for lo, hi in pairwise(LATENCY_BUCKETS_S))
# The `le` label of every bucket, +Inf last, formatted as prometheus_client formats its own bounds.
_LE: tuple[str, ...] = (*(floatToGoString(b) for b in LATENCY_BUCKETS_S), "+Inf")


class BucketHistogram:
    """Counts per bucket (not cumulative) and the sum of observations, in seconds.

    `observe` is one bisect and two increments; `counts[i]` holds observations in (bound[i-1], bound[i]],
    the last slot those above the last bound. Not locked: one thread writes (see the module docstring).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def state(self) -> tuple[list[int], float]:
        """A copy to send to another process (or to render while the owner goes on counting)."""
        return list(self.counts), self.total

    @classmethod
    def from_state(cls, state: tuple[list[int], float], bounds: Sequence[float] = LATENCY_BUCKETS_S) -> BucketHistogram:
        h = cls(bounds)
        counts, total = state
        if len(counts) != len(h.counts):
            raise ValueError(f"histogram state has {len(counts)} buckets, expected {len(h.counts)}")
        h.counts = list(counts)
        h.total = float(total)
        return h


def histogram_family(
    name: str, documentation: str, labelnames: Sequence[str], children: Iterable[tuple[Sequence[str], BucketHistogram]]
) -> HistogramMetricFamily:
    """One histogram family from (label values, histogram) pairs, buckets made cumulative.

    The count is the +Inf bucket, so count and buckets always agree even if the owner counts on while
    this runs in another thread (a list copy is atomic under the GIL); the sum may lag one observation.
    """
    family = HistogramMetricFamily(name, documentation, labels=list(labelnames))
    for labels, hist in children:
        counts = list(hist.counts)
        if len(counts) != len(_LE):
            raise ValueError(f"{name}: a histogram with other bounds than LATENCY_BUCKETS_S")
        acc = 0
        buckets: list[tuple[str, float]] = []
        for le, c in zip(_LE, counts, strict=True):
            acc += c
            buckets.append((le, acc))
        family.add_metric(list(labels), buckets, hist.total)
    return family


def bucket_quantile(q: float, counts: Sequence[int], bounds: Sequence[float] = LATENCY_BUCKETS_S) -> float | None:
    """The q-quantile (0..1) of observations counted per bucket (`BucketHistogram.counts`, not cumulative), as
    Prometheus's histogram_quantile estimates it: linear inside the bucket the rank falls in (the first bucket
    starts at 0); in the +Inf bucket, the last bound. None when nothing was counted."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * max(rank - below, 0.0) / count
        below += count
    return bounds[-1]


def capped(table: Mapping[str, object], key: str) -> str:
    """The label value for `key`, given the values already in use (`table`'s keys): `key` itself while
    fewer than MAX_LABEL_VALUES are known, else OTHER (so at most MAX_LABEL_VALUES + 1 series)."""
    if key in table or len(table) < MAX_LABEL_VALUES:
        return key
    return OTHER
