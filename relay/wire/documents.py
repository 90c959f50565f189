"""The one Document model: the fields of a docarray < 0.30 Document, as Jina 3.x gateways carry them.

A `Document` converts to and from the two wire forms:

* the json subprotocol's dicts (`from_json_dict`, `to_json_dict`), in the key order and with the null
  fields a real gateway writes;
* the bytes subprotocol's `docarray.DocumentProto` (`from_proto`, `fill_proto`).

Arrays (`embedding`, `tensor`) are `NdArray`: the raw buffer, shape and numpy dtype string of a
`DenseNdArrayProto`, so protobuf frames pass through without a float-by-float copy, and a plain list in
JSON. Imports only the standard library and the generated protobuf modules.
"""

from __future__ import annotations

import array
import base64
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import struct_pb2

from relay.wire.errors import BadRequest
from relay.wire.proto import docarray_pb2

# numpy dtype kind+size -> array module typecode. numpy names little-endian '<', big '>', no order '|'.
_TYPECODES = {
    "f8": "d", "f4": "f", "i8": "q", "i4": "i", "i2": "h", "i1": "b",
    "u8": "Q", "u4": "I", "u2": "H", "u1": "B", "b1": "B",
}  # fmt: skip
_LITTLE = sys.byteorder == "little"


class NdArray:
    """A dense n-dimensional array as `DenseNdArrayProto` holds it: raw bytes, shape, dtype."""

    __slots__ = ("buffer", "cls_name", "dtype", "shape")

    def __init__(self, buffer: bytes, shape: tuple[int, ...], dtype: str, cls_name: str = "") -> None:
        self.buffer = buffer
        self.shape = shape
        self.dtype = dtype
        self.cls_name = cls_name

    @classmethod
    def from_list(cls, values: Any, field: str = "embedding") -> NdArray:
        """Build from a (nested) list of numbers, as numpy would: floats -> `<f8`, ints -> `<i8`."""
        shape: list[int] = []
        probe = values
        while isinstance(probe, list):
            shape.append(len(probe))
            if not probe:
                break
            probe = probe[0]
        flat: list[Any] = []
        _flatten(values, len(shape), flat, field)
        expected = 1
        for n in shape:
            expected *= n
        if len(flat) != expected:
            raise BadRequest(f"{field}: ragged nested list, shape {shape} cannot hold {len(flat)} values")
        if all(type(v) is bool for v in flat) and flat:
            dtype, code = "|b1", "B"
        elif all(type(v) is int for v in flat) and flat:
            dtype, code = "<i8", "q"
        else:
            dtype, code = "<f8", "d"
        try:
            arr = array.array(code, flat)
        except (TypeError, OverflowError) as exc:
            raise BadRequest(f"{field}: values must be numbers ({exc})") from None
        if not _LITTLE:
            arr.byteswap()
        return cls(arr.tobytes(), tuple(shape), dtype)

    def to_list(self) -> Any:
        """The values as a (nested) list of Python numbers, shaped like the array."""
        flat = self._flat()
        if not self.shape:
            return flat[0] if flat else None
        return _reshape(flat, self.shape)

    def _flat(self) -> list[Any]:
        order, key = self.dtype[:1], self.dtype[1:]
        code = _TYPECODES.get(key)
        if code is None:
            raise BadRequest(f"unsupported array dtype {self.dtype!r}")
        arr = array.array(code)
        arr.frombytes(self.buffer)
        if (order == "<" and not _LITTLE) or (order == ">" and _LITTLE):
            arr.byteswap()
        if key == "b1":
            return [bool(v) for v in arr]
        return arr.tolist()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NdArray):
            return NotImplemented
        return (self.buffer, self.shape, self.dtype) == (other.buffer, other.shape, other.dtype)

    def __repr__(self) -> str:
        return f"NdArray(shape={self.shape}, dtype={self.dtype!r})"


