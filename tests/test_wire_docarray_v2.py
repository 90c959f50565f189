"""The bytes subprotocol of a docarray >= 0.30 Flow (relay.wire.proto_v2_codec), checked against captures.

Evidence used here:

* JINA-WIRE.md §5.7, the docarray v2 messages and their field numbers;
* every binary frame captured from a real docarray 0.41 Flow in `captures/b_docarray_v2_ws/` (README in
  `captures/`), with the `decoded` form the capture tool produced with Jina's own classes;
* docarray 0.41 itself (jina-marked test): it reads the frames we write, and we read the frames it writes.

The last section checks the flags that use the encoding: `flowrelay serve --upstream-docarray` and
`flowrelay load --docarray` (their runs against a real Flow are in test_upstream.py).

Jina writes a `DocProto`'s map entries in the order of upb's hash table, which is seeded per process: the
same request serialized twice in two processes can differ in entry order (the captures show
`url, id, embedding, bytes_, text` for a request and `url, id, bytes_, embedding, text` for its answer).
No encoder can reproduce that order, so a capture is compared in canonical form: parsed, then serialized
deterministically (entries sorted by key), which is how our encoder always writes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.wire import proto_codec, proto_v2_codec
from relay.wire.codecs import bytes_codec
from relay.wire.documents import Document, NdArray
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import END_OF_STREAM, DataRequest, ExceptionInfo, Route, Status, parse_timestamp
from relay.wire.proto import docarray_v2_pb2, jina_pb2, jina_v2_pb2


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CAPTURES = _shared_dir() / "protocol" / "captures" / "b_docarray_v2_ws"
CHECK_SCRIPT = Path(__file__).parent / "jina_scripts" / "docarray_v2_check.py"
TEXTDOC_KEYS = ["bytes_", "embedding", "id", "text", "url"]


@dataclass(frozen=True)
class Frame:
    name: str
    path: Path
    sent_by_client: bool
    decoded: Any  # Jina's MessageToDict of the frame, when the capture recorded it

    @property
    def raw(self) -> bytes:
        return self.path.read_bytes()


def _frames(*experiments: str) -> list[Frame]:
    out = []
    for exp in experiments:
        for ev in json.loads((CAPTURES / f"{exp}.json").read_text())["events"]:
            if ev.get("type") == "binary":
                out.append(Frame(ev["bin_file"], CAPTURES / ev["bin_file"], ev["dir"] == "send", ev.get("decoded")))
    return out


DOC_FRAMES = [f for f in _frames("iv_bytes_index", "v_pipeline_bytes_10", "vii_executor_error_bytes")
              if f.path.exists() and f.raw != b"\x00"]
SENT = [f for f in DOC_FRAMES if f.sent_by_client]
ANSWERS = [f for f in DOC_FRAMES if not f.sent_by_client]


def _ids(frames: list[Frame]) -> list[str]:
    return [f.name for f in frames]


def canonical(raw: bytes) -> bytes:
    """A captured frame with its map entries in key order (see the module docstring)."""
    return jina_v2_pb2.DataRequestProto.FromString(raw).SerializeToString(deterministic=True)


def doc_dict(pb: docarray_v2_pb2.DocProto) -> dict[str, Any]:
    return json_format.MessageToDict(pb)["data"]


# ---- the messages ------------------------------------------------------------------------------


_T = FieldDescriptor
SPEC_FIELDS = [
    # JINA-WIRE.md §5.7 and docarray 0.41's docarray.proto
    (docarray_v2_pb2.DocListProto, "docs", 1, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.DocProto, "data", 1, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "text", 1, _T.TYPE_STRING),
    (docarray_v2_pb2.NodeProto, "integer", 2, _T.TYPE_INT32),
    (docarray_v2_pb2.NodeProto, "float", 3, _T.TYPE_DOUBLE),
    (docarray_v2_pb2.NodeProto, "boolean", 4, _T.TYPE_BOOL),
    (docarray_v2_pb2.NodeProto, "blob", 5, _T.TYPE_BYTES),
    (docarray_v2_pb2.NodeProto, "ndarray", 6, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "doc", 7, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "doc_array", 8, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "list", 9, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "set", 10, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "tuple", 11, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "dict", 12, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NodeProto, "type", 13, _T.TYPE_STRING),
    (docarray_v2_pb2.NdArrayProto, "dense", 1, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.NdArrayProto, "parameters", 2, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.DenseNdArrayProto, "buffer", 1, _T.TYPE_BYTES),
    (docarray_v2_pb2.DenseNdArrayProto, "shape", 2, _T.TYPE_UINT32),
    (docarray_v2_pb2.DenseNdArrayProto, "dtype", 3, _T.TYPE_STRING),
    (docarray_v2_pb2.DictOfAnyProto, "data", 1, _T.TYPE_MESSAGE),
    (docarray_v2_pb2.ListOfAnyProto, "data", 1, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto, "header", 1, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto, "parameters", 2, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto, "routes", 3, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto, "data", 4, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto.DataContentProto, "docs", 1, _T.TYPE_MESSAGE),
    (jina_v2_pb2.DataRequestProto.DataContentProto, "docs_bytes", 2, _T.TYPE_BYTES),
]


@pytest.mark.parametrize(("message", "field", "number", "wire_type"), SPEC_FIELDS,
                         ids=[f"{m.DESCRIPTOR.name}.{f}" for m, f, _, _ in SPEC_FIELDS])
def test_field_numbers_follow_the_spec(message: Any, field: str, number: int, wire_type: int) -> None:
    fd = message.DESCRIPTOR.fields_by_name[field]
    assert (fd.number, fd.type) == (number, wire_type)


def test_both_generations_live_in_one_descriptor_pool_under_distinct_packages() -> None:
    assert docarray_v2_pb2.DESCRIPTOR.package == "docarray_v2"
    assert jina_v2_pb2.DESCRIPTOR.package == "jina_v2"
    data = jina_v2_pb2.DataRequestProto.DESCRIPTOR.fields_by_name["data"].message_type
    assert data.fields_by_name["docs"].message_type.full_name == "docarray_v2.DocListProto"
    # header and routes are the very messages of the v1 envelope
    assert jina_v2_pb2.DataRequestProto.DESCRIPTOR.fields_by_name["header"].message_type is \
        jina_pb2.HeaderProto.DESCRIPTOR
    assert jina_v2_pb2.DataRequestProto.DESCRIPTOR.fields_by_name["routes"].message_type is \
        jina_pb2.RouteProto.DESCRIPTOR


def test_the_codec_has_the_v1_codecs_functions() -> None:
    for name in ("decode_request", "decode", "decode_response", "decode_response_envelope", "encode",
                 "encode_request", "encode_response", "from_status_proto", "END_OF_STREAM_FRAME", "SUBPROTOCOL"):
        assert hasattr(proto_v2_codec, name), name
        assert hasattr(proto_codec, name), name
    assert bytes_codec("v1") is proto_codec and bytes_codec("v2") is proto_v2_codec and bytes_codec() is proto_codec
    with pytest.raises(ValueError, match="v3"):
        bytes_codec("v3")


# ---- the captures ------------------------------------------------------------------------------


def test_the_captured_frames_are_all_here() -> None:
    # request + answer, 10 requests + 10 answers, the failing request (its answer is only in the .json)
    assert (len(SENT), len(ANSWERS)) == (12, 11)


@pytest.mark.parametrize("frame", SENT, ids=_ids(SENT))
def test_captured_requests_decode(frame: Frame) -> None:
    req = proto_v2_codec.decode_request(frame.raw)
    assert isinstance(req, DataRequest)
    assert req.exec_endpoint in ("/index", "/fail")
    assert req.parameters is None and req.routes == [] and req.status is None
    (doc,) = req.docs or []
    assert doc.id is not None and len(doc.id) == 32
    assert doc.text in {"hello", "will-fail"} | {f"b{i}" for i in range(10)}
    assert (doc.uri, doc.embedding, doc.blob, doc.tags) == (None, None, None, None), "empty nodes are None"


@pytest.mark.parametrize("frame", SENT, ids=_ids(SENT))
def test_our_encoding_of_a_captured_request_is_the_capture_in_canonical_form(frame: Frame) -> None:
    got = proto_v2_codec.decode(frame.raw)
    (doc,) = got.docs or []
    ours = proto_v2_codec.encode_request(
        DataRequest(request_id=got.request_id, exec_endpoint=got.exec_endpoint, docs=[Document(doc.id, doc.text)])
    )
    assert ours == canonical(frame.raw)
    assert jina_v2_pb2.DataRequestProto.FromString(ours) == jina_v2_pb2.DataRequestProto.FromString(frame.raw)
    assert len(ours) == len(frame.raw)


def test_jina_writes_map_entries_in_hash_order_not_key_order() -> None:
    (request,) = [f for f in SENT if f.name == "iv_bytes_index.001.send.bin"]
    (answer,) = [f for f in ANSWERS if f.name == "iv_bytes_index.003.recv.bin"]

    def key_order(raw: bytes) -> list[str]:
        # the keys in the order the bytes hold them: each entry starts 0a <len> 0a <keylen> <key>
        keys, pos = [], raw.index(b"\x0a\x07\x0a\x03url")
        for _ in range(5):
            klen = raw[pos + 3]
            keys.append(raw[pos + 4 : pos + 4 + klen].decode())
            pos += 2 + raw[pos + 1]
        return keys

    assert key_order(request.raw) == ["url", "id", "embedding", "bytes_", "text"]
    assert key_order(answer.raw) == ["url", "id", "bytes_", "embedding", "text"]
    assert request.raw != canonical(request.raw)
    ours = proto_v2_codec.encode(proto_v2_codec.decode(request.raw))
    assert ours == canonical(request.raw)
    assert ours.index(b"bytes_") < ours.index(b"embedding") < ours.index(b"\x0a\x02id") < ours.index(b"text") \
        < ours.index(b"url"), "ours: sorted by key"


@pytest.mark.parametrize("frame", ANSWERS, ids=_ids(ANSWERS))
def test_captured_answers_decode_as_jina_decoded_them(frame: Frame) -> None:
    resp = proto_v2_codec.decode_response(frame.raw)
    jina = frame.decoded
    assert resp.request_id == jina["header"]["requestId"]
    assert resp.exec_endpoint == jina["header"]["execEndpoint"]
    assert resp.target_executor == jina["header"]["targetExecutor"] == ""
    assert resp.parameters == {} and resp.status is None
    assert [(r.executor, r.start_ns, r.end_ns) for r in resp.routes] == [
        (r["executor"], parse_timestamp(r["startTime"]), parse_timestamp(r["endTime"])) for r in jina["routes"]
    ]
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]
    expected = [(d["data"]["id"]["text"], d["data"]["text"]["text"]) for d in jina["data"]["docs"]["docs"]]
    assert [(d.id, d.text) for d in resp.docs or []] == expected
    assert all(d.text == d.text.upper() for d in resp.docs or []), "UpperExec ran"
    for d in resp.docs or []:
        assert (d.uri, d.embedding, d.blob, d.tags) == (None, None, None, None)


@pytest.mark.parametrize("frame", ANSWERS, ids=_ids(ANSWERS))
def test_captured_answers_re_encode_to_their_canonical_form(frame: Frame) -> None:
    assert proto_v2_codec.encode_response(proto_v2_codec.decode_response(frame.raw)) == canonical(frame.raw)


@pytest.mark.parametrize("frame", ANSWERS, ids=_ids(ANSWERS))
def test_captured_answers_envelope(frame: Frame) -> None:
    resp, count = proto_v2_codec.decode_response_envelope(frame.raw)
    assert count == 1 and resp.docs is None
    assert resp.request_id == frame.decoded["header"]["requestId"]
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]


def test_v1_codec_cannot_read_a_v2_answer_and_v2_can() -> None:
    (answer,) = [f for f in ANSWERS if f.name == "iv_bytes_index.003.recv.bin"]
    try:
        misread = proto_codec.decode_response(answer.raw)
    except MalformedPayload:
        pass
    else:  # parses, but each map entry lands in DocumentProto.id (field 1)
        assert [d.text for d in misread.docs or []] != ["HELLO"]
    assert [d.text for d in proto_v2_codec.decode_response(answer.raw).docs or []] == ["HELLO"]


def test_the_captured_executor_error_answer_decodes() -> None:
    """The error answer's raw bytes were left out of the capture; Jina's decoding of it is rebuilt with our
    messages (json_format) and read back."""
    events = json.loads((CAPTURES / "vii_executor_error_bytes.json").read_text())["events"]
    (decoded,) = [e["decoded"] for e in events if e.get("dir") == "recv" and e.get("decoded")]
    pb = json_format.ParseDict(decoded, jina_v2_pb2.DataRequestProto())
    resp = proto_v2_codec.decode_response(pb.SerializeToString())
    assert resp.request_id == "rid-fail" and resp.exec_endpoint == "/fail"
    assert resp.status is not None and resp.status.code == 1 and resp.is_error
    assert resp.status.exception is not None
    assert resp.status.exception.name == "ValueError" and resp.status.exception.executor == "UpperExec"
    assert [r.executor for r in resp.routes] == ["gateway", "upper"]
    assert resp.routes[1].status is not None and resp.routes[1].status.code == 1
    assert [(len(d.id or ""), d.text) for d in resp.docs or []] == [(32, "will-fail")]


# ---- frames that are not requests --------------------------------------------------------------


def test_end_of_stream_empty_and_garbage_frames() -> None:
    assert proto_v2_codec.decode_request(b"\x00") is END_OF_STREAM
    assert proto_v2_codec.END_OF_STREAM_FRAME == b"\x00" == proto_codec.END_OF_STREAM_FRAME
    with pytest.raises(BadRequest, match="empty binary frame"):
        proto_v2_codec.decode_request(b"")
    with pytest.raises(MalformedPayload, match="docarray v2"):
        proto_v2_codec.decode_request((CAPTURES / "iv_bytes_garbage.001.send.bin").read_bytes())


# ---- the mapping -------------------------------------------------------------------------------


def _one_doc(doc: Document) -> docarray_v2_pb2.DocProto:
    pb = jina_v2_pb2.DataRequestProto.FromString(proto_v2_codec.encode(DataRequest(request_id="r", docs=[doc])))
    (out,) = pb.data.docs.docs
    return out


def test_a_textdoc_is_written_as_docarray_writes_it() -> None:
    """JINA-WIRE.md §5.7: `TextDoc(id='d1', text='hello')` is sent with TextDoc's five keys, None as `{}`."""
    assert doc_dict(_one_doc(Document(id="d1", text="hello"))) == {
        "id": {"text": "d1", "type": "id"},
        "text": {"text": "hello"},
        "url": {},
        "embedding": {},
        "bytes_": {},
    }


