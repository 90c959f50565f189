"""What the relay calls to record: a connection when it opens, each request when it is admitted, each answer when
it is finished. Sampling decides per connection, so a recorded session is always whole.

    tap = CaptureTap(writer, sample=0.1)
    conn = tap.connection("websocket", "json")     # None: this connection is not recorded
    conn.request(req.request_id, req.exec_endpoint, raw_frame)   # at admission, after the request id is set
    conn.answer(req.request_id, payload)            # the answer as encoded for the client
    conn.closed()

HTTP requests carry no connection object through the relay: `tap.http_connection(key)` takes the listener's
number for the TCP connection and keeps the last few thousand it saw (one evicted while still in use continues as
a new recorded connection).

Per request the event loop builds two tuples, appends them to the writer's buffer and reads the monotonic clock
twice: the request and the answer are recorded as the bytes the relay received and sent, with nothing taken
out of them (a reader does that, relay.capture.reader), because anything done per request here costs the
relay's capacity. The rest (redaction, packing, compression, I/O) happens in the writer's thread
(relay.capture.writer); packing still holds the GIL, and is the larger part of recording's cost
(bench/record_cost.py).

Imports: the standard library, relay.capture.
"""

from __future__ import annotations

import collections
import itertools
import math
from time import monotonic_ns

from relay.capture.format import ANSWER, CLOSED, CONNECTION, HTTP, REQUEST
from relay.capture.writer import RecordingWriter

HTTP_CONNECTIONS_KEPT = 4096


def sampled(index: int, fraction: float) -> bool:
    """Whether the `index`-th connection (from 0) is recorded: evenly spread, `fraction` of them in any run of
    connections (0.1: the 10th, 20th, ...; 1: every one)."""
    if fraction >= 1.0:
        return True
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


class ConnectionTap:
    """One recorded connection's hooks."""

    __slots__ = ("_buffer", "_max", "conn", "writer")

    def __init__(self, writer: RecordingWriter, conn: int) -> None:
        self.writer = writer
        self.conn = conn
        # The writer's buffer itself (RecordingWriter.append, inlined: this runs twice per request).
        self._buffer = writer.buffer
        self._max = writer.max_buffered

    def request(self, request_id: str, endpoint: str | None, body: bytes | str) -> None:
        """A request admitted (its request id set): its raw frame or body, as received."""
        buffer = self._buffer
        if len(buffer) < self._max:
            buffer.append((REQUEST, self.conn, monotonic_ns(), request_id, endpoint or "/", body))
        else:
            self.writer.dropped += 1

    def answer(self, request_id: str, payload: bytes | str) -> None:
        """The answer to a recorded request, as encoded for the client (its route entries complete)."""
        buffer = self._buffer
        if len(buffer) < self._max:
            buffer.append((ANSWER, self.conn, monotonic_ns(), request_id, payload, None, None))
        else:
            self.writer.dropped += 1

    def closed(self) -> None:
        self.writer.append_always((CLOSED, self.conn, monotonic_ns()))


class CaptureTap:
    """The relay's recorder: hands out a ConnectionTap for each sampled connection."""

    def __init__(self, writer: RecordingWriter, sample: float = 1.0) -> None:
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"sample must be a fraction in (0, 1], got {sample!r}")
        self.writer = writer
        self.sample = sample
        self._numbers = itertools.count()
        self._http: collections.OrderedDict[int, ConnectionTap | None] = collections.OrderedDict()

    def connection(self, door: str, subprotocol: str) -> ConnectionTap | None:
        """A new connection on `door` (websocket, http, grpc) in `subprotocol` (json or bytes): its tap, or None
        when sampling leaves it out."""
        conn = next(self._numbers)
        if not sampled(conn, self.sample):
            return None
        self.writer.append_always((CONNECTION, conn, monotonic_ns(), door, subprotocol))
        return ConnectionTap(self.writer, conn)

    def http_connection(self, key: int) -> ConnectionTap | None:
        """The tap of the HTTP connection the listener numbered `key` (made on its first request)."""
        known = self._http
        if key in known:
            known.move_to_end(key)
            return known[key]
        tap = self.connection(HTTP, "json")
        known[key] = tap
        if len(known) > HTTP_CONNECTIONS_KEPT:
            _, evicted = known.popitem(last=False)
            if evicted is not None:
                evicted.closed()
        return tap

    def close(self) -> None:
        """Write what is buffered and close the recording (after the relay has answered what was in flight)."""
        for tap in self._http.values():
            if tap is not None:
                tap.closed()
        self._http.clear()
        self.writer.close()
