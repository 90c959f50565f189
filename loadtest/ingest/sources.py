"""Where the delivery takes its prepared batches from: inline, or a reading process ahead of it.

Reading, parsing, deriving ids and encoding cost more CPU per Document than sending does, so they can
run in a process of their own (forked before the event loop starts), which streams `prepare` items to
the sender through a pipe: a 4-byte length and the item, encoded by `pack_item` (a prepared batch of
consecutive records as a marshalled tuple, ~1.5 us to read back where a pickled dataclass takes ~9 us
on the sender's side, which shares the machine with the Flow; anything else pickled). The sender reads
the pipe in its event loop (a reader callback) and stops reading while it holds `high` items, so the
reading process blocks on a full pipe: memory stays bounded, and the reader never runs more than a
pipe's worth ahead. The child ignores SIGINT (the sender decides how to stop), dies with its parent
(PR_SET_PDEATHSIG on Linux, a broken pipe elsewhere) and is killed by its pid when the run stops early.

`InlineSource` does the same work in the event loop's thread, on demand: where there is no fork, or no
second core (`process_pays`).
Both offer `take()`: the next item, or None when none is ready yet (then `wake` is called when one is).
Imports the standard library and loadtest.ingest.prepare.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator

from loadtest.ingest.prepare import End, Failed, Item, Prepared

_LEN = 4
_PICKLED = b"p"
_BATCH = b"b"  # a Prepared whose positions and lines run without gaps, and whose source is the input's
PIPE_SIZE = 1 << 20  # asked of the kernel for the pipe (Linux); the default 64 KiB makes for more wake-ups
COALESCE_BYTES = 1 << 16  # the reading process writes prepared batches about this much at a time


def pack_item(item: Item) -> bytes:
    """An item as the pipe carries it (without the length): a tag byte, then the item."""
    if type(item) is Prepared and item.sources is None:
        positions, lines = item.positions, item.lines
        n = len(positions)
        first_line = lines[0] if n else None
        if n and first_line is not None and positions[-1] - positions[0] == n - 1 and \
                lines[-1] is not None and lines[-1] - first_line == n - 1:
            return _BATCH + marshal.dumps((positions[0], first_line, n, item.prefix, item.suffix, item.read,
                                           item.bytes_read))
    return _PICKLED + pickle.dumps(item, protocol=5)


def unpack_item(data: bytes | memoryview) -> Item:
    """The item `pack_item` packed; a batch's positions and lines come back as ranges."""
    if data[:1] == _BATCH:
        position, line, n, prefix, suffix, read, bytes_read = marshal.loads(data[1:])
        return Prepared(range(position, position + n), range(line, line + n), prefix, suffix, None, read,
                        bytes_read)
    return pickle.loads(data[1:])  # type: ignore[no-any-return]


def can_fork() -> bool:
    return hasattr(os, "fork")


def process_pays() -> bool:
    """Whether a reading process of its own is worth it: when there is a second core for it. Reading and
    encoding (~1.1 us per small JSON Lines Document here) then overlap with sending (~0.7 us), which is
    what bounds a fast Flow; one core would only take turns between the two, at the cost of the pipe
    (bench/ingest.py)."""
    return (os.cpu_count() or 1) >= 2


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

    def __init__(self, make_items: Callable[[], Iterator[Item]], high: int = 256, coalesce: bool = True) -> None:
        """`coalesce`: write prepared batches to the pipe some at a time (an input read from a file);
        False when records may come slowly (a pipe), so that each goes out as soon as it is ready."""
        self.high = max(2, high)
        self.low = self.high // 2
        self._items: deque[Item] = deque()
        self._buf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
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
            _child(write_fd, make_items, parent, COALESCE_BYTES if coalesce else 0)
        os.close(write_fd)
        self.pid = pid
        self._fd: int | None = read_fd

    def start(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        # A reader callback on the bare descriptor, not a pipe transport: uvloop closes a pipe transport's
        # descriptor twice (libuv, then the file object), which can close a number another thread reused.
        assert self._fd is not None
        self._loop = loop
        self._wake = wake
        os.set_blocking(self._fd, False)
        self._resume()

    def _resume(self) -> None:
        if not self._reading and self._loop is not None and self._fd is not None and not self._eof:
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def take(self) -> Item | None:
        items = self._items
        if items:
            item = items.popleft()
            if isinstance(item, End | Failed):
                self._ended = True
            if not self._reading and len(items) <= self.low:
                self._resume()
            return item
        if self._eof and not self._ended:
            self._ended = True
            return Failed("the reading process ended before the end of the input")
        return None

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, PIPE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._eof = True
            self._pause()
            self._wake()
            return
        buf = self._buf
        buf += data
        at, size = 0, len(buf)
        view = memoryview(buf)
        try:
            while size - at >= _LEN:
                n = int.from_bytes(view[at : at + _LEN], "little")
                if size - at - _LEN < n:
                    break
                self._items.append(unpack_item(view[at + _LEN : at + _LEN + n]))
                at += _LEN + n
        finally:
            view.release()
        del buf[:at]
        if len(self._items) >= self.high:
            self._pause()  # the child blocks on a full pipe: memory stays bounded
        self._wake()

    async def close(self) -> None:
        """Stop the child (at once, if it is still reading) and reap it."""
        self._pause()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
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


def _child(fd: int, make_items: Callable[[], Iterator[Item]], parent: int,
           coalesce_bytes: int) -> None:  # pragma: no cover
    """The reading process: prepare every item, write it to the pipe, exit. Never returns."""
    code = 0
    pending: list[bytes] = []
    size = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent(parent)
        for item in make_items():
            payload = pack_item(item)
            pending.append(len(payload).to_bytes(_LEN, "little") + payload)
            size += _LEN + len(payload)
            # A write per item would wake the sender per item: batches go out COALESCE_BYTES at a time,
            # anything else at once, and every item when records may arrive slowly (coalesce_bytes 0).
            if size >= coalesce_bytes or type(item) is not Prepared:
                _write_all(fd, b"".join(pending))
                pending.clear()
                size = 0
        _write_all(fd, b"".join(pending))
    except BrokenPipeError:
        pass  # the sender has gone: nothing more to do
    except BaseException as exc:
        code = 1
        with contextlib.suppress(BaseException):
            payload = pack_item(Failed(f"reading failed: {type(exc).__name__}: {exc}"))
            _write_all(fd, b"".join(pending) + len(payload).to_bytes(_LEN, "little") + payload)
    finally:
        # Straight out: no atexit handlers, no flushing of buffers inherited from the sender.
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