def test_every_mapped_field_is_written_with_docarrays_type_names() -> None:
    emb = NdArray.from_list([0.5, 1.5])
    tensor = NdArray.from_list([[1, 2], [3, 4]])
    doc = Document(id="d1", text="t", uri="http://127.0.0.1/a.txt", embedding=emb, tensor=tensor, blob=b"\x00\xff",
                   tags={"s": "x", "f": 2.5, "i": 7, "b": False, "n": None, "d": {"k": [1, "two"]}},
                   chunks=[Document(id="c1", text="chunk")], matches=[Document(id="m1")])
    data = _one_doc(doc).data
    assert sorted(data) == ["bytes_", "chunks", "embedding", "id", "matches", "tags", "tensor", "text", "url"]
    assert (data["id"].text, data["id"].type) == ("d1", "id")
    assert (data["text"].text, data["text"].WhichOneof("docarray_type")) == ("t", None)
    assert (data["url"].text, data["url"].type) == ("http://127.0.0.1/a.txt", "text_url")
    assert data["embedding"].type == "ndarray_embedding"
    dense = data["embedding"].ndarray.dense
    assert (dense.buffer, list(dense.shape), dense.dtype) == (emb.buffer, [2], "<f8")
    assert data["tensor"].type == "ndarray" and list(data["tensor"].ndarray.dense.shape) == [2, 2]
    assert data["tensor"].ndarray.dense.dtype == "<i8"
    assert (data["bytes_"].blob, data["bytes_"].WhichOneof("docarray_type")) == (b"\x00\xff", None)
    tags = data["tags"].dict.data
    assert (tags["s"].text, tags["f"].float, tags["i"].integer, tags["b"].boolean) == ("x", 2.5, 7, False)
    assert tags["b"].WhichOneof("content") == "boolean" and tags["n"].WhichOneof("content") is None
    assert [n.WhichOneof("content") for n in tags["d"].dict.data["k"].list.data] == ["integer", "text"]
    assert [doc_dict(d) for d in data["chunks"].doc_array.docs] == [
        {"id": {"text": "c1", "type": "id"}, "text": {"text": "chunk"}, "url": {}, "embedding": {}, "bytes_": {}}
    ]
    assert proto_v2_codec.decode(proto_v2_codec.encode(DataRequest(docs=[doc]))).docs == [doc]


