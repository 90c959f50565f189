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

from typing import Any

import anyio
import grpc

from relay.common.grpc_channel import (
    DRY_RUN,
    ENDPOINT_DISCOVERY,
    CallStream,
    ChannelError,
    new_channel,
    open_ready_channel,
    rpc_details,
)
from relay.common.grpc_channel import wait_ready as wait_channel_ready
from relay.common.link import LinkDown
from relay.upstream.link import LinkHost, UpstreamConfig, UpstreamError, UpstreamLink
from relay.upstream.pool import UpstreamPool, upstream_error_status
from relay.wire import proto_codec
from relay.wire.errors import WireError
from relay.wire.messages import Status
from relay.wire.proto import jina_pb2

SUBPROTOCOL = "grpc"  # what status() and describe() show for these links


class GrpcLink(UpstreamLink):
    """One channel to the upstream gateway, one `Call` stream on it, and its requests in flight. The stream is
    read by the link's `maintain` task (`_carry`)."""

    def __init__(self, pool: LinkHost, index: int) -> None:
        super().__init__(pool, index)
        self.channel: grpc.aio.Channel | None = None
        self._stream: CallStream | None = None
        self._reading: anyio.CancelScope | None = None

    async def _open(self) -> None:
        cfg = self.cfg
        if self.channel is None:
            self.channel = new_channel(cfg.url, cfg.max_message_size)
        try:
            await wait_channel_ready(self.channel, cfg.url, cfg.connect_timeout_s)
        except ChannelError as exc:
            raise LinkDown(f"upstream {exc}") from None
        self._stream = CallStream(self.channel)

    def _send_frame(self, frame: bytes) -> None:
        assert self._stream is not None
        self._stream.put(frame)

    async def _carry(self) -> None:
        """Read the stream's answers until it ends; then fail what is in flight with its status."""
        stream = self._stream
        assert stream is not None
        with anyio.CancelScope() as self._reading:
            reason = await self._read(stream.call)
            stream.end()  # ends the request iterator of a stream that is over
            self.connection_lost(f"upstream {self.cfg.url} {reason}")
        self._reading = None
        self.connected = False

    async def _read(self, call: grpc.aio.StreamStreamCall) -> str:
        decode = self.pool.decode_answer
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    code = await call.code()
                    if code != grpc.StatusCode.OK:
                        return f"grpc {code.name}: {await call.details()}"
                    return "stream ended by the upstream"
                try:
                    resp = decode(message)  # type: ignore[arg-type]
                except WireError as err:
                    self.logger.warning("%s: unreadable answer: %s", self, err)
                    continue
                self._answered(resp.request_id, resp)
        except grpc.aio.AioRpcError as err:
            return rpc_details(err)
        except Exception as other:  # a broken link must not lose the requests in flight
            return f"{type(other).__name__}: {other}"

    async def _close_connection(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._stream is not None:
            self._stream.end()
            self._stream.call.cancel()
        if self.channel is not None:
            channel, self.channel = self.channel, None
            await channel.close(grace=None)


class GrpcUpstreamPool(UpstreamPool):
    """The gRPC links to one upstream Flow; forwarding, health and /status as UpstreamPool's."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        cfg.subprotocol = SUBPROTOCOL
        super().__init__(cfg)

    def _new_link(self, index: int) -> UpstreamLink:
        return GrpcLink(self, index)

    async def _unary(self, method: str, timeout_s: float) -> bytes:
        """One unary call with an empty request (`google.protobuf.Empty`), on a channel of its own."""
        channel = await open_ready_channel(self.cfg.url, self.cfg.connect_timeout_s, self.cfg.max_message_size)
        try:
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
