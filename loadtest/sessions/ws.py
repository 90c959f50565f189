"""One persistent WebSocket session to a Flow: send many requests, match answers whatever their order.

A session owns one connection and the table of its requests in flight. Answers are matched by
`header.request_id` in bytes mode and by `parameters.flowrelay_rid` in json mode (a gateway makes its
own request ids for json clients and echoes `parameters`). A session that drops fails the requests it
had in flight with the close code as the reason, then reconnects with backoff while the run goes on.
At the end it sends the end-of-stream marker and waits a bounded time for the last answers; what is
still in flight then is reported as unanswered. Nothing is lost silently: every request leaves the
table through exactly one of `on_answer`, `on_failure`.

A WebSocket session runs its connection through loadtest.sessions.ws_link (websockets' sans-I/O protocol in a
thin asyncio shell): answers are read as relay.wire.answers reads them (id and status at once, routes
when measured) and handed over straight from the connection's reads, and `post` queues a request
without waiting, so that everything sent in one turn of the event loop leaves in one write. The
reconnect loop is a task owned by the session and cancelled by `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from loadtest.payloads import CORRELATION_KEY
from loadtest.sessions.base import AnswerCallback, ConnectError, FailureCallback, Pending, SessionBase
from loadtest.sessions.ws_link import WsLink, open_link
from relay.wire import json_codec
from relay.wire.answers import answer_reader
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError

log = logging.getLogger("flowrelay.load")

class Session(SessionBase):
    """One connection of a load run. `send` (or `post`) is called by the dispatcher; answers come back by
    callback, straight from the connection's reads (loadtest.sessions.ws_link)."""

    def __init__(
        self,
        url: str,
        mode: str,
        offer: str | None,
        max_inflight: int,
        clock: Callable[[], float],
        on_answer: AnswerCallback,
        on_failure: FailureCallback,
        index: int = 0,
        connect_timeout_s: float = 10.0,
        compression: bool = False,
        ca_file: str | None = None,
        docarray: str = "v1",
    ) -> None:
        super().__init__(url, max_inflight, clock, on_answer, on_failure, index, connect_timeout_s)
        self.mode = mode
        self.offer = offer
        self.compression = compression
        # wss:// to a server whose certificate a private CA signed (a self-signed relay, say): trust that CA.
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("wss:") else None
        self.ws: WsLink | None = None
        # Called after each read's answers were handled, before the writes they caused go out (the open
        # model sends what fell due meanwhile, so it leaves in the same write).
        self.after_read: Callable[[], None] | None = None
        is_bytes = mode == "bytes"
        # bytes mode: the answers' documents are docarray < 0.30 (v1) or >= 0.30 (v2) messages.
        self._decode = answer_reader(mode, docarray)
        self._text = not is_bytes
        self._eos = (bytes_codec(docarray) if is_bytes else json_codec).END_OF_STREAM_FRAME
        self._by_param = not is_bytes

    async def connect(self) -> None:
        """Open the connection; raises ConnectError with a reason a user can act on."""
        try:
            link = await asyncio.wait_for(
                open_link(self.url, self._on_message, self._on_end, subprotocol=self.offer,
                          compression=self.compression, ssl_context=self._ssl),
                self.connect_timeout_s,
            )
        except InvalidStatus as exc:
            raise ConnectError(f"{self.url}: handshake refused with HTTP {exc.response.status_code}") from None
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ConnectError(f"{self.url}: {str(exc) or type(exc).__name__}") from None
        link.after_read = self._after_read
        self.ws = link
        self.negotiated = link.subprotocol
        self.connected = True

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        """Queue one request (sent at `sent_s`, run clock; now if not given). It is written with whatever
        else is queued in this turn of the event loop; nothing waits."""
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        self.pending[rid] = entry
        link = self.ws
        # Not open any more: the end of the connection fails what was in flight; if that has happened
        # already, this one fails now, with the same reason.
        if (link is None or not link.send(frame, self._text)) and (link is None or link.ended):
            del self.pending[rid]
            self.on_failure(entry, link.end_reason if link is not None else "close 1006", self.clock())

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        """`post`, then wait while the connection's write buffer is full."""
        self.post(rid, frame, due_s, docs, warmup)
        link = self.ws
        if link is not None and link.writing_paused:
            await link.writable()

    def flush(self) -> None:
        """Write what is queued now rather than at the end of this turn of the event loop."""
        if self.ws is not None:
            self.ws.flush()

    def _after_read(self) -> None:
        hook = self.after_read
        if hook is not None:
            hook()

    def _on_message(self, message: bytes) -> None:
        now = self.clock()
        try:
            answer = self._decode(message)
        except WireError as err:
            log.warning("session %d: unreadable answer: %s", self.index, err)
            self.unknown_answers += 1
            return
        if self._by_param:
            params = answer.parameters
            rid = params.get(CORRELATION_KEY) if isinstance(params, dict) else None
        else:
            rid = answer.request_id
        pending = self.pending
        entry = pending.pop(rid, None) if rid is not None else None
        if entry is None:
            # Already timed out (late), or not ours.
            self.late_answers += 1
            return
        self.on_answer(entry, answer, answer.docs, now)
        if self.closing and not pending:
            self._drained.set()

    def _on_end(self, reason: str) -> None:
        """The TCP connection is gone: fail what was in flight, and reconnect unless the run is ending."""
        self.connected = False
        if not (self.closing and not self.pending):
            self._fail_all(reason)
        self._drained.set()
        if not self.closing:
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self.closing:
            await asyncio.sleep(delay)
            if self.closing:
                return
            try:
                await self.connect()
                self.reconnects += 1
                self._drained = asyncio.Event()
                log.info("session %d reconnected", self.index)
                return
            except ConnectError as exc:
                log.debug("session %d reconnect failed: %s", self.index, exc)
                delay = min(delay * 2, 5.0)

    async def finish(self, grace_s: float) -> list[Pending]:
        """End of run: send end-of-stream, wait up to `grace_s` for answers, close.
        Returns the requests still unanswered."""
        self.closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        link = self.ws
        if link is not None and self.connected:
            link.send(self._eos, self._text)
            link.flush()
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
        if self._reconnector is not None:
            self._reconnector.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close(2.0)
