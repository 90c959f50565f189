"""The json subprotocol, checked against what a real Jina 3.34 gateway accepted and sent.

Requests: every TEXT frame sent in `captures/a_legacy_ws/` that the gateway accepted must decode to
the endpoint, parameters and documents the gateway then answered with; the frames that killed the
gateway's connection must raise our typed errors with close code 1007 instead (JINA-WIRE.md §3.1, §3.2).

Responses: what `encode_response` writes must have the gateway's keys, key order, value types and
route order (§3.3), and reading a captured response back and writing it again must give the captured
text byte for byte.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from relay.wire import json_codec
from relay.wire.documents import Document
from relay.wire.errors import BadRequest, MalformedPayload, WireError
from relay.wire.messages import END_OF_STREAM, DataRequest, EndOfStream, ExceptionInfo, Route, Status


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CAPTURES = _shared_dir() / "protocol" / "captures"
WS = CAPTURES / "a_legacy_ws"

TS_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")

# Frames the gateway did not accept, and what we raise for them.
REJECTED = {
    "{not json": MalformedPayload,  # vi_malformed_json, vi_malformed_after_good: Jina drops the TCP connection
    '{"data": "notalist", "execEndpoint": "/index"}': BadRequest,  # vi_json_bad_data_type: pydantic error, 1006
    "[1,2,3]": BadRequest,  # vi_json_array: Jina ignores it silently; we are stricter on purpose
}


def _experiments() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(WS.glob("*.json")) if p.name != "_summary.json"]


def _experiment(name: str) -> dict[str, Any]:
    return json.loads((WS / f"{name}.json").read_text())


def _sent_texts(exp: dict[str, Any]) -> list[str]:
    return [e["text"] for e in exp["events"] if e.get("dir") == "send" and e.get("type") == "text"]


def _recv_texts(exp: dict[str, Any]) -> list[str]:
    return [e["text"] for e in exp["events"] if e.get("dir") == "recv" and e.get("type") == "text"]


def _response_text(name: str, index: int = 0) -> str:
    return _recv_texts(_experiment(name))[index]


def _is_eos_text(text: str) -> bool:
    return text.strip() in ("{}",)


ACCEPTED = [
    (exp["name"], i, text)
    for exp in _experiments()
    for i, text in enumerate(_sent_texts(exp))
    if not _is_eos_text(text) and text not in REJECTED
]
SENT_EOS = [(exp["name"], text) for exp in _experiments() for text in _sent_texts(exp) if _is_eos_text(text)]


def test_capture_inventory() -> None:
    sent = [t for exp in _experiments() for t in _sent_texts(exp)]
    assert len(sent) == 56
    assert len(SENT_EOS) == 19
    assert sorted({t for t in sent if t in REJECTED}) == sorted(REJECTED)
    assert len(ACCEPTED) == 33


# ---- requests ----------------------------------------------------------------------------------


def _floats(value: Any) -> Any:
    """`value` as it comes back from Jina: every JSON number a float (google.protobuf.Struct)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    return [_floats(v) for v in value]


@pytest.mark.parametrize(("experiment", "index", "text"), ACCEPTED, ids=[f"{e}#{i}" for e, i, _ in ACCEPTED])
def test_accepted_request_decodes(experiment: str, index: int, text: str) -> None:
    raw = json.loads(text)
    req = json_codec.decode_request(text)
    assert isinstance(req, DataRequest)
    assert req.exec_endpoint == raw.get("execEndpoint", raw.get("exec_endpoint", "/"))
    assert req.target_executor == raw.get("targetExecutor")
    assert req.parameters == (None if raw.get("parameters") is None else _floats(raw["parameters"]))
    data = raw.get("data")
    if isinstance(data, dict):
        data = data["docs"]
    if data is None:
        assert req.docs is None
    else:
        assert req.docs is not None
        assert [(d.id, d.text) for d in req.docs] == [(d.get("id"), d.get("text")) for d in data]
    # A JSON client cannot choose the request id: `header.requestId` and `requestId` are ignored.
    assert req.request_id == ""
    # Bytes decode the same as text.
    assert json_codec.decode_request(text.encode()) == req


