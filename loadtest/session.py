"""One persistent WebSocket session to a Flow: send many requests, match answers whatever their order.

A session owns one connection and the table of its requests in flight. Answers are matched by
`header.request_id` in bytes mode and by `parameters.flowrelay_rid` in json mode (a gateway makes its
own request ids for json clients and echoes `parameters`). A session that drops fails the requests it
had in flight with the close code as the reason, then reconnects with backoff while the run goes on.
At the end it sends the end-of-stream marker and waits a bounded time for the last answers; what is
still in flight then is reported as unanswered. Nothing is lost silently: every request leaves the
table through exactly one of `on_answer`, `on_failure`.

The reader and the reconnect loop are tasks owned by the session and cancelled by `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from loadtest.payloads import CORRELATION_KEY
from relay.wire import json_codec
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest

log = logging.getLogger("flowrelay.load")

# What an answer hands to the measurement: the pending entry and the decoded envelope.
AnswerCallback = Callable[["Pending", DataRequest, int, float], None]
FailureCallback = Callable[["Pending", str, float], None]


class ConnectError(Exception):
    """The target could not be reached or refused the handshake; the message says how."""


@dataclass(slots=True)
class Pending:
    """A request in flight: when it was due (run clock), when it really left, how many docs."""

    rid: str
    due_s: float
    sent_s: float
    docs: int
    warmup: bool


def describe_close(exc: BaseException | None) -> str:
    """A failure reason from how a connection ended: `close 1006`, `close 1011: reason`."""
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        if exc.rcvd is None:
            return "close 1006"  # no close frame from the server: TCP dropped
        reason = f": {frame.reason}" if frame and frame.reason else ""
        return f"close {exc.rcvd.code}{reason}"
    if exc is None:
        return "close 1006"
    return f"transport: {type(exc).__name__}"


class SessionBase:
    """What every kind of session (WebSocket, gRPC, HTTP) shares: the table of requests in flight, the
    counters the summary reads, and how requests leave the table when they fail or time out."""

    def __init__(
        self,
        url: str,
        max_inflight: int,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int,
        connect_timeout_s: float,
    ) -> None:
        self.url = url
        self.max_inflight = max_inflight
        self.clock = clock
        self.on_answer = on_answer
        self.on_failure = on_failure
        self.index = index
        self.connect_timeout_s = connect_timeout_s
        self.pending: dict[str, Pending] = {}
        self.negotiated: str | None = None
        self.connected = False
        self.closing = False
        self.reconnects = 0
        self.late_answers = 0
        self.unknown_answers = 0
        self._reconnector: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()

    @property
    def can_send(self) -> bool:
        return self.connected and len(self.pending) < self.max_inflight

    def _fail_all(self, reason: str) -> None:
        now = self.clock()
        failed = list(self.pending.values())
        self.pending.clear()
        for entry in failed:
            self.on_failure(entry, reason, now)

    def expire(self, older_than_s: float) -> list[Pending]:
        """Remove and return requests sent before `older_than_s` (run clock): they timed out."""
        expired = [p for p in self.pending.values() if p.sent_s < older_than_s]
        for p in expired:
            del self.pending[p.rid]
        if self.closing and not self.pending:
            self._drained.set()  # nothing left to wait for at the end of the run
        return expired


class Session(SessionBase):
    """One connection of a load run. `send` is called by the dispatcher; answers come back by callback."""

    def __init__(
        self,
        url: str,
        mode: str,
        offer: str | None,
        max_inflight: int,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int = 0,
        connect_timeout_s: float = 10.0,
        compression: bool = False,
        ca_file: str | None = None,
        docarray: str = "v1",
    ) -> None:
        super().__init__(url, max_inflight, clock, on_answer, on_failure, index, connect_timeout_s)
        self.mode = mode
        self.offer = offer
        self.compression = compression
        # wss:// to a server whose certificate a private CA signed (a self-signed relay, say): trust that CA.
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("wss:") else None
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        is_bytes = mode == "bytes"
        # bytes mode: the answers' documents are docarray < 0.30 (v1) or >= 0.30 (v2) messages.
        codec = bytes_codec(docarray) if is_bytes else json_codec
        self._decode = codec.decode_response_envelope
        self._text = not is_bytes
        self._eos = codec.END_OF_STREAM_FRAME

    async def connect(self) -> None:
        """Open the connection; raises ConnectError with a reason a user can act on."""
        try:
            self.ws = await asyncio.wait_for(
                connect(
                    self.url,
                    subprotocols=[self.offer] if self.offer else None,  # type: ignore[list-item]
                    compression="deflate" if self.compression else None,
                    max_size=None,
                    ping_interval=None,
                    open_timeout=self.connect_timeout_s,
                    **({"ssl": self._ssl} if self._ssl is not None else {}),
                ),
                self.connect_timeout_s,
            )
        except InvalidStatus as exc:
            raise ConnectError(f"{self.url}: handshake refused with HTTP {exc.response.status_code}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectError(f"{self.url}: {str(exc) or type(exc).__name__}") from None
        self.negotiated = self.ws.subprotocol
        self.connected = True
        self._reader = asyncio.create_task(self._read_loop(self.ws))

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        ws = self.ws
        assert ws is not None
        entry = Pending(rid, due_s, self.clock(), docs, warmup)
        self.pending[rid] = entry
        try:
            await ws.send(frame, text=self._text)
        except ConnectionClosed as exc:
            # The reader fails everything in flight, this one included, with the close reason.
            log.debug("send on closed session %d: %s", self.index, exc)

    async def _read_loop(self, ws: ClientConnection) -> None:
        decode = self._decode
        pending = self.pending
        clock = self.clock
        by_param = self.mode != "bytes"
        exc: BaseException | None = None
        try:
            async for message in ws:
                now = clock()
                try:
                    resp, docs = decode(message)  # type: ignore[arg-type]
                except WireError as err:
                    log.warning("session %d: unreadable answer: %s", self.index, err)
                    self.unknown_answers += 1
                    continue
                if by_param:
                    params = resp.parameters
                    rid = params.get(CORRELATION_KEY) if params else None
                else:
                    rid = resp.request_id
                entry = pending.pop(rid, None) if rid is not None else None  # type: ignore[arg-type]
                if entry is None:
                    # Already timed out (late), or not ours.
                    self.late_answers += 1
                    continue
                self.on_answer(entry, resp, docs, now)
                if self.closing and not pending:
                    self._drained.set()
        except ConnectionClosed as closed:
            exc = closed
        except Exception as other:  # a broken transport must not lose the requests in flight
            exc = other
        finally:
            self.connected = False
            if not (self.closing and not self.pending):
                self._fail_all(describe_close(exc) if exc is not None else _clean_close_reason(ws))
            self._drained.set()
            if not self.closing:
                self._reconnector = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closing:
            await asyncio.sleep(delay)
            if self.closing:
                return
            try:
                await self.connect()
                self.reconnects += 1
                self._drained = asyncio.Event()
                log.info("session %d reconnected", self.index)
                return
            except ConnectError as exc:
                log.debug("session %d reconnect failed: %s", self.index, exc)
                delay = min(delay * 2, 5.0)

    async def finish(self, grace_s: float) -> list[Pending]:
        """End of run: send end-of-stream, wait up to `grace_s` for answers, close.
        Returns the requests still unanswered."""
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        ws = self.ws
        if ws is not None and self.connected:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._eos, text=self._text)
            if self.pending:
                self._drained.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), grace_s)
        left = list(self.pending.values())
        self.pending.clear()
        await self.close()
        return left

    async def close(self) -> None:
        self.closing = True
        for task in (self._reconnector,):
            if task is not None:
                task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


def _clean_close_reason(ws: ClientConnection) -> str:
    rcvd = ws.protocol.close_rcvd
    if rcvd is None:
        return "close 1006"
    return f"close {rcvd.code}" + (f": {rcvd.reason}" if rcvd.reason else "")


def wall_clock() -> float:
    return time.perf_counter()


def _unused(*_: Any) -> None:
    return None