def test_an_unset_id_is_left_out_so_the_gateway_makes_one() -> None:
    """An empty `id` node would make docarray's id None; without the key its default factory makes one."""
    assert sorted(_one_doc(Document(text="x")).data) == ["bytes_", "embedding", "text", "url"]


def test_empty_tags_and_children_are_not_written() -> None:
    data = _one_doc(Document(id="a", tags={}, chunks=[], matches=[])).data
    assert sorted(data) == TEXTDOC_KEYS


def test_unmapped_v1_fields_are_not_written() -> None:
    doc = Document(id="a", parent_id="p", granularity=1, adjacency=2, mime_type="text/plain", weight=0.5,
                   modality="text", offset=1.0, location=[1.0])
    assert sorted(_one_doc(doc).data) == TEXTDOC_KEYS
    assert proto_v2_codec.decode(proto_v2_codec.encode(DataRequest(docs=[doc]))).docs == [Document(id="a")]


def test_large_integers_become_floats_and_other_values_are_refused() -> None:
    tags = _one_doc(Document(id="a", tags={"big": 2**40, "small": -(2**31)})).data["tags"].dict.data
    assert (tags["big"].WhichOneof("content"), tags["big"].float) == ("float", float(2**40))
    assert (tags["small"].WhichOneof("content"), tags["small"].integer) == ("integer", -(2**31))
    with pytest.raises(BadRequest, match=r"tags\.o"):
        proto_v2_codec.encode(DataRequest(docs=[Document(tags={"o": object()})]))


