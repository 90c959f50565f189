"""The relay's WebSocket server: a gateway that Jina clients cannot tell from a Jina 3.x one.

It accepts WebSocket connections on `/` and `/dry_run` (other paths get 403 at the handshake, as a
Jina gateway does), negotiates `json` or `bytes` and, unlike Jina, echoes the chosen subprotocol. Each
connection reads requests while fewer than `prefetch` are in flight (reading stops, so TCP pushes back,
as a Jina gateway's prefetch does), runs them through the Executor chain, and streams each response as
soon as it is ready, out of order when Executors take different times.

Where a Jina gateway drops TCP on bad input (the client sees 1006 and loses everything in flight),
this one stops reading, answers what is in flight, then closes with a code and a reason: 1007 for
malformed payloads, 1003 for a frame of the wrong type, 1009 for an oversized message. End of stream
is answered the same way with 1000, a graceful stop with 1001.

Plain HTTP GETs on the same port answer `/` (`{}`), `/status` and `/dry_run`, as Jina's WebSocket
gateway does. I/O lives here; frames are turned into requests by relay.wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import platform
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from relay.executors import Chain

if TYPE_CHECKING:
    from relay.upstream import UpstreamBackend
from relay.wire import json_codec, proto_codec
from relay.wire.codecs import choose_subprotocol
from relay.wire.errors import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    FrameTooLarge,
    WireError,
    WrongFrameType,
)
from relay.wire.messages import DataRequest, EndOfStream, Route, now_ns
from relay.wire.proto import jina_pb2

log = logging.getLogger("flowrelay.relay")

DEFAULT_PORT = 12345
DEFAULT_PREFETCH = 1000
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# Messages between max_message_size and this multiple of it are read and then refused politely
# (in-flight requests answered first); beyond it the transport refuses at once to protect memory.
TRANSPORT_SIZE_FACTOR = 4
WS_PATHS = ("/", "/dry_run")


@dataclass
class RelayConfig:
    """What `flowrelay serve` is told. Every limit is explicit, with the default a user gets."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    prefetch: int = DEFAULT_PREFETCH
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    drain_timeout_s: float = 10.0
    compression: bool = False
    ping_interval_s: float | None = 20.0
    name: str = "gateway"
    max_connections: int = 0  # 0: no limit
    handshake_timeout_s: float = 10.0
    auth_token: str | None = None
    allowed_origins: tuple[str, ...] = ()  # empty: any origin
    certfile: str | None = None
    keyfile: str | None = None


@dataclass
class RelayStats:
    """Counters a person or /status can read; the metrics module exports the same events."""

    started_at: float = field(default_factory=time.time)
    connections_open: int = 0
    connections_total: int = 0
    requests_total: int = 0
    requests_failed: int = 0
    in_flight: int = 0
    closes_sent: dict[int, int] = field(default_factory=dict)


class Observer:
    """Hooks the server calls on each event; the Prometheus exporter implements them."""

    def connection_opened(self, subprotocol: str) -> None: ...
    def connection_closed(self, subprotocol: str, code_sent: int | None, code_received: int | None) -> None: ...
    def request_started(self, endpoint: str) -> None: ...
    def request_finished(self, req: DataRequest, duration_s: float) -> None: ...
    def bytes_in(self, n: int) -> None: ...
    def bytes_out(self, n: int) -> None: ...


