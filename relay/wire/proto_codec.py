"""The `bytes` subprotocol: one BINARY frame is one serialized `jina.DataRequestProto`, both ways.

The messages come from our own `proto/jina.proto` and `proto/docarray.proto`, which carry the field
numbers of jina 3.34 and docarray 0.21, so a real gateway and jina's own client read what we write,
byte for byte. End of stream is the single byte `0x00`; an empty frame is an error on `/` (a real
gateway crashes on it). The codec is symmetric: requests and responses are the same message.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from relay.wire.documents import Document, struct_to_dict
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import (
    BYTES_END_OF_STREAM,
    END_OF_STREAM,
    DataRequest,
    EndOfStream,
    ExceptionInfo,
    Route,
    Status,
)
from relay.wire.proto import jina_pb2

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


def from_proto(pb: jina_pb2.DataRequestProto) -> DataRequest:
    """Our DataRequest from a parsed DataRequestProto."""
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
    which = pb.data.WhichOneof("documents")
    if which == "docs":
        req.docs = [Document.from_proto(d) for d in pb.data.docs.docs]
    elif which == "docs_bytes":
        req.docs_bytes = pb.data.docs_bytes
    return req


def to_proto(req: DataRequest) -> jina_pb2.DataRequestProto:
    """A DataRequestProto holding `req`."""
    pb = jina_pb2.DataRequestProto()
    h = pb.header
    h.request_id = req.request_id
    if req.exec_endpoint is not None:
        h.exec_endpoint = req.exec_endpoint
    if req.target_executor is not None:
        h.target_executor = req.target_executor
    if req.status is not None:
        status_to_proto(req.status, h.status)
    if req.parameters is not None:
        # Mark the Struct present even when empty: a gateway always sends `parameters` (`12 00`).
        pb.parameters.SetInParent()
        pb.parameters.update(req.parameters)
    for r in req.routes:
        rp = pb.routes.add()
        rp.executor = r.executor
        if r.start_ns is not None:
            rp.start_time.FromNanoseconds(r.start_ns)
        if r.end_ns is not None:
            rp.end_time.FromNanoseconds(r.end_ns)
        if r.status is not None:
            status_to_proto(r.status, rp.status)
    if req.docs is not None:
        docs_pb = pb.data.docs
        docs_pb.SetInParent()
        for d in req.docs:
            d.fill_proto(docs_pb.docs.add())
    elif req.docs_bytes is not None:
        pb.data.docs_bytes = req.docs_bytes
    return pb


def decode(payload: bytes) -> DataRequest:
    """A DataRequest from one serialized DataRequestProto. Raises MalformedPayload if unparsable."""
    pb = jina_pb2.DataRequestProto()
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a DataRequestProto: {exc}") from None
    return from_proto(pb)


def encode(req: DataRequest) -> bytes:
    """The serialized DataRequestProto for `req`.

    Deterministic: map entries (Struct keys in `tags`/`parameters`, `scores`) sorted by key. Plain
    serialization writes them in hash-table order, which changes from one process to the next.
    """
    return to_proto(req).SerializeToString(deterministic=True)


def decode_request(payload: bytes) -> DataRequest | EndOfStream:
    """A client's BINARY frame as a request, or END_OF_STREAM for the single byte 0x00."""
    if payload == BYTES_END_OF_STREAM:
        return END_OF_STREAM
    if not payload:
        raise BadRequest("empty binary frame: a request is a DataRequestProto, end of stream is 0x00")
    return decode(payload)


encode_response = encode
encode_request = encode
decode_response = decode


def decode_response_envelope(payload: bytes) -> tuple[DataRequest, int]:
    """A response without building its Documents: the request with `docs` None, and the doc count."""
    pb = jina_pb2.DataRequestProto()
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a DataRequestProto: {exc}") from None
    count = len(pb.data.docs.docs) if pb.data.WhichOneof("documents") == "docs" else 0
    pb.ClearField("data")
    return from_proto(pb), count