def _doc_pb(**entries: docarray_v2_pb2.NodeProto) -> docarray_v2_pb2.DocProto:
    pb = docarray_v2_pb2.DocProto()
    for key, node in entries.items():
        pb.data[key].CopyFrom(node)
    return pb


N = docarray_v2_pb2.NodeProto


def test_other_keys_of_any_schema_are_read_into_tags() -> None:
    nested = docarray_v2_pb2.DocProto()
    nested.data["x"].integer = 1
    docs = docarray_v2_pb2.DocListProto()
    docs.docs.add().data["y"].text = "z"
    arr = N(ndarray=docarray_v2_pb2.NdArrayProto(), type="ndarray")
    arr.ndarray.dense.buffer = NdArray.from_list([[1.0, 2.0]]).buffer
    arr.ndarray.dense.shape.extend([1, 2])
    arr.ndarray.dense.dtype = "<f8"
    pb = _doc_pb(
        id=N(text="d1", type="id"),
        text=N(text="t"),
        url=N(text="http://127.0.0.1/i.png", type="image_url"),
        price=N(integer=3), score=N(float=0.25), ok=N(boolean=True), lang=N(text="en"),
        raw=N(blob=b"\x01\x02"), vec=arr, nothing=N(),
        meta=N(dict=docarray_v2_pb2.DictOfAnyProto()), seq=N(list=docarray_v2_pb2.ListOfAnyProto()),
        child=N(doc=nested), kids=N(doc_array=docs),
    )
    pb.data["meta"].dict.data["a"].text = "b"
    pb.data["seq"].list.data.add().float = 1.5
    pb.data["seq"].list.data.add()
    doc = proto_v2_codec.doc_from_proto(pb)
    assert (doc.id, doc.text, doc.uri) == ("d1", "t", "http://127.0.0.1/i.png")
    assert doc.tags == {
        "price": 3, "score": 0.25, "ok": True, "lang": "en",
        "raw": base64.b64encode(b"\x01\x02").decode(), "vec": [[1.0, 2.0]],
        "meta": {"a": "b"}, "seq": [1.5, None], "child": {"x": 1}, "kids": [{"y": "z"}],
    }, "empty nodes of unknown keys are skipped"
    json.dumps(doc.tags)  # JSON-able, for json clients