def _answered(exp: dict[str, Any]) -> list[tuple[str, str]]:
    """(request, response) pairs: one replica answers in order; nothing after `{}` or a fatal frame."""
    if exp["url"].endswith("/dry_run"):
        return []  # the `{}` there is a StatusProto, not a response to a request
    requests: list[str] = []
    for text in _sent_texts(exp):
        if _is_eos_text(text) or (text in REJECTED and text != "[1,2,3]"):
            break  # end of stream, or a frame that dropped the connection
        if text not in REJECTED:
            requests.append(text)
    responses = _recv_texts(exp)
    return list(zip(requests[: len(responses)], responses, strict=True))


PAIRS = [(exp["name"], i, q, r) for exp in _experiments() for i, (q, r) in enumerate(_answered(exp))]


def test_pairs_cover_every_response() -> None:
    assert len(PAIRS) == sum(len(_recv_texts(e)) for e in _experiments() if e["name"] != "iv_dry_run_json")
    assert len(PAIRS) == 29


@pytest.mark.parametrize(("experiment", "index", "sent", "answer"), PAIRS, ids=[f"{p[0]}#{p[1]}" for p in PAIRS])
def test_decoded_request_is_what_the_gateway_answered(experiment: str, index: int, sent: str, answer: str) -> None:
    req = json_codec.decode_request(sent)
    assert isinstance(req, DataRequest)
    resp = json.loads(answer)
    assert req.exec_endpoint == resp["header"]["exec_endpoint"]
    # parameters come back as the gateway echoes them: numbers as floats (`{"x":1}` -> `{"x":1.0}`).
    params = req.parameters or {}
    assert params == resp["parameters"]
    assert [type(v) for v in params.values()] == [type(v) for v in resp["parameters"].values()]
    docs = req.docs or []
    assert len(docs) == len(resp["data"])
    for ours, theirs in zip(docs, resp["data"], strict=True):
        if ours.id is not None:
            assert ours.id == theirs["id"]  # a client's doc id is kept (viii_json_client_ids)
        else:
            assert HEX32.match(theirs["id"])
        changed = (ours.text or "").upper() if req.exec_endpoint in ("/index", "/search") else ours.text
        assert changed == theirs["text"]


def test_forms_of_data_and_keys() -> None:
    docs = [Document(text="wrapped")]
    forms = [
        '{"data": [{"text": "wrapped"}], "execEndpoint": "/index"}',
        '{"data": {"docs": [{"text": "wrapped"}]}, "execEndpoint": "/index"}',
        '{"data": [{"text": "wrapped"}], "exec_endpoint": "/index"}',
        '{"exec_endpoint": "/index", "data": {"docs": [{"text": "wrapped"}]}, "unknown": [1, 2]}',
    ]
    for text in forms:
        req = json_codec.decode_request(text)
        assert isinstance(req, DataRequest)
        assert (req.exec_endpoint, req.docs) == ("/index", docs), text

    req = json_codec.decode_request('{"data": null, "target_executor": "up.*", "parameters": {"a": {"b": [1, true]}}}')
    assert isinstance(req, DataRequest)
    assert (req.exec_endpoint, req.target_executor, req.docs) == ("/", "up.*", None)
    assert req.parameters == {"a": {"b": [1.0, True]}}
    assert type(req.parameters["a"]["b"][0]) is float and req.parameters["a"]["b"][1] is True

    req = json_codec.decode_request('{"data": {"docs": null}, "execEndpoint": "/x"}')
    assert isinstance(req, DataRequest) and req.docs is None


def test_request_without_data_is_accepted_as_no_docs() -> None:
    # vi_json_missing_data_key: a real gateway dies on this (KeyError 'data'); we read it as data: null.
    req = json_codec.decode_request('{"execEndpoint": "/index"}')
    assert isinstance(req, DataRequest)
    assert (req.exec_endpoint, req.docs, req.parameters) == ("/index", None, None)


def test_data_null_with_int_parameters() -> None:
    # i_json_data_null: the gateway answered `"parameters":{"x":1.0}` and `"data":[]`.
    req = json_codec.decode_request('{"data": null, "execEndpoint": "/index", "parameters": {"x": 1}}')
    assert isinstance(req, DataRequest)
    assert req.docs is None
    assert req.parameters == {"x": 1.0} and type(req.parameters["x"]) is float
    out = orjson.loads(json_codec.encode_response(req))
    expected = json.loads(_response_text("i_json_data_null"))
    assert out["parameters"] == expected["parameters"] == {"x": 1.0}
    assert b'"parameters":{"x":1.0}' in json_codec.encode_response(req)
    assert out["data"] == expected["data"] == []


