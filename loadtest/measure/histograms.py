"""Latency histograms: an HdrHistogram (1 µs .. 60 s, 3 significant digits) that merges exactly and ships
between processes as bytes.

Cost and memory over long runs: `record` indexes hdrh's counts directly (the layout is read once from hdrh),
and hdrh's histogram <-> encoder reference cycle is broken, so a dropped histogram's ~140 KB of counts are freed
at once rather than piling up until the cyclic garbage collector's next full pass. Figures go out in
milliseconds under `*_ms` names. Imports: the standard library and hdrh only.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import sys
import weakref
from collections.abc import Iterable

import msgpack
from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
# Version of the encoded form (histograms and recorder snapshots), checked when read back.
SNAPSHOT_VERSION = 1
_HIGHEST_S = HIGHEST_US / 1_000_000

#: Keys of :meth:`LatencyHistogram.summary_ms`, in display order.
SUMMARY_KEYS: tuple[str, ...] = ("p50", "p90", "p99", "p999", "p9999", "max", "mean", "count")
_PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99}

# Bucket layout of every LatencyHistogram, read once from hdrh so record() can
# index the counts directly. The inlined arithmetic assumes values in units of 1.
_LAYOUT = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
if _LAYOUT.unit_magnitude != 0:  # pragma: no cover - only if hdrh changed its layout rules
    raise ImportError("hdrh's bucket layout changed: LatencyHistogram.record needs updating")
_SUB_BUCKET_MASK: int = _LAYOUT.sub_bucket_mask
_HALF_COUNT_MAGNITUDE: int = _LAYOUT.sub_bucket_half_count_magnitude
_BUCKET_SHIFT: int = _HALF_COUNT_MAGNITUDE + 1
_LAYOUT.encoder = None  # see _new_hdr: the throwaway layout must not leave a cycle either
del _LAYOUT


def _index_of(us: int) -> int:
    """The counts index of a value in whole microseconds (hdrh's layout, as `LatencyHistogram.record` computes it)."""
    bucket = (us | _SUB_BUCKET_MASK).bit_length() - _BUCKET_SHIFT
    return (bucket << _HALF_COUNT_MAGNITUDE) + (us >> bucket)


def _unlink(hdr: HdrHistogram) -> HdrHistogram:
    """Break hdrh's histogram <-> encoder reference cycle, so the histogram (and its ~140 KB of
    counts) is freed as soon as its last reference goes, not by a later pass of the cyclic
    garbage collector. Without this, one run second's histograms pile up until the collector's
    oldest generation runs, and the load engine's memory saw-tooths by tens of megabytes.
    The encoder only reads the histogram's attributes, which a weak proxy serves the same."""
    encoder = hdr.encoder
    if encoder is not None and not isinstance(encoder.histogram, weakref.ProxyType):
        encoder.histogram = weakref.proxy(hdr)
    return hdr


def _new_hdr() -> HdrHistogram:
    return _unlink(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))


def us_to_ms(us: float) -> float:
    """Microseconds as milliseconds, to the microsecond."""
    return round(us / 1000.0, 3)


