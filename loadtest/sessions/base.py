"""What every kind of load session (WebSocket, gRPC, HTTP) shares: the table of requests in flight, how they
leave it (answered, failed, timed out), and the errors a session reports.

Nothing is lost silently: every request leaves the table through exactly one of `on_answer` and `on_failure`,
or is handed back as expired or unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed

# What an answer hands to the measurement: the pending entry, the decoded answer (relay.wire.answers: id,
# error, doc count at once, routes and full status when read; the gRPC and HTTP sessions hand a
# DataRequest, which offers the same attributes), its doc count, and when it arrived.
AnswerCallback = Callable[["Pending", Any, int, float], None]
FailureCallback = Callable[["Pending", str, float], None]


class ConnectError(Exception):
    """The target could not be reached or refused the handshake; the message says how."""


@dataclass(slots=True)
class Pending:
    """A request in flight: when it was due (run clock), when it really left, how many docs."""

    rid: str
    due_s: float
    sent_s: float
    docs: int
    warmup: bool


def describe_close(exc: BaseException | None) -> str:
    """A failure reason from how a connection ended: `close 1006`, `close 1011: reason`."""
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        if exc.rcvd is None:
            return "close 1006"  # no close frame from the server: TCP dropped
        reason = f": {frame.reason}" if frame and frame.reason else ""
        return f"close {exc.rcvd.code}{reason}"
    if exc is None:
        return "close 1006"
    return f"transport: {type(exc).__name__}"


class SessionBase:
    """What every kind of session (WebSocket, gRPC, HTTP) shares: the table of requests in flight, the
    counters the summary reads, and how requests leave the table when they fail or time out."""

    def __init__(
        self,
        url: str,
        max_inflight: int,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int,
        connect_timeout_s: float,
    ) -> None:
        self.url = url
        self.max_inflight = max_inflight
        self.clock = clock
        self.on_answer = on_answer
        self.on_failure = on_failure
        self.index = index
        self.connect_timeout_s = connect_timeout_s
        self.pending: dict[str, Pending] = {}
        self.negotiated: str | None = None
        self.connected = False
        self.closing = False
        self.reconnects = 0
        self.late_answers = 0
        self.unknown_answers = 0
        self._reconnector: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    @property
    def can_send(self) -> bool:
        return self.connected and len(self.pending) < self.max_inflight

    def _fail_all(self, reason: str) -> None:
        now = self.clock()
        failed = list(self.pending.values())
        self.pending.clear()
        for entry in failed:
            self.on_failure(entry, reason, now)

    def expire(self, older_than_s: float) -> list[Pending]:
        """Remove and return requests sent before `older_than_s` (run clock): they timed out."""
        expired = [p for p in self.pending.values() if p.sent_s < older_than_s]
        for p in expired:
            del self.pending[p.rid]
        if self.closing and not self.pending:
            self._drained.set()  # nothing left to wait for at the end of the run
        return expired