def test_a_tags_dict_wins_over_a_top_level_key_and_blob_is_read_like_bytes() -> None:
    pb = _doc_pb(lang=N(text="top"), tags=N(dict=docarray_v2_pb2.DictOfAnyProto()), blob=N(blob=b"legacy"))
    pb.data["tags"].dict.data["lang"].text = "tags"
    pb.data["tags"].dict.data["k"].integer = 1
    doc = proto_v2_codec.doc_from_proto(pb)
    assert doc.tags == {"lang": "tags", "k": 1}
    assert doc.blob == b"legacy"


def test_known_keys_with_unexpected_content_go_to_tags() -> None:
    doc = proto_v2_codec.doc_from_proto(_doc_pb(text=N(integer=5), embedding=N(text="not an array")))
    assert doc.text is None and doc.embedding is None
    assert doc.tags == {"text": 5, "embedding": "not an array"}


def test_an_ndarray_of_any_type_name_is_read() -> None:
    arr = NdArray.from_list([1.0, 2.0])
    for type_name in ("ndarray", "ndarray_embedding", "torch_tensor", None):
        node = N(ndarray=docarray_v2_pb2.NdArrayProto())
        if type_name:
            node.type = type_name
        node.ndarray.dense.buffer = arr.buffer
        node.ndarray.dense.shape.append(2)
        node.ndarray.dense.dtype = arr.dtype
        assert proto_v2_codec.doc_from_proto(_doc_pb(embedding=node)).embedding == arr


