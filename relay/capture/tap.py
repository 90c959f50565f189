"""What the relay calls to record: a connection when it opens, each request when it is admitted, each answer when
it is finished. Sampling decides per connection, so a recorded session is always whole.

    tap = CaptureTap(writer, sample=0.1)
    conn = tap.connection("websocket", "json", encode)   # None: this connection is not recorded
    conn.request(req.request_id, req.exec_endpoint, raw_frame)   # at admission, after the request id is set
    conn.answered(req, payload)                     # the answer as encoded for the client (None: it left)
    conn.closed()

relay.gateway calls `request` from its admit and `answered` from its finish; the doors open and close.

All of it runs on the relay's event loop. A record is packed at once (msgpack, into the current `Block`, whose
buffer is reused: relay.capture.writer says why nothing is kept alive), as the bytes the relay received and
sent: nothing is taken out of a request or an answer here (a reader does that, relay.capture.reader), because
whatever is done per request costs the relay's capacity. Every `HANDOVER_INTERVAL_S`, and when a block holds
`MAX_BLOCK_REQUESTS`, the block goes to the writer's thread.

HTTP requests carry no connection object through the relay: `tap.http_connection(key)` takes the listener's
number for the TCP connection and keeps the last few thousand it saw (one evicted while still in use continues as
a new recorded connection).

Imports: the standard library, relay.capture.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from collections.abc import Callable
from time import monotonic_ns
from typing import Any

from relay.capture.format import ANSWER, CLOSED, CONNECTION, HTTP, REQUEST
from relay.capture.writer import Block, RecordingWriter

HTTP_CONNECTIONS_KEPT = 4096
HANDOVER_INTERVAL_S = 0.25
# A block stays small enough for its packer's buffer to stay in the CPU's cache (about 200 KB of json), and the
# writer's thread compresses it as soon as it is handed over.
MAX_BLOCK_REQUESTS = 256


def sampled(index: int, fraction: float) -> bool:
    """Whether the `index`-th connection (from 0) is recorded: evenly spread, `fraction` of them in any run of
    connections (0.1: the 10th, 20th, ...; 1: every one)."""
    if fraction >= 1.0:
        return True
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


class ConnectionTap:
    """One recorded connection's hooks. `encode` encodes an answer as the connection's door does (for an answer
    whose client left before it was encoded)."""

    __slots__ = ("conn", "encode", "tap")

    def __init__(self, tap: CaptureTap, conn: int, encode: Callable[[Any], bytes]) -> None:
        self.tap = tap
        self.conn = conn
        self.encode = encode

    def request(self, request_id: str, endpoint: str | None, body: bytes | str) -> None:
        """A request admitted (its request id set): its raw frame or body, as received."""
        tap = self.tap
        block = tap.block
        block.packer.pack((REQUEST, self.conn, monotonic_ns(), request_id, endpoint or "/", body))
        block.requests += 1
        if block.requests >= MAX_BLOCK_REQUESTS:
            tap.hand_over()

    def answered(self, req: Any, payload: bytes | None) -> None:
        """The answer to a recorded request (`req`, a DataRequest), as encoded for the client: `payload`, or
        encoded now when the client left before (None)."""
        if payload is None:
            try:
                payload = self.encode(req)
            except Exception:  # the gateway logged it; the recording keeps the request unanswered
                return
        self.answer(payload)

    def answer(self, payload: bytes | str) -> None:
        """The answer to a recorded request, as encoded for the client (its request id in it, its route entries
        complete)."""
        block = self.tap.block
        block.packer.pack((ANSWER, self.conn, payload))  # its request id, status and times are in it
        block.answers += 1

    def closed(self) -> None:
        self.tap.connection_record((CLOSED, self.conn, monotonic_ns()))


class CaptureTap:
    """The relay's recorder: hands out a ConnectionTap for each sampled connection, fills blocks for the writer."""

    def __init__(self, writer: RecordingWriter, sample: float = 1.0) -> None:
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"sample must be a fraction in (0, 1], got {sample!r}")
        self.writer = writer
        self.sample = sample
        self.block = Block(writer.spare())
        self._numbers = itertools.count()
        self._http: collections.OrderedDict[int, ConnectionTap | None] = collections.OrderedDict()
        # CONNECTION records of the connections still open: they head every new segment.
        self._open: dict[int, tuple[Any, ...]] = {}
        writer.segments.open_connections = lambda: list(self._open.values())
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection(self, door: str, subprotocol: str, encode: Callable[[Any], bytes]) -> ConnectionTap | None:
        """A new connection on `door` (websocket, http, grpc) in `subprotocol` (json or bytes), whose answers
        `encode` encodes: its tap, or None when sampling leaves it out."""
        conn = next(self._numbers)
        if not sampled(conn, self.sample):
            return None
        record = (CONNECTION, conn, monotonic_ns(), door, subprotocol)
        self._open[conn] = record
        self.connection_record(record)
        if self._timer is None:
            self._start_handovers()
        return ConnectionTap(self, conn, encode)

    def connection_record(self, record: tuple[Any, ...]) -> None:
        """A CONNECTION or CLOSED record (kept even when the writer cannot keep up)."""
        if record[0] == CLOSED:
            self._open.pop(record[1], None)
        block = self.block
        block.packer.pack(record)
        block.with_connections = True
        block.records += 1

    def http_connection(self, key: int, encode: Callable[[Any], bytes]) -> ConnectionTap | None:
        """The tap of the HTTP connection the listener numbered `key` (made on its first request)."""
        known = self._http
        if key in known:
            known.move_to_end(key)
            return known[key]
        tap = self.connection(HTTP, "json", encode)
        known[key] = tap
        if len(known) > HTTP_CONNECTIONS_KEPT:
            _, evicted = known.popitem(last=False)
            if evicted is not None:
                evicted.closed()
        return tap

    # ---- hand-over -------------------------------------------------------------------------------

    def _start_handovers(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (an import, a test): hand_over() is called explicitly
        self._loop = loop
        self._timer = loop.call_later(HANDOVER_INTERVAL_S, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hand_over()
        self._timer = loop.call_later(HANDOVER_INTERVAL_S, self._tick, loop)

    def hand_over(self) -> None:
        """Give the current block to the writer's thread and start a new one."""
        block = self.block
        block.records += block.requests + block.answers
        if not block.records:
            return
        self.block = Block(self.writer.spare())
        self.writer.hand_over(block)

    def flush(self) -> None:
        """Hand over and write now (what a test or a caller without the thread's timing wants)."""
        self.hand_over()
        self.writer.flush()

    def close(self) -> None:
        """Write what is left and close the recording (after the relay has answered what was in flight)."""
        if self._timer is not None and self._loop is not None and not self._loop.is_closed():
            self._timer.cancel()
        self._timer = None
        for tap in self._http.values():
            if tap is not None:
                tap.closed()
        self._http.clear()
        self.hand_over()
        self.writer.close()
