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

Requests are treated as on the WebSocket door: the client's `request_id` is kept (one is made if it is
empty), a `gateway` route entry brackets the Flow's, `execEndpoint` defaults to `/`, `parameters` to
`{}`, documents without an id get one; the relay's counters and Prometheus metrics count them too.
With `--auth-token`, every method but the health check wants `authorization: Bearer TOKEN` metadata
(UNAUTHENTICATED otherwise). Messages are handled as raw bytes and coded by relay.wire.proto_codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from relay.common.grpc_channel import server_options
from relay.wire import proto_codec
from relay.wire.errors import WireError
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Route, Status, now_ns
from relay.wire.proto import jina_pb2

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger("flowrelay.grpc")

# What an Executor answers to endpoint discovery when it serves every endpoint, as the built-in ones do.
DEFAULT_ENDPOINTS = ("/default", "_jina_dry_run_")
HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}
HEALTH_NOT_SERVING = b"\x08\x02"


class GrpcDoor:
    """A grpc.aio server beside the relay's WebSocket server, over the same backend and counters."""

    def __init__(self, relay: RelayServer, port: int, host: str | None = None) -> None:
        self.relay = relay
        self.host = host or relay.config.host
        self.requested_port = port
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._streams: set[_Stream] = set()

    async def start(self) -> None:
        """Listen (after the relay's start, which starts the backend). Raises OSError if it cannot bind."""
        cfg = self.relay.config
        server = grpc.aio.server(options=server_options(cfg.max_message_size or None))
        raw = {"request_deserializer": None, "response_serializer": None}
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "jina.JinaRPC", {"Call": grpc.stream_stream_rpc_method_handler(self._call, **raw)}
                ),
                grpc.method_handlers_generic_handler(
                    "jina.JinaSingleDataRequestRPC",
                    {"process_single_data": grpc.unary_unary_rpc_method_handler(self._single, **raw)},
                ),
                grpc.method_handlers_generic_handler(
                    "jina.JinaGatewayDryRunRPC", {"dry_run": grpc.unary_unary_rpc_method_handler(self._dry_run, **raw)}
                ),
                grpc.method_handlers_generic_handler(
                    "jina.JinaInfoRPC", {"_status": grpc.unary_unary_rpc_method_handler(self._status, **raw)}
                ),
                grpc.method_handlers_generic_handler(
                    "jina.JinaDiscoverEndpointsRPC",
                    {"endpoint_discovery": grpc.unary_unary_rpc_method_handler(self._endpoints, **raw)},
                ),
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(self._health, **raw)}
                ),
            )
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

    def _authorized(self, context: grpc.aio.ServicerContext) -> bool:
        token = self.relay.config.auth_token
        if not token:
            return True
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return hmac.compare_digest(value[7:].strip(), token)
        return False

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if not self._authorized(context):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token: send 'authorization: Bearer TOKEN' metadata"
            )

    def admit(self, req: DataRequest, size: int) -> None:
        """Stamp a request as the WebSocket door does (bytes mode), and count it."""
        relay = self.relay
        if not req.request_id:
            req.request_id = relay.ids.next()
        req.routes = [Route(relay.config.name, now_ns())]
        if req.exec_endpoint is None:
            req.exec_endpoint = "/"
        if req.parameters is None:
            req.parameters = {}
        for doc in req.docs or ():
            if doc.id is None:
                doc.id = relay.ids.next()
        relay.stats.requests_total += 1
        relay.stats.in_flight += 1
        relay.observer.bytes_in(size)
        relay.observer.request_started(req.exec_endpoint)

    async def answer(self, req: DataRequest) -> bytes:
        """Run an admitted request through the backend; its encoded answer (never raises but on cancel)."""
        relay = self.relay
        try:
            await relay.chain.run(req)
        except asyncio.CancelledError:  # the client went away: the request no longer counts as in flight
            relay.stats.in_flight -= 1
            raise
        except Exception as exc:  # the client gets an error status, not a broken stream
            log.exception("request %s failed in the relay", req.request_id)
            text = f"{type(exc).__name__}: {exc}"
            req.status = Status(STATUS_ERROR, text, ExceptionInfo(type(exc).__name__, [text], executor="gateway"))
        gateway = req.routes[0]
        req.target_executor = ""
        gateway.end_ns = now_ns()
        payload = proto_codec.encode_response(req)
        stats = relay.stats
        stats.in_flight -= 1
        if req.is_error:
            stats.requests_failed += 1
        relay.observer.bytes_out(len(payload))
        relay.observer.request_finished(req, (gateway.end_ns - gateway.start_ns) / 1e9)  # type: ignore[operator]
        return payload

    async def _call(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await self._check(context)
        metadata = dict(context.invocation_metadata() or ())
        in_order = metadata.get("__results_in_order__") == "true"
        prefetch = _positive_int(metadata.get("__prefetch__")) or self.relay.config.prefetch
        stream = _Stream(self, in_order, prefetch)
        self._streams.add(stream)
        try:
            async for payload in stream.run(requests):
                yield payload
        finally:
            self._streams.discard(stream)
        if stream.abort is not None:
            await context.abort(*stream.abort)

    async def _single(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        try:
            req = proto_codec.decode(request)
        except WireError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.reason)
        self.admit(req, len(request))
        return await self.answer(req)

    async def _dry_run(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        status = await self.relay.chain.dry_run()
        pb = jina_pb2.StatusProto()
        if status.is_error:
            proto_codec.status_to_proto(status, pb)
        return pb.SerializeToString()

    async def _status(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await self._check(context)
        body = self.relay.status_body()
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
        primary = getattr(self.relay.chain, "primary", None)
        discover = getattr(primary, "endpoint_discovery", None)
        if discover is not None:
            from relay.upstream.pool import UpstreamError

            try:
                pb.endpoints.extend(await discover())
            except UpstreamError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        else:
            pb.endpoints.extend(DEFAULT_ENDPOINTS)
        return pb.SerializeToString()

    async def _health(self, _request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        primary = getattr(self.relay.chain, "primary", None)
        healthy = getattr(primary, "healthy", True)
        return HEALTH_SERVING if healthy else HEALTH_NOT_SERVING


class _Stream:
    """One `Call`: a reader that admits requests up to the prefetch, tasks that answer them, and the
    answers in the order they are ready (or in request order when asked)."""

    def __init__(self, door: GrpcDoor, in_order: bool, prefetch: int) -> None:
        self.door = door
        self.in_order = in_order
        self.prefetch = prefetch
        self.in_flight = 0
        self.abort: tuple[grpc.StatusCode, str] | None = None
        self._out: asyncio.Queue[bytes | asyncio.Task[bytes] | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False

    def shutdown(self) -> None:
        """Stop reading; what is in flight is still answered, then the stream ends."""
        self._stopping = True
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def run(self, requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        reader = self._reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                item = await self._out.get()
                if item is None:
                    return
                yield (await item) if isinstance(item, asyncio.Task) else item
        finally:
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        door = self.door
        chain = door.relay.chain
        try:
            async for frame in requests:
                if self.prefetch and self.in_flight >= self.prefetch:
                    # As a Jina gateway's prefetch: stop reading, HTTP/2 flow control pushes back.
                    self._room.clear()
                    await self._room.wait()
                try:
                    req = proto_codec.decode(frame)
                except WireError as err:
                    self.abort = (grpc.StatusCode.INVALID_ARGUMENT, err.reason)
                    break
                door.admit(req, len(frame))
                self.in_flight += 1
                self._idle.clear()
                if self.in_order or chain.is_async:
                    task = asyncio.create_task(door.answer(req))
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
                    if self.in_order:
                        self._out.put_nowait(task)  # awaited in turn by run()
                else:
                    self._out.put_nowait(await door.answer(req))
                    self._finished()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            self.abort = (grpc.StatusCode.UNAVAILABLE, "the relay is shutting down")
        except Exception as exc:  # the client went away mid-stream: nothing left to answer to
            log.debug("gRPC stream ended: %r", exc)
        await self._idle.wait()
        self._out.put_nowait(None)

    def _done(self, task: asyncio.Task[bytes]) -> None:
        """An answer is ready: out it goes (unless answers keep request order), then there is room."""
        self._tasks.discard(task)
        if not self.in_order and not task.cancelled() and task.exception() is None:
            self._out.put_nowait(task.result())
        self._finished()

    def _finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        if not self._room.is_set() and self.in_flight < self.prefetch:
            self._room.set()


def _positive_int(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return 0
    return max(n, 0)
