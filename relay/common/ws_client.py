"""A client WebSocket connection: websockets' sans-I/O core in a thin asyncio shell of our own.

websockets' `ClientProtocol` does the RFC 6455 work (handshake, framing, masking, size limit, pings answered,
close handshake, permessage-deflate when asked); this shell moves its bytes, as relay.net.listener does on the
server side. Both client halves run on it: the load engine's WebSocket sessions (loadtest.sessions.ws, and
ingestion through them) and the relay's links to an upstream Flow (relay.upstream.ws).

Why not websockets' own asyncio layer: it costs a send lock and context, an assembler, a reader task woken per
message and a future per `recv`, a third of the relay's CPU on the upstream path. Here no task, queue or future
exists per message: each complete message goes to `on_message` straight from `data_received` (as `bytes`, text
frames too: both codecs read UTF-8 bytes), and everything sent in one turn of the event loop leaves in a single
`transport.write`, cut every 16 messages or 16 KiB (relay.common.writes: a read that completes 40 answers, whose
callbacks send 40 requests, costs one read and three writes, and the peer starts on the first 16 at once).

Data frames are framed here, not by websockets (unless an extension such as permessage-deflate was negotiated):
websockets draws each frame's masking key with `secrets.token_bytes(4)`, a system call per message that cost
about a tenth of the load engine's CPU per request. `MaskKeys` draws the keys from the same source (os.urandom),
4 KiB at a time, so every key is still unpredictable (RFC 6455 5.3) and a forked process draws afresh. Control
frames (pings, pongs, close) stay websockets'. Our frames are written before the protocol's own in each flush,
which keeps the order that matters: data is queued only while the connection is open, so before any close frame.

Opening: `open_ws` connects, completes the handshake within `timeout_s`, and raises `ConnectFailed` with the cause
(TCP, TLS, a refusal with its HTTP status, or the time allowed). Then `send` queues a message (False once the
connection is no longer open), `flush` writes what is queued (scheduled by `send` and run after each read; the
`after_read` hook runs between the two, so what a read's answers cause to be sent leaves in the same write),
`writable()` waits while the transport's buffer is full, `ping()` / `pong_seen` serve a keepalive.

Closing, the one behaviour for every user: `close()` runs the closing handshake and lets the server close TCP
first (RFC 6455 7.1.1; as websockets' client does, we half-close our side only once the server's EOF came). It is
bounded: once a close frame is sent or received, a server that has not closed TCP within `CLOSE_TIMEOUT_S` is cut
off (`abort`), and `close()` returns by then whatever the peer does. `on_end(reason)` is called exactly once,
when the TCP connection is gone, for a connection that opened (one that did not raised from `open_ws` instead);
`reason` is `close 1006` (no close frame: dropped) or `close CODE` with the peer's reason after a colon.

Imports: the standard library, websockets, relay.common.frames and relay.common.writes; nothing of the relay
server or the load engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from relay.common.frames import data_frame, read_plain, websockets_idle
from relay.common.writes import CoalescedWrites

MASK_KEYS_DRAWN = 4096  # bytes of os.urandom per draw: 1,024 frames' masking keys
# After a close frame was sent or received, how long the server has to close TCP before we abort it.
CLOSE_TIMEOUT_S = 2.0
# After an abort, how long to wait for the transport to report the connection gone.
ABORT_WAIT_S = 1.0
USER_AGENT = "flowrelay"
NO_CLOSE_FRAME = "close 1006"

MessageCallback = Callable[[bytes], None]
EndCallback = Callable[[str], None]


class ConnectFailed(Exception):
    """The connection could not be opened; the message says why. `status` is the HTTP status of a refused
    handshake (401, 403, 503, ...), None for any other cause."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class MaskKeys:
    """Masking keys for client frames, from os.urandom, drawn `MASK_KEYS_DRAWN` bytes at a time."""

    def __init__(self) -> None:
        self._keys = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._keys, self._at = b"", 0  # a forked process never reuses its parent's keys

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._keys):
            self._keys, at = os.urandom(MASK_KEYS_DRAWN), 0
        self._at = at + 4
        return self._keys[at : at + 4]


