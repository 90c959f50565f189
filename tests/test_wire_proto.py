"""The bytes subprotocol: `jina.DataRequestProto` frames, checked against a real Jina 3.34 Flow.

Evidence used here:

* JINA-WIRE.md §4.1, the minimal request test vector, and §5, the field numbers of every message;
* every binary frame captured in `captures/a_legacy_ws/` (raw probes, README there) and in its
  `official_client/` folder (jina's own `Client(protocol='websocket')` through a logging proxy), with
  the `decoded` form the capture tool produced with Jina's classes (`MessageToDict`, camelCase keys).

Each good frame must decode to the values Jina saw and re-encode to the very same bytes. Jina writes
the map entries of a `Struct` (`tags`, `parameters`) in hash-table order, which protobuf does not
define; in these captures that order happens to be sorted by key, which is the order our encoder
always writes (deterministic serialization), so every captured frame is reproduced exactly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from relay.wire import proto_codec
from relay.wire.documents import Document, NdArray
from relay.wire.errors import CLOSE_INVALID_PAYLOAD, BadRequest, MalformedPayload, WireError
from relay.wire.messages import END_OF_STREAM, DataRequest, ExceptionInfo, Route, Status
from relay.wire.proto import docarray_pb2, jina_pb2


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CAPTURES = _shared_dir() / "protocol" / "captures" / "a_legacy_ws"
OFFICIAL = CAPTURES / "official_client"

HEX32 = re.compile(r"^[0-9a-f]{32}$")

# JINA-WIRE.md §4.1: request_id `rid-1`, endpoint `/`, one doc id `rid-1-doc0`, text `hello`.
SPEC_VECTOR = bytes.fromhex(
    "0a0a" "0a05" "7269642d31" "1a01" "2f"
    "2217" "0a15" "0a13" "0a0a" "7269642d312d646f6330" "2205" "68656c6c6f"
)  # fmt: skip


# ---- the captured frames -----------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One captured binary frame: where it is, who sent it, and Jina's decoding of it if recorded."""

    name: str
    path: Path
    sent_by_client: bool
    decoded: Any

    @property
    def raw(self) -> bytes:
        return self.path.read_bytes()


def _load_frames() -> list[Frame]:
    frames: list[Frame] = []
    for exp in sorted(CAPTURES.glob("*.json")):
        if exp.name == "_summary.json":
            continue
        for ev in json.loads(exp.read_text())["events"]:
            if ev.get("type") == "binary":
                path = CAPTURES / ev["bin_file"]
                frames.append(Frame(ev["bin_file"], path, ev["dir"] == "send", ev.get("decoded")))
    for line in (OFFICIAL / "proxy_frames_decoded.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev.get("ev") == "frame" and ev.get("type") == "binary":
            decoded = ev["decoded"] if isinstance(ev.get("decoded"), dict) else None
            frames.append(Frame("official_client/" + ev["file"], OFFICIAL / ev["file"], ev["dir"] == "c2s", decoded))
    return frames


FRAMES = _load_frames()
ON_DISK = [f for f in FRAMES if f.path.exists()]
EOS_FRAMES = [f for f in ON_DISK if f.raw == b"\x00"]
EMPTY_FRAMES = [f for f in ON_DISK if f.raw == b""]
GARBAGE = CAPTURES / "iv_bytes_garbage.001.send.bin"
GOOD_FRAMES = [f for f in ON_DISK if f not in EOS_FRAMES and f not in EMPTY_FRAMES and f.path != GARBAGE]


def _frame(name: str) -> Frame:
    return next(f for f in FRAMES if f.name == name)


def _ids(frames: list[Frame]) -> list[str]:
    return [f.name for f in frames]


def _experiment(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / f"{name}.json").read_text())


