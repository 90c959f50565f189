"""Links to a real upstream Flow: the relay as a front for a Jina gateway.

Requests from clients of either subprotocol go to the upstream Flow over a pool of persistent sessions
(`--upstream-connections`) in the upstream's subprotocol (bytes by default: docarray >= 0.30 gateways speak
nothing else), and each answer goes back to its client in the client's subprotocol. Request ids are made
unique across the pool (a Jina gateway drops a connection on a duplicate id in flight); in json mode they
travel in `parameters.flowrelay_upstream_rid`, which a gateway echoes, and are removed again on the way back.

A Jina gateway strips route entries it did not write, so the relay rebuilds them on the way back: its own
`gateway` entry first, then the upstream's entries, with the upstream gateway's own entry renamed
`upstream`. A load test through the relay thus sees every hop and the relay's own cost.

Documents: in bytes mode the pool speaks the upstream's docarray generation (`--upstream-docarray`):
docarray < 0.30 `DocumentProto`s (v1, the default) or docarray >= 0.30 `DocProto` maps (v2,
relay.wire.proto_v2_codec). Clients are unaffected: they keep speaking v1 bytes or json to the relay.
When a bytes client's request goes to a v1 bytes (or gRPC) upstream, its documents are never converted to
`Document`s: they travel in protobuf form both ways (relay.wire.proto_codec's fast path), and the answer
goes back to the client from the upstream's own message. Anything else converts them where needed.

Backpressure: each upstream session carries at most `max_inflight` requests; when every session is full,
forwarding waits, the client connections' prefetch windows fill, and the relay stops reading clients.
Failure: when an upstream session drops (the Flow died, closed 1011, timed out), every request in flight on
it is answered to its client with an error status naming the cause, never lost; the session reconnects
with backoff while the others keep serving; while none is connected, requests are answered at once with
`upstream unavailable`. `--mirror` copies each request to a shadow Flow whose answers are measured and
discarded.

No task, future or timer per request: a client's request is forwarded from the read that brought it, the
upstream's answer is matched by id in the read that brings it and handed straight back to the client
connection (`UpstreamBackend.submit`), and one sweep per pool fails what is past `request_timeout_s`.
The WebSocket links are relay.upstream.ws_client (websockets' sans-I/O client on an asyncio protocol of our own);
frames are built by relay.wire.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from relay.upstream.ws_client import HandshakeRefused, WsClient, open_ws
from relay.wire import json_codec, proto_codec
from relay.wire.codecs import bytes_codec
from relay.wire.documents import struct_to_dict
from relay.wire.errors import MalformedPayload, WireError
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Route, Status
from relay.wire.proto import jina_pb2

log = logging.getLogger("flowrelay.upstream")

# Distinct from the load engine's key, so that a load test through a relay keeps its own correlation.
CORRELATION_KEY = "flowrelay_upstream_rid"
UPSTREAM_ROUTE = "upstream"
PING_INTERVAL_S = 20.0


class UpstreamError(Exception):
    """A request could not be answered by the upstream Flow; the message names the cause."""


@dataclass
class UpstreamConfig:
    url: str
    subprotocol: str = "bytes"
    docarray: str = "v1"  # the upstream's document generation in bytes mode: v1 (< 0.30) or v2 (>= 0.30)
    connections: int = 2
    max_inflight: int = 1000
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0
    max_message_size: int | None = None


@dataclass
class LinkStats:
    forwarded: int = 0
    answered: int = 0
    failed: int = 0
    reconnects: int = 0


# What a link calls once per request: with the upstream's answer, or with None and the cause of failure.
Done = Callable[[DataRequest | None, str | None], None]


def _finish(done: Done, resp: DataRequest | None, error: str | None) -> None:
    """Call `done`; a failure in one answer's handling must not break the link that carried it."""
    try:
        done(resp, error)
    except Exception:
        log.exception("handling an upstream answer failed")


