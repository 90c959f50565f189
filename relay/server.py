"""The relay's lifetime: one port, its listener and doors over one gateway, from start to a graceful stop.

A `RelayServer` runs in a task group (`serve`): the gateway (and with it the backend: the Executors' tasks or the
upstream links' upkeep), the accept loop (relay.net), the keepalive pings, the gc freezer and the gRPC door when
there is one. Each accepted connection is the listener's (relay.net.listener): WebSocket handshakes on `/` and
`/dry_run` are checked here (token, origin, path, limits; other paths get 403, as a Jina gateway answers, and
unlike Jina the chosen subprotocol is echoed) and handed to the WebSocket door; plain HTTP goes to the HTTP door.

`stop()` (or cancelling `serve`) stops accepting and lets every connection answer what it has in flight, bounded
by the drain timeout, before closing 1001; then the background tasks are cancelled. A background task that fails
stops the relay the same way and raises out of `serve` as `TaskFailed`, naming the task: never silently.

The server knows the doors; the doors know only the gateway (relay.gateway), never the server. The CLI wires
the pieces (flowrelay.cli.serve).

Imports: anyio, the standard library, relay.config, relay.doors, relay.gateway, relay.common.gc_freeze, relay.net,
relay.observer and relay.wire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from relay.common.gc_freeze import freeze_long_lived, safe_to_freeze
from relay.common.loop import watched
from relay.config import RelayConfig
from relay.doors.http import HttpDoor, unauthorized
from relay.doors.websocket import DRY_RUN_PATH, WebSocketDoor
from relay.gateway import Gateway
from relay.net.acceptor import Acceptor, open_listeners
from relay.net.http_types import HttpRequest, HttpResponse
from relay.net.listener import CLOSE_TIMEOUT_S, MessageSink, RelayProtocol, WebSocketSession
from relay.observer import REFUSED_FD_LIMIT, REFUSED_MAX_CONNECTIONS
from relay.wire.codecs import choose_subprotocol
from relay.wire.errors import CLOSE_INTERNAL_ERROR

if TYPE_CHECKING:
    from relay.doors.grpc import GrpcDoor  # imports grpc: only where a gRPC door is asked for

log = logging.getLogger("flowrelay.relay")

WS_PATHS = ("/", DRY_RUN_PATH)
# Pings are sent in batches of this many sessions, spread over the interval.
PING_BATCH = 100


class RelayServer:
    """One relay: a gateway (over a chain of Executors or an upstream Flow) behind its doors on one port."""

    def __init__(self, config: RelayConfig, gateway: Gateway, websocket: WebSocketDoor, http: HttpDoor,
                 grpc: GrpcDoor | None = None, services: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
                 ) -> None:
        self.config = config
        self.gateway = gateway
        self.websocket = websocket
        self.http = http
        self.grpc = grpc
        # Other tasks that live as long as the relay (the dashboard's sampling), by name: supervised like the rest.
        self.services = dict(services or {})
        self.port = config.port
        self._acceptor: Acceptor | None = None
        self._stopping = False
        self._stop_asked = False
        self._stop: anyio.Event | None = None
        self._transports: set[RelayProtocol] = set()
        # What the listener reads (ListenerHost).
        self.server_header = f"flowrelay Python/{sys.version_info.major}.{sys.version_info.minor}"
        self.max_message_size = config.max_message_size
        self.handshake_timeout_s = config.handshake_timeout_s
        self.compression = config.compression

    @property
    def connections(self) -> frozenset[RelayProtocol]:
        """The TCP connections open now (HTTP and WebSocket alike)."""
        return frozenset(self._transports)

    # ---- lifetime ------------------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, report started, and serve until `stop()` or cancellation; then stop gracefully. Raises
        OSError when a port cannot be bound, TaskFailed (in an exception group) when a background task fails."""
        cfg = self.config
        self._stop = anyio.Event()
        if self._stop_asked:
            self._stop.set()
        ssl_context = None
        if cfg.certfile:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(cfg.certfile, cfg.keyfile)
        _raise_fd_limit()
        _check_fd_budget(cfg.max_connections)
        async with anyio.create_task_group() as tasks:
            await tasks.start(functools.partial(watched, "the relay's backend", self.gateway.serve, forever=True))
            try:
                self._listen(ssl_context)
                if self.grpc is not None:
                    await self.grpc.start()
                # Each lasts as long as the relay: its failure, or its ending, named, is the relay's (TaskFailed).
                lasting: dict[str, Callable[[], Awaitable[Any]]] = {}
                if cfg.ping_interval_s:
                    lasting["keepalive"] = functools.partial(self._keepalive, cfg.ping_interval_s)
                if cfg.gc_freeze and safe_to_freeze(asyncio.get_running_loop()):
                    opened = self.gateway.stats
                    lasting["gc freezer"] = functools.partial(freeze_long_lived, lambda: opened.connections_total)
                lasting.update(self.services)
                for name, fn in lasting.items():
                    tasks.start_soon(functools.partial(watched, f"the relay's {name}", fn, forever=True), name=name)
                log.info("relay listening on %s://%s:%d/ with %s", "wss" if ssl_context else "ws", cfg.host,
                         self.port, self.gateway.backend.describe())
                task_status.started()
                await self._stop.wait()
            finally:
                # Also when a background task failed, or a port could not be bound: what started is stopped.
                with anyio.CancelScope(shield=True):
                    await self._drain()
                tasks.cancel_scope.cancel()

    def _listen(self, ssl_context: ssl.SSLContext | None) -> None:
        cfg = self.config
        # The default backlog of 100 overflowed when thousands of clients connected at once (SYN retries of a
        # second and more); the kernel caps this at net.core.somaxconn anyway. The relay accepts by itself
        # (relay.net.acceptor) so that a client past the file-descriptor limit is refused, logged and counted.
        sockets = open_listeners(cfg.host, cfg.port, backlog=4096)
        self._acceptor = Acceptor(sockets, lambda: RelayProtocol(self), ssl_context, self._refused_at_accept)
        self._acceptor.start()
        self.port = sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Begin the graceful stop (also before `serve` has started); `serve` returns once it is done."""
        self._stop_asked = True
        if self._stop is not None:
            self._stop.set()

    async def _drain(self) -> None:
        """Stop accepting, let every connection answer what it has in flight (bounded), close 1001."""
        self._stopping = True
        if self._acceptor is not None:
            self._acceptor.close()
        async with anyio.create_task_group() as doors:
            if self.grpc is not None:
                doors.start_soon(self.grpc.stop, self.config.drain_timeout_s)
            doors.start_soon(self._drain_websockets)
        for proto in list(self._transports):
            if proto.transport is not None:
                proto.transport.close()

    async def _drain_websockets(self) -> None:
        door = self.websocket
        door.begin_shutdown()
        # A drain bound of seconds that ends a millisecond early (the loop's timers) changes nothing a client reads.
        with anyio.move_on_after(self.config.drain_timeout_s):
            await door.wait_closed()
        door.give_up()
        with anyio.move_on_after(CLOSE_TIMEOUT_S):
            await door.wait_closed()

    async def _keepalive(self, interval_s: float) -> None:
        """Keepalive, as uvicorn under a Jina gateway does: a ping every interval; a connection that did not
        answer the previous one is closed 1011."""
        while True:
            # The pings of one interval are spread over it in batches: pinging 10,000 sessions in one loop
            # turn held every answer of that second back (p99 of ~1 s at 10,000 sessions).
            protos = list(self._transports)
            batches = max(1, (len(protos) + PING_BATCH - 1) // PING_BATCH)
            for start in range(0, max(len(protos), 1), PING_BATCH):
                # Early by a millisecond at most (the loop's timers): a ping interval needs no better.
                await anyio.sleep(interval_s / batches)
                for proto in protos[start : start + PING_BATCH]:
                    session = proto.session
                    if session is None or not session.is_open:
                        continue
                    if not proto.last_pong_seen:
                        session.close(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
                        continue
                    proto.last_pong_seen = False
                    session.ping(b"")

    def _refused_at_accept(self, err: int) -> None:
        self.gateway.observer.connection_refused(REFUSED_FD_LIMIT)

    # ---- ListenerHost --------------------------------------------------------------------------

    def connection_made(self, proto: RelayProtocol) -> None:
        self._transports.add(proto)

    def connection_lost(self, proto: RelayProtocol) -> None:
        self._transports.discard(proto)

    def select_subprotocol(self, offered: list[str]) -> str | None:
        return choose_subprotocol(offered)

    def check_upgrade(self, request: HttpRequest) -> HttpResponse | None:
        """Refuse a WebSocket handshake (an HTTP response) or let it through (None)."""
        cfg = self.config
        if not self.gateway.authorized(request.header("authorization"), request.query):
            return unauthorized()
        origin = request.header("origin")
        if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
            return HttpResponse.json(403, {"detail": f"origin {origin!r} is not allowed"})
        if request.path not in WS_PATHS:
            return HttpResponse(403, [("content-type", "text/plain")], b"")  # as a Jina gateway answers
        if self._stopping:
            return HttpResponse.json(503, {"detail": "the relay is shutting down"})
        if cfg.max_connections and self.gateway.stats.connections_open >= cfg.max_connections:
            self.gateway.observer.connection_refused(REFUSED_MAX_CONNECTIONS)
            return HttpResponse.json(
                503, {"detail": f"connection limit reached ({cfg.max_connections}); try again later"}
            )
        return None

    def open_session(self, session: WebSocketSession) -> MessageSink:
        return self.websocket.open_session(session)

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        return await self.http.handle(request)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self.gateway.spawn(fn, *args)


def _raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one: each session holds a descriptor, and at the soft
    limit new clients can only be refused (relay.net.acceptor). Above the hard limit only root may go: raise it
    where the relay is started (`ulimit -Hn`, systemd `LimitNOFILE=`, `docker run --ulimit nofile=N:N`)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


# Descriptors kept free beyond the sessions: listening sockets, the acceptor's spare, upstream links, logs.
FD_RESERVE = 16


def _check_fd_budget(max_connections: int) -> None:
    """Say at start when --max-connections cannot be reached: clients past the descriptor limit are refused
    too, but with "out of file descriptors" rather than the clearer "connection limit reached"."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError):
        return
    if soft == resource.RLIM_INFINITY:
        return
    room = soft - in_use - FD_RESERVE
    if max_connections and max_connections > room:
        log.warning(
            "--max-connections %d is above what the open-file limit allows (RLIMIT_NOFILE %d, %d in use): "
            "past about %d connections clients are refused as out of file descriptors; raise the limit "
            "(ulimit -n) or lower --max-connections",
            max_connections, soft, in_use, max(room, 0),
        )
    else:
        log.info("open-file limit %d: room for about %d connections", soft, max(room, 0))
