"""The base of every client link that carries requests to a Flow and matches the answers by id.

Five kinds of link stand on it: the load engine's sessions (loadtest.sessions: WebSocket, gRPC, HTTP; ingestion
uses the WebSocket one) and the relay's links to an upstream Flow (relay.upstream: WebSocket, gRPC). Each is one
connection at a time (or one gRPC stream), with many requests in flight on it. What they share lives here, once:

* the table of requests in flight, `pending`: request id -> entry, in the order they were sent (a dict keeps
  insertion order), so that `expire` takes the oldest first and stops at the first one still in time;
* `expire(older_than)`: remove and return the requests sent before a time (they timed out: the owner decides what
  that means, a timeout counted or an error answered), and `fail(entries, reason)`, which each kind defines;
* `connection_lost(reason)`: the connection ended; everything in flight fails with the cause (`fail_all`), never
  lost, and the link is down until it reconnects;
* `maintain()`: the link's one long-lived task, which its owner runs in an anyio task group for as long as the
  link lives: while the connection is up it carries it (`_carry`: waits for its end, or reads it where reading is
  a task, as gRPC's), and when it ends it reconnects with exponential backoff (`backoff`), until the link closes;
* `finish(grace_s)`: the bounded end of a run: no more requests, end-of-stream where the protocol has one, up to
  `grace_s` for the answers in flight, then `close()`; returns what stayed unanswered;
* `close()`: closes the connection, bounded by `close_timeout_s` and shielded, so that an owner being cancelled
  still releases its sockets on the way out.

What a kind adds: `_open()` (one connection attempt, raising `LinkDown` with the cause in words a user can act
on), `fail(entries, reason)`, `_sent_at(entry)` (in the clock its owner passes to `expire`), and where the protocol
needs them `_carry()`, `_end_of_stream()`, `_close_connection()`, `_up()`, `_down(reason)`. Sending and matching
answers are the kind's own (they are the per-message path: callbacks, no task per message); an answer pops its
entry from `pending` and, while finishing, calls `_settled_if_empty()`.

Imports: the standard library and anyio.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

E = TypeVar("E")

log = logging.getLogger("flowrelay.link")


class LinkDown(Exception):
    """A connection attempt failed; the message says why, in words a user can act on."""


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: `first_s`, doubling up to `cap_s`."""

    first_s: float
    cap_s: float

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.cap_s)


class Link(ABC, Generic[E]):
    """One connection's worth of requests in flight, and its recovery (see the module docstring)."""

    backoff = Backoff(first_s=0.1, cap_s=5.0)
    close_timeout_s = 5.0
    logger = log

    def __init__(self, index: int, max_inflight: int) -> None:
        self.index = index
        self.max_inflight = max_inflight
        self.pending: dict[str, E] = {}
        self.connected = False
        self.closing = False
        self.reconnects = 0
        # Set when the current connection ends (made by `connect`, in the event loop).
        self._ended: anyio.Event | None = None
        # Set, while finishing, when nothing is left in flight or the connection ended (made by `finish`).
        self._settled: anyio.Event | None = None

    def __str__(self) -> str:
        return f"link {self.index}"

    @property
    def has_room(self) -> bool:
        """Up, and below its in-flight limit: a request sent now goes out now."""
        return self.connected and len(self.pending) < self.max_inflight

    # ---- what a kind of link defines --------------------------------------------------------------

    @abstractmethod
    async def _open(self) -> None:
        """One connection attempt; raises LinkDown with the cause."""

    @abstractmethod
    def fail(self, entries: list[E], reason: str) -> None:
        """These requests (already out of `pending`) failed with `reason`: tell whoever waits for them."""

    @staticmethod
    @abstractmethod
    def _sent_at(entry: E) -> float:
        """When the request was sent, in the clock its owner passes to `expire`."""

    async def _carry(self) -> None:
        """Carry the connection while it is up; return once it has ended (`connection_lost` was called)."""
        if self._ended is not None:
            await self._ended.wait()

    async def _end_of_stream(self) -> None:
        """At `finish`: tell the other side that no more requests follow (where the protocol can)."""

    async def _close_connection(self) -> None:
        """Close the connection (called with a bound around it)."""

    def _up(self) -> None:
        """The link has just connected (or reconnected)."""

    def _down(self, reason: str) -> None:
        """The link's connection has just ended, its requests failed."""

    # ---- the table of requests in flight -----------------------------------------------------------

    def expire(self, older_than: float) -> list[E]:
        """Remove and return the requests sent before `older_than`: they timed out. Oldest first; the scan stops
        at the first request still in time, so a sweep costs what it expires."""
        pending = self.pending
        sent_at = self._sent_at
        late: list[str] = []
        for rid, entry in pending.items():
            if sent_at(entry) >= older_than:
                break
            late.append(rid)
        expired = [pending.pop(rid) for rid in late]
        if self.closing:
            self._settled_if_empty()
        return expired

    def fail_all(self, reason: str) -> None:
        """Every request in flight fails with `reason` (the connection is gone, or the link closes)."""
        if not self.pending:
            return
        failed = list(self.pending.values())
        self.pending.clear()
        self.fail(failed, reason)

    def _settled_if_empty(self) -> None:
        if not self.pending and self._settled is not None:
            self._settled.set()

    # ---- the connection's life ---------------------------------------------------------------------

    async def connect(self) -> None:
        """One connection attempt; raises LinkDown with the cause."""
        self._ended = anyio.Event()
        await self._open()
        self.connected = True
        self._up()

    def connection_lost(self, reason: str, fail_pending: bool = True) -> None:
        """The connection has ended: fail what was in flight with `reason` (unless `fail_pending` is False, which
        leaves it to `finish` to report as unanswered) and let `maintain` reconnect."""
        self.connected = False
        if fail_pending:
            self.fail_all(reason)
        if self._ended is not None:
            self._ended.set()
        if self._settled is not None:
            self._settled.set()
        self._down(reason)

    async def maintain(self) -> None:
        """The link's long-lived task (its owner runs it in a task group): carry the connection while it is up,
        reconnect with backoff when it ends. Returns once the link is closing."""
        while not self.closing:
            if self.connected:
                await self._carry()
            else:
                await self._reconnect()

    async def _reconnect(self) -> None:
        for delay in self.backoff.delays():
            await anyio.sleep(delay)
            if self.closing:
                return
            try:
                await self.connect()
            except LinkDown as exc:
                self.logger.debug("%s: reconnecting failed: %s", self, exc)
                continue
            self.reconnects += 1
            self.logger.info("%s reconnected", self)
            return

    async def finish(self, grace_s: float) -> list[E]:
        """The end of a run: no more requests; end-of-stream, up to `grace_s` for the answers in flight, then
        close. Returns the requests still unanswered (they leave the table)."""
        self.closing = True
        self._settled = anyio.Event()
        if self.connected:
            await self._end_of_stream()
            # Until the clock says the grace is over (the loop's timer can fire a millisecond early, and an answer
            # that comes within the grace must count as answered, not unanswered).
            deadline = time.monotonic() + grace_s
            while self.pending and self.connected and (left_s := deadline - time.monotonic()) > 0:
                with anyio.move_on_after(left_s):
                    await self._settled.wait()
        left = list(self.pending.values())
        self.pending.clear()
        await self.close()
        return left

    async def close(self) -> None:
        """Close the connection, bounded and shielded (it runs on an owner's way out, cancelled or not)."""
        self.closing = True
        with anyio.move_on_after(self.close_timeout_s, shield=True):
            await self._close_connection()