def test_every_captured_binary_frame_is_classified() -> None:
    on_disk = sorted(p.relative_to(CAPTURES).as_posix() for p in [*CAPTURES.glob("*.bin"), *OFFICIAL.glob("*.bin")])
    assert sorted(f.name for f in ON_DISK) == on_disk
    assert (len(GOOD_FRAMES), len(EOS_FRAMES), len(EMPTY_FRAMES)) == (30, 7, 5)
    assert len(on_disk) == 30 + 7 + 5 + 1  # + the garbage frame
    # The one frame the capture describes but does not hold (its traceback had machine-local paths).
    assert [f.name for f in FRAMES if not f.path.exists()] == ["vii_executor_error_bytes.003.recv.bin"]


# ---- spec vector and field numbers -------------------------------------------------------------


def test_spec_minimal_vector_encodes_byte_for_byte() -> None:
    req = DataRequest(request_id="rid-1", exec_endpoint="/", docs=[Document(id="rid-1-doc0", text="hello")])
    assert proto_codec.encode_request(req) == SPEC_VECTOR
    assert proto_codec.encode(req) == SPEC_VECTOR


def test_spec_minimal_vector_decodes() -> None:
    req = proto_codec.decode_request(SPEC_VECTOR)
    assert isinstance(req, DataRequest)
    assert (req.request_id, req.exec_endpoint, req.target_executor, req.parameters) == ("rid-1", "/", None, None)
    # A request's documents stay protobuf until asked for (tests/test_wire_lazy.py has the rest).
    assert req.docs is None and [d.text for d in req.docs_proto] == ["hello"]
    assert req.load_docs() == [Document(id="rid-1-doc0", text="hello")]
    assert req.docs == [Document(id="rid-1-doc0", text="hello")] and req.raw is None
    assert req.routes == [] and req.status is None and req.docs_bytes is None


_T = FieldDescriptor
SPEC_FIELDS = [
    # (message, field, number, type) from JINA-WIRE.md §5.1-§5.6
    (jina_pb2.DataRequestProto, "header", 1, _T.TYPE_MESSAGE),
    (jina_pb2.DataRequestProto, "parameters", 2, _T.TYPE_MESSAGE),
    (jina_pb2.DataRequestProto, "routes", 3, _T.TYPE_MESSAGE),
    (jina_pb2.DataRequestProto, "data", 4, _T.TYPE_MESSAGE),
    (jina_pb2.DataRequestProto.DataContentProto, "docs", 1, _T.TYPE_MESSAGE),
    (jina_pb2.DataRequestProto.DataContentProto, "docs_bytes", 2, _T.TYPE_BYTES),
    (jina_pb2.HeaderProto, "request_id", 1, _T.TYPE_STRING),
    (jina_pb2.HeaderProto, "status", 2, _T.TYPE_MESSAGE),
    (jina_pb2.HeaderProto, "exec_endpoint", 3, _T.TYPE_STRING),
    (jina_pb2.HeaderProto, "target_executor", 4, _T.TYPE_STRING),
    (jina_pb2.HeaderProto, "timeout", 5, _T.TYPE_UINT32),
    (jina_pb2.StatusProto, "code", 1, _T.TYPE_ENUM),
    (jina_pb2.StatusProto, "description", 2, _T.TYPE_STRING),
    (jina_pb2.StatusProto, "exception", 3, _T.TYPE_MESSAGE),
    (jina_pb2.StatusProto.ExceptionProto, "name", 1, _T.TYPE_STRING),
    (jina_pb2.StatusProto.ExceptionProto, "args", 2, _T.TYPE_STRING),
    (jina_pb2.StatusProto.ExceptionProto, "stacks", 3, _T.TYPE_STRING),
    (jina_pb2.StatusProto.ExceptionProto, "executor", 4, _T.TYPE_STRING),
    (jina_pb2.RouteProto, "executor", 1, _T.TYPE_STRING),
    (jina_pb2.RouteProto, "start_time", 2, _T.TYPE_MESSAGE),
    (jina_pb2.RouteProto, "end_time", 3, _T.TYPE_MESSAGE),
    (jina_pb2.RouteProto, "status", 4, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentArrayProto, "docs", 1, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "id", 1, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "blob", 2, _T.TYPE_BYTES),
    (docarray_pb2.DocumentProto, "tensor", 3, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "text", 4, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "granularity", 5, _T.TYPE_UINT32),
    (docarray_pb2.DocumentProto, "adjacency", 6, _T.TYPE_UINT32),
    (docarray_pb2.DocumentProto, "parent_id", 7, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "weight", 8, _T.TYPE_FLOAT),
    (docarray_pb2.DocumentProto, "uri", 9, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "modality", 10, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "mime_type", 11, _T.TYPE_STRING),
    (docarray_pb2.DocumentProto, "offset", 12, _T.TYPE_FLOAT),
    (docarray_pb2.DocumentProto, "location", 13, _T.TYPE_FLOAT),
    (docarray_pb2.DocumentProto, "chunks", 14, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "matches", 15, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "embedding", 16, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "tags", 17, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "scores", 18, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "evaluations", 19, _T.TYPE_MESSAGE),
    (docarray_pb2.DocumentProto, "_metadata", 20, _T.TYPE_MESSAGE),
    (docarray_pb2.NdArrayProto, "dense", 1, _T.TYPE_MESSAGE),
    (docarray_pb2.NdArrayProto, "sparse", 2, _T.TYPE_MESSAGE),
    (docarray_pb2.NdArrayProto, "cls_name", 3, _T.TYPE_STRING),
    (docarray_pb2.NdArrayProto, "parameters", 4, _T.TYPE_MESSAGE),
    (docarray_pb2.DenseNdArrayProto, "buffer", 1, _T.TYPE_BYTES),
    (docarray_pb2.DenseNdArrayProto, "shape", 2, _T.TYPE_UINT32),
    (docarray_pb2.DenseNdArrayProto, "dtype", 3, _T.TYPE_STRING),
    (docarray_pb2.NamedScoreProto, "value", 1, _T.TYPE_FLOAT),
    (docarray_pb2.NamedScoreProto, "op_name", 2, _T.TYPE_STRING),
    (docarray_pb2.NamedScoreProto, "description", 3, _T.TYPE_STRING),
    (docarray_pb2.NamedScoreProto, "ref_id", 4, _T.TYPE_STRING),
]


