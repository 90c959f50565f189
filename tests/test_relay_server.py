"""The relay as a Jina client sees it: paths, subprotocols, streaming, prefetch, end of stream, routes, errors.

Every test talks to a RelayServer over real sockets on 127.0.0.1 with a plain `websockets` client. Order
and counts are asserted, never durations: "slow" requests use `parameters.sleep_ms` on a `sleep`
Executor, and the gateway route timestamps the relay writes are compared with each other only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import orjson
import pytest
from frame_cuts import CUT_STYLES, cut_points
from relay_process import LOOPBACK, exchange, http_get, read_until_closed, relay_in_process, ws_url
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from relay.wire import DataRequest, Document, json_codec, proto_codec
from relay.wire.proto import jina_pb2

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TIMEOUT_S = 20.0


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


def json_request(text: str = "hello", endpoint: str = "/index", **extra: Any) -> dict[str, Any]:
    return {"data": [{"text": text}], "execEndpoint": endpoint, **extra}


def bytes_request(request_id: str, text: str = "hello", endpoint: str = "/index", **extra: Any) -> bytes:
    return proto_codec.encode_request(
        DataRequest(request_id=request_id, exec_endpoint=endpoint, docs=[Document(text=text)], **extra)
    )


# ---- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/index", "/status", "/dry_run/x"])
def test_websocket_on_other_paths_is_refused_with_403(path: str) -> None:
    async def go() -> int:
        async with relay_in_process("echo") as server:
            with pytest.raises(InvalidStatus) as info:
                await exchange(ws_url(server, path), [])
            return info.value.response.status_code

    assert run(go()) == 403


def test_websocket_on_root_answers() -> None:
    async def go() -> Any:
        async with relay_in_process("echo") as server:
            return await exchange(ws_url(server, "/"), [json_request("x"), "{}"])

    ex = run(go())
    assert [r["data"][0]["text"] for r in ex.json()] == ["x"]
    assert ex.close_code == 1000


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_answers_of_every_frame_length_reach_the_client(mode: str, compression: str | None) -> None:
    # The relay frames answers itself (no extension is negotiated, permessage-deflate offered or not): 7-, 16- and
    # 64-bit payload lengths, text and binary, read back by websockets' own client.
    texts = ["x", "y" * 200, "z" * 70_000]

    async def go() -> list[str]:
        async with relay_in_process("echo") as server, connect(
                ws_url(server, "/"), subprotocols=[mode], compression=compression, max_size=None) as ws:  # type: ignore[list-item]
            assert not ws.protocol.extensions
            for i, text in enumerate(texts):
                await ws.send(bytes_request(f"r{i}", text) if mode == "bytes" else json.dumps(json_request(text)))
            got = []
            for _ in texts:
                frame = await ws.recv()
                assert isinstance(frame, bytes if mode == "bytes" else str)
                resp = proto_codec.decode_response(frame) if mode == "bytes" else json_codec.decode_response(frame)
                got.append((resp.docs or [])[0].text or "")
            return got

    assert sorted(run(go()), key=len) == texts


def _client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


def _request_text(text: str) -> bytes:
    return json.dumps(json_request(text)).encode()


_FRAGMENTED = _request_text("fragmented")
READ_SCRIPT = [
    _client_frame(Opcode.TEXT, _request_text("first")),
    _client_frame(Opcode.PING, b"are you there"),
    _client_frame(Opcode.TEXT, _FRAGMENTED[:10], fin=False),  # a fragmented message, a ping in the middle of it
    _client_frame(Opcode.PING, b"mid"),
    _client_frame(Opcode.CONT, _FRAGMENTED[10:20], fin=False),
    _client_frame(Opcode.CONT, _FRAGMENTED[20:]),
    _client_frame(Opcode.TEXT, _request_text("z" * 70_000)),  # a 64-bit length, longer than a read
    _client_frame(Opcode.TEXT, _request_text("y" * 100)),  # a 16-bit length
    _client_frame(Opcode.TEXT, _request_text("last")),
]
READ_EXPECTED = ["first", "fragmented", "z" * 70_000, "y" * 100, "last"]


async def raw_session(stream: bytes, pieces: list[int], until: int, **config: Any) -> tuple[list[Frame], int | None]:
    """A json client that writes `stream` (raw frames) to a relay (`echo`) in the pieces `pieces` cuts it into, one
    write each; the frames it reads back until `until` data and pong frames came or the relay closed, and the
    relay's close code."""
    async with relay_in_process("echo", **config) as server:
        protocol = ClientProtocol(parse_uri(ws_url(server, "/")), subprotocols=["json"])  # type: ignore[list-item]
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        while protocol.state is not State.OPEN:
            protocol.receive_data(await reader.read(65536))
        protocol.events_received()
        frames: list[Frame] = []

        async def read() -> None:
            while len(frames) < until and protocol.state is State.OPEN:
                data = await reader.read(65536)
                if not data:
                    protocol.receive_eof()
                else:
                    protocol.receive_data(data)
                frames.extend(e for e in protocol.events_received()
                              if isinstance(e, Frame) and e.opcode in (Opcode.TEXT, Opcode.PONG))

        reading = asyncio.create_task(read())
        at = 0
        for cut in [*pieces, len(stream)]:
            writer.write(stream[at:cut])
            await writer.drain()
            await asyncio.sleep(0.001)  # one read per piece, as far as the loop can tell
            at = cut
        await reading
        writer.close()
        return frames, protocol.close_rcvd.code if protocol.close_rcvd else None