# ---- the envelope ------------------------------------------------------------------------------


def test_the_envelope_round_trips_as_in_the_v1_codec() -> None:
    status = Status(1, "boom", ExceptionInfo("ValueError", ["boom"], ["tb"], "exec"))
    req = DataRequest(
        request_id="rid", exec_endpoint="/search", target_executor="upper", parameters={"k": 1.0, "s": "x"},
        routes=[Route("gateway", 1_000_000_000, 2_000_000_000), Route("upper", 1_100_000_000, None, status)],
        status=status, docs=[Document(id="a", text="b")],
    )
    back = proto_v2_codec.decode(proto_v2_codec.encode(req))
    assert back == req
    v1 = proto_codec.decode(proto_codec.encode(req))
    assert (back.request_id, back.parameters, back.routes, back.status) == \
        (v1.request_id, v1.parameters, v1.routes, v1.status)
    # Fields 1-3 are the same bytes in both generations.
    no_docs = DataRequest(request_id="rid", exec_endpoint="/", parameters={}, routes=req.routes, status=status)
    assert proto_v2_codec.encode(no_docs) == proto_codec.encode(no_docs)


def test_docs_none_empty_and_docs_bytes() -> None:
    assert proto_v2_codec.decode(proto_v2_codec.encode(DataRequest(request_id="r"))).docs is None
    assert proto_v2_codec.decode(proto_v2_codec.encode(DataRequest(request_id="r", docs=[]))).docs == []
    opaque = docarray_v2_pb2.DocListProto(docs=[_one_doc(Document(id="x"))]).SerializeToString()
    back = proto_v2_codec.decode(proto_v2_codec.encode(DataRequest(request_id="r", docs_bytes=opaque)))
    assert back.docs_bytes == opaque and back.docs is None
    env, count = proto_v2_codec.decode_response_envelope(
        proto_v2_codec.encode(DataRequest(request_id="r", docs=[Document(id=str(i)) for i in range(3)]))
    )
    assert (env.request_id, env.docs, count) == ("r", None, 3)


# ---- Document -> v2 -> Document ----------------------------------------------------------------

