"""The WebSocket door: one client connection's side of the request lifecycle, `/dry_run` over WebSocket, and the
graceful stop of every connection.

A `ClientConnection` reads requests while fewer than `prefetch` are in flight (reading stops, so TCP pushes back,
as a Jina gateway's prefetch does), hands each to the gateway (relay.gateway: admit, then run through the
backend), and streams each answer as soon as it is ready, out of order when Executors take different times.
Where a Jina gateway drops TCP on bad input (the client sees 1006 and loses everything in flight), it stops
reading, answers what is in flight, then closes with a code and a reason: 1007 for malformed payloads, 1003 for a
frame of the wrong type, 1009 for an oversized message. End of stream is answered the same way with 1000, a
graceful stop with 1001.

The per-message path is callbacks only: the listener (relay.net.listener) hands each message in, the backend
calls back with the answer, and the answer is encoded and queued for the socket in that same call.

Imports: anyio, orjson, relay.gateway, relay.net.listener and relay.wire.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import anyio
import orjson

from relay.gateway import Gateway
from relay.net.listener import MessageSink, WebSocketSession
from relay.observer import DOOR_WEBSOCKET
from relay.wire import json_codec, proto_codec
from relay.wire.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    FrameTooLarge,
    WireError,
    WrongFrameType,
)
from relay.wire.messages import DataRequest, EndOfStream

log = logging.getLogger("flowrelay.relay")

DRY_RUN_PATH = "/dry_run"


class WebSocketDoor:
    """Opens a session for each WebSocket connection (`/` or `/dry_run`) and stops them all gracefully."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._connections: set[ClientConnection] = set()
        self._all_closed: anyio.Event | None = None

    def open_session(self, session: WebSocketSession) -> MessageSink:
        mode = session.subprotocol or "json"
        if session.path == DRY_RUN_PATH:
            return DryRunSession(self.gateway, session, mode)
        conn = ClientConnection(self, session, mode)
        self._connections.add(conn)
        self.gateway.connection_opened(mode)
        return conn

    def connection_closed(self, conn: ClientConnection, code_received: int | None) -> None:
        self._connections.discard(conn)
        self.gateway.connection_closed(conn.mode, conn.session.close_code_sent, code_received)
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    # ---- graceful stop -------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Every connection stops reading, answers what it has in flight, then closes 1001 by itself."""
        for conn in list(self._connections):
            conn.begin_shutdown()

    def give_up(self) -> None:
        """Close 1001 now the connections still waiting for answers (those answers are dropped)."""
        waiting = [conn for conn in self._connections if conn.in_flight]
        if waiting:
            log.warning("gave up waiting for %d requests in flight on %d connections",
                        sum(conn.in_flight for conn in waiting), len(waiting))
        for conn in waiting:
            conn.close_now()

    async def wait_closed(self) -> None:
        """Until no connection is open (new ones are refused once the relay stops)."""
        if not self._connections:
            return
        if self._all_closed is None:
            self._all_closed = anyio.Event()
        await self._all_closed.wait()


class DryRunSession:
    """`/dry_run` over WebSocket: push an empty request through the whole Flow, answer its status, close 1000.
    Nothing the client sends is read (a Jina client sends one empty frame)."""

    def __init__(self, gateway: Gateway, session: WebSocketSession, mode: str) -> None:
        self.session = session
        self.mode = mode
        gateway.spawn(self._probe, gateway)

    async def _probe(self, gateway: Gateway) -> None:
        session = self.session
        try:
            status = await gateway.dry_run()
            if self.mode == "bytes":
                session.send(proto_codec.encode_status(status), text=False)
            else:
                session.send(orjson.dumps(json_codec.status_dict(status)), text=True)
        except Exception:  # a task of the gateway: what fails here ends this session, not the relay
            log.exception("the dry run's answer could not be sent")
            session.close(CLOSE_INTERNAL_ERROR, "the dry run failed in the relay")
        finally:
            session.close(CLOSE_NORMAL)  # no-op after the close above

    def has_room(self) -> bool:
        return True

    def on_message(self, data: bytes | str, is_text: bool, size: int) -> None:
        return None

    def on_closed(self, code_received: int | None) -> None:
        return None

    def on_writable(self) -> None:
        return None