class LatencyHistogram:
    """Durations from 1 µs to 60 s at 3 significant digits, recorded in whole microseconds.

    Values above 60 s are recorded as 60 s and counted in ``over_range``;
    negative values (a send a hair before its due time) as 0 and counted in
    ``under_range``: nothing is dropped, so counts always match the ledger.
    The mean and the max are exact (kept beside the histogram); percentiles
    are HdrHistogram's, never above the exact max.
    """

    __slots__ = ("_count", "_counts", "_h", "_max_us", "_min_us", "_sum_us", "over_range", "under_range")

    def __init__(self) -> None:
        self._h = _new_hdr()
        self._counts = self._h.counts
        self._zero()

    def record(self, seconds: float) -> None:
        """Record one duration in seconds. NaN is a caller's bug and raises ValueError."""
        if seconds >= _HIGHEST_S:
            us = HIGHEST_US
            self.over_range += 1
        elif seconds >= 0.0:
            us = int(seconds * 1_000_000.0 + 0.5)
        elif seconds < 0.0:
            us = 0
            self.under_range += 1
        else:
            raise ValueError("cannot record NaN as a duration")
        # HdrHistogram.record_value's bucket arithmetic, inlined and simplified
        # ((bucket + 1) * half_count + (us >> bucket) - half_count): this runs several times per
        # answer and is ~3x faster than the call (the tests check that both fill identical counts).
        # Values are already known to be in range.
        bucket = (us | _SUB_BUCKET_MASK).bit_length() - _BUCKET_SHIFT
        self._counts[(bucket << _HALF_COUNT_MAGNITUDE) + (us >> bucket)] += 1
        self._count += 1
        self._sum_us += us
        if us > self._max_us:
            self._max_us = us
        if us < self._min_us:
            self._min_us = us

    @property
    def count(self) -> int:
        return self._count

    def _hdr(self) -> HdrHistogram:
        """The hdrh histogram with its count, max and min brought up to date, for reading or adding."""
        h = self._h
        h.total_count = self._count
        h.max_value = self._max_us
        h.min_value = self._min_us
        return h

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s values to this histogram (exact: same as recording them here)."""
        if other._count:
            # hdrh adds the counts arrays in C; the count, max and min are kept here.
            self._hdr().add(other._hdr())
            self._count += other._count
            self._min_us = min(self._min_us, other._min_us)
        self._sum_us += other._sum_us
        self._max_us = max(self._max_us, other._max_us)
        self.over_range += other.over_range
        self.under_range += other.under_range

    def reset(self) -> None:
        """Forget every value, keeping the counts array for reuse (no allocation, no garbage)."""
        counts = self._counts
        ctypes.memset(ctypes.addressof(counts), 0, ctypes.sizeof(counts))
        self._zero()
        self._hdr()

    def _zero(self) -> None:
        # The count, max and min live here and reach hdrh's own fields in _hdr(): record() runs
        # several times per answer, and a slot is cheaper to update than hdrh's instance attributes.
        self._count = 0
        self._sum_us = 0
        self._max_us = 0
        self._min_us = sys.maxsize
        self.over_range = 0
        self.under_range = 0

    def percentile_ms(self, percentile: float) -> float | None:
        """The value at ``percentile`` (0..100) in milliseconds; None when empty."""
        if not self._count:
            return None
        return us_to_ms(min(self._hdr().get_value_at_percentile(percentile), self._max_us))

    def percentiles_ms(self, percentiles: Iterable[float]) -> dict[float, float | None]:
        """Several percentiles (0..100) in ms: the values hdrh's `get_percentile_to_value_dict` gives, found by
        scanning only the buckets between the smallest and the largest value recorded (a second's latencies fill
        a few hundred of the ~30,000), in C: a row of the time series asks for a dozen of these every second."""
        wanted = list(percentiles)
        count = self._count
        if not count:
            return dict.fromkeys(wanted)
        h = self._hdr()
        low = _index_of(self._min_us)
        cumulative = list(itertools.accumulate(self._counts[low : _index_of(self._max_us) + 1]))
        last = len(cumulative) - 1
        found: dict[float, float | None] = {}
        for p in wanted:
            target = max(int(min(p, 100.0) * count / 100 + 0.5), 1)
            value = h.get_value_from_index(low + min(bisect.bisect_left(cumulative, target), last))
            value = h.get_highest_equivalent_value(value) if p else h.get_lowest_equivalent_value(value)
            found[p] = us_to_ms(min(value, self._max_us))
        return found

    def summary_ms(self) -> dict[str, float | int | None]:
        """``p50 p90 p99 p999 p9999 max mean`` in ms (3 decimals) and ``count``.

        Figures are None when nothing was recorded: an empty run has no p99,
        and a 0 would pass any ``<`` threshold.
        """
        count = self._count
        if not count:
            empty: dict[str, float | int | None] = dict.fromkeys(SUMMARY_KEYS)
            empty["count"] = 0
            return empty
        by_percentile = self.percentiles_ms(_PERCENTILES.values())
        result: dict[str, float | int | None] = {
            key: by_percentile[percentile] for key, percentile in _PERCENTILES.items()
        }
        result["max"] = us_to_ms(self._max_us)
        result["mean"] = us_to_ms(self._sum_us / count)
        result["count"] = count
        return result

    def percentile_distribution(self, ticks_per_half_distance: int = 5) -> list[tuple[float, float]]:
        """``(percentile, value_ms)`` points for an HdrHistogram percentile plot.

        The points thicken towards the tail as in HdrHistogram's ``.hgrm`` output
        (``ticks_per_half_distance`` points per halving of the distance to 100%);
        the last point is ``(100.0, max_ms)``.
        """
        if not self._count:
            return []
        points: list[tuple[float, float]] = []
        for step in self._hdr().get_percentile_iterator(ticks_per_half_distance):
            value_us = min(step.value_iterated_to, self._max_us)
            points.append((float(step.percentile_level_iterated_to), us_to_ms(value_us)))
        return points

    def histoblob(self) -> bytes:
        """The standard base64 HdrHistogram V2 encoding, readable by any HdrHistogram tool.

        Carries the bucket counts only; :meth:`encode` also keeps the exact mean,
        max and out-of-range counts.
        """
        return self._hdr().encode()

    def encode(self) -> bytes:
        """Bytes for shipping to another process; :meth:`decode` restores an equal histogram."""
        return msgpack.packb(
            {
                "v": SNAPSHOT_VERSION,
                "hdr": self._hdr().encode(),
                "sum_us": self._sum_us,
                "max_us": self._max_us,
                "over": self.over_range,
                "under": self.under_range,
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> LatencyHistogram:
        try:
            fields = msgpack.unpackb(data, raw=False)
            if not isinstance(fields, dict):
                raise ValueError("not an encoded LatencyHistogram")
            if fields.get("v") != SNAPSHOT_VERSION:
                raise ValueError(f"unsupported LatencyHistogram encoding version {fields.get('v')!r}")
            histogram = cls.from_hdr(HdrHistogram.decode(fields["hdr"]), int(fields["sum_us"]), int(fields["max_us"]),
                                     int(fields["over"]), int(fields["under"]))
        except ValueError:
            raise
        except Exception as exc:  # msgpack, base64, zlib and hdrh each raise their own types
            raise ValueError(f"not an encoded LatencyHistogram: {exc}") from exc
        return histogram

    @classmethod
    def from_hdr(cls, hdr: HdrHistogram, sum_us: int, max_us: int, over_range: int = 0,
                 under_range: int = 0) -> LatencyHistogram:
        """A histogram with `hdr`'s counts (an hdrh histogram of this layout: decoded from `encode`'s bytes or from
        an interval log) and the exact figures the counts cannot carry."""
        # Unlinked at once: it is thrown away after the add, and must not wait for the collector.
        hdr = _unlink(hdr)
        histogram = cls()
        if hdr.total_count:
            histogram._h.add(hdr)
            histogram._count = hdr.total_count
            histogram._min_us = hdr.get_min_value()
        histogram._sum_us = sum_us
        histogram._max_us = max_us
        histogram.over_range = over_range
        histogram.under_range = under_range
        return histogram

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return (
            self._count == other._count
            and self._sum_us == other._sum_us
            and self._max_us == other._max_us
            and self.over_range == other.over_range
            and self.under_range == other.under_range
            and bytes(self._counts) == bytes(other._counts)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, max_ms={us_to_ms(self._max_us)})"
