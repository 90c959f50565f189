"""relay.capture's writer and reader: what the relay's tap records comes back whole, in order, joined to its answers;
segments rotate and each reads alone; a torn last frame costs only itself; the index can be read while it grows;
sampling keeps whole connections; a writer that cannot keep up drops requests, never connections.

No relay here (tests/test_capture_relay.py records through a real one): the tap is driven as a door drives it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from relay.capture.format import INDEX_FILE, META_FILE, segment_name
from relay.capture.reader import read_index, read_recording
from relay.capture.redact import Redactor, parse_fields
from relay.capture.tap import CaptureTap, ConnectionTap, sampled
from relay.capture.writer import RecordingExists, RecordingWriter, SegmentWriter
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest, ExceptionInfo, Route, Status


def _writer(folder: Path, **options: object) -> RecordingWriter:
    flush = float(options.pop("flush_interval_s", 0.05))  # type: ignore[arg-type]
    max_buffered = int(options.pop("max_buffered", 1_000_000))  # type: ignore[arg-type]
    return RecordingWriter(SegmentWriter(folder, {"latency": "gateway"}, **options), flush, max_buffered)  # type: ignore[arg-type]


def _codec(subprotocol: str) -> Any:
    return proto_codec if subprotocol == "bytes" else json_codec


def _one_connection(folder: Path, subprotocol: str = "json", **options: object) -> tuple[RecordingWriter,
                                                                                   CaptureTap, ConnectionTap]:
    """A started recording with one WebSocket connection open on it."""
    writer = _writer(folder, **options)
    writer.start()
    tap = CaptureTap(writer)
    conn = tap.connection("websocket", subprotocol, _codec(subprotocol).encode_response)
    assert conn is not None
    return writer, tap, conn


def _json_body(i: int) -> str:
    return orjson.dumps({"data": [{"id": f"doc-{i}", "text": f"hello {i}"}], "execEndpoint": "/index"}).decode()


def _answer(rid: str, doc_id: str, error: str | None = None, codec: Any = json_codec) -> bytes:
    """The answer to request `rid` as a relay encodes it."""
    t = 1_700_000_000_000_000_000
    status = Status(1, "boom", ExceptionInfo(error)) if error else None
    answer = DataRequest(request_id=rid, docs=[Document(id=doc_id)], status=status, parameters={},
                         routes=[Route("gateway", t, t + 900_000), Route("upper", t + 10_000, t + 40_000)])
    return codec.encode_response(answer)


def test_what_the_tap_records_reads_back_in_order_with_answers(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "rec")
    writer.start()
    tap = CaptureTap(writer)
    text = tap.connection("websocket", "json", json_codec.encode_response)
    binary = tap.connection("grpc", "bytes", proto_codec.encode_response)
    assert text is not None and binary is not None
    frames = []
    for i in range(20):
        text.request(f"r{i}", "/index", _json_body(i))
        frame = proto_codec.encode(DataRequest(request_id=f"b{i}", exec_endpoint="/search", docs=[Document(id="x")]))
        frames.append(frame)
        binary.request(f"b{i}", "/search", frame)
        if i % 7 == 0:
            tap.flush()  # several frames
    for i in reversed(range(20)):  # answered out of order
        text.answer(_answer(f"r{i}", f"doc-{i}", "ValueError" if i == 3 else None))
    binary.answer(_answer("b5", "x", codec=proto_codec))
    text.closed()
    tap.close()

    rec = read_recording(tmp_path / "rec")
    assert rec.torn_frames == 0 and rec.orphan_answers == 0
    assert {c.conn: (c.door, c.subprotocol) for c in rec.connections.values()} == {0: ("websocket", "json"),
                                                                                  1: ("grpc", "bytes")}
    # The json connection closed; the gRPC one was still open when the recording ended.
    assert rec.connections[0].closed_mono_ns is not None and rec.connections[1].closed_mono_ns is None
    texts = [r for r in rec.requests if r.conn == 0]
    assert [r.body for r in texts] == [_json_body(i) for i in range(20)]
    assert [r.body for r in rec.requests if r.conn == 1] == frames
    assert [r.index for r in rec.requests] == list(range(40))
    monos = [r.mono_ns for r in rec.requests]
    assert monos == sorted(monos)
    assert all(abs(r.wall_ns - time.time_ns()) < 60e9 for r in rec.requests)  # wall clock derived, not monotonic
    assert all(r.answer is not None for r in texts)
    three = texts[3].answer
    assert three is not None and three.is_error and three.error == "ValueError"
    ok = texts[4].answer
    assert ok is not None and ok.error is None and ok.doc_ids == ["doc-4"] and ok.latency_ns == 900_000
    assert [(r.executor, r.end_ns - r.start_ns) for r in ok.routes] == [("gateway", 900_000), ("upper", 30_000)]
    answered = [r for r in rec.requests if r.conn == 1 and r.answer is not None]
    assert [r.request_id for r in answered] == ["b5"]
    assert answered[0].answer is not None and answered[0].answer.doc_ids == ["x"]
    meta = orjson.loads((tmp_path / "rec" / META_FILE).read_bytes())
    assert meta["requests"] == 40 and meta["answers"] == 21 and "ended_at" in meta


def test_segments_rotate_by_size_and_each_reads_alone(tmp_path: Path) -> None:
    _, tap, conn = _one_connection(tmp_path / "rec", max_segment_bytes=600)
    for i in range(60):
        conn.request(f"r{i}", "/index", _json_body(i) + " " * (i % 5))
        if i % 5 == 4:
            tap.flush()
    tap.close()
    segments = sorted((tmp_path / "rec").glob("segment-*"))
    assert len(segments) >= 3
    whole = read_recording(tmp_path / "rec")
    assert len(whole.requests) == 60
    pieces = [read_recording(s) for s in segments]
    # A later segment opens with the connection still open: it reads alone, door and subprotocol known.
    assert all(p.connections[0].door == "websocket" for p in pieces if p.requests)
    assert [r.body for p in pieces for r in p.requests] == [r.body for r in whole.requests]


def test_segments_rotate_by_age(tmp_path: Path) -> None:
    _, tap, conn = _one_connection(tmp_path / "rec", max_segment_age_s=0.05)
    for i in range(3):
        conn.request(f"r{i}", "/index", _json_body(i))
        tap.flush()
        time.sleep(0.06)
    tap.close()
    assert (tmp_path / "rec" / segment_name(3)).exists()
    assert len(read_recording(tmp_path / "rec").requests) == 3


def test_a_torn_last_frame_costs_only_itself(tmp_path: Path) -> None:
    _, tap, conn = _one_connection(tmp_path / "rec")
    for i in range(10):
        conn.request(f"r{i}", "/index", _json_body(i))
        if i in (3, 6):
            tap.flush()
    tap.close()
    segment = tmp_path / "rec" / segment_name(1)
    index = read_index(tmp_path / "rec")
    last = index[-1]
    assert last["requests"] == 3
    # A relay killed in the middle of writing its last frame.
    with segment.open("r+b") as fh:
        fh.truncate(last["offset"] + last["length"] // 2)
    rec = read_recording(tmp_path / "rec")
    assert rec.torn_frames == 1
    assert [r.request_id for r in rec.requests] == [f"r{i}" for i in range(7)]


def test_the_index_is_readable_while_it_grows(tmp_path: Path) -> None:
    _, tap, conn = _one_connection(tmp_path / "rec", "bytes")
    seen = []
    for i in range(4):
        conn.request(f"r{i}", "/", b"\x0a\x00")
        tap.flush()
        seen.append(sum(e["requests"] for e in read_index(tmp_path / "rec")))
    # A line the writer has not finished is not an entry.
    with (tmp_path / "rec" / INDEX_FILE).open("ab") as fh:
        fh.write(b'{"segment": "segment-0000')
    assert [e["requests"] for e in read_index(tmp_path / "rec")] == [1, 1, 1, 1]
    assert seen == [1, 2, 3, 4]
    tap.close()


def test_a_folder_that_holds_a_recording_is_refused(tmp_path: Path) -> None:
    first = _writer(tmp_path / "rec")
    first.start()
    first.close()
    with pytest.raises(RecordingExists):
        _writer(tmp_path / "rec").start()


def test_sampling_picks_whole_connections_evenly() -> None:
    picked = [k for k in range(100) if sampled(k, 0.1)]
    assert picked == list(range(9, 100, 10))
    assert all(sampled(k, 1.0) for k in range(10))
    assert sum(sampled(k, 0.25) for k in range(1000)) == 250


def test_sampled_out_connections_record_nothing(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "rec")
    writer.start()
    tap = CaptureTap(writer, sample=0.5)
    conns = [tap.connection("websocket", "json", json_codec.encode_response) for _ in range(4)]
    assert [c is not None for c in conns] == [False, True, False, True]
    for n, conn in enumerate(conns):
        if conn is not None:
            for i in range(3):
                conn.request(f"c{n}r{i}", "/", _json_body(i))
    tap.close()
    rec = read_recording(tmp_path / "rec")
    assert sorted(rec.connections) == [1, 3]
    assert [c.requests for c in rec.connections.values()] == [3, 3]


def test_a_writer_that_cannot_keep_up_drops_requests_but_keeps_connections(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "rec", max_buffered=5, flush_interval_s=60)
    writer.start()
    tap = CaptureTap(writer)
    first = tap.connection("websocket", "json", json_codec.encode_response)
    assert first is not None
    for i in range(4):
        first.request(f"r{i}", "/", _json_body(i))
    tap.hand_over()  # 5 records waiting: the limit
    for i in range(4, 10):
        first.request(f"r{i}", "/", _json_body(i))
    tap.hand_over()  # dropped: the thread has not written the first block
    second = tap.connection("websocket", "json", json_codec.encode_response)  # past the limit, still recorded
    assert second is not None
    second.request("s0", "/", _json_body(0))
    tap.close()
    rec = read_recording(tmp_path / "rec")
    assert sorted(rec.connections) == [0, 1]
    assert [r.request_id for r in rec.requests] == ["r0", "r1", "r2", "r3", "s0"]
    assert writer.dropped == 6
    assert orjson.loads((tmp_path / "rec" / META_FILE).read_bytes())["dropped"] == 6


def test_redaction_happens_in_the_writer_for_requests_and_answers_of_both_codecs(tmp_path: Path) -> None:
    writer = RecordingWriter(SegmentWriter(tmp_path / "rec", {}, redactor=Redactor(parse_fields("text"))))
    writer.start()
    tap = CaptureTap(writer)
    text = tap.connection("websocket", "json", json_codec.encode_response)
    binary = tap.connection("websocket", "bytes", proto_codec.encode_response)
    assert text is not None and binary is not None
    text.request("r0", "/index", _json_body(0))
    text.answer(_answer("r0", "doc-0"))
    tap.hand_over()  # the connection records in one block, what follows in the next
    secret = DataRequest(request_id="b0", exec_endpoint="/", docs=[Document(id="x", text="a secret")])
    binary.request("b0", "/", proto_codec.encode(secret))
    secret.parameters = {}
    binary.answer(proto_codec.encode_response(secret))
    tap.close()
    rec = read_recording(tmp_path / "rec")
    json_req, bytes_req = rec.requests
    assert orjson.loads(json_req.body)["data"][0]["text"] != "hello 0"
    assert len(orjson.loads(json_req.body)["data"][0]["text"]) == len("hello 0")
    sent = proto_codec.decode(bytes_req.body)
    assert sent.docs is not None and sent.docs[0].text != "a secret" and sent.docs[0].id == "x"
    assert bytes_req.answer is not None and bytes_req.answer.doc_ids == ["x"]