_mask_keys = MaskKeys()


def end_reason(protocol: ClientProtocol) -> str:
    """How a connection ended, in the words every user counts failures by: `close 1006`, `close 1011: why`."""
    rcvd = protocol.close_rcvd
    if rcvd is None:
        return NO_CLOSE_FRAME
    return f"close {rcvd.code}" + (f": {rcvd.reason}" if rcvd.reason else "")


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class WsClient(CoalescedWrites, asyncio.Protocol):
    """One open (or opening) client connection; see the module docstring for its life."""

    def __init__(self, protocol: ClientProtocol, on_message: MessageCallback, on_end: EndCallback) -> None:
        self.loop = asyncio.get_running_loop()
        self.protocol = protocol
        self.on_message = on_message
        self.on_end = on_end
        # Called after each read's messages were delivered, before the writes they caused are flushed.
        self.after_read: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.writing_paused = False
        self.ended = False
        self.end_reason = NO_CLOSE_FRAME
        self.pong_seen = True
        self._was_open = False
        self._opened: asyncio.Future[None] = self.loop.create_future()
        # An open that timed out or was cancelled has nobody awaiting this when the connection then ends.
        self._opened.add_done_callback(_retrieve)
        self._gone: asyncio.Future[None] = self.loop.create_future()
        self._writable: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._frames: list[bytes] = []  # data frames framed here, written before the protocol's own
        self._close_timer: asyncio.TimerHandle | None = None
        self._frame_here = False  # data frames framed here: decided by the handshake (no extension negotiated)
        # Reading data frames here (relay.common.frames) while websockets' parser stands idle between frames;
        # `_partial` holds the start of a data frame the last read cut.
        self._read_here = False
        self._partial = b""

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN

    @property
    def subprotocol(self) -> str | None:
        return self.protocol.subprotocol

    # ---- sending -----------------------------------------------------------------------------------

    def send(self, payload: bytes, text: bool) -> bool:
        """Queue one message (written at the end of this turn of the loop, or sooner: relay.common.writes); False
        (nothing queued) when not open."""
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            return False
        if self._frame_here:
            self._frames.append(data_frame(payload, text, _mask_keys.next()))
        elif text:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)
        self.queued(len(payload))
        return True

    def flush(self) -> None:
        """Write everything queued, in one write."""
        self._flushed()
        transport = self.transport
        protocol = self.protocol
        chunks = protocol.data_to_send()
        frames = self._frames
        if frames:
            chunks[:0] = frames
            self._frames = []
        if not chunks or transport is None or transport.is_closing():
            return
        eof = chunks[-1] == b""  # websockets asks for our side of TCP to be closed
        if eof:
            chunks.pop()
        if chunks:
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof:
            if transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):  # uvloop raises RuntimeError on a closing socket
                    transport.write_eof()
            else:
                transport.close()  # TLS cannot half-close
        if protocol.state is not State.OPEN and protocol.close_expected():
            self._arm_close_timer()

    async def writable(self) -> None:
        """Return once the transport's write buffer is below its high-water mark (or the connection ended)."""
        while self.writing_paused and not self.ended:
            if self._writable is None or self._writable.done():
                self._writable = self.loop.create_future()
            await asyncio.shield(self._writable)

    def ping(self) -> None:
        """Send a ping now; `pong_seen` turns True again when its pong comes back."""
        if self.protocol.state is State.OPEN:
            self.pong_seen = False
            self.protocol.send_ping(b"")
            self.flush()

    # ---- closing -----------------------------------------------------------------------------------

    def begin_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the connection ends when the server closes TCP, or at the bound."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self.flush()
        elif self.protocol.state is State.CONNECTING:
            self.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake, bounded (see the module docstring); returns once the connection is gone."""
        if self.ended:
            return
        self.begin_close(code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), CLOSE_TIMEOUT_S + ABORT_WAIT_S)
        if not self.ended:
            self.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._gone), ABORT_WAIT_S)

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self.transport is not None:
            self.transport.abort()

    # ---- asyncio callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio and uvloop both set it on TCP sockets; made explicit, since a small request held back by
            # Nagle's algorithm would cost up to a round trip of delayed ACK.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.flush()  # the opening handshake's request

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if self._read_here:
            self._partial, rest = read_plain(self._partial, data, False, protocol.max_message_size, self._on_data)
            if rest is not None:
                self._read_here = False
                self._receive(rest)
        else:
            self._receive(data)
        hook = self.after_read
        if hook is not None:
            hook()
        if self._frames or protocol.writes:  # what the hook sent, pongs, the echo of a close
            self.flush()

    def eof_received(self) -> bool | None:
        if self._partial:  # a frame cut short by the end of the stream: websockets reports it
            self._read_here = False
            self.protocol.receive_data(self._partial)
            self._partial = b""
        self.protocol.receive_eof()
        events = self.protocol.events_received()
        if events:
            self._deliver(events)
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.end_reason = end_reason(self.protocol)
        self.ended = True
        if not self._opened.done():
            self._opened.set_exception(ConnectFailed(
                str(exc) if exc else "the connection closed during the opening handshake"))
        if not self._gone.done():
            self._gone.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._was_open:
            self.on_end(self.end_reason)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # ---- internals ---------------------------------------------------------------------------------

    def _on_data(self, payload: bytes, _text: bool) -> None:
        self.on_message(payload)  # both codecs read UTF-8 bytes: text frames are delivered as bytes too

    def _receive(self, data: bytes) -> None:
        """Bytes for websockets' parser; its events delivered. Reading frames here resumes once it is idle."""
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            self._deliver(events)
        if self._frame_here and websockets_idle(protocol):
            self._read_here = True

    def _deliver(self, events: list[object]) -> None:
        deliver = self.on_message
        for event in events:
            if type(event) is not Frame:
                self._handshake_done()  # the handshake's response
                continue
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
            elif opcode is Opcode.PONG:
                self.pong_seen = True
            # Pings are answered by the protocol; a close frame is echoed by it.

    def _handshake_done(self) -> None:
        if self._opened.done():
            return
        protocol = self.protocol
        if protocol.state is State.OPEN:
            self._was_open = True
            self._frame_here = not protocol.extensions  # permessage-deflate frames through websockets
            self._opened.set_result(None)
            return
        exc = protocol.handshake_exc
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            self._opened.set_exception(ConnectFailed(f"handshake refused with HTTP {status}", status))
        else:
            self._opened.set_exception(ConnectFailed(str(exc) or type(exc).__name__))

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)