@pytest.mark.parametrize(
    ("message", "field", "number", "ftype"), SPEC_FIELDS, ids=[f"{m.__name__}.{f}" for m, f, _, _ in SPEC_FIELDS]
)
def test_field_numbers_and_types_match_the_spec(message: Any, field: str, number: int, ftype: int) -> None:
    fd = message.DESCRIPTOR.fields_by_name[field]
    assert (fd.number, fd.type) == (number, ftype)


def test_header_strings_are_proto3_optional_and_content_is_a_oneof() -> None:
    header = jina_pb2.HeaderProto.DESCRIPTOR
    for name in ("exec_endpoint", "target_executor", "timeout"):
        assert header.fields_by_name[name].has_presence, name
    assert not header.fields_by_name["request_id"].has_presence
    content = docarray_pb2.DocumentProto.DESCRIPTOR.oneofs_by_name["content"]
    assert [f.name for f in content.fields] == ["blob", "tensor", "text"]
    assert [f.name for f in jina_pb2.DataRequestProto.DataContentProto.DESCRIPTOR.oneofs[0].fields] == [
        "docs",
        "docs_bytes",
    ]
    assert dict(jina_pb2.StatusProto.StatusCode.items()) == {"SUCCESS": 0, "ERROR": 1}


# ---- captured frames: decode, compare with Jina's decoding, re-encode --------------------------


def _decode(frame: Frame) -> DataRequest:
    req = proto_codec.decode_request(frame.raw) if frame.sent_by_client else proto_codec.decode_response(frame.raw)
    assert isinstance(req, DataRequest)
    req.load_docs()  # decode_request leaves them protobuf (tests/test_wire_lazy.py checks that form)
    return req


