"""An upstream Flow's answer relayed by splicing (relay.wire.splice) reads exactly as the decode-and-encode answer.

The relay in front of a Flow that speaks its client's subprotocol answers from the upstream's own bytes, its parts
spliced in. For many requests and answers (hypothesis: documents of every kind, parameters, error statuses, routes
with and without end times), in bytes and in json, the spliced answer and the answer of the decode-and-encode path
(what a client of another door gets) must decode to the same message: the same protobuf message (field for field,
whatever the byte order) and the same DataRequest, in json the same keys in a Jina gateway's order. The upstream
here is the real link code (relay.upstream.ws) fed by a gateway that answers as a Jina 3.x gateway does (echoes the
request, its own route entry first, then the Executors'), written by our codecs in a gateway's shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from test_wire_lazy import _fixed_time, _gateway, documents, structs

from relay.observer import DOOR_WEBSOCKET
from relay.upstream.backend import UpstreamBackend
from relay.upstream.pool import UpstreamConfig, UpstreamPool
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document, NdArray
from relay.wire.errors import BadRequest
from relay.wire.messages import DataRequest, ExceptionInfo, Route, Status
from relay.wire.proto import jina_pb2

CODECS = {"bytes": proto_codec, "json": json_codec}
T0 = 1_795_728_119_000_000_000

statuses = st.none() | st.builds(
    Status, code=st.just(1), description=st.text(max_size=12),
    exception=st.none() | st.builds(ExceptionInfo, name=st.text(max_size=8), args=st.lists(st.text(max_size=8),
                                    max_size=2), stacks=st.lists(st.text(max_size=8), max_size=2),
                                    executor=st.text(max_size=8)))


@st.composite
def executor_routes(draw: st.DrawFn) -> list[Route]:
    routes = []
    for i, name in enumerate(draw(st.lists(st.sampled_from(["upper", "sleeper", "e-1", "gateway2"]), max_size=3))):
        start = T0 + 1_000 * (i + 1) + draw(st.sampled_from([0, 7, 123_000]))
        end = None if draw(st.booleans()) and i else start + draw(st.integers(0, 10**9))
        routes.append(Route(name, start, end, draw(statuses)))
    return routes


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "mode": draw(st.sampled_from(["bytes", "json"])),
        "request": DataRequest(
            request_id=draw(st.text(alphabet="abc123", max_size=8)),
            exec_endpoint=draw(st.none() | st.sampled_from(["/", "/index", "/search"])),
            parameters=draw(st.none() | structs),
            docs=draw(st.lists(documents(), max_size=3)),
        ),
        "answer_docs": draw(st.none() | st.lists(documents(), max_size=3)),
        "results": draw(st.none() | structs),
        "routes": draw(executor_routes()),
        "status": draw(statuses),
        "gateway_end": draw(st.booleans()),
    }


def upstream_answer(frame: bytes, mode: str, case: dict[str, Any]) -> bytes:
    """What a Jina gateway answers to the relay's forwarded `frame`: the request echoed (its id in bytes, one of
    its own in json, where the relay's id travels in the echoed parameters), its route entry, the Executors'."""
    if mode == "bytes":
        sent = proto_codec.decode(frame)
    else:
        sent = json_codec.decode_request(frame)
        assert isinstance(sent, DataRequest)
        sent.request_id = "f" * 32
    params = dict(sent.parameters or {})
    if case["results"] is not None:
        params["__results__"] = case["results"]
    gateway = Route("gateway", T0, T0 + 5_000_000 if case["gateway_end"] else None)
    answer = DataRequest(request_id=sent.request_id, exec_endpoint=sent.exec_endpoint, target_executor="",
                         parameters=params, docs=case["answer_docs"], routes=[gateway, *case["routes"]],
                         status=case["status"])
    if mode == "bytes":
        return proto_codec.to_proto(answer).SerializeToString()  # a gateway's maps in hash order, not sorted
    try:
        payload = json_codec.encode_response(answer)
        json_codec.decode_response(payload)
    except (BadRequest, ValueError):  # what json cannot carry (an array without a dtype, NaN): no gateway sends it
        reject()
    return payload


def relayed(case: dict[str, Any], splice: bool) -> bytes:
    """The relay's answer to the case's request, through the real upstream link and backend, from a gateway that
    answers at once; spliced, or decoded and encoded as for a client of another subprotocol."""
    mode = case["mode"]
    codec = CODECS[mode]
    pool = UpstreamPool(UpstreamConfig(url="ws://127.0.0.1:9", subprotocol=mode, connections=1))
    link = pool.links[0]
    link.connected = True
    link._send_frame = lambda frame: link._on_message(upstream_answer(frame, mode, case))  # type: ignore[method-assign]
    with _fixed_time():
        relay = _gateway()
        try:
            client_frame = codec.encode_request(case["request"])
            req = codec.decode_request(client_frame)
        except (BadRequest, ValueError):  # what json cannot carry
            reject()
        assert isinstance(req, DataRequest)
        if splice:
            req.answer_subprotocol = mode
        relay.admit(req, len(client_frame), mode == "bytes")
        answers: list[bytes | None] = []
        UpstreamBackend(pool).submit(req, lambda done: answers.append(
            relay.finish(done, codec.encode_response, DOOR_WEBSOCKET)))
    assert (req.spliced is not None) == splice
    (out,) = answers
    assert out is not None
    return out


def canonical(payload: bytes) -> bytes:
    return jina_pb2.DataRequestProto.FromString(payload).SerializeToString(deterministic=True)


def canonical_json(payload: bytes) -> bytes:
    resp = json_codec.decode_response(payload)
    return orjson.dumps(json_codec.response_dict(resp), option=orjson.OPT_SORT_KEYS)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_a_spliced_answer_reads_as_the_decoded_and_encoded_one(case: dict[str, Any]) -> None:
    spliced, whole = relayed(case, splice=True), relayed(case, splice=False)
    if case["mode"] == "bytes":
        # The same message, in canonical form (NaN, which parameters may hold, is unequal to itself).
        assert canonical(spliced) == canonical(whole)
    else:
        ours, theirs = orjson.loads(spliced), orjson.loads(whole)
        assert list(ours) == list(theirs) == ["header", "parameters", "routes", "data"]
        assert list(ours["header"]) == list(theirs["header"])
        # The same answer read back, in canonical form (keys sorted: maps come in hash order).
        assert canonical_json(spliced) == canonical_json(whole)
    resp = CODECS[case["mode"]].decode_response(spliced)
    assert [r.executor for r in resp.routes] == ["gateway", "upstream", *(r.executor for r in case["routes"])]


def test_arrays_an_older_gateway_left_unmarked_are_marked_numpy() -> None:
    # Jina gateways before 3.15 do not mark arrays; jina's own client reads an unmarked one as None.
    array = NdArray(b"\x00\x00\x80?", (1,), "<f4", "")
    case = {"mode": "bytes", "request": DataRequest(request_id="r1", docs=[Document(text="a")]),
            "answer_docs": [Document(text="a", embedding=array), Document(text="b")], "results": None, "routes": [],
            "status": None, "gateway_end": True}
    resp = proto_codec.decode_response(relayed(case, splice=True))
    assert resp.docs is not None and resp.docs[0].embedding is not None
    assert resp.docs[0].embedding.cls_name == "numpy" and resp.request_id == "r1"
