"""What every kind of load session (WebSocket, gRPC, HTTP) adds to the link base (relay.common.link): the entry
of a request in flight (`Pending`), the callbacks through which requests leave the table, the counters the summary
reads, and the hooks a load model sets.

Nothing is lost silently: every request leaves the table through exactly one of `on_answer` and `on_failure`, or
is handed back by `expire` (timed out) or `finish` (unanswered at the end of the run).

Imports relay.common.link only.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.common.link import Link, LinkDown

# What an answer hands to the measurement: the pending entry, the decoded answer (relay.wire.answers: id,
# error, doc count at once, routes and full status when read; the gRPC and HTTP sessions hand a
# DataRequest, which offers the same attributes), its doc count, and when it arrived.
AnswerCallback = Callable[["Pending", Any, int, float], None]
FailureCallback = Callable[["Pending", str, float], None]


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Where a session's requests end up: the run's clock, and the callbacks for answers and failures."""

    clock: Callable[[], float]
    on_answer: AnswerCallback
    on_failure: FailureCallback


class ConnectError(LinkDown):
    """The target could not be reached or refused the handshake; the message says how."""


@dataclass(slots=True)
class Pending:
    """A request in flight: when it was due (run clock), when it really left, how many docs."""

    rid: str
    due_s: float
    sent_s: float
    docs: int
    warmup: bool


class SessionBase(Link[Pending]):
    """A load session: one connection of a run, its requests in flight, and their outcomes by callback."""

    logger = logging.getLogger("flowrelay.load")

    def __init__(self, url: str, max_inflight: int, outcomes: Outcomes, index: int, connect_timeout_s: float) -> None:
        super().__init__(index, max_inflight)
        self.url = url
        # Kept as the session's own attributes: they are on the per-answer path.
        self.clock = outcomes.clock
        self.on_answer = outcomes.on_answer
        self.on_failure = outcomes.on_failure
        self.connect_timeout_s = connect_timeout_s
        self.negotiated: str | None = None
        self.late_answers = 0
        self.unknown_answers = 0
        # Hooks a load model sets: `after_read` runs after each read's answers were handled, before the writes
        # they caused go out (sessions whose reads are callbacks call it: WebSocket); `on_up` runs when the
        # session has (re)connected.
        self.after_read: Callable[[], None] | None = None
        self.on_up: Callable[[], None] | None = None

    def __str__(self) -> str:
        return f"session {self.index}"

    @staticmethod
    def _sent_at(entry: Pending) -> float:
        return entry.sent_s

    def fail(self, entries: list[Pending], reason: str) -> None:
        now = self.clock()
        on_failure = self.on_failure
        for entry in entries:
            on_failure(entry, reason, now)

    def _up(self) -> None:
        if self.on_up is not None:
            self.on_up()

    @abstractmethod
    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        """Send one pre-encoded request (sent at `sent_s`, run clock; now if not given) without waiting: it
        leaves with whatever else is sent in this turn of the event loop."""

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        """`post`, then wait while the connection cannot take more (where the protocol can tell)."""
        self.post(rid, frame, due_s, docs, warmup)

    def _answered(self, rid: str | None, answer: Any, docs: int, now: float) -> None:
        """An answer for `rid` arrived at `now`: its request leaves the table (unless it already timed out)."""
        pending = self.pending
        entry = pending.pop(rid, None) if rid is not None else None
        if entry is None:
            self.late_answers += 1  # already timed out, or not ours
            return
        self.on_answer(entry, answer, docs, now)
        if self.closing and not pending:
            self._settled_if_empty()
