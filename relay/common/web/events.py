"""The history and fan-out behind a live page's server-sent events: rows, named states, subscribers.

A producer adds one row per second (`add_row`, `replace_last_row`) and sets named states (`set_state`: the run's
description, the thresholds' states, the workers' health, the final summary); each browser subscribes and gets,
in this order, the `hello` state, every row so far, the other states' latest values, then everything that comes
after, with nothing lost or repeated in between (the snapshot and the subscription are taken under one lock). So
a reload shows the whole history.

Where rows are kept is the store's choice: `MemoryRows` keeps the last N (the relay's dashboard: a bounded
window); `SpooledRows` keeps a short tail in memory and the rest in an unnamed temporary file, read back when a
browser subscribes (a load run of hours: memory stays flat, the history stays whole).

A subscriber is slow or gone when its backlog passes `max_backlog` messages: it is dropped (its stream ends), and
its browser's EventSource reconnects and starts over from the history. Producers call from any thread; the
subscriber's `wake` callback tells its consumer (a thread, or an event loop through call_soon_threadsafe) that
there is more to take.

Imports: the standard library, orjson and relay.common.web.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson

from relay.common.web import sse_message

HELLO = "hello"  # the first state every subscriber gets: what the page is about; a page resets on it
REPLACE = "replace"  # the event that amends the last row


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class RowStore(Protocol):
    """Where the rows (already encoded, one JSON line each) are kept."""

    def append(self, row: bytes) -> None: ...
    def replace_last(self, row: bytes) -> None: ...
    def snapshot(self) -> Callable[[], Iterator[bytes]]:
        """Called under the log's lock: a reader of the rows so far, to be run outside it."""
        ...
    def close(self) -> None: ...


class MemoryRows:
    """The last `keep` rows, in memory."""

    def __init__(self, keep: int) -> None:
        self._rows: collections.deque[bytes] = collections.deque(maxlen=keep)

    def append(self, row: bytes) -> None:
        self._rows.append(row)

    def replace_last(self, row: bytes) -> None:
        if self._rows:
            self._rows[-1] = row
        else:
            self._rows.append(row)

    def snapshot(self) -> Callable[[], Iterator[bytes]]:
        rows = list(self._rows)
        return lambda: iter(rows)

    def close(self) -> None:
        self._rows.clear()


class SpooledRows:
    """Every row: the last `keep_in_memory` in memory, older ones appended to an unnamed temporary file (gone
    when closed). Only the last row is ever replaced, so what is on disk never changes once written."""

    def __init__(self, keep_in_memory: int = 120, directory: str | None = None) -> None:
        if keep_in_memory < 1:
            raise ValueError("keep_in_memory must be >= 1: the last row may still be replaced")
        self._keep = keep_in_memory
        self._tail: collections.deque[bytes] = collections.deque()
        # Closed by close(): the file lives as long as the run's page.
        self._file = tempfile.TemporaryFile(prefix="flowrelay-rows-", dir=directory, buffering=0)  # noqa: SIM115
        self._on_disk = 0  # bytes written, every one a complete line

    @property
    def bytes_on_disk(self) -> int:
        return self._on_disk

    def append(self, row: bytes) -> None:
        self._tail.append(row)
        if len(self._tail) > self._keep:
            line = self._tail.popleft() + b"\n"
            self._file.write(line)
            self._on_disk += len(line)

    def replace_last(self, row: bytes) -> None:
        if self._tail:
            self._tail[-1] = row
        else:
            self.append(row)

    def snapshot(self) -> Callable[[], Iterator[bytes]]:
        size, tail, fd = self._on_disk, list(self._tail), self._file.fileno()

        def rows() -> Iterator[bytes]:
            # pread: the writer appends through the same descriptor, whose offset this must not move.
            offset, rest = 0, b""
            while offset < size:
                chunk = os.pread(fd, min(1 << 16, size - offset), offset)
                if not chunk:
                    break
                offset += len(chunk)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                yield from (line for line in lines if line)
            yield from tail

        return rows

    def close(self) -> None:
        self._tail.clear()
        self._file.close()


class Subscription:
    """One browser's stream: the history to send first, then what `take` hands out as it comes."""

    def __init__(self, wake: Callable[[], None], max_backlog: int) -> None:
        self._wake = wake
        self._max_backlog = max_backlog
        self._pending: collections.deque[bytes] = collections.deque()
        self.history: Iterator[bytes] = iter(())
        self.closed = False  # no more will come: the log was closed, or this subscriber fell too far behind

    def _put(self, message: bytes) -> None:
        if self.closed:
            return
        if len(self._pending) >= self._max_backlog:
            self.closed = True
        else:
            self._pending.append(message)
        self._wake()

    def _close(self) -> None:
        self.closed = True
        self._wake()

    def take(self) -> list[bytes]:
        """What came since the last call (deque.popleft is atomic: no lock needed against the producer)."""
        out = []
        pending = self._pending
        while pending:
            out.append(pending.popleft())
        return out


class EventLog:
    """Rows and named states of one live page, and the subscribers that stream them (thread-safe)."""

    def __init__(self, rows: RowStore, max_backlog: int = 600) -> None:
        self._rows = rows
        self._max_backlog = max_backlog
        self._states: dict[str, bytes] = {}
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self.rows_added = 0

    def _publish(self, message: bytes) -> None:
        for sub in self._subscribers:
            sub._put(message)
        self._subscribers = [s for s in self._subscribers if not s.closed]

    def add_row(self, row: Any) -> None:
        data = encode(row)
        with self._lock:
            self._rows.append(data)
            self.rows_added += 1
            self._publish(sse_message(data))

    def replace_last_row(self, row: Any) -> None:
        data = encode(row)
        with self._lock:
            self._rows.replace_last(data)
            self._publish(sse_message(data, REPLACE))

    def set_state(self, name: str, value: Any) -> None:
        """Set a named state (sent as `event: NAME`); setting `hello` again restarts every page."""
        data = encode(value)
        with self._lock:
            self._states[name] = data
            self._publish(sse_message(data, name))

    def subscribe(self, wake: Callable[[], None]) -> Subscription:
        """A new subscriber: its `history` (run it outside any lock) then `take()` until `closed`."""
        sub = Subscription(wake, self._max_backlog)
        with self._lock:
            states = dict(self._states)
            if self._closed:
                sub.closed = True
                read_rows: Callable[[], Iterator[bytes]] = lambda: iter(())  # noqa: E731
            else:
                read_rows = self._rows.snapshot()
                self._subscribers.append(sub)

        def history() -> Iterator[bytes]:
            if HELLO in states:
                yield sse_message(states[HELLO], HELLO)
            for row in read_rows():
                yield sse_message(row)
            for name, data in states.items():
                if name != HELLO:
                    yield sse_message(data, name)

        sub.history = history()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every stream; the rows are forgotten."""
        with self._lock:
            self._closed = True
            subs, self._subscribers = self._subscribers, []
            self._rows.close()
        for sub in subs:
            sub._close()
