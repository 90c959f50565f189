"""The `bytes` subprotocol of a docarray >= 0.30 Flow: `jina_v2.DataRequestProto`, documents as `DocProto` maps.

Jina gateways built on docarray >= 0.30 speak only `bytes`, and their `data.docs` is a
`DocListProto` of `DocProto {map<string, NodeProto> data}`: one entry per field of the Executor's
schema (JINA-WIRE.md section 5.7). Everything else in the envelope (header, parameters, routes, status)
is the same as in docarray < 0.30, and is handled by the same code (`proto_codec.envelope_*`). This
module has `proto_codec`'s functions, so a caller picks one module or the other (see
`relay.wire.codecs.bytes_codec`) and uses it the same way.

Our one Document model maps onto the map keys of docarray's `TextDoc`, as docarray 0.41 writes them:

    Document      DocProto key   NodeProto
    id            "id"           {text: id, type: "id"}        (left out when unset: see below)
    text          "text"         {text: ...}
    uri           "url"          {text: ..., type: "text_url"}
    embedding     "embedding"    {ndarray: {dense: ...}, type: "ndarray_embedding"}
    blob          "bytes_"       {blob: ...}
    tensor        "tensor"       {ndarray: {dense: ...}, type: "ndarray"}   (only when set)
    tags          "tags"         {dict: {key: node, ...}}                    (only when non-empty)
    chunks        "chunks"       {doc_array: {docs: [...]}}                  (only when non-empty)
    matches       "matches"      {doc_array: {docs: [...]}}                  (only when non-empty)

Writing: the TextDoc keys `text`, `url`, `embedding`, `bytes_` are always present, unset ones as an empty
`NodeProto {}` (how docarray writes None). An unset `id` is left out, so the gateway's docarray gives
the document a fresh id (an empty node would make the id None). `tags`, `chunks`, `matches` and
`tensor` are the fields of docarray's `LegacyDocument` (the schema of an Executor whose documents are
not typed); a schema without them, such as TextDoc, drops them silently in the gateway. Tag values
become `text`, `boolean`, `integer` (int32) or `float` nodes, nested dicts `dict`, lists `list`. The
other docarray < 0.30 fields (parent_id, granularity, adjacency, mime_type, weight, modality, offset,
location, scores, evaluations) have no place in a v2 schema and are not written.

Reading: the keys above fill their fields (`blob` is read like `bytes_`, so a LegacyDocument's
`blob` comes back too); every other key of the map goes into `tags` under its own name, so nothing a
schema carries is lost on the way back: scalars as they are, `dict` as a dict, `list`/`set`/`tuple` as
a list, `ndarray` as a (nested) list of numbers, `blob` as base64 text, a nested `doc` as a dict and a
`doc_array` as a list of dicts. Empty nodes (None) of unknown keys are skipped. Entries of a `tags`
dict node win over same-named top-level keys.

Map entries are written sorted by key (deterministic serialization). docarray writes them in the
order of its hash table, which is seeded per process, so no encoder can reproduce a capture byte for
byte; a capture re-serialized deterministically is byte-identical to what we write for the same request.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.message import DecodeError

from relay.wire.documents import Document, NdArray
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import BYTES_END_OF_STREAM, DataRequest, EndOfStream
from relay.wire.proto import docarray_v2_pb2, jina_v2_pb2
from relay.wire.proto_codec import decode_request as proto_codec_decode_request
from relay.wire.proto_codec import (
    envelope_and_count,
    envelope_from_proto,
    envelope_to_proto,
    from_status_proto,
)

__all__ = [
    "END_OF_STREAM_FRAME",
    "SUBPROTOCOL",
    "decode",
    "decode_request",
    "decode_response",
    "decode_response_envelope",
    "doc_from_proto",
    "doc_to_proto",
    "encode",
    "encode_request",
    "encode_response",
    "from_proto",
    "from_status_proto",
    "to_proto",
]

SUBPROTOCOL = "bytes"
END_OF_STREAM_FRAME = BYTES_END_OF_STREAM

# docarray's class names (`NodeProto.type`) for the values we write.
TYPE_ID = "id"
TYPE_URL = "text_url"  # TextDoc.url is a TextUrl
TYPE_EMBEDDING = "ndarray_embedding"  # TextDoc.embedding (AnyEmbedding) holding a numpy array
TYPE_NDARRAY = "ndarray"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

NodeProto = docarray_v2_pb2.NodeProto
DocProto = docarray_v2_pb2.DocProto


# ---- Document <-> DocProto ---------------------------------------------------------------------


def doc_to_proto(doc: Document, pb: DocProto) -> None:
    """Write `doc` into an (empty) DocProto, with TextDoc's keys (see the module docstring)."""
    data = pb.data
    if doc.id is not None:
        node = data["id"]
        node.text = doc.id
        node.type = TYPE_ID
    node = data["text"]
    if doc.text is not None:
        node.text = doc.text
    node = data["url"]
    if doc.uri is not None:
        node.text = doc.uri
        node.type = TYPE_URL
    node = data["embedding"]
    if doc.embedding is not None:
        _ndarray_to_node(doc.embedding, node, TYPE_EMBEDDING)
    node = data["bytes_"]
    if doc.blob is not None:
        node.blob = doc.blob
    if doc.tensor is not None:
        _ndarray_to_node(doc.tensor, data["tensor"], TYPE_NDARRAY)
    if doc.tags:
        entries = data["tags"].dict
        entries.SetInParent()
        for key, value in doc.tags.items():
            value_to_node(value, entries.data[key], f"tags.{key}")
    for name in ("chunks", "matches"):
        children = getattr(doc, name)
        if children:
            docs = data[name].doc_array
            for child in children:
                doc_to_proto(child, docs.docs.add())


