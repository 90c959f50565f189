"""What every link to an upstream Flow is (WebSocket: relay.upstream.ws; gRPC: relay.upstream.grpc), on the link
base every client link shares (relay.common.link: the table of requests in flight, expire, fail-all, reconnect with
backoff, bounded close).

An upstream link forwards the relay's requests and hands each answer straight back, from the read that brings it,
to whoever waits for it (`Done`): no task or future per request. Its entries are `(done, sent_at)`, with `sent_at`
on `time.monotonic()`, which the pool's sweep passes to `expire`. A link knows its pool only through `LinkHost`:
its configuration and codec, and the three things it tells it (up, down, room freed).

Imports relay.common.link and relay.wire.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from relay.common.link import Backoff, Link
from relay.wire.messages import DataRequest

log = logging.getLogger("flowrelay.upstream")

# Distinct from the load engine's key, so that a load test through a relay keeps its own correlation.
CORRELATION_KEY = "flowrelay_upstream_rid"

# What a link calls once per request: with the upstream's answer, or with None and the cause of failure.
Done = Callable[[DataRequest | None, str | None], None]
# A request in flight on a link: whom to answer, and when it was sent (time.monotonic()).
Forwarded = tuple[Done, float]


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


class LinkHost(Protocol):
    """What a link needs of its pool (relay.upstream.pool.UpstreamPool)."""

    cfg: UpstreamConfig
    codec: Any  # relay.wire's json_codec, proto_codec or proto_v2_codec
    decode_answer: Callable[[bytes], DataRequest]

    def link_up(self, link: UpstreamLink) -> None: ...
    def link_down(self, link: UpstreamLink, reason: str) -> None: ...
    def room_freed(self) -> None: ...


def deliver(done: Done, resp: DataRequest | None, error: str | None) -> None:
    """Call `done`; a failure in one answer's handling must not break the link that carried it."""
    try:
        done(resp, error)
    except Exception:
        log.exception("handling an upstream answer failed")


class UpstreamLink(Link[Forwarded]):
    """One connection to the upstream gateway and the requests in flight on it."""

    logger = log
    backoff = Backoff(first_s=0.05, cap_s=2.0)
    is_bytes = True  # request ids travel in header.request_id (else in parameters, see CORRELATION_KEY)

    def __init__(self, pool: LinkHost, index: int) -> None:
        super().__init__(index, pool.cfg.max_inflight)
        self.pool = pool
        self.cfg = pool.cfg
        self.stats = LinkStats()

    def __str__(self) -> str:
        return f"upstream link {self.index} to {self.cfg.url}"

    @staticmethod
    def _sent_at(entry: Forwarded) -> float:
        return entry[1]

    def send(self, rid: str, req: DataRequest, done: Done) -> None:
        """Forward `req` as request `rid`; `done` is called once with the answer or the cause of failure. On a
        connection that has just ended the end fails everything in flight, this one included."""
        frame = self.pool.codec.encode_request(req)
        self.pending[rid] = (done, time.monotonic())
        self.stats.forwarded += 1
        self._send_frame(frame)

    @abstractmethod
    def _send_frame(self, frame: bytes) -> None:
        """Put one encoded request on the connection."""

    def _answered(self, rid: str | None, resp: DataRequest) -> None:
        """The upstream's answer for `rid`: to whoever waits for it (nobody, when it timed out already)."""
        entry = self.pending.pop(rid, None) if rid is not None else None
        if entry is not None:
            self.stats.answered += 1
            deliver(entry[0], resp, None)
            self.pool.room_freed()

    def fail(self, entries: list[Forwarded], reason: str) -> None:
        for done, _ in entries:
            self.stats.failed += 1
            deliver(done, None, reason)
        self.pool.room_freed()

    def _up(self) -> None:
        self.pool.link_up(self)

    def _down(self, reason: str) -> None:
        self.pool.link_down(self, reason)
