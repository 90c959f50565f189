"""Delivery: prepared batches -> persistent sessions -> acknowledged, retried, or dead-lettered.

Batches (encoded by `prepare`, taken from a `sources` source) go out over `connections` persistent
sessions (loadtest.sessions.ws: answers matched by request id, reconnect with backoff), at most
`max_inflight` requests per connection. A batch holds its slot in the window (connections x
max_inflight) from the moment it is taken until the ledger says its settlement is durable, so in-flight
batches, batches waiting for a retry and batches answered but not yet checkpointed together never
exceed the window: that bounds both memory and what a crash can make us send twice. Optional pacing in
Documents per second (retries count).

A batch is acknowledged only by an answer without an error status. An error status, a dropped connection
or no answer within `timeout_s` fails the attempt; it is sent again (a fresh request id stamped into the
same frame: the same Documents and ids) after a backoff, up to `retries` times, then its Documents go to
the dead-letter file and the run goes on. Attempts are spent only by sending: while no connection is up
nothing is sent, and a run that stays offline past `offline_limit_s` stops (resumably). A malformed
record goes to the dead-letter file without being sent, or, with `strict` (or no dead-letter file),
stops the run at once.

Stopping (interrupt, strict, nowhere to put a failed batch, offline, input error, checkpoint failure):
nothing new is sent, answers in flight are awaited for a bounded grace, and what was not settled is left
for the next run.

Structure: connecting, the ticker (timeouts, the offline limit, progress) and every session's reconnects live in
one anyio task group for the length of the run; a task that fails ends the run at once with its error named.
Retries are no tasks: a failed batch waits in a heap ordered by its due time, which the dispatcher looks at.

Imports loadtest.sessions.ws/payloads, relay.common (loop, units) and the ingest modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from loadtest.ingest.ledger import Ledger
from loadtest.ingest.prepare import End, Failed, Malformed, Prepared, docs_of
from loadtest.ingest.readers import Record
from loadtest.ingest.sources import InlineSource, ProcessSource
from loadtest.payloads import IdMaker
from loadtest.sessions.base import Outcomes, Pending
from loadtest.sessions.ws import Session
from relay.common.loop import task_group, watched
from relay.common.units import format_duration
from relay.wire.messages import DataRequest, Status

TICK_S = 0.25
PROGRESS_EVERY_S = 1.0
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 10.0
MAX_REASONS = 20  # distinct failure reasons kept by name; the rest are counted as "other"
REASON_CHARS = 300
SENDS_PER_YIELD = 16  # let answers in between sends when the window refills in a burst
FINISH_GRACE_S = 1.0  # at the very end (everything settled, or the drain's grace spent): the sessions' last word


@dataclass
class DeliveryConfig:
    target: str
    subprotocol: str = "bytes"  # bytes | json | none
    endpoint: str = "/"
    target_executor: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    batch: int = 32
    connections: int = 2
    max_inflight: int = 16
    rate: float | None = None  # Documents per second
    timeout_s: float = 30.0
    retries: int = 3
    strict: bool = False
    grace_s: float = 10.0
    offline_limit_s: float = 60.0
    connect_timeout_s: float = 10.0

    @property
    def mode(self) -> str:
        return "bytes" if self.subprotocol == "bytes" else "json"

    @property
    def offer(self) -> str | None:
        return None if self.subprotocol == "none" else self.subprotocol

    @property
    def window(self) -> int:
        return self.connections * self.max_inflight


@dataclass(slots=True, eq=False)
class Batch:
    item: Prepared
    attempts: int = 0
    last_reason: str = ""


@dataclass
class Counters:
    """This run's figures (a resumed run counts only what it did itself)."""

    read: int = 0  # records read and not settled before this run
    malformed: int = 0
    docs_sent: int = 0  # Documents sent at least once
    docs_acknowledged: int = 0
    docs_dead_lettered: int = 0  # malformed ones included
    docs_failed: int = 0  # Documents in failed attempts
    docs_retried: int = 0  # Documents sent again
    batches_sent: int = 0  # first attempts
    attempts: int = 0  # every request sent
    batches_acknowledged: int = 0
    batches_failed: int = 0  # failed attempts
    batches_retried: int = 0
    batches_dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def count_reason(self, reason: str) -> None:
        reasons = self.reasons
        if reason not in reasons and len(reasons) >= MAX_REASONS:
            reason = "other"
        reasons[reason] = reasons.get(reason, 0) + 1


