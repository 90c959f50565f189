"""The load run: schedule -> sessions -> wire -> socket, and socket -> wire -> measure -> outputs.

A worker (one process, one event loop) opens its sessions, then either follows a schedule of
intended send times (the open model: latency is measured from the due time, so a stalled server
cannot hide its stall; a request whose due time finds every connection at its in-flight limit is
dropped and counted, never sent late in silence) or keeps C requests in flight (the closed model).
Open model: one pass sends every request due by now, never one before its due time; a pass runs when
loadtest.models.waker wakes the loop at the next due time (the loop's own timers are a millisecond coarse)
and after every read of a connection. Closed model: a user's next request is sent from the callback
that settles its last one (answer, failure or timeout), in the same turn of the event loop.
Every second it rolls an interval of the time series; at the end it sends end-of-stream on every
session, waits a bounded grace for the last answers, and returns a snapshot that merges exactly with
other workers'. `run_load` starts `procs` workers (forked before any event loop exists), merges their
snapshots and intervals, and returns one `RunResult` whatever the number of processes.

Replay (`cfg.replay`, loadtest.models.replay): the schedule, the sessions (one per recorded connection, each
in its own subprotocol) and the frames come from a recording; request s goes on the session its recorded
connection maps to, and each answer is compared with the recorded one (loadtest.measure.replay_diff).

The time series streams: each second's row goes to the caller's `RowSink` (e.g. the results folder's
timeseries.jsonl, loadtest.outputs.timeseries) as the second closes, merged across workers in the
parent when there are several; no process keeps the rows, so a run of hours stays flat in memory.

Metrics for a live scraper are optional and pluggable: the caller hands `run_load` an exporter
(`MetricsExporter`, e.g. loadtest.outputs.prometheus); each worker then feeds a `MetricsSink` of its
own, and a forked worker ships its sink's state to the parent once a second and at the end. Without an
exporter the sink calls are not on the per-answer path at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from loadtest.config import LoadConfig, codec_mode
from loadtest.measure.recorder import Recorder
from loadtest.measure.replay_diff import ReplayComparison, ReplayDiff
from loadtest.measure.series import Interval
from loadtest.models.replay import ReplayPlan, load_recording
from loadtest.models.schedule import Schedule
from loadtest.models.waker import make_waker
from loadtest.payloads import IdMaker, Template, build_templates
from loadtest.sessions.base import ConnectError, Pending
from loadtest.sessions.kinds import LoadSession, open_session
from relay.common import loop as event_loop
from relay.wire.answers import Answer
from relay.wire.messages import Status

INTERVAL_S = 1.0
# In the open model, at most this many sends per pass when behind schedule; then the readers get a turn
# of the event loop, so that answers keep being drained while the dispatcher catches up.
BATCH_MAX = 64
# In the closed model, how often a user whose connection is down looks again.
PARKED_RETRY_S = 0.05


def _error_of(answer: Any) -> str | None:
    """The exception name of an error answer (`error` if it names none), None for a good one. An
    `Answer` (WebSocket sessions) knows it; a `DataRequest` (gRPC, HTTP) has it in its status."""
    if type(answer) is Answer:
        return answer.error
    status: Status | None = answer.status
    if status is not None and status.code >= 1:
        return status.exception.name if status.exception and status.exception.name else "error"
    return None


class RowSink(Protocol):
    """Where the time series goes: one row per second, in time order, as each second closes."""

    def add(self, row: dict[str, Any]) -> None: ...

    def replace_last(self, row: dict[str, Any]) -> None:
        """The last row again, amended: a run's final sliver of a second joins the second before it."""
        ...


class MetricsSink(Protocol):
    """One worker's live metrics; the worker calls these as events happen (times in seconds)."""

    def on_sent(self, docs: int, lag_s: float) -> None: ...
    def on_answer(self, latency_s: float, service_s: float, routes: Any, docs: int, error: str | None) -> None: ...
    def on_failure(self, reason: str) -> None: ...
    def on_dropped(self) -> None: ...
    def on_tick(self, target_rate: float | None, achieved_rate: float) -> None: ...
    def state(self) -> Any:
        """A picklable copy, for a forked worker to send to the parent."""
        ...


