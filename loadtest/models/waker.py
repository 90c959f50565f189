"""Waking the open model's dispatcher for a request's due time: never before it, and at most `SLACK_S` after it,
so that one wake-up of the process can serve several requests.

The loop's own timers are a millisecond coarse (uvloop rounds delays to whole milliseconds and may fire early),
and an open-model run must never send before a due time, so the wake-up is one of relay.common.timers'
deadlines: a Linux timerfd the loop watches (elsewhere the loop's timer, checked against `perf_counter()`).

Why a slack. Below saturation a wake-up of the process costs more than the request it sends: ~30 us of CPU on
these VMs for the event loop to sleep and wake (an idle vCPU is put to sleep), where building, sending and
measuring one request costs ~20 us. A request due at `d` may go out at any moment in `[d, d + SLACK_S]` without
a wake-up of its own: the dispatcher runs after every read of a connection as well (an answer came in), and each
pass sends everything due by then. So the deadline is set at `d + SLACK_S`; an answer that arrives meanwhile
sends the request (the deadline then finds nothing due, and is moved on), and requests due within the slack of
each other leave on one wake-up. Scheduler lag (actual send minus due time) is then at most the slack plus the
loop's own delay, and latency still runs from the due time: a request sent late is charged for it.

`wake_at(due)` keeps one deadline: the dispatcher asks after every pass, for the next request it has not sent. A
deadline already set within the new one's window (`[due, due + SLACK_S]`) serves it as well and stays: at high
rates the next request falls due before the deadline set for the one a read has just sent, and moving the kernel
timer on after every read cost a system call per read (5.7 per wake-up at 20,000/s on 8 connections). A deadline
outside the window is moved (a system call): one set before `due` would wake the process for nothing (a wake-up),
one set after `due + SLACK_S` would send late. Targets are absolute `perf_counter()` seconds. Imports: the
standard library and relay.common.timers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from relay.common.timers import PreciseTimers, TimerHandle, timers_for

SLACK_S = 0.0004


class LoopWaker:
    """Calls `callback` in the event loop once, between the due time last asked for and `slack_s` after it."""

    def __init__(self, callback: Callable[[], None], timers: PreciseTimers | None = None,
                 slack_s: float = SLACK_S) -> None:
        self._callback = callback
        self._timers = timers if timers is not None else timers_for()
        self._slack_s = slack_s
        self._handle: TimerHandle | None = None
        self._at = math.inf  # the deadline set, perf_counter seconds
        self._closed = False

    def wake_at(self, due: float) -> None:
        """Call back by `due` + the slack at the latest, never before `due` (perf_counter seconds)."""
        at = due + self._slack_s
        if due <= self._at <= at or self._closed:
            return  # the deadline set already falls within this one's window: it serves both
        previous = self._handle
        self._at = at
        self._handle = self._timers.call_at(at, self._fire)
        if previous is not None:
            # Set first, then cancelled: the kernel timer moves straight to the new deadline, one system call.
            self._timers.cancel(previous)

    def close(self) -> None:
        if self._handle is not None:
            self._timers.cancel(self._handle)
            self._handle = None
        self._closed = True

    def _fire(self) -> None:
        self._handle = None
        self._at = math.inf
        self._callback()
