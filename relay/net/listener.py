"""The relay's listener: one asyncio protocol per TCP connection, HTTP and WebSocket on one port.

Each connection starts as HTTP/1.1, parsed by h11. A WebSocket upgrade is handed to the sans-I/O core of
python-websockets (`websockets.server.ServerProtocol`: handshake, framing, UTF-8 and size checks, close
handshake, pings answered), driven directly from `data_received`; any other request (GET /status, POST
/post, ...) goes to the server's HTTP handler (the HTTP door), with keep-alive, in a task the server
starts and that is cancelled if the client leaves before its answer. Driving websockets' sans-I/O core from
our own thin shell, rather than through its asyncio layer, costs about half as much CPU per message
(an echo measured 6-7 us against 11.5-13 us), writes the answers produced in one turn of the event
loop together (a write per 16 answers at most: relay.common.writes says why), and lets plain HTTP
requests of any method share the port (the asyncio layer answers only GET).

The shell knows nothing of requests: complete messages go to a `MessageSink` (the WebSocket door's
connection), which answers through `WebSocketSession`: send, close, and flow control (reading pauses
while the sink has no room or while the transport's write buffer is full).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import itertools
import logging
from collections.abc import Callable, Coroutine, Generator
from http import HTTPStatus
from typing import Protocol as TypingProtocol

import anyio
import h11
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

from relay.common.frames import data_frame, read_plain, websockets_idle
from relay.common.writes import CoalescedWrites
from relay.net.http_types import HttpRequest, HttpResponse

log = logging.getLogger("flowrelay.listener")

CLOSE_TIMEOUT_S = 10.0
_STATUSES = {s.value for s in HTTPStatus}
# Shared by every session rather than a list each: at 10,000 sessions every object a session holds is one more
# for Python's garbage collector to scan in each full collection (see RelayProtocol._release_handshake).
_SUBPROTOCOLS = ("bytes", "json")
_NO_EXTENSIONS: tuple[()] = ()
# Numbers for the connections that carry plain HTTP requests (HttpRequest.connection), given at the first one.
_http_connection_numbers = itertools.count(1)


class MessageSink(TypingProtocol):
    """What a WebSocket session delivers to (the WebSocket door's side of one connection)."""

    def has_room(self) -> bool: ...
    def on_message(self, data: bytes | str, is_text: bool, size: int) -> None:
        """A complete message: `str` for a text frame (valid UTF-8), `bytes` for binary; `size` in bytes."""
    def on_closed(self, code_received: int | None) -> None: ...
    def on_writable(self) -> None: ...


class ListenerHost(TypingProtocol):
    """What the listener needs from the server."""

    def check_upgrade(self, request: HttpRequest) -> HttpResponse | None: ...
    def select_subprotocol(self, offered: list[str]) -> str | None: ...
    def open_session(self, session: WebSocketSession) -> MessageSink: ...
    async def handle_http(self, request: HttpRequest) -> HttpResponse: ...
    def connection_made(self, conn: RelayProtocol) -> None: ...
    def connection_lost(self, conn: RelayProtocol) -> None: ...
    def spawn(self, fn: Callable[..., Coroutine[object, object, object]], *args: object) -> None:
        """Run `fn(*args)` as a task the server waits for (a plain HTTP request's answer)."""

    server_header: str
    max_message_size: int
    handshake_timeout_s: float
    compression: bool


class WebSocketSession:
    """The gateway logic's handle on one open WebSocket connection."""

    __slots__ = ("_conn", "_frame_here", "_ws", "close_code_sent", "path", "subprotocol")

    def __init__(self, conn: RelayProtocol, ws: ServerProtocol, path: str, subprotocol: str | None) -> None:
        self._conn = conn
        self._ws = ws
        self.path = path
        self.subprotocol = subprotocol
        self.close_code_sent: int | None = None
        # Data frames framed here (relay.common.frames.data_frame) when no extension was negotiated: websockets'
        # own framing (a Frame, its checks, the extensions' hooks) costs a few microseconds an answer;
        # permessage-deflate frames go through websockets.
        self._frame_here = not ws.extensions

    @property
    def is_open(self) -> bool:
        return self._ws.state is State.OPEN

    @property
    def writing_paused(self) -> bool:
        return self._conn.writing_paused

    def send(self, payload: bytes, text: bool) -> None:
        """Queue one message; it is written with whatever else is ready in this turn of the loop, or sooner
        (relay.common.writes). A large answer is written at once: if the client is not reading, the transport
        says so (pause_writing) before the next request of the same read is admitted."""
        ws = self._ws
        if ws.state is not State.OPEN:
            return  # the client left: the answer has nowhere to go, as on a Jina gateway
        conn = self._conn
        if self._frame_here:
            frames = conn.frames
            if frames is None:
                frames = conn.frames = []
            frames.append(data_frame(payload, text))
        elif text:
            ws.send_text(payload)
        else:
            ws.send_binary(payload)
        conn.queued(len(payload))

    def close(self, code: int, reason: str = "") -> None:
        if self._ws.state is not State.OPEN:
            return
        self.close_code_sent = code
        self._ws.send_close(code, reason)
        self._conn.schedule_flush()
        self._conn.arm_close_timeout()

    def room_available(self) -> None:
        """The sink has room again: deliver held messages, then read more."""
        self._conn.deliver_held()

    def ping(self, data: bytes) -> None:
        if self._ws.state is State.OPEN:
            self._ws.send_ping(data)
            self._conn.schedule_flush()


class RelayProtocol(CoalescedWrites, asyncio.Protocol):
    """One TCP connection of the relay."""

    def __init__(self, host: ListenerHost) -> None:
        self.host = host
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # HTTP-only state; a WebSocket session drops it once upgraded (None).
        self._h11: h11.Connection | None = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._raw: list[bytes] | None = []  # bytes seen before we know whether this is a WebSocket
        self._http_request: HttpRequest | None = None
        self._http_body: list[bytes] | None = None
        self._http_busy = False
        self._http_number = 0
        # The running answer to a plain HTTP request (or its streamed body): cancelled when the client leaves.
        self._http_call: anyio.CancelScope | None = None
        self._ws: ServerProtocol | None = None
        # Reading whole plain data frames here while websockets stands idle between frames (`_ws_data`); `_partial`
        # holds the start of a frame the last read cut.
        self._read_here = False
        self._partial = b""
        # Data frames the session framed itself (WebSocketSession.send), written before websockets' own output.
        self.frames: list[bytes] | None = None
        self.session: WebSocketSession | None = None
        self.sink: MessageSink | None = None
        # Made when first needed: an idle session holds neither (nor the timer list once the handshake is done).
        self._fragments: list[bytes] | None = None
        self._fragment_text = False
        self._held: collections.deque[tuple[bytes | str, bool, int]] | None = None
        self.writing_paused = False
        self._reading_paused = False
        self._timeouts: list[asyncio.TimerHandle] | None = []
        self.last_pong_seen = True
        self._closed = False
        self._close_timer_armed = False

    # ---- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.host.connection_made(self)
        # The loop's timer can fire up to a millisecond early; against a handshake timeout of seconds that changes
        # nothing a client can tell, so this (and the close timeout below) stays on the loop's own timers.
        self._timeouts.append(self.loop.call_later(self.host.handshake_timeout_s, self._handshake_timeout))

    def data_received(self, data: bytes) -> None:
        if self._ws is not None:
            self._ws_data(data)
        else:
            self._http_data(data)

    def eof_received(self) -> bool | None:
        if self._ws is not None:
            if self._partial:  # a frame cut short by the end of the stream: websockets reports it
                self._read_here = False
                self._ws.receive_data(self._partial)
                self._partial = b""
            self._ws.receive_eof()
            self._ws_events()
            self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for handle in self._timeouts or ():
            handle.cancel()
        self._timeouts = None
        if self._http_call is not None:
            self._http_call.cancel()  # nobody is left to read the answer
        ws = self._ws
        if self.sink is not None and ws is not None:
            rcvd = ws.close_rcvd
            self.sink.on_closed(rcvd.code if rcvd is not None else 1006)
        self.host.connection_lost(self)
        # Break the reference cycles of a session (protocol <-> transport, protocol <-> session <-> sink, and
        # websockets' parser generator, whose frame holds its ServerProtocol), so that a closed session is freed
        # by reference counting alone: the server freezes long-lived sessions out of the collector's sight
        # (gc.freeze), and a cycle among frozen objects would never be freed. The session object itself stays
        # usable: answers of requests still running are dropped, as before.
        self.transport = None
        self.sink = None
        self.session = None
        self._held = None
        if ws is not None:
            # Nothing can be sent any more: answers still to come are dropped without being encoded.
            ws.state = State.CLOSED
            ws.parser = _closed_parser()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()
        if self.sink is not None:
            self.sink.on_writable()

    # ---- HTTP ------------------------------------------------------------------------------------

    def _http_data(self, data: bytes) -> None:
        assert self._raw is not None and self._h11 is not None
        self._raw.append(data)
        self._h11.receive_data(data)
        self._http_events()

    def _http_events(self) -> None:
        while not self._http_busy and self._ws is None:
            assert self._h11 is not None
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._http_error(exc.error_status_hint, str(exc))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
                target = event.target.decode("latin-1")
                path, _, query = target.partition("?")
                request = HttpRequest(event.method.decode("ascii").upper(), path, query, headers)
                upgrade = request.header("upgrade", "") or ""
                if request.method == "GET" and upgrade.lower() == "websocket":
                    self._start_websocket(request)
                    return
                if not self._http_number:
                    self._http_number = next(_http_connection_numbers)
                request.connection = self._http_number
                self._http_request = request
                self._http_body = []
            elif isinstance(event, h11.Data):
                assert self._http_body is not None
                self._http_body.append(bytes(event.data))
                limit = self.host.max_message_size
                if limit and sum(len(b) for b in self._http_body) > limit:
                    self._http_error(413, "request body too large")
                    return
            elif isinstance(event, h11.EndOfMessage):
                request = self._http_request
                assert request is not None and self._http_body is not None
                request.body = b"".join(self._http_body)
                self._http_body = None
                self._http_busy = True
                self._raw = []
                self.host.spawn(self._answer_http, request)
            elif isinstance(event, h11.ConnectionClosed):
                return

    async def _answer_http(self, request: HttpRequest) -> None:
        response = None
        streamed = False
        with anyio.CancelScope() as call:
            self._http_call = call
            try:
                response = await self.host.handle_http(request)
            except Exception:
                log.exception("HTTP handler failed for %s %s", request.method, request.path)
                response = HttpResponse.json(500, {"detail": "internal error"})
            if response.stream is not None and request.method != "HEAD":
                streamed = True
                await self._stream_http(response)  # until it ends or the client leaves; then the connection closes
        self._http_call = None
        if response is None or streamed:
            return  # cancelled (the client left), or streamed to its end
        self._send_http(response, head_only=request.method == "HEAD")
        self._http_busy = False
        assert self._h11 is not None  # an HTTP connection never upgrades while a request is answered
        if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
            self._close_transport()
            return
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._http_events()  # a pipelined request may already be buffered

    def _send_http(self, response: HttpResponse, head_only: bool = False) -> None:
        if self.transport is None or self.transport.is_closing() or self._h11 is None:
            return
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        names = {k.lower() for k, _ in response.headers}
        if "content-length" not in names:
            headers.append((b"content-length", str(len(response.body)).encode()))
        headers.append((b"server", self.host.server_header.encode("latin-1")))
        headers.append((b"date", email.utils.formatdate(usegmt=True).encode("ascii")))
        try:
            reason = HTTPStatus(response.status).phrase.encode("ascii") if response.status in _STATUSES else b""
            out = self._h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
            if response.body and not head_only:
                out += self._h11.send(h11.Data(data=response.body))
            out += self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.warning("cannot send HTTP response: %s", exc)
            self._close_transport()
            return
        self.transport.write(out)

    async def _stream_http(self, response: HttpResponse) -> None:
        """Send a response whose body comes in chunks (chunked encoding), until it ends or the client goes;
        then close the connection. Stopping the relay closes the transport, which ends the stream too."""
        stream = response.stream
        assert stream is not None and self._h11 is not None
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers += [(b"server", self.host.server_header.encode("latin-1")), (b"connection", b"close"),
                    (b"date", email.utils.formatdate(usegmt=True).encode("ascii"))]
        try:
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(self._h11.send(h11.Response(status_code=response.status, headers=headers)))
            async for chunk in stream:
                if self.transport is None or self.transport.is_closing():
                    break
                self.transport.write(self._h11.send(h11.Data(data=chunk)))
            else:
                if self.transport is not None and not self.transport.is_closing():
                    self.transport.write(self._h11.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                # Shielded: when the client left, this scope is cancelled, and the stream must still let go.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await aclose()
            self._close_transport()

    def _http_error(self, status: int, message: str) -> None:
        if self._h11 is not None and self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._send_http(HttpResponse.json(status, {"detail": message}))
        self._close_transport()

    # ---- WebSocket -------------------------------------------------------------------------------

    def _start_websocket(self, request: HttpRequest) -> None:
        host = self.host
        refusal = host.check_upgrade(request)
        extensions = None
        if host.compression:
            from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

            extensions = [ServerPerMessageDeflateFactory()]
        limit = host.max_message_size
        ws = ServerProtocol(
            extensions=extensions,
            subprotocols=_SUBPROTOCOLS,  # type: ignore[arg-type]
            select_subprotocol=lambda _p, offered: host.select_subprotocol(list(offered)),  # type: ignore[arg-type,return-value]
            # Between the limit and 4x it, a message is read and refused politely after the requests in
            # flight are answered (1009 from the sink); beyond that websockets fails the connection at once.
            max_size=limit * 4 if limit else None,
        )
        self._ws = ws
        assert self._raw is not None and self._h11 is not None
        raw = b"".join(self._raw)
        # websockets reads the handshake alone; what followed it in the same reads (h11's trailing data: frames
        # a client sent without waiting for the 101) is fed once the handshake is released below.
        trailing = self._h11.trailing_data[0]
        head, rest = (raw[: len(raw) - len(trailing)], raw[len(raw) - len(trailing) :]) if trailing else (raw, b"")
        self._raw = None
        self._h11 = None  # HTTP is over on this connection, whatever websockets answers
        ws.receive_data(head)
        events = ws.events_received()
        if not events or not isinstance(events[0], WsRequest):
            # websockets could not parse what h11 accepted (or needs more bytes): answer as it says.
            self._ws_handshake_failed()
            return
        ws_request = events[0]
        if refusal is not None:
            response = ws.reject(refusal.status, refusal.body.decode("utf-8", "replace"))
            for k, v in refusal.headers:
                if k.lower() not in ("content-length", "content-type"):
                    response.headers[k] = v
        else:
            response = ws.accept(ws_request)
        response.headers["Server"] = host.server_header
        ws.send_response(response)
        self.flush()
        if ws.state is not State.OPEN:
            self._close_transport()
            return
        for handle in self._timeouts or ():
            handle.cancel()
        self._timeouts = None
        single_event = len(events) == 1
        del ws_request, events
        _release_handshake(ws, single_event)
        self.session = WebSocketSession(self, ws, request.path, ws.subprotocol)
        self.sink = host.open_session(self.session)
        if rest:
            # Frames that came in the same read as the handshake.
            ws.receive_data(rest)
            self._ws_events()
        self.flush()

    def _ws_handshake_failed(self) -> None:
        ws = self._ws
        assert ws is not None
        if ws.handshake_exc is not None:
            self.flush()
        self._close_transport()

    def _ws_data(self, data: bytes) -> None:
        ws = self._ws
        assert ws is not None
        if self._read_here:
            # Whole plain data frames are read here (relay.common.frames); anything else goes to websockets, which
            # reads until it stands idle between frames again (`_ws_events`).
            self._partial, rest = read_plain(self._partial, data, True, ws.max_message_size, self._ws_message)
            if rest is not None:
                self._read_here = False
                ws.receive_data(rest)
                self._ws_events()
            else:
                self._update_reading()
        else:
            ws.receive_data(data)
            self._ws_events()
        self.flush()

    def _ws_events(self, events: list[object] | None = None) -> None:
        ws = self._ws
        assert ws is not None
        if events is None:
            events = ws.events_received()
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    message = (event.data, opcode is Opcode.TEXT)
                else:
                    self._fragments = [event.data]
                    self._fragment_text = opcode is Opcode.TEXT
                    continue
            elif opcode is Opcode.CONT:
                fragments = self._fragments
                assert fragments is not None  # websockets refuses a continuation frame out of sequence
                fragments.append(event.data)
                if not event.fin:
                    continue
                message = (b"".join(fragments), self._fragment_text)
                self._fragments = None
            else:
                if opcode is Opcode.PONG:
                    self.last_pong_seen = True
                continue
            self._ws_message(*message)
            if ws.state is not State.OPEN:
                break
        self._update_reading()
        if ws.close_expected():
            self.arm_close_timeout()
        elif self.session is not None and not ws.extensions and websockets_idle(ws):
            self._read_here = True

    def _ws_message(self, payload: bytes, is_text: bool) -> None:
        """One whole message, to the sink now or held until it has room."""
        ws = self._ws
        sink = self.sink
        if sink is None or ws is None or ws.state is not State.OPEN:
            return  # after a failure (bad UTF-8) the rest of the read is not delivered
        size = len(payload)
        if is_text:
            try:
                payload = payload.decode("utf-8")  # type: ignore[assignment]
            except UnicodeDecodeError:
                # RFC 6455: a text message must be UTF-8; websockets' asyncio layer fails it the same way.
                self._read_here = False
                ws.fail(1007, "invalid UTF-8 in a text frame")
                return
        held = self._held
        if held or not sink.has_room():
            if held is None:
                held = self._held = collections.deque()
            held.append((payload, is_text, size))
        else:
            sink.on_message(payload, is_text, size)

    def deliver_held(self) -> None:
        sink = self.sink
        held = self._held
        while held and sink is not None and sink.has_room():
            sink.on_message(*held.popleft())
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self._closed:
            return
        blocked = self.writing_paused or bool(self._held) or (self.sink is not None and not self.sink.has_room())
        if blocked and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not blocked and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def flush(self) -> None:
        self._flushed()
        ws = self._ws
        transport = self.transport
        if ws is None or transport is None or transport.is_closing():
            return
        chunks = ws.data_to_send()
        frames = self.frames
        if frames:
            chunks[:0] = frames
            self.frames = None
        if not chunks:
            return
        eof = False
        if chunks[-1] == b"":
            # websockets asks for the TCP connection to be closed once this is sent.
            chunks = chunks[:-1]
            eof = True
        if chunks:
            transport.write(b"".join(chunks))
        if eof:
            # Half-close, as websockets' own asyncio layer does: closing outright while the client's data is
            # still unread makes the kernel answer with RST, and the client never reads our close frame.
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
            self.arm_close_timeout()

    def arm_close_timeout(self) -> None:
        if not self._close_timer_armed and not self._closed:
            self._close_timer_armed = True
            if self._timeouts is None:
                self._timeouts = []
            self._timeouts.append(self.loop.call_later(CLOSE_TIMEOUT_S, self._abort))

    def _handshake_timeout(self) -> None:
        if self.session is None and not self._http_busy:
            self._abort()

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _release_handshake(ws: ServerProtocol, single_event: bool) -> None:
    """Let an open session keep nothing of its handshake.

    websockets' server parser is a generator that read the handshake request and then delegates to the frame
    parser: its frame keeps the request (its headers: about a dozen objects) alive for the whole session. It is
    replaced by the frame parser alone, which is what it runs from then on; that is only equivalent while it
    waits for the first frame with nothing buffered, which holds when websockets was fed the handshake alone
    (one event, nothing left in its buffer). The subprotocol callback and the negotiated-extensions list are
    not used after the handshake either.
    """
    if single_event and not ws.reader.buffer and not ws.reader.eof:
        ws.parser = WsProtocol.parse(ws)
        next(ws.parser)  # start the generator, as websockets does
    with contextlib.suppress(AttributeError):
        # A bound method of the lambda made for this handshake. (`del`, not vars(ws).pop: reading __dict__
        # would make the instance a dict of its own, one more object.)
        del ws.select_subprotocol
    if not ws.extensions:
        ws.extensions = _NO_EXTENSIONS  # type: ignore[assignment]


def _closed_parser() -> Generator[None]:
    """websockets' parser for a connection whose transport is gone: nothing more is read. Unlike the real
    one, its frame holds no reference to the ServerProtocol, so a closed session is no reference cycle."""
    while True:
        yield