class _Recovering:
    """What every upstream link (WebSocket or gRPC) does when its connection ends: fail the requests it had
    in flight with the cause, and reconnect with backoff while the pool serves on its other links.

    `pending` maps each request id in flight to its `Done` and its deadline (time.monotonic()); entries
    are in the order they were sent, so the pool's deadline sweep stops at the first one still in time."""

    pool: Any
    cfg: UpstreamConfig
    index: int
    stats: LinkStats
    pending: dict[str, tuple[Done, float]]
    connected: bool
    closing: bool

    @property
    def has_room(self) -> bool:
        return self.connected and len(self.pending) < self.cfg.max_inflight

    async def connect(self) -> None:
        raise NotImplementedError

    def expire(self, now: float) -> None:
        """Fail the requests whose deadline has passed (the pool sweeps every link periodically)."""
        pending = self.pending
        expired = []
        for rid, (_, deadline) in pending.items():
            if deadline > now:
                break
            expired.append(rid)
        if not expired:
            return
        reason = f"upstream {self.cfg.url} did not answer within {self.cfg.request_timeout_s:g} s"
        for rid in expired:
            done, _ = pending.pop(rid)
            self.stats.failed += 1
            _finish(done, None, reason)
        self.pool.room_freed()

    def _fail_all(self, reason: str) -> None:
        pending, self.pending = self.pending, {}
        for done, _ in pending.values():
            self.stats.failed += 1
            _finish(done, None, reason)
        self.pool.room_freed()

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self.closing:
            await asyncio.sleep(delay)
            try:
                await self.connect()
                self.stats.reconnects += 1
                log.info("upstream link %d reconnected to %s", self.index, self.cfg.url)
                return
            except UpstreamError as exc:
                log.debug("upstream link %d: %s", self.index, exc)
                delay = min(delay * 2, 2.0)


class _Link(_Recovering):
    """One persistent session to the upstream gateway, with its requests in flight.

    Answers are matched to their requests by id as they are read (relay.upstream.ws_client calls `_answer` from
    `data_received`) and handed straight to whoever is waiting for them: no task or future per request."""

    def __init__(self, pool: UpstreamPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.cfg = pool.cfg
        self.is_bytes = pool.cfg.subprotocol == "bytes"
        self.client: WsClient | None = None
        self.pending: dict[str, tuple[Done, float]] = {}
        self.connected = False
        self.stats = LinkStats()
        self._reconnector: asyncio.Task[None] | None = None
        self.closing = False

    async def connect(self) -> None:
        cfg = self.cfg
        try:
            self.client = await open_ws(cfg.url, cfg.subprotocol, cfg.max_message_size, cfg.connect_timeout_s,
                                        self._answer, self._lost)
        except HandshakeRefused as exc:
            raise UpstreamError(f"upstream {cfg.url} refused the handshake: HTTP {exc.status}") from None
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"upstream {cfg.url} unreachable: {str(exc) or type(exc).__name__}") from None
        self.connected = True
        self.pool.link_up(self)

    def send(self, rid: str, req: DataRequest, done: Done) -> None:
        client = self.client
        assert client is not None
        frame = self.pool.codec.encode_request(req)
        self.pending[rid] = (done, time.monotonic() + self.cfg.request_timeout_s)
        self.stats.forwarded += 1
        # On a link that is closing, `_lost` fails everything in flight, this one included.
        client.send(frame, text=not self.is_bytes)  # type: ignore[arg-type]

    def _answer(self, message: bytes | str) -> None:
        try:
            resp = self.pool.decode_answer(message)
        except WireError as err:
            log.warning("upstream link %d: unreadable answer: %s", self.index, err)
            return
        if self.is_bytes:
            rid = resp.request_id
        else:
            params = resp.parameters or {}
            rid = params.pop(CORRELATION_KEY, None)
        entry = self.pending.pop(rid, None) if rid is not None else None  # type: ignore[arg-type]
        if entry is not None:
            self.stats.answered += 1
            _finish(entry[0], resp, None)
            self.pool.room_freed()

    def _lost(self, why: str) -> None:
        self.connected = False
        reason = f"upstream {self.cfg.url} {why}"
        self._fail_all(reason)
        self.pool.link_down(self, reason)
        if not self.closing:
            self._reconnector = asyncio.create_task(self._reconnect())

    def keepalive(self) -> None:
        """A ping per interval; an upstream that did not answer the previous one is dropped (1011)."""
        client = self.client
        if client is None or not client.is_open:
            return
        if not client.pong_seen:
            client.close(1011, "keepalive ping timeout")
            return
        client.ping()

    async def close(self) -> None:
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        client = self.client
        if client is not None and client.transport is not None and not client.transport.is_closing():
            lost = asyncio.get_running_loop().create_future()
            on_lost = client.on_lost

            def lost_then(why: str) -> None:
                on_lost(why)
                if not lost.done():
                    lost.set_result(None)

            client.on_lost = lost_then
            client.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lost, 2.0)
            client.abort()


