"""gRPC plumbing shared by the load engine, the relay's gRPC upstream and its gRPC door.

Jina's method paths (jina.proto's services, as a 3.34 gateway serves them), the channel and server
options we use, the `grpc://HOST:PORT` URL rule, `wait_ready` / `open_ready_channel`: a channel that is READY, or
a `ChannelError` whose message says why not (connection refused, or a port that does not speak gRPC) as soon as
the first attempt fails, instead of the bare timeout `channel_ready()` gives; and `CallStream`, the one streaming
`Call` the load engine's gRPC sessions and the relay's gRPC upstream links each carry their requests on.

Messages cross as raw bytes (no serializer on either side): callers encode and decode with
relay.wire.proto_codec, so the load engine sends its pre-encoded frames untouched. Imports grpc and
relay.wire only; nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import grpc

CALL = "/jina.JinaRPC/Call"
PROCESS_SINGLE_DATA = "/jina.JinaSingleDataRequestRPC/process_single_data"
DRY_RUN = "/jina.JinaGatewayDryRunRPC/dry_run"
STATUS = "/jina.JinaInfoRPC/_status"
ENDPOINT_DISCOVERY = "/jina.JinaDiscoverEndpointsRPC/endpoint_discovery"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

GRPC_SCHEMES = ("grpc", "grpcs")


class ChannelError(Exception):
    """A gRPC target could not be reached; the message names the target and the cause."""


def parse_grpc_url(url: str) -> tuple[str, bool]:
    """`grpc://HOST:PORT` -> ("HOST:PORT", False); `grpcs://` -> (..., True) for TLS. Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in GRPC_SCHEMES or not parts.hostname or not parts.port:
        raise ValueError(f"{url!r}: expected grpc://HOST:PORT (or grpcs:// for TLS)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.scheme == "grpcs"


def channel_options(max_message_size: int | None = None) -> list[tuple[str, Any]]:
    """Options for a client channel of our own: no size limit by default (as Jina's clients), never a
    proxy (loopback stays loopback), and its own TCP connection: channels to one target otherwise share
    a connection, and `--connections N` would open one."""
    limit = max_message_size or -1
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.enable_http_proxy", 0),
        ("grpc.use_local_subchannel_pool", 1),
        # After a Flow restarts, be back within a couple of seconds (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def server_options(max_message_size: int | None = None) -> list[tuple[str, Any]]:
    """Options for the relay's gRPC door. Jina's clients ping every ~10 s even on idle channels; a
    server with gRPC's defaults would answer that with GOAWAY (too_many_pings), so pings are allowed."""
    limit = max_message_size or -1
    return [
        ("grpc.max_send_message_length", -1),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


def new_channel(url: str, max_message_size: int | None = None) -> grpc.aio.Channel:
    target, secure = parse_grpc_url(url)
    options = channel_options(max_message_size)
    if secure:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)


async def _why_not_ready(url: str) -> str:
    """A TCP probe tells a refused connection from a port that does not speak gRPC."""
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 2.0)
    except (OSError, TimeoutError) as exc:
        return str(exc) or type(exc).__name__
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return "the port accepts TCP but does not speak gRPC (HTTP/2)"


async def wait_ready(channel: grpc.aio.Channel, url: str, timeout_s: float) -> None:
    """Return once `channel` is READY; raise ChannelError when its first attempt fails or on timeout."""
    deadline = time.monotonic() + timeout_s
    failure = grpc.ChannelConnectivity.TRANSIENT_FAILURE
    # A channel already failing when we come (a reconnect) gets its next attempt; a fresh one fails at once.
    waiting_out = channel.get_state(try_to_connect=False) == failure
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state == failure and not waiting_out:
            raise ChannelError(f"{url}: {await _why_not_ready(url)}")
        if state == grpc.ChannelConnectivity.SHUTDOWN:
            raise ChannelError(f"{url}: channel closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelError(f"{url}: not ready within {timeout_s:g} s ({state.name.lower()})")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        waiting_out = False
        state = channel.get_state(try_to_connect=True)


async def open_ready_channel(url: str, timeout_s: float, max_message_size: int | None = None) -> grpc.aio.Channel:
    """A new channel to `url`, READY; closed again and ChannelError raised if it cannot get there."""
    channel = new_channel(url, max_message_size)
    try:
        await wait_ready(channel, url, timeout_s)
    except BaseException:
        await channel.close(grace=None)
        raise
    return channel


class CallStream:
    """One streaming `jina.JinaRPC/Call` on a channel, raw `DataRequestProto` bytes both ways.

    `put` queues a request; grpc.aio's own writer takes them one at a time (a call takes one write at a time), and
    when the server stops reading (its prefetch is full) HTTP/2 flow control holds that writer back while the queue
    waits, bounded by the caller's in-flight limit. `end` half-closes the stream (gRPC's end of stream), `call.read()`
    gives the answers, `call.cancel()` tears the stream down."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.call: grpc.aio.StreamStreamCall = channel.stream_stream(CALL)(self._requests())  # no serializers

    def put(self, frame: bytes) -> None:
        self._outbox.put_nowait(frame)

    def end(self) -> None:
        self._outbox.put_nowait(None)

    async def _requests(self) -> AsyncIterator[bytes]:
        outbox = self._outbox
        while True:
            frame = await outbox.get()
            if frame is None:
                return
            yield frame


def rpc_reason(exc: BaseException) -> str:
    """A short failure reason for counting: `grpc UNAVAILABLE`, `grpc DEADLINE_EXCEEDED`, ..."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc {exc.code().name}"
    return f"grpc transport: {type(exc).__name__}"


def rpc_details(exc: BaseException) -> str:
    """The reason with the server's details, for logs and error statuses a person reads."""
    if isinstance(exc, grpc.aio.AioRpcError):
        details = exc.details()
        return rpc_reason(exc) + (f": {details}" if details else "")
    return f"{rpc_reason(exc)}: {exc}"
