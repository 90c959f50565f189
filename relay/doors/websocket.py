"""The WebSocket door: one client connection's gateway logic, and `/dry_run` over WebSocket.

A `ClientConnection` reads requests while fewer than `prefetch` are in flight (reading stops, so TCP pushes back,
as a Jina gateway's prefetch does), runs them through the backend, and streams each answer as soon as it is
ready, out of order when Executors take different times. Where a Jina gateway drops TCP on bad input (the
client sees 1006 and loses everything in flight), it stops reading, answers what is in flight, then closes
with a code and a reason: 1007 for malformed payloads, 1003 for a frame of the wrong type, 1009 for an
oversized message. End of stream is answered the same way with 1000, a graceful stop with 1001.

Frames are turned into requests by relay.wire; the listener (relay.net.listener) hands each message in.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from relay.net.listener import WebSocketSession
from relay.wire import json_codec, proto_codec
from relay.wire.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    FrameTooLarge,
    WireError,
    WrongFrameType,
)
from relay.wire.messages import DataRequest, EndOfStream, Route, now_ns
from relay.wire.proto import jina_pb2

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger("flowrelay.relay")


class DryRunSession:
    """`/dry_run` over WebSocket: push an empty request through the whole Flow, answer its status, close 1000.
    Nothing the client sends is read (a Jina client sends one empty frame)."""

    def __init__(self, server: RelayServer, session: WebSocketSession, mode: str) -> None:
        self.session = session
        self.mode = mode
        self._task = asyncio.create_task(self._run(server))

    async def _run(self, server: RelayServer) -> None:
        status = await server.chain.dry_run()
        if self.mode == "bytes":
            pb = jina_pb2.StatusProto()
            if status.is_error:
                proto_codec.status_to_proto(status, pb)
            self.session.send(pb.SerializeToString(), text=False)
        else:
            self.session.send(orjson.dumps(json_codec.status_dict(status)), text=True)
        self.session.close(CLOSE_NORMAL)

    def has_room(self) -> bool:
        return True

    def on_message(self, data: bytes | str, is_text: bool, size: int) -> None:
        return None

    def on_closed(self, code_received: int | None) -> None:
        return None

    def on_writable(self) -> None:
        return None


class ClientConnection:
    """One client connection's gateway logic: admit requests while there is room, answer each when it is
    ready, and close once, after everything in flight is answered."""

    def __init__(self, server: RelayServer, session: WebSocketSession, mode: str) -> None:
        self.server = server
        self.session = session
        self.mode = mode
        self.is_bytes = mode == "bytes"
        self.codec = proto_codec if self.is_bytes else json_codec
        self.decode = self.codec.decode_request
        self.chain = server.chain
        self._submit: Callable[[DataRequest, Callable[[DataRequest], None]], None] | None = getattr(
            server.chain, "submit", None
        )
        self.config = server.config
        self.limit = server.config.max_message_size
        self.in_flight = 0
        self.prefetch = self.config.prefetch
        self._ids = server.ids
        # The three below are made when first needed: each object an idle session holds is one more for every
        # full garbage collection to scan (10,000 sessions: see bench/relay_gc.py).
        self._tasks: set[asyncio.Task[None]] | None = None  # running answers of an async chain
        # Answers ready while the client is not reading (the transport's buffer is full): kept unencoded, so
        # a slow reader holds at most the prefetch window of answers, not their encoded frames as well.
        self._backlog: collections.deque[DataRequest] | None = None
        self._done: asyncio.Future[None] | None = None
        self._closed = False
        self._closing: tuple[int, str] | None = None  # the close to send once nothing is in flight
        self._drain_timer: asyncio.TimerHandle | None = None

    @property
    def done(self) -> asyncio.Future[None]:
        """Resolved once the connection is closed (what a graceful stop waits for)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self._closed:
                self._done.set_result(None)
        return self._done

    # ---- MessageSink ---------------------------------------------------------------------------

    def has_room(self) -> bool:
        # After end of stream or bad input nothing more is read: the messages are dropped, not held.
        if self._closing is not None:
            return True
        # While the client is not reading its answers, admit nothing: the requests wait as small raw frames
        # in the listener (and reading stops), not as answers that may be far larger.
        if self.session.writing_paused:
            return False
        return not self.prefetch or self.in_flight < self.prefetch

    def on_message(self, data: bytes | str, is_text: bool, size: int) -> None:
        if self._closing is not None:
            return  # after end of stream (or an error) requests are ignored, as on a Jina gateway
        try:
            if self.is_bytes == is_text:
                raise WrongFrameType(
                    f"{'text' if is_text else 'binary'} frame on a {self.mode} connection; "
                    f"send {'binary' if self.is_bytes else 'text'} frames"
                )
            if self.limit and size > self.limit:
                raise FrameTooLarge(f"message of {size} bytes exceeds the limit of {self.limit}")
            self.server.observer.bytes_in(size)
            req = self.decode(data)
        except WireError as err:
            log.info("closing %s connection: %s", self.mode, err.reason)
            self._finish(err.close_code, err.reason)
            return
        if isinstance(req, EndOfStream):
            self._finish(CLOSE_NORMAL, "")
            return
        self._admit(req)
        stats = self.server.stats
        stats.requests_total += 1
        stats.in_flight += 1
        self.in_flight += 1
        self.server.observer.request_started(req.exec_endpoint or "/")
        if self._submit is not None:
            # An upstream Flow answers through a callback from its link's read: no task per request.
            self._submit(req, self._respond)
        elif self.chain.is_async:
            task = asyncio.create_task(self._answer_async(req))
            if self._tasks is None:
                self._tasks = set()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.chain.run_sync(req)
            self._respond(req)

    def on_writable(self) -> None:
        backlog = self._backlog
        while backlog and not self.session.writing_paused:
            self._send(backlog.popleft())
        self._after_answer()

    def on_closed(self, code_received: int | None) -> None:
        # The requests still running go on to their end, as on a Jina gateway; their answers are dropped.
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        self._backlog = None
        self._closed = True
        self.server._connection_done(self, code_received)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # ---- requests ------------------------------------------------------------------------------

    def _admit(self, req: DataRequest) -> None:
        ids = self._ids
        if not self.is_bytes:
            # A json client cannot choose the id: the gateway makes one, as Jina does.
            req.request_id = ids.next()
        # Route entries a client sent are dropped, as a Jina gateway drops the ones it did not write.
        req.routes = [Route(self.config.name, now_ns())]
        if req.exec_endpoint is None:
            req.exec_endpoint = "/"
        if req.parameters is None:
            # A Jina gateway always answers with `parameters`, empty if none were sent (`12 00` in bytes).
            req.parameters = {}
        # In Documents, or in the protobuf documents of a bytes request (left unconverted, see proto_codec).
        req.fill_doc_ids(ids.next)

    async def _answer_async(self, req: DataRequest) -> None:
        await self.chain.run(req)
        self._respond(req)

    def _respond(self, req: DataRequest) -> None:
        if self.session.writing_paused or self._backlog:
            if self._backlog is None:
                self._backlog = collections.deque()
            self._backlog.append(req)  # encoded when the client reads again, in order of completion
            return
        self._send(req)
        self._after_answer()

    def _send(self, req: DataRequest) -> None:
        gateway = req.routes[0]
        req.target_executor = ""
        if self.is_bytes and req.docs:
            _mark_numpy(req)
        gateway.end_ns = now_ns()
        if self.session.is_open:
            payload = self.codec.encode_response(req)
            self.session.send(payload, text=not self.is_bytes)
            self.server.observer.bytes_out(len(payload))
        stats = self.server.stats
        stats.in_flight -= 1
        if req.is_error:
            stats.requests_failed += 1
        self.server.observer.request_finished(req, (gateway.end_ns - gateway.start_ns) / 1e9)  # type: ignore[operator]
        self.in_flight -= 1

    def _after_answer(self) -> None:
        if self._closing is not None:
            if self.in_flight == 0:
                self._close_now()
        elif self.has_room():
            self.session.room_available()

    # ---- closing -------------------------------------------------------------------------------

    def _finish(self, code: int, reason: str) -> None:
        """Stop reading; close with `code` once everything in flight is answered."""
        if self._closing is None:
            self._closing = (code, reason)
        if self.in_flight == 0:
            self._close_now()

    def _close_now(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        assert self._closing is not None
        self.session.close(*self._closing)

    def begin_shutdown(self) -> None:
        """Graceful stop: read nothing more, answer what is in flight (bounded), then close 1001."""
        self._closing = (CLOSE_GOING_AWAY, "the relay is shutting down")
        if self.in_flight == 0:
            self._close_now()
        else:
            self._drain_timer = asyncio.get_running_loop().call_later(self.config.drain_timeout_s, self._give_up)

    def _give_up(self) -> None:
        log.warning("gave up waiting for %d requests in flight", self.in_flight)
        self._close_now()


def _mark_numpy(req: DataRequest) -> None:
    """Mark top-level arrays as numpy, as Jina 3.15+ gateways do before sending in bytes mode: jina's own
    client reads an array without a `cls_name` as None."""
    for doc in req.docs or ():
        for arr in (doc.embedding, doc.tensor):
            if arr is not None and not arr.cls_name:
                arr.cls_name = "numpy"
