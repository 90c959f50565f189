"""The load run, in one screen: model -> session -> wire -> socket, and socket -> wire -> measure -> outputs.

    model     loadtest.models: open (due times from a schedule) or closed (C users)   decides when
    session   loadtest.sessions: ws, grpc, http (each a relay.common.link.Link)        sends, matches answers by id
    wire      frames pre-encoded by loadtest.payloads; answers read by relay.wire
    measure   loadtest.measure.meter -> Recorder                                       every outcome; a row a second
    outputs   the RowSink, MetricsSink, RequestSink handed in (loadtest.outputs)

A `Worker` is one process's share of a run. `run()` opens its sessions (every one must connect, else
ConnectError), passes its start gate when it has one (a cluster's barrier: the gate says when the clock starts),
starts the clock, and runs in one task group: the ticker (timeouts, a row of the time series and
the request log each second, metrics to the parent and a look at the parent's liveness four times a second), each
session's `maintain` (reconnects; gRPC's reader; HTTP's exchanges), and the load model. When the model has sent
all it will, every session finishes (end-of-stream, a bounded grace for the last answers, a bounded close) and the
group is cancelled. A background task that fails ends the run at once, its error named (TaskFailed). `stop()`
ends a run from outside (a cluster's run was aborted): the group is cancelled, the sessions close, and `run`
returns what was done, the requests then in flight counted as unanswered. `result()` is the worker's figures so far,
at any moment (a cluster worker hands them over once a second, in case it is lost).

Replay (`cfg.replay`, loadtest.models.replay): the schedule, the sessions (one per recorded connection, each in its
own subprotocol) and the frames come from a recording; request s goes on the session its recorded connection maps
to, and each answer is compared with the recorded one (loadtest.measure.replay_diff).

`run_load` runs one worker in this process, or `cfg.procs` forked ones (loadtest.procs), and returns one
RunResult (loadtest.result) whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from loadtest.config import LoadConfig, codec_mode
from loadtest.measure.meter import INTERVAL_S, IntervalCallback, Meter, MetricsSink, RowSink
from loadtest.measure.recorder import Recorder
from loadtest.measure.replay_diff import ReplayComparison
from loadtest.models.base import LoadModel, share
from loadtest.models.closed import ClosedModel
from loadtest.models.open import OpenModel
from loadtest.models.replay import ReplayPlan, load_recording
from loadtest.outputs.requests import RequestLog
from loadtest.payloads import IdMaker, build_templates
from loadtest.procs import MetricsExporter, run_in_procs
from loadtest.result import RunResult, WorkerResult, merge_results
from loadtest.sessions.base import ConnectError, Outcomes, Pending
from loadtest.sessions.kinds import LoadSession, open_session
from relay.common import gc_freeze
from relay.common import loop as event_loop


def model_for(cfg: LoadConfig, worker: int = 0, n_workers: int = 1) -> LoadModel:
    """The load model `cfg` asks for, with worker `worker`'s share of it (of `n_workers`)."""
    schedule = cfg.schedule()
    if schedule is None:
        return ClosedModel(cfg.concurrency or 1, cfg.requests, cfg.duration_s, worker, n_workers)
    return OpenModel(schedule, worker, n_workers)