@pytest.mark.parametrize("frame", GOOD_FRAMES, ids=_ids(GOOD_FRAMES))
def test_captured_frame_reencodes_to_the_same_bytes(frame: Frame) -> None:
    raw = frame.raw
    assert proto_codec.encode(_decode(frame)) == raw


def _ts_ns(text: str | None) -> int | None:
    if text is None:
        return None
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds()


def _status_view_from_capture(s: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if s is None:
        return None
    exc = s.get("exception", {})
    code = jina_pb2.StatusProto.StatusCode.Value(s["code"]) if isinstance(s.get("code"), str) else s.get("code", 0)
    return (code, s.get("description", ""), exc.get("name"), exc.get("args"), exc.get("stacks"), exc.get("executor"))


def _status_view(s: Status | None) -> tuple[Any, ...] | None:
    if s is None:
        return None
    e = s.exception
    return (s.code, s.description, e and e.name, e and e.args, e and e.stacks, e and e.executor)


def _view_from_capture(decoded: dict[str, Any]) -> dict[str, Any]:
    """The values a user reads, from protobuf's MessageToDict output as the capture stored it."""
    header = decoded.get("header", {})
    docs = decoded["data"]["docs"].get("docs", [])
    for d in docs:
        assert set(d) <= {"id", "text", "tags"}, "a capture holds a Document field this view does not compare"
    return {
        "request_id": header.get("requestId", ""),
        "exec_endpoint": header.get("execEndpoint"),
        "target_executor": header.get("targetExecutor"),
        "status": _status_view_from_capture(header.get("status")),
        "parameters": decoded.get("parameters"),
        "routes": [
            (
                r["executor"],
                _ts_ns(r.get("startTime")),
                _ts_ns(r.get("endTime")),
                _status_view_from_capture(r.get("status")),
            )
            for r in decoded.get("routes", [])
        ],
        "docs": [(d.get("id"), d.get("text"), d.get("tags")) for d in docs],
    }


def _view(req: DataRequest) -> dict[str, Any]:
    return {
        "request_id": req.request_id,
        "exec_endpoint": req.exec_endpoint,
        "target_executor": req.target_executor,
        "status": _status_view(req.status),
        "parameters": req.parameters,
        "routes": [(r.executor, r.start_ns, r.end_ns, _status_view(r.status)) for r in req.routes],
        "docs": [(d.id, d.text, d.tags) for d in req.docs or []],
    }


DECODED_FRAMES = [f for f in GOOD_FRAMES if f.decoded is not None]


def test_jina_decoded_most_frames() -> None:
    # All replies of the raw probes and every frame of the official client carry Jina's decoding.
    assert len(DECODED_FRAMES) == 17


@pytest.mark.parametrize("frame", DECODED_FRAMES, ids=_ids(DECODED_FRAMES))
def test_captured_frame_decodes_to_what_jina_decoded(frame: Frame) -> None:
    assert _view(_decode(frame)) == _view_from_capture(frame.decoded)


@pytest.mark.parametrize("frame", DECODED_FRAMES, ids=_ids(DECODED_FRAMES))
def test_our_proto_schema_reads_the_frame_like_jinas(frame: Frame) -> None:
    # MessageToDict with our generated classes gives exactly what Jina's classes gave: same field
    # numbers, names, types and enum values for everything in these frames.
    pb = jina_pb2.DataRequestProto.FromString(frame.raw)
    assert json_format.MessageToDict(pb) == frame.decoded


def test_bytes_index_request_and_reply() -> None:
    req = _decode(_frame("iv_bytes_index.001.send.bin"))
    assert (req.request_id, req.exec_endpoint, req.target_executor, req.parameters) == (
        "my-request-id-0001",
        "/index",
        None,
        None,
    )
    assert req.docs is not None and [d.text for d in req.docs] == ["hello"]
    assert HEX32.match(req.docs[0].id or "")

    resp = _decode(_frame("iv_bytes_index.003.recv.bin"))
    assert resp.request_id == "my-request-id-0001"
    assert (resp.exec_endpoint, resp.target_executor, resp.parameters, resp.status) == ("/index", "", {}, None)
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]
    assert resp.routes[0].start_ns == _ts_ns("2026-11-26T21:21:58.772315Z")
    assert resp.routes[0].end_ns == _ts_ns("2026-11-26T21:21:58.776836Z")
    assert resp.docs == [Document(id=req.docs[0].id, text="HELLO", tags={"slept_ms": 2.0, "seen_by": "upper"})]
    assert resp.docs[0].id == "c51826530f2527f7a5c2bfbda89b7c32"


