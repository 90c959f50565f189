"""One worker's measurement stage: what the sessions report (socket -> wire -> here) goes to the recorder, and on to
the outputs (here -> outputs) through the sinks this module defines and the outputs implement.

Per request (the per-answer path, called straight from the sessions' reads): an answer, a failure, a timeout;
per send: the scheduler's lag and the counts; per drop: the reason. Each goes to the `Recorder` (the run's figures,
which merge exactly across workers), to a live `MetricsSink` when there is one, and to a `RequestSink` (the
per-request log) when asked. Once a second `close_interval` closes a row of the time series and hands it to the
`RowSink` (one worker alone) and `on_interval` (forked workers hand theirs to the parent, which merges them).

A load model that cares when a request leaves the table (the closed model: a user's next request goes out as its
last one settles) sets `settled`.

Pure: no I/O, no clocks, no asyncio (times are handed in, seconds on the run's clock). Imports loadtest.measure and
relay.wire.answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from loadtest.measure.hops import hop_spans
from loadtest.measure.recorder import Recorder
from loadtest.measure.replay_diff import ReplayComparison
from loadtest.measure.series import Interval
from relay.wire.answers import Answer
from relay.wire.messages import Status

INTERVAL_S = 1.0


class RowSink(Protocol):
    """Where the time series goes: one row per second, in time order, as each second closes, with the interval it
    was made from (its histograms, which a results folder's interval log keeps)."""

    def add(self, row: dict[str, Any], interval: Interval | None = None) -> None: ...

    def replace_last(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        """The last row again, amended: a run's final sliver of a second joins the second before it."""
        ...


class MetricsSink(Protocol):
    """One worker's live metrics; called as events happen (times in seconds)."""

    def on_sent(self, docs: int, lag_s: float) -> None: ...
    def on_answer(self, latency_s: float, service_s: float, hops: Mapping[str, float] | None, docs: int,
                  error: str | None) -> None: ...
    def on_failure(self, reason: str) -> None: ...
    def on_dropped(self) -> None: ...
    def on_tick(self, target_rate: float | None, achieved_rate: float) -> None: ...
    def state(self) -> Any:
        """A picklable copy, for a forked worker to send to the parent."""
        ...


class RequestSink(Protocol):
    """Every request's record: (rid, due_s, sent_s, answered_s or None, outcome, docs)."""

    def add(self, record: tuple[Any, ...]) -> None: ...


IntervalCallback = Callable[[Interval, dict[str, Any]], None]


def error_of(answer: Any) -> str | None:
    """The exception name of an error answer (`error` if it names none), None for a good one. An `Answer`
    (WebSocket sessions) knows it; a `DataRequest` (gRPC, HTTP) has it in its status."""
    if type(answer) is Answer:
        return answer.error
    status: Status | None = answer.status
    if status is not None and status.code >= 1:
        return status.exception.name if status.exception and status.exception.name else "error"
    return None


class Meter:
    """One worker's measurement (see the module docstring)."""

    def __init__(self, recorder: Recorder, timeout_s: float, sink: MetricsSink | None = None,
                 requests: RequestSink | None = None, series: RowSink | None = None,
                 on_interval: IntervalCallback | None = None, alone: bool = True) -> None:
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.sink = sink
        self.requests = requests
        self.series = series
        self.on_interval = on_interval
        # One worker alone in its run: its final sliver of a second joins the second before it. (Workers of a
        # run merge their k-th seconds in the parent, so theirs stay apart.)
        self.alone = alone
        self.settled: Callable[[str], None] | None = None
        # A replay's answers are compared with the recorded ones (loadtest.measure.replay_diff).
        self.comparison: ReplayComparison | None = None
        self.docs_sent = 0
        self.docs_received = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.intervals = 0  # rows closed (handed on, not kept)
        self._last_interval: Interval | None = None

    def start(self, warmup_s: float) -> None:
        """The run's clock starts (every session is open): the time series starts at 0."""
        self.recorder.intervals = type(self.recorder.intervals)(0.0, warmup_s)

    # ---- per request -----------------------------------------------------------------------------

    def answered(self, entry: Any, resp: Any, docs: int, now: float) -> None:
        if now - entry.sent_s > self.timeout_s:
            # Answered after its timeout but before the ticker swept it: a timeout all the same.
            self.timed_out(entry, now)
            return
        error = error_of(resp)
        service_s = now - entry.sent_s
        # An ok answer's hops, read once for the histograms and the live metrics alike.
        hops = hop_spans(resp.route_spans(), service_s) if error is None else None
        sink = self.sink
        if sink is not None:
            sink.on_answer(now - entry.due_s, service_s, hops, docs, error)
        self.recorder.on_answer(entry.due_s, entry.sent_s, now, hops, error)
        self.docs_received += docs
        if self.requests is not None:
            self.requests.add((entry.rid, entry.due_s, entry.sent_s, now, "ok" if error is None else error, docs))
        if self.comparison is not None:
            self.comparison.answered(entry.rid, resp, docs, error, now - entry.sent_s)
        settled = self.settled
        if settled is not None:
            settled(entry.rid)

    def timed_out(self, entry: Any, now: float) -> None:
        if self.sink is not None:
            self.sink.on_failure("timeout")
        self.recorder.on_timeout(entry.due_s, now)
        if self.requests is not None:
            self.requests.add((entry.rid, entry.due_s, entry.sent_s, now, "timeout", 0))
        if self.comparison is not None:
            self.comparison.failed(entry.rid, "timeout")
        if self.settled is not None:
            self.settled(entry.rid)

    def failed(self, entry: Any, reason: str, now: float) -> None:
        if self.sink is not None:
            self.sink.on_failure(reason)
        self.recorder.on_transport_error(entry.due_s, now, reason)
        if self.requests is not None:
            self.requests.add((entry.rid, entry.due_s, entry.sent_s, now, reason, 0))
        if self.comparison is not None:
            self.comparison.failed(entry.rid, reason)
        if self.settled is not None:
            self.settled(entry.rid)

    def sent(self, due_s: float, now: float, docs: int) -> None:
        self.recorder.on_sent(due_s, now)
        self.docs_sent += docs
        if self.sink is not None:
            self.sink.on_sent(docs, now - due_s)

    def dropped(self, due_s: float, now: float, reason: str) -> None:
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
        self.recorder.on_dropped(due_s, now)
        if self.sink is not None:
            self.sink.on_dropped()

    def unanswered(self, entries: Iterable[Any]) -> None:
        """The end of the run: these requests were still in flight."""
        left = list(entries)
        self.recorder.finish(p.due_s for p in left)
        if self.sink is not None:
            for _ in left:
                self.sink.on_failure("unanswered")
        if self.requests is not None:
            for p in left:
                self.requests.add((p.rid, p.due_s, p.sent_s, None, "unanswered", 0))
        if self.comparison is not None:
            for p in left:
                self.comparison.failed(p.rid, "unanswered")

    # ---- once a second ---------------------------------------------------------------------------

    def close_interval(self, now: float, inflight: int, target_rate: float | None) -> None:
        """Close this second's row of the time series at `now` and hand it on."""
        self._emit(self.recorder.intervals.close(now), inflight, target_rate)

    def close_series(self, now: float, inflight: int, target_rate: float | None) -> None:
        """The end of the run: close the last interval at `now` and hand it on. A sliver after the last full second
        joins the second before it (so that rates are not computed over a few milliseconds) when this worker is
        alone in its run."""
        last = self.recorder.intervals.close(now)
        if last.sent or last.answered or last.errors or last.dropped:
            previous = self._last_interval
            if self.alone and previous is not None and last.end_s - last.start_s < INTERVAL_S / 2:
                previous.merge(last)
                if self.series is not None:
                    self.series.replace_last(previous.to_row(), previous)
            else:
                self._emit(last, inflight, target_rate)
        if self.sink is not None:
            # Once the worker is done nothing more is due from it, whatever the schedule's clock says.
            self._tick_sink(last, None if target_rate is None else 0.0)

    def _emit(self, interval: Interval, inflight: int, target_rate: float | None) -> None:
        interval.inflight = inflight
        row = interval.to_row()
        self.intervals += 1
        if self.series is not None:
            self.series.add(row, interval)
        # Kept (histograms and all) only where the run's final sliver may join it.
        self._last_interval = interval if self.alone else None
        if self.sink is not None:
            self._tick_sink(interval, target_rate)
        if self.on_interval is not None:
            self.on_interval(interval, row)

    def _tick_sink(self, interval: Interval, target_rate: float | None) -> None:
        """The once-a-second gauges: this worker's share of the target rate, and the rate it sent at."""
        span = interval.end_s - interval.start_s
        self.sink.on_tick(target_rate, interval.sent / span if span > 0 else 0.0)  # type: ignore[union-attr]
