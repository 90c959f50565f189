"""One gRPC channel to a Flow's gateway, driving one streaming `jina.JinaRPC/Call` with many requests in flight.

The gRPC twin of loadtest.sessions.ws.Session, with the same interface and the same promises: the engine hands
`post` a pre-encoded `DataRequestProto` (the bytes-mode frame, sent as is: the channel has no serializer), answers
are matched by `header.request_id` (a Jina gateway keeps the client's id), and every request leaves the table
through exactly one of `on_answer`, `on_failure`. Requests go out on a relay.common.grpc_channel.CallStream.

The stream is read by the session's `maintain` task (relay.common.link: `_carry`), so answers arrive only while its
owner runs it. When the stream fails (the Flow died: `grpc UNAVAILABLE`, or any other status), everything in
flight fails with that status as the reason, and `maintain` opens a new stream with backoff once the channel is
ready again. At the end the session half-closes the stream (gRPC's end of stream) and waits a bounded grace for
the last answers.
"""

from __future__ import annotations

import anyio
import grpc

from loadtest.sessions.base import ConnectError, Outcomes, Pending, SessionBase
from relay.common.grpc_channel import CallStream, ChannelError, new_channel, rpc_reason, wait_ready
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError

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

    def __init__(self, url: str, max_inflight: int, outcomes: Outcomes, index: int = 0,
                 connect_timeout_s: float = 10.0, docarray: str = "v1") -> None:
        super().__init__(url, max_inflight, outcomes, index, connect_timeout_s)
        self.docarray = docarray  # the answers' documents: docarray < 0.30 (v1) or >= 0.30 (v2)
        self.last_reason = "grpc not connected"
        self._channel: grpc.aio.Channel | None = None
        self._stream: CallStream | None = None
        self._reading: anyio.CancelScope | None = None

    async def _open(self) -> None:
        if self._channel is None:
            self._channel = new_channel(self.url)
        try:
            # A channel reconnects by itself: after a failure this waits until it has.
            await wait_ready(self._channel, self.url, self.connect_timeout_s)
        except ChannelError as exc:
            raise ConnectError(str(exc)) from None
        self._stream = CallStream(self._channel)

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        stream = self._stream
        if not self.connected or stream is None:
            # The stream ended between the dispatcher's pick and now: this request fails like the others.
            self.on_failure(entry, self.last_reason, entry.sent_s)
            return
        self.pending[rid] = entry
        stream.put(frame)

    async def _carry(self) -> None:
        """Read the stream's answers until it ends; then fail what is in flight with its status."""
        stream = self._stream
        assert stream is not None
        with anyio.CancelScope() as self._reading:
            reason = await self._read(stream.call)
            self.last_reason = reason
            # At the end of a run a stream that ended cleanly leaves what is still in flight to finish(), which
            # reports it as unanswered; any other end fails it with the stream's status.
            self.connection_lost(reason, fail_pending=not (self.closing and reason == STREAM_ENDED))
        self._reading = None
        self.connected = False

    async def _read(self, call: grpc.aio.StreamStreamCall) -> str:
        decode = bytes_codec(self.docarray).decode_response_envelope
        clock = self.clock
        answered = self._answered
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    code, _ = await _reported_status(call, self._channel, await call.code(), await call.details())
                    return STREAM_ENDED if code == grpc.StatusCode.OK else f"grpc {code.name}"
                now = clock()
                try:
                    resp, docs = decode(message)  # type: ignore[arg-type]
                except WireError as err:
                    self.logger.warning("grpc session %d: unreadable answer: %s", self.index, err)
                    self.unknown_answers += 1
                    continue
                answered(resp.request_id, resp, docs, now)
        except grpc.aio.AioRpcError as err:
            code, details = await _reported_status(call, self._channel, err.code(), err.details())
            if not self.closing:
                self.logger.warning("grpc session %d: grpc %s%s", self.index, code.name,
                                    f": {details}" if details else "")
            return f"grpc {code.name}"
        except Exception as other:  # a broken transport must not lose the requests in flight
            return rpc_reason(other)

    async def _end_of_stream(self) -> None:
        if self._stream is not None:
            self._stream.end()

    async def _close_connection(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._stream is not None:
            self._stream.call.cancel()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(grace=None)


async def _reported_status(
    call: grpc.aio.StreamStreamCall, channel: grpc.aio.Channel | None, code: grpc.StatusCode, details: str | None
) -> tuple[grpc.StatusCode, str | None]:
    """The stream's status as the core reports it. When `code`/`details` are grpcio's local mark for a
    refused send (see _LOCAL_SEND_FAILURE), wait a bounded time for the core's own status, which
    replaces it on the call. A channel that no longer has a ready connection lost it with the stream:
    that is `UNAVAILABLE`, as the core reports it when its status does come. Otherwise the local
    status stands."""
    deadline = anyio.current_time() + STATUS_WAIT_S
    while code == grpc.StatusCode.INTERNAL and details == _LOCAL_SEND_FAILURE:
        if channel is not None and channel.get_state() != grpc.ChannelConnectivity.READY:
            return grpc.StatusCode.UNAVAILABLE, "the connection was lost while a request was being sent"
        if anyio.current_time() >= deadline:
            break
        await anyio.sleep(_STATUS_POLL_S)
        code, details = await call.code(), await call.details()
    return code, details
