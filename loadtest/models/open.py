"""The open model: every request at its due time from a schedule, never before (wrk2's constant throughput).

Latency is measured from the due time, so a stalled server cannot hide its stall by slowing the sender down; a
request whose due time finds every connection at its in-flight limit (or down) is dropped and counted, never sent
late in silence. With several workers each takes every n-th due time of the one schedule
(loadtest.models.schedule.Schedule.shard): the total is exact and the workers' sends interleave.

One pass (`_pump`) sends everything due by now, at most `BATCH_MAX` at once when behind (then the readers get a
turn of the event loop first). A pass runs after every read of a connection (`after_read`: what fell due leaves
without a wake-up of its own, in the same write as the read's own sends), and when loadtest.models.waker wakes
the loop, within its slack (0.4 ms) after the next due time if no read came first. A pass's requests go on one
connection while it has room (`Traffic.pick`), so they leave in one write; the passes take the connections in
turn.

Imports loadtest.models.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio

from loadtest.models.base import LoadModel, Traffic
from loadtest.models.schedule import Schedule
from loadtest.models.waker import LoopWaker

# At most this many sends per pass when behind schedule; then the readers get a turn of the event loop, so that
# answers keep being drained while the dispatcher catches up.
BATCH_MAX = 64


class OpenModel(LoadModel):
    """Worker `worker`'s share (of `n_workers`) of `schedule`."""

    def __init__(self, schedule: Schedule, worker: int = 0, n_workers: int = 1) -> None:
        self.schedule = schedule
        self.worker = worker
        self.n_workers = n_workers

    def target_rate_at(self, t_s: float) -> float | None:
        return self.schedule.target_rate_at(t_s) / self.n_workers

    async def run(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._due_iter: Iterator[float] = self.schedule.shard(self.worker, self.n_workers)
        self._next_due: float | None = next(self._due_iter, None)
        self._seq = 0
        if self._next_due is None:
            return
        self._done = anyio.Event()
        self._error: BaseException | None = None
        self._waker = LoopWaker(self._pump)
        self._zero = traffic.zero  # the waker's targets are perf_counter() times
        sessions = traffic.sessions
        for s in sessions:
            s.after_read = self._pump
        try:
            self._pump()
            await self._done.wait()
        finally:
            for s in sessions:
                s.after_read = None
            self._waker.close()
        if self._error is not None:
            raise self._error

    def _pump(self) -> None:
        due = self._next_due
        if due is None:
            return
        traffic = self._traffic
        clock = traffic.clock
        now = clock()
        if due > now:
            self._waker.wake_at(self._zero + due)
            return
        try:
            pick, post, drop = traffic.pick, traffic.post, traffic.drop
            due_iter = self._due_iter
            seq = self._seq
            session = None
            for _ in range(BATCH_MAX):
                session = pick(seq, session)
                if session is None:
                    drop(due)
                else:
                    post(session, due, seq, now)
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
            self._error = exc
            self._done.set()
            return
        if due is None:
            self._done.set()
        elif due > now:
            self._waker.wake_at(self._zero + due)
        else:
            asyncio.get_running_loop().call_soon(self._pump)  # behind schedule: let the readers in first