_text = st.text(max_size=20)
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False), _text,
)
_tag_value = st.recursive(
    _scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8
)
_arrays = st.one_of(
    st.lists(st.floats(allow_nan=False, width=64), max_size=6),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6),
    st.lists(st.lists(st.floats(allow_nan=False), min_size=2, max_size=2), min_size=1, max_size=3),
).map(NdArray.from_list)


def _documents(children: bool) -> st.SearchStrategy[Document]:
    kids = st.none() | st.lists(_documents(False), min_size=1, max_size=2) if children else st.none()
    return st.builds(
        Document,
        id=st.none() | _text,
        text=st.none() | _text,
        uri=st.none() | _text,
        embedding=st.none() | _arrays,
        tensor=st.none() | _arrays,
        blob=st.none() | st.binary(max_size=16),
        tags=st.none() | st.dictionaries(_text, _tag_value, min_size=1, max_size=4),
        chunks=kids,
        matches=kids,
    )


@settings(max_examples=300, deadline=None)
@given(docs=st.lists(_documents(True), max_size=3))
def test_documents_round_trip_through_v2(docs: list[Document]) -> None:
    req = DataRequest(request_id="rid", exec_endpoint="/index", docs=docs)
    payload = proto_v2_codec.encode_request(req)
    assert proto_v2_codec.decode_request(payload) == req
    assert proto_v2_codec.encode(proto_v2_codec.decode(payload)) == payload, "deterministic"


# ---- docarray itself ---------------------------------------------------------------------------


@pytest.mark.jina
def test_docarray_reads_what_we_write_and_we_read_what_it_writes() -> None:
    from jina_peer import require_peer

    python = require_peer("v2")
    emb = NdArray.from_list([1.0, 2.5])
    ours = DataRequest(request_id="ours-1", exec_endpoint="/index", docs=[
        Document(id="o1", text="hello", uri="http://127.0.0.1/x.txt", embedding=emb, blob=b"\x01\x02",
                 tensor=NdArray.from_list([[1, 2], [3, 4]]), tags={"k": "v", "n": 2.5, "i": 3, "d": {"x": [1, "y"]}},
                 chunks=[Document(id="c1", text="chunk")]),
        Document(text="no id"),
    ])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["JINA_OPTOUT_TELEMETRY"] = "1"
    proc = subprocess.run(
        [str(python), str(CHECK_SCRIPT)], input=json.dumps({"ours": proto_v2_codec.encode(ours).hex()}),
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["request_id"], out["exec_endpoint"]) == ("ours-1", "/index")

    first, second = out["read_as_textdoc"]
    assert first == {"id": "o1", "text": "hello", "url": "http://127.0.0.1/x.txt",
                     "embedding": {"values": [1.0, 2.5], "dtype": "<f8", "shape": [2]},
                     "bytes_": base64.b64encode(b"\x01\x02").decode()}
    assert second["text"] == "no id" and len(second["id"]) == 32, "docarray made an id"
    legacy = out["read_as_legacy"][0]
    assert legacy["tags"] == {"k": "v", "n": 2.5, "i": 3, "d": {"x": [1, "y"]}}
    assert legacy["tensor"] == {"values": [[1, 2], [3, 4]], "dtype": "<i8", "shape": [2, 2]}
    assert [(c["id"], c["text"]) for c in legacy["chunks"]] == [("c1", "chunk")]

    written = proto_v2_codec.decode_response(bytes.fromhex(out["written"]))
    assert written.request_id == "from-docarray"
    w1, w2 = written.docs or []
    expected = out["written_docs"][0]
    assert (w1.id, w1.text, w1.uri, w1.tags) == (expected["id"], expected["text"], expected["url"], None)
    assert w1.blob == base64.b64decode(expected["bytes_"])
    assert w1.embedding is not None and w1.embedding.dtype == "<f4" and w1.embedding.shape == (3,)
    assert w1.embedding.to_list() == expected["embedding"]["values"]
    assert w2 == Document(id="w2")


# ---- the flags that use it ---------------------------------------------------------------------


