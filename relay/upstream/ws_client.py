"""One WebSocket client connection to an upstream gateway, on an asyncio protocol of our own.

The twin of relay.net.listener for the client side: websockets' sans-I/O core (`websockets.client.
ClientProtocol`: handshake, framing, size checks, close handshake, pings answered) is driven directly from
`data_received`, and every complete message goes to a callback in the same call, with no task, queue or
future per message. Frames queued in one turn of the event loop are written with a single
`transport.write` at the end of it (requests forwarded from one client read travel together). Driving
websockets' asyncio layer instead cost a send lock and context per message, an assembler, a reader task
woken per answer and a future per request: about a third of the relay's CPU on the upstream path.

The connection knows nothing of requests: `on_message(payload)` gets each message (`bytes` for binary,
`str` for text), `on_lost(reason)` once when the connection is over, with the cause in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

# Frames at least this large are written at once; smaller ones are coalesced within a loop turn.
FLUSH_NOW_BYTES = 16 * 1024
CLOSE_TIMEOUT_S = 2.0


class HandshakeRefused(Exception):
    """The upstream answered the WebSocket handshake with something other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class WsClient(asyncio.Protocol):
    """A client WebSocket session: open it with `open_ws`, then `send`, `ping`, `close`."""

    def __init__(self, url: str, subprotocol: str, max_size: int | None,
                 on_message: Callable[[bytes | str], None], on_lost: Callable[[str], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.ws = ClientProtocol(parse_uri(url), subprotocols=[subprotocol], max_size=max_size)  # type: ignore[list-item]
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._flush_scheduled = False
        self._lost = False
        self.pong_seen = True
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio and uvloop both set it on TCP sockets; made explicit, since an answer held back by
            # Nagle's algorithm would cost up to a round trip of delayed ACK on every small request.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = self.ws.connect()
        request.headers["User-Agent"] = "flowrelay"
        self.ws.send_request(request)
        self.flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        if events:
            self._events(events)
        # Pongs, and the close frame answering a close, go out now.
        if ws.writes:
            self.flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._events(self.ws.events_received())
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if not self.opened.done():
            why = self.ws.handshake_exc or exc
            self.opened.set_exception(ConnectionError(str(why) if why else "connection closed during the handshake"))
        if self._lost:
            return
        self._lost = True
        self.on_lost(self.close_reason())

    # ---- messages ------------------------------------------------------------------------------

    def _events(self, events: list[object]) -> None:
        on_message = self.on_message
        for event in events:
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
                    if event.fin:
                        on_message(event.data.decode() if opcode is Opcode.TEXT else event.data)
                    else:
                        self._fragments = [event.data]
                        self._fragment_text = opcode is Opcode.TEXT
                elif opcode is Opcode.CONT:
                    self._fragments.append(event.data)
                    if event.fin:
                        data = b"".join(self._fragments)
                        self._fragments = []
                        on_message(data.decode() if self._fragment_text else data)
                elif opcode is Opcode.PONG:
                    self.pong_seen = True
            elif isinstance(event, Response):
                self._handshake_done()
        if self.ws.close_expected() and self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)

    def _handshake_done(self) -> None:
        ws = self.ws
        if self.opened.done():
            return
        if ws.state is State.OPEN:
            self.opened.set_result(None)
            return
        exc = ws.handshake_exc
        if isinstance(exc, InvalidStatus):
            self.opened.set_exception(HandshakeRefused(exc.response.status_code))
        else:
            self.opened.set_exception(ConnectionError(str(exc) or type(exc).__name__))

    # ---- sending -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws.state is State.OPEN and not self._lost

    def send(self, payload: bytes, text: bool) -> bool:
        """Queue one message for the end of this loop turn; False when the connection is not open."""
        ws = self.ws
        if ws.state is not State.OPEN:
            return False
        if text:
            ws.send_text(payload)
        else:
            ws.send_binary(payload)
        if len(payload) >= FLUSH_NOW_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)
        return True

    def ping(self) -> None:
        if self.ws.state is State.OPEN:
            self.pong_seen = False
            self.ws.send_ping(b"")
            self.flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        chunks = self.ws.data_to_send()
        if not chunks:
            return
        eof = chunks[-1] == b""
        if eof:
            chunks = chunks[:-1]
        if chunks:
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof:
            # websockets asks for the TCP connection to be closed once this is sent.
            transport.close()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the connection ends when the upstream answers (or after a bound)."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self.flush()
            if self._close_timer is None:
                self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_reason(self) -> str:
        rcvd = self.ws.close_rcvd
        if rcvd is None:
            return "connection dropped without a close frame (1006)"
        return f"closed {rcvd.code}" + (f": {rcvd.reason}" if rcvd.reason else "")


async def open_ws(url: str, subprotocol: str, max_size: int | None, timeout_s: float,
                  on_message: Callable[[bytes | str], None], on_lost: Callable[[str], None]) -> WsClient:
    """Connect and complete the handshake. Raises HandshakeRefused, OSError or TimeoutError."""
    uri = parse_uri(url)
    ssl_context = ssl.create_default_context() if uri.secure else None
    loop = asyncio.get_running_loop()
    client: WsClient | None = None

    def factory() -> WsClient:
        nonlocal client
        client = WsClient(url, subprotocol, max_size, on_message, on_lost)
        return client

    async def handshake() -> WsClient:
        await loop.create_connection(factory, uri.host, uri.port, ssl=ssl_context)
        assert client is not None
        await client.opened
        return client

    try:
        return await asyncio.wait_for(handshake(), timeout_s)
    except BaseException:
        if client is not None:
            client._lost = True  # a session that never opened reports nothing
            client.abort()
        raise
