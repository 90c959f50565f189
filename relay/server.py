"""The relay's lifetime: one port, its listener and doors, a backend, from start to a graceful stop.

A `RelayServer` accepts connections (relay.net), answers WebSocket handshakes on `/` and `/dry_run` (other
paths get 403 at the handshake, as a Jina gateway does; unlike Jina it echoes the chosen subprotocol), hands
each WebSocket session to the WebSocket door (relay.doors.websocket) and plain HTTP to `/`, `/status`,
`/dry_run`, `/metrics` and the HTTP door. It keeps connections alive with pings and, on stop, lets every
connection answer what it has in flight (bounded) before closing 1001.
"""

from __future__ import annotations

import asyncio
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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from relay.doors.websocket import ClientConnection, DryRunSession
from relay.executors import Chain
from relay.gc_freeze import freeze_long_lived, safe_to_freeze
from relay.net.acceptor import Acceptor, open_listeners
from relay.net.http_types import HttpRequest, HttpResponse
from relay.net.listener import CLOSE_TIMEOUT_S, MessageSink, RelayProtocol, WebSocketSession
from relay.observer import REFUSED_FD_LIMIT, REFUSED_MAX_CONNECTIONS, Observer

if TYPE_CHECKING:
    from relay.upstream.backend import UpstreamBackend

from relay.wire import json_codec
from relay.wire.codecs import choose_subprotocol
from relay.wire.errors import (
    CLOSE_INTERNAL_ERROR,
)

log = logging.getLogger("flowrelay.relay")

DEFAULT_PORT = 12345
DEFAULT_PREFETCH = 1000
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
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
    cors: bool = False
    # gc.freeze() long-lived objects (relay.gc_freeze); `flowrelay serve` turns it on (--no-gc-freeze: off).
    gc_freeze: bool = False


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


