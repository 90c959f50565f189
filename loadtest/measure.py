"""Measurement for the load engine: histograms, per-hop spans, request accounting, time series.

Everything here is called on the engine's per-request path or when results are
combined, and is pure: no I/O, no clocks, no asyncio. Times come in as floats in
seconds on the engine's clock (seconds since the run's start) or, for hop
spans, as the server's epoch-nanosecond stamps; figures go out in milliseconds
under ``*_ms`` names.

* :class:`LatencyHistogram` - an HdrHistogram (1 µs .. 60 s, 3 significant
  digits) that merges exactly and ships between processes as bytes.
* :func:`hop_spans` - time spent per hop of a Flow, from a response's routes.
* :class:`Accounting` - request counts that always add up.
* :class:`IntervalStats` - the per-second time series for the live line and report.
* :class:`Recorder` - all of the above for one process, with exact merge and a
  msgpack-able snapshot.

Cost and memory over long runs: an ok answer's latency and service time are
recorded once, into histograms that are added in bulk (hdrh adds the counts
arrays in C) to the second's interval and to the run's totals when the second
closes; and hdrh's histogram <-> encoder reference cycle is broken, so each
closed second's histograms are freed as soon as they are dropped rather than
piling up until the cyclic garbage collector's next full pass.

Latency follows wrk2: it is measured from the request's *intended* send time
(its due time from the schedule), so a server that stalls the sender is charged
for the whole stall. Service time (from the actual send) and scheduler lag
(actual send minus due time) are kept apart, so one can tell a slow server from
a slow load generator.

Imports: the standard library, hdrh and msgpack only.
"""

from __future__ import annotations

import ctypes
import sys
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hdrh.histogram import HdrHistogram

__all__ = [
    "GATEWAY",
    "HIGHEST_US",
    "LOWEST_US",
    "MAX_HOPS",
    "MAX_REASONS",
    "OTHER",
    "OUTSIDE_GATEWAY",
    "SIGNIFICANT_DIGITS",
    "SUMMARY_KEYS",
    "Accounting",
    "Interval",
    "IntervalStats",
    "LatencyHistogram",
    "Ledger",
    "Recorder",
    "hop_spans",
]

LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3
_HIGHEST_S = HIGHEST_US / 1_000_000

#: Keys of :meth:`LatencyHistogram.summary_ms`, in display order.
SUMMARY_KEYS: tuple[str, ...] = ("p50", "p90", "p99", "p999", "p9999", "max", "mean", "count")
_PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99}

#: The gateway's entry in a response's routes, and the derived hop outside it.
GATEWAY = "gateway"
OUTSIDE_GATEWAY = "outside_gateway"

#: Caps on distinct names, so a server that puts ids in close reasons or exception
#: names cannot grow memory without bound; the excess is counted under OTHER.
MAX_REASONS = 100
MAX_HOPS = 64
OTHER = "other"

_SNAPSHOT_VERSION = 1

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


def _ms(us: float) -> float:
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
        # The count, max and min live here and reach hdrh's own fields in _hdr(): record() runs
        # several times per answer, and a slot is cheaper to update than hdrh's instance attributes.
        self._count = 0
        self._sum_us = 0
        self._max_us = 0
        self._min_us = sys.maxsize
        self.over_range = 0
        self.under_range = 0

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
        self._count = 0
        self._sum_us = 0
        self._max_us = 0
        self._min_us = sys.maxsize
        self.over_range = 0
        self.under_range = 0
        self._hdr()

    def percentile_ms(self, percentile: float) -> float | None:
        """The value at ``percentile`` (0..100) in milliseconds; None when empty."""
        if not self._count:
            return None
        return _ms(min(self._hdr().get_value_at_percentile(percentile), self._max_us))

    def percentiles_ms(self, percentiles: Iterable[float]) -> dict[float, float | None]:
        """Several percentiles (0..100) in one pass over the histogram, in ms."""
        wanted = list(percentiles)
        if not self._count:
            return dict.fromkeys(wanted)
        found = self._hdr().get_percentile_to_value_dict(wanted)
        return {p: _ms(min(found[p], self._max_us)) for p in wanted}

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
        result["max"] = _ms(self._max_us)
        result["mean"] = _ms(self._sum_us / count)
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
            points.append((float(step.percentile_level_iterated_to), _ms(value_us)))
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
                "v": _SNAPSHOT_VERSION,
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
            if fields.get("v") != _SNAPSHOT_VERSION:
                raise ValueError(f"unsupported LatencyHistogram encoding version {fields.get('v')!r}")
            # Unlinked at once: it is thrown away after the add, and must not wait for the collector.
            decoded = _unlink(HdrHistogram.decode(fields["hdr"]))
            histogram = cls()
            if decoded.total_count:
                histogram._h.add(decoded)
                histogram._count = decoded.total_count
                histogram._min_us = decoded.get_min_value()
            histogram._sum_us = int(fields["sum_us"])
            histogram._max_us = int(fields["max_us"])
            histogram.over_range = int(fields["over"])
            histogram.under_range = int(fields["under"])
        except ValueError:
            raise
        except Exception as exc:  # msgpack, base64, zlib and hdrh each raise their own types
            raise ValueError(f"not an encoded LatencyHistogram: {exc}") from exc
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
        return f"LatencyHistogram(count={self.count}, max_ms={_ms(self._max_us)})"


