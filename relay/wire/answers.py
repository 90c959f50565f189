"""A Flow's answer as a client reads it on its hot path: request id, status and doc count at once,
routes, the full status and parameters only when something asks for them.

`decode_response_envelope` (in each codec) builds a whole `DataRequest` per answer: parameters turned
into a dict, every route and status converted, 7-11 us against an answer carrying routes. A load
generator needs the request id (or, in json mode, one parameter) and whether the answer is an error for
every answer, and the routes only to time the hops of measured answers. An `Answer` keeps the parsed
message (or JSON object) and converts a part the first time it is read; route timestamps are read as
seconds and nanos, without the well-known-type helpers.

An `Answer` offers what the load engine and ingestion read of a `DataRequest` answer (`request_id`,
`parameters`, `status`, `routes`, `route_spans()`) plus `docs` (the count) and `error` (the exception name of an error
answer, else None), so it can stand in for one. `route_spans()` reads the hops' spans without building the
routes (json stamps of one second are subtracted as their fractions); `doc_ids` (read only when asked: a
replay's comparison with a recording) lists its documents' ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from relay.wire import json_codec
from relay.wire.documents import struct_to_dict
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import STATUS_ERROR, Route, Status, timestamp_span_ns
from relay.wire.proto import jina_pb2, jina_v2_pb2
from relay.wire.proto_codec import from_status_proto

_NS = 1_000_000_000
_UNSET: Any = object()


class Answer:
    """One decoded answer; see the module docstring. Build it with a `read_*` function."""

    __slots__ = ("_obj", "_parameters", "_pb", "_routes", "_status", "docs", "error", "request_id")

    def __init__(self, request_id: str, docs: int, error: str | None, pb: Any = None,
                 obj: dict[str, Any] | None = None) -> None:
        self.request_id = request_id
        self.docs = docs
        self.error = error
        self._pb = pb
        self._obj = obj
        self._routes: list[Route] | None = None
        self._status: Status | None = _UNSET
        self._parameters: dict[str, Any] | None = _UNSET

    @property
    def routes(self) -> list[Route]:
        """Who handled the request, from when to when (server clock, ns); statuses left out."""
        routes = self._routes
        if routes is None:
            routes = self._routes = _proto_routes(self._pb) if self._pb is not None else _json_routes(self._obj)
        return routes

    def route_spans(self) -> list[tuple[str, int]]:
        """Each route entry's executor and its span in ns (`relay.wire.messages.route_spans`), read straight from
        the message: per measured answer, without building its routes."""
        if self._pb is not None:
            return [(name, end_ns - start_ns) for name, start_ns, end_ns in _proto_stamps(self._pb)
                    if start_ns and end_ns >= start_ns and name]
        return _json_route_spans(self._obj)

    @property
    def status(self) -> Status | None:
        """The header's status, in full (exception name, args, executor), or None when there is none."""
        status = self._status
        if status is _UNSET:
            if self._pb is not None:
                header = self._pb.header
                status = from_status_proto(header.status) if header.HasField("status") else None
            else:
                status = json_codec._read_status((self._obj or {}).get("header", {}).get("status"))
            self._status = status
        return status

    @property
    def parameters(self) -> dict[str, Any] | None:
        params = self._parameters
        if params is _UNSET:
            if self._pb is not None:
                pb = self._pb
                params = struct_to_dict(pb.parameters) if pb.HasField("parameters") else None
            else:
                params = (self._obj or {}).get("parameters")
            self._parameters = params
        return params

    @property
    def doc_ids(self) -> list[str] | None:
        """The ids of the answer's documents in order ("" for one without an id); None when its documents
        are opaque (`docs_bytes`)."""
        if self._pb is not None:
            data = self._pb.data
            which = data.WhichOneof("documents")
            if which == "docs_bytes":
                return None
            docs = data.docs.docs
            if docs and hasattr(docs[0], "id"):
                return [d.id for d in docs]
            # docarray >= 0.30: a DocProto map, the id a text node under "id".
            return [d.data["id"].text if "id" in d.data else "" for d in docs]
        data = (self._obj or {}).get("data")
        if isinstance(data, dict):
            data = data.get("docs")
        if not isinstance(data, list):
            return []
        return [(d.get("id") or "") if isinstance(d, dict) else "" for d in data]