def test_invalid_utf8_read_among_plain_frames_closes_1007_after_the_answers_before_it() -> None:
    stream = b"".join([_client_frame(Opcode.TEXT, _request_text("a")), _client_frame(Opcode.TEXT, _request_text("b")),
                       _client_frame(Opcode.TEXT, b"\xff\xfe"), _client_frame(Opcode.TEXT, _request_text("c"))])
    frames, code = run(raw_session(stream, [len(_client_frame(Opcode.TEXT, _request_text("a")))], 3))
    assert [orjson.loads(f.data)["data"][0]["text"] for f in frames] == ["a", "b"]
    assert code == 1007


def test_a_message_far_over_the_limit_read_among_plain_frames_closes_1009() -> None:
    small = _client_frame(Opcode.TEXT, _request_text("a"))
    stream = small + small + _client_frame(Opcode.TEXT, _request_text("x" * 5_000))
    frames, code = run(raw_session(stream, [len(small)], 3, max_message_size=1_000))
    assert [orjson.loads(f.data)["data"][0]["text"] for f in frames] == ["a", "a"]
    assert code == 1009


@pytest.mark.parametrize("cuts", CUT_STYLES)
def test_requests_read_in_any_pieces_with_control_frames_between(cuts: str) -> None:
    # The relay reads whole plain data frames itself while websockets stands idle, and hands everything else
    # (pings, fragments, a frame cut by a read) to websockets: every way of cutting the stream reads the same.
    stream = b"".join(READ_SCRIPT)
    pieces = cut_points(READ_SCRIPT, cuts)

    frames, _ = run(raw_session(stream, pieces, len(READ_EXPECTED) + 2))
    texts = [orjson.loads(f.data)["data"][0]["text"] for f in frames if f.opcode is Opcode.TEXT]
    pongs = [f.data for f in frames if f.opcode is Opcode.PONG]
    assert texts == READ_EXPECTED
    assert pongs == [b"are you there", b"mid"]


def test_plain_http_on_the_same_port() -> None:
    async def go() -> dict[str, tuple[int, Any]]:
        async with relay_in_process("upper", "sleeper=sleep:1ms") as server:
            return {p: await asyncio.to_thread(http_get, server.port, p) for p in ("/", "/status", "/dry_run", "/nope")}

    got = run(go())
    assert got["/"] == (200, {})
    assert got["/dry_run"] == (200, {"code": 0, "description": "", "exception": None})
    status, body = got["/status"]
    assert status == 200
    assert set(body) == {"jina", "envs"}
    assert all(isinstance(v, str) for part in body.values() for v in part.values()), "JinaInfoProto maps are str->str"
    assert got["/nope"][0] == 404


