"""The `bytes` subprotocol: one BINARY frame is one serialized `jina.DataRequestProto`, both ways.

The messages come from our own `proto/jina.proto` and `proto/docarray.proto`, which carry the field
numbers of jina 3.34 and docarray 0.21, so a real gateway and jina's own client read what we write,
byte for byte. End of stream is the single byte `0x00`; an empty frame is an error on `/` (a real
gateway crashes on it). The codec is symmetric: requests and responses are the same message.

The fast path. `decode_request` (a client's frame, on the relay) and `decode_lazy` (an upstream Flow's
answer) read the header and parameters but leave the documents in the parsed message, kept as
`DataRequest.raw`, until something needs them as `Document`s (`req.load_docs()`). The encoders then
answer from that same message while the documents are still in it: header, parameters (unless
replaced) and routes are written over, the documents go back out as they are. Converting one document
to a `Document` and back costs about 3 us; most requests through an echo, sleep or upper chain now never
pay it. The output is the same bytes the `Document` path writes, for anything the Document model holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from relay.wire.documents import Document, struct_to_dict
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import BYTES_END_OF_STREAM, END_OF_STREAM, DataRequest, ExceptionInfo, Route, Status
from relay.wire.proto import jina_pb2

if TYPE_CHECKING:
    from relay.wire.messages import EndOfStream  # END_OF_STREAM's type, for annotations

SUBPROTOCOL = "bytes"
END_OF_STREAM_FRAME = BYTES_END_OF_STREAM


def from_status_proto(pb: jina_pb2.StatusProto) -> Status:
    """Our Status from a StatusProto (what `/dry_run` answers in bytes mode)."""
    return _status_from_proto(pb)


def _status_from_proto(pb: jina_pb2.StatusProto) -> Status:
    info = None
    if pb.HasField("exception"):
        e = pb.exception
        info = ExceptionInfo(name=e.name, args=list(e.args), stacks=list(e.stacks), executor=e.executor)
    return Status(code=pb.code, description=pb.description, exception=info)


def status_to_proto(status: Status, pb: jina_pb2.StatusProto) -> None:
    pb.code = status.code  # type: ignore[assignment]
    if status.description:
        pb.description = status.description
    exc = status.exception
    if exc is not None:
        pb.exception.name = exc.name
        pb.exception.args.extend(exc.args)
        pb.exception.stacks.extend(exc.stacks)
        pb.exception.executor = exc.executor


def encode_status(status: Status) -> bytes:
    """A dry run's answer in bytes (WebSocket `/dry_run`, gRPC `dry_run`): a StatusProto, empty for success."""
    pb = jina_pb2.StatusProto()
    if status.is_error:
        status_to_proto(status, pb)
    return pb.SerializeToString()


def from_proto(pb: jina_pb2.DataRequestProto) -> DataRequest:
    """Our DataRequest from a parsed DataRequestProto."""
    req = envelope_from_proto(pb)
    which = pb.data.WhichOneof("documents")
    if which == "docs":
        req.docs = [Document.from_proto(d) for d in pb.data.docs.docs]
    elif which == "docs_bytes":
        req.docs_bytes = pb.data.docs_bytes
    return req


def envelope_from_proto(pb: Any) -> DataRequest:
    """Header, parameters and routes of a DataRequestProto (`data` left out). Takes the docarray < 0.30
    and >= 0.30 envelopes alike: both hold jina.HeaderProto and jina.RouteProto."""
    h = pb.header
    req = DataRequest(
        request_id=h.request_id,
        exec_endpoint=h.exec_endpoint if h.HasField("exec_endpoint") else None,
        target_executor=h.target_executor if h.HasField("target_executor") else None,
        parameters=struct_to_dict(pb.parameters) if pb.HasField("parameters") else None,
        status=_status_from_proto(h.status) if h.HasField("status") else None,
    )
    for r in pb.routes:
        req.routes.append(
            Route(
                executor=r.executor,
                start_ns=r.start_time.ToNanoseconds() if r.HasField("start_time") else None,
                end_ns=r.end_time.ToNanoseconds() if r.HasField("end_time") else None,
                status=_status_from_proto(r.status) if r.HasField("status") else None,
            )
        )
    return req