class MetricsExporter(Protocol):
    """Serves the workers' metrics; owned by run_load's caller, which stops it."""

    def sink(self, worker: int) -> MetricsSink:
        """A sink for a worker in this process, read live by the exporter. (For forked workers run_load
        makes one each too, a placeholder at 0 until the worker's first `update`.)"""
        ...

    def sink_factory(self) -> Callable[[int], MetricsSink]:
        """Makes a worker's sink inside a worker process (picklable, for spawned processes)."""
        ...

    def update(self, worker: int, state: Any) -> None:
        """The latest state of a worker running in another process."""
        ...

    def start(self) -> None:
        """Begin serving (called after the worker processes are forked: no thread crosses a fork)."""
        ...


def _share(total: int, worker: int, n: int) -> int:
    return total // n + (1 if worker < total % n else 0)


@dataclass
class WorkerResult:
    snapshot: dict[str, Any]
    intervals: int  # rows of the time series this worker closed (they went to its sink or its parent)
    negotiated: str | None
    docs_sent: int
    docs_received: int
    started_wall: float
    elapsed_s: float
    reconnects: int
    late_answers: int
    dropped_by_reason: dict[str, int]
    dispatch_end_s: float = 0.0
    replay_diff: dict[str, Any] | None = None  # ReplayDiff.to_plain() of a replay run

    def to_plain(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Worker:
    """One process's share of a run."""

    def __init__(self, cfg: LoadConfig, index: int, n_workers: int, run_id: str,
                 on_interval: Callable[[int, dict[str, Any]], None] | None = None,
                 sink: MetricsSink | None = None,
                 publish: Callable[[], None] | None = None,
                 parent_pid: int | None = None,
                 series: RowSink | None = None) -> None:
        # `publish` ships the sink's state to another process (forked workers), `parent_pid` is the
        # process whose death must end this worker: a worker never outlives the run that started it.
        # `series` takes each second's row as it closes (a worker alone in its run; forked workers hand
        # their intervals to `on_interval`, and the parent merges them into its series).
        self.publish = publish
        self.series = series
        self.parent_pid = parent_pid
        self.cfg = cfg
        self.index = index
        self.n_workers = n_workers
        self.recorder = Recorder(warmup_s=cfg.warmup_s)
        self.ids = IdMaker(run_id, index)
        # A replay: the frames, sessions and schedule of this worker's share of a recording; the answers' diff.
        self.replay: ReplayPlan | None = None
        self.comparison: ReplayComparison | None = None
        if cfg.replay is not None:
            self.replay = _replay_plan(cfg, index, n_workers)
            self.templates: list[Template] = self.replay.templates
            self.comparison = ReplayComparison(self.replay.recorded, self.replay.ids_comparable,
                                               self.replay.latency_basis)
            self._pick = self._pick_replayed  # type: ignore[method-assign]
        else:
            self.templates = build_templates(
                cfg.mode, cfg.docs, cfg.endpoint, cfg.parameters, cfg.target_executor, seed=cfg.seed + index
            )
        self.on_interval = on_interval
        self.sessions: list[LoadSession] = []
        # No row is kept: each goes to `series` / `on_interval` as its second closes. Only the last
        # interval stays, for the run's final sliver of a second to join (see `_close_series`).
        self.intervals = 0
        self._last_interval: Interval | None = None
        self.docs_sent = 0
        self.docs_received = 0
        self.dropped_by_reason: dict[str, int] = {}
        self._t0 = 0.0
        # Closed model: which user each request in flight belongs to; its settling sends the user's next.
        self._user_of: dict[str, int] = {}
        self._log: list[tuple[Any, ...]] | None = [] if cfg.log_requests else None
        self._log_file: Any = None
        self.sink = sink
        self._schedule: Schedule | None = None

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    # ---- callbacks from sessions (the per-answer path) -----------------------------------------

    def _on_answer(self, entry: Pending, resp: Any, docs: int, now: float) -> None:
        if now - entry.sent_s > self.cfg.timeout_s:
            # Answered after its timeout but before the ticker swept it: a timeout all the same.
            self._on_timeout(entry, now)
            return
        error = _error_of(resp)
        self.recorder.on_answer(entry.due_s, entry.sent_s, now, resp.routes, error)
        self.docs_received += docs
        if self.comparison is not None:
            self.comparison.answered(entry.rid, resp, docs, error, now - entry.sent_s)
        if self._log is not None:
            self._log.append((entry.rid, entry.due_s, entry.sent_s, now, "ok" if error is None else error, docs))
        if self._user_of:
            self._settled(entry.rid)

    def _on_answer_metered(self, entry: Pending, resp: Any, docs: int, now: float) -> None:
        """The metrics sink, then `_on_answer`: the sessions get this one only when there is a sink."""
        if now - entry.sent_s <= self.cfg.timeout_s:  # else counted as a timeout, sink included
            self.sink.on_answer(now - entry.due_s, now - entry.sent_s, resp.routes, docs,  # type: ignore[union-attr]
                                _error_of(resp))
        self._on_answer(entry, resp, docs, now)

    def _on_timeout(self, entry: Pending, now: float) -> None:
        if self.sink is not None:
            self.sink.on_failure("timeout")
        self.recorder.on_timeout(entry.due_s, now)
        if self.comparison is not None:
            self.comparison.failed(entry.rid, "timeout")
        if self._log is not None:
            self._log.append((entry.rid, entry.due_s, entry.sent_s, now, "timeout", 0))
        if self._user_of:
            self._settled(entry.rid)

    def _on_failure(self, entry: Pending, reason: str, now: float) -> None:
        if self.sink is not None:
            self.sink.on_failure(reason)
        self.recorder.on_transport_error(entry.due_s, now, reason)
        if self.comparison is not None:
            self.comparison.failed(entry.rid, reason)
        if self._log is not None:
            self._log.append((entry.rid, entry.due_s, entry.sent_s, now, reason, 0))
        if self._user_of:
            self._settled(entry.rid)

    # ---- the run -------------------------------------------------------------------------------

    def _connections(self) -> int:
        if self.replay is not None:
            return self.replay.connections
        return _share(self.cfg.connections, self.index, self.n_workers) or 1

    def _session_config(self, i: int) -> LoadConfig:
        """What session i is opened with: a replay's sessions each speak their recorded connection's subprotocol."""
        if self.replay is None:
            return self.cfg
        return dataclasses.replace(self.cfg, subprotocol=self.replay.subprotocols[i])

    async def run(self) -> WorkerResult:
        cfg = self.cfg
        started_wall = time.time()
        self._t0 = time.perf_counter()
        on_answer = self._on_answer if self.sink is None else self._on_answer_metered
        self.sessions = [
            open_session(self._session_config(i), i, self.clock, on_answer, self._on_failure)
            for i in range(self._connections())
        ]
        connected = await asyncio.gather(*(s.connect() for s in self.sessions), return_exceptions=True)
        failed = [r for r in connected if isinstance(r, BaseException)]
        if failed:
            for s in self.sessions:  # the ones that did connect hold sockets (and HTTP clients) to release
                await s.close()
            raise failed[0]
        if cfg.log_requests:
            path = Path(f"{cfg.log_requests}.w{self.index}") if self.n_workers > 1 else cfg.log_requests
            self._log_file = path.open("wb")
        # The clock starts when every session is open: connecting is not part of the schedule.
        self._t0 = time.perf_counter()
        self.recorder.intervals = type(self.recorder.intervals)(0.0, cfg.warmup_s)
        ticker = asyncio.create_task(self._tick())
        try:
            schedule = self._schedule = self.replay.schedule if self.replay is not None else cfg.schedule()
            if schedule is None:
                await self._closed_model()
            else:
                # Each worker takes every n-th due time of one schedule: the total is exact and the
                # workers' sends interleave instead of firing together.
                await self._open_model(schedule.shard(self.index, self.n_workers))
            dispatch_end = self.clock()
            leftovers = await asyncio.gather(*(s.finish(cfg.grace_s) for s in self.sessions))
            self.recorder.finish(p.due_s for left in leftovers for p in left)
            if self.sink is not None:
                for _ in range(sum(len(left) for left in leftovers)):
                    self.sink.on_failure("unanswered")
            if self._log is not None:
                for left in leftovers:
                    self._log.extend((p.rid, p.due_s, p.sent_s, None, "unanswered", 0) for p in left)
            if self.comparison is not None:
                for left in leftovers:
                    for p in left:
                        self.comparison.failed(p.rid, "unanswered")
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for s in self.sessions:
                await s.close()
        elapsed = self.clock()
        last = self._close_series(elapsed)
        if self.sink is not None:
            self._meter_interval(last, ended=True)
        self._flush_log(final=True)
        return WorkerResult(
            snapshot=self.recorder.snapshot(),
            intervals=self.intervals,
            negotiated=self.sessions[0].negotiated if self.sessions else None,
            docs_sent=self.docs_sent,
            docs_received=self.docs_received,
            started_wall=started_wall,
            elapsed_s=elapsed,
            reconnects=sum(s.reconnects for s in self.sessions),
            late_answers=sum(s.late_answers for s in self.sessions),
            dropped_by_reason=self.dropped_by_reason,
            dispatch_end_s=dispatch_end,
            replay_diff=self.comparison.diff.to_plain() if self.comparison is not None else None,
        )

    def _pick_replayed(self, seq: int) -> LoadSession | None:
        """A replay's request `seq` goes on its recorded connection's session, or is dropped."""
        plan = self.replay
        assert plan is not None
        session = self.sessions[plan.session_of[seq % len(plan.session_of)]]
        return session if session.can_send else None

    def _pick(self, start: int) -> LoadSession | None:
        sessions = self.sessions
        n = len(sessions)
        for k in range(n):
            s = sessions[(start + k) % n]
            if s.can_send:
                return s
        return None

    def _post(self, session: LoadSession, due: float, seq: int, now: float, user: int = -1) -> None:
        """Send request `seq` (due at `due`, sent `now`, both run clock) on `session`, without waiting."""
        tpl = self.templates[seq % len(self.templates)]
        rid = self.ids.next()
        self.recorder.on_sent(due, now)
        self.docs_sent += tpl.docs
        if self.sink is not None:
            self.sink.on_sent(tpl.docs, now - due)
        if user >= 0:
            self._user_of[rid] = user  # before the send: a dead connection fails the request at once
        if self.comparison is not None:
            self.comparison.sent(rid, seq % len(self.templates))
        session.post(rid, tpl.frame(rid), due, tpl.docs, due < self.cfg.warmup_s, now)

    def _drop(self, due: float) -> None:
        reason = "in-flight limit" if any(s.connected for s in self.sessions) else "no connection"
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
        self.recorder.on_dropped(due, self.clock())
        if self.sink is not None:
            self.sink.on_dropped()

    # ---- the open model: every request at its due time, never before -----------------------------

    async def _open_model(self, due_times: Iterator[float]) -> None:
        """Send each request at its due time. One pass (`_pump`) sends everything due by now; it runs
        when the waker fires at the next due time, and after every read of a connection (a busy loop
        then sends what fell due without a wake-up of its own)."""
        loop = asyncio.get_running_loop()
        self._due_iter = iter(due_times)
        self._next_due: float | None = next(self._due_iter, None)
        self._seq = 0
        self._open_done: asyncio.Future[None] = loop.create_future()
        if self._next_due is None:
            return
        self._waker = make_waker(loop, self._pump)
        hooked = [s for s in self.sessions if hasattr(s, "after_read")]
        for s in hooked:
            s.after_read = self._pump  # type: ignore[attr-defined]
        try:
            self._pump()
            await self._open_done
        finally:
            for s in hooked:
                s.after_read = None  # type: ignore[attr-defined]
            self._waker.close()

    def _pump(self) -> None:
        due = self._next_due
        if due is None:
            return
        now = self.clock()
        if due > now:
            self._waker.wake_at(self._t0 + due)
            return
        try:
            clock = self.clock
            due_iter = self._due_iter
            seq = self._seq
            for _ in range(BATCH_MAX):
                session = self._pick(seq)
                if session is None:
                    self._drop(due)
                else:
                    self._post(session, due, seq, now)
                seq += 1
                due = next(due_iter, None)
                if due is None:
                    break
                now = clock()
                if due > now:
                    break
            self._seq = seq
            self._next_due = due
        except BaseException as exc:  # a failed pass must end the run, not leave it waiting
            self._next_due = None
            if not self._open_done.done():
                self._open_done.set_exception(exc)
            return
        if due is None:
            if not self._open_done.done():
                self._open_done.set_result(None)
        elif due > now:
            self._waker.wake_at(self._t0 + due)
        else:
            asyncio.get_running_loop().call_soon(self._pump)  # behind schedule: let the readers in first

    # ---- the closed model: each user sends its next request once the last one settled -------------

    async def _closed_model(self) -> None:
        cfg = self.cfg
        users = _share(cfg.concurrency or 1, self.index, self.n_workers)
        self._users = users
        self._user_seq = list(range(users))
        self._budget: int | None = _share(cfg.requests, self.index, self.n_workers) if cfg.requests else None
        self._users_left = users
        self._parked: list[int] = []
        self._closed_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if users == 0:
            return
        for u in range(users):
            self._user_next(u)
        while not self._closed_done.done():
            # Users whose connection was down look again (it may have reconnected, or the run ended).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed_done), PARKED_RETRY_S)
            parked, self._parked = self._parked, []
            for u in parked:
                self._user_next(u)

    def _settled(self, rid: str) -> None:
        user = self._user_of.pop(rid, None)
        if user is not None:
            self._user_next(user)

    def _user_next(self, u: int) -> None:
        """User `u` has nothing in flight: send its next request, wait for its connection, or retire."""
        now = self.clock()
        deadline = self.cfg.duration_s
        if (deadline is not None and now >= deadline) or self._budget == 0:
            self._users_left -= 1
            if self._users_left == 0 and not self._closed_done.done():
                self._closed_done.set_result(None)
            return
        session = self.sessions[u % len(self.sessions)]
        if not session.connected:
            self._parked.append(u)
            return
        if self._budget is not None:
            self._budget -= 1
        seq = self._user_seq[u]
        self._user_seq[u] = seq + self._users
        self._post(session, now, seq, now, user=u)

    async def _tick(self) -> None:
        """Every second: time out old requests, close a time-series interval. Four times a second:
        publish metrics (forked workers), and make sure the parent process is still there."""
        cfg = self.cfg
        next_at = INTERVAL_S
        quarter = INTERVAL_S / 4
        next_publish = quarter
        while True:
            await asyncio.sleep(max(0.0, min(next_at, next_publish) - self.clock()))
            now = self.clock()
            if now >= next_publish:
                next_publish += quarter
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    # The parent is gone (killed): nobody will read this worker's results.
                    os._exit(3)
                if self.publish is not None:
                    self.publish()
            if now < next_at:
                continue
            for s in self.sessions:
                for p in s.expire(now - cfg.timeout_s):
                    self._on_timeout(p, now)
            self._emit_interval(self.recorder.intervals.close(now))
            self._flush_log()
            next_at += INTERVAL_S

    def _close_series(self, now: float) -> Interval:
        """At the end of the run: close the last interval at `now` and hand it on; returns it."""
        last = self.recorder.intervals.close(now)
        if last.sent or last.answered or last.errors or last.dropped:
            previous = self._last_interval
            if self.n_workers == 1 and previous is not None and last.end_s - last.start_s < INTERVAL_S / 2:
                # A sliver after the last full second (the final answers) joins the second before it, so
                # that rates in the time series are not computed over a few milliseconds.
                previous.merge(last)
                if self.series is not None:
                    self.series.replace_last(previous.to_row())
            else:
                self._emit_interval(last)
        return last

    def _emit_interval(self, interval: Interval) -> None:
        interval.inflight = sum(len(s.pending) for s in self.sessions)
        row = interval.to_row()
        self.intervals += 1
        if self.series is not None:
            self.series.add(row)
        # Kept (histograms and all) only where the run's final sliver may join it: one process alone.
        self._last_interval = interval if self.n_workers == 1 else None
        if self.sink is not None:
            self._meter_interval(interval)
        if self.on_interval is not None:
            self.on_interval(self.index, interval, row)

    def _meter_interval(self, interval: Interval, ended: bool = False) -> None:
        """The once-a-second gauges: this worker's share of the target rate, and the rate it sent at."""
        span = interval.end_s - interval.start_s
        schedule = self._schedule
        target = None
        if schedule is not None:
            # Once this worker is done, nothing more is due from it, whatever the schedule's clock says.
            target = 0.0 if ended else schedule.target_rate_at(interval.end_s) / self.n_workers
        self.sink.on_tick(target, interval.sent / span if span > 0 else 0.0)  # type: ignore[union-attr]

    def _flush_log(self, final: bool = False) -> None:
        if self._log is None or self._log_file is None:
            return
        if self._log:
            packer = msgpack.Packer()
            self._log_file.write(b"".join(packer.pack(rec) for rec in self._log))
            self._log.clear()
        if final:
            self._log_file.close()


def _replay_plan(cfg: LoadConfig, worker: int, n_workers: int) -> ReplayPlan:
    """Worker `worker`'s share of the replay `cfg.replay` asks for (its connections, their requests' frames)."""
    spec = cfg.replay
    assert spec is not None
    transport = cfg.transport
    return ReplayPlan.build(load_recording(spec.source), spec, lambda sub: codec_mode(transport, sub), worker,
                            n_workers, duration_s=cfg.duration_s, max_requests=cfg.requests, arrival=cfg.arrival,
                            seed=cfg.seed, docarray=cfg.docs.docarray)


# ---- processes ---------------------------------------------------------------------------------


@dataclass
class RunResult:
    cfg: LoadConfig
    recorder: Recorder
    intervals: int  # rows of the time series (handed to the run's RowSink as they closed, not kept)
    negotiated: str | None
    docs_sent: int
    docs_received: int
    started_wall: float
    elapsed_s: float
    reconnects: int
    late_answers: int
    dropped_by_reason: dict[str, int]
    dispatch_end_s: float
    replay_diff: ReplayDiff | None = None

    def measured_duration_s(self) -> float:
        """The window the figures cover: the schedule's length (or the time spent sending), less warm-up."""
        cfg = self.cfg
        if cfg.stages:
            planned: float | None = sum(d for d, _ in cfg.stages)
        else:
            planned = cfg.duration_s
        if planned is None or (cfg.requests and self.dispatch_end_s < planned):
            planned = self.dispatch_end_s
        return max(planned - cfg.warmup_s, 1e-9)


def merge_results(cfg: LoadConfig, results: list[WorkerResult], intervals: int | None = None) -> RunResult:
    """One RunResult from every worker's; `intervals` counts the merged time series' rows (one worker's
    own when None)."""
    recorder = Recorder.from_snapshot(results[0].snapshot)
    for r in results[1:]:
        recorder.merge(Recorder.from_snapshot(r.snapshot))
    if intervals is None:
        intervals = results[0].intervals
    dropped: dict[str, int] = {}
    for r in results:
        for k, v in r.dropped_by_reason.items():
            dropped[k] = dropped.get(k, 0) + v
    diff: ReplayDiff | None = None
    for r in results:
        if r.replay_diff is not None:
            part = ReplayDiff.from_plain(r.replay_diff)
            if diff is None:
                diff = part
            else:
                diff.merge(part)
    return RunResult(
        cfg=cfg,
        recorder=recorder,
        intervals=intervals,
        negotiated=results[0].negotiated,
        docs_sent=sum(r.docs_sent for r in results),
        docs_received=sum(r.docs_received for r in results),
        started_wall=min(r.started_wall for r in results),
        elapsed_s=max(r.elapsed_s for r in results),
        reconnects=sum(r.reconnects for r in results),
        late_answers=sum(r.late_answers for r in results),
        dropped_by_reason=dropped,
        dispatch_end_s=max(r.dispatch_end_s for r in results),
        replay_diff=diff,
    )


def merge_second(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the workers' intervals (`Interval.to_plain`) of the same second: their k-th."""
    merged = Interval.from_plain(parts[0])
    for part in parts[1:]:
        merged.merge(Interval.from_plain(part))
    return merged.to_row()


def _worker_main(cfg: LoadConfig, index: int, n: int, run_id: str, out: Any,
                 make_sink: Callable[[int], MetricsSink] | None = None) -> None:
    """Entry point of a worker process: run, stream intervals (and metrics), send the result back."""
    sink = make_sink(index) if make_sink is not None else None

    def on_interval(worker: int, interval: Interval, row: dict[str, Any]) -> None:
        out.put(("interval", worker, interval.to_plain()))

    def publish() -> None:
        # Four times a second, so that a scraper's rate() over the workers is not a second stale.
        out.put(("metrics", index, sink.state()))  # type: ignore[union-attr]

    try:
        worker = Worker(cfg, index, n, run_id, on_interval, sink, publish if sink is not None else None,
                        parent_pid=os.getppid())
        result = event_loop.run(worker.run)
        if sink is not None:
            out.put(("metrics", index, sink.state()))  # the final counts, before the result
        out.put(("result", index, result.to_plain()))
    except ConnectError as exc:
        out.put(("error", index, str(exc)))
    except BaseException as exc:  # the parent must hear of every way a worker ends
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))


