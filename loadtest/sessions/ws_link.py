"""A client WebSocket connection driven through the sans-I/O core of python-websockets.

websockets' `ClientProtocol` does the RFC 6455 work (handshake, framing, masking, close handshake,
pings answered, permessage-deflate); this module is the thin asyncio shell around it, as the relay's
listener (relay/listener.py) is on the server side. Against websockets' own asyncio layer a message
costs a fraction as much: no per-message coroutine, lock or queue, each complete message handed to a
callback straight from `data_received`, and everything sent in one turn of the event loop written with
one `transport.write` (a read that completes 40 answers, whose callbacks send 40 requests, costs one
read and one write).

`open_link` connects and completes the opening handshake; then `send` queues a message, `flush`
writes what is queued (it is also scheduled by `send`, and runs after each read), and `close` runs the
closing handshake. How the connection ended (`end_reason`, such as `close 1006` or `close 1011: going
away`) is given to `on_end` once, when the TCP connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import USER_AGENT
from websockets.protocol import State
from websockets.uri import parse_uri

# After the server's close frame, how long to wait for it to close TCP before closing it ourselves.
CLOSE_WAIT_S = 2.0

MessageCallback = Callable[[bytes], None]


class WsLink(asyncio.Protocol):
    """One open (or opening) client connection. Messages arrive as bytes (text frames are not decoded:
    the json codec reads UTF-8 bytes itself)."""

    def __init__(self, protocol: ClientProtocol, on_message: MessageCallback,
                 on_end: Callable[[str], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.on_message = on_message
        self.on_end = on_end
        # Called after each read's messages were delivered, before the writes they caused are flushed.
        self.after_read: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.writing_paused = False
        self.ended = False
        self.was_open = False
        self.end_reason = "close 1006"
        self._opened: asyncio.Future[None] = self.loop.create_future()
        self._gone: asyncio.Future[None] = self.loop.create_future()
        self._writable: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._flush_scheduled = False
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    # ---- sending -----------------------------------------------------------------------------------

    def send(self, payload: bytes, text: bool) -> bool:
        """Queue one message; False (and nothing queued) when the connection is no longer open."""
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            return False
        if text:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        """Write everything queued, in one write."""
        self._flush_scheduled = False
        transport = self.transport
        chunks = self.protocol.data_to_send()
        if not chunks or transport is None or transport.is_closing():
            return
        eof = chunks[-1] == b""  # websockets asks for the TCP connection to be half-closed
        if eof:
            chunks.pop()
        if chunks:
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and transport.can_write_eof():
            transport.write_eof()
        if self.protocol.close_expected():
            self._arm_close_timer()

    async def writable(self) -> None:
        """Return once the transport's write buffer is below its high-water mark (or the link ended)."""
        while self.writing_paused and not self.ended:
            if self._writable is None or self._writable.done():
                self._writable = self.loop.create_future()
            await asyncio.shield(self._writable)

    async def close(self, timeout_s: float = 2.0) -> None:
        """The closing handshake (code 1000), bounded: the TCP connection is aborted after `timeout_s`."""
        if self.ended:
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), timeout_s)
        if not self.ended and self.transport is not None:
            self.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), 1.0)

    # ---- asyncio callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flush()  # the opening handshake's request

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        self._events()
        hook = self.after_read
        if hook is not None and self.was_open:
            hook()
        self.flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._events()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        protocol = self.protocol
        if protocol.state is not State.CLOSED:
            protocol.receive_eof()  # the protocol's own view of the end: close_rcvd stays None (1006)
        rcvd = protocol.close_rcvd
        if rcvd is not None:
            self.end_reason = f"close {rcvd.code}" + (f": {rcvd.reason}" if rcvd.reason else "")
        self.ended = True
        if not self._opened.done():
            self._opened.set_exception(ConnectionError("connection closed during the opening handshake"))
        if not self._gone.done():
            self._gone.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self.was_open:  # a link that never opened has no session to tell: open_link raised
            self.on_end(self.end_reason)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # ---- internals ---------------------------------------------------------------------------------

    def _events(self) -> None:
        protocol = self.protocol
        events = protocol.events_received()
        if not self._opened.done():
            if protocol.handshake_exc is not None:
                self._opened.set_exception(protocol.handshake_exc)
                return
            if protocol.state is not State.OPEN:
                return  # the response is not complete yet
            self.was_open = True
            self._opened.set_result(None)
        deliver = self.on_message
        for event in events:
            if not isinstance(event, Frame):
                continue  # the handshake's response
            opcode = event.opcode
            if opcode is Opcode.BINARY or opcode is Opcode.TEXT:
                if event.fin:
                    deliver(event.data)
                else:
                    self._fragments = [event.data]
            elif opcode is Opcode.CONT:
                self._fragments.append(event.data)
                if event.fin:
                    message = b"".join(self._fragments)
                    self._fragments = []
                    deliver(message)
            # Ping (answered by the protocol), pong and close frames need nothing here.
        if protocol.close_expected():
            self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(CLOSE_WAIT_S, self.transport.close)


async def open_link(url: str, on_message: MessageCallback, on_end: Callable[[str], None],
                    subprotocol: str | None = None, compression: bool = False,
                    ssl_context: ssl.SSLContext | None = None) -> WsLink:
    """Connect to `url` and complete the opening handshake. Raises OSError (TCP), websockets'
    InvalidURI, InvalidStatus (refused with an HTTP status) or another InvalidHandshake; cancelling it
    (a timeout) aborts the connection."""
    uri = parse_uri(url)
    extensions = []
    if compression:
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        extensions.append(ClientPerMessageDeflateFactory())
    protocol = ClientProtocol(uri, extensions=extensions or None,
                              subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
                              max_size=None)
    request = protocol.connect()
    request.headers.setdefault("User-Agent", USER_AGENT)
    protocol.send_request(request)
    loop = asyncio.get_running_loop()
    link = WsLink(protocol, on_message, on_end)
    kwargs: dict[str, object] = {}
    if uri.secure:
        kwargs = {"ssl": ssl_context or True, "server_hostname": uri.host}
    await loop.create_connection(lambda: link, uri.host, uri.port, **kwargs)  # type: ignore[arg-type]
    try:
        await link._opened
    except BaseException:
        if link.transport is not None:
            link.transport.abort()
        raise
    return link
