"""One WebSocket link to an upstream Flow's gateway, on the client shell both halves share
(relay.common.ws_client: websockets' sans-I/O core in an asyncio protocol of our own).

Requests go out as frames of the pool's codec (bytes by default; json puts the link's request id in
`parameters.flowrelay_upstream_rid`, which a gateway echoes, and takes it out again on the way back). Answers are
matched by id as they are read (`data_received` -> `_on_message`) and handed straight back: no task or future per
request. The link's `maintain` task (relay.common.link) pings the upstream every `PING_INTERVAL_S` while it is up
(an upstream that did not answer the previous ping is closed, 1011) and reconnects it with backoff when it ends.

Imports relay.common (link, ws_client), relay.upstream.link and relay.wire.
"""

from __future__ import annotations

import anyio

from relay.common.link import LinkDown
from relay.common.ws_client import ConnectFailed, WsClient, open_ws
from relay.upstream.link import CORRELATION_KEY, LinkHost, UpstreamLink
from relay.wire.errors import WireError

PING_INTERVAL_S = 20.0


class WsLink(UpstreamLink):
    """One persistent WebSocket session to the upstream gateway, with its requests in flight."""

    def __init__(self, pool: LinkHost, index: int) -> None:
        super().__init__(pool, index)
        self.is_bytes = pool.cfg.subprotocol == "bytes"
        self.client: WsClient | None = None

    async def _open(self) -> None:
        cfg = self.cfg
        try:
            client = await open_ws(cfg.url, self._on_message, self._on_end, subprotocol=cfg.subprotocol,
                                   max_size=cfg.max_message_size, timeout_s=cfg.connect_timeout_s)
        except ConnectFailed as exc:
            if exc.status is not None:
                raise LinkDown(f"upstream {cfg.url} refused the handshake: HTTP {exc.status}") from None
            raise LinkDown(f"upstream {cfg.url} unreachable: {exc}") from None
        if client.ended:  # gone again before this task resumed: its end found nothing to tell
            raise LinkDown(f"upstream {cfg.url} connection ended: {client.end_reason}")
        self.client = client

    def _send_frame(self, frame: bytes) -> None:
        assert self.client is not None
        self.client.send(frame, not self.is_bytes)

    def _on_message(self, message: bytes) -> None:
        try:
            resp = self.pool.decode_answer(message)
        except WireError as err:
            self.logger.warning("%s: unreadable answer: %s", self, err)
            return
        if self.is_bytes:
            rid = resp.request_id
        else:
            params = resp.parameters or {}
            rid = params.pop(CORRELATION_KEY, None)
        self._answered(rid, resp)

    def _on_end(self, reason: str) -> None:
        self.connection_lost(f"upstream {self.cfg.url} connection ended: {reason}")

    async def _carry(self) -> None:
        """While connected: a ping per interval; an upstream that did not answer the previous one is closed."""
        ended = self._ended
        assert ended is not None
        while True:
            with anyio.move_on_after(PING_INTERVAL_S):
                await ended.wait()
                return
            client = self.client
            if client is None or not client.is_open:
                continue
            if client.pong_seen:
                client.ping()
            else:
                client.begin_close(1011, "keepalive ping timeout")

    async def _close_connection(self) -> None:
        if self.client is not None:
            await self.client.close()
