"""A worker's side of the coordinator protocol: join, wait at the barrier, stream rows, hand the result over.

    client = WorkerClient(ClusterOptions(...), job="load", options={...})
    client.join()                         # blocking: before any event loop (ingest forks its reader after it)
    ... inside the worker's event loop:
    async with client.attached(on_abort=stop):
        t0 = await client.barrier()       # ready; then sleeps until T0; returns T0 on time.perf_counter()
        client.send_row(k, payload)       # from synchronous callbacks, once a second
        await client.hand_over(result)    # then exit 0

`join` connects (retrying, while worker 0 is not up yet, until `barrier_timeout_s`) and says hello; the
coordinator's welcome gives the worker index (when it had none), the seed and the run id. The socket
outlives event loops: each `attached` wraps a duplicate of it for one loop, with three tasks in a task group
(reading, a heartbeat per second, writing the rows), and what was read but not handled carries over.
`on_abort(reason)` is called when the run must stop for this worker: the coordinator said abort, or it went
silent for `worker_timeout_s` or away. Everything a worker cannot go on from is a `ClusterError`, whose
message is the reason to print before exiting 1.

Imports anyio, the standard library and loadtest.cluster (messages, link).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc

from loadtest.cluster.link import GONE, Connection
from loadtest.cluster.messages import PROTOCOL, FrameReader, ProtocolError, encode, message

JOIN_RETRY_S = (0.2, 2.0)  # first and longest wait between attempts to reach the coordinator
HANDSHAKE_TIMEOUT_S = 10.0


class ClusterError(RuntimeError):
    """This worker cannot take (or go on with) its part of the run; the message says why."""


@dataclass(frozen=True)
class ClusterOptions:
    """`--workers N --coordinator HOST:PORT [--worker-index I]` and their timeouts."""

    workers: int
    host: str
    port: int
    index: int | None = None
    barrier_timeout_s: float = 120.0
    worker_timeout_s: float = 10.0
    on_worker_loss: str = "abort"
    heartbeat_s: float = 1.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class WorkerClient:
    """One worker's connection to the coordinator; see the module's docstring."""

    def __init__(self, opts: ClusterOptions, job: str, options: dict[str, Any], connect_to: str | None = None) -> None:
        self.opts = opts
        self.job = job
        self.options = options
        # Worker 0 reaches its own coordinator on loopback, whatever name the others use.
        self.connect_to = connect_to or opts.host
        self.index: int | None = opts.index
        self.seed = 0
        self.run_id = ""
        self.t0: float | None = None  # wall clock, from `start`
        self.abort_reason: str | None = None
        self._sock: socket.socket | None = None
        self._reader = FrameReader()
        self._pending: deque[dict[str, Any]] = deque()
        self._conn: Connection | None = None
        self.done = False  # the coordinator confirmed this worker's result
        self._gone = False  # the coordinator is gone (closed, silent, or broke the protocol)
        # Made by each `attached` for its loop (an event belongs to one loop), set at once if already due.
        self._started: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._heard = 0.0
        self._on_abort: Callable[[str], None] | None = None
        self._outbox: Any = None

    # ---- before any event loop -------------------------------------------------------------------

    def join(self) -> None:
        """Connect and say hello; raises ClusterError if refused or if no coordinator answers in time."""
        opts = self.opts
        deadline = time.monotonic() + opts.barrier_timeout_s
        wait_s = JOIN_RETRY_S[0]
        while True:
            try:
                sock = socket.create_connection((self.connect_to, opts.port),
                                                timeout=max(0.1, min(HANDSHAKE_TIMEOUT_S, deadline - time.monotonic())))
                break
            except OSError as exc:  # refused (not listening yet), no such name yet (DNS), unreachable
                if time.monotonic() + wait_s > deadline:
                    raise ClusterError(f"no coordinator at {opts.address} after {opts.barrier_timeout_s:g} s "
                                       f"(--barrier-timeout): {exc}") from None
                time.sleep(wait_s)
                wait_s = min(wait_s * 2, JOIN_RETRY_S[1])
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            sock.sendall(encode(message("hello", protocol=PROTOCOL, job=self.job, workers=opts.workers,
                                        index=self.index, options=self.options, host=socket.gethostname(),
                                        pid=os.getpid())))
            answer = self._receive_blocking(sock)
        except (OSError, ProtocolError) as exc:
            sock.close()
            raise ClusterError(f"the coordinator at {opts.address} did not welcome this worker: {exc}") from None
        if answer["kind"] == "refused":
            sock.close()
            raise ClusterError(f"the coordinator refused this worker: {answer['reason']}")
        if answer["kind"] != "welcome":
            sock.close()
            raise ClusterError(f"the coordinator answered hello with {answer['kind']}")
        self.index = int(answer["index"])
        self.seed = int(answer["seed"])
        self.run_id = str(answer["run_id"])
        self._sock = sock

    def _receive_blocking(self, sock: socket.socket) -> dict[str, Any]:
        while not self._pending:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the coordinator closed the connection")
            self._pending.extend(self._reader.feed(data))
        return self._pending.popleft()

    def fail(self, reason: str) -> None:
        """Outside any event loop: tell the coordinator this worker cannot run (it aborts the run)."""
        if self._sock is not None:
            with suppress(OSError):
                self._sock.settimeout(HANDSHAKE_TIMEOUT_S)
                self._sock.sendall(encode(message("failed", reason=reason)))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ---- inside an event loop --------------------------------------------------------------------

    @asynccontextmanager
    async def attached(self, on_abort: Callable[[str], None] | None = None) -> AsyncIterator[WorkerClient]:
        """This loop's hold on the connection: reading, heartbeats and rows run until the block ends."""
        if self._sock is None:
            raise ClusterError("join() first")
        stream = await anyio.abc.SocketStream.from_socket(self._sock.dup())
        self._conn = Connection(stream, self._reader, self._pending)
        self._started, self._done = anyio.Event(), anyio.Event()
        if self.t0 is not None or self.abort_reason is not None:
            self._started.set()
        if self.done or self._gone:
            self._done.set()
        self._on_abort = on_abort
        self._heard = anyio.current_time()
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._outbox = send
        # The block's own exception leaves as it is, not wrapped in the task group's ExceptionGroup.
        raised: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, self._conn)
                tg.start_soon(self._heartbeats, self._conn)
                tg.start_soon(self._write, self._conn, receive)
                try:
                    yield self
                except BaseException as exc:
                    raised = exc
                finally:
                    tg.cancel_scope.cancel()
            if raised is not None:
                raise raised
        finally:
            self._outbox = None
            self._on_abort = None
            send.close()
            await self._conn.aclose()
            self._conn = None

    def _stop(self, reason: str, gone: bool = False) -> None:
        """The run stops for this worker. `gone`: the coordinator itself is gone (nobody will say `done`)."""
        self._gone = self._gone or gone
        if self._started is not None:  # whoever waits at the barrier (or for a `done` that cannot come) wakes
            self._started.set()
            if gone:
                self._done.set()  # type: ignore[union-attr]
        if self.abort_reason is None:
            self.abort_reason = reason
            if self._on_abort is not None:
                self._on_abort(reason)

    async def _read(self, conn: Connection) -> None:
        try:
            while True:
                msg = await conn.receive()
                self._heard = anyio.current_time()
                kind = msg["kind"]
                if kind == "ping":  # answered at once, not queued behind rows: the clock probe is timed
                    await conn.send(message("pong", seq=msg["seq"], sent=msg["sent"], worker_time=time.time()))
                elif kind == "start":
                    self.t0 = float(msg["t0"])
                    self._started.set()  # type: ignore[union-attr]
                elif kind == "done":
                    self.done = True
                    self._done.set()  # type: ignore[union-attr]
                elif kind == "abort":
                    self._stop(f"the run was aborted: {msg['reason']}")
                elif kind == "refused":
                    self._stop(f"the coordinator refused this worker: {msg['reason']}")
        except ProtocolError as exc:
            self._stop(f"the coordinator broke the protocol: {exc}", gone=True)
        except GONE:
            if not self.done:
                self._stop(f"lost the coordinator at {self.opts.address}: the connection closed", gone=True)

    async def _heartbeats(self, conn: Connection) -> None:
        opts = self.opts
        while True:
            await anyio.sleep(opts.heartbeat_s)
            if anyio.current_time() - self._heard > opts.worker_timeout_s and not self.done:
                self._stop(f"lost the coordinator at {opts.address}: nothing heard for {opts.worker_timeout_s:g} s",
                           gone=True)
                return
            try:
                await conn.send(message("heartbeat"))
            except GONE:
                return  # the reader says why

    async def _write(self, conn: Connection, receive: Any) -> None:
        async with receive:
            async for msg in receive:
                try:
                    await conn.send(msg)
                except GONE:
                    return

    def _check(self) -> None:
        if self.abort_reason is not None:
            raise ClusterError(self.abort_reason)

    async def barrier(self) -> float:
        """Report ready, wait for T0, sleep until it; returns T0 on `time.perf_counter()`'s clock. Raises
        ClusterError when the run is aborted, or when T0 has already passed on this machine's clock."""
        assert self._conn is not None and self._started is not None
        self._check()
        await self._conn.send(message("ready"))
        with anyio.move_on_after(self.opts.barrier_timeout_s + self.opts.worker_timeout_s):
            await self._started.wait()
        self._check()
        if self.t0 is None:
            raise ClusterError(f"no start from the coordinator after {self.opts.barrier_timeout_s:g} s")
        now_wall, now_perf = time.time(), time.perf_counter()
        if now_wall >= self.t0:
            raise ClusterError(f"this worker arrived after the start: the run began {now_wall - self.t0:.3f} s ago "
                               "by this machine's clock, and a late worker would add load the schedule does not "
                               "have (if the clocks disagree, sync them: NTP, chrony)")
        t0_perf = now_perf + (self.t0 - now_wall)
        await anyio.sleep(max(0.0, t0_perf - time.perf_counter()))
        self._check()
        return t0_perf

    def send_row(self, k: int, payload: Any) -> None:
        """Queue second `k`'s row (non-blocking: called from the worker's synchronous callbacks)."""
        if self._outbox is not None:
            self._outbox.send_nowait(message("row", k=k, payload=payload))

    async def report_failure(self, reason: str) -> None:
        """This worker cannot run (e.g. its target is unreachable): the coordinator aborts the run."""
        if self._conn is not None:
            with anyio.move_on_after(self.opts.worker_timeout_s), suppress(*GONE):
                await self._conn.send(message("failed", reason=reason))

    async def hand_over(self, payload: Any) -> None:
        """Send the final result (after every queued row) and wait for the coordinator's `done`; also after
        an abort, while the coordinator is there to take what this worker did."""
        assert self._outbox is not None and self._done is not None
        self._outbox.send_nowait(message("result", payload=payload))
        with anyio.move_on_after(max(self.opts.worker_timeout_s, 30.0)):
            await self._done.wait()
        if not self.done:
            raise ClusterError(self.abort_reason or "the coordinator did not confirm this worker's result")