class Worker:
    """One process's share of a run; what its load model drives (loadtest.models.base.Traffic)."""

    def __init__(self, cfg: LoadConfig, index: int = 0, n_workers: int = 1, run_id: str = "run",
                 sink: MetricsSink | None = None, series: RowSink | None = None,
                 on_interval: IntervalCallback | None = None, publish: Callable[[], None] | None = None,
                 parent_pid: int | None = None, start_gate: Callable[[], Awaitable[float]] | None = None,
                 alone: bool | None = None) -> None:
        # `series` takes each second's row (a worker alone in its run); forked workers hand their intervals to
        # `on_interval` and `publish` their sink's state, and end when `parent_pid` is no longer their parent.
        # `start_gate`, awaited once the sessions are open, returns when the run's clock starts (a
        # time.perf_counter() value): a cluster's workers start together at the coordinator's T0. `alone`: nobody
        # merges this worker's seconds with others' (default: it is the only worker), so its final sliver of a second
        # may join the second before it.
        self.start_gate = start_gate
        self.cfg, self.index, self.n_workers = cfg, index, n_workers
        self.publish, self.parent_pid = publish, parent_pid
        self.recorder = Recorder(warmup_s=cfg.warmup_s)
        self.meter = Meter(self.recorder, cfg.timeout_s, sink, series=series, on_interval=on_interval,
                           alone=n_workers == 1 if alone is None else alone)
        self.new_rid = IdMaker(run_id, index).next  # what the model drives: bound once, called per request
        self._sent = self.meter.sent
        self.warmup_s = cfg.warmup_s
        # A replay: the frames, sessions and schedule of this worker's share of a recording; the answers' diff.
        self.replay: ReplayPlan | None = None
        self.comparison: ReplayComparison | None = None
        if cfg.replay is not None:
            plan = self.replay = _replay_plan(cfg, index, n_workers)
            self.templates = plan.templates
            self.comparison = self.meter.comparison = ReplayComparison(plan.recorded, plan.ids_comparable,
                                                                       plan.latency_basis)
            self.model: LoadModel = OpenModel(plan.schedule, index, n_workers)
            self.pick = self._pick_replayed  # type: ignore[method-assign]
            self.post = self._post_replayed  # type: ignore[method-assign]
        else:
            self.templates = build_templates(cfg.mode, cfg.docs, cfg.endpoint, cfg.parameters,
                                             cfg.target_executor, seed=cfg.seed + index)
            self.model = model_for(cfg, index, n_workers)
        self.sessions: list[LoadSession] = []
        self._turn = 0  # the session `pick` tries first when it starts a pass's requests afresh
        self.requests: RequestLog | None = None
        self.zero = time.perf_counter()
        self.started_wall = time.time()
        self.stopped = False  # `stop()` was called
        self._scope: anyio.CancelScope | None = None  # the running task group's

    def clock(self) -> float:
        return time.perf_counter() - self.zero

    async def run(self) -> WorkerResult:
        cfg, meter, model = self.cfg, self.meter, self.model
        self.started_wall = time.time()
        meter.settled = model.settled
        outcomes = Outcomes(self.clock, meter.answered, meter.failed)
        self.sessions = [open_session(self._session_config(i), i, outcomes) for i in range(self._connections())]
        dispatch_end: float | None = None
        left: list[Pending] = []
        try:
            await self._connect()
            # The sessions live as long as the run: out of the collector's sight (relay.common.gc_freeze).
            gc_freeze.freeze()
            zero = await self.start_gate() if self.start_gate is not None else time.perf_counter()
            if cfg.log_requests:
                path = cfg.log_requests if self.n_workers == 1 else Path(f"{cfg.log_requests}.w{self.index}")
                self.requests = meter.requests = RequestLog(path)
            self.zero = zero  # the clock starts when every session is open (and the gate, if any, opened)
            self.started_wall = time.time() - (time.perf_counter() - zero)
            meter.start(cfg.warmup_s)
            async with event_loop.task_group() as tg:
                self._scope = tg.cancel_scope
                if self.stopped:
                    tg.cancel_scope.cancel()
                tg.start_soon(event_loop.watched, "the ticker", self._tick)
                for s in self.sessions:
                    tg.start_soon(event_loop.watched, str(s), s.maintain)
                await model.run(self)
                dispatch_end = self.clock()
                await self._finish(left)
                tg.cancel_scope.cancel()
        finally:
            self._scope = None
            for s in self.sessions:
                await s.close()
            gc_freeze.thaw()
        if dispatch_end is None:  # stopped from outside: what was in flight then stays unanswered
            dispatch_end = self.clock()
        for s in self.sessions:
            left.extend(s.pending.values())
            s.pending.clear()
        meter.unanswered(left)
        elapsed = self.clock()
        meter.close_series(elapsed, self._inflight(), model.target_rate_at(elapsed))
        if self.requests is not None:
            self.requests.close()
        return self.result(elapsed, dispatch_end)

    def result(self, elapsed_s: float | None = None, dispatch_end_s: float | None = None) -> WorkerResult:
        """This worker's figures: at the end of `run`, or so far (None: now; requests in flight have not ended)."""
        now = self.clock()
        meter = self.meter
        return WorkerResult(
            snapshot=self.recorder.snapshot(), intervals=meter.intervals,
            negotiated=self.sessions[0].negotiated if self.sessions else None, docs_sent=meter.docs_sent,
            docs_received=meter.docs_received, started_wall=self.started_wall,
            elapsed_s=now if elapsed_s is None else elapsed_s,
            reconnects=sum(s.reconnects for s in self.sessions),
            late_answers=sum(s.late_answers for s in self.sessions),
            dropped_by_reason=dict(meter.dropped_by_reason),
            dispatch_end_s=now if dispatch_end_s is None else dispatch_end_s,
            replay_diff=self.comparison.diff.to_plain() if self.comparison is not None else None,
        )

    def stop(self) -> None:
        """End the run now, from outside (see the module's docstring); before the run's task group starts, it
        starts cancelled."""
        self.stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def _connections(self) -> int:
        if self.replay is not None:
            return self.replay.connections
        return share(self.cfg.connections, self.index, self.n_workers) or 1

    def _session_config(self, i: int) -> LoadConfig:
        """What session i is opened with: a replay's sessions each speak their recorded connection's subprotocol."""
        if self.replay is None:
            return self.cfg
        return dataclasses.replace(self.cfg, subprotocol=self.replay.subprotocols[i])

    async def _connect(self) -> None:
        """Open every session at once; the first that cannot connect ends the run (ConnectError)."""
        errors: list[ConnectError] = []

        async def connect(session: LoadSession) -> None:
            try:
                await session.connect()
            except ConnectError as exc:
                errors.append(exc)

        async with event_loop.task_group() as tg:
            for s in self.sessions:
                tg.start_soon(connect, s)
        if errors:
            raise errors[0]

    async def _finish(self, left: list[Pending]) -> None:
        """End-of-stream on every session at once, a bounded grace for their last answers; what is left goes to
        `left` (as each session finishes: a stop in the middle loses none)."""

        async def finish(session: LoadSession) -> None:
            left.extend(await session.finish(self.cfg.grace_s))

        async with event_loop.task_group() as tg:
            for s in self.sessions:
                tg.start_soon(finish, s)

    async def _tick(self) -> None:
        """Every second: time out old requests, close a row of the time series, write the request log. Four times
        a second: publish metrics (forked workers), and end at once if the parent process is gone."""
        cfg, meter = self.cfg, self.meter
        next_at = INTERVAL_S
        quarter = INTERVAL_S / 4
        next_publish = quarter
        while True:
            # The loop's timers can fire up to a millisecond early: every decision below is taken on the run's own
            # clock (a second closes only once the clock has passed it, a request times out only once it is really
            # older than --timeout), so an early wake-up only means one more turn of this loop.
            await anyio.sleep(max(0.0, min(next_at, next_publish) - self.clock()))
            now = self.clock()
            if now >= next_publish:
                next_publish += quarter
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    os._exit(3)  # the parent was killed: nobody will read this worker's results
                if self.publish is not None:
                    self.publish()
            if now < next_at:
                continue
            for s in self.sessions:
                for p in s.expire(now - cfg.timeout_s):
                    meter.timed_out(p, now)
            meter.close_interval(now, self._inflight(), self.model.target_rate_at(now))
            if self.requests is not None:
                self.requests.flush()
            next_at += INTERVAL_S

    def _inflight(self) -> int:
        return sum(len(s.pending) for s in self.sessions)

    # ---- what the load model drives ----------------------------------------------------------------

    def pick(self, seq: int, previous: LoadSession | None = None) -> LoadSession | None:
        # Requests due together stay together: one write carries a pass's requests, where one per connection
        # cost a write (a system call, a wake-up of the server) per request. The passes take the sessions in
        # turn, so each carries an even share of the rate.
        if previous is not None and previous.has_room:
            return previous
        sessions = self.sessions
        n = len(sessions)
        turn = self._turn
        for k in range(n):
            i = (turn + k) % n
            s = sessions[i]
            if s.has_room:
                self._turn = i + 1
                return s
        return None

    def post(self, session: LoadSession, due_s: float, seq: int, now_s: float, rid: str | None = None) -> None:
        tpl = self.templates[seq % len(self.templates)]
        if rid is None:
            rid = self.new_rid()
        self._sent(due_s, now_s, tpl.docs)
        session.post(rid, tpl.frame(rid), due_s, tpl.docs, due_s < self.warmup_s, now_s)

    def _pick_replayed(self, seq: int, previous: LoadSession | None = None) -> LoadSession | None:
        """A replay's request `seq` goes on its recorded connection's session, or is dropped."""
        plan = self.replay
        assert plan is not None
        session = self.sessions[plan.session_of[seq % len(plan.session_of)]]
        return session if session.has_room else None

    def _post_replayed(self, session: LoadSession, due_s: float, seq: int, now_s: float, rid: str | None = None
                       ) -> None:
        if rid is None:
            rid = self.new_rid()
        assert self.comparison is not None
        self.comparison.sent(rid, seq % len(self.templates))
        Worker.post(self, session, due_s, seq, now_s, rid)

    def drop(self, due_s: float) -> None:
        reason = "in-flight limit" if any(s.connected for s in self.sessions) else "no connection"
        self.meter.dropped(due_s, self.clock(), reason)


