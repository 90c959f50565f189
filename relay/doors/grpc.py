"""The relay's gRPC door: `flowrelay serve --grpc-port P` serves Jina's gRPC gateway services.

What a jina 3.34 gRPC gateway offers its clients, over the same backend as the WebSocket door (the
built-in Executor chain, or the link to an upstream Flow), so jina's own `Client(protocol='grpc')` and
`flowrelay load grpc://` work against the relay:

* `jina.JinaRPC/Call`: a bidirectional stream of `DataRequestProto`. Requests are admitted while fewer
  than the prefetch (`--prefetch`, or the client's `__prefetch__` metadata) are in flight; past it the
  door stops reading and HTTP/2 flow control pushes back on the client. Answers go out as soon as they
  are ready, out of order, unless the client asks `__results_in_order__: true` (jina's
  `results_in_order=True`). A request that is not a DataRequestProto ends the stream with
  INVALID_ARGUMENT once everything before it is answered.
* `jina.JinaSingleDataRequestRPC/process_single_data`: one request, one answer (jina's `stream=False`).
* `jina.JinaGatewayDryRunRPC/dry_run`, `jina.JinaInfoRPC/_status`,
  `jina.JinaDiscoverEndpointsRPC/endpoint_discovery`, and the standard `grpc.health.v1.Health/Check`
  (SERVING, or NOT_SERVING while an upstream is unreachable).

Requests go through the gateway's lifecycle (relay.gateway) as on every door: the client's `request_id` is
kept (one is made if it is empty), a `gateway` route entry brackets the Flow's, `execEndpoint` defaults to `/`,
`parameters` to `{}`, documents without an id get one; the relay's counters and Prometheus metrics count them
too. With `--auth-token`, every method but the health check wants `authorization: Bearer TOKEN` metadata
(UNAUTHENTICATED otherwise). Messages are handled as raw bytes and coded by relay.wire.proto_codec.

A `Call` is a reader task and the handler itself as the writer, joined by a bounded anyio memory object stream
of encoded answers: the reader admits a request, the backend's callback encodes its answer into the stream,
the writer sends what arrives. The window of `prefetch` requests is a semaphore taken per request read and
given back per answer written, so the stream never holds more than `prefetch` answers. The stream ends when
the reader and every answer still owed have closed their ends of it.

Imports: anyio, grpc, relay.backend, relay.common.grpc_channel, relay.gateway and relay.wire.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import grpc
from anyio.streams.memory import MemoryObjectSendStream

from relay.backend import BackendUnavailable, Respond
from relay.common.grpc_channel import server_options
from relay.gateway import Gateway
from relay.observer import DOOR_GRPC
from relay.wire import proto_codec
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest
from relay.wire.proto import jina_pb2

log = logging.getLogger("flowrelay.grpc")

HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}
HEALTH_NOT_SERVING = b"\x08\x02"
UNAUTHENTICATED_DETAIL = "missing or wrong token: send 'authorization: Bearer TOKEN' metadata"


class GrpcDoor:
    """A grpc.aio server beside the relay's port, over the same gateway."""

    def __init__(self, gateway: Gateway, port: int, host: str | None = None) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.host = host or self.config.host
        self.requested_port = port
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._streams: set[_Stream] = set()

    async def start(self) -> None:
        """Listen (the relay starts it after the gateway). Raises OSError if it cannot bind."""
        cfg = self.config
        server = grpc.aio.server(options=server_options(cfg.max_message_size or None))
        raw = {"request_deserializer": None, "response_serializer": None}
        unary = grpc.unary_unary_rpc_method_handler
        services = {
            "jina.JinaRPC": {"Call": grpc.stream_stream_rpc_method_handler(self._call, **raw)},
            "jina.JinaSingleDataRequestRPC": {"process_single_data": unary(self._single, **raw)},
            "jina.JinaGatewayDryRunRPC": {"dry_run": unary(self._dry_run, **raw)},
            "jina.JinaInfoRPC": {"_status": unary(self._status, **raw)},
            "jina.JinaDiscoverEndpointsRPC": {"endpoint_discovery": unary(self._endpoints, **raw)},
            "grpc.health.v1.Health": {"Check": unary(self._health, **raw)},
        }
        server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items())
        )
        address = f"{self.host}:{self.requested_port}"
        try:
            if cfg.certfile:
                with open(cfg.certfile, "rb") as fh:
                    chain = fh.read()
                with open(cfg.keyfile or cfg.certfile, "rb") as fh:
                    key = fh.read()
                self.port = server.add_secure_port(address, grpc.ssl_server_credentials(((key, chain),)))
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc reports a failed bind this way
            raise OSError(f"gRPC door cannot bind {address}: {exc}") from None
        await server.start()
        self._server = server
        log.info("gRPC door listening on %s:%d", self.host, self.port)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls; streams stop reading, answer what they have in flight and end with
        UNAVAILABLE ("shutting down"); whatever is still running after `grace_s` is cancelled."""
        if self._server is not None:
            for stream in list(self._streams):
                stream.shutdown()
            await self._server.stop(grace_s)
            self._server = None

    # ---- requests ------------------------------------------------------------------------------

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        authorization = next(
            (v for k, v in context.invocation_metadata() or () if k == "authorization" and isinstance(v, str)), None
        )
        if not self.gateway.authorized(authorization):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAIL)

    async def _call(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await self._check(context)
        metadata = dict(context.invocation_metadata() or ())
        in_order = metadata.get("__results_in_order__") == "true"
        prefetch = _positive_int(metadata.get("__prefetch__")) or self.config.prefetch
        stream = _Stream(self.gateway, in_order, prefetch)
        self._streams.add(stream)
        try:
            await stream.run(requests, context.write)
        finally:
            self._streams.discard(stream)
            if stream.capture is not None:
                stream.capture.closed()
        if stream.abort is not None:
            await context.abort(*stream.abort)

    async def _single(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        try:
            req = proto_codec.decode(request)
        except WireError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.reason)
        gateway = self.gateway
        # `--record`: a single call is a connection of its own (relay.capture.tap).
        capture = gateway.capture_connection(DOOR_GRPC, "bytes", proto_codec.encode_response)
        req.answer_subprotocol = proto_codec.SUBPROTOCOL  # answered as a DataRequestProto
        gateway.admit(req, len(request), True, capture, request)
        try:
            payload = await gateway.call(req, proto_codec.encode_response, DOOR_GRPC, capture)
        finally:
            if capture is not None:
                capture.closed()
        if payload is None:
            await context.abort(grpc.StatusCode.INTERNAL, "the answer could not be encoded")
        return payload  # type: ignore[return-value]

    async def _dry_run(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        return proto_codec.encode_status(await self.gateway.dry_run())

    async def _status(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        body = self.gateway.status()
        pb = jina_pb2.JinaInfoProto()
        for key, value in body.get("jina", {}).items():
            pb.jina[key] = str(value)
        for key, value in body.get("envs", {}).items():
            pb.envs[key] = str(value)
        pb.envs["grpc_door"] = "on"
        return pb.SerializeToString()

    async def _endpoints(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        pb = jina_pb2.EndpointsProto()
        try:
            pb.endpoints.extend(await self.gateway.endpoints())
        except BackendUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.SerializeToString()

    async def _health(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return HEALTH_SERVING if self.gateway.backend.healthy else HEALTH_NOT_SERVING


class _Slot:
    """An answer owed, in request order (`__results_in_order__`): its end of the stream, and the answer once
    it is ready."""

    __slots__ = ("answer", "out", "ready")

    def __init__(self, out: MemoryObjectSendStream[bytes]) -> None:
        self.out = out
        self.answer: bytes | None = None
        self.ready = False


class _Stream:
    """One `Call`: a reader that admits requests up to the prefetch, and the answers written as they come (or in
    request order when asked)."""

    def __init__(self, gateway: Gateway, in_order: bool, prefetch: int) -> None:
        self.gateway = gateway
        self.in_order = in_order
        self.prefetch = prefetch
        self.abort: tuple[grpc.StatusCode, str] | None = None
        self._reading: anyio.CancelScope | None = None
        self._stopping = False
        self._window: anyio.Semaphore | None = None
        self._owed: collections.deque[_Slot] = collections.deque()
        # `--record`: the stream is one recorded connection, when sampling picked it (relay.capture.tap).
        self.capture = gateway.capture_connection(DOOR_GRPC, "bytes", proto_codec.encode_response)

    def shutdown(self) -> None:
        """Stop reading; what is in flight is still answered, then the stream ends (UNAVAILABLE)."""
        self._stopping = True
        if self._reading is not None:
            self._reading.cancel()

    async def run(self, requests: AsyncIterator[bytes], write: Callable[[bytes], Awaitable[Any]]) -> None:
        """Read `requests`, `write` their answers; returns once every request read is answered."""
        if self.prefetch:
            self._window = anyio.Semaphore(self.prefetch)
        # At most `prefetch` answers are unwritten at any time (the window), so the buffer never fills.
        out, answers = anyio.create_memory_object_stream[bytes](max_buffer_size=self.prefetch or math.inf)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._read, requests, out)
            async with answers:
                async for payload in answers:
                    try:
                        await write(payload)
                    except Exception as exc:  # the client went away: nothing more to read or write
                        log.debug("gRPC stream ended: %r", exc)
                        tasks.cancel_scope.cancel()
                        return
                    if self._window is not None:
                        self._window.release()

    async def _read(self, requests: AsyncIterator[bytes], out: MemoryObjectSendStream[bytes]) -> None:
        gateway = self.gateway
        window = self._window
        with out, anyio.CancelScope() as reading:
            self._reading = reading
            if self._stopping:
                reading.cancel()
            try:
                async for frame in requests:
                    if window is not None:
                        # As a Jina gateway's prefetch: stop reading, HTTP/2 flow control pushes back.
                        await window.acquire()
                    try:
                        req = proto_codec.decode(frame)
                    except WireError as err:
                        self.abort = (grpc.StatusCode.INVALID_ARGUMENT, err.reason)
                        break
                    req.answer_subprotocol = proto_codec.SUBPROTOCOL  # answered as a DataRequestProto
                    gateway.admit(req, len(frame), True, self.capture, frame)
                    gateway.run(req, self._answer_to(out.clone()))
            except Exception as exc:  # the client went away mid-stream: nothing left to answer to
                log.debug("gRPC stream ended: %r", exc)
        if reading.cancelled_caught:
            self.abort = (grpc.StatusCode.UNAVAILABLE, "the relay is shutting down")

    def _answer_to(self, out: MemoryObjectSendStream[bytes]) -> Respond:
        """The callback that puts one request's answer into the stream (through its own end of it)."""
        finish = self.gateway.finish
        capture = self.capture
        if not self.in_order:

            def respond(req: DataRequest) -> None:
                self._send(out, finish(req, proto_codec.encode_response, DOOR_GRPC, capture))

            return respond
        slot = _Slot(out)
        self._owed.append(slot)

        def respond_in_order(req: DataRequest) -> None:
            slot.answer = finish(req, proto_codec.encode_response, DOOR_GRPC, capture)
            slot.ready = True
            owed = self._owed
            while owed and owed[0].ready:
                first = owed.popleft()
                self._send(first.out, first.answer)

        return respond_in_order

    def _send(self, out: MemoryObjectSendStream[bytes], answer: bytes | None) -> None:
        with out:
            if answer is None:  # not even an error answer could be encoded (logged): its place in the window is free
                if self._window is not None:
                    self._window.release()
                return
            # When the stream is over (the client left), the answer has nowhere to go.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                out.send_nowait(answer)


def _positive_int(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return 0
    return max(n, 0)
