"""One keep-alive HTTP connection to a Flow's HTTP gateway: `POST /post` with the JSON request model.

The HTTP twin of loadtest.sessions.ws.Session, with the same interface. The engine hands `send` the json
frame (`{"data": [...], "execEndpoint": ..., "parameters": ...}`, Jina's `JinaEndpointRequestModel`),
which is POSTed as is; the answer (camelCase keys, `+00:00` timestamps) is read with
relay.wire.json_codec.decode_response_envelope, so per-hop spans come from its `routes` as over
WebSocket. A request is matched to its answer by the exchange itself.

HTTP/1.1 carries one request at a time on a connection (aiohttp does not pipeline), so a session is one
keep-alive connection with at most one request in flight, and the engine's `--connections` sessions are
the pool: requests in flight are bounded by it. A due request that finds every connection busy is
dropped and counted, as at a WebSocket's in-flight limit, never queued in the client where its wait
would be charged to the server. An HTTP error status (4xx, 5xx: a Jina gateway answers 503 when an
Executor is unreachable) fails the request as a transport failure `http 503`; an Executor's error is
an answer (HTTP 200 with `header.status.code` 1), counted as failed like any other. When the
connection breaks the request in flight fails with the cause, the session stops taking requests
(`connected` False, so due requests are dropped as "no connection") and probes the gateway with
backoff until it answers again.

Each session owns its aiohttp client; request tasks and the reconnect task are cancelled by `close()`.
`request_body` and `read_answer` are what another request model over the same connections changes
(loadtest.sessions.graphql).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from loadtest.sessions.base import AnswerCallback, ConnectError, FailureCallback, Pending, SessionBase
from relay.wire import json_codec
from relay.wire.errors import WireError

log = logging.getLogger("flowrelay.load")

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

    def __init__(
        self,
        url: str,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int = 0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        # HTTP/1.1: one request at a time per connection.
        super().__init__(url, 1, clock, on_answer, on_failure, index, connect_timeout_s)
        self.base = url.rstrip("/")
        self.post_url = self.base + POST_PATH
        self._client: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def can_send(self) -> bool:
        return self.connected and not self.pending

    def _new_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=60.0, enable_cleanup_closed=True)
        # No overall timeout here: the engine times requests out itself (--timeout) and cancels them.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s)
        # trust_env stays False: proxy variables never reroute loopback traffic.
        return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True)

    async def _probe(self) -> None:
        """GET / (a Jina gateway's health check, `{}`): opens the keep-alive connection before the clock
        starts. Any HTTP answer means the server is there; raises ConnectError otherwise."""
        assert self._client is not None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                async with self._client.get(self.base + "/") as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectError(f"{self.url}: {str(exc) or type(exc).__name__}") from None

    async def connect(self) -> None:
        if self._client is None:
            self._client = self._new_client()
        try:
            await self._probe()
        except ConnectError:
            await self._client.close()  # nothing of a failed attempt stays open; the next makes a new client
            self._client = None
            raise
        self.connected = True

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        self.post(rid, frame, due_s, docs, warmup)

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        """`send` without waiting: the exchange starts as a task of its own."""
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        self.pending[rid] = entry
        self._tasks[rid] = asyncio.create_task(self._exchange(entry, frame))

    async def _exchange(self, entry: Pending, frame: bytes) -> None:
        client = self._client
        assert client is not None
        rid = entry.rid
        try:
            try:
                async with client.post(self.post_url, data=self.request_body(frame), headers=HEADERS) as resp:
                    body = await resp.read()
                    status = resp.status
            except _CONNECTION_ERRORS as exc:
                self._finish(entry, describe_http_error(exc))
                self._connection_lost(exc)
                return
            except aiohttp.ClientError as exc:
                self._finish(entry, describe_http_error(exc))
                return
            if status >= 400:
                self._finish(entry, f"http {status}")
                return
            now = self.clock()
            if self.pending.pop(rid, None) is None:
                self.late_answers += 1  # timed out while the answer was on its way
                return
            try:
                resp_req, ndocs = self.read_answer(body)
            except WireError as err:
                log.warning("http session %d: unreadable answer: %s", self.index, err)
                self.unknown_answers += 1
                self.on_failure(entry, "http unreadable answer", now)
            else:
                self.on_answer(entry, resp_req, ndocs, now)
            self._check_drained()
        finally:
            self._tasks.pop(rid, None)

    def request_body(self, frame: bytes) -> bytes:
        """What is POSTed for the engine's json frame: the frame itself (Jina's request model)."""
        return frame

    def read_answer(self, body: bytes) -> tuple[Any, int]:
        """An answer's request (id, status, routes) and its doc count. Raises WireError if unreadable."""
        return json_codec.decode_response_envelope(body)

    def _finish(self, entry: Pending, reason: str) -> None:
        """Fail `entry` with `reason`, unless it already left the table (timed out)."""
        if self.pending.pop(entry.rid, None) is None:
            return
        self.on_failure(entry, reason, self.clock())
        self._check_drained()

    def _check_drained(self) -> None:
        if self.closing and not self.pending:
            self._drained.set()

    def _connection_lost(self, exc: BaseException) -> None:
        if self.closing or not self.connected:
            return
        self.connected = False
        log.warning("http session %d: %s (%s)", self.index, describe_http_error(exc), exc)
        self._reconnector = asyncio.create_task(self._reconnect())

    def expire(self, older_than_s: float) -> list[Pending]:
        """Remove and return requests sent before `older_than_s` (run clock); their exchanges are
        abandoned (the connection is closed, a new one opened for the next request)."""
        expired = [p for p in self.pending.values() if p.sent_s < older_than_s]
        for p in expired:
            del self.pending[p.rid]
            task = self._tasks.pop(p.rid, None)
            if task is not None:
                task.cancel()
        self._check_drained()
        return expired

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closing:
            await asyncio.sleep(delay)
            if self.closing:
                return
            try:
                await self.connect()
            except ConnectError as exc:
                log.debug("http session %d reconnect failed: %s", self.index, exc)
                delay = min(delay * 2, 5.0)
                continue
            self.reconnects += 1
            log.info("http session %d reconnected", self.index)
            return

    async def finish(self, grace_s: float) -> list[Pending]:
        """End of run: wait up to `grace_s` for the answer in flight, close. Returns what is unanswered."""
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self.pending:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace_s)
        left = list(self.pending.values())
        self.pending.clear()
        await self.close()
        return left

    async def close(self) -> None:
        self.closing = True
        self.connected = False
        if self._reconnector is not None:
            self._reconnector.cancel()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.close(), 2.0)
            self._client = None
