"""The per-second time series: an `Interval` per second (counts and histograms), rolled by `IntervalStats`, for the
live line, timeseries.jsonl, the report and the live dashboard. Intervals of the same second merge exactly.

Each interval holds its own histograms: latency and service time of ok answers, scheduler lag of sends, and one
per hop (from the answers' route timestamps), so a row carries that second's percentiles of each, and rows of
several processes merge exactly. Per-request values are recorded once, into pending histograms reused all run
long, and added in bulk (hdrh adds the counts arrays in C) to the open interval and to the run's totals
(`RunTotals`, linked by the Recorder) when the second closes or the totals are read.

Pure: no I/O, no clocks, no asyncio. Imports: the standard library and loadtest.measure only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loadtest.measure.accounting import OTHER, count_capped
from loadtest.measure.histograms import LatencyHistogram, us_to_ms
from loadtest.measure.hops import MAX_HOPS

# Percentiles of a row's latency, and of each hop's span.
_ROW_PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_HOP_PERCENTILES = (50.0, 99.0)


def hop_histogram(hops: dict[str, LatencyHistogram], name: str) -> LatencyHistogram:
    """The histogram of hop `name` in `hops`, made on first sight; past MAX_HOPS names, the one of OTHER."""
    histogram = hops.get(name)
    if histogram is None:
        if len(hops) >= MAX_HOPS:
            name = OTHER
            histogram = hops.get(name)
            if histogram is not None:
                return histogram
        histogram = hops[name] = LatencyHistogram()
    return histogram


@dataclass
class RunTotals:
    """The run-wide histograms of the measured window (warm-up left out), filled in bulk by `IntervalStats`."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    service_time: LatencyHistogram = field(default_factory=LatencyHistogram)
    scheduler_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    hops: dict[str, LatencyHistogram] = field(default_factory=dict)


class Interval:
    """The figures of one time-series interval. Intervals covering the same span
    from different connections or processes merge exactly."""

    __slots__ = (
        "answered",
        "dropped",
        "end_s",
        "error_reasons",
        "errors",
        "hops",
        "inflight",
        "lag",
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
        self.lag = LatencyHistogram()
        self.hops: dict[str, LatencyHistogram] = {}

    def merge(self, other: Interval) -> None:
        self.start_s = min(self.start_s, other.start_s)
        self.end_s = max(self.end_s, other.end_s)
        self.warmup = self.warmup or other.warmup
        self.sent += other.sent
        self.answered += other.answered
        self.ok += other.ok
        self.errors += other.errors
        for reason, count in other.error_reasons.items():
            count_capped(self.error_reasons, reason, count)
        self.dropped += other.dropped
        self.inflight += other.inflight
        self.latency.merge(other.latency)
        self.service_time.merge(other.service_time)
        self.lag.merge(other.lag)
        for name, histogram in other.hops.items():
            hop_histogram(self.hops, name).merge(histogram)

    def to_row(self) -> dict[str, Any]:
        """One time-series row. ``t`` is the interval's end in seconds since the run's
        start; ``*_rps`` are per second over ``interval_s``; ``errors`` counts failed
        answers plus transport errors and timeouts; ``inflight`` is at the end;
        latency and service percentiles are over ok answers, None if there were none;
        ``lag_*`` is the scheduler's lag (actual send minus due time) of the sends;
        ``hops`` the p50, p99 and mean of each hop's span over the ok answers."""
        interval_s = self.end_s - self.start_s
        per_s = 1.0 / interval_s if interval_s > 0 else None
        latency = self.latency.percentiles_ms(_ROW_PERCENTILES)
        service = self.service_time.percentiles_ms((50.0, 99.0))
        lag = self.lag.percentiles_ms((99.0,))
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
            "p999_ms": latency[99.9],
            "max_ms": _max_ms(self.latency),
            "service_p50_ms": service[50.0],
            "service_p99_ms": service[99.0],
            "lag_p99_ms": lag[99.0],
            "lag_max_ms": _max_ms(self.lag),
            "error_reasons": dict(self.error_reasons),
            "hops": {name: _hop_figures(h) for name, h in self.hops.items() if h.count},
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
            "lag": self.lag.encode(),
            "hops": {name: h.encode() for name, h in self.hops.items()},
        }

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Interval:
        interval = cls._counts(data, float(data["start_s"]), float(data["end_s"]))
        interval.latency = LatencyHistogram.decode(data["latency"])
        interval.service_time = LatencyHistogram.decode(data["service_time"])
        interval.lag = LatencyHistogram.decode(data["lag"])
        interval.hops = {str(name): LatencyHistogram.decode(blob) for name, blob in data["hops"].items()}
        return interval

    @classmethod
    def from_row(cls, row: Mapping[str, Any], latency: LatencyHistogram, service_time: LatencyHistogram,
                 lag: LatencyHistogram, hops: Mapping[str, LatencyHistogram], shift_s: float = 0.0) -> Interval:
        """The interval a time-series row (`to_row`) was made from, given its histograms (a results folder keeps
        them in an interval log); `shift_s` moves it on the time axis (onto another run's second 0)."""
        end_s = float(row["t"]) + shift_s
        interval = cls._counts(row, end_s - float(row["interval_s"]), end_s)
        interval.latency, interval.service_time, interval.lag = latency, service_time, lag
        interval.hops = dict(hops)
        return interval

    @classmethod
    def _counts(cls, data: Mapping[str, Any], start_s: float, end_s: float) -> Interval:
        """An interval from `start_s` to `end_s` with the counts `data` has (a plain interval's or a row's)."""
        interval = cls(start_s, bool(data["warmup"]))
        interval.end_s = end_s
        for name in ("sent", "answered", "ok", "errors", "dropped", "inflight"):
            setattr(interval, name, int(data[name]))
        interval.error_reasons = Counter({str(k): int(v) for k, v in data["error_reasons"].items()})
        return interval


