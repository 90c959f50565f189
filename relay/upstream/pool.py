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
`Document`s: they go on in the message they came in (relay.wire.proto_codec's fast path). An answer goes back to
a client of the upstream's own subprotocol as the bytes the upstream wrote, the relay's parts spliced in
(relay.wire.splice); anything else converts the documents where needed.

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
The links are relay.upstream.ws (WebSocket) and relay.upstream.grpc (gRPC), both relay.upstream.link.UpstreamLink;
frames are built by relay.wire.

Lifetime: `serve()` is the pool's one long-lived task (anyio): it connects every link, reports itself started,
then runs the deadline sweep and every link's `maintain` (reconnects, keepalive, gRPC's reader) in its own task
group until it is cancelled, and closes the links, bounded, on the way out. A task of it that fails ends `serve`
with the error named. `start()` / `close()` run `serve` in a task of its own for callers not yet structured.

Public seam: `submit(req, done)`, `forward(req)`, `dry_run()`, `endpoint_discovery()`, `healthy`, `status()`,
`serve()` (and `start()` / `close()`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from relay.backend import DEFAULT_ENDPOINTS
from relay.common.link import LinkDown
from relay.common.loop import task_group, watched
from relay.upstream.link import (
    CORRELATION_KEY,
    Done,
    UpstreamConfig,
    UpstreamError,
    UpstreamLink,
    deliver,
)
from relay.upstream.ws import WsLink
from relay.wire import json_codec, proto_codec
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Status
from relay.wire.proto import jina_pb2
from relay.wire.splice import read_json_answer, read_proto_answer

log = logging.getLogger("flowrelay.upstream")

UPSTREAM_ROUTE = "upstream"

__all__ = ["UPSTREAM_ROUTE", "Done", "UpstreamConfig", "UpstreamError", "UpstreamPool", "upstream_error_status"]


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
        # Answers read as far as the relay needs, the rest kept as it came, to be spliced into the answer of a
        # client of the same subprotocol (relay.wire.splice, UpstreamBackend); docarray >= 0.30 answers are decoded.
        self.decode_answer: Callable[[bytes], DataRequest] = self.codec.decode_response
        if self.codec is proto_codec:
            self.decode_answer = functools.partial(read_proto_answer, gateway_renamed=UPSTREAM_ROUTE)
        elif self.codec is json_codec:
            self.decode_answer = functools.partial(read_json_answer, gateway_renamed=UPSTREAM_ROUTE,
                                                   drop=CORRELATION_KEY)
        self.links: list[UpstreamLink] = [self._new_link(i) for i in range(max(1, cfg.connections))]
        # Requests waiting for room on a link (every link full), in arrival order.
        self._waiting: collections.deque[tuple[DataRequest, Done]] = collections.deque()
        self._draining = False
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)
        self._rr = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.recoveries: list[float] = []  # seconds from the first failure to service again

    def _new_link(self, index: int) -> UpstreamLink:
        return WsLink(self, index)

    # -- health --

    @property
    def connected_links(self) -> int:
        return sum(1 for link in self.links if link.connected)

    @property
    def healthy(self) -> bool:
        return self.connected_links > 0

    def link_up(self, link: UpstreamLink) -> None:
        if self.down_since is not None and self.connected_links >= 1:
            recovered_s = time.monotonic() - self.down_since
            self.recoveries.append(recovered_s)
            log.warning("upstream %s serving again after %.2f s", self.cfg.url, recovered_s)
            self.down_since = None
        self.room_freed()

    def link_down(self, link: UpstreamLink, reason: str) -> None:
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
                            deliver(waiting.popleft()[1], None, reason)
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

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The pool's life: connect every link (those that fail keep retrying), report started, then sweep
        deadlines and keep every link up until cancelled; the links are closed, bounded, on the way out."""
        try:
            async with task_group() as tg:
                async with anyio.create_task_group() as first:
                    for link in self.links:
                        first.start_soon(self._first_connect, link)
                task_status.started()
                tg.start_soon(watched, f"the deadline sweep of upstream {self.cfg.url}", self._sweep)
                for link in self.links:
                    tg.start_soon(watched, str(link), link.maintain)
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as closing:
                    for link in self.links:
                        closing.start_soon(link.close)

    async def _first_connect(self, link: UpstreamLink) -> None:
        try:
            await link.connect()
        except LinkDown as exc:
            self.last_error = str(exc)
            if self.down_since is None:
                self.down_since = time.monotonic()
            log.warning("%s: %s (retrying)", link, exc)

    async def _sweep(self) -> None:
        """One timer for the whole pool: fail the requests past their deadline."""
        timeout_s = self.cfg.request_timeout_s
        interval = min(1.0, max(0.01, timeout_s / 4))
        reason = f"upstream {self.cfg.url} did not answer within {timeout_s:g} s"
        while True:
            # Waking early (the loop's timers can be a millisecond early) changes nothing a client reads: what is
            # failed is judged on the clock, only requests really past their deadline.
            await anyio.sleep(interval)
            older_than = time.monotonic() - timeout_s
            for link in self.links:
                expired = link.expire(older_than)
                if expired:
                    link.fail(expired, reason)

    # -- forwarding --

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._counter):020x}"

    def _pick(self) -> UpstreamLink | None:
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

    def _send_on(self, link: UpstreamLink, req: DataRequest, done: Done) -> None:
        rid = self.next_id()
        params = req.parameters
        if not link.is_bytes:
            params = {**params, CORRELATION_KEY: rid} if params else {CORRELATION_KEY: rid}
        out = DataRequest(
            request_id=rid,
            exec_endpoint=req.exec_endpoint,
            target_executor=req.target_executor,
            parameters=params,
            docs_bytes=req.docs_bytes,
        )
        # Documents still in protobuf form go on in that form when the upstream reads the same protobuf, in the
        # request's own message (the parameters too, while they are the request's); otherwise they are converted.
        if not (self.codec is proto_codec and proto_codec.share_proto_docs(req, out)):
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
                fut.set_result(resp if resp.spliced is None else resp.spliced.decode())

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

    async def endpoint_discovery(self) -> list[str]:
        """The upstream gateway's endpoints. A WebSocket gateway has no call for it, so these are the endpoints
        every Flow answers on (the gRPC pool asks its gateway, and raises UpstreamError when that fails)."""
        return list(DEFAULT_ENDPOINTS)
