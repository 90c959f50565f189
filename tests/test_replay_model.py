"""loadtest.models.replay: a recording's due times (recorded gaps / speed, re-timed at a rate, looped, bounded),
split by connection across processes; the frames it sends (the recorded content with a fresh id, translated
between json and bytes when asked); one worker's plan. Pure: recordings are built in memory."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from loadtest.config import codec_mode
from loadtest.models.replay import ReplayError, ReplayPlan, ReplaySchedule, ReplaySpec, request_frame
from loadtest.payloads import CORRELATION_KEY
from relay.capture.format import RecordedRequest
from relay.capture.reader import RecordingAssembler
from relay.wire import json_codec, proto_codec, proto_v2_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest

OFFSETS = [0.0, 0.012, 0.059, 0.064, 0.154]


def _approx(values: list[float]) -> Any:
    return pytest.approx(values, abs=1e-9)


def test_recorded_gaps_divided_by_speed() -> None:
    once = ReplaySchedule(OFFSETS, [0] * 5)
    assert list(once.due_times()) == _approx(OFFSETS)
    twice = ReplaySchedule(OFFSETS, [0] * 5, speed=2)
    assert list(twice.due_times()) == _approx([o / 2 for o in OFFSETS])
    assert once.total_duration_s == pytest.approx(0.154)


def test_a_rate_retimes_keeping_the_order() -> None:
    retimed = ReplaySchedule(OFFSETS, [0, 1, 0, 1, 0], rate=100)
    assert list(retimed.due_times()) == _approx([0.0, 0.01, 0.02, 0.03, 0.04])
    assert retimed.target_rate_at(0.02) == 100


def test_loops_repeat_one_mean_gap_later_until_the_bound() -> None:
    period = 0.154 + 0.154 / 4
    looped = ReplaySchedule(OFFSETS, [0] * 5, loop=True, max_requests=12)
    due = list(looped.due_times())
    assert due == _approx(OFFSETS + [period + o for o in OFFSETS] + [2 * period, 2 * period + 0.012])
    by_time = ReplaySchedule(OFFSETS, [0] * 5, loop=True, duration_s=0.25)
    assert list(by_time.due_times()) == _approx(OFFSETS + [period + o for o in OFFSETS if period + o < 0.25])
    rated = ReplaySchedule(OFFSETS, [0] * 5, rate=10, loop=True, duration_s=1.0)
    assert len(list(rated.due_times())) == 10
    with pytest.raises(ReplayError, match="--duration or --requests"):
        ReplaySchedule(OFFSETS, [0] * 5, loop=True)


def test_without_loop_a_bound_only_cuts_the_recording_short() -> None:
    assert len(list(ReplaySchedule(OFFSETS, [0] * 5, max_requests=100).due_times())) == 5
    assert len(list(ReplaySchedule(OFFSETS, [0] * 5, max_requests=2).due_times())) == 2
    assert list(ReplaySchedule(OFFSETS, [0] * 5, duration_s=0.06).due_times()) == _approx(OFFSETS[:3])


def test_shards_split_by_connection_and_add_up_to_the_whole() -> None:
    owners = [0, 1, 2, 0, 1]
    schedule = ReplaySchedule(OFFSETS, owners, loop=True, max_requests=13)
    whole = list(schedule.due_times())
    shards = [list(schedule.shard(w, 2)) for w in range(2)]
    assert sorted(itertools.chain(*shards)) == _approx(sorted(whole))
    # Worker 0 has connections 0 and 2, worker 1 connection 1.
    first_pass = [OFFSETS[j] for j in range(5) if owners[j] % 2 == 0]
    assert shards[0][:3] == _approx(first_pass)
    with pytest.raises(ValueError):
        schedule.shard(2, 2)


# ---- frames ----------------------------------------------------------------------------------------


def _recorded(body: bytes | str, endpoint: str = "/index") -> RecordedRequest:
    return RecordedRequest(0, 0, 0, 0, "rid", endpoint, body)


def _stamped(template: Any, rid: str = "X" * 24) -> bytes:
    return template.frame(rid)


def test_a_json_request_keeps_its_json_and_gains_the_correlation_id() -> None:
    body = orjson.dumps({"data": [{"id": "d1", "text": "x", "tags": {"z": 1.5, "a": [1, 2]}}], "execEndpoint": "/index",
                         "parameters": {"top_k": 3}}).decode()
    template, with_ids = request_frame(_recorded(body), "json", "json")
    sent = orjson.loads(_stamped(template, "r" * 24))
    assert sent["parameters"] == {"top_k": 3, CORRELATION_KEY: "r" * 24}
    assert sent["data"] == orjson.loads(body)["data"] and sent["execEndpoint"] == "/index"
    assert with_ids and template.docs == 1


def test_an_http_door_body_gets_its_path_as_endpoint() -> None:
    template, with_ids = request_frame(_recorded(b'{"data": {"docs": [{"text": "t"}]}}', "/search"), "json", "json")
    sent = orjson.loads(_stamped(template))
    assert sent["execEndpoint"] == "/search" and sent["data"] == {"docs": [{"text": "t"}]}
    assert not with_ids  # a gateway makes up the missing ids


def test_a_bytes_request_is_sent_as_recorded_but_its_id() -> None:
    req = DataRequest(request_id="client-id", exec_endpoint="/index", docs=[Document(id="d", text="hé")],
                      parameters={"k": "v"})
    body = proto_codec.encode(req)
    template, _ = request_frame(_recorded(body), "bytes", "bytes")
    sent = proto_codec.decode(_stamped(template, "n" * 24))
    assert sent.request_id == "n" * 24
    req.request_id = "n" * 24
    assert sent == req


def test_bytes_translate_to_json_and_back() -> None:
    req = DataRequest(request_id="client-id", exec_endpoint="/index",
                      docs=[Document(id="d", text="t", tags={"k": 1.0})])
    to_json, _ = request_frame(_recorded(proto_codec.encode(req)), "bytes", "json")
    as_json = json_codec.decode_request(_stamped(to_json))
    assert isinstance(as_json, DataRequest)
    assert as_json.docs == req.docs and as_json.exec_endpoint == "/index"
    assert as_json.parameters == {CORRELATION_KEY: "X" * 24}
    body = orjson.dumps({"data": [{"id": "d", "text": "t"}], "execEndpoint": "/index"})
    to_bytes, _ = request_frame(_recorded(body), "json", "bytes")
    as_bytes = proto_codec.decode(_stamped(to_bytes, "q" * 24))
    assert as_bytes.request_id == "q" * 24 and as_bytes.docs == [Document(id="d", text="t")]
    to_v2, _ = request_frame(_recorded(body), "json", "bytes", docarray="v2")
    v2 = proto_v2_codec.decode(_stamped(to_v2, "q" * 24))
    assert v2.request_id == "q" * 24 and v2.docs == [Document(id="d", text="t")]


def test_an_unreadable_request_is_a_replay_error() -> None:
    with pytest.raises(ReplayError):
        request_frame(_recorded("[1, 2]"), "json", "json")
    with pytest.raises(ReplayError):
        request_frame(_recorded(b"\xff\xff"), "bytes", "json")


# ---- one worker's plan -----------------------------------------------------------------------------


def _recording() -> Any:
    assembler = RecordingAssembler({})
    conns = [(0, "websocket", "json"), (1, "websocket", "bytes"), (2, "http", "json")]
    for conn, door, sub in conns:
        assembler.add([1, conn, 0, door, sub])
    t = 1_000_000_000
    for i, conn in enumerate([0, 1, 2, 0, 1, 0]):
        doc = {"id": f"d{i}", "text": f"t{i}"}
        if conn == 1:
            body: bytes | str = proto_codec.encode(DataRequest(request_id=f"b{i}", exec_endpoint="/b",
                                                               docs=[Document.from_json_dict(doc)]))
        else:
            body = orjson.dumps({"data": [doc], "execEndpoint": "/j"}).decode()
        assembler.add([2, conn, t + i * 10_000_000, f"r{i}", "/b" if conn == 1 else "/j", body])
    return assembler.finish()


def test_a_plan_gives_each_worker_its_connections_requests_in_order() -> None:
    recording = _recording()
    spec = ReplaySpec.of(recording, "mem")  # type: ignore[arg-type]
    frames_of = lambda sub: codec_mode("websocket", sub)  # noqa: E731
    whole = ReplayPlan.build(recording, spec, frames_of)
    assert whole.connections == 3 and whole.subprotocols == ["json", "bytes", "json"]
    assert whole.session_of == [0, 1, 2, 0, 1, 0]
    assert [r.request_id for r in whole.recorded] == [f"r{i}" for i in range(6)]
    halves = [ReplayPlan.build(recording, spec, frames_of, worker=w, n_workers=2) for w in range(2)]
    assert [h.connections for h in halves] == [2, 1]
    assert [r.request_id for r in halves[0].recorded] == ["r0", "r2", "r3", "r5"]
    assert halves[0].session_of == [0, 1, 0, 0] and halves[1].session_of == [0, 0]
    forced = ReplayPlan.build(recording, ReplaySpec.of(recording, "mem", subprotocol="json"), frames_of)  # type: ignore[arg-type]
    assert forced.subprotocols == ["json"] * 3
    assert orjson.loads(forced.templates[1].frame("X" * 24))["data"][0]["id"] == "d1"
    with pytest.raises(ReplayError, match="splits by connection"):
        ReplayPlan.build(recording, spec, frames_of, worker=0, n_workers=4)


def test_a_spec_says_what_rate_it_means() -> None:
    recording = _recording()
    spec = ReplaySpec.of(recording, "mem", speed=2)  # type: ignore[arg-type]
    assert spec.requests == 6 and spec.connections == 3
    assert spec.target_rps == pytest.approx(6 / spec.period_s * 2)
    assert ReplaySpec.of(recording, "mem", rate=50).target_rps == 50  # type: ignore[arg-type]
    with pytest.raises(ReplayError):
        ReplaySpec.of(recording, "mem", speed=0)  # type: ignore[arg-type]
