"""relay.wire.json_to_proto: json-mode Documents straight into DocumentProto, the same bytes as the model.

Every sample goes both ways, `add_json_doc` (or `docs_request` for a batch) and
`Document.from_json_dict(d).fill_proto(...)`, and the serialized messages must be equal, or both ways
must refuse the Document. The samples: hand-made ones that probe each field and the edge cases (empty
strings in the `content` oneof, numbers where strings go, empty tags, nulls), and every Document of the
captures of a real Jina Flow (/work/shared/protocol/captures), sent or answered, json or bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.errors import WireError
from relay.wire.json_to_proto import add_json_doc, docs_request
from relay.wire.messages import DataRequest
from relay.wire.proto import docarray_pb2, jina_pb2

CAPTURES = Path("/work/shared/protocol/captures/a_legacy_ws")

SAMPLES: list[Any] = [
    {"text": "hello"},
    {"text": ""},
    {"id": "a", "text": "x"},
    {"id": "", "text": "x"},
    {"id": None, "text": None},
    {"text": "x", "uri": "file:///a.txt", "mime_type": "text/plain", "parent_id": "p", "modality": "text"},
    {"text": "x", "tags": {"n": 1, "f": 1.5, "s": "v", "b": True, "z": None, "l": [1, "a", None, {"k": 2}]}},
    {"text": "x", "tags": {}},
    {"text": "x", "tags": None},
    {"text": 5},
    {"id": 7, "text": "x"},
    {"text": 1.5, "uri": 3},
    {"text": True},
    {"text": ["a"]},
    {"tags": [1]},
    {"text": "x", "unknown": 1},
    {"blob": "aGVsbG8="},
    {"blob": "not base64!"},
    {"text": "a", "blob": "aGVsbG8="},
    {"embedding": [1.0, 2.0, 3.0]},
    {"embedding": [[1, 2], [3, 4]], "text": "m"},
    {"tensor": [1, 2], "text": "t"},
    {"embedding": [[1], [2, 3]]},
    {"granularity": 2, "adjacency": 1, "weight": 0.5, "offset": 3, "location": [1, 2]},
    {"granularity": -1},
    {"scores": {"cos": {"value": 0.5, "op_name": "x"}}, "evaluations": {"p": {"value": 1}}},
    {"chunks": [{"text": "c1"}, {"text": "c2", "tags": {"a": 1}}], "matches": [{"id": "m"}]},
    {"text": "caf\u00e9 \u2603 \U0001f600"},
    [],
    "text",
    5,
    None,
]


def capture_docs() -> list[Any]:
    """Every Document of the captured frames: json ones as sent, bytes ones in their json form."""
    docs: list[Any] = []
    if not CAPTURES.is_dir():
        return docs
    for path in sorted(CAPTURES.glob("*.json")):
        if path.name.startswith("_"):
            continue
        for event in json.loads(path.read_text()).get("events", []):
            obj = event.get("json")
            data = obj.get("data") if isinstance(obj, dict) else None
            if isinstance(data, dict):
                data = data.get("docs")
            if isinstance(data, list):
                docs += data
    for path in sorted(CAPTURES.glob("*.bin")):
        try:
            req = proto_codec.decode(path.read_bytes())
        except WireError:
            continue
        docs += [d.to_json_dict(full=False) for d in req.docs or []]
    return docs


def model_bytes(d: Any) -> bytes | None:
    """The Document path's bytes, or None when it refuses the Document."""
    try:
        doc = Document.from_json_dict(d)
        pb = docarray_pb2.DocumentProto()
        doc.fill_proto(pb)
    except (WireError, ValueError, TypeError):
        return None
    return pb.SerializeToString(deterministic=True)


def direct_bytes(d: Any) -> bytes | None:
    holder = docarray_pb2.DocumentArrayProto()
    try:
        pb = add_json_doc(holder.docs, d)
    except (WireError, ValueError, TypeError):
        assert len(holder.docs) == 0, "a refused Document must leave nothing behind"
        return None
    assert len(holder.docs) == 1 and holder.docs[0] == pb
    return pb.SerializeToString(deterministic=True)


def test_captures_hold_documents() -> None:
    if not CAPTURES.is_dir():
        pytest.skip("no captures of a real Flow on this machine")
    assert len(capture_docs()) >= 20


@pytest.mark.parametrize("d", SAMPLES + capture_docs(), ids=lambda d: json.dumps(d)[:40])
def test_one_document_same_bytes_as_the_model(d: Any) -> None:
    assert direct_bytes(d) == model_bytes(d)


def test_the_model_path_does_refuse_some_samples() -> None:
    # So that the comparison above also covers refusals, not only agreements.
    refused = [d for d in SAMPLES if model_bytes(d) is None]
    assert {"text": ["a"]} in refused and [] in refused and {"granularity": -1} in refused


def request_bytes(envelope: DataRequest, docs: list[Any]) -> bytes:
    req = DataRequest(request_id=envelope.request_id, exec_endpoint=envelope.exec_endpoint,
                      target_executor=envelope.target_executor, parameters=envelope.parameters,
                      docs=[Document.from_json_dict(d) for d in docs])
    return proto_codec.encode_request(req)


@pytest.mark.parametrize("params", [None, {"k": 1, "nested": {"a": [1, "b"]}}])
def test_a_batch_of_plain_documents_same_bytes_as_the_model(params: dict[str, Any] | None) -> None:
    env = DataRequest(request_id="rid-1", exec_endpoint="/index", target_executor="upper", parameters=params)
    envelope = jina_pb2.DataRequestProto()
    proto_codec.envelope_to_proto(env, envelope)
    docs = [{"id": f"d{i}", "text": f"t{i}", "uri": "u"} if i % 2 else {"text": ""} for i in range(32)]
    docs[4]["tags"] = {"n": 1, "l": [1.5, "x", None, {"b": True}]}
    pb = docs_request(envelope, docs)
    assert pb is not None
    assert pb.SerializeToString(deterministic=True) == request_bytes(env, docs)


@pytest.mark.parametrize("odd", [{"text": 5}, {"text": "x", "tags": {}}, {"tags": [1]}, {"embedding": [1]}, [], "x"])
def test_a_batch_with_one_unusual_document_is_left_to_the_one_by_one_path(odd: Any) -> None:
    envelope = jina_pb2.DataRequestProto()
    docs = [{"text": "a"}, odd, {"text": "b"}]
    before = json.dumps(docs)
    assert docs_request(envelope, docs) is None
    assert json.dumps(docs) == before
    assert docs_request(envelope, []) is None