class RelayServer:
    """One relay: a chain of Executors (or an upstream Flow) behind a gateway on one port."""

    def __init__(self, config: RelayConfig, chain: Chain | UpstreamBackend, observer: Observer | None = None) -> None:
        self.config = config
        # The embedded Executors, or the link to a real upstream Flow: both run a request in place.
        self.chain = chain
        self.stats = RelayStats()
        self.observer = observer or Observer()
        self._acceptor: Acceptor | None = None
        self._stopping = False
        self._connections: set[ClientConnection] = set()
        self._transports: set[RelayProtocol] = set()
        self._keepalive: asyncio.Task[None] | None = None
        self._freezer: asyncio.Task[None] | None = None
        self.ids = IdSource()
        self.port = config.port
        # GET pages beside the gateway (/metrics, /dashboard): (status, content type, body), or a whole response.
        self.extra_http: dict[str, Callable[[], tuple[int, str, bytes] | HttpResponse]] = {}
        # Other HTTP requests (POST /post, /openapi.json, ...) go to the HTTP door when it is installed.
        self.http_door: Any = None
        # What the listener reads (ListenerHost).
        self.server_header = f"flowrelay Python/{sys.version_info.major}.{sys.version_info.minor}"
        self.max_message_size = config.max_message_size
        self.handshake_timeout_s = config.handshake_timeout_s
        self.compression = config.compression

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
        _raise_fd_limit()
        _check_fd_budget(cfg.max_connections)
        # The default backlog of 100 overflowed when thousands of clients connected at once (SYN retries of
        # a second and more); the kernel caps this at net.core.somaxconn anyway. The relay accepts by itself
        # (relay.net.acceptor) so that a client past the file-descriptor limit is refused, logged and counted.
        sockets = open_listeners(cfg.host, cfg.port, backlog=4096)
        self._acceptor = Acceptor(sockets, lambda: RelayProtocol(self), ssl_context, self._refused_at_accept)
        self._acceptor.start()
        self.port = sockets[0].getsockname()[1]
        if cfg.ping_interval_s:
            self._keepalive = asyncio.create_task(self._ping_loop(cfg.ping_interval_s))
        if cfg.gc_freeze and safe_to_freeze(asyncio.get_running_loop()):
            self._freezer = asyncio.create_task(freeze_long_lived(lambda: self.stats.connections_total))
        log.info(
            "relay listening on %s://%s:%d/ with %s",
            "wss" if ssl_context else "ws",
            cfg.host,
            self.port,
            self.chain.describe(),
        )

    async def stop(self) -> None:
        """Stop accepting, let every connection answer what it has in flight (bounded), close 1001."""
        if self._acceptor is None:
            return
        self._stopping = True
        self._acceptor.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._freezer is not None:
            self._freezer.cancel()
        for conn in list(self._connections):
            conn.begin_shutdown()
        pending = [c.done for c in self._connections]
        if pending:
            await asyncio.wait(pending, timeout=self.config.drain_timeout_s + CLOSE_TIMEOUT_S)
        for proto in list(self._transports):
            if proto.transport is not None:
                proto.transport.close()
        backend_close = getattr(self.chain, "close", None)
        if backend_close is not None:
            await backend_close()

    async def serve_until(self, stop: asyncio.Event) -> None:
        await self.start()
        await stop.wait()
        await self.stop()

    async def _ping_loop(self, interval_s: float) -> None:
        """Keepalive, as uvicorn under a Jina gateway does: a ping every interval; a connection that did not
        answer the previous one is closed 1011."""
        batch = 100
        while True:
            # The pings of one interval are spread over it in batches: pinging 10,000 sessions in one loop
            # turn held every answer of that second back (p99 of ~1 s at 10,000 sessions).
            protos = list(self._transports)
            batches = max(1, (len(protos) + batch - 1) // batch)
            for start in range(0, max(len(protos), 1), batch):
                await asyncio.sleep(interval_s / batches)
                for proto in protos[start : start + batch]:
                    session = proto.session
                    if session is None or not session.is_open:
                        continue
                    if not proto.last_pong_seen:
                        session.close(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
                        continue
                    proto.last_pong_seen = False
                    session.ping(b"")

    def _refused_at_accept(self, err: int) -> None:
        self.observer.connection_refused(REFUSED_FD_LIMIT)

    # ---- ListenerHost --------------------------------------------------------------------------

    def connection_made(self, proto: RelayProtocol) -> None:
        self._transports.add(proto)

    def connection_lost(self, proto: RelayProtocol) -> None:
        self._transports.discard(proto)

    def select_subprotocol(self, offered: list[str]) -> str | None:
        return choose_subprotocol(offered)

    def _authorized(self, request: HttpRequest) -> bool:
        token = self.config.auth_token
        if not token:
            return True
        header = request.header("authorization", "") or ""
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        # Browsers cannot set headers on a WebSocket handshake: accept the token as a query parameter too.
        return any(hmac.compare_digest(t, token) for t in parse_qs(request.query).get("token", []))

    def _unauthorized(self) -> HttpResponse:
        return HttpResponse.json(
            401,
            {"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"},
            [("www-authenticate", "Bearer")],
        )

    def check_upgrade(self, request: HttpRequest) -> HttpResponse | None:
        """Refuse a WebSocket handshake (an HTTP response) or let it through (None)."""
        cfg = self.config
        if not self._authorized(request):
            return self._unauthorized()
        origin = request.header("origin")
        if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
            return HttpResponse.json(403, {"detail": f"origin {origin!r} is not allowed"})
        if request.path not in WS_PATHS:
            return HttpResponse(403, [("content-type", "text/plain")], b"")  # as a Jina gateway answers
        if self._stopping:
            return HttpResponse.json(503, {"detail": "the relay is shutting down"})
        if cfg.max_connections and self.stats.connections_open >= cfg.max_connections:
            self.observer.connection_refused(REFUSED_MAX_CONNECTIONS)
            return HttpResponse.json(
                503, {"detail": f"connection limit reached ({cfg.max_connections}); try again later"}
            )
        return None

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Plain HTTP on the gateway's port: `/` (health), `/status`, `/dry_run`, `/metrics`, the HTTP door."""
        response = await self._handle_http(request)
        if self.http_door is not None:
            response = self.http_door.with_cors(request, response)
        return response

    async def _handle_http(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if path == "/" and request.method in ("GET", "HEAD"):
            return HttpResponse.json(200, {})  # health check: always open
        door = self.http_door
        if door is not None and door.is_public(request):
            # CORS preflights and the docs pages: a browser sends no token with them.
            return await door.handle(request)
        if not self._authorized(request):
            return self._unauthorized()
        if request.method in ("GET", "HEAD"):
            if path == "/status":
                return HttpResponse.json(200, self.status_body())
            if path == "/dry_run":
                # As Jina's HTTP dry run: 200 either way, the status in the body.
                status = await self.chain.dry_run()
                body = json_codec.status_dict(status)
                return HttpResponse.json(
                    200, {"code": status.code, "description": status.description, "exception": body.get("exception")}
                )
            extra = self.extra_http.get(path)
            if extra is not None:
                answer = extra()
                if isinstance(answer, HttpResponse):  # e.g. a stream (the dashboard's events)
                    return answer
                code, content_type, payload = answer
                return HttpResponse(code, [("content-type", content_type)], payload)
        if self.http_door is not None:
            response = await self.http_door.handle(request)
            if response is not None:
                return response
        return HttpResponse.json(404, {"detail": "Not Found"})

    def open_session(self, session: WebSocketSession) -> MessageSink:
        mode = session.subprotocol or "json"
        if session.path == "/dry_run":
            return DryRunSession(self, session, mode)
        conn = ClientConnection(self, session, mode)
        self._connections.add(conn)
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        self.observer.connection_opened(mode)
        return conn

    def _connection_done(self, conn: ClientConnection, code_received: int | None) -> None:
        self._connections.discard(conn)
        self.stats.connections_open -= 1
        code_sent = conn.session.close_code_sent
        self.observer.connection_closed(conn.mode, code_sent, code_received)
        if code_sent is not None:
            self.stats.closes_sent[code_sent] = self.stats.closes_sent.get(code_sent, 0) + 1

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
