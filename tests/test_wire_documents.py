"""The one Document model, field by field, in both wire forms.

* json: the dicts of the json subprotocol, in the key order a Jina 3.x gateway writes (docarray's
  PydanticDocument, seen in every captured json response), with `blob` as base64 and every number in
  `tags` a float (google.protobuf.Struct);
* protobuf: `docarray.DocumentProto` (docarray 0.21 field numbers).

A property test then sends random Documents the way a relay does when a json client talks to a bytes
upstream: json -> Document -> DocumentProto bytes -> Document -> json, and wants the same json back.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.wire import json_codec, proto_codec
from relay.wire.documents import JSON_FIELDS, Document, NamedScore, NdArray
from relay.wire.errors import BadRequest
from relay.wire.messages import DataRequest
from relay.wire.proto import docarray_pb2

GATEWAY_ORDER = [
    "id", "parent_id", "granularity", "adjacency", "blob", "tensor", "mime_type", "text", "weight", "uri",
    "tags", "offset", "location", "embedding", "modality", "evaluations", "scores", "chunks", "matches",
]  # fmt: skip


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def _captured_doc() -> dict[str, Any]:
    exp = json.loads((_shared_dir() / "protocol" / "captures" / "a_legacy_ws" / "i_json_index.json").read_text())
    text = next(e["text"] for e in exp["events"] if e.get("dir") == "recv")
    return json.loads(text)["data"][0]


def _proto_round_trip(doc: Document) -> tuple[Document, docarray_pb2.DocumentProto]:
    pb = docarray_pb2.DocumentProto()
    doc.fill_proto(pb)
    parsed = docarray_pb2.DocumentProto.FromString(pb.SerializeToString())
    return Document.from_proto(parsed), parsed


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---- json: key order ---------------------------------------------------------------------------


def test_json_key_order_is_the_gateways() -> None:
    assert list(JSON_FIELDS) == GATEWAY_ORDER
    assert list(Document().to_json_dict()) == GATEWAY_ORDER
    assert list(_captured_doc()) == GATEWAY_ORDER


def test_full_json_has_every_field_and_nulls_like_a_gateway() -> None:
    captured = _captured_doc()
    doc = Document.from_json_dict(captured)
    assert (doc.text, doc.tags) == ("HELLO", {"slept_ms": 2.0, "seen_by": "upper"})
    assert doc.to_json_dict() == captured
    assert orjson.dumps(doc.to_json_dict()) == json.dumps(captured, separators=(",", ":")).encode()
    # The form a client sends: only what is set, in the same order.
    assert Document(text="hi", id="d1").to_json_dict(full=False) == {"id": "d1", "text": "hi"}
    assert list(Document(text="hi", id="d1", tags={"a": 1.0}).to_json_dict(full=False)) == ["id", "text", "tags"]


# ---- json: every field -------------------------------------------------------------------------

BLOB = b"\x00\xff\x10binary\n"

# (field, value in the request, value the gateway-shaped json writes back, how it reads as an attribute)
JSON_CASES: list[tuple[str, Any, Any, Any]] = [
    ("id", "d1", "d1", "d1"),
    ("parent_id", "p1", "p1", "p1"),
    ("granularity", 2, 2, 2),
    ("adjacency", 1, 1, 1),
    ("blob", _b64(BLOB), _b64(BLOB), BLOB),
    ("tensor", [[1.0, 2.0], [3.0, 4.5]], [[1.0, 2.0], [3.0, 4.5]], ((2, 2), "<f8")),
    ("mime_type", "image/png", "image/png", "image/png"),
    ("text", 'héllo ✓ "quoted"\n', 'héllo ✓ "quoted"\n', 'héllo ✓ "quoted"\n'),
    ("weight", 0.5, 0.5, 0.5),
    ("uri", "https://example.com/a.png", "https://example.com/a.png", "https://example.com/a.png"),
    (
        "tags",
        {"n": 1, "f": 2.5, "s": "x", "b": True, "z": None, "l": [1, "a", False], "d": {"k": 3, "e": {}}},
        {"n": 1.0, "f": 2.5, "s": "x", "b": True, "z": None, "l": [1.0, "a", False], "d": {"k": 3.0, "e": {}}},
        {"n": 1.0, "f": 2.5, "s": "x", "b": True, "z": None, "l": [1.0, "a", False], "d": {"k": 3.0, "e": {}}},
    ),
    ("offset", 3, 3.0, 3.0),
    ("location", [1, 2.5, -3], [1.0, 2.5, -3.0], [1.0, 2.5, -3.0]),
    ("embedding", [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], ((3,), "<f8")),
    ("embedding", [1, 2, 3], [1, 2, 3], ((3,), "<i8")),
    ("embedding", [[1], [2]], [[1], [2]], ((2, 1), "<i8")),
    ("modality", "image", "image", "image"),
    (
        "evaluations",
        {"acc": {"value": 1, "op_name": "eval"}},
        {"acc": {"value": 1.0, "op_name": "eval", "description": None, "ref_id": None}},
        {"acc": NamedScore(1.0, "eval")},
    ),
    (
        "scores",
        {"cosine": {"value": 0.25, "op_name": "cos", "description": "similarity", "ref_id": "q1"}},
        {"cosine": {"value": 0.25, "op_name": "cos", "description": "similarity", "ref_id": "q1"}},
        {"cosine": NamedScore(0.25, "cos", "similarity", "q1")},
    ),
    (
        "chunks",
        [{"id": "c1", "text": "chunk", "granularity": 1}],
        [{**dict.fromkeys(GATEWAY_ORDER), "id": "c1", "text": "chunk", "granularity": 1}],
        [Document(id="c1", text="chunk", granularity=1)],
    ),
    (
        "matches",
        [{"id": "m1", "scores": {"s": {"value": 0.5}}, "matches": [{"id": "m2"}]}],
        [
            {
                **dict.fromkeys(GATEWAY_ORDER),
                "id": "m1",
                "scores": {"s": {"value": 0.5, "op_name": None, "description": None, "ref_id": None}},
                "matches": [{**dict.fromkeys(GATEWAY_ORDER), "id": "m2"}],
            }
        ],
        [Document(id="m1", scores={"s": NamedScore(0.5)}, matches=[Document(id="m2")])],
    ),
]


@pytest.mark.parametrize(("field", "sent", "written", "attr"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_json_field_round_trip(field: str, sent: Any, written: Any, attr: Any) -> None:
    doc = Document.from_json_dict({field: sent})
    value = getattr(doc, field)
    if isinstance(value, NdArray):
        assert (value.shape, value.dtype) == attr
    else:
        assert value == attr
    assert all(getattr(doc, f) is None for f in JSON_FIELDS if f != field)

    full = doc.to_json_dict()
    assert full == {**dict.fromkeys(GATEWAY_ORDER), field: written}
    # The compact form leaves out the nulls of nested Documents too.
    compact = [_compact(d) for d in written] if field in ("chunks", "matches") else written
    assert doc.to_json_dict(full=False) == {field: compact}
    # What we write reads back to the same Document, nulls and all.
    assert Document.from_json_dict(orjson.loads(orjson.dumps(full))) == doc


def test_json_number_types_survive_serialisation() -> None:
    doc = Document.from_json_dict({"tags": {"n": 1, "l": [2]}, "embedding": [1, 2], "offset": 3})
    out = orjson.dumps(doc.to_json_dict(full=False))
    assert out == b'{"tags":{"n":1.0,"l":[2.0]},"offset":3.0,"embedding":[1,2]}'


def test_json_reader_ignores_unknown_keys_and_nulls() -> None:
    doc = Document.from_json_dict({"id": "x", "text": None, "unknown": 1, "tags": None, "_metadata": {"a": 1}})
    assert doc == Document(id="x")


def test_json_reader_takes_numbers_for_strings_and_a_scalar_embedding() -> None:
    doc = Document.from_json_dict({"id": 7, "text": 1.5, "embedding": 2.0, "granularity": 3.0})
    assert (doc.id, doc.text, doc.granularity) == ("7", "1.5", 3)
    assert doc.embedding is not None and doc.embedding.to_list() == [2.0]


@pytest.mark.parametrize(
    "bad",
    [
        {"id": ["x"]},
        {"text": {"a": 1}},
        {"id": True},
        {"granularity": -1},
        {"granularity": 1.5},
        {"granularity": True},
        {"adjacency": "1"},
        {"granularity": 2**32},  # uint32 on the wire
        {"weight": "heavy"},
        {"offset": False},
        {"blob": "not base64!"},
        {"blob": 5},
        {"tags": [1, 2]},
        {"location": "here"},
        {"location": [1, "x"]},
        {"embedding": [[1, 2], [3]]},
        {"embedding": [[1, 2], 3]},
        {"embedding": ["a", "b"]},
        {"embedding": {"a": 1}},
        {"scores": [1]},
        {"scores": {"s": 1.0}},
        {"evaluations": {"e": {"value": "high"}}},
        {"chunks": {"id": "c"}},
        {"matches": ["m1"]},
    ],
    ids=lambda d: json.dumps(d)[:40],
)
def test_json_reader_rejects_bad_field_types(bad: dict[str, Any]) -> None:
    with pytest.raises(BadRequest) as info:
        Document.from_json_dict(bad)
    assert info.value.close_code == 1007


def test_document_must_be_an_object() -> None:
    with pytest.raises(BadRequest):
        Document.from_json_dict(["id", "x"])


def test_largest_uint32_granularity_reaches_the_wire() -> None:
    doc = Document.from_json_dict({"granularity": 2**32 - 1, "adjacency": 0})
    back, pb = _proto_round_trip(doc)
    assert pb.granularity == 2**32 - 1
    assert back.granularity == 2**32 - 1


# ---- protobuf: every field ---------------------------------------------------------------------

F4 = NdArray(struct.pack("<4f", 1.0, -2.5, 0.0, 3.25), (2, 2), "<f4", cls_name="numpy")
F8 = NdArray(struct.pack("<3d", 0.1, 0.2, 0.3), (3,), "<f8")

# Float fields are `float` (32-bit) in DocumentProto: these values are exact in float32.
PROTO_CASES: list[tuple[str, Any]] = [
    ("id", "d1"),
    ("parent_id", "p1"),
    ("granularity", 3),
    ("adjacency", 2),
    ("blob", BLOB),
    ("tensor", F4),
    ("mime_type", "text/plain"),
    ("text", "héllo"),
    ("weight", 0.5),
    ("uri", "s3://bucket/key"),
    ("tags", {"a": 1.0, "nested": {"l": [1.0, "x", True, None]}, "empty": {}}),
    ("offset", -2.25),
    ("location", [1.5, -2.0, 0.0]),
    ("embedding", F8),
    ("modality", "audio"),
    ("evaluations", {"acc": NamedScore(0.75, "eval", "desc", "ref")}),
    ("scores", {"cos": NamedScore(0.5, "cosine"), "l2": NamedScore(-3.0)}),
    ("chunks", [Document(id="c", text="chunk", granularity=1), Document(id="c2", blob=b"\x01")]),
    ("matches", [Document(id="m", scores={"s": NamedScore(1.0)}, matches=[Document(id="mm", adjacency=2)])]),
]


@pytest.mark.parametrize(("field", "value"), PROTO_CASES, ids=[c[0] for c in PROTO_CASES])
def test_proto_field_round_trip(field: str, value: Any) -> None:
    doc = Document(**{field: value})
    back, pb = _proto_round_trip(doc)
    assert [fd.name for fd, _ in pb.ListFields()] == [field]
    assert back == doc
    assert getattr(back, field) == value
    if isinstance(value, NdArray):
        assert getattr(back, field).cls_name == value.cls_name


def test_proto_document_with_every_field_on_the_wire() -> None:
    doc = Document(
        id="d1",
        text="hello",
        parent_id="p",
        granularity=1,
        adjacency=2,
        mime_type="text/plain",
        weight=0.5,
        uri="u",
        tags={"k": 1.0},
        offset=1.5,
        location=[0.25, 0.5],
        embedding=NdArray.from_list([1.0, 2.0]),
        modality="text",
        evaluations={"e": NamedScore(0.5, "op")},
        scores={"s": NamedScore(2.0, ref_id="r")},
        chunks=[Document(id="c")],
        matches=[Document(id="m")],
    )
    back, pb = _proto_round_trip(doc)
    assert back == doc
    assert json_format.MessageToDict(pb, preserving_proto_field_name=True) == {
        "id": "d1",
        "text": "hello",
        "granularity": 1,
        "adjacency": 2,
        "parent_id": "p",
        "weight": 0.5,
        "uri": "u",
        "modality": "text",
        "mime_type": "text/plain",
        "offset": 1.5,
        "location": [0.25, 0.5],
        "chunks": [{"id": "c"}],
        "matches": [{"id": "m"}],
        "embedding": {"dense": {"buffer": "AAAAAAAA8D8AAAAAAAAAQA==", "shape": [2], "dtype": "<f8"}},
        "tags": {"k": 1.0},
        "scores": {"s": {"value": 2.0, "ref_id": "r"}},
        "evaluations": {"e": {"value": 0.5, "op_name": "op"}},
    }


def test_proto_floats_are_32_bit() -> None:
    back, _ = _proto_round_trip(Document(weight=0.1, offset=1 / 3, location=[0.1]))
    assert back.weight == struct.unpack("<f", struct.pack("<f", 0.1))[0] != 0.1
    assert back.offset is not None and math.isclose(back.offset, 1 / 3, rel_tol=1e-7)
    assert back.location == [struct.unpack("<f", struct.pack("<f", 0.1))[0]]


def test_proto3_zero_values_read_back_as_unset() -> None:
    # proto3 scalars have no presence: 0, 0.0, "" and empty containers are not on the wire, so they
    # come back unset, as docarray's own reader (DocumentProto.ListFields) gives them.
    zeros = Document(
        id="", parent_id="", granularity=0, adjacency=0, weight=0.0, offset=0.0, uri="", mime_type="",
        modality="", tags={}, location=[], chunks=[], matches=[], scores={}, evaluations={},
    )  # fmt: skip
    back, pb = _proto_round_trip(zeros)
    assert pb.ByteSize() == 0
    assert back == Document()
    # The content fields are a oneof, which does keep presence: an empty text or blob survives.
    assert _proto_round_trip(Document(text=""))[0].text == ""
    assert _proto_round_trip(Document(blob=b""))[0].blob == b""


def test_proto_metadata_is_ignored() -> None:
    pb = docarray_pb2.DocumentProto(id="d")
    pb._metadata.update({"internal": 1.0})
    assert Document.from_proto(docarray_pb2.DocumentProto.FromString(pb.SerializeToString())) == Document(id="d")


def test_proto_tags_numbers_are_floats() -> None:
    back, pb = _proto_round_trip(Document(tags={"i": 3, "l": [1, 2]}))
    assert back.tags == {"i": 3.0, "l": [1.0, 2.0]}
    assert type(back.tags["i"]) is float
    assert pb.tags.fields["i"].number_value == 3.0


# ---- json -> proto -> json, random documents ---------------------------------------------------

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
# proto3 drops zero-valued scalars (see test_proto3_zero_values_read_back_as_unset).
nonzero_f32 = f32.filter(lambda x: x != 0.0)
names = st.text(min_size=1, max_size=12)
uint32 = st.integers(min_value=1, max_value=2**32 - 1)

json_scalar = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
tags = st.dictionaries(st.text(max_size=8), json_value, min_size=1, max_size=4)
named_score = st.fixed_dictionaries(
    {"value": f32, "op_name": st.none() | names, "description": st.none() | names, "ref_id": st.none() | names}
)
score_map = st.dictionaries(names, named_score, min_size=1, max_size=3)

_array_elements = [
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
]


@st.composite
def arrays(draw: st.DrawFn) -> list[Any]:
    """A homogeneous 1-D or 2-D list, as numpy would hold it in one dtype."""
    element = draw(st.sampled_from(_array_elements))
    if draw(st.booleans()):
        return draw(st.lists(element, max_size=6))
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    return [draw(st.lists(element, min_size=cols, max_size=cols)) for _ in range(rows)]


def json_docs(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "id": names,
        "parent_id": names,
        "granularity": uint32,
        "adjacency": uint32,
        "mime_type": names,
        "weight": nonzero_f32,
        "uri": names,
        "tags": tags,
        "offset": nonzero_f32,
        "location": st.lists(f32, min_size=1, max_size=4),
        "embedding": arrays(),
        "modality": names,
        "evaluations": score_map,
        "scores": score_map,
    }
    if depth > 0:
        optional["chunks"] = st.lists(json_docs(depth - 1), min_size=1, max_size=2)
        optional["matches"] = st.lists(json_docs(depth - 1), min_size=1, max_size=2)
    # blob, tensor and text share DocumentProto's `content` oneof: a Document has one of them.
    content = st.one_of(
        st.just({}),
        st.text(max_size=20).map(lambda t: {"text": t}),
        st.binary(max_size=16).map(lambda b: {"blob": _b64(b)}),
        arrays().map(lambda a: {"tensor": a}),
    )
    return st.tuples(st.fixed_dictionaries({}, optional=optional), content).map(lambda p: {**p[0], **p[1]})


def _compact(doc: dict[str, Any]) -> dict[str, Any]:
    """A response's Document dict without its null fields (nested Documents too, tags untouched)."""
    out = {}
    for key, value in doc.items():
        if value is None:
            continue
        out[key] = [_compact(d) for d in value] if key in ("chunks", "matches") else value
    return out


def _typed(value: Any) -> Any:
    """`value` with every scalar tagged by its type, so that 1 != 1.0 and True != 1; dict order ignored."""
    if isinstance(value, dict):
        return ("dict", sorted(((k, _typed(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(json_docs(depth=2))
def test_random_document_survives_json_proto_json(doc_json: dict[str, Any]) -> None:
    # A json client's request, as a relay forwards it to a bytes upstream and answers in json.
    frame = orjson.dumps({"data": [doc_json], "execEndpoint": "/index"})
    req = json_codec.decode_request(frame)
    assert isinstance(req, DataRequest) and req.docs is not None

    wire = proto_codec.encode(req)
    back = proto_codec.decode(wire)
    assert back.docs == req.docs

    out = orjson.loads(json_codec.encode_response(back))["data"][0]
    assert list(out) == GATEWAY_ORDER
    assert _typed(_compact(out)) == _typed(doc_json)