def test_pipelined_requests_carry_their_ids_in_send_order() -> None:
    sends = [f for f in GOOD_FRAMES if f.name.startswith("v_pipeline_bytes_10.") and f.sent_by_client]
    reqs = [_decode(f) for f in sends]
    assert [r.request_id for r in reqs] == [f"rid-{i:02d}" for i in range(10)]
    assert [[d.text for d in r.docs or []] for r in reqs] == [[f"b{i}"] for i in range(10)]
    assert {r.exec_endpoint for r in reqs} == {"/index"}


def test_executor_error_request() -> None:
    req = _decode(_frame("vii_executor_error_bytes.001.send.bin"))
    assert (req.request_id, req.exec_endpoint) == ("rid-fail", "/fail")
    assert [d.text for d in req.docs or []] == ["will-fail"]


def _connection_of(frame: Frame) -> str:
    # Frames of one WebSocket connection: same experiment, or same proxied connection of the client.
    return frame.name.split(".")[0]


RESPONSES = [f for f in GOOD_FRAMES if not f.sent_by_client]


@pytest.mark.parametrize("frame", RESPONSES, ids=_ids(RESPONSES))
def test_reply_answers_its_request(frame: Frame) -> None:
    resp = _decode(frame)
    requests = [_decode(f) for f in GOOD_FRAMES if f.sent_by_client and _connection_of(f) == _connection_of(frame)]
    matching = [r for r in requests if r.request_id == resp.request_id]
    assert len(matching) == 1
    req = matching[0]
    assert resp.exec_endpoint == req.exec_endpoint
    assert resp.target_executor == ""  # the gateway blanks it (JINA-WIRE.md §4.3)
    assert resp.parameters == (req.parameters or {})
    assert [d.id for d in resp.docs or []] == [d.id for d in req.docs or []]
    assert [d.text for d in resp.docs or []] == [(d.text or "").upper() for d in req.docs or []]
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]
    # One clock (the gateway's): it starts first and ends last, the Executors run one after the other.
    gateway, upper, sleeper = resp.routes
    times = [gateway.start_ns, upper.start_ns, upper.end_ns, sleeper.start_ns, sleeper.end_ns, gateway.end_ns]
    assert None not in times
    assert times == sorted(times)  # type: ignore[type-var]


def _executor_error_reply() -> tuple[bytes, dict[str, Any]]:
    """The /fail reply of vii_executor_error_bytes, rebuilt from Jina's decoding of it.

    The raw .bin was left out of the captures (its traceback held machine-local paths); the JSON is
    protobuf's MessageToDict of that reply with the paths replaced, so ParseDict gives back the same
    message except for the length of the stack strings: 3408 bytes here against 3926 on the wire.
    """
    ev = next(e for e in _experiment("vii_executor_error_bytes")["events"] if e.get("dir") == "recv")
    assert ev["len"] == 3926
    pb = json_format.ParseDict(ev["decoded"], jina_pb2.DataRequestProto())
    return pb.SerializeToString(deterministic=True), ev["decoded"]


