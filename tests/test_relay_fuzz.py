"""Fuzzing a running relay with malformed frames: it never crashes, never leaks a connection, and answers
every bad frame with the documented close code.

One `flowrelay serve --max-message-size 4KiB` process takes a few thousand hypothesis-made messages, each
on a connection of its own: random bytes and text, JSON of every shape (objects that are almost requests,
arrays, scalars, deep nesting), DataRequestProtos truncated, bit-flipped or spliced, frames of the wrong
type, text frames that are not UTF-8, messages just over the limit and far over it, each sent whole or in
fragments, sometimes after a few good requests. What each must get back (the relay's documented rules):

* close 1003: a binary frame on a json connection, a text frame on a bytes connection;
* close 1007: malformed JSON or JSON that is not an object or not a request, an unparsable protobuf, an
  empty binary frame, a text frame that is not UTF-8;
* close 1009: a message over the limit (refused by the relay, or by the transport beyond 4x the limit);
* close 1000 with no answer: the end-of-stream marker (`{}`, `0x00`);
* an answer, connection still open: a message that happens to be a valid request;
* before any close the relay sends, the answers to the good requests sent before the bad frame.

Throughout, a second, well-behaved connection sends a request every few milliseconds and must get every
answer; at the end the relay process is alive, answers GET /status, and has no connection left open.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_process import RelayProcess, run_relay
from upstream_helpers import json_request, relay_status, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.wire import DataRequest, Document, json_codec, proto_codec
from relay.wire.errors import WireError
from relay.wire.messages import EndOfStream
from relay.wire.proto import jina_pb2

LIMIT = 4096
TRANSPORT_LIMIT = 4 * LIMIT  # the relay reads up to 4x the limit, then refuses politely; beyond, the transport
IO_TIMEOUT_S = 10.0
EXAMPLES_PER_MODE = 1500  # 2 x 1500 connections: well under a minute on a 2-core machine


@dataclass(frozen=True)
class Case:
    mode: str  # the connection's subprotocol: json or bytes
    payload: bytes  # the message, as sent on the wire
    text: bool  # a text frame (else binary)
    fragments: int  # 1: one frame; n: n fragments
    good_before: int  # valid requests sent first, each to be answered before any close

    def __repr__(self) -> str:
        kind = "text" if self.text else "binary"
        return (f"Case({self.mode}, {kind}, {len(self.payload)} bytes in {self.fragments} fragment(s), "
                f"{self.good_before} good first: {self.payload[:60]!r})")


@dataclass(frozen=True)
class Expect:
    answer: bool  # the frame is a request: answered, connection open
    close: int | None  # else: the close code
    by_relay: bool  # the relay (not the websockets layer) closes, after answering what came before


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expected(case: Case) -> Expect:
    """The documented answer to `case`; decided from the bytes, with the codecs only to tell a valid request
    from an invalid one among well-formed JSON objects and parsable protobufs."""
    size = len(case.payload)
    if size > TRANSPORT_LIMIT:
        return Expect(False, 1009, False)
    if case.text and not _utf8(case.payload):
        return Expect(False, 1007, False)
    if case.text != (case.mode == "json"):
        return Expect(False, 1003, True)
    if size > LIMIT:
        return Expect(False, 1009, True)
    if case.mode == "json":
        try:
            obj = orjson.loads(case.payload)
        except orjson.JSONDecodeError:
            return Expect(False, 1007, True)
        if not isinstance(obj, dict):
            return Expect(False, 1007, True)
        decode: Any = json_codec.decode_request
    else:
        if case.payload == b"\x00":
            return Expect(False, 1000, True)
        if case.payload == b"":
            return Expect(False, 1007, True)
        try:
            jina_pb2.DataRequestProto().ParseFromString(case.payload)
        except Exception:
            return Expect(False, 1007, True)
        decode = proto_codec.decode_request
    try:
        req = decode(case.payload)
    except WireError as err:
        assert err.close_code == 1007
        return Expect(False, 1007, True)
    if isinstance(req, EndOfStream):
        return Expect(False, 1000, True)
    return Expect(True, None, True)


# ---- strategies --------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
doc_like = st.dictionaries(
    st.sampled_from(["id", "text", "tags", "embedding", "uri", "weight", "chunks", "matches", "blob", "mime_type",
                     "granularity", "scores", "tensor"]),
    json_values,
    max_size=4,
)
_request_fields = {
    "data": st.lists(doc_like, max_size=3) | json_values
    | st.fixed_dictionaries({"docs": st.lists(doc_like, max_size=2)}),
    "execEndpoint": st.text(max_size=10) | json_scalars,
    "exec_endpoint": st.text(max_size=10),
    "targetExecutor": st.text(max_size=6) | json_scalars,
    "parameters": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_scalars,
    "header": json_values,
}
request_like = st.one_of(
    st.fixed_dictionaries({"data": st.lists(doc_like, min_size=1, max_size=3)},
                          optional={k: v for k, v in _request_fields.items() if k != "data"}),
    st.fixed_dictionaries({}, optional=_request_fields),
)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: written by the standard library, as a hostile client would
        return json.dumps(value).encode()


json_payloads = st.one_of(
    request_like.map(_dumps),
    json_values.map(_dumps),
    st.integers(1, 2000).map(lambda n: b"[" * n + b"]" * n),  # nesting deeper than parsers allow
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
    st.sampled_from([b"{}", b"", b"null", b"{\"data\": null}", b"{\"data\":", b"\xef\xbb\xbf{}", b"{\"a\":1}x"]),
)


@st.composite
def proto_payloads(draw: st.DrawFn) -> bytes:
    docs = draw(st.lists(st.builds(Document, id=st.none() | st.text(max_size=8), text=st.none() | st.text(max_size=30)),
                         max_size=3))
    req = DataRequest(
        request_id=draw(st.text(max_size=12)),
        exec_endpoint=draw(st.none() | st.text(max_size=10)),
        parameters=draw(st.none() | st.dictionaries(st.text(max_size=5), st.integers(-5, 5) | st.text(max_size=5),
                                                     max_size=2)),
        docs=docs,
    )
    raw = bytearray(proto_codec.encode_request(req))
    how = draw(st.sampled_from(["whole", "truncate", "flip", "insert", "splice"]))
    if how == "truncate" and raw:
        del raw[draw(st.integers(0, len(raw) - 1)):]
    elif how == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "insert":
        i = draw(st.integers(0, len(raw)))
        raw[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif how == "splice":
        raw += draw(st.binary(max_size=40))
    return bytes(raw)


bytes_payloads = st.one_of(
    proto_payloads(),
    st.binary(max_size=200),
    st.sampled_from([b"", b"\x00", b"\x00\x00", b"\x0a", b"\x0a\x02\x0a", b"\xff" * 16]),
    json_payloads,
)


def oversized(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Payloads just over the limit, over 4x the limit, or exactly at the limit."""
    sizes = st.integers(LIMIT + 1, TRANSPORT_LIMIT) | st.integers(TRANSPORT_LIMIT + 1, TRANSPORT_LIMIT + 4096) \
        | st.just(LIMIT)
    return st.tuples(base, sizes).map(lambda pair: (pair[0] * (pair[1] // max(len(pair[0]), 1) + 1))[: pair[1]]
                                      if pair[0] else b"x" * pair[1])


@st.composite
def cases(draw: st.DrawFn, mode: str) -> Case:
    payloads = json_payloads if mode == "json" else bytes_payloads
    payload = draw(st.one_of(payloads, payloads, payloads, oversized(payloads)))
    native_text = mode == "json"
    text = draw(st.sampled_from([native_text] * 4 + [not native_text]))
    fragments = draw(st.sampled_from([1, 1, 1, 2, 3, 7]))
    good_before = draw(st.sampled_from([0, 0, 0, 1, 2]))
    return Case(mode, payload, text, fragments, good_before)


# ---- one exchange ------------------------------------------------------------------------------------


def _good(mode: str, k: int) -> str | bytes:
    if mode == "json":
        return json_request(f"good {k}", k=k)
    return proto_codec.encode_request(DataRequest(request_id=f"good-{k}", exec_endpoint="/", parameters={},
                                                  docs=[Document(text=f"good {k}")]))


def _split(payload: bytes, n: int) -> list[bytes]:
    if n <= 1 or len(payload) < 2:
        return [payload]
    step = max(1, len(payload) // n)
    return [payload[i : i + step] for i in range(0, len(payload), step)]


async def _exchange(url: str, case: Case) -> tuple[list[str | bytes], int | None, str]:
    async with connect(url, subprotocols=[case.mode], max_size=None, open_timeout=IO_TIMEOUT_S,
                       close_timeout=IO_TIMEOUT_S, ping_interval=None) as ws:
        received: list[str | bytes] = []
        try:
            for k in range(case.good_before):
                await ws.send(_good(case.mode, k))
            if case.fragments > 1:
                await ws.send(_split(case.payload, case.fragments), text=case.text)
            else:
                await ws.send(case.payload, text=case.text)
        except ConnectionClosed:
            pass  # the relay closed while we were still sending: the close code says why
        want = expected(case)
        try:
            async with asyncio.timeout(IO_TIMEOUT_S):
                for _ in range(case.good_before + (1 if want.answer else 0)):
                    received.append(await ws.recv())
                if want.answer:
                    await ws.send("{}" if case.mode == "json" else b"\x00")  # end of stream
                for _ in range(10):
                    received.append(await ws.recv())  # nothing more is expected: collected to show it
        except ConnectionClosed:
            pass
        return received, ws.close_code, ws.close_reason or ""


def check(url: str, case: Case) -> None:
    want = expected(case)
    frames, code, reason = asyncio.run(_exchange(url, case))
    answers = frames[: case.good_before + (1 if want.answer else 0)]
    extra = frames[len(answers):]
    assert not extra, f"unexpected frames after the answers: {extra[:2]!r}"
    for frame in answers:
        if case.mode == "json":
            assert isinstance(frame, str), "a json client is answered in text frames"
            assert "request_id" in orjson.loads(frame)["header"]
        else:
            assert isinstance(frame, bytes), "a bytes client is answered in binary frames"
            proto_codec.decode_response(frame)
    if want.answer:
        assert code == 1000, f"a valid request is answered, then end of stream closes 1000; got {code} {reason!r}"
        return
    assert code == want.close, f"expected close {want.close}, got {code} {reason!r}"
    if want.by_relay:
        assert len(answers) == case.good_before, "the good requests before the bad frame are answered first"
        if code != 1000:
            assert reason, "the relay says why it closes"


# ---- the well-behaved neighbour ----------------------------------------------------------------------


class Canary(threading.Thread):
    """A json client on one connection for the whole fuzz run: a request every 5 ms, each answer checked."""

    def __init__(self, url: str) -> None:
        super().__init__(name="canary", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.sent = 0
        self.answered = 0
        self.close_code: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the test
            self.error = exc

    async def _main(self) -> None:
        async with connect(self.url, subprotocols=["json"], open_timeout=IO_TIMEOUT_S, ping_interval=None) as ws:
            while not self.stop.is_set():
                self.sent += 1
                await ws.send(json_request(f"canary {self.sent}", n=self.sent))
                resp = json_codec.decode_response(await asyncio.wait_for(ws.recv(), IO_TIMEOUT_S))
                assert resp.parameters == {"n": self.sent}
                assert [d.text for d in resp.docs or []] == [f"CANARY {self.sent}"]
                self.answered += 1
                await asyncio.sleep(0.005)
            await ws.send("{}")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), IO_TIMEOUT_S)
            self.close_code = ws.close_code


@pytest.fixture(scope="module")
def fuzz_relay() -> Any:
    with run_relay("-e", "upper", "--max-message-size", str(LIMIT), "--log-level", "WARNING") as relay:
        yield relay


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_MODE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def test_malformed_frames_never_crash_or_leak_and_get_the_documented_close(fuzz_relay: RelayProcess) -> None:
    canary = Canary(fuzz_relay.url)
    canary.start()
    started = time.monotonic()
    tried = {"json": 0, "bytes": 0}
    try:
        wait_until(lambda: canary.answered > 0 or canary.error, 10, "the canary's first answer")

        @FUZZ_SETTINGS
        @given(case=cases("json"))
        def fuzz_json(case: Case) -> None:
            tried["json"] += 1
            check(fuzz_relay.url, case)

        @FUZZ_SETTINGS
        @given(case=cases("bytes"))
        def fuzz_bytes(case: Case) -> None:
            tried["bytes"] += 1
            check(fuzz_relay.url, case)

        fuzz_json()
        fuzz_bytes()
        assert fuzz_relay.proc.poll() is None, "the relay is alive"
        status = relay_status(fuzz_relay)
        assert int(status["envs"]["requests_total"]) > 0
        wait_until(lambda: relay_status(fuzz_relay)["envs"]["connections_open"] == "1", 10,
                   "every fuzz connection to be let go (the canary's is the one left)")
    finally:
        canary.stop.set()
        canary.join(IO_TIMEOUT_S * 2)
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {tried} connections in {elapsed:.1f} s; canary {canary.answered}/{canary.sent} answered")
    assert canary.error is None, f"the well-behaved connection failed: {canary.error!r}"
    assert canary.sent == canary.answered > 100
    assert canary.close_code == 1000
    wait_until(lambda: relay_status(fuzz_relay)["envs"]["connections_open"] == "0", 10, "no connection left open")
    assert fuzz_relay.proc.poll() is None