_NS = 1_000_000_000


def read_answer(payload: bytes) -> DataRequest:
    """An upstream Flow's bytes answer (docarray < 0.30), read as far as the relay uses it: id, status,
    parameters, routes; the documents stay in the parsed message (as `proto_codec.decode_lazy` leaves them)
    for the answer to the client. Half decode_lazy's cost: the endpoint fields are not read (the client's
    own are answered), and route times are read as seconds and nanos, not through Timestamp's methods.
    Raises MalformedPayload if unparsable."""
    pb = jina_pb2.DataRequestProto()
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a DataRequestProto: {exc}") from None
    h = pb.header
    resp = DataRequest(h.request_id)
    if h.HasField("status"):
        resp.status = proto_codec.from_status_proto(h.status)
    if pb.HasField("parameters"):
        params = pb.parameters
        resp.parameters = struct_to_dict(params) if params.fields else {}
    routes = resp.routes
    for r in pb.routes:
        start, end = r.start_time, r.end_time
        routes.append(Route(
            r.executor,
            start.seconds * _NS + start.nanos if r.HasField("start_time") else None,
            end.seconds * _NS + end.nanos if r.HasField("end_time") else None,
            proto_codec.from_status_proto(r.status) if r.HasField("status") else None,
        ))
    data = pb.data
    which = data.WhichOneof("documents")
    if which == "docs":
        resp.raw, resp.raw_docs, resp.raw_parameters = pb, data.docs.docs, resp.parameters
    elif which == "docs_bytes":
        resp.docs_bytes = data.docs_bytes
    return resp


def upstream_error_status(description: str, name: str = "UpstreamError") -> Status:
    """An error status for a request the upstream could not answer, as from the `upstream` hop."""
    return Status(
        code=STATUS_ERROR,
        description=description,
        exception=ExceptionInfo(name=name, args=[description], executor=UPSTREAM_ROUTE),
    )


