"""Where the delivery takes its prepared batches from: inline, or a reading process ahead of it.

Reading, parsing, deriving ids and encoding cost more CPU per Document than sending does, so by default
they run in a process of their own (forked before the event loop starts), which streams `prepare`
items to the sender through a pipe: a 4-byte length and a pickle per item. The sender reads the pipe in
its event loop and stops reading while it holds `high` items, so the reading process blocks on a full
pipe: memory stays bounded, and the reader never runs more than a pipe's worth ahead. The child ignores
SIGINT (the sender decides how to stop), dies with its parent (PR_SET_PDEATHSIG on Linux, a broken pipe
elsewhere) and is killed by its pid when the run stops early.

`InlineSource` does the same work in the event loop's thread, on demand (no fork, or one core).
Both offer `take()`: the next item, or None when none is ready yet (then `wake` is called when one is).
Imports the standard library and the prepare room.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from loadtest.ingest.prepare import End, Failed, Item

_LEN = 4
PIPE_SIZE = 1 << 20  # asked of the kernel for the pipe (Linux); the default 64 KiB makes for more wake-ups


def can_fork() -> bool:
    return hasattr(os, "fork") and (os.cpu_count() or 1) > 1


class InlineSource:
    """Items prepared when asked for, in the caller's thread."""

    def __init__(self, items: Iterator[Item]) -> None:
        self._items = items

    def start(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        return None

    def take(self) -> Item | None:
        return next(self._items, None)

    async def close(self) -> None:
        return None


class ProcessSource:
    """Items prepared by a forked child, read from a pipe in the event loop."""

    def __init__(self, make_items: Callable[[], Iterator[Item]], high: int = 256) -> None:
        self.high = max(2, high)
        self.low = self.high // 2
        self._items: deque[Item] = deque()
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False
        self._ended = False  # End or Failed taken
        self._eof = False
        self._wake: Callable[[], None] = lambda: None
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(AttributeError, OSError):
            import fcntl

            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]
        parent = os.getpid()
        # Forked before any event loop or thread exists (see run.py): the child only reads and writes.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; coverage does not follow a fork
            os.close(read_fd)
            _child(write_fd, make_items, parent)
        os.close(write_fd)
        self.pid = pid
        self._read_fd = read_fd

    def start(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        self._wake = wake
        pipe = os.fdopen(self._read_fd, "rb", buffering=0)
        loop.create_task(loop.connect_read_pipe(lambda: _PipeReader(self), pipe))

    def take(self) -> Item | None:
        items = self._items
        if items:
            item = items.popleft()
            if isinstance(item, End | Failed):
                self._ended = True
            if self._paused and len(items) <= self.low and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            return item
        if self._eof and not self._ended:
            self._ended = True
            return Failed("the reading process ended before the end of the input")
        return None

    def _received(self, item: Item) -> None:
        self._items.append(item)
        if not self._paused and len(self._items) >= self.high and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    async def close(self) -> None:
        """Stop the child (at once, if it is still reading) and reap it."""
        if self._transport is not None:
            self._transport.close()
        deadline = time.monotonic() + (0.5 if self._ended else 0.0)
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == self.pid:
                return
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                return
            await asyncio.sleep(0.01)


class _PipeReader(asyncio.Protocol):
    def __init__(self, source: ProcessSource) -> None:
        self.source = source
        self.buf = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.source._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        at, size = 0, len(buf)
        view = memoryview(buf)
        try:
            while size - at >= _LEN:
                n = int.from_bytes(view[at : at + _LEN], "little")
                if size - at - _LEN < n:
                    break
                self.source._received(pickle.loads(view[at + _LEN : at + _LEN + n]))
                at += _LEN + n
        finally:
            view.release()
        del buf[:at]
        self.source._wake()

    def eof_received(self) -> bool:
        self.source._eof = True
        self.source._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.source._eof = True
        self.source._wake()


def _child(fd: int, make_items: Callable[[], Iterator[Item]], parent: int) -> None:  # pragma: no cover
    """The reading process: prepare every item, write it to the pipe, exit. Never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(parent)
        dumps = pickle.dumps
        for item in make_items():
            payload = dumps(item, protocol=5)
            _write_all(fd, len(payload).to_bytes(_LEN, "little") + payload)
    except BrokenPipeError:
        pass  # the sender has gone: nothing more to do
    except BaseException as exc:
        code = 1
        with contextlib.suppress(BaseException):
            payload = pickle.dumps(Failed(f"reading failed: {type(exc).__name__}: {exc}"), protocol=5)
            _write_all(fd, len(payload).to_bytes(_LEN, "little") + payload)
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
        os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die_with_parent(parent: int) -> None:  # pragma: no cover
    """Ask Linux to SIGKILL this process when its parent dies (a kill -9 of the sender included)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(0)
