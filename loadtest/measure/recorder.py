"""All measurements of one process (or one connection): latency, service time, scheduler lag, hops, accounting,
the time series; merged exactly, and shipped between processes as a msgpack-able snapshot.

Latency follows wrk2: it is measured from the request's *intended* send time (its due time from the schedule),
so a server that stalls the sender is charged for the whole stall. Service time (from the actual send) and
scheduler lag (actual send minus due time) are kept apart, so one can tell a slow server from a slow load
generator. An ok answer's latency, service time and hop spans, and a send's lag, are recorded once, into the
second's interval, and added in bulk (hdrh adds the counts arrays in C) to the run's totals when the second closes.

Called on the engine's per-request path: pure, no I/O, no clocks, no asyncio. Times are floats in seconds on
the engine's clock (seconds since the run's start).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loadtest.measure.accounting import Accounting
from loadtest.measure.histograms import SNAPSHOT_VERSION, LatencyHistogram
from loadtest.measure.series import IntervalStats, RunTotals, hop_histogram


class Recorder:
    """All measurements of one process (or one connection): merge recorders to combine.

    Times are seconds since the run's start on one monotonic clock:
    ``due_s`` from the schedule, ``sent_s`` when the request went out,
    ``answered_s``/``now_s`` when the answer or failure arrived. A request whose
    due time is before ``warmup_s`` is accounted in ``accounting.warmup`` and
    kept out of every histogram (the live time series still shows it).

    Histograms hold ok answers only: latency (answer minus due time),
    service_time (answer minus actual send), one per hop (see
    :func:`loadtest.measure.hops.hop_spans`), and scheduler_lag (send minus due, for every send).
    Failed answers, transport failures and timeouts are counted, not timed.

    ``latency``, ``service_time``, ``scheduler_lag`` and ``hops`` are filled
    through :attr:`intervals` (see :class:`IntervalStats`), so each value is
    recorded once; reading them brings them up to date. Assigning ``intervals``
    (a fresh time series) keeps that link.
    """

    def __init__(self, warmup_s: float = 0.0, start_s: float = 0.0) -> None:
        self.warmup_s = float(warmup_s)
        self._totals = RunTotals()
        self.accounting = Accounting()
        self._intervals = IntervalStats(start_s, self.warmup_s)
        self._intervals.link_totals(self._totals)

    @property
    def intervals(self) -> IntervalStats:
        return self._intervals

    @intervals.setter
    def intervals(self, stats: IntervalStats) -> None:
        self._intervals.link_totals(None)  # hands over what is pending, then lets go
        self._intervals = stats
        stats.link_totals(self._totals)

    def _totals_now(self) -> RunTotals:
        self._intervals.flush()
        return self._totals

    @property
    def latency(self) -> LatencyHistogram:
        return self._totals_now().latency

    @property
    def service_time(self) -> LatencyHistogram:
        return self._totals_now().service_time

    @property
    def scheduler_lag(self) -> LatencyHistogram:
        return self._totals_now().scheduler_lag

    @property
    def hops(self) -> dict[str, LatencyHistogram]:
        return self._totals_now().hops

    def _replace_totals(self, totals: RunTotals) -> None:
        """Put restored run totals in place; what the time series holds pending goes into them from now on."""
        self._intervals.flush()
        self._totals = totals
        self._intervals.link_totals(totals)

    # -- events (the per-request path) --

    def on_dropped(self, due_s: float, now_s: float) -> None:
        self.accounting.ledger(due_s < self.warmup_s).dropped += 1
        self._intervals.on_dropped(now_s)

    def on_sent(self, due_s: float, sent_s: float) -> None:
        if due_s < self.warmup_s:
            self.accounting.warmup.sent += 1
            self._intervals.on_warmup_sent(sent_s, sent_s - due_s)
        else:
            self.accounting.sent += 1
            self._intervals.on_sent(sent_s, sent_s - due_s)

    def on_answer(
        self,
        due_s: float,
        sent_s: float,
        answered_s: float,
        hops: Mapping[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """An answer arrived. ``error`` is the executor's exception name when the
        answer reports a failure; ``hops`` (loadtest.measure.hops.hop_spans of its
        routes) feeds the per-hop histograms."""
        latency_s = answered_s - due_s
        service_s = answered_s - sent_s
        if error is not None:
            self._intervals.on_answer(answered_s, latency_s, service_s, False, f"executor: {error}")
            self.accounting.ledger(due_s < self.warmup_s).add_failed(error)
            return
        if due_s < self.warmup_s:
            self._intervals.on_answer(answered_s, latency_s, service_s, True, hops=hops)
            self.accounting.warmup.ok += 1
            return
        # Recorded once, for the time series and the run's totals alike.
        self._intervals.on_measured_answer(answered_s, latency_s, service_s, hops)
        self.accounting.ok += 1

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

    # -- combining --

    def merge(self, other: Recorder) -> None:
        """Add ``other``'s histograms and counts (the time series is not merged:
        combine :meth:`IntervalStats.close` results for that)."""
        if other.warmup_s != self.warmup_s:
            raise ValueError(
                f"cannot merge recorders with different warm-ups ({self.warmup_s} s, {other.warmup_s} s)"
            )
        mine, theirs = self._totals_now(), other._totals_now()
        mine.latency.merge(theirs.latency)
        mine.service_time.merge(theirs.service_time)
        mine.scheduler_lag.merge(theirs.scheduler_lag)
        for name, histogram in theirs.hops.items():
            hop_histogram(mine.hops, name).merge(histogram)
        self.accounting.merge(other.accounting)

    def snapshot(self) -> dict[str, Any]:
        """Plain data (str, int, float, bytes, dict) that msgpack can carry; histograms encoded."""
        return {
            "v": SNAPSHOT_VERSION,
            "warmup_s": self.warmup_s,
            "latency": self.latency.encode(),
            "service_time": self.service_time.encode(),
            "scheduler_lag": self.scheduler_lag.encode(),
            "hops": {name: histogram.encode() for name, histogram in self.hops.items()},
            "accounting": self.accounting.to_plain(),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Recorder:
        if data.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported recorder snapshot version {data.get('v')!r}")
        return cls.from_parts(float(data["warmup_s"]), RunTotals(
            latency=LatencyHistogram.decode(data["latency"]),
            service_time=LatencyHistogram.decode(data["service_time"]),
            scheduler_lag=LatencyHistogram.decode(data["scheduler_lag"]),
            hops={str(name): LatencyHistogram.decode(blob) for name, blob in data["hops"].items()},
        ), Accounting.from_plain(data["accounting"]))

    @classmethod
    def from_parts(cls, warmup_s: float, totals: RunTotals, accounting: Accounting) -> Recorder:
        """A finished run's recorder from its figures (a snapshot's, or a results folder's)."""
        recorder = cls(warmup_s=warmup_s)
        recorder._replace_totals(totals)
        recorder.accounting = accounting
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