def hop_spans(routes: Iterable[Any] | None, round_trip_s: float) -> dict[str, float]:
    """Seconds spent per hop of one response, from its routes.

    ``routes`` holds objects with ``executor`` (str), ``start_ns`` and ``end_ns``
    (int or None, epoch nanoseconds on the server's clock). The result has:

    * ``"gateway"``: the gateway entry's end minus start;
    * one key per executor name: its end minus start;
    * ``"outside_gateway"``: ``round_trip_s`` minus the gateway's span (network,
      queueing and serialisation outside the gateway), only when the gateway
      entry has both stamps.

    Each span subtracts two stamps of the *same* entry, so the server's clock
    offset from ours cancels out. An executor named twice (a Flow that visits it
    twice) gets the sum of its spans. Entries missing a stamp, with a negative
    span, or otherwise odd are skipped; this function never raises.
    """
    spans: dict[str, float] = {}
    try:
        if not routes:
            return spans
        for route in routes:
            # Per entry, so one odd entry does not lose the others.
            try:
                start_ns = route.start_ns
                end_ns = route.end_ns
                if start_ns is None or end_ns is None:
                    continue
                name = route.executor
                if not isinstance(name, str) or not name:
                    continue
                span_ns = end_ns - start_ns
                if not span_ns >= 0:  # also rejects NaN
                    continue
                span_s = span_ns / 1e9
                previous = spans.get(name)
                spans[name] = span_s if previous is None else previous + span_s
            except Exception:
                continue
        gateway_s = spans.get(GATEWAY)
        if gateway_s is not None:
            outside_s = round_trip_s - gateway_s
            if outside_s >= 0:
                spans[OUTSIDE_GATEWAY] = outside_s
    except Exception:
        # A non-iterable routes or a non-numeric round trip: keep what was found.
        pass
    return spans


def _bump(counter: Counter[str], key: str, count: int = 1) -> None:
    if key not in counter and len(counter) >= MAX_REASONS:
        key = OTHER
    counter[key] += count


_LEDGER_KEYS: tuple[str, ...] = (
    "sent",
    "ok",
    "failed",
    "timeout",
    "dropped",
    "unanswered",
    "transport_failed",
)