def _flatten(values: Any, depth: int, out: list[Any], field: str) -> None:
    if depth == 0:
        if isinstance(values, list):
            raise BadRequest(f"{field}: ragged nested list")
        out.append(values)
        return
    if not isinstance(values, list):
        raise BadRequest(f"{field}: ragged nested list")
    for v in values:
        _flatten(v, depth - 1, out, field)


def _reshape(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_reshape(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


class NamedScore:
    """A score or evaluation of a Document (`NamedScoreProto`)."""

    __slots__ = ("description", "op_name", "ref_id", "value")

    def __init__(
        self,
        value: float | None = None,
        op_name: str | None = None,
        description: str | None = None,
        ref_id: str | None = None,
    ) -> None:
        self.value = value
        self.op_name = op_name
        self.description = description
        self.ref_id = ref_id

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "op_name": self.op_name,
            "description": self.description,
            "ref_id": self.ref_id,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NamedScore):
            return NotImplemented
        return self.to_json_dict() == other.to_json_dict()


# The order in which a Jina gateway writes a Document's keys in json mode (docarray's PydanticDocument).
JSON_FIELDS = (
    "id", "parent_id", "granularity", "adjacency", "blob", "tensor", "mime_type", "text", "weight",
    "uri", "tags", "offset", "location", "embedding", "modality", "evaluations", "scores", "chunks",
    "matches",
)  # fmt: skip


_NULL_JSON_DOC: dict[str, Any] = dict.fromkeys(JSON_FIELDS)


class Document:
    """A Document with the docarray < 0.30 fields. Unset fields are None."""

    __slots__ = JSON_FIELDS

    def __init__(
        self,
        id: str | None = None,
        text: str | None = None,
        *,
        parent_id: str | None = None,
        granularity: int | None = None,
        adjacency: int | None = None,
        blob: bytes | None = None,
        tensor: NdArray | None = None,
        mime_type: str | None = None,
        weight: float | None = None,
        uri: str | None = None,
        tags: dict[str, Any] | None = None,
        offset: float | None = None,
        location: list[float] | None = None,
        embedding: NdArray | None = None,
        modality: str | None = None,
        evaluations: dict[str, NamedScore] | None = None,
        scores: dict[str, NamedScore] | None = None,
        chunks: list[Document] | None = None,
        matches: list[Document] | None = None,
    ) -> None:
        self.id = id
        self.parent_id = parent_id
        self.granularity = granularity
        self.adjacency = adjacency
        self.blob = blob
        self.tensor = tensor
        self.mime_type = mime_type
        self.text = text
        self.weight = weight
        self.uri = uri
        self.tags = tags
        self.offset = offset
        self.location = location
        self.embedding = embedding
        self.modality = modality
        self.evaluations = evaluations
        self.scores = scores
        self.chunks = chunks
        self.matches = matches

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in JSON_FIELDS)

    def __repr__(self) -> str:
        set_fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in JSON_FIELDS if getattr(self, f) is not None)
        return f"Document({set_fields})"

    # ---- json ----------------------------------------------------------------------------------

    @classmethod
    def from_json_dict(cls, d: Any) -> Document:
        """Read one Document of a json request. Unknown keys are ignored, as a Jina gateway does."""
        if not isinstance(d, dict):
            raise BadRequest(f"each document must be a JSON object, got {type(d).__name__}")
        doc = cls()
        for key, value in d.items():
            reader = _JSON_READERS.get(key)
            if reader is not None and value is not None:
                setattr(doc, key, reader(value, key))
        return doc

    def to_json_dict(self, full: bool = True) -> dict[str, Any]:
        """The json form. `full` writes every field (nulls too), as a gateway's response does;
        otherwise only the set fields, which is what a client needs to send."""
        out: dict[str, Any] = _NULL_JSON_DOC.copy() if full else {}
        writers = _JSON_WRITERS
        for key in JSON_FIELDS:
            value = getattr(self, key)
            if value is not None:
                writer = writers.get(key)
                out[key] = writer(value, full) if writer is not None else value
        return out

    # ---- protobuf ------------------------------------------------------------------------------

    @classmethod
    def from_proto(cls, pb: docarray_pb2.DocumentProto) -> Document:
        doc = cls()
        for fd, value in pb.ListFields():
            name = fd.name
            if name == "tensor" or name == "embedding":
                value = _ndarray_from_proto(value, name)
            elif name == "tags":
                value = struct_to_dict(value)
            elif name == "location":
                value = list(value)
            elif name == "chunks" or name == "matches":
                value = [cls.from_proto(c) for c in value]
            elif name == "scores" or name == "evaluations":
                value = {k: _score_from_proto(s) for k, s in value.items()}
            elif name == "_metadata":
                continue
            setattr(doc, name, value)
        return doc

    def fill_proto(self, pb: docarray_pb2.DocumentProto) -> None:
        """Write this Document into an (empty) DocumentProto."""
        if self.id is not None:
            pb.id = self.id
        if self.text is not None:
            pb.text = self.text
        if self.blob is not None:
            pb.blob = self.blob
        if self.tensor is not None:
            _ndarray_to_proto(self.tensor, pb.tensor)
        if self.embedding is not None:
            _ndarray_to_proto(self.embedding, pb.embedding)
        if self.tags:
            pb.tags.update(self.tags)
        for name in ("parent_id", "uri", "modality", "mime_type", "granularity", "adjacency", "weight", "offset"):
            value = getattr(self, name)
            if value is not None:
                setattr(pb, name, value)
        if self.location:
            pb.location.extend(self.location)
        if self.chunks:
            for c in self.chunks:
                c.fill_proto(pb.chunks.add())
        if self.matches:
            for m in self.matches:
                m.fill_proto(pb.matches.add())
        for name in ("scores", "evaluations"):
            scores = getattr(self, name)
            if scores:
                target = getattr(pb, name)
                for k, s in scores.items():
                    _score_to_proto(s, target[k])