@pytest.mark.parametrize(
    ("subprotocol", "send", "expected"),
    [("json", [], "{}"), ("bytes", [b""], b"")],
    ids=["json", "bytes"],
)
def test_dry_run_over_websocket(subprotocol: str, send: list[bytes], expected: str | bytes) -> None:
    async def go() -> Any:
        async with relay_in_process("upper", "sleeper=sleep:1ms") as server:
            return await exchange(ws_url(server, "/dry_run"), send, [subprotocol])

    ex = run(go())
    assert ex.frames == [expected], "one StatusProto: empty on success"
    assert ex.close_code == 1000
    assert ex.server_closed_first


def test_dry_run_reports_a_failing_chain() -> None:
    async def go() -> Any:
        async with relay_in_process("boom=fail") as server:
            return await exchange(ws_url(server, "/dry_run"), [], ["json"])

    ex = run(go())
    (status,) = ex.json()
    assert status["code"] == 1
    assert status["exception"]["name"] == "ValueError"
    assert ex.close_code == 1000


# ---- subprotocols --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["json"], "json"),
        (["bytes"], "bytes"),
        (None, None),  # no header: json, nothing to echo
        (["foo"], None),  # unknown: json, nothing echoed
        (["foo", "bytes", "json"], "bytes"),  # the first one offered that we support
        (["json", "bytes"], "json"),
        (["bytes", "json"], "bytes"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, list) else str(v),
)
def test_subprotocol_negotiation(offered: list[str] | None, chosen: str | None) -> None:
    mode = chosen or "json"
    if mode == "bytes":
        frames: list[Any] = [bytes_request("rid-neg", "abc"), b"\x00"]
    else:
        frames = [json_request("abc"), "{}"]

    async def go() -> Any:
        async with relay_in_process("upper") as server:
            return await exchange(ws_url(server), frames, offered)

    ex = run(go())
    assert ex.subprotocol == chosen, "the chosen subprotocol is echoed; none when json was only a fallback"
    assert len(ex.frames) == 1
    if mode == "bytes":
        assert isinstance(ex.frames[0], bytes), "bytes mode answers in BINARY frames"
        reply = proto_codec.decode_response(ex.frames[0])
        assert reply.request_id == "rid-neg"
    else:
        assert isinstance(ex.frames[0], str), "json mode answers in TEXT frames"
        reply = json_codec.decode_response(ex.frames[0])
    assert [d.text for d in reply.docs or ()] == ["ABC"]
    assert ex.close_code == 1000


# ---- streaming and ordering ---------------------------------------------------------------------


def test_responses_stream_in_completion_order() -> None:
    sleeps = [600, 400, 200, 0]

    async def go() -> Any:
        async with relay_in_process("sleeper=sleep:0ms") as server:
            reqs = [json_request(f"r{i}", parameters={"i": i, "sleep_ms": ms}) for i, ms in enumerate(sleeps)]
            return await exchange(ws_url(server), [*reqs, "{}"])

    ex = run(go())
    order = [int(r["parameters"]["i"]) for r in ex.json()]
    assert order == [3, 2, 1, 0], "the quickest request is answered first, whatever the send order"
    assert ex.close_code == 1000


def test_bytes_mode_echoes_request_ids_out_of_order() -> None:
    async def go() -> Any:
        async with relay_in_process("sleeper=sleep:0ms") as server:
            slow = bytes_request("slow-one", parameters={"sleep_ms": 500})
            fast = bytes_request("fast-one", parameters={"sleep_ms": 0})
            return await exchange(ws_url(server), [slow, fast, b"\x00"], ["bytes"])

    ex = run(go())
    assert [proto_codec.decode_response(f).request_id for f in ex.frames] == ["fast-one", "slow-one"]


