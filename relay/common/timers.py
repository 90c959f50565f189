"""Timers that never fire before their time, to within about a tenth of a millisecond, on any event loop.

The event loop's own timers are not exact enough where a user reads the delay: uvloop rounds a delay to whole
milliseconds and counts it from libuv's cached clock, which is refreshed once per loop iteration, so a 1 ms
`asyncio.sleep` scheduled late in a busy iteration can fire at once (a sleep of 0.03 ms was seen with 0.6 ms of
work per iteration). A built-in `sleep:1ms` Executor is the known delay users calibrate against, and the load
engine must never send a request before it is due, so both use these timers instead.

`timers_for(loop)` gives the loop's one `PreciseTimers`: any number of deadlines in a heap behind one kernel timer
(a Linux `timerfd` with nanosecond resolution, armed through ctypes, whose descriptor the loop watches like a
socket: no thread, no GIL hand-over). A wake-up fires every deadline that `time.perf_counter()` has reached and
re-arms the kernel timer for the next one (which also clears the descriptor's readiness: no `read` is needed then,
a system call less per wake-up); a deadline is therefore never fired early, and late only by the time the loop
takes to get to the descriptor. Elsewhere (no timerfd) the loop's own `call_later` is used and every
wake-up is checked against `perf_counter()`: one that comes early re-arms for the rest, so the guarantee holds,
only with the loop's coarser precision.

Deadlines are absolute `time.perf_counter()` seconds (CLOCK_MONOTONIC on Linux). Imports: the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import os
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd_api() -> tuple[Callable[..., int], Callable[..., int]] | None:
    """libc's timerfd_create and timerfd_settime, if this is Linux and perf_counter is CLOCK_MONOTONIC."""
    if not sys.platform.startswith("linux"):
        return None
    if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


_TIMERFD = _timerfd_api()


class TimerHandle:
    """A pending call; `cancel()` keeps it from running (it leaves the heap when its time comes)."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.args = ()

    def __lt__(self, other: TimerHandle) -> bool:
        return self.when < other.when


class PreciseTimers:
    """The deadlines of one event loop behind one kernel timer (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, use_timerfd: bool = True) -> None:
        self._loop = loop
        self._heap: list[TimerHandle] = []
        self._armed: float | None = None  # the deadline the wake-up is set for
        self._fallback: asyncio.TimerHandle | None = None
        self._fd = -1
        if use_timerfd and _TIMERFD is not None:
            create, self._settime = _TIMERFD
            fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._spec = _Itimerspec()
                self._spec_ref = ctypes.byref(self._spec)
                loop.add_reader(fd, self._expired)

    @property
    def precise(self) -> bool:
        """Whether a kernel timer backs these deadlines (else the loop's own timers, checked on wake-up)."""
        return self._fd >= 0

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle:
        """Call `callback(*args)` in the loop once `time.perf_counter()` has reached `when`, never before."""
        handle = TimerHandle(when, callback, args)
        heapq.heappush(self._heap, handle)
        armed = self._armed
        if armed is None or when < armed:
            self._arm(when)
        return handle

    def cancel(self, handle: TimerHandle) -> None:
        """Cancel `handle`. When it was the next deadline, the kernel timer moves on to the one after it (or stops),
        so that the process is not woken for nothing: a system call instead of a wake-up."""
        handle.cancel()
        heap = self._heap
        if not heap or heap[0] is not handle:
            return
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        if heap:
            if heap[0].when != self._armed:
                self._arm(heap[0].when)
        elif self._armed is not None:
            self._disarm()

    def sleep_until(self, when: float) -> asyncio.Future[None]:
        """A future that resolves once `time.perf_counter()` has reached `when`."""
        future: asyncio.Future[None] = self._loop.create_future()
        self.call_at(when, _resolve, future)
        return future

    async def sleep(self, delay_s: float) -> None:
        """Wait `delay_s` seconds or a little more, never less (counted from now, on perf_counter)."""
        if delay_s > 0:
            await self.sleep_until(time.perf_counter() + delay_s)

    def close(self) -> None:
        if self._fd >= 0:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._fallback is not None:
            self._fallback.cancel()
        self._heap.clear()

    # ---- internals ---------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        self._armed = when
        if self._fd >= 0:
            value = self._spec.it_value
            sec = int(when)
            value.tv_sec, value.tv_nsec = sec, max(1, int((when - sec) * 1e9))  # all zero would disarm it
            if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
            return
        if self._fallback is not None:
            self._fallback.cancel()
        self._fallback = self._loop.call_later(max(0.0, when - time.perf_counter()), self._expired)

    def _disarm(self) -> None:
        self._armed = None
        if self._fd >= 0:
            value = self._spec.it_value
            value.tv_sec, value.tv_nsec = 0, 0  # all zero: stopped
            if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        elif self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None

    def _expired(self) -> None:
        if self._fd < 0:
            self._fallback = None
        self._armed = None
        heap = self._heap
        now = time.perf_counter()
        while heap and heap[0].when <= now:
            handle = heapq.heappop(heap)
            if handle.cancelled:
                continue
            try:
                handle.callback(*handle.args)
            except Exception as exc:  # one failing callback must not stop the others
                self._loop.call_exception_handler(
                    {"message": "exception in a precise timer callback", "exception": exc, "handle": handle}
                )
            if not heap or heap[0].when > now:
                now = time.perf_counter()  # callbacks take time: what fell due meanwhile goes now too
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        armed = self._armed  # set again by a callback's call_at, for a deadline of its own
        if heap and (armed is None or heap[0].when < armed):
            self._arm(heap[0].when)
        elif armed is None and self._fd >= 0:
            # Nothing re-armed the kernel timer (setting it clears its expiry, which keeps the descriptor from
            # reading ready again): read the expiry, one system call that only an idle timer needs.
            with contextlib.suppress(BlockingIOError):
                os.read(self._fd, 8)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the waiting task may have been cancelled meanwhile
        future.set_result(None)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PreciseTimers] = weakref.WeakKeyDictionary()


def timers_for(loop: asyncio.AbstractEventLoop | None = None) -> PreciseTimers:
    """The precise timers of `loop` (the running loop by default), made on first use."""
    if loop is None:
        loop = asyncio.get_running_loop()
    timers = _BY_LOOP.get(loop)
    if timers is None:
        timers = _BY_LOOP[loop] = PreciseTimers(loop)
        # The descriptor goes with the loop: closed when the loop is collected, or with the timers.
        weakref.finalize(loop, timers.close)
    return timers


async def precise_sleep(delay_s: float) -> None:
    """`asyncio.sleep` that never returns before `delay_s` has passed (see the module docstring)."""
    if delay_s > 0:
        await timers_for().sleep_until(time.perf_counter() + delay_s)
