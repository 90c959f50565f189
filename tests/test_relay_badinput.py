"""Bad input never drops TCP silently: the relay answers what is in flight, then closes with a code and a reason.

A real Jina gateway drops the TCP connection on any of these (the client sees 1006 and loses every
request in flight, JINA-WIRE.md §6.3). The relay instead stops reading, answers the requests it already
admitted, and only then closes: 1007 for a malformed payload, 1003 for a frame of the wrong type, 1009
for a message over `max_message_size`. Each test first puts slow requests in flight, then sends the bad
frame, and checks that every slow request was answered before the close frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from relay_process import exchange, relay_in_process, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.wire import DataRequest, Document, json_codec, proto_codec

TIMEOUT_S = 20.0
SLOW_MS = 300
N_SLOW = 3
MAX_SIZE = 4096


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


def slow_json(i: int) -> dict[str, Any]:
    return {"data": [{"text": f"slow-{i}"}], "execEndpoint": "/index", "parameters": {"i": i, "sleep_ms": SLOW_MS}}


def slow_bytes(i: int) -> bytes:
    return proto_codec.encode_request(
        DataRequest(
            request_id=f"slow-{i}",
            exec_endpoint="/index",
            parameters={"sleep_ms": SLOW_MS},
            docs=[Document(text=f"slow-{i}")],
        )
    )


async def _slow_then(mode: str, bad: str | bytes, **config: Any) -> Any:
    config.setdefault("max_message_size", MAX_SIZE)
    async with relay_in_process("sleeper=sleep:0ms", **config) as server:
        if mode == "json":
            frames: list[Any] = [*(slow_json(i) for i in range(N_SLOW)), bad]
        else:
            frames = [*(slow_bytes(i) for i in range(N_SLOW)), bad]
        return await exchange(ws_url(server), frames, [mode])


def _assert_drained_then_closed(ex: Any, mode: str, code: int) -> None:
    assert len(ex.frames) == N_SLOW, f"the {N_SLOW} requests in flight are answered before the close"
    if mode == "json":
        assert sorted(int(r["parameters"]["i"]) for r in ex.json()) == list(range(N_SLOW))
    else:
        ids = sorted(proto_codec.decode_response(f).request_id for f in ex.frames)
        assert ids == [f"slow-{i}" for i in range(N_SLOW)]
    assert ex.close_code == code
    assert ex.close_reason, "the close frame says why"
    assert len(ex.close_reason.encode()) <= 123
    assert ex.server_closed_first


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        "[1, 2, 3]",  # valid JSON, not an object (Jina silently ignores it)
        '"just a string"',
        '{"data": "notalist", "execEndpoint": "/index"}',
        '{"data": [{"text": "x"}], "execEndpoint": 42}',
        '{"data": ["bare string"]}',
        '{"data": [{"embedding": [[1, 2], [3]]}]}',
    ],
    ids=["malformed", "array", "string", "data-not-a-list", "endpoint-not-a-string", "doc-not-object", "ragged"],
)
def test_bad_json_closes_1007_after_in_flight_requests(bad: str) -> None:
    ex = run(_slow_then("json", bad))
    _assert_drained_then_closed(ex, "json", 1007)


@pytest.mark.parametrize("bad", [b"\xff\xfegarbage", b""], ids=["garbage", "empty-frame"])
def test_bad_protobuf_closes_1007_after_in_flight_requests(bad: bytes) -> None:
    ex = run(_slow_then("bytes", bad))
    _assert_drained_then_closed(ex, "bytes", 1007)


def test_binary_frame_on_json_connection_closes_1003() -> None:
    ex = run(_slow_then("json", slow_bytes(99)))
    _assert_drained_then_closed(ex, "json", 1003)
    assert "binary" in ex.close_reason


def test_text_frame_on_bytes_connection_closes_1003() -> None:
    ex = run(_slow_then("bytes", orjson.dumps(slow_json(99)).decode()))
    _assert_drained_then_closed(ex, "bytes", 1003)
    assert "text" in ex.close_reason


def test_binary_frame_without_subprotocol_closes_1003() -> None:
    async def go() -> Any:
        async with relay_in_process("echo") as server:
            return await exchange(ws_url(server), [slow_bytes(0)], None)

    ex = run(go())
    assert ex.frames == []
    assert ex.close_code == 1003


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_oversized_message_closes_1009_after_in_flight_requests(mode: str) -> None:
    big_text = "x" * (MAX_SIZE * 2)
    if mode == "json":
        bad: str | bytes = orjson.dumps({"data": [{"text": big_text}]}).decode()
    else:
        bad = proto_codec.encode_request(DataRequest(request_id="big", docs=[Document(text=big_text)]))
    assert MAX_SIZE < len(bad) < 4 * MAX_SIZE
    ex = run(_slow_then(mode, bad))
    _assert_drained_then_closed(ex, mode, 1009)
    assert str(MAX_SIZE) in ex.close_reason


def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    base = orjson.dumps({"data": [{"text": ""}]})
    frame = orjson.dumps({"data": [{"text": "y" * (MAX_SIZE - len(base))}]}).decode()
    assert len(frame) == MAX_SIZE

    async def go() -> Any:
        async with relay_in_process("echo", max_message_size=MAX_SIZE) as server:
            return await exchange(ws_url(server), [frame, "{}"])

    ex = run(go())
    assert len(ex.frames) == 1
    assert ex.close_code == 1000


def test_far_oversized_message_is_refused_by_the_transport_with_1009() -> None:
    # Beyond 4x the limit the message is not even buffered: the close comes at once, still with a reason.
    async def go() -> Any:
        async with relay_in_process("echo", max_message_size=MAX_SIZE) as server:
            return await exchange(ws_url(server), ["x" * (MAX_SIZE * 5)])

    ex = run(go())
    assert ex.close_code == 1009
    assert ex.close_reason


def test_nothing_after_the_bad_frame_is_answered() -> None:
    async def go() -> Any:
        async with relay_in_process("upper", max_message_size=MAX_SIZE) as server:
            good = {"data": [{"text": "good"}], "execEndpoint": "/index"}
            return await exchange(ws_url(server), [good, "{not json", good, "{}"])

    ex = run(go())
    assert [r["data"][0]["text"] for r in ex.json()] == ["GOOD"]
    assert ex.close_code == 1007


def test_missing_data_is_data_null() -> None:
    async def go() -> Any:
        async with relay_in_process("upper", "sleeper=sleep:1ms") as server:
            return await exchange(ws_url(server), [{"execEndpoint": "/index", "parameters": {"x": 1}}, "{}"])

    ex = run(go())
    assert ex.close_code == 1000
    (reply,) = ex.json()
    assert reply["data"] == []
    assert reply["parameters"] == {"x": 1.0}
    assert [r["executor"] for r in reply["routes"]] == ["gateway", "upper", "sleeper"]
    assert all("end_time" in r for r in reply["routes"])


@pytest.mark.parametrize(
    "request_obj",
    [
        {"data": None, "execEndpoint": "/index"},
        {"data": {"docs": [{"text": "wrapped"}]}, "execEndpoint": "/index"},
        {"data": [{"text": "snake"}], "exec_endpoint": "/index", "target_executor": "upper"},
        {"data": [{"text": "extra"}], "execEndpoint": "/index", "unknownKey": {"a": 1}, "requestSize": 3},
        {"data": [{"text": "no endpoint"}]},
    ],
    ids=["data-null", "docs-wrapper", "snake-case", "unknown-keys", "no-endpoint"],
)
def test_lenient_json_forms_are_answered(request_obj: dict[str, Any]) -> None:
    async def go() -> Any:
        async with relay_in_process("upper") as server:
            return await exchange(ws_url(server), [request_obj, "{}"])

    ex = run(go())
    assert ex.close_code == 1000
    (reply,) = ex.json()
    data = request_obj["data"]
    docs = data["docs"] if isinstance(data, dict) else data or []
    assert [d["text"] for d in reply["data"]] == [d["text"].upper() for d in docs]
    assert reply["header"]["exec_endpoint"] == request_obj.get("execEndpoint", request_obj.get("exec_endpoint", "/"))


def test_bad_input_on_one_connection_leaves_others_untouched() -> None:
    async def go() -> tuple[Any, list[str]]:
        async with (
            relay_in_process("sleeper=sleep:0ms", max_message_size=MAX_SIZE) as server,
            connect(ws_url(server), subprotocols=["json"]) as bystander,
        ):
            await bystander.send(orjson.dumps(slow_json(7)).decode())
            bad = await exchange(ws_url(server), ["{not json"])
            await bystander.send(orjson.dumps({"data": [{"text": "later"}]}).decode())
            await bystander.send("{}")
            texts = []
            for _ in range(10):
                try:
                    texts.append(json_codec.decode_response(await bystander.recv()).docs[0].text)
                except ConnectionClosed:
                    break
            return bad, sorted(texts)

    bad, texts = run(go())
    assert bad.close_code == 1007
    assert texts == ["later", "slow-7"]