@pytest.mark.parametrize("text", ["{}", "{ }", " {}\n", "\t{\r\n}\t", b"{}", b" { } "])
def test_empty_object_is_end_of_stream(text: str | bytes) -> None:
    assert json_codec.decode_request(text) is END_OF_STREAM
    assert isinstance(END_OF_STREAM, EndOfStream)


def test_captured_end_of_stream_frames() -> None:
    for _, text in SENT_EOS:
        assert json_codec.decode_request(text) is END_OF_STREAM
    assert json_codec.END_OF_STREAM_FRAME == b"{}"
    assert json_codec.decode_request('{"data": null}') is not END_OF_STREAM


@pytest.mark.parametrize(("text", "error"), sorted(REJECTED.items()))
def test_rejected_captured_frames_raise_typed_errors(text: str, error: type[WireError]) -> None:
    with pytest.raises(WireError) as info:
        json_codec.decode_request(text)
    assert type(info.value) is error
    assert info.value.close_code == 1007
    assert 0 < len(info.value.reason.encode()) <= 123


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("", MalformedPayload),
        ('{"data": [}', MalformedPayload),
        ("{'data': []}", MalformedPayload),
        (b'{"data": "\xff\xfe"}', MalformedPayload),  # not UTF-8
        ('"x"', BadRequest),
        ("42", BadRequest),
        ("null", BadRequest),
        ("[]", BadRequest),
        ('{"data": 5}', BadRequest),
        ('{"data": {"nodocs": []}}', BadRequest),
        ('{"data": ["hello"]}', BadRequest),  # items must be objects, not bare strings
        ('{"data": [{"text": ["a"]}]}', BadRequest),
        ('{"data": [{"granularity": -1}]}', BadRequest),
        ('{"data": null, "execEndpoint": 5}', BadRequest),
        ('{"data": null, "targetExecutor": ["upper"]}', BadRequest),
        ('{"data": null, "parameters": [1]}', BadRequest),
    ],
)
def test_bad_requests(payload: str | bytes, error: type[WireError]) -> None:
    with pytest.raises(WireError) as info:
        json_codec.decode_request(payload)
    assert type(info.value) is error
    assert info.value.close_code == 1007


def test_long_error_reasons_fit_a_close_frame() -> None:
    with pytest.raises(MalformedPayload) as info:
        json_codec.decode_request("{" + "é" * 500)
    assert len(info.value.reason.encode("utf-8")) <= 123


# ---- responses ---------------------------------------------------------------------------------