def to_proto(req: DataRequest) -> jina_pb2.DataRequestProto:
    """A DataRequestProto holding `req`."""
    pb = jina_pb2.DataRequestProto()
    envelope_to_proto(req, pb)
    if req.docs is not None:
        docs_pb = pb.data.docs
        docs_pb.SetInParent()
        for d in req.docs:
            d.fill_proto(docs_pb.docs.add())
    elif req.docs_bytes is not None:
        pb.data.docs_bytes = req.docs_bytes
    return pb


def envelope_to_proto(req: DataRequest, pb: Any) -> None:
    """Write header, parameters and routes of `req` into an empty DataRequestProto of either generation."""
    _header_to_proto(req, pb.header)
    if req.parameters is not None:
        # Mark the Struct present even when empty: a gateway always sends `parameters` (`12 00`).
        pb.parameters.SetInParent()
        pb.parameters.update(req.parameters)
    _routes_to_proto(req.routes, pb.routes)


def _header_to_proto(req: DataRequest, h: jina_pb2.HeaderProto) -> None:
    h.request_id = req.request_id
    if req.exec_endpoint is not None:
        h.exec_endpoint = req.exec_endpoint
    if req.target_executor is not None:
        h.target_executor = req.target_executor
    if req.status is not None:
        status_to_proto(req.status, h.status)


_NS = 1_000_000_000


def _routes_to_proto(routes: list[Route], out: Any) -> None:
    for r in routes:
        rp = out.add()
        rp.executor = r.executor
        # Seconds and nanos set directly: what Timestamp.FromNanoseconds writes (floor division, so nanos
        # is never negative), without its pure-Python range check, a third of a route's cost.
        if r.start_ns is not None:
            t = rp.start_time
            t.seconds, t.nanos = divmod(r.start_ns, _NS)
        if r.end_ns is not None:
            t = rp.end_time
            t.seconds, t.nanos = divmod(r.end_ns, _NS)
        if r.status is not None:
            status_to_proto(r.status, rp.status)


def parse(payload: bytes) -> jina_pb2.DataRequestProto:
    """A parsed DataRequestProto. Raises MalformedPayload if unparsable."""
    pb = jina_pb2.DataRequestProto()
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a DataRequestProto: {exc}") from None
    return pb


def decode(payload: bytes) -> DataRequest:
    """A DataRequest from one serialized DataRequestProto. Raises MalformedPayload if unparsable."""
    return from_proto(parse(payload))


def decode_lazy(payload: bytes) -> DataRequest:
    """As `decode`, but documents stay in the parsed message (`req.raw`) until `req.load_docs()`.

    Only a message that holds documents is kept: without any there is nothing to spare, and `docs_bytes`
    is read as `decode` reads it. Raises MalformedPayload if unparsable; what the Document model cannot
    hold (a sparse array) is found only when the documents are converted.
    """
    pb = parse(payload)
    req = envelope_from_proto(pb)
    which = pb.data.WhichOneof("documents")
    if which == "docs":
        req.raw = pb
        req.raw_docs = pb.data.docs.docs
        req.raw_parameters = req.parameters
    elif which == "docs_bytes":
        req.docs_bytes = pb.data.docs_bytes
    return req


def encode(req: DataRequest) -> bytes:
    """The serialized DataRequestProto for `req`.

    Deterministic: map entries (Struct keys in `tags`/`parameters`, `scores`) sorted by key. Plain
    serialization writes them in hash-table order, which changes from one process to the next.
    A request whose documents are still in protobuf form is written from its own message (see the
    module docstring), which this changes.
    """
    raw = req.raw
    if raw is not None and req.docs is None and req.docs_bytes is None:
        return _encode_raw(req, raw)
    return to_proto(req).SerializeToString(deterministic=True)


def encode_response(req: DataRequest) -> bytes:
    """`encode`, for an answer to a client: top-level arrays without a `cls_name` are marked "numpy" first (in
    Documents or in documents still in protobuf form), as Jina 3.15+ gateways do in bytes mode (jina's own client
    reads an unmarked array as None). An upstream's bytes answer is spliced (`req.spliced`, relay.wire.splice)."""
    spliced = req.spliced
    if spliced is not None and spliced.subprotocol == SUBPROTOCOL:
        return spliced.encode(req)  # type: ignore[no-any-return]
    return _encode_marked(req)