class ClientConnection:
    """One client connection: admit requests while there is room, answer each when it is ready, and close
    once, after everything in flight is answered."""

    def __init__(self, door: WebSocketDoor, session: WebSocketSession, mode: str) -> None:
        self.door = door
        self.gateway = door.gateway
        self.session = session
        self.mode = mode
        self.is_bytes = mode == "bytes"
        self.decode = proto_codec.decode_request if self.is_bytes else json_codec.decode_request
        self.encode = proto_codec.encode_response if self.is_bytes else json_codec.encode_response
        config = door.gateway.config
        self.limit = config.max_message_size
        self.prefetch = config.prefetch
        self.in_flight = 0
        # Made when first needed: each object an idle session holds is one more for every full garbage
        # collection to scan (10,000 sessions: see bench/relay_gc.py).
        # The answer callback handed to the backend with each request, made once (a bound method per request
        # would be an allocation per message); dropped on close, since it refers back to this connection.
        self._respond_cb: Callable[[DataRequest], None] | None = None
        # Answers ready while the client is not reading (the transport's buffer is full): kept unencoded, so
        # a slow reader holds at most the prefetch window of answers, not their encoded frames as well.
        self._backlog: collections.deque[DataRequest] | None = None
        self._closed = False
        self._closing: tuple[int, str] | None = None  # the close to send once nothing is in flight
        # `--record`: this connection's recorder, when sampling picked it (relay.capture.tap).
        self._capture = self.gateway.capture_connection(DOOR_WEBSOCKET, mode, self.encode)

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
        except WireError as err:
            self._refuse(err)
            return
        try:
            req = self.decode(data)
        except WireError as err:
            self.gateway.observer.bytes_in(size)  # read, if not understood
            self._refuse(err)
            return
        if isinstance(req, EndOfStream):
            self.gateway.observer.bytes_in(size)
            self._finish(CLOSE_NORMAL, "")
            return
        gateway = self.gateway
        req.answer_subprotocol = self.mode
        # A bytes client matches answers by its own request ids; a json client cannot choose (Jina makes one).
        gateway.admit(req, size, self.is_bytes, self._capture, data)
        self.in_flight += 1
        respond = self._respond_cb
        if respond is None:
            respond = self._respond_cb = self._respond
        gateway.run(req, respond)

    def on_writable(self) -> None:
        backlog = self._backlog
        while backlog and not self.session.writing_paused:
            self._send(backlog.popleft())
        self._after_answer()

    def on_closed(self, code_received: int | None) -> None:
        # The requests still running go on to their end, as on a Jina gateway; their answers are dropped.
        self._closed = True
        self._respond_cb = None
        backlog, self._backlog = self._backlog, None
        for req in backlog or ():
            self._drop(req)
        if self._capture is not None:
            self._capture.closed()
        self.door.connection_closed(self, code_received)

    # ---- answers -------------------------------------------------------------------------------

    def _respond(self, req: DataRequest) -> None:
        if self._closed:
            self._drop(req)
            return
        if self.session.writing_paused or self._backlog:
            if self._backlog is None:
                self._backlog = collections.deque()
            self._backlog.append(req)  # encoded when the client reads again, in order of completion
            return
        self._send(req)
        self._after_answer()

    def _send(self, req: DataRequest) -> None:
        session = self.session
        payload = self.gateway.finish(req, self.encode if session.is_open else None, DOOR_WEBSOCKET, self._capture)
        if payload is not None:
            session.send(payload, text=not self.is_bytes)
        self.in_flight -= 1

    def _drop(self, req: DataRequest) -> None:
        """The client is gone: the request is finished without an answer."""
        self.gateway.finish(req, None, DOOR_WEBSOCKET, self._capture)
        self.in_flight -= 1

    def _after_answer(self) -> None:
        if self._closing is not None:
            if self.in_flight == 0:
                self.close_now()
        elif self.has_room():
            self.session.room_available()

    # ---- closing -------------------------------------------------------------------------------

    def _refuse(self, err: WireError) -> None:
        log.info("closing %s connection: %s", self.mode, err.reason)
        self._finish(err.close_code, err.reason)

    def _finish(self, code: int, reason: str) -> None:
        """Stop reading; close with `code` once everything in flight is answered."""
        if self._closing is None:
            self._closing = (code, reason)
        if self.in_flight == 0:
            self.close_now()

    def close_now(self) -> None:
        """Send the close decided on (1001 unless end of stream or bad input came first)."""
        self.session.close(*(self._closing or (CLOSE_GOING_AWAY, "the relay is shutting down")))

    def begin_shutdown(self) -> None:
        """Graceful stop: read nothing more, answer what is in flight, then close 1001."""
        self._closing = (CLOSE_GOING_AWAY, "the relay is shutting down")
        if self.in_flight == 0:
            self.close_now()