def run_load(cfg: LoadConfig, on_row: Callable[[dict[str, Any]], None] | None = None,
             metrics: MetricsExporter | None = None, series: RowSink | None = None) -> RunResult:
    """Run the whole load test, in this process or in `cfg.procs` forked workers.

    Each second's row (merged across workers) goes to `series` and then to `on_row` (the live line) as
    the second closes; nothing keeps them. With `metrics`, every worker feeds it (the caller stops it,
    after any linger)."""
    run_id = uuid.uuid4().hex
    if cfg.procs <= 1:
        sink = None
        if metrics is not None:
            sink = metrics.sink(0)
            metrics.start()

        def on_interval(_worker: int, _interval: Interval, row: dict[str, Any]) -> None:
            if on_row is not None:
                on_row(row)

        result = event_loop.run(Worker(cfg, 0, 1, run_id, on_interval, sink, series=series).run)
        return merge_results(cfg, [result])

    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    out = ctx.Queue()
    make_sink = metrics.sink_factory() if metrics is not None else None
    procs = [ctx.Process(target=_worker_main, args=(cfg, i, cfg.procs, run_id, out, make_sink), daemon=True)
             for i in range(cfg.procs)]
    for p in procs:
        p.start()
    # SIGTERM must not leave the workers running: turn it into an exception that reaches the finally below.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _collect(cfg, procs, out, on_row, metrics, series)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _collect(cfg: LoadConfig, procs: list[Any], out: Any, on_row: Callable[[dict[str, Any]], None] | None,
             metrics: MetricsExporter | None, series: RowSink | None = None) -> RunResult:
    """Read the workers' intervals, metrics and results off the queue until each has finished. A second
    is merged and handed on (`series`, then `on_row`) once every worker has reported it, then forgotten:
    only seconds some worker has yet to report are held, a few at most."""
    if metrics is not None:
        # Every worker's series exist at 0 from the start, so rate() and increase() see the first second.
        for i in range(cfg.procs):
            metrics.sink(i)
        metrics.start()
    results: dict[int, WorkerResult] = {}
    errors: list[str] = []
    pending_rows: dict[int, dict[int, dict[str, Any]]] = {}
    next_k = 0
    counts = [0] * cfg.procs
    limit = (cfg.duration_s or 0) + sum(d for d, _ in cfg.stages or []) + cfg.grace_s + cfg.connect_timeout_s + 60
    deadline = time.monotonic() + (limit if (cfg.duration_s or cfg.stages) else 24 * 3600)
    while len(results) + len(errors) < cfg.procs and time.monotonic() < deadline:
        try:
            kind, worker, payload = out.get(timeout=1.0)
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
            continue
        if kind == "interval":
            k = counts[worker]
            counts[worker] += 1
            pending_rows.setdefault(k, {})[worker] = payload
            while next_k in pending_rows and len(pending_rows[next_k]) == cfg.procs:
                ready = pending_rows.pop(next_k)
                row = merge_second([ready[w] for w in sorted(ready)])
                if series is not None:
                    series.add(row)
                if on_row is not None:
                    on_row(row)
                next_k += 1
        elif kind == "metrics":
            metrics.update(worker, payload)  # type: ignore[union-attr]
        elif kind == "result":
            results[worker] = WorkerResult(**payload)
        else:
            errors.append(payload)
    if errors:
        raise ConnectError("; ".join(sorted(set(errors))))
    if len(results) < cfg.procs:
        raise RuntimeError(f"only {len(results)} of {cfg.procs} workers reported a result")
    # Seconds that not every worker reached (a worker's last sliver): merged from those that did.
    for k in sorted(pending_rows):
        ready = pending_rows[k]
        if series is not None:
            series.add(merge_second([ready[w] for w in sorted(ready)]))
    return merge_results(cfg, [results[i] for i in sorted(results)], next_k + len(pending_rows))