class RelayServer:
    """One relay: a chain of Executors behind a WebSocket gateway."""

    def __init__(self, config: RelayConfig, chain: Chain | UpstreamBackend, observer: Observer | None = None) -> None:
        self.config = config
        # The embedded Executors, or the link to a real upstream Flow: both run a request in place.
        self.chain = chain
        self.stats = RelayStats()
        self.observer = observer or Observer()
        self._server: Server | None = None
        self._stopping = asyncio.Event()
        self._connections: set[_Connection] = set()
        self.ids = IdSource()
        self.port = config.port
        self.extra_http: dict[str, Callable[[], tuple[int, str, bytes]]] = {}

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        backend_start = getattr(self.chain, "start", None)
        if backend_start is not None:
            await backend_start()
        ssl_context = None
        if cfg.certfile:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(cfg.certfile, cfg.keyfile)
        self._server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            ssl=ssl_context,
            open_timeout=cfg.handshake_timeout_s,
            process_request=self._process_request,
            select_subprotocol=lambda conn, offered: choose_subprotocol(offered),
            compression="deflate" if cfg.compression else None,
            max_size=cfg.max_message_size * TRANSPORT_SIZE_FACTOR if cfg.max_message_size else None,
            ping_interval=cfg.ping_interval_s,
            server_header=f"flowrelay Python/{sys.version_info.major}.{sys.version_info.minor}",
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        log.info(
            "relay listening on ws://%s:%d/ with %s",
            cfg.host,
            self.port,
            self.chain.describe(),
        )

    async def stop(self) -> None:
        """Stop accepting, let every connection answer what it has in flight (bounded), close 1001."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.close(close_connections=False)
        for conn in list(self._connections):
            conn.begin_shutdown()
        pending = [c.done for c in self._connections]
        if pending:
            await asyncio.wait(pending, timeout=self.config.drain_timeout_s + 1.0)
        self._server.close(close_connections=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5.0)
        backend_close = getattr(self.chain, "close", None)
        if backend_close is not None:
            await backend_close()

    async def serve_until(self, stop: asyncio.Event) -> None:
        await self.start()
        await stop.wait()
        await self.stop()

    # ---- plain HTTP ----------------------------------------------------------------------------

    def _json_response(self, conn: ServerConnection, status: int, body: Any) -> Response:
        payload = orjson.dumps(body)
        headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return Response(status, HTTPStatus(status).phrase, headers, payload)

    def status_body(self) -> dict[str, Any]:
        s = self.stats
        return {
            "jina": {
                "flowrelay": _version(),
                "python": platform.python_version(),
                "platform": platform.system(),
                "architecture": platform.machine(),
                "uptime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s.started_at)),
                "executors": ",".join(e.name for e in self.chain.executors),
                "prefetch": str(self.config.prefetch),
            },
            "envs": {"connections_open": str(s.connections_open), "requests_total": str(s.requests_total)},
            **(self.chain.status() if hasattr(self.chain, "status") else {}),
        }

    def _authorized(self, request: Request) -> bool:
        token = self.config.auth_token
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        # Browsers cannot set headers on a WebSocket handshake: accept the token as a query parameter too.
        query = parse_qs(urlsplit(request.path).query)
        return any(hmac.compare_digest(t, token) for t in query.get("token", []))

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        cfg = self.config
        if path == "/" and not upgrade:
            return self._json_response(conn, 200, {})  # health check: always open
        if not self._authorized(request):
            response = self._json_response(
                conn, 401, {"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"}
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if upgrade:
            origin = request.headers.get("Origin")
            if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
                return self._json_response(conn, 403, {"detail": f"origin {origin!r} is not allowed"})
            if path not in WS_PATHS:
                return Response(
                    403, "Forbidden", Headers([("Content-Length", "0"), ("Content-Type", "text/plain")]), b""
                )
            if self._stopping.is_set():
                return self._json_response(conn, 503, {"detail": "the relay is shutting down"})
            # Connections past their handshake; handshakes still in progress are not counted, so a burst
            # of simultaneous handshakes can pass the limit by that many.
            if (
                cfg.max_connections
                and self._server is not None
                and (len(self._server.all_connections) >= cfg.max_connections)
            ):
                return self._json_response(
                    conn, 503, {"detail": f"connection limit reached ({cfg.max_connections}); try again later"}
                )
            return None
        if path == "/status":
            return self._json_response(conn, 200, self.status_body())
        if path == "/dry_run":
            # As Jina's HTTP dry run: 200 either way, the status in the body.
            status = await self.chain.dry_run()
            body = json_codec.status_dict(status)
            return self._json_response(
                conn, 200, {"code": status.code, "description": status.description, "exception": body.get("exception")}
            )
        extra = self.extra_http.get(path)
        if extra is not None:
            status, content_type, body = extra()
            headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
            return Response(status, HTTPStatus(status).phrase, headers, body)
        return self._json_response(conn, 404, {"detail": "Not Found"})

    # ---- WebSocket -----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        mode = ws.subprotocol or "json"
        path = ws.request.path.split("?", 1)[0] if ws.request else "/"
        if path == "/dry_run":
            await self._dry_run(ws, mode)
            return
        conn = _Connection(self, ws, mode)
        self._connections.add(conn)
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        self.observer.connection_opened(mode)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self.stats.connections_open -= 1
            close_rcvd = ws.protocol.close_rcvd
            code_received = close_rcvd.code if close_rcvd else None
            self.observer.connection_closed(mode, conn.close_code_sent, code_received)
            if conn.close_code_sent is not None:
                self.stats.closes_sent[conn.close_code_sent] = self.stats.closes_sent.get(conn.close_code_sent, 0) + 1

    async def _dry_run(self, ws: ServerConnection, mode: str) -> None:
        """Push an empty request through the whole Flow, answer its status, close 1000."""
        status = await self.chain.dry_run()
        try:
            if mode == "bytes":
                pb = jina_pb2.StatusProto()
                if status.is_error:
                    proto_codec.status_to_proto(status, pb)
                await ws.send(pb.SerializeToString())
            else:
                await ws.send(orjson.dumps(json_codec.status_dict(status)), text=True)
            await ws.close(CLOSE_NORMAL)
        except ConnectionClosed:
            pass


class IdSource:
    """Request and document ids of the same shape as a Jina gateway's (32 hex characters, like
    uuid4().hex): a random per-process prefix and a counter, at a fifth of uuid4's cost."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flowrelay")
    except Exception:
        return "dev"