def _replay_plan(cfg: LoadConfig, worker: int, n_workers: int) -> ReplayPlan:
    """Worker `worker`'s share of the replay `cfg.replay` asks for (its connections, their requests' frames)."""
    spec = cfg.replay
    assert spec is not None
    transport = cfg.transport
    return ReplayPlan.build(load_recording(spec.source), spec, lambda sub: codec_mode(transport, sub), worker,
                            n_workers, duration_s=cfg.duration_s, max_requests=cfg.requests, arrival=cfg.arrival,
                            seed=cfg.seed, docarray=cfg.docs.docarray)


def run_worker(cfg: LoadConfig, index: int = 0, n_workers: int = 1, run_id: str = "run", **hooks: Any) -> WorkerResult:
    """One worker's share of a run, in this process and its own event loop (`hooks`: Worker's keywords)."""
    return event_loop.run(Worker(cfg, index, n_workers, run_id, **hooks).run)


def run_load(cfg: LoadConfig, on_row: Callable[[dict[str, Any]], None] | None = None,
             metrics: MetricsExporter | None = None, series: RowSink | None = None) -> RunResult:
    """Run the whole load test, in this process or in `cfg.procs` forked workers. Each second's row (merged across
    workers) goes to `series`, then to `on_row` (the live line), as the second closes; nothing keeps them. With
    `metrics`, every worker feeds it (the caller stops it, after any linger). Raises ConnectError when the target
    cannot be reached, WorkerCrashed (loadtest.procs) or the error itself when a worker fails."""
    if cfg.procs > 1:
        return run_in_procs(cfg, run_worker, on_row, metrics, series)
    sink = None
    if metrics is not None:
        sink = metrics.sink(0)
        metrics.start()

    def on_interval(_interval: Any, row: dict[str, Any]) -> None:
        if on_row is not None:
            on_row(row)

    result = run_worker(cfg, 0, 1, uuid.uuid4().hex, sink=sink, series=series, on_interval=on_interval)
    return merge_results(cfg, [result])