def doc_from_proto(pb: DocProto) -> Document:
    """A Document from a DocProto of any schema: known keys fill their fields, the rest go into tags."""
    doc = Document()
    extra: dict[str, Any] = {}
    explicit: dict[str, Any] | None = None
    for key, node in pb.data.items():
        content = node.WhichOneof("content")
        if content is None:
            continue  # None
        if content == "text" and key in _TEXT_FIELDS:
            setattr(doc, _TEXT_FIELDS[key], node.text)
        elif content == "ndarray" and (key == "embedding" or key == "tensor"):
            setattr(doc, key, _ndarray_from_node(node))
        elif content == "blob" and (key == "bytes_" or key == "blob"):
            doc.blob = node.blob
        elif content == "dict" and key == "tags":
            explicit = {k: node_to_py(v) for k, v in node.dict.data.items()}
        elif content == "doc_array" and (key == "chunks" or key == "matches"):
            setattr(doc, key, [doc_from_proto(d) for d in node.doc_array.docs])
        else:
            extra[key] = node_to_py(node)
    if explicit is not None:
        extra.update(explicit)
    if extra:
        doc.tags = extra
    return doc


_TEXT_FIELDS = {"id": "id", "text": "text", "url": "uri"}


def _ndarray_to_node(arr: NdArray, node: NodeProto, type_name: str) -> None:
    dense = node.ndarray.dense
    dense.buffer = arr.buffer
    dense.shape.extend(arr.shape)
    dense.dtype = arr.dtype
    node.type = type_name


def _ndarray_from_node(node: NodeProto) -> NdArray:
    dense = node.ndarray.dense
    return NdArray(dense.buffer, tuple(dense.shape), dense.dtype)