def test_json_request_ids_are_made_by_the_gateway() -> None:
    async def go() -> Any:
        async with relay_in_process("echo") as server:
            req = json_request("x", requestId="mine", header={"requestId": "mine-too"})
            return await exchange(ws_url(server), [req, req, "{}"])

    ids = [r["header"]["request_id"] for r in run(go()).json()]
    assert all(HEX32.match(i) for i in ids), ids
    assert len(set(ids)) == 2


def _gateway_spans(replies: list[DataRequest]) -> dict[int, tuple[int, int]]:
    spans = {}
    for r in replies:
        gw = r.routes[0]
        assert gw.executor == "gateway"
        assert gw.start_ns is not None and gw.end_ns is not None
        spans[int(r.parameters["i"])] = (gw.start_ns, gw.end_ns)
    return spans


def _peak_in_flight(spans: dict[int, tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    peak = level = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_prefetch_two_answers_eight_pipelined_requests_in_pairs(mode: str) -> None:
    n = 8

    async def go() -> list[DataRequest]:
        async with relay_in_process("sleeper=sleep:0ms", prefetch=2) as server:
            if mode == "json":
                frames: list[Any] = [json_request(f"r{i}", parameters={"i": i, "sleep_ms": 250}) for i in range(n)]
                ex = await exchange(ws_url(server), [*frames, "{}"], ["json"])
                return [json_codec.decode_response(f) for f in ex.frames]
            frames = [bytes_request(f"rid-{i}", parameters={"i": i, "sleep_ms": 250}) for i in range(n)]
            ex = await exchange(ws_url(server), [*frames, b"\x00"], ["bytes"])
            return [proto_codec.decode_response(f) for f in ex.frames]

    replies = run(go())
    assert len(replies) == n
    spans = _gateway_spans(replies)
    # The gateway route starts when a request is admitted: never more than 2 at a time...
    assert _peak_in_flight(spans) == 2
    for i in range(n):
        answered_before = sum(1 for j in range(i) if spans[j][1] <= spans[i][0])
        assert answered_before >= i - 1, f"request {i} was admitted with {i - answered_before} others in flight"
    # ...so they come back in pairs: the k-th pair of answers is the k-th pair sent.
    arrival = [int(r.parameters["i"]) for r in replies]
    assert [set(arrival[k : k + 2]) for k in range(0, n, 2)] == [{k, k + 1} for k in range(0, n, 2)]


def test_without_a_prefetch_limit_all_pipelined_requests_are_in_flight_together() -> None:
    n = 8

    async def go() -> list[DataRequest]:
        async with relay_in_process("sleeper=sleep:0ms", prefetch=0) as server:
            frames = [json_request(f"r{i}", parameters={"i": i, "sleep_ms": 300}) for i in range(n)]
            ex = await exchange(ws_url(server), [*frames, "{}"])
            return [json_codec.decode_response(f) for f in ex.frames]

    spans = _gateway_spans(run(go()))
    assert _peak_in_flight(spans) == n
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())


# ---- end of stream -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_end_of_stream_answers_everything_in_flight_then_closes_1000(mode: str) -> None:
    async def go() -> Any:
        async with relay_in_process("sleeper=sleep:0ms") as server:
            if mode == "json":
                frames: list[Any] = [json_request(f"r{i}", parameters={"i": i, "sleep_ms": 300}) for i in range(3)]
                return await exchange(ws_url(server), [*frames, "{}"], ["json"])
            frames = [bytes_request(f"rid-{i}", parameters={"sleep_ms": 300}) for i in range(3)]
            return await exchange(ws_url(server), [*frames, b"\x00"], ["bytes"])

    ex = run(go())
    assert len(ex.frames) == 3, "every request sent before the end of stream is answered"
    assert ex.close_code == 1000
    assert ex.close_reason == ""
    assert ex.server_closed_first


def test_requests_after_end_of_stream_are_not_read() -> None:
    async def go() -> Any:
        async with relay_in_process("echo") as server:
            return await exchange(ws_url(server), [json_request("before"), "{}", json_request("after")])

    ex = run(go())
    assert [r["data"][0]["text"] for r in ex.json()] == ["before"]
    assert ex.close_code == 1000


def test_without_end_of_stream_the_connection_stays_open_for_more() -> None:
    async def go() -> list[str]:
        async with relay_in_process("upper") as server, connect(ws_url(server), subprotocols=["json"]) as ws:
            texts = []
            for word in ("one", "two", "three"):
                await ws.send(orjson.dumps(json_request(word)).decode())
                texts.append(orjson.loads(await ws.recv())["data"][0]["text"])
            await ws.close()
            return texts

    assert run(go()) == ["ONE", "TWO", "THREE"]


# ---- routes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_routes_gateway_first_then_each_executor_nested_inside_it(mode: str) -> None:
    async def go() -> DataRequest:
        async with relay_in_process("first=upper", "sleeper=sleep:5ms", "last=echo") as server:
            if mode == "json":
                ex = await exchange(ws_url(server), [json_request("abc"), "{}"], ["json"])
                return json_codec.decode_response(ex.frames[0])
            ex = await exchange(ws_url(server), [bytes_request("rid-routes", "abc"), b"\x00"], ["bytes"])
            return proto_codec.decode_response(ex.frames[0])

    reply = run(go())
    assert [r.executor for r in reply.routes] == ["gateway", "first", "sleeper", "last"]
    gw, *hops = reply.routes
    assert all(r.start_ns is not None and r.end_ns is not None for r in reply.routes)
    for hop in hops:
        assert gw.start_ns <= hop.start_ns <= hop.end_ns <= gw.end_ns
    for a, b in itertools.pairwise(hops):
        assert a.end_ns <= b.start_ns, "Executors run one after the other"
    assert all(r.status is None for r in reply.routes)
    assert reply.status is None
    assert reply.target_executor == ""
    assert [d.text for d in reply.docs or ()] == ["ABC"]


@pytest.mark.parametrize(
    ("target", "ran"),
    [
        ("upper", {"upper"}),
        ("up", {"upper"}),  # a prefix
        ("s.*r", {"sleeper"}),  # a regex
        ("per", set()),  # re.match, not re.search
        ("upper|sleeper", {"upper", "sleeper"}),
    ],
)
def test_target_executor_selects_by_regex_prefix(target: str, ran: set[str]) -> None:
    async def go() -> dict[str, Any]:
        async with relay_in_process("upper", "sleeper=sleep:1ms") as server:
            ex = await exchange(ws_url(server), [json_request("targeted", targetExecutor=target), "{}"])
            return ex.json()[0]

    reply = run(go())
    routes = reply["routes"]
    assert [r["executor"] for r in routes] == ["gateway", "upper", "sleeper"], "every Executor gets a start"
    assert all("start_time" in r for r in routes)
    assert {r["executor"] for r in routes[1:] if "end_time" in r} == ran, "only selected ones end"
    assert "end_time" in routes[0]
    assert reply["header"]["target_executor"] == ""
    assert reply["data"][0]["text"] == ("TARGETED" if "upper" in ran else "targeted")


# ---- executor errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "bytes"])
def test_executor_error_is_a_normal_response_and_the_connection_stays_open(mode: str) -> None:
    async def go() -> tuple[list[DataRequest], int | None]:
        async with relay_in_process("first=upper", "boom=fail:/fail", "last=echo") as server:
            if mode == "json":
                frames: list[Any] = [
                    json_request("will-fail", "/fail", parameters={"i": 0}),
                    json_request("after-fail", "/index", parameters={"i": 1}),
                    "{}",
                ]
                ex = await exchange(ws_url(server), frames, ["json"])
                return [json_codec.decode_response(f) for f in ex.frames], ex.close_code
            frames = [bytes_request("rid-fail", "will-fail", "/fail"), bytes_request("rid-ok", "after-fail"), b"\x00"]
            ex = await exchange(ws_url(server), frames, ["bytes"])
            return [proto_codec.decode_response(f) for f in ex.frames], ex.close_code

    replies, close_code = run(go())
    assert close_code == 1000
    assert len(replies) == 2
    failed, ok = replies
    assert failed.status is not None and failed.status.code == 1
    exc = failed.status.exception
    assert exc is not None
    assert exc.name == "ValueError"
    assert exc.executor == "FailExecutor"
    assert exc.args and "/fail" in exc.args[0]
    assert exc.stacks and exc.stacks[0].startswith("Traceback")
    assert failed.status.description.startswith("ValueError(")
    assert [r.executor for r in failed.routes] == ["gateway", "first", "boom"], "nothing after the failure"
    assert failed.routes[2].status == failed.status, "the failing route carries the same status"
    assert failed.routes[2].end_ns is not None
    assert failed.routes[1].status is None
    assert [d.text for d in failed.docs or ()] == ["WILL-FAIL"], "docs as they were when the error happened"

    assert ok.status is None or ok.status.code == 0
    assert [r.executor for r in ok.routes] == ["gateway", "first", "boom", "last"]
    assert [d.text for d in ok.docs or ()] == ["AFTER-FAIL"]


def test_json_error_response_omits_status_on_success_only() -> None:
    async def go() -> list[dict[str, Any]]:
        async with relay_in_process("boom=fail:/fail") as server:
            return (await exchange(ws_url(server), [json_request("a", "/fail"), json_request("b", "/x"), "{}"])).json()

    replies = run(go())
    by_endpoint = {r["header"]["exec_endpoint"]: r for r in replies}
    assert list(by_endpoint["/fail"]["header"]) == ["request_id", "status", "exec_endpoint", "target_executor"]
    assert list(by_endpoint["/x"]["header"]) == ["request_id", "exec_endpoint", "target_executor"]
    assert list(by_endpoint["/fail"]["header"]["status"]) == ["code", "description", "exception"]


def test_many_connections_are_independent() -> None:
    async def one(url: str, k: int) -> list[str]:
        ex = await exchange(url, [*(json_request(f"c{k}-{i}") for i in range(5)), "{}"])
        assert ex.close_code == 1000
        return [r["data"][0]["text"] for r in ex.json()]

    async def go() -> list[list[str]]:
        async with relay_in_process("upper", "sleeper=sleep:1ms") as server:
            return await asyncio.gather(*(one(ws_url(server), k) for k in range(10)))

    results = run(go())
    assert [sorted(r) for r in results] == [sorted(f"C{k}-{i}" for i in range(5)) for k in range(10)]


def test_a_client_leaving_early_does_not_disturb_others() -> None:
    async def go() -> list[str]:
        async with relay_in_process("sleeper=sleep:0ms") as server:
            async with connect(ws_url(server), subprotocols=["json"]) as leaver:
                await leaver.send(orjson.dumps(json_request("gone", parameters={"sleep_ms": 200})).decode())
            ex = await exchange(ws_url(server), [json_request("stay"), "{}"])
            async with connect(ws_url(server), subprotocols=["json"]) as again:
                await again.send(orjson.dumps(json_request("again")).decode())
                await again.send("{}")
                frames = await read_until_closed(again)
            return [r["data"][0]["text"] for r in ex.json()] + [orjson.loads(f)["data"][0]["text"] for f in frames]

    assert run(go()) == ["stay", "again"]


def test_bytes_response_always_carries_parameters() -> None:
    # A Jina gateway writes `parameters` even when the request had none (`12 00` on the wire).
    async def go() -> list[bytes]:
        async with relay_in_process("echo") as server:
            frames = [bytes_request("no-params"), bytes_request("with-params", parameters={"k": "v"}), b"\x00"]
            return (await exchange(ws_url(server), frames, ["bytes"])).frames

    plain, with_params = (jina_pb2.DataRequestProto.FromString(f) for f in run(go()))
    assert plain.HasField("parameters")
    assert dict(plain.parameters) == {}
    assert dict(with_params.parameters) == {"k": "v"}
    assert plain.header.HasField("target_executor") and plain.header.target_executor == ""