def _shape(value: Any) -> Any:
    """Keys in order and value types; a list by the distinct shapes of its items, in order."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            s = _shape(item)
            if s not in shapes:
                shapes.append(s)
        return ["list", shapes]
    return type(value).__name__


def _timestamps(obj: dict[str, Any]) -> list[str]:
    return [r[k] for r in obj["routes"] for k in ("start_time", "end_time") if k in r]


# Times with microsecond resolution (as a gateway's clock), none ending in zeros.
T = 1_800_000_000_000_000_000
US = 1000


def _like_index(target: bool = False) -> DataRequest:
    return DataRequest(
        request_id="0123456789abcdef0123456789abcdef",
        exec_endpoint="/index",
        target_executor="",
        parameters={},
        routes=[
            Route("gateway", T + 134_712 * US, T + 207_592 * US),
            Route("upper", T + 135_076 * US, T + 184_157 * US),
            Route("sleeper", T + 184_212 * US, None if target else T + 207_417 * US),
        ],
        # With targetExecutor=upper the sleeper does not run, so it does not tag the doc.
        docs=[
            Document(
                id="3109a012faa488a1243c2c666406e976",
                text="HELLO",
                tags={"seen_by": "upper"} if target else {"slept_ms": 2.0, "seen_by": "upper"},
            )
        ],
    )


def _assert_like(ours: bytes, captured: str) -> None:
    got = orjson.loads(ours)
    want = json.loads(captured)
    assert _shape(got) == _shape(want)
    assert [r["executor"] for r in got["routes"]] == [r["executor"] for r in want["routes"]]
    assert [list(r) for r in got["routes"]] == [list(r) for r in want["routes"]]
    assert len(got["data"]) == len(want["data"])
    for ts in _timestamps(got):
        assert TS_MICROS.match(ts), ts
    # Compact, as the gateway's send_json writes it.
    assert ours == json.dumps(got, separators=(",", ":"), ensure_ascii=False).encode()


def test_response_like_i_json_index() -> None:
    resp = _like_index()
    out = json_codec.encode_response(resp)
    _assert_like(out, _response_text("i_json_index"))
    got = orjson.loads(out)
    assert "status" not in got["header"]
    assert got["routes"][0] == {
        "executor": "gateway",
        "start_time": "2027-01-15T08:00:00.134712Z",
        "end_time": "2027-01-15T08:00:00.207592Z",
    }
    assert got["data"][0]["text"] == "HELLO" and got["data"][0]["tags"] == {"slept_ms": 2.0, "seen_by": "upper"}


def test_response_like_i_json_target_executor() -> None:
    out = json_codec.encode_response(_like_index(target=True))
    captured = _response_text("i_json_target_executor")
    _assert_like(out, captured)
    sleeper = orjson.loads(out)["routes"][2]
    assert list(sleeper) == ["executor", "start_time"]  # no end_time at all, not null


STACKS = ["Traceback (most recent call last):\n", '  File "x.py", line 1, in f\n', "ValueError: no\n"]


def _like_executor_error() -> DataRequest:
    status = Status(
        code=1,
        description="ValueError('deliberate failure from UpperExec on /fail')",
        exception=ExceptionInfo("ValueError", ["deliberate failure from UpperExec on /fail"], STACKS, "UpperExec"),
    )
    return DataRequest(
        request_id="08ef649acf6841d5a6fc70defc334cdc",
        exec_endpoint="/fail",
        target_executor="",
        parameters={},
        routes=[
            Route("gateway", T + 640_892 * US, T + 652_083 * US),
            Route("upper", T + 641_006 * US, T + 651_937 * US, status),
        ],
        status=status,
        docs=[Document(id="57b067fc01ed1e42b9c6709af76d1a06", text="will-fail")],
    )


def test_response_like_vii_executor_error_json() -> None:
    out = json_codec.encode_response(_like_executor_error())
    _assert_like(out, _response_text("vii_executor_error_json"))
    got = orjson.loads(out)
    assert list(got["header"]) == ["request_id", "status", "exec_endpoint", "target_executor"]
    assert got["header"]["status"]["code"] == 1
    assert list(got["header"]["status"]) == ["code", "description", "exception"]
    assert list(got["header"]["status"]["exception"]) == ["name", "args", "stacks", "executor"]
    assert got["routes"][1]["status"] == got["header"]["status"]
    assert got["data"][0]["tags"] is None


def test_response_without_docs_has_an_empty_data_list() -> None:
    got = orjson.loads(json_codec.encode_response(DataRequest(request_id="r", exec_endpoint="/")))
    assert got == {"header": {"request_id": "r", "exec_endpoint": "/"}, "parameters": {}, "routes": [], "data": []}


def test_success_status_is_left_out_like_proto3_defaults() -> None:
    resp = _like_index()
    resp.status = Status()
    assert "status" not in orjson.loads(json_codec.encode_response(resp))["header"]


CAPTURED_RESPONSES = [(exp, i, text) for exp, i, _, text in PAIRS]


@pytest.mark.parametrize(
    ("experiment", "index", "text"), CAPTURED_RESPONSES, ids=[f"{e}#{i}" for e, i, _ in CAPTURED_RESPONSES]
)
def test_captured_response_is_rewritten_byte_for_byte(experiment: str, index: int, text: str) -> None:
    resp = json_codec.decode_response(text)
    assert json_codec.encode_response(resp) == text.encode()


# ---- reading responses (client side) -----------------------------------------------------------


def _ns(text: str) -> int:
    ts = Timestamp()
    ts.FromJsonString(text)
    return ts.ToNanoseconds()


def test_decode_response_i_json_index() -> None:
    text = _response_text("i_json_index")
    raw = json.loads(text)
    resp = json_codec.decode_response(text)
    assert resp.request_id == raw["header"]["request_id"] and HEX32.match(resp.request_id)
    assert (resp.exec_endpoint, resp.target_executor, resp.parameters, resp.status) == ("/index", "", {}, None)
    assert [(r.executor, r.start_ns, r.end_ns, r.status) for r in resp.routes] == [
        (r["executor"], _ns(r["start_time"]), _ns(r["end_time"]), None) for r in raw["routes"]
    ]
    assert resp.routes[0].start_ns == 1_795_728_115_613_803_000
    assert resp.docs is not None and len(resp.docs) == 1
    assert resp.docs[0].text == "HELLO"
    assert resp.docs[0].tags == {"slept_ms": 2.0, "seen_by": "upper"}
    assert resp.docs[0].embedding is None and resp.docs[0].chunks is None


def test_decode_response_route_without_end_time() -> None:
    resp = json_codec.decode_response(_response_text("i_json_target_executor"))
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]
    assert resp.routes[2].start_ns == _ns("2026-11-26T21:21:55.684950Z")
    assert resp.routes[2].end_ns is None
    assert resp.docs is not None and resp.docs[0].text == "TARGETED"


def test_decode_response_executor_error() -> None:
    failed = json_codec.decode_response(_response_text("vii_executor_error_json", 0))
    assert failed.is_error
    assert failed.status is not None and failed.status.code == 1
    exc = failed.status.exception
    assert exc is not None
    assert (exc.name, exc.args, exc.executor) == (
        "ValueError",
        ["deliberate failure from UpperExec on /fail"],
        "UpperExec",
    )
    assert exc.stacks[0] == "Traceback (most recent call last):\n"
    assert len(exc.stacks) == 10 and exc.stacks[-1] == "ValueError: deliberate failure from UpperExec on /fail\n"
    assert [r.executor for r in failed.routes] == ["gateway", "upper"]
    assert failed.routes[1].status == failed.status
    assert failed.docs is not None and failed.docs[0].text == "will-fail" and failed.docs[0].tags is None

    after = json_codec.decode_response(_response_text("vii_executor_error_json", 1))
    assert not after.is_error and after.status is None
    assert after.docs is not None and after.docs[0].text == "AFTER-FAIL"


def test_decode_response_reads_the_http_gateways_camel_case() -> None:
    # a_legacy_http/post_index.txt: `curl -i` output; the body is the last line.
    body = (CAPTURES / "a_legacy_http" / "post_index.txt").read_text().strip().splitlines()[-1]
    resp = json_codec.decode_response(body)
    assert HEX32.match(resp.request_id)
    assert (resp.exec_endpoint, resp.target_executor, resp.status) == ("/index", "", None)
    assert resp.parameters == {"k": 1.0}
    assert [r.executor for r in resp.routes] == ["gateway", "upper", "sleeper"]
    assert resp.routes[0].start_ns == _ns("2026-11-26T21:23:40.739553Z")
    assert all(r.status is None for r in resp.routes)
    assert resp.docs is not None and resp.docs[0].text == "HELLO INDEX"


def test_decode_response_rejects_what_is_not_a_response() -> None:
    with pytest.raises(MalformedPayload):
        json_codec.decode_response("{nope")
    for payload in ("[]", "{}", '{"header": "x"}'):
        with pytest.raises(BadRequest):
            json_codec.decode_response(payload)


# ---- writing requests (client side) ------------------------------------------------------------


def test_encode_request_always_carries_data() -> None:
    assert (
        json_codec.encode_request(DataRequest(exec_endpoint="/index", docs=[Document(text="hello")]))
        == b'{"data":[{"text":"hello"}],"execEndpoint":"/index"}'
    )
    assert json_codec.encode_request(DataRequest()) == b'{"data":null,"execEndpoint":"/"}'
    req = DataRequest(exec_endpoint="/search", target_executor="upper", parameters={"corr": "A1"}, docs=[])
    out = json_codec.encode_request(req)
    assert out == b'{"data":[],"execEndpoint":"/search","targetExecutor":"upper","parameters":{"corr":"A1"}}'
    back = json_codec.decode_request(out)
    assert isinstance(back, DataRequest)
    assert (back.exec_endpoint, back.target_executor, back.parameters, back.docs) == (
        "/search",
        "upper",
        {"corr": "A1"},
        [],
    )