def _max_ms(histogram: LatencyHistogram) -> float | None:
    return us_to_ms(histogram._max_us) if histogram.count else None


def _hop_figures(histogram: LatencyHistogram) -> dict[str, float | None]:
    found = histogram.percentiles_ms(_HOP_PERCENTILES)
    return {"p50_ms": found[50.0], "p99_ms": found[99.0], "mean_ms": us_to_ms(histogram._sum_us / histogram.count)}


class IntervalStats:
    """A time series of short intervals (one second when rolled once a second).

    The engine reports events as they happen and calls :meth:`roll` from its
    ticker; each interval gets fresh histograms, and no per-request data is kept.
    An event counts in the interval open when it is reported. The ``now``
    arguments (seconds since the run's start) are accepted for a uniform event
    signature; intervals are delimited by :meth:`roll` alone.

    A :class:`Recorder` links its run-wide histograms here (:meth:`link_totals`):
    measured values (ok answers' latency, service time and hop spans, and the
    scheduler lag of sends, all outside the warm-up) are recorded once, into
    pending histograms, and added in bulk to both the open interval and those
    totals when it closes (or when the totals are read), instead of being
    recorded twice. Warm-up values go to the open interval only.
    """

    __slots__ = (
        "_current",
        "_inflight",
        "_pending_hops",
        "_pending_lag",
        "_pending_latency",
        "_pending_service",
        "_totals",
        "warmup_s",
    )

    def __init__(self, start_s: float = 0.0, warmup_s: float = 0.0) -> None:
        self.warmup_s = warmup_s
        self._inflight = 0
        self._current = Interval(start_s, start_s < warmup_s)
        # Reused for the whole run (reset, never replaced), so they cost no allocation per interval.
        self._pending_latency = LatencyHistogram()
        self._pending_service = LatencyHistogram()
        self._pending_lag = LatencyHistogram()
        self._pending_hops: dict[str, LatencyHistogram] = {}
        self._totals: RunTotals | None = None

    @property
    def inflight(self) -> int:
        return self._inflight

    def link_totals(self, totals: RunTotals | None) -> None:
        """Where measured values go besides the intervals (None: nowhere). Values pending for the previous
        totals are handed to them first."""
        self.flush()
        self._totals = totals

    def on_sent(self, now: float, lag_s: float | None = None) -> None:
        """A request went out; ``lag_s`` (its send minus its due time) when it counts in the measured window."""
        self._current.sent += 1
        self._inflight += 1
        if lag_s is not None:
            self._pending_lag.record(lag_s)

    def on_warmup_sent(self, now: float, lag_s: float) -> None:
        """A request of the warm-up went out: its lag shows in the interval, not in the run's figures."""
        current = self._current
        current.sent += 1
        self._inflight += 1
        current.lag.record(lag_s)

    def on_answer(self, now: float, latency_s: float, service_s: float, ok: bool, reason: str | None = None,
                  hops: Mapping[str, float] | None = None) -> None:
        """An answer arrived (a warm-up one, or a failed one: the executor raised, counted under `reason`);
        it shows in the interval only."""
        current = self._current
        current.answered += 1
        self._inflight -= 1
        if ok:
            current.ok += 1
            current.latency.record(latency_s)
            current.service_time.record(service_s)
            if hops:
                for name, span_s in hops.items():
                    hop_histogram(current.hops, name).record(span_s)
        else:
            current.errors += 1
            count_capped(current.error_reasons, reason or "executor: error")

    def on_measured_answer(self, now: float, latency_s: float, service_s: float,
                           hops: Mapping[str, float] | None = None) -> None:
        """An ok answer that also counts in the linked totals (see :meth:`link_totals`); ``hops`` its spans."""
        current = self._current
        current.answered += 1
        current.ok += 1
        self._inflight -= 1
        self._pending_latency.record(latency_s)
        self._pending_service.record(service_s)
        if hops:
            pending = self._pending_hops
            for name, span_s in hops.items():
                histogram = pending.get(name)
                if histogram is None:
                    histogram = hop_histogram(pending, name)
                histogram.record(span_s)

    def flush(self) -> None:
        """Add the pending measured values to the open interval and to the linked totals.
        Exact at any moment: the interval is still open, and merges are exact."""
        current = self._current
        totals = self._totals
        for pending, interval_h, total_h in (
            (self._pending_latency, current.latency, totals.latency if totals else None),
            (self._pending_service, current.service_time, totals.service_time if totals else None),
            (self._pending_lag, current.lag, totals.scheduler_lag if totals else None),
        ):
            if pending._count:
                interval_h.merge(pending)
                if total_h is not None:
                    total_h.merge(pending)
                pending.reset()
        for name, pending in self._pending_hops.items():
            if pending._count:
                hop_histogram(current.hops, name).merge(pending)
                if totals is not None:
                    hop_histogram(totals.hops, name).merge(pending)
                pending.reset()

    def on_error(self, now: float, reason: str) -> None:
        """A sent request ended without an answer (transport failure, timeout)."""
        current = self._current
        current.errors += 1
        count_capped(current.error_reasons, reason)
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