def test_executor_error_reply_decodes() -> None:
    raw, decoded = _executor_error_reply()
    resp = proto_codec.decode_response(raw)
    assert _view(resp) == _view_from_capture(decoded)

    assert resp.is_error
    status = resp.status
    assert status is not None and status.code == 1
    assert status.description == "ValueError('deliberate failure from UpperExec on /fail')"
    assert status.exception is not None
    assert status.exception.name == "ValueError"
    assert status.exception.args == ["deliberate failure from UpperExec on /fail"]
    assert status.exception.executor == "UpperExec"
    assert status.exception.stacks[0] == "Traceback (most recent call last):\n"
    assert status.exception.stacks[-1] == "ValueError: deliberate failure from UpperExec on /fail\n"

    # The failing Executor's route carries the same status; the one after it has no route.
    assert [r.executor for r in resp.routes] == ["gateway", "upper"]
    assert resp.routes[0].status is None
    assert resp.routes[1].status == status
    # The docs come back as they were sent.
    req = _decode(_frame("vii_executor_error_bytes.001.send.bin"))
    assert resp.docs == req.docs
    assert proto_codec.encode(resp) == raw


def test_executor_error_reply_is_laid_out_like_jinas() -> None:
    # The capture kept the first 64 bytes of the real reply. Up to the redacted stack strings they
    # hold: header{ request_id, status{ code=ERROR, description... } }, with 2-byte length varints.
    ev = next(e for e in _experiment("vii_executor_error_bytes")["events"] if e.get("dir") == "recv")
    head = bytes.fromhex(ev["hex_head"])
    assert len(head) == 64
    ours = proto_codec.encode(proto_codec.decode_response(_executor_error_reply()[0]))
    for buf in (head, ours):
        assert buf[0] == 0x0A and buf[1] & 0x80 and not buf[2] & 0x80  # header, 2-byte length
        assert buf[3:14] == b"\x0a\x08rid-fail\x12"  # request_id, then status
        assert buf[14] & 0x80 and not buf[15] & 0x80  # status, 2-byte length
    assert ours[16:64] == head[16:]
    assert head[16:].startswith(b"\x08\x01\x12\x38ValueError('deliberate failure")


# ---- bad and special frames --------------------------------------------------------------------


@pytest.mark.parametrize("frame", EOS_FRAMES, ids=_ids(EOS_FRAMES))
def test_captured_end_of_stream_frames(frame: Frame) -> None:
    assert frame.sent_by_client
    assert proto_codec.decode_request(frame.raw) is END_OF_STREAM


def test_end_of_stream_frame_constant() -> None:
    assert proto_codec.END_OF_STREAM_FRAME == b"\x00"
    # Only requests have an end-of-stream marker: as a reply, 0x00 is not a parsable message.
    with pytest.raises(MalformedPayload):
        proto_codec.decode_response(b"\x00")


def test_garbage_frame_is_malformed_1007() -> None:
    raw = GARBAGE.read_bytes()
    assert raw == b"\xff\xfegarbage"
    with pytest.raises(MalformedPayload) as info:
        proto_codec.decode_request(raw)
    assert info.value.close_code == 1007 == CLOSE_INVALID_PAYLOAD
    assert info.value.reason
    assert len(info.value.reason.encode()) <= 123


@pytest.mark.parametrize("frame", GOOD_FRAMES[:3] + RESPONSES[:2], ids=_ids(GOOD_FRAMES[:3] + RESPONSES[:2]))
def test_truncated_frame_is_malformed(frame: Frame) -> None:
    with pytest.raises(MalformedPayload) as info:
        proto_codec.decode_request(frame.raw[:-1])
    assert info.value.close_code == 1007


EMPTY_REQUESTS = [f for f in EMPTY_FRAMES if f.sent_by_client]


@pytest.mark.parametrize("frame", EMPTY_REQUESTS, ids=_ids(EMPTY_REQUESTS))
def test_empty_request_frame_is_a_wire_error(frame: Frame) -> None:
    # iv_bytes_empty_frame sent b"" on `/` (Jina crashed); the official client sends it on /dry_run.
    with pytest.raises(WireError) as info:
        proto_codec.decode_request(frame.raw)
    assert isinstance(info.value, BadRequest)
    assert info.value.close_code == 1007
    assert "0x00" in info.value.reason