def _encode_raw(req: DataRequest, pb: jina_pb2.DataRequestProto) -> bytes:
    """Write the envelope of `req` over the message its documents are in, and serialize it.

    Each part is written whole, as `envelope_to_proto` writes it into a new message, so the bytes are
    those of the Document path: the header (fields a client may add, such as `timeout`, are dropped, as
    `from_proto` drops them), the routes, and the parameters unless `parameters` is still the dict read
    from this message, in which case the message's own Struct is what that dict came from.
    """
    pb.ClearField("header")
    _header_to_proto(req, pb.header)
    params = req.parameters
    if params is not req.raw_parameters:
        pb.ClearField("parameters")
        if params is not None:
            pb.parameters.SetInParent()
            if params:
                pb.parameters.update(params)
        req.raw_parameters = params
    pb.ClearField("routes")
    if req.routes:
        _routes_to_proto(req.routes, pb.routes)
    return pb.SerializeToString(deterministic=True)


def _mark_numpy(docs: list[Document]) -> None:
    for doc in docs:
        for arr in (doc.embedding, doc.tensor):
            if arr is not None and not arr.cls_name:
                arr.cls_name = "numpy"


def mark_numpy_proto(docs: Any) -> bool:
    """Mark the unmarked arrays of `DocumentProto`s "numpy"; whether there was one."""
    marked = False
    for d in docs:
        if d.HasField("embedding"):
            arr = d.embedding
            if not arr.cls_name:
                arr.cls_name = "numpy"
                marked = True
        if d.HasField("tensor"):
            arr = d.tensor
            if not arr.cls_name:
                arr.cls_name = "numpy"
                marked = True
    return marked


def share_proto_docs(src: DataRequest, dst: DataRequest) -> bool:
    """Give `dst` (a request built from `src`, such as its copy for an upstream Flow) the documents of `src` if
    they are still in protobuf form, without converting or copying them: in the same message. The encoders write
    the envelope (header, parameters unless unchanged, routes) over the message wholesale right before they
    serialize it, and never the documents, so requests sharing a message each encode as their own; `dst` with
    `src`'s very `parameters` dict keeps the message's own Struct. False, and `dst` unchanged, when the
    documents are not in protobuf form."""
    if src.docs_proto is None:
        return False
    dst.docs = None
    dst.raw, dst.raw_docs, dst.raw_parameters = src.raw, src.raw_docs, src.raw_parameters
    return True


def decode_request(payload: bytes, decode: Callable[[bytes], DataRequest] | None = None) -> DataRequest | EndOfStream:
    """A client's BINARY frame as a request, or END_OF_STREAM for the single byte 0x00. The documents stay in
    protobuf form until needed (`decode_lazy`); `decode` reads the frame instead (the docarray >= 0.30 codec's)."""
    if payload == BYTES_END_OF_STREAM:
        return END_OF_STREAM
    if not payload:
        raise BadRequest("empty binary frame: a request is a DataRequestProto, end of stream is 0x00")
    return decode_lazy(payload) if decode is None else decode(payload)


def encode_request(req: DataRequest) -> bytes:
    """`encode`, for a request to a Flow: top-level arrays without a `cls_name` are marked "numpy" first, as jina's
    own client sends them (a docarray < 0.30 Executor reads an unmarked array as None)."""
    return _encode_marked(req)


def _encode_marked(req: DataRequest) -> bytes:
    """`encode`, top-level arrays without a `cls_name` marked "numpy" first (in Documents or in documents still in
    protobuf form)."""
    raw = req.raw
    if raw is not None and req.docs is None and req.docs_bytes is None:
        mark_numpy_proto(req.raw_docs)
        return _encode_raw(req, raw)
    if req.docs:
        _mark_numpy(req.docs)
    return to_proto(req).SerializeToString(deterministic=True)


decode_response = decode


def decode_response_envelope(payload: bytes) -> tuple[DataRequest, int]:
    """A response without building its Documents: the request with `docs` None, and the doc count."""
    return envelope_and_count(parse(payload))


def envelope_and_count(pb: Any) -> tuple[DataRequest, int]:
    """A parsed response of either docarray generation, without its Documents: the request with `docs` None,
    and how many documents it holds."""
    count = len(pb.data.docs.docs) if pb.data.WhichOneof("documents") == "docs" else 0
    return envelope_from_proto(pb), count
