"""relay.wire.answers: a client's cheap reading of an answer agrees with the full decoders.

Every answer a real Jina 3.34 Flow sent in the captures (shared/protocol/captures: bytes mode with
docarray < 0.30 and >= 0.30, json mode) is read both ways: `read_*_answer` must give the same request
id, doc count, routes (executor and stamps), the routes' spans, status and parameters as
`decode_response_envelope`, and name the exception of an error answer. The spans' shortcut for json stamps (two
of one second subtracted as their fractions) agrees with reading both stamps, for any pair of stamps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from relay.wire import json_codec, proto_codec, proto_v2_codec
from relay.wire.answers import answer_reader, read_json_answer, read_proto_answer, read_proto_v2_answer
from relay.wire.errors import MalformedPayload, WireError
from relay.wire.messages import (
    DataRequest,
    ExceptionInfo,
    Route,
    Status,
    format_isoformat,
    format_timestamp,
    parse_timestamp,
    route_spans,
    timestamp_span_ns,
)
from relay.wire.proto import jina_v2_pb2


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CAPTURES = _shared_dir() / "protocol" / "captures"
V1 = CAPTURES / "a_legacy_ws"
V2 = CAPTURES / "b_docarray_v2_ws"


def _stamps(routes: list[Route]) -> list[tuple[str, int | None, int | None]]:
    return [(r.executor, r.start_ns, r.end_ns) for r in routes]


def _assert_same(answer: Any, full: DataRequest, docs: int) -> None:
    assert answer.request_id == full.request_id
    assert answer.docs == docs
    assert _stamps(answer.routes) == _stamps(full.routes)
    assert answer.route_spans() == route_spans(full.routes)
    assert answer.status == full.status
    assert answer.parameters == full.parameters
    expected_error = None
    if full.status is not None and full.status.is_error:
        expected_error = (full.status.exception.name if full.status.exception else "") or "error"
    assert answer.error == expected_error


BYTES_ANSWERS = [
    pytest.param(path, reader, codec, id=f"{path.parent.name}/{path.name}")
    for folder, reader, codec in ((V1, read_proto_answer, proto_codec), (V2, read_proto_v2_answer, proto_v2_codec))
    for path in sorted(folder.glob("*.recv.bin"))
    if path.stat().st_size > 0  # /dry_run answers with an empty StatusProto, not a DataRequest
]


@pytest.mark.parametrize(("path", "reader", "codec"), BYTES_ANSWERS)
def test_a_captured_bytes_answer_reads_as_the_full_decoder_reads_it(path: Path, reader: Any, codec: Any) -> None:
    payload = path.read_bytes()
    full, docs = codec.decode_response_envelope(payload)
    answer = reader(payload)
    _assert_same(answer, full, docs)
    assert answer.docs >= 1, "the captured answers all carry documents"
    assert answer.routes[0].executor == "gateway"
    assert all(r.start_ns for r in answer.routes), "every captured route has a start stamp"


def _json_answers() -> list[Any]:
    params = []
    for path in sorted(V1.glob("*.json")):
        if path.name == "_summary.json":
            continue
        events = json.loads(path.read_text())["events"]
        texts = [e["text"] for e in events if e.get("dir") == "recv" and e.get("type") == "text"]
        for k, text in enumerate(t for t in texts if t.strip() != "{}"):
            params.append(pytest.param(text, id=f"{path.stem}-{k}"))
    return params


@pytest.mark.parametrize("text", _json_answers())
def test_a_captured_json_answer_reads_as_the_full_decoder_reads_it(text: str) -> None:
    full, docs = json_codec.decode_response_envelope(text)
    _assert_same(read_json_answer(text), full, docs)
    _assert_same(read_json_answer(text.encode()), full, docs)  # the session hands bytes


def test_the_executor_error_answer_names_its_exception_in_both_modes() -> None:
    events = json.loads((V2 / "vii_executor_error_bytes.json").read_text())["events"]
    (decoded,) = [e["decoded"] for e in events if e.get("dir") == "recv" and e.get("decoded")]
    payload = json_format.ParseDict(decoded, jina_v2_pb2.DataRequestProto()).SerializeToString()
    answer = read_proto_v2_answer(payload)
    assert (answer.request_id, answer.error, answer.docs) == ("rid-fail", "ValueError", 1)
    assert answer.status is not None and answer.status.exception is not None
    assert answer.status.exception.executor == "UpperExec"
    assert [r.executor for r in answer.routes] == ["gateway", "upper"]

    events = json.loads((V1 / "vii_executor_error_json.json").read_text())["events"]
    text = next(e["text"] for e in events if e.get("dir") == "recv" and e.get("type") == "text")
    assert read_json_answer(text).error == "ValueError"


def test_an_error_status_without_an_exception_is_named_error() -> None:
    failed = DataRequest(request_id="r1", status=Status(code=1, description="bad"))
    assert read_proto_answer(proto_codec.encode(failed)).error == "error"
    named = DataRequest(request_id="r2", status=Status(code=1, exception=ExceptionInfo(name="KeyError")))
    assert read_proto_answer(proto_codec.encode(named)).error == "KeyError"
    fine = DataRequest(request_id="r3", status=Status(code=0))
    assert read_proto_answer(proto_codec.encode(fine)).error is None


def test_unreadable_answers_raise_wire_errors() -> None:
    with pytest.raises(MalformedPayload):
        read_proto_answer((V1 / "iv_bytes_garbage.001.send.bin").read_bytes())
    with pytest.raises(MalformedPayload):
        read_json_answer(b"{not json")
    for not_an_answer in (b"[1, 2]", b'{"data": []}', b'{"header": "x"}'):
        with pytest.raises(WireError):
            read_json_answer(not_an_answer)


def test_answer_reader_picks_by_mode_and_docarray() -> None:
    assert answer_reader("bytes") is read_proto_answer
    assert answer_reader("bytes", "v2") is read_proto_v2_answer
    assert answer_reader("json") is read_json_answer
    with pytest.raises(ValueError, match="docarray"):
        answer_reader("bytes", "v3")


_EPOCH_NS = 1_764_000_000 * 1_000_000_000


@given(
    start_ns=st.integers(0, 3 * 1_000_000_000),
    span_ns=st.integers(-2 * 1_000_000_000, 2 * 1_000_000_000),
    digits=st.sampled_from([3, 6, 9]),
    layout=st.sampled_from(["Z", "+00:00", ""]),
)
def test_a_span_of_two_stamps_is_their_difference_as_read(start_ns: int, span_ns: int, digits: int, layout: str
                                                          ) -> None:
    def text(ns: int) -> str:
        # Stamps as gateways write them: a fraction of 3, 6 or 9 digits, `Z`, `+00:00` or no zone.
        whole = format_timestamp(ns - ns % 10 ** (9 - digits))[:19]
        return f"{whole}.{ns % 1_000_000_000 // 10 ** (9 - digits):0{digits}d}{layout}"

    start = text(_EPOCH_NS + start_ns)
    end = text(_EPOCH_NS + max(0, start_ns + span_ns))
    assert timestamp_span_ns(start, end) == parse_timestamp(end) - parse_timestamp(start)


def test_route_spans_of_a_json_answer_skip_entries_without_both_stamps() -> None:
    start = format_timestamp(_EPOCH_NS)
    end = format_isoformat(_EPOCH_NS + 2_500_000)
    answer = read_json_answer(json.dumps({"header": {"request_id": "r"}, "routes": [
        {"executor": "gateway", "start_time": start, "end_time": end},  # two layouts, one entry
        {"executor": "upper", "startTime": start},
        {"executor": "", "startTime": start, "endTime": end},
        "not an entry",
    ]}))
    assert answer.route_spans() == [("gateway", 2_500_000)]


@pytest.mark.parametrize(("start", "end"), [
    ("garbage-garbage-gar.1Z", "garbage-garbage-gar.9Z"),
    ("2026-13-26T00:00:00.100Z", "2026-13-26T00:00:00.200Z"),  # no 13th month
])
def test_a_span_of_texts_that_are_not_stamps_is_refused_as_parse_timestamp_refuses_them(start: str, end: str
                                                                                       ) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(end)
    with pytest.raises(ValueError):
        timestamp_span_ns(start, end)