def status_reason(status: Status) -> str:
    """A failure reason from an error status: `ValueError: message (in FailExecutor)`."""
    exc = status.exception
    if exc is not None and exc.name:
        message = str(exc.args[0]) if exc.args else status.description
        where = f" (in {exc.executor})" if exc.executor else ""
        reason = f"{exc.name}: {message}{where}"
    else:
        reason = status.description or f"error status {status.code}"
    return reason[:REASON_CHARS]


_CORK = getattr(socket, "TCP_CORK", None)  # Linux


def _socket_of(session: Session, cache: dict[int, tuple[Any, Any]]) -> Any:
    """The socket under a session's connection (cached: a session gets a new one when it reconnects)."""
    client = session.client
    if client is None or client.transport is None:
        return None
    cached = cache.get(session.index)
    if cached is None or cached[0] is not client:
        cached = cache[session.index] = (client, client.transport.get_extra_info("socket"))
    return cached[1]


def _cork(session: Session, on: bool, cache: dict[int, tuple[Any, Any]]) -> None:
    sock = _socket_of(session, cache)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)


def _uncork(corked: list[Session], cache: dict[int, tuple[Any, Any]]) -> None:
    for session in corked:
        _cork(session, False, cache)
    corked.clear()


class Delivery:
    """One ingestion's traffic. `run()` returns when the input is settled or the run stopped."""

    def __init__(
        self,
        cfg: DeliveryConfig,
        source: InlineSource | ProcessSource,
        ledger: Ledger,
        input_name: str = "",
        on_progress: Callable[[Delivery], None] | None = None,
        on_malformed: Callable[[Record], None] | None = None,
        start_gate: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.cfg = cfg
        # Awaited once the sessions are open, returns when sending starts (a time.perf_counter() value): the shards
        # of an ingestion split over several machines start together.
        self.start_gate = start_gate
        self.source = source
        self.input_name = input_name
        self.ledger = ledger
        self.on_progress = on_progress
        self.on_malformed = on_malformed
        self.counters = Counters()
        self.sessions: list[Session] = []
        self.eof = False
        self.input_records: int | None = None  # the input's length, once read to the end
        self.records_seen = 0  # how far reading got (settled records included)
        self.bytes_read = 0
        self.outstanding = 0  # batches holding a window slot
        self.stop_kind: str | None = None
        self.stop_message = ""
        self._inflight: dict[str, Batch] = {}
        self._retry_heap: list[tuple[float, int, Batch]] = []
        self._retry_seq = 0
        self._ids = IdMaker(uuid.uuid4().hex, 0)
        self._wake = asyncio.Event()
        self._t0 = time.perf_counter()
        self._next_send_s = 0.0
        self._offline_since: float | None = None
        self._interrupts = 0
        self._drain_cut = asyncio.Event()
        self.elapsed_s = 0.0

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def waiting_retry(self) -> int:
        return len(self._retry_heap)

    # ---- stopping ------------------------------------------------------------------------------

    def stop(self, kind: str, message: str) -> None:
        """Stop sending (the first reason is kept); answers in flight are still awaited."""
        if self.stop_kind is None:
            self.stop_kind = kind
            self.stop_message = message
        self._wake.set()

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: the first stops sending and drains; the second cuts the drain short."""
        self._interrupts += 1
        if self._interrupts == 1:
            self.stop("interrupted", "interrupted")
        else:
            self._drain_cut.set()

    # ---- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (every session, else ConnectError), then in one task group: the ticker, each session's
        `maintain` (its reconnects), and the dispatcher until the input is settled or the run stops, then the
        bounded drain. A background task that fails ends the run at once, its error named (TaskFailed)."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.ledger.on_error = lambda message: self.stop("checkpoint", message)
        outcomes = Outcomes(self.clock, self._on_answer, self._on_failure)
        self.sessions = [
            Session(cfg.target, cfg.mode, cfg.offer, cfg.max_inflight, outcomes, index=i,
                    connect_timeout_s=cfg.connect_timeout_s)
            for i in range(cfg.connections)
        ]
        try:
            async with task_group() as tg:
                for s in self.sessions:
                    tg.start_soon(s.connect)
            # The rate is measured from the first send, not the handshake (nor the wait at a start gate).
            self._t0 = await self.start_gate() if self.start_gate is not None else time.perf_counter()
            self.source.start(asyncio.get_running_loop(), self._wake.set)
            async with task_group() as tg:
                tg.start_soon(watched, "the ticker", self._tick)
                for s in self.sessions:
                    tg.start_soon(watched, str(s), s.maintain)
                await self._dispatch()
                await self._drain()
                self.elapsed_s = self.clock()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.source.close()
                async with anyio.create_task_group() as tg:
                    for s in self.sessions:
                        tg.start_soon(s.finish, FINISH_GRACE_S)
            self.elapsed_s = self.elapsed_s or self.clock()

    async def _dispatch(self) -> None:
        window = self.cfg.window
        sends = 0
        # While a burst of batches goes out, the sockets are corked: the frames leave in full segments and
        # the Flow is woken once per burst, not once per frame (less CPU on both sides). Not when paced.
        cork = _CORK is not None and not self.cfg.rate
        corked: list[Session] = []
        socks: dict[int, tuple[Any, Any]] = {}
        try:
            while self.stop_kind is None:
                if self.eof and self.outstanding == 0:
                    return
                session = self._pick_session()
                batch: Batch | None = None
                if session is not None:
                    batch = self._due_retry()
                    if batch is None and not self.eof and self.outstanding < window:
                        batch = self._next_batch()
                if batch is not None and self.stop_kind is None:
                    if self.cfg.rate:
                        await self._pace(batch.item.size)
                        if self.stop_kind is not None:
                            return
                    if not session.connected:  # dropped while we were pacing: try another
                        session = self._pick_session()
                    if session is None:
                        self._schedule_retry(batch, 0.0)
                        continue
                    if cork and session not in corked:
                        _cork(session, True, socks)
                        corked.append(session)
                    await self._send(session, batch)
                    sends += 1
                    if sends >= SENDS_PER_YIELD:
                        sends = 0
                        _uncork(corked, socks)
                        await anyio.sleep(0)
                    continue
                sends = 0
                _uncork(corked, socks)
                self._wake.clear()
                timeout = TICK_S
                if self._retry_heap:
                    timeout = min(timeout, max(0.0, self._retry_heap[0][0] - self.clock()))
                with anyio.move_on_after(timeout):
                    await self._wake.wait()
        finally:
            _uncork(corked, socks)

    async def _drain(self) -> None:
        """After a stop: wait (bounded) for the answers in flight; failures are no longer retried."""
        if not self._inflight:
            return
        deadline = self.clock() + self.cfg.grace_s
        while self._inflight and self.clock() < deadline and not self._drain_cut.is_set():
            self._wake.clear()
            with anyio.move_on_after(min(TICK_S, max(0.0, deadline - self.clock()))):
                await self._wake.wait()

    def _pick_session(self) -> Session | None:
        best: Session | None = None
        for s in self.sessions:
            if s.has_room and (best is None or len(s.pending) < len(best.pending)):
                best = s
        return best

    def _due_retry(self) -> Batch | None:
        # Judged on the clock, not on when the loop woke us: a backoff is never cut short.
        heap = self._retry_heap
        if heap and heap[0][0] <= self.clock():
            return heapq.heappop(heap)[2]
        return None

    def _next_batch(self) -> Batch | None:
        """The next prepared batch from the source; malformed records are dealt with on the way.
        None when nothing is ready yet (the source wakes us), at the end, or when stopping."""
        counters = self.counters
        ledger = self.ledger
        while True:
            item = self.source.take()
            if item is None:
                return None
            self.records_seen, self.bytes_read = item.read, item.bytes_read
            if isinstance(item, Prepared):
                counters.read += item.size
                self.outstanding += 1
                return Batch(item)
            if isinstance(item, End):
                self.eof = True
                self.input_records = item.read
                return None
            if isinstance(item, Failed):
                self.stop("input", item.message)
                return None
            assert isinstance(item, Malformed)
            rec = item.record
            counters.read += 1
            counters.malformed += 1
            if self.cfg.strict or not ledger.can_dead_letter:
                why = "--strict" if self.cfg.strict else "no --dead-letter file to set it aside"
                self.stop("malformed", f"{rec.where()}: {rec.error} (stopped: {why})")
                return None
            if self.on_malformed is not None:
                self.on_malformed(rec)
            ledger.dead_letter([rec], rec.error or "malformed", 0, None)
            counters.docs_dead_lettered += 1

    async def _pace(self, docs: int) -> None:
        rate = self.cfg.rate
        if not rate:
            return
        now = self.clock()
        if self._next_send_s > now:
            # Until the clock says so: the loop's timer can fire up to a millisecond early, and no batch may leave
            # before its turn (--rate is a limit).
            while (wait_s := self._next_send_s - self.clock()) > 0:
                await anyio.sleep(wait_s)
            self._next_send_s += docs / rate
        else:
            self._next_send_s = now + docs / rate

    async def _send(self, session: Session, batch: Batch) -> None:
        rid = self._ids.next()
        n = batch.item.size
        batch.attempts += 1
        counters = self.counters
        counters.attempts += 1
        if batch.attempts == 1:
            counters.batches_sent += 1
            counters.docs_sent += n
        else:
            counters.batches_retried += 1
            counters.docs_retried += n
        self._inflight[rid] = batch
        await session.send(rid, batch.item.frame(rid), self.clock(), n, False)

    # ---- outcomes ------------------------------------------------------------------------------

    def _on_answer(self, entry: Pending, resp: DataRequest, docs: int, now: float) -> None:
        batch = self._inflight.pop(entry.rid, None)
        if batch is None:
            return
        if resp.status is not None and resp.status.is_error:
            self._failed(batch, status_reason(resp.status))
            return
        counters = self.counters
        counters.batches_acknowledged += 1
        counters.docs_acknowledged += batch.item.size
        self.ledger.acknowledge(batch.item.positions, self._release)
        self._wake.set()

    def _on_failure(self, entry: Pending, reason: str, now: float) -> None:
        batch = self._inflight.pop(entry.rid, None)
        if batch is not None:
            self._failed(batch, f"transport: {reason}")

    def _failed(self, batch: Batch, reason: str) -> None:
        counters = self.counters
        counters.batches_failed += 1
        counters.docs_failed += batch.item.size
        counters.count_reason(reason)
        batch.last_reason = reason
        self._wake.set()
        if self.stop_kind is not None:
            return  # left unsettled: the next run sends it again
        if batch.attempts <= self.cfg.retries:
            backoff = min(BACKOFF_BASE_S * 2 ** (batch.attempts - 1), BACKOFF_CAP_S)
            self._schedule_retry(batch, backoff * random.uniform(0.8, 1.2))
            return
        if not self.ledger.can_dead_letter:
            self.stop("undeliverable", f"a batch failed {batch.attempts} times ({reason}), and there is no "
                      "--dead-letter file to set it aside")
            return
        counters.batches_dead_lettered += 1
        counters.docs_dead_lettered += batch.item.size
        self.ledger.dead_letter(self._records_of(batch.item), reason, batch.attempts, self._release)

    def _records_of(self, item: Prepared) -> list[Record]:
        """A batch's records again, for the dead-letter file: the Documents decoded from its frame."""
        docs = docs_of(item, self.cfg.mode)
        sources = item.sources or [self.input_name] * item.size
        return [Record(p, src, line, doc)
                for p, src, line, doc in zip(item.positions, sources, item.lines, docs, strict=True)]

    def _schedule_retry(self, batch: Batch, delay_s: float) -> None:
        self._retry_seq += 1
        heapq.heappush(self._retry_heap, (self.clock() + delay_s, self._retry_seq, batch))
        self._wake.set()

    def _release(self) -> None:
        """A settled batch is durable: its slot in the window is free."""
        self.outstanding -= 1
        self._wake.set()

    # ---- once in a while -----------------------------------------------------------------------

    async def _tick(self) -> None:
        cfg = self.cfg
        next_progress = PROGRESS_EVERY_S
        while True:
            await anyio.sleep(TICK_S)
            now = self.clock()
            for s in self.sessions:
                for p in s.expire(now - cfg.timeout_s):
                    batch = self._inflight.pop(p.rid, None)
                    if batch is not None:
                        self._failed(batch, f"timeout: no answer in {format_duration(cfg.timeout_s)}")
            if any(s.connected for s in self.sessions):
                self._offline_since = None
            elif self._offline_since is None:
                self._offline_since = now
            elif now - self._offline_since > cfg.offline_limit_s and self.stop_kind is None:
                self.stop("offline", f"no connection to {cfg.target} for {format_duration(cfg.offline_limit_s)}")
            if self.on_progress is not None and now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                self.on_progress(self)
