"""The protocol a load target speaks, chosen once from its URL scheme, and the session kind that speaks it.

    ws://  wss://     WebSocket, json or bytes subprotocol   loadtest.sessions.ws.Session
    grpc:// grpcs://  the streaming `jina.JinaRPC/Call`       loadtest.sessions.grpc.GrpcSession
    http:// https://  `POST /post`, Jina's JSON model          loadtest.sessions.http.HttpSession
      with --graphql  a GraphQL query or mutation          loadtest.sessions.graphql.GraphQLSession

Every session kind is a loadtest.sessions.base.SessionBase (a relay.common.link.Link) and offers the interface
the engine drives (`LoadSession`): `connect`, `maintain` (its long-lived task, run in the worker's task group),
`has_room`, `post(rid, frame, due_s, docs, warmup)` with a pre-encoded frame (and `send`, the same but waiting
while the connection cannot take more), `pending`, `expire`, `finish`, `close`, `negotiated`, the hooks a load
model sets (`after_read`, `on_up`), and the callbacks `on_answer(entry, resp, docs, now)` / `on_failure(entry,
reason, now)`. So models, measurement, per-hop spans (from routes), outputs and thresholds are the same whatever
the protocol. The scheme also decides the frames: gRPC carries protobuf (the bytes-mode
frame), HTTP carries JSON (the json-mode frame); `--subprotocol` is a WebSocket matter.

The gRPC and HTTP sessions are imported only when used, so a WebSocket run loads neither library.
"""

from __future__ import annotations

from loadtest.config import GRPC, HTTP, LoadConfig, transport_of
from loadtest.sessions.base import Outcomes, SessionBase
from loadtest.sessions.ws import Session

# What the engine drives, whatever the protocol under it.
LoadSession = SessionBase


def open_session(cfg: LoadConfig, index: int, outcomes: Outcomes) -> LoadSession:
    """A session of the kind the target's scheme asks for (not yet connected)."""
    transport = transport_of(cfg.target)
    if transport == GRPC:
        from loadtest.sessions.grpc import GrpcSession

        return GrpcSession(cfg.target, cfg.max_inflight, outcomes, index=index,
                           connect_timeout_s=cfg.connect_timeout_s, docarray=cfg.docs.docarray)
    if transport == HTTP and cfg.graphql is not None:
        from loadtest.sessions.graphql import GraphQLSession

        return GraphQLSession(cfg.target, cfg.graphql, outcomes, index=index,
                              connect_timeout_s=cfg.connect_timeout_s)
    if transport == HTTP:
        from loadtest.sessions.http import HttpSession

        return HttpSession(cfg.target, outcomes, index=index, connect_timeout_s=cfg.connect_timeout_s)
    return Session(cfg.target, cfg.mode, cfg.offer, cfg.max_inflight, outcomes, index=index,
                   connect_timeout_s=cfg.connect_timeout_s, compression=cfg.compression,
                   ca_file=str(cfg.ca_file) if cfg.ca_file else None, docarray=cfg.docs.docarray)