def test_dry_run_reply_is_an_empty_success_status() -> None:
    # The 0-byte reply to /dry_run is a StatusProto{code: SUCCESS}, which serialises to nothing.
    replies = [f for f in EMPTY_FRAMES if not f.sent_by_client]
    assert sorted(f.name for f in replies) == ["iv_dry_run_bytes.002.recv.bin", "official_client/conn03.0002.s2c.bin"]
    pb = jina_pb2.StatusProto()
    proto_codec.status_to_proto(Status(), pb)
    for f in replies:
        assert pb.SerializeToString() == f.raw
        assert jina_pb2.StatusProto.FromString(f.raw).code == jina_pb2.StatusProto.SUCCESS


# ---- encoder details that the captures rely on -------------------------------------------------


def test_empty_parameters_are_sent_as_an_empty_struct() -> None:
    # A gateway echoes `parameters: {}` as field 2 with length 0 (`12 00`); None leaves it out.
    with_empty = proto_codec.encode(DataRequest(request_id="r", parameters={}))
    without = proto_codec.encode(DataRequest(request_id="r"))
    assert with_empty == bytes.fromhex("0a030a01721200")
    assert without == bytes.fromhex("0a030a0172")
    assert proto_codec.decode(with_empty).parameters == {}
    assert proto_codec.decode(without).parameters is None


def test_blank_target_executor_is_sent_and_read_back_as_blank() -> None:
    raw = proto_codec.encode(DataRequest(request_id="r", exec_endpoint="/index", target_executor=""))
    assert raw.endswith(b"\x22\x00")
    assert proto_codec.decode(raw).target_executor == ""


def test_struct_keys_are_written_in_sorted_order_whatever_the_dict_order() -> None:
    a = DataRequest(request_id="r", parameters={"zeta": 1.0, "alpha": "x", "mid": {"b": True, "a": None}})
    b = DataRequest(request_id="r", parameters={"mid": {"a": None, "b": True}, "alpha": "x", "zeta": 1.0})
    raw = proto_codec.encode(a)
    assert raw == proto_codec.encode(b)
    assert raw.index(b"alpha") < raw.index(b"mid") < raw.index(b"zeta")
    assert proto_codec.decode(raw).parameters == {"zeta": 1.0, "alpha": "x", "mid": {"b": True, "a": None}}


def test_status_and_routes_round_trip() -> None:
    status = Status(code=1, description="boom", exception=ExceptionInfo("KeyError", ["'k'"], ["tb1", "tb2"], "Exec"))
    req = DataRequest(
        request_id="r-1",
        exec_endpoint="/fail",
        target_executor="",
        parameters={"n": 3.0, "__results__": {}},
        routes=[
            Route("gateway", 1_795_728_119_246_844_000, 1_795_728_119_257_040_000),
            Route("upper", 1_795_728_119_246_900_123, 1_795_728_119_256_000_000, status),
            Route("sleeper", 1_795_728_119_256_100_000, None),
            Route("never-started"),
        ],
        status=status,
        docs=[],
    )
    back = proto_codec.decode(proto_codec.encode(req))
    assert back == req
    assert back.is_error
    pb = jina_pb2.DataRequestProto.FromString(proto_codec.encode(req))
    assert pb.routes[1].start_time.seconds == 1_795_728_119 and pb.routes[1].start_time.nanos == 246_900_123
    assert not pb.routes[2].HasField("end_time")
    assert pb.header.status.code == jina_pb2.StatusProto.ERROR
    assert pb.data.WhichOneof("documents") == "docs" and len(pb.data.docs.docs) == 0


def test_docs_bytes_pass_through_untouched() -> None:
    blob = b"\x80\x04opaque pickle bytes"
    raw = proto_codec.encode(DataRequest(request_id="r", docs_bytes=blob))
    back = proto_codec.decode(raw)
    assert back.docs is None
    assert back.docs_bytes == blob
    assert proto_codec.encode(back) == raw


