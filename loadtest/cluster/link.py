"""One coordinator connection as whole messages: an anyio byte stream with the protocol's framing.

Both ends use it: the coordinator for each worker, a worker for its coordinator. `send` may be called by
several tasks at once (heartbeats, rows, pongs): a lock keeps each message's bytes together on the stream.
Imports anyio and loadtest.cluster.messages.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import anyio
import anyio.abc

from loadtest.cluster.messages import FrameReader, encode

# What a peer that closed, reset or vanished looks like to a reader or a writer.
GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Connection:
    """Messages in and out of `stream`. `reader` and `pending` carry over what an earlier owner of the same
    socket had read but not yet handled (a worker's blocking handshake, or an earlier event loop)."""

    def __init__(self, stream: anyio.abc.ByteStream, reader: FrameReader | None = None,
                 pending: deque[dict[str, Any]] | None = None) -> None:
        self.stream = stream
        self.reader = reader if reader is not None else FrameReader()
        self.pending: deque[dict[str, Any]] = pending if pending is not None else deque()
        self._send_lock = anyio.Lock()

    async def receive(self) -> dict[str, Any]:
        """The next message; raises anyio.EndOfStream when the peer closed (ProtocolError on garbage)."""
        while not self.pending:
            data = await self.stream.receive()
            self.pending.extend(self.reader.feed(data))
        return self.pending.popleft()

    async def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)
        async with self._send_lock:
            await self.stream.send(data)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()

    def peer(self) -> str:
        try:
            host, port = self.stream.extra(anyio.abc.SocketAttribute.remote_address)[:2]
        except (anyio.TypedAttributeLookupError, TypeError, ValueError):
            return "?"
        return f"{host}:{port}"
