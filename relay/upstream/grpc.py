"""Links to a real upstream Flow over gRPC: the relay in front of a gRPC-only Jina gateway.

`flowrelay serve --upstream grpc://HOST:PORT` lets browsers and json clients, which speak WebSocket,
reach a Flow whose gateway speaks only gRPC (Jina's default). `GrpcUpstreamPool` is the twin of
relay.upstream.pool.UpstreamPool and shares its health and recovery tracking, its `forward(req) ->
DataRequest`, backpressure and timeout, `start`, `close` and `status`; only the link differs: each of
the `--upstream-connections` links is its own channel (and TCP connection) carrying one streaming
`jina.JinaRPC/Call`, with up to `max_inflight` requests in flight, answers matched by
`header.request_id` (unique across the pool; a Jina gateway keeps the client's id). `dry_run` asks the
gateway's `jina.JinaGatewayDryRunRPC/dry_run`.

Failure is handled as on the WebSocket links: when a stream ends (the Flow died: `grpc UNAVAILABLE`),
every request in flight on it is answered to its client with an error status naming the cause, the link
opens a new stream with backoff while the others keep serving, and while none is up requests are
answered at once with `upstream unavailable`. The relay rebuilds routes on the way back as for any
upstream (relay.upstream.pool.UpstreamBackend): its own `gateway` entry, then the upstream gateway's entry
renamed `upstream`, then the Flow's Executors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from relay.common.grpc_channel import (
    CALL,
    DRY_RUN,
    ENDPOINT_DISCOVERY,
    ChannelError,
    new_channel,
    rpc_details,
    wait_ready,
)
from relay.upstream.pool import (
    Done,
    LinkStats,
    UpstreamConfig,
    UpstreamError,
    UpstreamPool,
    _finish,
    _Recovering,
    upstream_error_status,
)
from relay.wire import proto_codec
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest, Status
from relay.wire.proto import jina_pb2

log = logging.getLogger("flowrelay.upstream")

SUBPROTOCOL = "grpc"  # what status() and describe() show for these links


class _GrpcLink(_Recovering):
    """One channel to the upstream gateway, one `Call` stream on it, and its requests in flight."""

    is_bytes = True  # ids travel in header.request_id, never in parameters

    def __init__(self, pool: GrpcUpstreamPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.cfg = pool.cfg
        self.channel: grpc.aio.Channel | None = None
        self.call: grpc.aio.StreamStreamCall | None = None
        self._outbox: asyncio.Queue[bytes | None] | None = None
        self.pending: dict[str, tuple[Done, float]] = {}
        self.connected = False
        self.stats = LinkStats()
        self._reader: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self.closing = False

    async def connect(self) -> None:
        cfg = self.cfg
        if self.channel is None:
            self.channel = new_channel(cfg.url, cfg.max_message_size)
        try:
            await wait_ready(self.channel, cfg.url, cfg.connect_timeout_s)
        except ChannelError as exc:
            raise UpstreamError(f"upstream {exc}") from None
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        call = self.channel.stream_stream(CALL)(_drain(outbox))  # raw DataRequestProto bytes both ways
        self._outbox, self.call = outbox, call
        self.connected = True
        self._reader = asyncio.create_task(self._read_loop(call))
        self.pool.link_up(self)  # type: ignore[arg-type]

    def send(self, rid: str, req: DataRequest, done: Done) -> None:
        self.pending[rid] = (done, time.monotonic() + self.cfg.request_timeout_s)
        self.stats.forwarded += 1
        assert self._outbox is not None
        # On a stream that has just ended the reader fails everything in flight, this one included.
        self._outbox.put_nowait(self.pool.codec.encode_request(req))

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        reason = "stream ended by the upstream"
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    code = await call.code()
                    if code != grpc.StatusCode.OK:
                        reason = f"grpc {code.name}: {await call.details()}"
                    break
                try:
                    resp = self.pool.decode_answer(message)  # type: ignore[arg-type]
                except WireError as err:
                    log.warning("upstream link %d: unreadable answer: %s", self.index, err)
                    continue
                entry = self.pending.pop(resp.request_id, None)
                if entry is not None:
                    self.stats.answered += 1
                    _finish(entry[0], resp, None)
                    self.pool.room_freed()
        except grpc.aio.AioRpcError as err:
            reason = rpc_details(err)
        except asyncio.CancelledError:
            reason = "link closed"
            raise
        except Exception as other:  # a broken link must not lose the requests in flight
            reason = f"{type(other).__name__}: {other}"
        finally:
            self.connected = False
            if self._outbox is not None:
                self._outbox.put_nowait(None)  # ends the request iterator of a stream that is over
            reason = f"upstream {self.cfg.url} {reason}"
            self._fail_all(reason)
            self.pool.link_down(self, reason)  # type: ignore[arg-type]
            if not self.closing:
                self._reconnector = asyncio.create_task(self._reconnect())

    async def close(self) -> None:
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.channel.close(grace=None), 2.0)


class GrpcUpstreamPool(UpstreamPool):
    """The gRPC links to one upstream Flow; forwarding, health and /status as UpstreamPool's."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        cfg.subprotocol = SUBPROTOCOL
        super().__init__(cfg)
        self.links = [_GrpcLink(self, i) for i in range(max(1, cfg.connections))]  # type: ignore[misc]

    async def _unary(self, method: str, timeout_s: float) -> bytes:
        """One unary call with an empty request (`google.protobuf.Empty`), on a channel of its own."""
        channel = new_channel(self.cfg.url, self.cfg.max_message_size)
        try:
            await wait_ready(channel, self.cfg.url, self.cfg.connect_timeout_s)
            return await channel.unary_unary(method)(b"", timeout=timeout_s)  # type: ignore[no-any-return]
        finally:
            await channel.close(grace=None)

    async def dry_run(self) -> Status:
        """Ask the upstream gateway's `dry_run` (a full pass through its Flow)."""
        try:
            frame = await self._unary(DRY_RUN, self.cfg.request_timeout_s)
        except (ChannelError, grpc.aio.AioRpcError) as exc:
            why = rpc_details(exc) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            return upstream_error_status(f"upstream {self.cfg.url} dry run failed: {why}", "UpstreamError")
        return proto_codec.from_status_proto(jina_pb2.StatusProto.FromString(frame))

    async def endpoint_discovery(self) -> list[str]:
        """The upstream gateway's endpoints; raises UpstreamError when it cannot tell."""
        try:
            frame = await self._unary(ENDPOINT_DISCOVERY, self.cfg.connect_timeout_s)
        except (ChannelError, grpc.aio.AioRpcError) as exc:
            why = rpc_details(exc) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            raise UpstreamError(f"upstream {self.cfg.url} endpoint discovery failed: {why}") from None
        return list(jina_pb2.EndpointsProto.FromString(frame).endpoints)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "protocol": "grpc"}


async def _drain(outbox: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    """The stream's requests as `send` queues them; None half-closes the stream."""
    while True:
        frame = await outbox.get()
        if frame is None:
            return
        yield frame