def value_to_node(value: Any, node: NodeProto, where: str = "value") -> None:
    """Write a JSON-like value into an empty NodeProto, as docarray writes a plain Python value."""
    if value is None:
        return
    t = type(value)
    if t is bool:
        node.boolean = value
    elif t is int:
        if _INT32_MIN <= value <= _INT32_MAX:
            node.integer = value
        else:
            node.float = float(value)
    elif t is float:
        node.float = value
    elif t is str:
        node.text = value
    elif t is bytes:
        node.blob = value
    elif isinstance(value, dict):
        entries = node.dict
        entries.SetInParent()
        for k, v in value.items():
            value_to_node(v, entries.data[str(k)], f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        items = node.list
        items.SetInParent()
        for i, v in enumerate(value):
            value_to_node(v, items.data.add(), f"{where}[{i}]")
    elif isinstance(value, NdArray):
        _ndarray_to_node(value, node, TYPE_NDARRAY)
    else:
        raise BadRequest(f"{where}: a {type(value).__name__} cannot be written as a docarray value")


def node_to_py(node: NodeProto) -> Any:
    """A NodeProto as a JSON-able Python value (for tags): see the module docstring."""
    content = node.WhichOneof("content")
    if content is None:
        return None
    if content in ("text", "integer", "float", "boolean"):
        return getattr(node, content)
    if content == "blob":
        return base64.b64encode(node.blob).decode("ascii")
    if content == "dict":
        return {k: node_to_py(v) for k, v in node.dict.data.items()}
    if content in ("list", "set", "tuple"):
        return [node_to_py(v) for v in getattr(node, content).data]
    if content == "ndarray":
        try:
            return _ndarray_from_node(node).to_list()
        except BadRequest:
            return None  # a dtype with no Python counterpart (float16, complex): not representable
    if content == "doc":
        return {k: node_to_py(v) for k, v in node.doc.data.items()}
    # doc_array
    return [{k: node_to_py(v) for k, v in d.data.items()} for d in node.doc_array.docs]


# ---- requests ----------------------------------------------------------------------------------


def from_proto(pb: jina_v2_pb2.DataRequestProto) -> DataRequest:
    """Our DataRequest from a parsed docarray >= 0.30 DataRequestProto."""
    req = envelope_from_proto(pb)
    which = pb.data.WhichOneof("documents")
    if which == "docs":
        req.docs = [doc_from_proto(d) for d in pb.data.docs.docs]
    elif which == "docs_bytes":
        req.docs_bytes = pb.data.docs_bytes
    return req


def to_proto(req: DataRequest) -> jina_v2_pb2.DataRequestProto:
    """A docarray >= 0.30 DataRequestProto holding `req`."""
    pb = jina_v2_pb2.DataRequestProto()
    envelope_to_proto(req, pb)
    if req.docs is not None:
        docs_pb = pb.data.docs
        docs_pb.SetInParent()
        for d in req.docs:
            doc_to_proto(d, docs_pb.docs.add())
    elif req.docs_bytes is not None:
        pb.data.docs_bytes = req.docs_bytes
    return pb


def _parse(payload: bytes) -> jina_v2_pb2.DataRequestProto:
    pb = jina_v2_pb2.DataRequestProto()
    try:
        pb.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not a docarray v2 DataRequestProto: {exc}") from None
    return pb


def decode(payload: bytes) -> DataRequest:
    """A DataRequest from one serialized DataRequestProto. Raises MalformedPayload if unparsable."""
    return from_proto(_parse(payload))


def encode(req: DataRequest) -> bytes:
    """The serialized DataRequestProto for `req`, map entries sorted by key (see the module docstring)."""
    return to_proto(req).SerializeToString(deterministic=True)


def decode_request(payload: bytes) -> DataRequest | EndOfStream:
    """A client's BINARY frame as a request, or END_OF_STREAM for the single byte 0x00."""
    return proto_codec_decode_request(payload, decode)


encode_response = encode
encode_request = encode
decode_response = decode


def decode_response_envelope(payload: bytes) -> tuple[DataRequest, int]:
    """A response without building its Documents: the request with `docs` None, and the doc count."""
    return envelope_and_count(_parse(payload))