@dataclass
class Ledger:
    """Request counts for one phase of a run. Every sent request ends in exactly one of
    ``ok``, ``failed`` (the executor raised), ``transport`` (the connection failed),
    ``timeout`` or ``unanswered`` (still in flight when the run ended). ``dropped``
    requests were never sent (the in-flight limit was full at their due time), so
    they stand apart from ``sent``."""

    sent: int = 0
    ok: int = 0
    failed_by_exception: Counter[str] = field(default_factory=Counter)
    transport_by_reason: Counter[str] = field(default_factory=Counter)
    timeout: int = 0
    unanswered: int = 0
    dropped: int = 0

    def add_failed(self, exception_name: str) -> None:
        _bump(self.failed_by_exception, exception_name or "unknown")

    def add_transport(self, reason: str) -> None:
        _bump(self.transport_by_reason, reason or "unknown")

    @property
    def failed(self) -> int:
        return sum(self.failed_by_exception.values())

    @property
    def transport_failed(self) -> int:
        return sum(self.transport_by_reason.values())

    @property
    def in_flight(self) -> int:
        """Sent and not yet ended; 0 once a finished run is fully accounted."""
        return self.sent - self.ok - self.failed - self.transport_failed - self.timeout - self.unanswered

    def check(self) -> None:
        """Raise ValueError unless sent == ok + failed + transport + timeout + unanswered."""
        counts = {
            "sent": self.sent,
            "ok": self.ok,
            "timeout": self.timeout,
            "unanswered": self.unanswered,
            "dropped": self.dropped,
        }
        negative = {name: value for name, value in counts.items() if value < 0}
        negative.update({f"failed[{k}]": v for k, v in self.failed_by_exception.items() if v < 0})
        negative.update({f"transport[{k}]": v for k, v in self.transport_by_reason.items() if v < 0})
        if negative:
            raise ValueError(f"negative request counts: {negative}")
        if self.in_flight != 0:
            raise ValueError(
                f"request counts do not add up: sent={self.sent} but ok={self.ok} + failed={self.failed} "
                f"+ transport={self.transport_failed} + timeout={self.timeout} "
                f"+ unanswered={self.unanswered} = {self.sent - self.in_flight}"
            )

    def merge(self, other: Ledger) -> None:
        self.sent += other.sent
        self.ok += other.ok
        for name, count in other.failed_by_exception.items():
            _bump(self.failed_by_exception, name, count)
        for reason, count in other.transport_by_reason.items():
            _bump(self.transport_by_reason, reason, count)
        self.timeout += other.timeout
        self.unanswered += other.unanswered
        self.dropped += other.dropped

    def errors(self) -> dict[str, int]:
        """Every ending other than ok and unanswered, by reason.

        Executor errors appear as ``executor: NAME``, transport failures by their
        reason as given (``close 1006``), timeouts as ``timeout``.
        """
        reasons: dict[str, int] = {}
        for name, count in self.failed_by_exception.most_common():
            if count:
                reasons[f"executor: {name}"] = count
        for reason, count in self.transport_by_reason.most_common():
            if count:
                reasons[reason] = reasons.get(reason, 0) + count
        if self.timeout:
            reasons["timeout"] = reasons.get("timeout", 0) + self.timeout
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """``{"sent","ok","failed","timeout","dropped","unanswered","transport_failed","errors"}``."""
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "timeout": self.timeout,
            "dropped": self.dropped,
            "unanswered": self.unanswered,
            "transport_failed": self.transport_failed,
            "errors": self.errors(),
        }

    def to_plain(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed_by_exception": dict(self.failed_by_exception),
            "transport_by_reason": dict(self.transport_by_reason),
            "timeout": self.timeout,
            "unanswered": self.unanswered,
            "dropped": self.dropped,
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Ledger:
        return cls(
            sent=int(data["sent"]),
            ok=int(data["ok"]),
            failed_by_exception=Counter({str(k): int(v) for k, v in data["failed_by_exception"].items()}),
            transport_by_reason=Counter({str(k): int(v) for k, v in data["transport_by_reason"].items()}),
            timeout=int(data["timeout"]),
            unanswered=int(data["unanswered"]),
            dropped=int(data["dropped"]),
        )


@dataclass
class Accounting(Ledger):
    """The measured requests' ledger, plus ``warmup``: the same counts for requests
    due during warm-up, which are kept out of every figure but still accounted."""

    warmup: Ledger = field(default_factory=Ledger)

    def ledger(self, warmup: bool) -> Ledger:
        return self.warmup if warmup else self

    def check(self) -> None:
        super().check()
        try:
            self.warmup.check()
        except ValueError as exc:
            raise ValueError(f"warm-up {exc}") from None

    def merge(self, other: Ledger) -> None:
        super().merge(other)
        if isinstance(other, Accounting):
            self.warmup.merge(other.warmup)

    def to_dict(self) -> dict[str, Any]:
        """The measured counts and errors (see :meth:`Ledger.to_dict`), and ``"warmup"``
        with the warm-up requests' counts in the same shape."""
        result = super().to_dict()
        result["warmup"] = self.warmup.to_dict()
        return result

    def to_plain(self) -> dict[str, Any]:
        result = super().to_plain()
        result["warmup"] = self.warmup.to_plain()
        return result

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Accounting:
        measured = Ledger.from_plain(data)
        return cls(**vars(measured), warmup=Ledger.from_plain(data["warmup"]))


class Interval:
    """The figures of one time-series interval. Intervals covering the same span
    from different connections or processes merge exactly."""

    __slots__ = (
        "answered",
        "dropped",
        "end_s",
        "error_reasons",
        "errors",
        "inflight",
        "latency",
        "ok",
        "sent",
        "service_time",
        "start_s",
        "warmup",
    )

    def __init__(self, start_s: float, warmup: bool = False) -> None:
        self.start_s = start_s
        self.end_s = start_s
        self.warmup = warmup
        self.sent = 0
        self.answered = 0
        self.ok = 0
        self.errors = 0
        self.error_reasons: Counter[str] = Counter()
        self.dropped = 0
        self.inflight = 0
        self.latency = LatencyHistogram()
        self.service_time = LatencyHistogram()

    def merge(self, other: Interval) -> None:
        self.start_s = min(self.start_s, other.start_s)
        self.end_s = max(self.end_s, other.end_s)
        self.warmup = self.warmup or other.warmup
        self.sent += other.sent
        self.answered += other.answered
        self.ok += other.ok
        self.errors += other.errors
        for reason, count in other.error_reasons.items():
            _bump(self.error_reasons, reason, count)
        self.dropped += other.dropped
        self.inflight += other.inflight
        self.latency.merge(other.latency)
        self.service_time.merge(other.service_time)

    def to_row(self) -> dict[str, Any]:
        """One time-series row. ``t`` is the interval's end in seconds since the run's
        start; ``*_rps`` are per second over ``interval_s``; ``errors`` counts failed
        answers plus transport errors and timeouts; ``inflight`` is at the end;
        latency and service percentiles are over ok answers, None if there were none."""
        interval_s = self.end_s - self.start_s
        per_s = 1.0 / interval_s if interval_s > 0 else None
        latency = self.latency.percentiles_ms((50.0, 90.0, 99.0))
        service = self.service_time.percentiles_ms((50.0, 99.0))
        max_ms = _ms(self.latency._max_us) if self.latency.count else None
        return {
            "t": round(float(self.end_s), 6),
            "interval_s": round(float(interval_s), 6),
            "warmup": self.warmup,
            "sent": self.sent,
            "answered": self.answered,
            "ok": self.ok,
            "errors": self.errors,
            "dropped": self.dropped,
            "inflight": self.inflight,
            "sent_rps": None if per_s is None else round(self.sent * per_s, 3),
            "ok_rps": None if per_s is None else round(self.ok * per_s, 3),
            "p50_ms": latency[50.0],
            "p90_ms": latency[90.0],
            "p99_ms": latency[99.0],
            "max_ms": max_ms,
            "service_p50_ms": service[50.0],
            "service_p99_ms": service[99.0],
            "error_reasons": dict(self.error_reasons),
        }

    def to_plain(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "warmup": self.warmup,
            "sent": self.sent,
            "answered": self.answered,
            "ok": self.ok,
            "errors": self.errors,
            "error_reasons": dict(self.error_reasons),
            "dropped": self.dropped,
            "inflight": self.inflight,
            "latency": self.latency.encode(),
            "service_time": self.service_time.encode(),
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Interval:
        interval = cls(float(data["start_s"]), bool(data["warmup"]))
        interval.end_s = float(data["end_s"])
        for name in ("sent", "answered", "ok", "errors", "dropped", "inflight"):
            setattr(interval, name, int(data[name]))
        interval.error_reasons = Counter({str(k): int(v) for k, v in data["error_reasons"].items()})
        interval.latency = LatencyHistogram.decode(data["latency"])
        interval.service_time = LatencyHistogram.decode(data["service_time"])
        return interval


class IntervalStats:
    """A time series of short intervals (one second when rolled once a second).

    The engine reports events as they happen and calls :meth:`roll` from its
    ticker; each interval gets fresh histograms, and no per-request data is kept.
    An event counts in the interval open when it is reported. The ``now``
    arguments (seconds since the run's start) are accepted for a uniform event
    signature; intervals are delimited by :meth:`roll` alone.

    A :class:`Recorder` links its run-wide latency and service-time histograms
    here (:meth:`link_totals`): answers reported with :meth:`on_measured_answer`
    are recorded once, into a pair of pending histograms, and added in bulk to
    both the open interval and those totals when it closes (or when the totals
    are read), instead of being recorded twice per answer.
    """

    __slots__ = ("_current", "_inflight", "_pending_latency", "_pending_service", "_totals", "warmup_s")

    def __init__(self, start_s: float = 0.0, warmup_s: float = 0.0) -> None:
        self.warmup_s = warmup_s
        self._inflight = 0
        self._current = Interval(start_s, start_s < warmup_s)
        # Reused for the whole run (reset, never replaced), so they cost no allocation per interval.
        self._pending_latency = LatencyHistogram()
        self._pending_service = LatencyHistogram()
        self._totals: tuple[LatencyHistogram, LatencyHistogram] | None = None

    @property
    def inflight(self) -> int:
        return self._inflight

    def link_totals(self, latency: LatencyHistogram | None, service_time: LatencyHistogram | None) -> None:
        """Where :meth:`on_measured_answer` values go besides the intervals (both None: nowhere).
        Values pending for the previous totals are handed to them first."""
        self.flush()
        self._totals = None if latency is None or service_time is None else (latency, service_time)

    def on_sent(self, now: float) -> None:
        self._current.sent += 1
        self._inflight += 1

    def on_answer(self, now: float, latency_s: float, service_s: float, ok: bool, reason: str | None = None) -> None:
        """An answer arrived; a failed one (the executor raised) is counted under `reason`."""
        current = self._current
        current.answered += 1
        self._inflight -= 1
        if ok:
            current.ok += 1
            current.latency.record(latency_s)
            current.service_time.record(service_s)
        else:
            current.errors += 1
            _bump(current.error_reasons, reason or "executor: error")

    def on_measured_answer(self, now: float, latency_s: float, service_s: float) -> None:
        """An ok answer that also counts in the linked totals (see :meth:`link_totals`)."""
        current = self._current
        current.answered += 1
        current.ok += 1
        self._inflight -= 1
        self._pending_latency.record(latency_s)
        self._pending_service.record(service_s)

    def flush(self) -> None:
        """Add the pending measured answers to the open interval and to the linked totals.
        Exact at any moment: the interval is still open, and merges are exact."""
        latency = self._pending_latency
        service = self._pending_service
        if not (latency._count or service._count):
            return
        current = self._current
        current.latency.merge(latency)
        current.service_time.merge(service)
        if self._totals is not None:
            self._totals[0].merge(latency)
            self._totals[1].merge(service)
        latency.reset()
        service.reset()

    def on_error(self, now: float, reason: str) -> None:
        """A sent request ended without an answer (transport failure, timeout)."""
        current = self._current
        current.errors += 1
        _bump(current.error_reasons, reason)
        self._inflight -= 1

    def on_dropped(self, now: float) -> None:
        """A request never sent: the in-flight limit was full at its due time."""
        self._current.dropped += 1

    def close(self, now: float) -> Interval:
        """End the open interval at ``now`` and start the next; returns the closed interval
        (for merging across processes before making rows)."""
        self.flush()
        closed = self._current
        closed.end_s = max(now, closed.start_s)
        closed.inflight = self._inflight
        self._current = Interval(closed.end_s, closed.end_s < self.warmup_s)
        return closed

    def roll(self, now: float) -> dict[str, Any]:
        """End the open interval at ``now`` and return its row (see :meth:`Interval.to_row`)."""
        return self.close(now).to_row()


class Recorder:
    """All measurements of one process (or one connection): merge recorders to combine.

    Times are seconds since the run's start on one monotonic clock:
    ``due_s`` from the schedule, ``sent_s`` when the request went out,
    ``answered_s``/``now_s`` when the answer or failure arrived. A request whose
    due time is before ``warmup_s`` is accounted in ``accounting.warmup`` and
    kept out of every histogram (the live time series still shows it).

    Histograms hold ok answers only: latency (answer minus due time),
    service_time (answer minus actual send), one per hop (see
    :func:`hop_spans`), and scheduler_lag (send minus due, for every send).
    Failed answers, transport failures and timeouts are counted, not timed.

    ``latency`` and ``service_time`` are filled through :attr:`intervals`
    (see :class:`IntervalStats`), so each answer is recorded once; reading them
    brings them up to date. Assigning ``intervals`` (a fresh time series) keeps
    that link.
    """

    def __init__(self, warmup_s: float = 0.0, start_s: float = 0.0) -> None:
        self.warmup_s = float(warmup_s)
        self._latency = LatencyHistogram()
        self._service_time = LatencyHistogram()
        self.scheduler_lag = LatencyHistogram()
        self.hops: dict[str, LatencyHistogram] = {}
        self.accounting = Accounting()
        self._intervals = IntervalStats(start_s, self.warmup_s)
        self._intervals.link_totals(self._latency, self._service_time)

    @property
    def intervals(self) -> IntervalStats:
        return self._intervals

    @intervals.setter
    def intervals(self, stats: IntervalStats) -> None:
        self._intervals.link_totals(None, None)  # hands over what is pending, then lets go
        self._intervals = stats
        stats.link_totals(self._latency, self._service_time)

    @property
    def latency(self) -> LatencyHistogram:
        self._intervals.flush()
        return self._latency

    @property
    def service_time(self) -> LatencyHistogram:
        self._intervals.flush()
        return self._service_time

    def _replace_totals(self, latency: LatencyHistogram, service_time: LatencyHistogram) -> None:
        """Put restored run totals in place; what the time series holds pending goes into them from now on."""
        self._intervals.flush()
        self._latency, self._service_time = latency, service_time
        self._intervals.link_totals(latency, service_time)

    # -- events (the per-request path) --

    def on_dropped(self, due_s: float, now_s: float) -> None:
        self.accounting.ledger(due_s < self.warmup_s).dropped += 1
        self._intervals.on_dropped(now_s)

    def on_sent(self, due_s: float, sent_s: float) -> None:
        if due_s < self.warmup_s:
            self.accounting.warmup.sent += 1
        else:
            self.accounting.sent += 1
            self.scheduler_lag.record(sent_s - due_s)
        self._intervals.on_sent(sent_s)

    def on_answer(
        self,
        due_s: float,
        sent_s: float,
        answered_s: float,
        routes: Iterable[Any] | None = None,
        error: str | None = None,
    ) -> None:
        """An answer arrived. ``error`` is the executor's exception name when the
        answer reports a failure; ``routes`` feeds the per-hop histograms."""
        latency_s = answered_s - due_s
        service_s = answered_s - sent_s
        if error is not None:
            self._intervals.on_answer(answered_s, latency_s, service_s, False, f"executor: {error}")
            self.accounting.ledger(due_s < self.warmup_s).add_failed(error)
            return
        if due_s < self.warmup_s:
            self._intervals.on_answer(answered_s, latency_s, service_s, True)
            self.accounting.warmup.ok += 1
            return
        # Recorded once, for the time series and the run's totals alike.
        self._intervals.on_measured_answer(answered_s, latency_s, service_s)
        self.accounting.ok += 1
        if routes:
            hops = self.hops
            for name, span_s in hop_spans(routes, service_s).items():
                histogram = hops.get(name)
                if histogram is None:
                    histogram = self._new_hop(name)
                histogram.record(span_s)

    def on_transport_error(self, due_s: float, now_s: float, reason: str) -> None:
        """A sent request failed with its connection, e.g. reason ``close 1006``."""
        self.accounting.ledger(due_s < self.warmup_s).add_transport(reason)
        self._intervals.on_error(now_s, reason)

    def on_timeout(self, due_s: float, now_s: float) -> None:
        self.accounting.ledger(due_s < self.warmup_s).timeout += 1
        self._intervals.on_error(now_s, "timeout")

    def finish(self, unanswered_due_s: Iterable[float]) -> None:
        """At the end of the run: the due times of requests still in flight."""
        for due_s in unanswered_due_s:
            self.accounting.ledger(due_s < self.warmup_s).unanswered += 1

    def roll(self, now_s: float) -> dict[str, Any]:
        """Close the current time-series interval; see :meth:`IntervalStats.roll`."""
        return self._intervals.roll(now_s)

    def _new_hop(self, name: str) -> LatencyHistogram:
        if len(self.hops) >= MAX_HOPS:
            name = OTHER
            if name in self.hops:
                return self.hops[name]
        histogram = self.hops[name] = LatencyHistogram()
        return histogram

    # -- combining --

    def merge(self, other: Recorder) -> None:
        """Add ``other``'s histograms and counts (the time series is not merged:
        combine :meth:`IntervalStats.close` results for that)."""
        if other.warmup_s != self.warmup_s:
            raise ValueError(
                f"cannot merge recorders with different warm-ups ({self.warmup_s} s, {other.warmup_s} s)"
            )
        self.latency.merge(other.latency)
        self.service_time.merge(other.service_time)
        self.scheduler_lag.merge(other.scheduler_lag)
        for name, histogram in other.hops.items():
            mine = self.hops.get(name)
            if mine is None:
                mine = self._new_hop(name)
            mine.merge(histogram)
        self.accounting.merge(other.accounting)

    def snapshot(self) -> dict[str, Any]:
        """Plain data (str, int, float, bytes, dict) that msgpack can carry; histograms encoded."""
        return {
            "v": _SNAPSHOT_VERSION,
            "warmup_s": self.warmup_s,
            "latency": self.latency.encode(),
            "service_time": self.service_time.encode(),
            "scheduler_lag": self.scheduler_lag.encode(),
            "hops": {name: histogram.encode() for name, histogram in self.hops.items()},
            "accounting": self.accounting.to_plain(),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Recorder:
        if data.get("v") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported recorder snapshot version {data.get('v')!r}")
        recorder = cls(warmup_s=float(data["warmup_s"]))
        recorder._replace_totals(
            LatencyHistogram.decode(data["latency"]), LatencyHistogram.decode(data["service_time"])
        )
        recorder.scheduler_lag = LatencyHistogram.decode(data["scheduler_lag"])
        recorder.hops = {str(name): LatencyHistogram.decode(blob) for name, blob in data["hops"].items()}
        recorder.accounting = Accounting.from_plain(data["accounting"])
        return recorder

    # -- figures --

    def summary(
        self, measured_duration_s: float | None = None, target_rps: float | None = None
    ) -> dict[str, Any]:
        """The run's figures, in the shape thresholds and reports read::

            requests         {sent, ok, failed, timeout, dropped, unanswered, transport_failed}
            errors           {rate: (sent - ok) / sent or None, by_reason: {reason: count}}
            warmup           {warmup_s, requests: {...same keys...}}
            rate             {target_rps, achieved_rps and ok_rps (ok / s), sent_rps, measured_duration_s}
            latency_ms       {p50 p90 p99 p999 p9999 max mean count}
            service_time_ms  (same keys)
            scheduler_lag_ms (same keys)
            hops_ms          {hop name: (same keys)}

        ``measured_duration_s`` is the measured window (run length minus
        warm-up); rates are None without it.
        """
        measured = self.accounting.to_dict()
        by_reason = measured.pop("errors")
        warmup = measured.pop("warmup")
        sent = measured["sent"]
        per_s = 1.0 / measured_duration_s if measured_duration_s else None
        return {
            "requests": measured,
            "errors": {
                "rate": (sent - measured["ok"]) / sent if sent else None,
                "by_reason": by_reason,
            },
            "warmup": {"warmup_s": self.warmup_s, "requests": warmup},
            "rate": {
                "target_rps": target_rps,
                "achieved_rps": None if per_s is None else round(measured["ok"] * per_s, 3),
                "ok_rps": None if per_s is None else round(measured["ok"] * per_s, 3),
                "sent_rps": None if per_s is None else round(sent * per_s, 3),
                "measured_duration_s": measured_duration_s,
            },
            "latency_ms": self.latency.summary_ms(),
            "service_time_ms": self.service_time.summary_ms(),
            "scheduler_lag_ms": self.scheduler_lag.summary_ms(),
            "hops_ms": {name: histogram.summary_ms() for name, histogram in sorted(self.hops.items())},
        }