def _proto_stamps(pb: Any) -> Iterator[tuple[str, int, int]]:
    """Each route entry's executor, start and end (ns; 0 when unset: an unset Timestamp reads as 0 s 0 ns, and no
    real stamp is the epoch itself). Seconds and nanos are read directly, not through Timestamp's methods."""
    for r in pb.routes:
        start, end = r.start_time, r.end_time
        yield r.executor, start.seconds * _NS + start.nanos, end.seconds * _NS + end.nanos


def _proto_routes(pb: Any) -> list[Route]:
    return [Route(name, start_ns or None, end_ns or None) for name, start_ns, end_ns in _proto_stamps(pb)]


def _json_routes(obj: dict[str, Any] | None) -> list[Route]:
    routes = (obj or {}).get("routes") or ()
    return [json_codec._read_route(r) for r in routes if isinstance(r, dict)]


def _json_route_spans(obj: dict[str, Any] | None) -> list[tuple[str, int]]:
    out = []
    for r in (obj or {}).get("routes") or ():
        if not isinstance(r, dict):
            continue
        name = r.get("executor")
        start = r.get("startTime") or r.get("start_time")
        end = r.get("endTime") or r.get("end_time")
        if not (name and isinstance(name, str) and isinstance(start, str) and isinstance(end, str)):
            continue
        try:
            span_ns = timestamp_span_ns(start, end)
        except (ValueError, IndexError):
            continue
        if span_ns >= 0:
            out.append((name, span_ns))
    return out


def _error_name(status: Any) -> str:
    name = status.exception.name if status.HasField("exception") else ""
    return name or "error"


def _read_proto(pb: Any, payload: bytes, what: str) -> Answer:
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a {what}: {exc}") from None
    header = pb.header
    error = None
    if header.HasField("status"):
        status = header.status
        if status.code >= STATUS_ERROR:
            error = _error_name(status)
    docs = len(pb.data.docs.docs)  # 0 when the answer carries `docs_bytes` or nothing
    return Answer(header.request_id, docs, error, pb=pb)


def read_proto_answer(payload: bytes) -> Answer:
    """A docarray < 0.30 `jina.DataRequestProto` answer. Raises MalformedPayload if unparsable."""
    return _read_proto(jina_pb2.DataRequestProto(), payload, "DataRequestProto")


def read_proto_v2_answer(payload: bytes) -> Answer:
    """A docarray >= 0.30 `jina_v2.DataRequestProto` answer. Raises MalformedPayload if unparsable."""
    return _read_proto(jina_v2_pb2.DataRequestProto(), payload, "docarray v2 DataRequestProto")


def read_json_answer(payload: str | bytes) -> Answer:
    """A json-mode answer (snake_case or camelCase keys). Its `request_id` is the gateway's own; a client
    that chose its own id reads it from `parameters`. Raises a WireError if it is not an answer."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"invalid JSON: {exc}") from None
    header = obj.get("header") if isinstance(obj, dict) else None
    if not isinstance(header, dict):
        raise BadRequest("a response must be a JSON object with a 'header'")
    error = None
    status = header.get("status")
    if isinstance(status, dict) and int(status.get("code", 0)) >= STATUS_ERROR:
        exc_info = status.get("exception")
        error = (exc_info.get("name") if isinstance(exc_info, dict) else None) or "error"
    data = obj.get("data")
    if isinstance(data, dict):
        data = data.get("docs")
    rid = header.get("request_id") or header.get("requestId") or ""
    return Answer(rid, len(data) if isinstance(data, list) else 0, error, obj=obj)


def answer_reader(mode: str, docarray: str = "v1") -> Callable[[Any], Answer]:
    """The reader for a session's answers: `bytes` mode (docarray `v1` or `v2`) or `json`."""
    if mode != "bytes":
        return read_json_answer
    if docarray not in ("v1", "v2"):
        raise ValueError(f"docarray must be v1 or v2, not {docarray!r}")
    return read_proto_v2_answer if docarray == "v2" else read_proto_answer
