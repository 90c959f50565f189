"""One keep-alive HTTP connection to a Flow's HTTP gateway: `POST /post` with the JSON request model.

The HTTP twin of loadtest.sessions.ws.Session, with the same interface. The engine hands `post` the json frame
(`{"data": [...], "execEndpoint": ..., "parameters": ...}`, Jina's `JinaEndpointRequestModel`), which is POSTed as
is; the answer (camelCase keys, `+00:00` timestamps) is read with relay.wire.json_codec.decode_response_envelope,
so per-hop spans come from its `routes` as over WebSocket. A request is matched to its answer by the exchange.

HTTP/1.1 carries one request at a time on a connection (aiohttp does not pipeline), so a session is one keep-alive
connection with at most one request in flight, and the engine's `--connections` sessions are the pool: requests
in flight are bounded by it. A due request that finds every connection busy is dropped and counted, as at a
WebSocket's in-flight limit, never queued in the client where its wait would be charged to the server. An HTTP
error status (4xx, 5xx: a Jina gateway answers 503 when an Executor is unreachable) fails the request as a
transport failure `http 503`; an Executor's error is an answer (HTTP 200 with `header.status.code` 1), counted as
failed like any other.

The exchanges run in the session's `maintain` task (relay.common.link: `_carry`), one after the other, each in a
cancel scope that `expire` cancels when its request times out. When the connection itself breaks, the request in
flight fails with the cause, the session stops taking requests (`connected` False, so due requests are dropped as
"no connection"), and `maintain` probes the gateway with backoff until it answers again.

`request_body` and `read_answer` are what another request model over the same connections changes
(loadtest.sessions.graphql).
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from loadtest.sessions.base import ConnectError, Outcomes, Pending, SessionBase
from relay.wire import json_codec
from relay.wire.errors import WireError

POST_PATH = "/post"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# Raised when the connection itself fails (refused, reset, closed mid-answer): the session reconnects.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def describe_http_error(exc: BaseException) -> str:
    """A failure reason for counting: `http connection refused`, `http disconnected`, ..."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "http connection refused" if isinstance(exc.os_error, ConnectionRefusedError) else "http connect failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "http disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "http truncated answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"http {exc.status}"
    return f"http {type(exc).__name__}"


class HttpSession(SessionBase):
    """One keep-alive connection of a load run; same interface as loadtest.sessions.ws.Session."""

    def __init__(self, url: str, outcomes: Outcomes, index: int = 0, connect_timeout_s: float = 10.0) -> None:
        super().__init__(url, 1, outcomes, index, connect_timeout_s)  # HTTP/1.1: one request at a time
        self.base = url.rstrip("/")
        self.post_url = self.base + POST_PATH
        self._client: aiohttp.ClientSession | None = None
        self._outbox: MemoryObjectSendStream[tuple[Pending, bytes]] | None = None
        self._inbox: MemoryObjectReceiveStream[tuple[Pending, bytes]] | None = None
        # The exchange under way: its request id and the scope `expire` cancels.
        self._exchange: tuple[str, anyio.CancelScope] | None = None

    def _new_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=60.0, enable_cleanup_closed=True)
        # No overall timeout here: the engine times requests out itself (--timeout) and cancels them.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s)
        # trust_env stays False: proxy variables never reroute loopback traffic.
        return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)

    async def _open(self) -> None:
        """GET / (a Jina gateway's health check, `{}`): opens the keep-alive connection before the clock
        starts. Any HTTP answer means the server is there; raises ConnectError otherwise."""
        if self._outbox is None:
            # Unbounded: `has_room` keeps one request at a time in it (and a timed-out one left behind).
            self._outbox, self._inbox = anyio.create_memory_object_stream[tuple[Pending, bytes]](math.inf)
        if self._client is None:
            self._client = self._new_client()
        try:
            with anyio.fail_after(self.connect_timeout_s):
                async with self._client.get(self.base + "/") as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._client.close()  # nothing of a failed attempt stays open; the next makes a new client
            self._client = None
            raise ConnectError(f"{self.url}: {str(exc) or type(exc).__name__}") from None

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        self.pending[rid] = entry
        assert self._outbox is not None
        self._outbox.send_nowait((entry, frame))

    async def _carry(self) -> None:
        """The exchanges, one after the other, until the connection breaks (or the session closes)."""
        inbox = self._inbox
        assert inbox is not None
        while self.connected:
            try:
                entry, frame = await inbox.receive()
            except anyio.EndOfStream:  # the session closed
                inbox.close()
                return
            if entry.rid not in self.pending:
                continue  # timed out before its turn
            with anyio.CancelScope() as scope:
                self._exchange = (entry.rid, scope)
                broken = await self._post(entry, frame)
            self._exchange = None
            if broken is not None:
                self.logger.warning("http session %d: %s", self.index, broken)
                self.connection_lost(broken)  # the request in flight fails with the cause
                return

    async def _post(self, entry: Pending, frame: bytes) -> str | None:
        """One exchange; returns the cause when the connection itself broke."""
        client = self._client
        assert client is not None
        try:
            async with client.post(self.post_url, data=self.request_body(frame), headers=HEADERS) as resp:
                body = await resp.read()
                status = resp.status
        except _CONNECTION_ERRORS as exc:
            return describe_http_error(exc)
        except aiohttp.ClientError as exc:
            self._failed_one(entry, describe_http_error(exc))
            return None
        if status >= 400:
            self._failed_one(entry, f"http {status}")
            return None
        now = self.clock()
        try:
            resp_req, ndocs = self.read_answer(body)
        except WireError as err:
            self.logger.warning("http session %d: unreadable answer: %s", self.index, err)
            self.unknown_answers += 1
            self._failed_one(entry, "http unreadable answer")
            return None
        self._answered(entry.rid, resp_req, ndocs, now)
        return None

    def request_body(self, frame: bytes) -> bytes:
        """What is POSTed for the engine's json frame: the frame itself (Jina's request model)."""
        return frame

    def read_answer(self, body: bytes) -> tuple[Any, int]:
        """An answer's request (id, status, routes) and its doc count. Raises WireError if unreadable."""
        return json_codec.decode_response_envelope(body)

    def _failed_one(self, entry: Pending, reason: str) -> None:
        """Fail `entry` with `reason`, unless it already left the table (timed out)."""
        if self.pending.pop(entry.rid, None) is not None:
            self.fail([entry], reason)
            if self.closing:
                self._settled_if_empty()

    def expire(self, older_than: float) -> list[Pending]:
        """As the base's; an exchange whose request timed out is abandoned (aiohttp closes its connection, and
        the next request opens a new one)."""
        expired = super().expire(older_than)
        exchange = self._exchange
        if exchange is not None and any(p.rid == exchange[0] for p in expired):
            exchange[1].cancel()
        return expired

    async def _close_connection(self) -> None:
        if self._exchange is not None:
            self._exchange[1].cancel()
        if self._outbox is not None:
            self._outbox.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
