"""The protocol a load target speaks, chosen once from its URL scheme, and the session kind that speaks it.

    ws://  wss://     WebSocket, json or bytes subprotocol   loadtest.sessions.ws.Session
    grpc:// grpcs://  the streaming `jina.JinaRPC/Call`       loadtest.sessions.grpc.GrpcSession
    http:// https://  `POST /post`, Jina's JSON model          loadtest.sessions.http.HttpSession
      with --graphql  a GraphQL query or mutation          loadtest.sessions.graphql.GraphQLSession

Every session kind offers the interface the engine drives (`LoadSession`): `connect`, `can_send`,
`send(rid, frame, due_s, docs, warmup)` with a pre-encoded frame (and `post`, the same without
waiting), `pending`, `expire`, `finish`,
`close`, `negotiated`, and the callbacks `on_answer(entry, resp, docs, now)` / `on_failure(entry,
reason, now)`. So models, measurement, per-hop spans (from routes), outputs and thresholds are the same
whatever the protocol. The scheme also decides the frames: gRPC carries protobuf (the bytes-mode
frame), HTTP carries JSON (the json-mode frame); `--subprotocol` is a WebSocket matter.

The gRPC and HTTP sessions are imported only when used, so a WebSocket run loads neither library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from loadtest.config import GRPC, HTTP, LoadConfig, transport_of
from loadtest.sessions.base import AnswerCallback, FailureCallback, Pending
from loadtest.sessions.ws import Session


class LoadSession(Protocol):
    """What the engine needs of a session, whatever the protocol under it."""

    pending: dict[str, Pending]
    connected: bool
    negotiated: str | None
    reconnects: int
    late_answers: int

    @property
    def can_send(self) -> bool: ...
    async def connect(self) -> None: ...
    async def send(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool) -> None: ...
    def post(self, rid: str, frame: bytes, due_s: float, docs: int, warmup: bool,
             sent_s: float | None = None) -> None:
        """`send` without waiting (the dispatcher sends many per turn of the event loop)."""
        ...
    def expire(self, older_than_s: float) -> list[Pending]: ...
    async def finish(self, grace_s: float) -> list[Pending]: ...
    async def close(self) -> None: ...


def open_session(
    cfg: LoadConfig,
    index: int,
    clock: Callable[[], float],
    on_answer: AnswerCallback,
    on_failure: FailureCallback,
) -> LoadSession:
    """A session of the kind the target's scheme asks for (not yet connected)."""
    transport = transport_of(cfg.target)
    if transport == GRPC:
        from loadtest.sessions.grpc import GrpcSession

        return GrpcSession(cfg.target, cfg.max_inflight, clock, on_answer, on_failure, index=index,
                           connect_timeout_s=cfg.connect_timeout_s, docarray=cfg.docs.docarray)
    if transport == HTTP and cfg.graphql is not None:
        from loadtest.sessions.graphql import GraphQLSession

        return GraphQLSession(cfg.target, cfg.graphql, clock, on_answer, on_failure, index=index,
                              connect_timeout_s=cfg.connect_timeout_s)
    if transport == HTTP:
        from loadtest.sessions.http import HttpSession

        return HttpSession(cfg.target, clock, on_answer, on_failure, index=index,
                           connect_timeout_s=cfg.connect_timeout_s)
    return Session(cfg.target, cfg.mode, cfg.offer, cfg.max_inflight, clock, on_answer, on_failure, index=index,
                   connect_timeout_s=cfg.connect_timeout_s, compression=cfg.compression,
                   ca_file=str(cfg.ca_file) if cfg.ca_file else None, docarray=cfg.docs.docarray)
