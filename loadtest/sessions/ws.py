"""One persistent WebSocket session to a Flow: send many requests, match answers whatever their order.

A session owns one connection (relay.common.ws_client: websockets' sans-I/O core in a thin asyncio shell) and the
table of its requests in flight (relay.common.link). Answers are matched by `header.request_id` in bytes mode and
by `parameters.flowrelay_rid` in json mode (a gateway makes its own request ids for json clients and echoes
`parameters`); they are read as relay.wire.answers reads them (id and status at once, routes when measured) and
handed over straight from the connection's reads. `post` queues a request without waiting, so that everything
sent in one turn of the event loop leaves in one write.

A session that drops fails the requests it had in flight with the close code as the reason (`close 1006`,
`close 1011: ...`); its owner's `maintain` task reconnects it with backoff while the run goes on. At the end
(`finish`) it sends the end-of-stream marker and waits a bounded time for the last answers; what is still in
flight then is reported as unanswered.
"""

from __future__ import annotations

import logging
import ssl

from loadtest.payloads import CORRELATION_KEY
from loadtest.sessions.base import ConnectError, Outcomes, Pending, SessionBase
from relay.common.ws_client import NO_CLOSE_FRAME, ConnectFailed, WsClient, open_ws
from relay.wire import json_codec
from relay.wire.answers import answer_reader
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError

log = logging.getLogger("flowrelay.load")


class Session(SessionBase):
    """One WebSocket connection of a load run (or an ingestion)."""

    def __init__(self, url: str, mode: str, offer: str | None, max_inflight: int, outcomes: Outcomes, index: int = 0,
                 connect_timeout_s: float = 10.0, compression: bool = False, ca_file: str | None = None,
                 docarray: str = "v1") -> None:
        super().__init__(url, max_inflight, outcomes, index, connect_timeout_s)
        self.mode = mode
        self.offer = offer
        self.compression = compression
        # wss:// to a server whose certificate a private CA signed (a self-signed relay, say): trust that CA.
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file and url.startswith("wss:") else None
        self.client: WsClient | None = None
        is_bytes = mode == "bytes"
        # bytes mode: the answers' documents are docarray < 0.30 (v1) or >= 0.30 (v2) messages.
        self._decode = answer_reader(mode, docarray)
        self._text = not is_bytes
        self._eos = (bytes_codec(docarray) if is_bytes else json_codec).END_OF_STREAM_FRAME
        self._by_param = not is_bytes

    async def _open(self) -> None:
        try:
            client = await open_ws(self.url, self._on_message, self.connection_lost, subprotocol=self.offer,
                                   compression=self.compression, ssl_context=self._ssl,
                                   timeout_s=self.connect_timeout_s)
        except ConnectFailed as exc:
            raise ConnectError(f"{self.url}: {exc}") from None
        if client.ended:  # gone again before this task resumed: its end found nothing to tell
            raise ConnectError(f"{self.url}: {client.end_reason} right after the handshake")
        client.after_read = self._after_read
        self.client = client
        self.negotiated = client.subprotocol

    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool, sent_s: float | None = None) -> None:
        entry = Pending(rid, due_s, self.clock() if sent_s is None else sent_s, docs, warmup)
        self.pending[rid] = entry
        client = self.client
        # Not open any more: the end of the connection fails what was in flight; if that has happened
        # already, this one fails now, with the same reason.
        if (client is None or not client.send(frame, self._text)) and (client is None or client.ended):
            del self.pending[rid]
            self.on_failure(entry, client.end_reason if client is not None else NO_CLOSE_FRAME, self.clock())

    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None:
        """`post`, then wait while the connection's write buffer is full."""
        self.post(rid, frame, due_s, docs, warmup)
        client = self.client
        if client is not None and client.writing_paused:
            await client.writable()

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
        # SessionBase._answered, inlined: this is the load engine's per-answer path.
        pending = self.pending
        entry = pending.pop(rid, None) if rid is not None else None
        if entry is None:
            self.late_answers += 1  # already timed out, or not ours
            return
        self.on_answer(entry, answer, answer.docs, now)
        if self.closing and not pending:
            self._settled_if_empty()

    async def _end_of_stream(self) -> None:
        client = self.client
        if client is not None and client.send(self._eos, self._text):
            client.flush()

    async def _close_connection(self) -> None:
        if self.client is not None:
            await self.client.close()
