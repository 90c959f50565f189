"""Waking the event loop at a due time to within about a tenth of a millisecond.

The event loop's own timers have millisecond resolution: uvloop rounds a delay to whole milliseconds
and libuv fires a timer on a millisecond clock, so a callback runs up to a millisecond early or late.
An open-model run measures lag (actual send minus due time) and must never send early, so it needs
better. `make_waker` gives the best one the platform has, both with the same interface:

* `TimerFdWaker` (Linux): a kernel timer (`timerfd`, nanosecond resolution, armed through ctypes)
  whose file descriptor the event loop watches like a socket. No thread, no GIL hand-over: a wake-up
  costs a `timerfd_settime` and a `read`.
* `Waker` (elsewhere): a thread that waits on a condition with a timeout and, at the target time,
  hands the callback to the loop with `call_soon_threadsafe`.

Targets are absolute `time.perf_counter()` values, each fired at most once, never before its time.
A sooner target replaces a later one; a later one may be kept waiting behind a sooner one (the timerfd
is not re-armed for every read), so the callback must set its next target itself when it finds
nothing due. Wake-ups are spaced at least `min_gap_s` apart, which bounds their cost
at high rates: what falls due in between is sent together, at most `min_gap_s` late. (While the loop
is busy the dispatcher also runs after every read, so few wake-ups are needed then.)
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

MIN_GAP_S = 0.0004


class LoopWaker(Protocol):
    """What the open-model dispatcher needs of a waker, whichever kind."""

    def wake_at(self, when: float) -> None: ...
    def close(self) -> None: ...


class Waker:
    """Calls `callback` in the event loop at (or just after) the last target set by `wake_at`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
                 min_gap_s: float = MIN_GAP_S) -> None:
        self._loop = loop
        self._callback = callback
        self._min_gap_s = min_gap_s
        self._cond = threading.Condition()
        self._target: float | None = None
        self._idle = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="flowrelay-waker", daemon=True)
        self._thread.start()

    def wake_at(self, when: float) -> None:
        """Fire once at `when` (perf_counter seconds), replacing any target not yet fired."""
        cond = self._cond
        with cond:
            previous = self._target
            self._target = when
            # The thread needs waking only when it waits for nothing, or for later than this; right
            # after a fire it looks at the target again by itself.
            if self._idle or (previous is not None and when < previous):
                cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        cond = self._cond
        perf = time.perf_counter
        gap = self._min_gap_s
        last_fire = 0.0
        with cond:
            while not self._closed:
                target = self._target
                if target is None:
                    self._idle = True
                    cond.wait()
                    self._idle = False
                    continue
                delay = max(target, last_fire + gap) - perf()
                if delay > 0:
                    cond.wait(delay)  # woken early by a sooner target, or times out when due
                    continue
                self._target = None
                last_fire = perf()
                try:
                    self._loop.call_soon_threadsafe(self._callback)
                except RuntimeError:  # the loop is closed: nothing is left to wake
                    return
                # The callback usually sets the next target within this gap; no wake-up is needed for it.
                cond.wait(gap)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


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


class TimerFdWaker:
    """`Waker`'s interface over a Linux timerfd watched by the event loop (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
                 api: tuple[Callable[..., int], Callable[..., int]], min_gap_s: float = MIN_GAP_S) -> None:
        create, self._settime = api
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._fd = fd
        self._loop = loop
        self._callback = callback
        self._min_gap_s = min_gap_s
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._armed: float | None = None  # the time the kernel timer is set for
        self._last_fire = 0.0
        loop.add_reader(fd, self._expired)

    def wake_at(self, when: float) -> None:
        """Fire once at `when` (perf_counter seconds) or sooner: a sooner target not yet fired is kept
        (the callback then sets the next one again), a later one is replaced."""
        when = max(when, self._last_fire + self._min_gap_s)
        armed = self._armed
        if (armed is not None and armed <= when) or self._fd < 0:
            # Set for this time or sooner already. The dispatcher runs after every read and asks again
            # each time; re-arming for each later due time would cost a system call per read, while a
            # timer that fires first only runs one pass that finds nothing due and sets it again.
            return
        self._armed = when
        value = self._spec.it_value
        sec = int(when)
        value.tv_sec, value.tv_nsec = sec, max(1, int((when - sec) * 1e9))  # all zero would disarm it
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _expired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed for later after it became readable: not this time
        self._armed = None
        self._last_fire = time.perf_counter()
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def make_waker(loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
               min_gap_s: float = MIN_GAP_S) -> LoopWaker:
    """The most precise waker available here: a timerfd on Linux, else a thread."""
    api = _timerfd_api()
    if api is not None:
        try:
            return TimerFdWaker(loop, callback, api, min_gap_s)
        except OSError:
            pass
    return Waker(loop, callback, min_gap_s)