class UpstreamPool:
    """The sessions to one upstream Flow, and its health as /status and /dry_run report it."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        # The codec of every link: json, or bytes with the upstream's docarray generation.
        self.codec = json_codec if cfg.subprotocol == "json" else bytes_codec(cfg.docarray)
        # Answers read with their documents left in protobuf form where the codec can (see UpstreamBackend.run).
        self.decode_answer = read_answer if self.codec is proto_codec else self.codec.decode_response
        self.links: list[Any] = [_Link(self, i) for i in range(max(1, cfg.connections))]
        # Requests waiting for room on a link (every link full), in arrival order.
        self._waiting: collections.deque[tuple[DataRequest, Done]] = collections.deque()
        self._draining = False
        self._sweeper: asyncio.Task[None] | None = None
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)
        self._rr = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.recoveries: list[float] = []  # seconds from the first failure to service again

    # -- health --

    @property
    def connected_links(self) -> int:
        return sum(1 for link in self.links if link.connected)

    @property
    def healthy(self) -> bool:
        return self.connected_links > 0

    def link_up(self, link: _Link) -> None:
        if self.down_since is not None and self.connected_links >= 1:
            recovered_s = time.monotonic() - self.down_since
            self.recoveries.append(recovered_s)
            log.warning("upstream %s serving again after %.2f s", self.cfg.url, recovered_s)
            self.down_since = None
        self.room_freed()

    def link_down(self, link: _Link, reason: str) -> None:
        self.last_error = reason
        if not link.closing:
            log.warning("upstream link %d lost: %s", link.index, reason)
            if self.down_since is None:
                self.down_since = time.monotonic()

    def room_freed(self) -> None:
        """A link has room again (an answer, a failure, a link up): send what waits, in order."""
        waiting = self._waiting
        if not waiting or self._draining:
            return
        self._draining = True
        try:
            while waiting:
                link = self._pick()
                if link is None:
                    if not self.healthy:
                        reason = self._unavailable()
                        while waiting:
                            _finish(waiting.popleft()[1], None, reason)
                    return
                req, done = waiting.popleft()
                self._send_on(link, req, done)
        finally:
            self._draining = False

    def status(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url,
            "subprotocol": self.cfg.subprotocol,
            "docarray": self.cfg.docarray,
            "healthy": self.healthy,
            "connected_links": self.connected_links,
            "links": len(self.links),
            "in_flight": sum(len(link.pending) for link in self.links),
            "last_error": self.last_error,
            "recoveries_s": [round(r, 3) for r in self.recoveries[-10:]],
        }

    # -- lifecycle --

    async def start(self) -> None:
        """Connect every link; links that fail keep retrying in the background."""
        results = await asyncio.gather(*(link.connect() for link in self.links), return_exceptions=True)
        for link, result in zip(self.links, results, strict=True):
            if isinstance(result, BaseException):
                self.last_error = str(result)
                if self.down_since is None:
                    self.down_since = time.monotonic()
                log.warning("upstream link %d: %s (retrying)", link.index, result)
                link._reconnector = asyncio.create_task(link._reconnect())
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*(link.close() for link in self.links))

    async def _sweep(self) -> None:
        """One timer for the whole pool: fail requests past their deadline, ping each link per interval."""
        interval = min(1.0, max(0.01, self.cfg.request_timeout_s / 4))
        next_ping = time.monotonic() + PING_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for link in self.links:
                link.expire(now)
            if now >= next_ping:
                next_ping = now + PING_INTERVAL_S
                for link in self.links:
                    keepalive = getattr(link, "keepalive", None)
                    if keepalive is not None:
                        keepalive()

    # -- forwarding --

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._counter):020x}"

    def _pick(self) -> _Link | None:
        links = self.links
        for k in range(len(links)):
            link = links[(self._rr + k) % len(links)]
            if link.has_room:
                self._rr = (self._rr + k + 1) % len(links)
                return link
        return None

    def _unavailable(self) -> str:
        return f"upstream {self.cfg.url} unavailable: {self.last_error or 'not connected'}"

    def submit(self, req: DataRequest, done: Done) -> None:
        """Send `req` upstream; `done(answer, None)` or `done(None, cause)` is called once, possibly at once."""
        link = self._pick()
        if link is None:
            if not self.healthy:
                done(None, self._unavailable())
            else:
                # Every link is full: wait for room (this is what slows the clients down).
                self._waiting.append((req, done))
            return
        self._send_on(link, req, done)

    def _send_on(self, link: Any, req: DataRequest, done: Done) -> None:
        rid = self.next_id()
        params = dict(req.parameters) if req.parameters else {}
        if not link.is_bytes:
            params[CORRELATION_KEY] = rid
        out = DataRequest(
            request_id=rid,
            exec_endpoint=req.exec_endpoint,
            target_executor=req.target_executor,
            parameters=params if (params or req.parameters is not None) else None,
            docs_bytes=req.docs_bytes,
        )
        # Documents still in protobuf form go on in that form when the upstream reads the same protobuf;
        # otherwise they are converted here.
        if not (self.codec is proto_codec and proto_codec.copy_proto_docs(req, out)):
            try:
                out.docs = req.load_docs()
            except WireError as exc:
                done(None, f"cannot forward the documents to {self.cfg.url}: {exc.reason}")
                return
        link.send(rid, out, done)

    async def forward(self, req: DataRequest) -> DataRequest:
        """Send `req` upstream and return the upstream's answer. Raises UpstreamError."""
        fut: asyncio.Future[DataRequest] = asyncio.get_running_loop().create_future()

        def done(resp: DataRequest | None, error: str | None) -> None:
            if fut.done():
                return
            if resp is None:
                fut.set_exception(UpstreamError(error))
            else:
                fut.set_result(resp)

        self.submit(req, done)
        return await fut

    async def dry_run(self) -> Status:
        """Ask the upstream gateway's /dry_run (a full pass through its Flow)."""
        base = self.cfg.url.rstrip("/")
        try:
            async with connect(
                base + "/dry_run",
                subprotocols=["bytes"],  # type: ignore[list-item]
                open_timeout=self.cfg.connect_timeout_s,
                compression=None,
            ) as ws:
                # A Jina gateway answers and closes without waiting for this frame: when its close comes
                # first, sending fails, and its status is still there to read.
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(b"")
                frame = await asyncio.wait_for(ws.recv(), self.cfg.connect_timeout_s)
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
            return upstream_error_status(
                f"upstream {self.cfg.url} dry run failed: {str(exc) or type(exc).__name__}", "UpstreamError"
            )
        pb = jina_pb2.StatusProto()
        if isinstance(frame, bytes):
            pb.ParseFromString(frame)
        return proto_codec.from_status_proto(pb)
