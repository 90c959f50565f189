"""One gRPC channel to a Flow's gateway, driving one streaming `jina.JinaRPC/Call` with many requests in flight.

The gRPC twin of loadtest.sessions.ws.Session, with the same interface and the same promises: the engine
hands `send` a pre-encoded `DataRequestProto` (the bytes-mode frame, sent as is: the channel has no
serializer), answers are matched by `header.request_id` (a Jina gateway keeps the client's id), and
every request leaves the table through exactly one of `on_answer`, `on_failure`.

Requests reach the stream through a queue that grpc.aio's own writer drains one message at a time (a
call takes one write at a time); when the gateway stops reading (its prefetch is full), HTTP/2 flow
control holds that writer back and the queue, bounded by `max_inflight` entries in the table, waits.
When the stream fails (the Flow died: `grpc UNAVAILABLE`, or any other status), everything in flight
fails with that status as the reason and the session opens a new stream with backoff. At the end it
half-closes the stream (gRPC's end of stream) and waits a bounded grace for the last answers.

Each session owns its channel and its TCP connection; the reader and reconnect tasks are cancelled by
`close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from loadtest.sessions.base import AnswerCallback, ConnectError, FailureCallback, Pending, SessionBase
from relay.common.grpc_channel import CALL, ChannelError, open_ready_channel, rpc_reason, wait_ready
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError

log = logging.getLogger("flowrelay.load")

STREAM_ENDED = "grpc stream ended by the server"
# grpcio's own status for a message its core refused to send because the stream was already torn down
# (the connection dropped, or the server ended the call while requests were still going out): code
# INTERNAL with these details. grpcio sets it on the call locally, and the status the core reports for
# the stream (UNAVAILABLE when the connection was lost) replaces it a moment later; a reader that looks
# in between would count a dead target as an internal error.
_LOCAL_SEND_FAILURE = "Internal error from Core"
# How long to wait for the core's status after that local one; it comes with the same teardown.
STATUS_WAIT_S = 2.0
_STATUS_POLL_S = 0.005


class GrpcSession(SessionBase):
    """One channel and one `Call` stream of a load run; same interface as loadtest.sessions.ws.Session."""

    def __init__(
        self,
        url: str,
        max_inflight: int,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int = 0,
        connect_timeout_s: float = 10.0,
        docarray: str = "v1",
    ) -> None:
        super().__init__(url, max_inflight, clock, on_answer, on_failure, index, connect_timeout_s)
        self.docarray = docarray  # the answers' documents: docarray < 0.30 (v1) or >= 0.30 (v2)
        self.last_reason = "grpc not connected"
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the channel (once) and a new `Call` stream; raises ConnectError with the cause."""
        if self._channel is None:
            try:
                self._channel = await open_ready_channel(self.url, self.connect_timeout_s)
            except ChannelError as exc:
                raise ConnectError(str(exc)) from None
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        method = self._channel.stream_stream(CALL)  # no serializers: raw DataRequestProto bytes both ways
        call = method(_drain(outbox))
        self._outbox, self._call = outbox, call
        self.connected = True
        self._reader = asyncio.create_task(self._read_loop(call))

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        self.post(rid, frame, due_s, docs, warmup)

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        """`send` without waiting: the request is queued for the stream at once."""
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        if not self.connected or self._outbox is None:
            # The stream ended between the dispatcher's pick and now: this request fails like the others.
            self.on_failure(entry, self.last_reason, entry.sent_s)
            return
        self.pending[rid] = entry
        self._outbox.put_nowait(frame)

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        decode = bytes_codec(self.docarray).decode_response_envelope
        pending = self.pending
        clock = self.clock
        reason = STREAM_ENDED
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    code, _ = await _reported_status(call, self._channel, await call.code(), await call.details())
                    if code != grpc.StatusCode.OK:
                        reason = f"grpc {code.name}"
                    break
                now = clock()
                try:
                    resp, docs = decode(message)  # type: ignore[arg-type]
                except WireError as err:
                    log.warning("grpc session %d: unreadable answer: %s", self.index, err)
                    self.unknown_answers += 1
                    continue
                entry = pending.pop(resp.request_id, None)
                if entry is None:
                    self.late_answers += 1  # already timed out, or not ours
                    continue
                self.on_answer(entry, resp, docs, now)
                if self.closing and not pending:
                    self._drained.set()
        except grpc.aio.AioRpcError as err:
            code, details = await _reported_status(call, self._channel, err.code(), err.details())
            reason = f"grpc {code.name}"
            if not self.closing:
                log.warning("grpc session %d: %s", self.index, reason + (f": {details}" if details else ""))
        except Exception as other:  # a broken transport must not lose the requests in flight
            reason = rpc_reason(other)
        finally:
            self.connected = False
            self.last_reason = reason
            # At the end of a run a stream that ended cleanly leaves what is still in flight to finish(),
            # which reports it as unanswered; any other end fails it with the stream's status.
            if self.pending and not (self.closing and reason == STREAM_ENDED):
                self._fail_all(reason)
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
                if self._channel is not None:
                    # The channel reconnects by itself; wait until it has, then open a new stream.
                    await wait_ready(self._channel, self.url, self.connect_timeout_s)
                await self.connect()
            except (ConnectError, ChannelError) as exc:
                log.debug("grpc session %d reconnect failed: %s", self.index, exc)
                delay = min(delay * 2, 5.0)
                continue
            self.reconnects += 1
            self._drained = asyncio.Event()
            log.info("grpc session %d reconnected", self.index)
            return

    async def finish(self, grace_s: float) -> list[Pending]:
        """End of run: half-close the stream, wait up to `grace_s` for answers, close.
        Returns the requests still unanswered."""
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self.connected and self._outbox is not None:
            self._outbox.put_nowait(None)
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
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(grace=None), 2.0)
            self._channel = None


async def _drain(outbox: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    """The stream's requests, as `send` queues them; None half-closes the stream."""
    while True:
        frame = await outbox.get()
        if frame is None:
            return
        yield frame


async def _reported_status(
    call: grpc.aio.StreamStreamCall, channel: grpc.aio.Channel | None, code: grpc.StatusCode, details: str | None
) -> tuple[grpc.StatusCode, str | None]:
    """The stream's status as the core reports it. When `code`/`details` are grpcio's local mark for a
    refused send (see _LOCAL_SEND_FAILURE), wait a bounded time for the core's own status, which
    replaces it on the call. A channel that no longer has a ready connection lost it with the stream:
    that is `UNAVAILABLE`, as the core reports it when its status does come. Otherwise the local
    status stands."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STATUS_WAIT_S
    while code == grpc.StatusCode.INTERNAL and details == _LOCAL_SEND_FAILURE:
        if channel is not None and channel.get_state() != grpc.ChannelConnectivity.READY:
            return grpc.StatusCode.UNAVAILABLE, "the connection was lost while a request was being sent"
        if loop.time() >= deadline:
            break
        await asyncio.sleep(_STATUS_POLL_S)
        code, details = await call.code(), await call.details()
    return code, details