async def open_ws(url: str, on_message: MessageCallback, on_end: EndCallback, *, subprotocol: str | None = None,
                  max_size: int | None = None, compression: bool = False,
                  ssl_context: ssl.SSLContext | None = None, timeout_s: float = 10.0) -> WsClient:
    """Connect to `url` and complete the opening handshake within `timeout_s`. Raises ConnectFailed; a
    cancelled open aborts the connection. `ssl_context` for wss:// (default: the system's trust store)."""
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ConnectFailed(str(exc)) from None
    extensions = []
    if compression:
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        extensions.append(ClientPerMessageDeflateFactory())
    protocol = ClientProtocol(uri, extensions=extensions or None,
                              subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
                              max_size=max_size)
    request = protocol.connect()
    request.headers["User-Agent"] = USER_AGENT
    protocol.send_request(request)
    client = WsClient(protocol, on_message, on_end)
    tls: dict[str, object] = {"ssl": ssl_context or True, "server_hostname": uri.host} if uri.secure else {}
    try:
        async with asyncio.timeout(timeout_s):
            await client.loop.create_connection(lambda: client, uri.host, uri.port, **tls)  # type: ignore[arg-type]
            await client._opened
    except TimeoutError:
        client.abort()
        raise ConnectFailed(f"TimeoutError: no WebSocket handshake within {timeout_s:g} s") from None
    except OSError as exc:
        client.abort()
        raise ConnectFailed(str(exc) or type(exc).__name__) from None
    except BaseException:
        client.abort()
        raise
    return client
