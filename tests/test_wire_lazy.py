"""The bytes fast path: documents left in protobuf form answer with the very bytes of the Document path.

`proto_codec.decode_request` keeps a request's documents in the parsed message (`DataRequest.raw`); the
chain converts them to Documents only for an Executor that needs them as such, and `encode_response`
answers from that message while they are still in it. Every answer must be what the Document path
(`load_docs()` right after decoding) gives, byte for byte:

* a property test over random Documents, parameters, endpoints, `targetExecutor` patterns and chains
  of the built-in Executors (and one that needs Documents, to convert in the middle of a chain);
* every request frame captured from Jina clients in `captures/a_legacy_ws/`, through several chains;
* the pieces: what is kept and what is rewritten, ids, numpy marking, parameters, sparse arrays;
* the upstream path: a bytes client's documents reach a bytes upstream and come back unconverted.

Each request goes through what the relay does to it (relay.gateway: `admit`, the chain, then `finish` with the
bytes encoder) with a fixed clock and fixed ids, so that two runs can be compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from backend_helpers import answer as answered_by
from backend_helpers import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from relay import executors, gateway
from relay.config import RelayConfig
from relay.executors import Chain, Executor, RecordExecutor, parse_executor_spec
from relay.observer import DOOR_WEBSOCKET
from relay.upstream.backend import UpstreamBackend
from relay.upstream.pool import UpstreamConfig, UpstreamPool
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document, NamedScore, NdArray
from relay.wire.errors import BadRequest
from relay.wire.messages import DataRequest, Route
from relay.wire.proto import jina_pb2

# ---- running a request as the relay does, deterministically ------------------------------------------


class TagReader(Executor):
    """Needs Documents (no protobuf method): reads and changes them, so the chain converts before it."""

    kind = "TagReader"

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        for i, doc in enumerate(req.docs or ()):
            doc.tags = {**(doc.tags or {}), "seen": float(i), "had_text": doc.text is not None}


class BoomReader(Executor):
    """Needs Documents and fails on them (its traceback goes into the answer)."""

    kind = "BoomReader"

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        raise KeyError(f"{len(req.docs or ())} docs")


def _executor(name: str, spec: str, tmp: Path | None = None) -> Executor:
    if spec == "tags":
        return TagReader(name)
    if spec == "boom":
        return BoomReader(name)
    if spec == "record":
        assert tmp is not None
        return RecordExecutor(name, str(tmp / f"{name}.sqlite"))
    return parse_executor_spec(f"{name}={spec}")


class _Clock:
    def __init__(self) -> None:
        self.t = 1_795_728_119_246_844_000

    def __call__(self) -> int:
        self.t += 1_234_567  # whole microseconds and odd nanoseconds alike
        return self.t


@contextlib.contextmanager
def _fixed_time() -> Iterator[None]:
    clock = _Clock()
    with mock.patch.object(gateway, "now_ns", clock), mock.patch.object(executors, "now_ns", clock):
        yield


def _gateway(chain: Chain | None = None) -> gateway.Gateway:
    """A gateway whose ids are the same on every run (what a bytes client's documents without an id get)."""
    return gateway.Gateway(RelayConfig(), chain or Chain([]), ids=gateway.IdSource("0123456789abcdef"))


def _admit(req: DataRequest, frame: bytes) -> gateway.Gateway:
    relay = _gateway()
    relay.admit(req, len(frame), True)
    return relay


def answer(frame: bytes, chain: Chain, *, materialize: bool) -> tuple[bytes, DataRequest]:
    """The relay's answer to one bytes frame; `materialize` converts the documents right after decoding
    (the Document path), otherwise they stay protobuf as long as the chain lets them."""
    with _fixed_time():
        req = proto_codec.decode_request(frame)
        assert isinstance(req, DataRequest)
        if materialize:
            req.load_docs()
        relay = _admit(req, frame)
        if chain.is_async:
            asyncio.run(chain.run(req))
        else:
            chain.run_sync(req)
        # What the WebSocket door sends a bytes client.
        out = relay.finish(req, proto_codec.encode_response, DOOR_WEBSOCKET)
        assert out is not None
        return out, req


def both(frame: bytes, specs: list[str], tmp: Path | None = None) -> tuple[bytes, bytes, DataRequest]:
    """Answers of the lazy and of the Document path, each with a fresh chain (FailExecutor counts)."""
    lazy, req = answer(frame, Chain([_executor(f"e{i}", s, tmp) for i, s in enumerate(specs)]), materialize=False)
    eager, _ = answer(frame, Chain([_executor(f"e{i}", s, tmp) for i, s in enumerate(specs)]), materialize=True)
    return lazy, eager, req


# ---- strategies -------------------------------------------------------------------------------------

# NaN and infinities included: the Document path reads a float32 into a Python float and writes it back,
# the protobuf path never touches it; both must give the same bits.
f32 = st.floats(width=32)
names = st.text(max_size=8)
struct_scalar = st.none() | st.booleans() | st.floats() | st.text(max_size=8)
struct_value = st.recursive(
    struct_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
structs = st.dictionaries(st.text(max_size=8), struct_value, max_size=4)
# Collections get min_size rather than .filter(bool): hypothesis cannot always satisfy the filter.
tags = st.dictionaries(st.text(max_size=8), struct_value, min_size=1, max_size=4)


@st.composite
def ndarrays(draw: st.DrawFn) -> NdArray:
    dtype = draw(st.sampled_from(["<f4", "<f8", "<i8", "|b1", ">f4", ""]))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    return NdArray(draw(st.binary(max_size=24)), shape, dtype, draw(st.sampled_from(["", "numpy", "torch"])))


scores = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.builds(NamedScore, value=f32, op_name=st.none() | names.filter(bool), ref_id=st.none() | names.filter(bool)),
    min_size=1,
    max_size=2,
)


def documents(depth: int = 1) -> st.SearchStrategy[Document]:
    content = st.one_of(
        st.fixed_dictionaries({}),
        st.fixed_dictionaries({"text": st.text(max_size=12)}),
        st.fixed_dictionaries({"blob": st.binary(max_size=8)}),
        st.fixed_dictionaries({"tensor": ndarrays()}),
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "id": st.text(min_size=1, max_size=10),
        "parent_id": names.filter(bool),
        "granularity": st.integers(1, 2**32 - 1),
        "adjacency": st.integers(1, 2**32 - 1),
        "mime_type": names.filter(bool),
        "weight": f32.filter(bool),
        "uri": names.filter(bool),
        "tags": tags,
        "offset": f32.filter(bool),
        "location": st.lists(f32, min_size=1, max_size=3),
        "embedding": ndarrays(),
        "modality": names.filter(bool),
        "scores": scores,
        "evaluations": scores,
    }
    if depth > 0:
        optional["chunks"] = st.lists(documents(depth - 1), min_size=1, max_size=2)
        optional["matches"] = st.lists(documents(depth - 1), min_size=1, max_size=2)
    fields = st.fixed_dictionaries({}, optional=optional)
    return st.tuples(fields, content).map(lambda p: Document(**p[0], **p[1]))


requests = st.builds(
    DataRequest,
    request_id=st.text(max_size=10),
    exec_endpoint=st.none() | st.sampled_from(["/", "/index", "/boom", "/search"]),
    target_executor=st.none() | st.sampled_from(["", "e0", "e[12]", "e.*", "x", "("]),
    parameters=st.none() | structs,
    docs=st.lists(documents(), min_size=1, max_size=4),
)

SYNC_SPECS = ["echo", "upper", "embed:3", "fail:/boom", "fail:0.5", "tags", "boom"]
chains = st.lists(st.sampled_from(SYNC_SPECS), max_size=4)


# ---- the property -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, chains)
def test_lazy_and_document_paths_answer_the_same_bytes(req: DataRequest, specs: list[str]) -> None:
    frame = proto_codec.encode_request(req)
    lazy, eager, done = both(frame, specs)
    assert lazy == eager
    # Documents are converted only when an Executor that ran needs them as Documents.
    if not any(s in ("tags", "boom") for s in specs):
        assert done.docs is None and done.raw is not None


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.lists(st.sampled_from([*SYNC_SPECS, "sleep:0", "record"]), min_size=1, max_size=3))
def test_asynchronous_chains_too(req: DataRequest, specs: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lazy, eager, _ = both(proto_codec.encode_request(req), [*specs, "sleep:0"], tmp)
        assert lazy == eager
        for i, s in enumerate(specs):
            if s == "record":
                # Both runs wrote the same ids into the same file: each id counted an even number of times.
                with contextlib.closing(sqlite3.connect(tmp / f"e{i}.sqlite")) as db:
                    assert all(n % 2 == 0 for (n,) in db.execute("SELECT n FROM ids"))


# ---- the captured frames ----------------------------------------------------------------------------


def _shared_dir() -> Path:
    env = os.environ.get("FLOWRELAY_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CAPTURES = _shared_dir() / "protocol" / "captures" / "a_legacy_ws"


def _request_frames() -> list[Path]:
    paths = sorted(CAPTURES.glob("*.send.bin")) + sorted((CAPTURES / "official_client").glob("*.c2s.bin"))
    out = []
    for p in paths:
        raw = p.read_bytes()
        if raw in (b"", b"\x00") or raw == b"\xff\xfegarbage":
            continue
        out.append(p)
    return out


REQUEST_FRAMES = _request_frames()
CAPTURE_CHAINS = [[], ["echo"], ["upper", "sleep:0"], ["upper", "embed:8"], ["tags", "upper"], ["fail:/fail"]]


def test_the_captured_request_frames_are_found() -> None:
    # 1 index request, 10 pipelined, 1 that fails, 1 sent without a subprotocol, 3 of the official client.
    assert len(REQUEST_FRAMES) == 16


@pytest.mark.parametrize("specs", CAPTURE_CHAINS, ids=["+".join(c) or "none" for c in CAPTURE_CHAINS])
@pytest.mark.parametrize("path", REQUEST_FRAMES, ids=[p.name for p in REQUEST_FRAMES])
def test_captured_request_answered_by_the_lazy_path_as_by_the_document_path(path: Path, specs: list[str]) -> None:
    lazy, eager, _ = both(path.read_bytes(), specs)
    assert proto_codec.decode_response(lazy) == proto_codec.decode_response(eager)
    assert lazy == eager


@pytest.mark.parametrize("path", REQUEST_FRAMES, ids=[p.name for p in REQUEST_FRAMES])
def test_captured_request_reencodes_unconverted_to_the_same_bytes(path: Path) -> None:
    raw = path.read_bytes()
    req = proto_codec.decode_request(raw)
    assert isinstance(req, DataRequest) and req.docs is None and req.raw is not None
    assert proto_codec.encode(req) == raw
    assert req.docs is None  # encoding did not convert them either


# ---- the pieces -------------------------------------------------------------------------------------


def _frame(*docs: Document, **fields: Any) -> bytes:
    return proto_codec.encode_request(DataRequest(request_id="r", exec_endpoint="/index", docs=list(docs), **fields))


def test_decode_request_leaves_documents_in_the_message_until_asked() -> None:
    req = proto_codec.decode_request(_frame(Document(text="a"), Document(id="x", tags={"k": 1.0})))
    assert isinstance(req, DataRequest)
    assert req.docs is None and [d.text for d in req.docs_proto] == ["a", ""]
    assert req == DataRequest(request_id="r", exec_endpoint="/index")  # raw is not part of the value
    docs = req.load_docs()
    assert docs == [Document(text="a"), Document(id="x", tags={"k": 1.0})]
    assert req.raw is None and req.docs_proto is None and req.load_docs() is docs


def test_requests_without_documents_are_read_as_before() -> None:
    none = proto_codec.decode_request(proto_codec.encode_request(DataRequest(request_id="r")))
    assert isinstance(none, DataRequest) and none.raw is None and none.docs is None
    blob = proto_codec.decode_request(proto_codec.encode_request(DataRequest(request_id="r", docs_bytes=b"\x01")))
    assert isinstance(blob, DataRequest) and blob.raw is None and blob.docs_bytes == b"\x01"
    empty = proto_codec.decode_request(proto_codec.encode_request(DataRequest(request_id="r", docs=[])))
    assert isinstance(empty, DataRequest) and empty.docs is None and len(empty.docs_proto) == 0
    assert empty.load_docs() == []


def test_doc_ids_are_given_in_protobuf_form() -> None:
    req = proto_codec.decode_request(_frame(Document(text="a"), Document(id="keep"), Document(id="")))
    assert isinstance(req, DataRequest)
    given_ids = iter(["n1", "n2", "n3"])
    req.fill_doc_ids(lambda: next(given_ids))
    # An empty id is no id in protobuf (and reads back as None), so it gets one too.
    assert [d.id for d in req.docs_proto] == ["n1", "keep", "n2"]
    assert req.docs is None


def test_echo_and_upper_chains_never_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pb: Any) -> Document:
        raise AssertionError("a document was converted")

    frame = _frame(Document(text="hi"), Document(id="d2"))
    monkeypatch.setattr(Document, "from_proto", classmethod(lambda cls, pb: refuse(pb)))
    monkeypatch.setattr(Document, "fill_proto", lambda self, pb: refuse(pb))
    for specs in (["echo"], ["upper"], ["sleep:0", "upper", "fail:/x"], ["embed:4", "upper"]):
        out, req = answer(frame, Chain.from_specs(specs), materialize=False)
        assert req.raw is not None
        assert jina_pb2.DataRequestProto.FromString(out).data.docs.docs[0].text == ("HI" if "upper" in specs else "hi")


def test_an_executor_that_needs_documents_gets_them_and_its_successors_too() -> None:
    seen: list[Any] = []

    class Spy(Executor):
        kind = "Spy"

        def process(self, req: DataRequest, params: dict[str, Any]) -> None:
            seen.append([(d.id, d.text) for d in req.docs or ()])

    out, req = answer(_frame(Document(text="a")), Chain([Spy("s"), executors.UpperExecutor("u")]), materialize=False)
    assert seen == [[("0123456789abcdef0000000000000001", "a")]]
    assert req.raw is None and req.docs is not None and req.docs[0].text == "A"
    assert proto_codec.decode_response(out).docs == req.docs


def test_only_the_built_ins_that_touch_documents_say_so() -> None:
    for kind in (executors.EchoExecutor, executors.SleepExecutor, executors.FailExecutor):
        assert not kind.uses_docs
    for kind in (executors.UpperExecutor, executors.EmbedExecutor, executors.RecordExecutor):
        assert kind.uses_docs and kind.proto_docs
    assert (Executor.uses_docs, Executor.proto_docs) == (True, False)  # a new Executor gets Documents


def test_arrays_are_marked_numpy_in_answers_only() -> None:
    bare = NdArray(struct.pack("<2f", 1.0, 2.0), (2,), "<f4")
    torch = NdArray(b"", (0,), "<f4", "torch")
    frame = _frame(Document(embedding=bare, tensor=torch), Document(tensor=bare))
    req = proto_codec.decode_request(frame)
    assert isinstance(req, DataRequest)
    assert proto_codec.encode_request(req) == frame  # a request is sent as it is
    back = proto_codec.decode_response(proto_codec.encode_response(req))
    assert back.docs is not None
    assert [(d.embedding and d.embedding.cls_name, d.tensor and d.tensor.cls_name) for d in back.docs] == [
        ("numpy", "torch"),
        (None, "numpy"),
    ]


def test_parameters_come_back_as_they_came_unless_replaced() -> None:
    params = {"b": [1.0, None, {"x": "y"}], "a": True}
    frame = _frame(Document(text="t"), parameters=params)
    req = proto_codec.decode_request(frame)
    assert isinstance(req, DataRequest) and req.parameters == params
    assert proto_codec.encode(req) == frame
    req.parameters = {"new": 1.0}
    assert proto_codec.decode(proto_codec.encode(req)).parameters == {"new": 1.0}
    req.parameters = None
    assert not jina_pb2.DataRequestProto.FromString(proto_codec.encode(req)).HasField("parameters")
    # None sent: the relay answers `parameters: {}` (`12 00`), as the gateway did in iv_bytes_index.
    req = proto_codec.decode_request(_frame(Document(text="t")))
    assert isinstance(req, DataRequest) and req.parameters is None
    _admit(req, b"")
    pb = jina_pb2.DataRequestProto.FromString(proto_codec.encode_response(req))
    assert pb.HasField("parameters") and len(pb.parameters.fields) == 0
    assert b"\x12\x00" in proto_codec.encode_response(req)


def test_header_fields_beyond_the_model_are_dropped_as_by_the_document_path() -> None:
    pb = jina_pb2.DataRequestProto.FromString(_frame(Document(text="t")))
    pb.header.timeout = 5
    frame = pb.SerializeToString()
    lazy, eager, _ = both(frame, ["echo"])
    assert lazy == eager
    assert not jina_pb2.DataRequestProto.FromString(lazy).header.HasField("timeout")


def test_documents_given_directly_win_over_the_message() -> None:
    req = proto_codec.decode_request(_frame(Document(text="old")))
    assert isinstance(req, DataRequest)
    req.docs = [Document(text="new")]
    assert proto_codec.decode(proto_codec.encode(req)).docs == [Document(text="new")]
    assert req.load_docs() == [Document(text="new")] and req.raw is None


def _sparse_frame() -> bytes:
    pb = jina_pb2.DataRequestProto()
    pb.header.request_id = "r"
    doc = pb.data.docs.docs.add()
    doc.text = "t"
    doc.embedding.sparse.shape.extend([4])
    return pb.SerializeToString()


def test_a_sparse_array_passes_through_when_no_executor_needs_documents() -> None:
    out, req = answer(_sparse_frame(), Chain.from_specs(["echo", "upper"]), materialize=False)
    assert not req.is_error
    pb = jina_pb2.DataRequestProto.FromString(out)
    assert pb.data.docs.docs[0].embedding.WhichOneof("content") == "sparse"
    assert pb.data.docs.docs[0].text == "T"


def test_a_sparse_array_fails_the_executor_that_needs_documents() -> None:
    out, req = answer(_sparse_frame(), Chain([TagReader("reader"), executors.EchoExecutor("after")]), materialize=False)
    assert req.is_error and req.status is not None and req.status.exception is not None
    assert (req.status.exception.name, req.status.exception.executor) == ("BadRequest", "TagReader")
    resp = jina_pb2.DataRequestProto.FromString(out)
    assert [r.executor for r in resp.routes] == ["gateway", "reader"]  # the request stopped there
    with pytest.raises(BadRequest):
        proto_codec.decode(out)  # the documents were sent back as they came


def test_routes_are_written_as_timestamp_from_nanoseconds_writes_them() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    for ns in (0, 1, 999_999_999, 1_795_728_119_246_844_123, -1, -1_500_000_000):
        ours = jina_pb2.DataRequestProto()
        proto_codec.envelope_to_proto(DataRequest(routes=[Route("g", ns, ns)]), ours)
        ts = Timestamp()
        ts.FromNanoseconds(ns)
        assert ours.routes[0].start_time == ts == ours.routes[0].end_time
        assert ours.routes[0].start_time.ToNanoseconds() == ns


# ---- the upstream path ------------------------------------------------------------------------------


async def _fake_gateway(ws: ServerConnection) -> None:
    """A docarray < 0.30 gateway in bytes mode: upper-cases texts, adds its routes, echoes the rest."""
    async for message in ws:
        if message == b"\x00":
            break
        pb = jina_pb2.DataRequestProto.FromString(message)  # type: ignore[arg-type]
        for d in pb.data.docs.docs:
            if d.text:
                d.text = d.text.upper()
        for name in ("gateway", "upper"):
            r = pb.routes.add()
            r.executor = name
            r.start_time.FromNanoseconds(1_000_000_000)
            r.end_time.FromNanoseconds(2_000_000_000)
        pb.header.target_executor = ""
        await ws.send(pb.SerializeToString(deterministic=True))


@contextlib.asynccontextmanager
async def _backend(mirror: bool = False) -> Any:
    async with serve(_fake_gateway, "127.0.0.1", 0, subprotocols=["bytes"], compression=None) as gw:  # type: ignore[list-item]
        url = f"ws://127.0.0.1:{next(iter(gw.sockets)).getsockname()[1]}"
        primary = UpstreamPool(UpstreamConfig(url=url, connections=1))
        shadow = UpstreamPool(UpstreamConfig(url=url, connections=1)) if mirror else None
        async with serving(UpstreamBackend(primary, shadow)) as backend:
            yield backend


def _admitted(frame: bytes) -> DataRequest:
    req = proto_codec.decode_request(frame)
    assert isinstance(req, DataRequest)
    _admit(req, frame)
    return req


def test_a_bytes_clients_documents_cross_a_bytes_upstream_unconverted(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _frame(Document(text="hi", tags={"k": "v"}), Document(id="d2", text="yo"), parameters={"p": 1.0})

    async def go() -> tuple[bytes, bytes]:
        async with _backend(mirror=True) as backend:
            lazy = _admitted(frame)
            with monkeypatch.context() as m:
                m.setattr(Document, "from_proto", classmethod(lambda cls, pb: pytest.fail("converted")))
                m.setattr(Document, "fill_proto", lambda self, pb: pytest.fail("converted"))
                await answered_by(backend, lazy)
                assert lazy.raw is not None and lazy.docs is None
                lazy_out = proto_codec.encode_response(lazy)
                for _ in range(100):  # the mirror's copy did not convert either
                    if backend.mirror_stats.ok:
                        break
                    await asyncio.sleep(0.01)
                assert backend.mirror_stats.ok == 1
            eager = _admitted(frame)
            eager.load_docs()
            eager.routes[0].start_ns = lazy.routes[0].start_ns
            await answered_by(backend, eager)
            assert eager.raw is None
            return lazy_out, proto_codec.encode_response(eager)

    lazy_out, eager_out = asyncio.run(go())
    resp = proto_codec.decode_response(lazy_out)
    assert [d.text for d in resp.docs or []] == ["HI", "YO"]
    assert resp.docs is not None and resp.docs[0].tags == {"k": "v"} and resp.parameters == {"p": 1.0}
    assert [r.executor for r in resp.routes] == ["gateway", "upstream", "upper"]
    assert lazy_out == eager_out


def test_a_json_upstream_gets_documents_from_a_bytes_client() -> None:
    # The json codec needs Documents: forwarding converts a bytes client's documents for it.
    async def go() -> DataRequest:
        async with _backend() as backend:
            pool = backend.primary
            pool.codec = json_codec
            pool.decode_answer = json_codec.decode_response
            req = _admitted(_frame(Document(text="hi")))
            doc_id = req.docs_proto[0].id
            sent: list[DataRequest] = []

            def capture(rid: str, out: DataRequest, done: Any) -> None:
                sent.append(out)
                done(DataRequest(request_id=rid, docs=[Document(text="back")]), None)

            pool.links[0].send = capture  # type: ignore[method-assign]
            await answered_by(backend, req)
            assert sent[0].raw is None and sent[0].docs == [Document(id=doc_id, text="hi")]
            return req

    req = asyncio.run(go())
    assert req.raw is None and req.docs == [Document(text="back")]