# ---- json field readers and writers ------------------------------------------------------------


def _read_str(v: Any, key: str) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise BadRequest(f"document field {key!r} must be a string, got {type(v).__name__}")


_UINT32_MAX = 2**32 - 1


def _read_int(v: Any, key: str) -> int:
    # granularity/adjacency are uint32 in DocumentProto: a larger value would fail later, in fill_proto.
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _UINT32_MAX:
        return v
    if isinstance(v, float) and v.is_integer() and 0 <= v <= _UINT32_MAX:
        return int(v)
    raise BadRequest(f"document field {key!r} must be an integer from 0 to 2**32-1, got {v!r}")


def _read_float(v: Any, key: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise BadRequest(f"document field {key!r} must be a number, got {type(v).__name__}")


def _read_blob(v: Any, key: str) -> bytes:
    if not isinstance(v, str):
        raise BadRequest(f"document field 'blob' must be a base64 string, got {type(v).__name__}")
    try:
        return base64.b64decode(v, validate=True)
    except ValueError:
        raise BadRequest("document field 'blob' is not valid base64") from None


def _read_array(v: Any, key: str) -> NdArray:
    if isinstance(v, list):
        return NdArray.from_list(v, key)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return NdArray.from_list([v], key)
    raise BadRequest(f"document field {key!r} must be a list of numbers, got {type(v).__name__}")


def _read_struct(v: Any, key: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadRequest(f"document field {key!r} must be an object, got {type(v).__name__}")
    return as_struct_values(v)


def _read_location(v: Any, key: str) -> list[float]:
    if not isinstance(v, list):
        raise BadRequest("document field 'location' must be a list of numbers")
    return [_read_float(x, key) for x in v]


def _read_scores(v: Any, key: str) -> dict[str, NamedScore]:
    if not isinstance(v, dict):
        raise BadRequest(f"document field {key!r} must be an object of named scores")
    out = {}
    for name, s in v.items():
        if not isinstance(s, dict):
            raise BadRequest(f"{key}.{name} must be an object with 'value'")
        out[name] = NamedScore(
            value=None if s.get("value") is None else _read_float(s["value"], f"{key}.{name}.value"),
            op_name=s.get("op_name"),
            description=s.get("description"),
            ref_id=s.get("ref_id"),
        )
    return out


def _read_docs(v: Any, key: str) -> list[Document]:
    if not isinstance(v, list):
        raise BadRequest(f"document field {key!r} must be a list of documents")
    return [Document.from_json_dict(x) for x in v]


_JSON_READERS = {
    "id": _read_str, "parent_id": _read_str, "mime_type": _read_str, "text": _read_str,
    "uri": _read_str, "modality": _read_str, "granularity": _read_int, "adjacency": _read_int,
    "weight": _read_float, "offset": _read_float, "blob": _read_blob, "tensor": _read_array,
    "embedding": _read_array, "tags": _read_struct, "location": _read_location,
    "scores": _read_scores, "evaluations": _read_scores, "chunks": _read_docs, "matches": _read_docs,
}  # fmt: skip

_JSON_WRITERS = {
    "blob": lambda v, full: base64.b64encode(v).decode("ascii"),
    "tensor": lambda v, full: v.to_list(),
    "embedding": lambda v, full: v.to_list(),
    "scores": lambda v, full: {k: s.to_json_dict() for k, s in v.items()},
    "evaluations": lambda v, full: {k: s.to_json_dict() for k, s in v.items()},
    "chunks": lambda v, full: [d.to_json_dict(full) for d in v],
    "matches": lambda v, full: [d.to_json_dict(full) for d in v],
}


# ---- protobuf helpers --------------------------------------------------------------------------


def _ndarray_from_proto(pb: docarray_pb2.NdArrayProto, field: str) -> NdArray:
    if pb.WhichOneof("content") == "sparse":
        raise BadRequest(f"document field {field!r}: sparse arrays are not supported")
    dense = pb.dense
    return NdArray(dense.buffer, tuple(dense.shape), dense.dtype, pb.cls_name)


def _ndarray_to_proto(arr: NdArray, pb: docarray_pb2.NdArrayProto) -> None:
    pb.dense.buffer = arr.buffer
    pb.dense.shape.extend(arr.shape)
    pb.dense.dtype = arr.dtype
    if arr.cls_name:
        pb.cls_name = arr.cls_name


def _score_from_proto(pb: docarray_pb2.NamedScoreProto) -> NamedScore:
    return NamedScore(pb.value, pb.op_name or None, pb.description or None, pb.ref_id or None)


def _score_to_proto(s: NamedScore, pb: docarray_pb2.NamedScoreProto) -> None:
    if s.value is not None:
        pb.value = s.value
    if s.op_name:
        pb.op_name = s.op_name
    if s.description:
        pb.description = s.description
    if s.ref_id:
        pb.ref_id = s.ref_id


def _value_to_py(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return v.number_value
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_value_to_py(x) for x in v.list_value.values]
    return None


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    """A `google.protobuf.Struct` as a plain dict (numbers are floats, as Struct keeps them)."""
    return {k: _value_to_py(v) for k, v in s.fields.items()}


def as_struct_values(value: Mapping[str, Any]) -> dict[str, Any]:
    """The dict as it comes out of a round trip through `google.protobuf.Struct`: every number a float.

    A Jina gateway turns `parameters` and `tags` into Struct on the way to its Executors, so `1` comes
    back as `1.0`; doing the same keeps our json responses identical to a gateway's.
    """
    return {k: _struct_value(v) for k, v in value.items()}


def _struct_value(v: Any) -> Any:
    t = type(v)
    if t is int:
        return float(v)
    if t is dict:
        return {k: _struct_value(x) for k, x in v.items()}
    if t is list or t is tuple:
        return [_struct_value(x) for x in v]
    return v


def docs_from_json(items: Iterable[Any]) -> list[Document]:
    return [Document.from_json_dict(d) for d in items]