class _Connection:
    """One client connection: a reader that admits requests, tasks that answer them, one close."""

    def __init__(self, server: RelayServer, ws: ServerConnection, mode: str) -> None:
        self.server = server
        self.ws = ws
        self.mode = mode
        self.is_bytes = mode == "bytes"
        self.codec = proto_codec if self.is_bytes else json_codec
        self.chain = server.chain
        self.config = server.config
        self.in_flight = 0
        self.prefetch = self.config.prefetch
        # Set while there is room for one more request in flight; reading waits on it.
        self._room = asyncio.Event()
        self._room.set()
        self._ids = server.ids
        self._idle = asyncio.Event()
        self._idle.set()
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[tuple[int, str]] | None = None
        self.close_code_sent: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def begin_shutdown(self) -> None:
        """Stop reading (the reader is cancelled safely between messages); run() then drains."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def run(self) -> None:
        try:
            self._reader = asyncio.create_task(self._read_loop())
            try:
                code, reason = await self._reader
            except asyncio.CancelledError:
                if self.server._stopping.is_set():
                    code, reason = CLOSE_GOING_AWAY, "the relay is shutting down"
                else:
                    raise
            await self._drain(self.config.drain_timeout_s if code == CLOSE_GOING_AWAY else None)
            if code and self.ws.protocol.close_rcvd is None:
                self.close_code_sent = code
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.close(code, reason)
        finally:
            for t in self._tasks:
                t.cancel()
            if not self.done.done():
                self.done.set_result(None)

    async def _drain(self, timeout: float | None) -> None:
        if self.in_flight == 0:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("gave up waiting for %d requests in flight", self.in_flight)

    async def _read_loop(self) -> tuple[int, str]:
        """Admit requests until end of stream, bad input, or the client leaving.
        Returns the close code and reason to send once everything in flight is answered."""
        ws = self.ws
        prefetch = self.prefetch
        room = self._room
        limit = self.config.max_message_size
        is_bytes = self.is_bytes
        decode = self.codec.decode_request
        chain = self.chain
        observer = self.server.observer
        stats = self.server.stats
        while True:
            if prefetch and self.in_flight >= prefetch:
                # As a Jina gateway's prefetch: stop reading, so that TCP pushes back on the client.
                room.clear()
                await room.wait()
            try:
                message = await ws.recv()
            except ConnectionClosed:
                return 0, ""
            if ws.protocol.state is not State.OPEN:
                # The client closed or dropped the connection: websockets still hands out what it had read
                # ahead (up to a whole TCP read of requests), but no answer can reach the client any more.
                return 0, ""
            try:
                if is_bytes != isinstance(message, bytes):
                    raise WrongFrameType(
                        f"{'text' if is_bytes else 'binary'} frame on a {self.mode} connection; "
                        f"send {'binary' if is_bytes else 'text'} frames"
                    )
                size = len(message)
                if limit and size > limit // 4 and not is_bytes:
                    # The limit is in bytes and a text message arrives decoded: up to 4 bytes a character.
                    size = len(message.encode())  # type: ignore[union-attr]
                if limit and size > limit:
                    raise FrameTooLarge(f"message of {size} bytes exceeds the limit of {limit}")
                observer.bytes_in(size)
                req = decode(message)
            except WireError as err:
                log.info("closing %s connection: %s", self.mode, err.reason)
                return err.close_code, err.reason
            if isinstance(req, EndOfStream):
                return CLOSE_NORMAL, ""
            self._admit(req)
            stats.requests_total += 1
            stats.in_flight += 1
            self.in_flight += 1
            self._idle.clear()
            observer.request_started(req.exec_endpoint or "/")
            if chain.is_async:
                task = asyncio.create_task(self._answer_async(req))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                chain.run_sync(req)
                await self._send(req)

    def _admit(self, req: DataRequest) -> None:
        ids = self._ids
        if not self.is_bytes:
            # A json client cannot choose the id: the gateway makes one, as Jina does.
            req.request_id = ids.next()
        # Route entries a client sent are dropped, as a Jina gateway drops the ones it did not write.
        req.routes = []
        req.routes.append(Route(self.config.name, now_ns()))
        if req.exec_endpoint is None:
            req.exec_endpoint = "/"
        if req.parameters is None:
            # A Jina gateway always answers with `parameters`, empty if none were sent (`12 00` in bytes).
            req.parameters = {}
        for doc in req.docs or ():
            if doc.id is None:
                doc.id = ids.next()

    async def _answer_async(self, req: DataRequest) -> None:
        await self.chain.run(req)
        # One answer at a time is encoded and written: a client that does not read then holds at most one
        # encoded frame beyond websockets' write buffer, not one per request in flight (a slow reader with
        # 1000 answers of 256 KiB in flight measured +770 MB before this).
        async with self._send_lock:
            await self._send(req)

    async def _send(self, req: DataRequest) -> None:
        gateway = req.routes[0]
        req.target_executor = ""
        if self.is_bytes and req.docs:
            _mark_numpy(req)
        gateway.end_ns = now_ns()
        try:
            payload = self.codec.encode_response(req)
            await self.ws.send(payload, text=not self.is_bytes)
            self.server.observer.bytes_out(len(payload))
        except ConnectionClosed:
            pass  # the client left; the request still ran, as on a Jina gateway
        finally:
            stats = self.server.stats
            stats.in_flight -= 1
            if req.is_error:
                stats.requests_failed += 1
            self.server.observer.request_finished(req, (gateway.end_ns - gateway.start_ns) / 1e9)  # type: ignore[operator]
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            if not self._room.is_set() and self.in_flight < self.prefetch:
                self._room.set()


def install_uvloop() -> bool:
    """Use uvloop when it is installed and not disabled with FLOWRELAY_NO_UVLOOP=1."""
    if os.environ.get("FLOWRELAY_NO_UVLOOP"):
        return False
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def _mark_numpy(req: DataRequest) -> None:
    """Mark top-level arrays as numpy, as Jina 3.15+ gateways do before sending in bytes mode: jina's own
    client reads an array without a `cls_name` as None."""
    for doc in req.docs or ():
        for arr in (doc.embedding, doc.tensor):
            if arr is not None and not arr.cls_name:
                arr.cls_name = "numpy"
