"""What the relay calls to record: a connection when it opens, each request when it is admitted, each answer when
it is finished. Sampling decides per connection, so a recorded session is always whole.

    tap = CaptureTap(writer, sample=0.1)
    conn = tap.connection("websocket", "json")     # None: this connection is not recorded
    conn.request(req.request_id, req.exec_endpoint, raw_frame)   # at admission, after the request id is set
    conn.answer(req)                                # when the answer is finished (routes and status filled)
    conn.closed()

HTTP requests carry no connection object through the relay: `tap.http_connection(key)` takes the listener's
number for the TCP connection and keeps the last few thousand it saw (one evicted while still in use continues as
a new recorded connection).

Per request the event loop builds two tuples, appends them to the writer's buffer and reads the monotonic clock
twice; the rest (redaction, packing, compression, I/O) happens in the writer's thread (relay.capture.writer).

Imports: the standard library, relay.wire.messages, relay.capture.
"""

from __future__ import annotations

import collections
import itertools
import math
from time import monotonic_ns

from relay.capture.format import ANSWER, CLOSED, CONNECTION, HTTP, REQUEST, flatten_routes
from relay.capture.writer import RecordingWriter
from relay.wire.messages import DataRequest

HTTP_CONNECTIONS_KEPT = 4096


def sampled(index: int, fraction: float) -> bool:
    """Whether the `index`-th connection (from 0) is recorded: evenly spread, `fraction` of them in any run of
    connections (0.1: the 10th, 20th, ...; 1: every one)."""
    if fraction >= 1.0:
        return True
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


class ConnectionTap:
    """One recorded connection's hooks."""

    __slots__ = ("_append", "conn", "writer")

    def __init__(self, writer: RecordingWriter, conn: int) -> None:
        self.writer = writer
        self.conn = conn
        self._append = writer.append

    def request(self, request_id: str, endpoint: str | None, body: bytes | str) -> None:
        """A request admitted (its request id set): its raw frame or body, as received."""
        self._append((REQUEST, self.conn, monotonic_ns(), request_id, endpoint or "/", body))

    def answer(self, req: DataRequest) -> None:
        """The answer to a recorded request, once its gateway route entry has its end."""
        status = req.status
        code = 0
        error = None
        if status is not None and status.code:
            code = status.code
            exc = status.exception
            error = (exc.name if exc is not None and exc.name else "error") if code >= 1 else None
        routes = req.routes
        latency = None
        if routes:
            gateway = routes[0]
            if gateway.start_ns is not None and gateway.end_ns is not None:
                latency = gateway.end_ns - gateway.start_ns
        docs = req.docs
        if docs is not None:
            ids: list[str] | None = [d.id or "" for d in docs]
        else:
            raw_docs = req.raw_docs
            ids = [d.id for d in raw_docs] if raw_docs is not None else ([] if req.docs_bytes is None else None)
        flat = flatten_routes(routes)
        self._append((ANSWER, self.conn, monotonic_ns(), req.request_id, code, error, latency, flat, ids))

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