def _serve_backend(*flags: str) -> Any:
    from flowrelay.cli.main import build_parser
    from flowrelay.cli.serve import backend_from_args

    parser, _ = build_parser()
    return backend_from_args(parser.parse_args(["serve", *flags]))


def test_serve_upstream_docarray_picks_the_pools_codec() -> None:
    from relay.wire import json_codec

    assert _serve_backend("--upstream", "ws://127.0.0.1:1").primary.codec is proto_codec
    v2 = _serve_backend("--upstream", "ws://127.0.0.1:1", "--upstream-docarray", "v2", "--mirror", "ws://127.0.0.1:2")
    assert v2.primary.codec is proto_v2_codec and v2.mirror.codec is proto_v2_codec
    assert v2.primary.status()["docarray"] == "v2" and "docarray v2" in v2.describe()
    assert _serve_backend("--upstream", "grpc://127.0.0.1:1", "--upstream-docarray", "v2").primary.codec \
        is proto_v2_codec
    assert _serve_backend("--upstream", "ws://127.0.0.1:1", "--upstream-subprotocol", "json").primary.codec \
        is json_codec
    with pytest.raises(ValueError, match="--upstream-docarray v2 needs --upstream-subprotocol bytes"):
        _serve_backend("--upstream", "ws://127.0.0.1:1", "--upstream-docarray", "v2", "--upstream-subprotocol", "json")


def _load_config(*flags: str) -> Any:
    from flowrelay.cli.load import config_from_args
    from flowrelay.cli.main import build_parser

    parser, _ = build_parser()
    cfg, *_ = config_from_args(parser.parse_args(["load", *flags, "--rate", "1", "--requests", "1"]))
    return cfg


def test_load_docarray_flag() -> None:
    from flowrelay.cli.load import UsageError

    assert _load_config("ws://127.0.0.1:1").docs.docarray == "v1"
    assert _load_config("ws://127.0.0.1:1", "--docarray", "v2").docs.docarray == "v2"
    assert _load_config("grpc://127.0.0.1:1", "--docarray", "v2").docs.docarray == "v2"
    for flags in (("ws://127.0.0.1:1", "--subprotocol", "json"), ("ws://127.0.0.1:1", "--subprotocol", "none"),
                  ("http://127.0.0.1:1",)):
        with pytest.raises(UsageError, match="--docarray v2 is for protobuf requests"):
            _load_config(*flags, "--docarray", "v2")


def test_load_frames_and_answers_use_the_v2_encoding() -> None:
    from loadtest.payloads import DocSpec, build_templates
    from loadtest.sessions.base import Outcomes
    from loadtest.sessions.ws import Session

    spec = DocSpec(docs_per_request=3, text_bytes=8, embedding_dim=4, tags={"k": "v"}, blob_bytes=2, docarray="v2")
    (template,) = build_templates("bytes", spec, "/index", {"p": 1})
    rid = "x" * 24
    req = proto_v2_codec.decode_request(template.frame(rid))
    assert isinstance(req, DataRequest)
    assert (req.request_id, req.exec_endpoint, req.parameters) == (rid, "/index", {"p": 1.0})
    assert len(req.docs or []) == 3
    for doc in req.docs or []:
        assert doc.id is None, "no id: the Flow makes one"
        assert doc.text is not None and len(doc.text) == 8 and doc.blob is not None and len(doc.blob) == 2
        assert doc.embedding is not None and doc.embedding.shape == (4,) and doc.tags == {"k": "v"}

    def session(docarray: str) -> Session:
        return Session("ws://127.0.0.1:1", "bytes", "bytes", 10, Outcomes(lambda: 0.0, lambda *a: None,
                                                                          lambda *a: None), docarray=docarray)

    # The session reads answers with the matching generation's message (relay.wire.answers).
    v1_answer = proto_codec.encode(DataRequest(request_id=rid, docs=[Document(text="a")]))
    v2_answer = proto_v2_codec.encode(DataRequest(request_id=rid, docs=[Document(text="a")]))
    assert session("v2")._decode(v2_answer).request_id == rid
    assert session("v1")._decode(v1_answer).request_id == rid
    assert session("v2")._decode(v2_answer).docs == session("v1")._decode(v1_answer).docs == 1
