"""The per-second time series: an `Interval` per second (counts and histograms), rolled by `IntervalStats`, for the
live line, timeseries.jsonl, the report and the live dashboard. Intervals of the same second merge exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from loadtest.measure.accounting import count_capped
from loadtest.measure.histograms import LatencyHistogram, us_to_ms


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
            count_capped(self.error_reasons, reason, count)
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
        max_ms = us_to_ms(self.latency._max_us) if self.latency.count else None
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
            count_capped(current.error_reasons, reason or "executor: error")

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