# ---- arrays ------------------------------------------------------------------------------------


ARRAYS = [
    # (dtype, struct format char, shape, values as nested lists)
    ("<f4", "f", (3,), [1.5, -2.0, 0.25]),
    ("<f4", "f", (2, 3), [[1.0, 2.0, 3.0], [-4.5, 0.0, 6.125]]),
    ("<f8", "d", (3,), [0.1, -1e300, 5e-324]),
    ("<f8", "d", (2, 2), [[1.0, 2.0], [3.0, 4.0]]),
    ("<i8", "q", (4,), [0, -1, 2**62, -(2**63)]),
    ("<i8", "q", (3, 2), [[1, 2], [3, 4], [5, 6]]),
    ("<f4", "f", (2, 1, 2), [[[1.0, 2.0]], [[3.0, 4.0]]]),
    (">f4", "f", (2,), [1.0, -2.5]),
]


def _flat(values: Any) -> list[Any]:
    return [x for v in values for x in _flat(v)] if isinstance(values, list) else [values]


def _pack(dtype: str, code: str, values: Any) -> bytes:
    flat = _flat(values)
    return struct.pack(dtype[0] + code * len(flat), *flat)


@pytest.mark.parametrize(("dtype", "code", "shape", "values"), ARRAYS, ids=[f"{a[0]}-{a[2]}" for a in ARRAYS])
def test_ndarray_round_trips_and_lists_its_values(dtype: str, code: str, shape: tuple[int, ...], values: Any) -> None:
    arr = NdArray(_pack(dtype, code, values), shape, dtype, cls_name="numpy")
    assert arr.to_list() == values

    req = DataRequest(request_id="arr", docs=[Document(id="d", embedding=arr, tensor=arr)])
    back = proto_codec.decode(proto_codec.encode(req))
    assert back.docs is not None
    doc = back.docs[0]
    for got in (doc.embedding, doc.tensor):
        assert got is not None
        assert (got.buffer, got.shape, got.dtype, got.cls_name) == (arr.buffer, shape, dtype, "numpy")
        assert got.to_list() == values


def test_ndarray_on_the_wire_matches_the_spec_example() -> None:
    # JINA-WIRE.md §5.6: an embedding [1.0, 2.0] arrives as this (MessageToDict of the NdArrayProto).
    arr = NdArray.from_list([1.0, 2.0])
    arr.cls_name = "numpy"
    raw = proto_codec.encode(DataRequest(request_id="r", docs=[Document(id="d1", embedding=arr)]))
    pb = jina_pb2.DataRequestProto.FromString(raw)
    assert json_format.MessageToDict(pb.data.docs.docs[0].embedding, preserving_proto_field_name=True) == {
        "dense": {"buffer": "AAAAAAAA8D8AAAAAAAAAQA==", "shape": [2], "dtype": "<f8"},
        "cls_name": "numpy",
    }
    assert base64.b64decode("AAAAAAAA8D8AAAAAAAAAQA==") == arr.buffer


def test_ndarray_from_list_picks_numpys_dtypes() -> None:
    assert NdArray.from_list([1, 2, 3]).dtype == "<i8"
    assert NdArray.from_list([1.0, 2]).dtype == "<f8"
    assert NdArray.from_list([True, False]).dtype == "|b1"
    two_d = NdArray.from_list([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert two_d.shape == (2, 3)
    assert two_d.buffer == struct.pack("<6d", 1, 2, 3, 4, 5, 6)
    assert two_d.to_list() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_sparse_array_is_refused_with_a_typed_error() -> None:
    pb = jina_pb2.DataRequestProto()
    pb.header.request_id = "r"
    doc = pb.data.docs.docs.add()
    doc.embedding.sparse.shape.extend([4])
    with pytest.raises(BadRequest):
        proto_codec.decode(pb.SerializeToString())
