"""The relay in front of a real Jina 3.34 Flow (`flowrelay serve --upstream ws://...`), end to end on loopback.

Each test starts `flowrelay serve` as a process and talks to it with plain `websockets` clients; behind it
runs a real Flow (`gateway -> upper -> sleeper`, tests/jina_peer.py). The peer's `UpperExec` writes
`tags.seen_by = "upper"`, which no built-in Executor does, so an answer carrying it came through the real
Flow. What is shown:

* json and bytes clients reach the Flow through the relay, whichever subprotocol the relay speaks upstream,
  and each client is answered in its own subprotocol;
* a json client reaches a docarray >= 0.30 Flow, whose gateway speaks only bytes (and drops a json client
  itself); with `--upstream-docarray v2` Documents cross both ways, as `DocProto` maps (json and bytes
  clients alike), without it they do not: see `test_documents_do_not_cross_to_a_docarray_v2_flow`;
* `flowrelay load --docarray v2` drives a docarray >= 0.30 Flow with documents;
* client-chosen request ids that collide across clients are made unique on the shared upstream sessions;
* routes: the relay's `gateway` entry, then `upstream` (the Flow's gateway), then the Flow's Executors;
* backpressure: with a slow Flow and a small `--prefetch`, the in-flight figure stays bounded and the relay
  stops admitting requests;
* the Flow killed mid-stream: every request in flight is answered with an error naming the cause, health
  is reported on /status and /dry_run, and the relay serves again once the Flow is back on its port;
* `--mirror`: each request is copied to a shadow (a second relay), whose answers never reach the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from jina_peer import RunningFlow, require_peer, run_flow
from relay_process import RelayProcess, http_get, run_relay, stop_process
from upstream_helpers import (
    LoadRun,
    RestartableFlow,
    bytes_request,
    json_request,
    read_answers,
    relay_status,
    wait_until,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.wire import DataRequest, Document, proto_codec, proto_v2_codec
from relay.wire.proto import jina_pb2, jina_v2_pb2

pytestmark = pytest.mark.jina

TIMEOUT_S = 60.0
HEX32 = re.compile(r"^[0-9a-f]{32}$")
FLOW_EXECUTORS = ["upper", "sleeper"]
CORRELATION_KEY = "flowrelay_upstream_rid"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


def executors(resp: DataRequest) -> list[str]:
    return [r.executor for r in resp.routes]


def assert_ok(resp: DataRequest) -> None:
    assert resp.status is None or not resp.status.is_error, f"error answer: {resp.status}"


@pytest.fixture(scope="module")
def relay_bytes_up(jina_flow: RunningFlow) -> Iterator[RelayProcess]:
    """A relay speaking bytes to the legacy Flow (the default)."""
    with run_relay("--upstream", jina_flow.url) as relay:
        yield relay


@pytest.fixture(scope="module")
def relay_json_up(jina_flow: RunningFlow) -> Iterator[RelayProcess]:
    """A relay speaking json to the legacy Flow (which speaks both)."""
    with run_relay("--upstream", jina_flow.url, "--upstream-subprotocol", "json") as relay:
        yield relay


@pytest.fixture(scope="module")
def relay_v2(jina_flow_v2: RunningFlow) -> Iterator[RelayProcess]:
    """A relay in front of the docarray >= 0.30 Flow (bytes only, documents as DocProto maps)."""
    with run_relay("--upstream", jina_flow_v2.url, "--upstream-docarray", "v2") as relay:
        yield relay


# ---- both subprotocols, both ways --------------------------------------------------------------------


async def _round_trip(url: str, client: str, n: int) -> tuple[str | None, list[DataRequest]]:
    async with connect(url, subprotocols=[client], max_size=None, open_timeout=10) as ws:
        for i in range(n):
            if client == "bytes":
                await ws.send(bytes_request(f"mine-{i}", f"doc {i}", i=i, note="kept"))
            else:
                await ws.send(json_request(f"doc {i}", i=i, note="kept"))
        return ws.subprotocol, await read_answers(ws, n, client)


@pytest.mark.parametrize("upstream", ["bytes", "json"])
@pytest.mark.parametrize("client", ["json", "bytes"])
def test_clients_of_either_subprotocol_reach_a_real_flow(request: pytest.FixtureRequest, upstream: str,
                                                         client: str) -> None:
    relay: RelayProcess = request.getfixturevalue(f"relay_{upstream}_up")
    n = 6
    negotiated, answers = run(_round_trip(relay.url, client, n))
    assert negotiated == client
    by_i = {int(a.parameters["i"]): a for a in answers}  # type: ignore[index]
    assert sorted(by_i) == list(range(n))
    for i, resp in by_i.items():
        assert_ok(resp)
        assert resp.parameters == {"i": i, "note": "kept"}, "the relay's correlation key must not leak out"
        (doc,) = resp.docs or []
        assert doc.text == f"DOC {i}"
        assert doc.tags.get("seen_by") == "upper", "processed by the real Flow's UpperExec"
        assert executors(resp) == ["gateway", "upstream", *FLOW_EXECUTORS]
        if client == "bytes":
            assert resp.request_id == f"mine-{i}"
        else:
            assert HEX32.match(resp.request_id)
    if client == "json":
        assert len({a.request_id for a in answers}) == n


# ---- a docarray >= 0.30 Flow: bytes only -------------------------------------------------------------


def test_a_json_client_reaches_a_bytes_only_v2_flow_through_the_relay(jina_flow_v2: RunningFlow,
                                                                      relay_v2: RelayProcess) -> None:
    frame = orjson.dumps({"data": [], "execEndpoint": "/index", "parameters": {"who": "browser"}}).decode()

    async def direct() -> ConnectionClosed | None:
        # The Flow's own gateway cannot serve a json client: it drops the connection.
        async with connect(jina_flow_v2.url, subprotocols=["json"], open_timeout=10) as ws:
            await ws.send(frame)
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed as closed:
                return closed
            return None

    async def through_relay() -> list[DataRequest]:
        async with connect(relay_v2.url, subprotocols=["json"], open_timeout=10) as ws:
            assert ws.subprotocol == "json"
            for _ in range(3):
                await ws.send(frame)
            return await read_answers(ws, 3, "json")

    closed = run(direct())
    assert closed is not None and closed.rcvd is None, "the v2 gateway drops a json client (1006)"
    for resp in run(through_relay()):
        assert_ok(resp)
        assert resp.parameters == {"who": "browser"}
        assert executors(resp) == ["gateway", "upstream", *FLOW_EXECUTORS]
        assert resp.docs in (None, [])
    up = relay_status(relay_v2)["upstream"]
    assert up["healthy"] and up["subprotocol"] == "bytes" and up["docarray"] == "v2"


def test_documents_do_not_cross_to_a_docarray_v2_flow() -> None:
    """Without `--upstream-docarray v2` (the default is v1), the relay writes `data.docs` as a DocumentArrayProto, whose
    DocumentProto starts with `string id = 1`. A docarray >= 0.30 gateway reads the same field as a
    DocListProto of DocProto (`map<string, NodeProto> data = 1`): the id's bytes are parsed as a map entry.
    For most ids (here `d1`: 0x64 is an end-group tag) that fails, and the gateway drops the connection. The
    relay must answer that request with an error naming the drop (never lose it), and serve document-less
    requests again afterwards.

    The Flow is this test's own: after that parse error the v2 gateway no longer stops on SIGTERM, so it
    is killed at the end."""
    with_doc = orjson.dumps({"data": [{"id": "d1", "text": "hello"}], "execEndpoint": "/index"}).decode()
    without = orjson.dumps({"data": [], "execEndpoint": "/index"}).decode()

    async def send(url: str, frame: str) -> DataRequest:
        async with connect(url, subprotocols=["json"], open_timeout=10) as ws:
            await ws.send(frame)
            (resp,) = await read_answers(ws, 1, "json")
            return resp

    with RestartableFlow(flavour="v2") as flow, run_relay("--upstream", flow.url) as relay:
        try:
            resp = run(send(relay.url, with_doc))
            assert resp.status is not None and resp.status.code == 1
            assert resp.status.exception is not None and resp.status.exception.name == "UpstreamError"
            assert flow.url in resp.status.description
            assert "1006" in resp.status.description, resp.status.description
            assert [(d.id, d.text) for d in resp.docs or []] == [("d1", "hello")], "the request comes back"
            assert flow.flow is not None
            output = flow.flow.output_tail
            wait_until(
                lambda: "Error parsing message with type 'jina.DataRequestProto'" in output(400),
                10,
                "the v2 gateway to log why it dropped the connection",
            )
            wait_until(lambda: relay_status(relay)["upstream"]["connected_links"] == 2, 15, "the links to reconnect")
            assert_ok(run(send(relay.url, without)))
        finally:
            flow.kill()


# An id whose bytes happen to parse as DocProto fields (0x61: a fixed64 field to skip, and so on): the
# docarray v1 encoding did not even fail on it, it lost the text. Kept as one of the ids that must cross.
PARSABLE_ID = "a0866dcc6e63570d0000000000000002"


@pytest.mark.parametrize("client", ["json", "bytes"])
def test_documents_round_trip_through_a_docarray_v2_flow(relay_v2: RelayProcess, client: str) -> None:
    """json and bytes (docarray v1) clients of the relay, a docarray >= 0.30 Flow behind it: the relay
    writes the documents as TextDoc `DocProto` maps, reads the Flow's answers back into our Document, and
    each client gets them in its own subprotocol. A document without an id gets one (from the relay, as
    from any gateway) and keeps it."""
    n = 3
    ids = ["d1", PARSABLE_ID, None]
    docs = [{"id": i, "text": f"hello {k}"} if i else {"text": f"hello {k}"} for k, i in enumerate(ids)]

    async def go() -> list[DataRequest]:
        async with connect(relay_v2.url, subprotocols=[client], open_timeout=10) as ws:
            assert ws.subprotocol == client
            for r in range(n):
                if client == "json":
                    frame = {"data": docs, "execEndpoint": "/index", "parameters": {"r": r}}
                    await ws.send(orjson.dumps(frame).decode())
                else:
                    req = DataRequest(request_id=f"mine-{r}", exec_endpoint="/index", parameters={"r": r},
                                      docs=[Document.from_json_dict(d) for d in docs])
                    await ws.send(proto_codec.encode_request(req))
            return await read_answers(ws, n, client)

    answers = run(go())
    assert sorted(int(a.parameters["r"]) for a in answers) == list(range(n))  # type: ignore[index]
    for resp in answers:
        assert_ok(resp)
        assert executors(resp) == ["gateway", "upstream", *FLOW_EXECUTORS]
        got = resp.docs or []
        assert [d.text for d in got] == ["HELLO 0", "HELLO 1", "HELLO 2"], "upper-cased by the real Flow"
        assert [d.id for d in got[:2]] == ["d1", PARSABLE_ID], "ids preserved"
        assert got[2].id is not None and HEX32.match(got[2].id), "an id was made for it"
        if client == "bytes":
            assert resp.request_id == f"mine-{int(resp.parameters['r'])}"  # type: ignore[index]


# A DataRequestProto with one TextDoc(id="d1", text="hello") on /index, as jina 3.34 with docarray 0.41
# serializes it (`DataRequest.to_bytes()` in the v2 peer venv).
V2_REQUEST = bytes.fromhex(
    "0a0f0a0576327265711a062f696e64657822490a470a450a070a0375726c12000a0e0a02696412080a0264316a02"
    "69640a0d0a09656d62656464696e6712000a0a0a0662797465735f12000a0f0a047465787412070a0568656c6c6f"
)


def test_our_codec_reads_a_docarray_v2_answer(jina_flow_v2: RunningFlow) -> None:
    ours = proto_v2_codec.encode_request(
        DataRequest(request_id="v2req", exec_endpoint="/index", docs=[Document(id="d1", text="hello")])
    )
    # jina's map entries are in hash order; ours are sorted by key: the same message, in canonical form
    assert ours == jina_v2_pb2.DataRequestProto.FromString(V2_REQUEST).SerializeToString(deterministic=True)

    async def go(frame: bytes) -> bytes:
        async with connect(jina_flow_v2.url, subprotocols=["bytes"], open_timeout=10) as ws:
            await ws.send(frame)
            return await asyncio.wait_for(ws.recv(), 10)  # type: ignore[return-value]

    for frame in (V2_REQUEST, ours):
        resp = proto_v2_codec.decode_response(run(go(frame)))
        assert resp.request_id == "v2req"
        assert [(d.id, d.text) for d in resp.docs or []] == [("d1", "HELLO")]
        assert [r.executor for r in resp.routes] == ["gateway", *FLOW_EXECUTORS]


def test_load_drives_a_docarray_v2_flow_with_documents(jina_flow_v2: RunningFlow, tmp_path: Path) -> None:
    rate, duration_s, per_request = 40, 2, 3
    with LoadRun(jina_flow_v2.url, tmp_path / "load", "--docarray", "v2", "--rate", str(rate),
                 "--duration", f"{duration_s}s", "--docs-per-request", str(per_request), "--endpoint", "/index",
                 "--embedding-dim", "4") as load:
        summary = load.finish(60)
    req = summary["requests"]
    assert req["sent"] == rate * duration_s
    assert req["ok"] == req["sent"], summary["errors"]
    assert summary["docs"] == {"sent": per_request * req["sent"], "received": per_request * req["sent"]}
    hops = summary["hops"]
    assert set(hops) == {"gateway", "upper", "sleeper", "outside_gateway"}
    assert all(h["count"] == req["ok"] for h in hops.values()), hops


def test_a_grpc_docarray_v2_flow_through_the_relay_and_under_load(tmp_path: Path) -> None:
    """Jina's default protocol is gRPC: the same v2 documents cross a gRPC-only docarray >= 0.30 gateway,
    both behind the relay (`--upstream grpc://... --upstream-docarray v2`) and under `flowrelay load`."""
    require_peer("v2")
    with contextlib.ExitStack() as stack:
        flow = stack.enter_context(run_flow(flavour="v2", protocol="grpc", sleep_ms=2.0))
        url = f"grpc://{flow.host}:{flow.port}"
        relay = stack.enter_context(run_relay("--upstream", url, "--upstream-docarray", "v2"))

        async def go() -> list[DataRequest]:
            async with connect(relay.url, subprotocols=["json"], open_timeout=10) as ws:
                await ws.send(orjson.dumps({"data": [{"id": "g1", "text": "grpc hello"}, {"text": "x"}],
                                            "execEndpoint": "/index"}).decode())
                return await read_answers(ws, 1, "json")

        (resp,) = run(go())
        assert_ok(resp)
        assert executors(resp) == ["gateway", "upstream", *FLOW_EXECUTORS]
        assert [d.text for d in resp.docs or []] == ["GRPC HELLO", "X"]
        assert (resp.docs or [])[0].id == "g1"
        assert relay_status(relay)["upstream"]["docarray"] == "v2"

        with LoadRun(url, tmp_path / "load", "--docarray", "v2", "--rate", "30", "--duration", "1s",
                     "--docs-per-request", "2", "--endpoint", "/index") as load:
            summary = load.finish(60)
        req = summary["requests"]
        assert req["sent"] == 30 and req["ok"] == req["sent"], summary["errors"]
        assert summary["docs"]["received"] == 2 * req["sent"]
        assert set(summary["hops"]) == {"gateway", "upper", "sleeper", "outside_gateway"}


# ---- request ids on the shared upstream sessions ----------------------------------------------------


def test_identical_client_ids_are_made_unique_upstream(relay_bytes_up: RelayProcess) -> None:
    """Many bytes clients, each choosing the same request ids, all in flight at once over the relay's two
    upstream sessions (a Jina gateway drops a session on a duplicate id in flight): everyone is answered,
    with its own ids and its own documents."""
    n_clients, per_client = 16, 8
    ids = [f"same-{k}" for k in range(per_client)]

    async def client(c: int) -> list[DataRequest]:
        async with connect(relay_bytes_up.url, subprotocols=["bytes"], open_timeout=10) as ws:
            for k, rid in enumerate(ids):
                await ws.send(bytes_request(rid, f"c{c} r{k}", sleep_ms=3))
            return await read_answers(ws, per_client, "bytes")

    async def everyone() -> list[list[DataRequest]]:
        return await asyncio.gather(*(client(c) for c in range(n_clients)))

    before = relay_status(relay_bytes_up)["upstream"]
    results = run(everyone())
    for c, answers in enumerate(results):
        assert sorted(a.request_id for a in answers) == sorted(ids)
        for a in answers:
            assert_ok(a)
            k = ids.index(a.request_id)
            assert [d.text for d in a.docs or []] == [f"C{c} R{k}"], "an answer went to the wrong client"
    after = relay_status(relay_bytes_up)["upstream"]
    assert after["connected_links"] == 2
    assert after["last_error"] == before["last_error"], "no upstream session was dropped"


# ---- routes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["json", "bytes"])
def test_routes_show_the_relay_the_upstream_gateway_then_each_executor(relay_bytes_up: RelayProcess,
                                                                       client: str) -> None:
    _, answers = run(_round_trip(relay_bytes_up.url, client, 3))
    for resp in answers:
        assert executors(resp) == ["gateway", "upstream", *FLOW_EXECUTORS]
        gateway, upstream, upper, sleeper = resp.routes
        for r in resp.routes:
            assert r.start_ns is not None and r.end_ns is not None and r.start_ns <= r.end_ns, r
        # Same machine, same wall clock: each hop nests inside the one that called it.
        assert gateway.start_ns <= upstream.start_ns  # type: ignore[operator]
        assert upstream.end_ns <= gateway.end_ns  # type: ignore[operator]
        assert gateway.end_ns - gateway.start_ns >= upstream.end_ns - upstream.start_ns  # type: ignore[operator]
        assert upstream.start_ns <= upper.start_ns and sleeper.end_ns <= upstream.end_ns  # type: ignore[operator]


# ---- backpressure ------------------------------------------------------------------------------------


def test_slow_flow_and_small_prefetch_keep_in_flight_bounded(jina_flow: RunningFlow) -> None:
    """4 clients each pipeline 12 requests at a Flow that takes 40 ms per request, one at a time. With
    --prefetch 4 and one upstream session, at most 4 requests are upstream at once, and the relay admits at
    most 4 per client: the rest wait in the clients' sockets, unread."""
    prefetch, clients, per_client = 4, 4, 12
    total = clients * per_client
    samples: list[tuple[int, int]] = []  # (upstream in flight, requests admitted)
    stop = threading.Event()

    def sampler(port: int) -> None:
        while not stop.is_set():
            body = relay_status(port)
            samples.append((body["upstream"]["in_flight"], int(body["envs"]["requests_total"])))
            stop.wait(0.03)

    async def client(url: str, c: int, sent: asyncio.Event) -> list[DataRequest]:
        async with connect(url, subprotocols=["bytes"], open_timeout=10) as ws:
            for k in range(per_client):
                await ws.send(bytes_request(f"c{c}-{k}", "slow", sleep_ms=40))
            sent.set()
            return await read_answers(ws, per_client, "bytes", timeout_s=50)

    async def go(relay: RelayProcess) -> tuple[int, list[list[DataRequest]]]:
        events = [asyncio.Event() for _ in range(clients)]
        tasks = [asyncio.create_task(client(relay.url, c, events[c])) for c in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 20)
        admitted_when_all_sent = int((await asyncio.to_thread(relay_status, relay))["envs"]["requests_total"])
        return admitted_when_all_sent, await asyncio.gather(*tasks)

    with run_relay("--upstream", jina_flow.url, "--prefetch", str(prefetch), "--upstream-connections", "1") as relay:
        thread = threading.Thread(target=sampler, args=(relay.port,), daemon=True)
        thread.start()
        try:
            admitted_when_all_sent, results = run(go(relay))
        finally:
            stop.set()
            thread.join(10)
        final = relay_status(relay)

    assert sum(len(r) for r in results) == total
    for answers in results:
        for a in answers:
            assert_ok(a)
    in_flight = [s[0] for s in samples]
    assert max(in_flight) == prefetch, f"the upstream session carries at most --prefetch requests: {in_flight}"
    assert admitted_when_all_sent <= clients * prefetch < total, (
        f"every request was already sent, yet the relay must have admitted at most {clients * prefetch}, "
        f"not {admitted_when_all_sent}"
    )
    admitted = [s[1] for s in samples]
    assert admitted == sorted(admitted) and admitted[0] < total, "admissions trickle in as answers go out"
    assert int(final["envs"]["requests_total"]) == total
    assert final["upstream"]["in_flight"] == 0


# ---- the Flow dies, and comes back --------------------------------------------------------------------


def _ws_dry_run(url: str, mode: str) -> int:
    async def go() -> int:
        # The relay answers a /dry_run connection with one status frame, then closes 1000.
        async with connect(url + "/dry_run", subprotocols=[mode], open_timeout=10) as ws:
            frame = await asyncio.wait_for(ws.recv(), 20)
        if mode == "bytes":
            pb = jina_pb2.StatusProto()
            pb.ParseFromString(frame)  # type: ignore[arg-type]
            return int(pb.code)
        return int(orjson.loads(frame).get("code", 0))

    return run(go())


def _http_dry_run(port: int) -> dict[str, Any]:
    code, body = http_get(port, "/dry_run")
    assert code == 200
    return body


def test_flow_killed_mid_stream_every_request_is_answered_then_the_relay_recovers() -> None:
    per_client = 15

    async def stream(url: str, flow: RestartableFlow) -> dict[str, list[DataRequest]]:
        async def client(mode: str, killed: asyncio.Event) -> list[DataRequest]:
            async with connect(url, subprotocols=[mode], open_timeout=10) as ws:
                for k in range(per_client):
                    if mode == "bytes":
                        await ws.send(bytes_request(f"b{k}", f"{mode} {k}", sleep_ms=100))
                    else:
                        await ws.send(json_request(f"{mode} {k}", k=k, sleep_ms=100))
                first = await read_answers(ws, 1, mode)
                killed.set()  # one answer is back: the Flow is mid-stream
                return first + await read_answers(ws, per_client - 1, mode, timeout_s=40)

        first_back = asyncio.Event()
        tasks = {m: asyncio.create_task(client(m, first_back)) for m in ("json", "bytes")}
        await asyncio.wait_for(first_back.wait(), 20)
        await asyncio.to_thread(flow.kill)
        return {m: await t for m, t in tasks.items()}

    async def one(url: str, mode: str) -> DataRequest:
        async with connect(url, subprotocols=[mode], open_timeout=10) as ws:
            await ws.send(bytes_request("after", "again") if mode == "bytes" else json_request("again"))
            (resp,) = await read_answers(ws, 1, mode)
            return resp

    with RestartableFlow() as flow, run_relay("--upstream", flow.url) as relay:
        assert relay_status(relay)["upstream"]["healthy"]
        answers = run(stream(relay.url, flow))

        failed = 0
        for mode, got in answers.items():
            assert len(got) == per_client, f"{mode}: every request is answered"
            if mode == "bytes":
                assert sorted(a.request_id for a in got) == sorted(f"b{k}" for k in range(per_client))
            for a in got:
                if a.status is not None and a.status.is_error:
                    failed += 1
                    assert a.status.code == 1
                    assert a.status.exception is not None and a.status.exception.name == "UpstreamError"
                    assert flow.url in a.status.description
                    assert "1006" in a.status.description or "unavailable" in a.status.description
                else:
                    assert [d.tags.get("seen_by") for d in a.docs or []] == ["upper"]
        assert 0 < failed < 2 * per_client, "the Flow died mid-stream: some answers ok, the rest errors"

        # While the Flow is down: health is reported, and requests are refused at once with the cause.
        down = wait_until(lambda: (s := relay_status(relay))["upstream"]["connected_links"] == 0 and s, 10,
                          "the relay to see the Flow gone")
        assert down["upstream"]["healthy"] is False
        assert flow.url in down["upstream"]["last_error"]
        dry = _http_dry_run(relay.port)
        assert dry["code"] == 1 and flow.url in dry["description"]
        assert _ws_dry_run(relay.url, "json") == 1
        assert _ws_dry_run(relay.url, "bytes") == 1
        refused = run(one(relay.url, "json"))
        assert refused.status is not None and refused.status.code == 1
        assert "unavailable" in refused.status.description

        # The Flow comes back on the same port: the relay reconnects by itself.
        flow.start()
        up = wait_until(lambda: (s := relay_status(relay))["upstream"]["healthy"] and s, 30,
                        "the relay to reconnect to the restarted Flow")
        assert up["upstream"]["recoveries_s"], "the time to recover is recorded"
        print(f"\nupstream recovery (first failure to service again): {up['upstream']['recoveries_s'][-1]} s")
        for mode in ("json", "bytes"):
            resp = run(one(relay.url, mode))
            assert_ok(resp)
            assert [d.text for d in resp.docs or []] == ["AGAIN"]
        assert _http_dry_run(relay.port)["code"] == 0
        assert _ws_dry_run(relay.url, "json") == 0
        assert _ws_dry_run(relay.url, "bytes") == 0
        assert relay.proc.poll() is None, "the relay itself was never restarted"


# ---- mirroring ---------------------------------------------------------------------------------------


def test_mirror_copies_each_request_to_a_shadow_and_answers_only_from_the_primary(jina_flow: RunningFlow) -> None:
    n_json, n_bytes = 20, 10
    total = n_json + n_bytes

    async def send(url: str, n_json: int, n_bytes: int) -> list[DataRequest]:
        out: list[DataRequest] = []
        for mode, n in (("json", n_json), ("bytes", n_bytes)):
            if n == 0:
                continue
            async with connect(url, subprotocols=[mode], open_timeout=10) as ws:
                for k in range(n):
                    await ws.send(bytes_request(f"m{k}", f"m {k}") if mode == "bytes" else json_request(f"m {k}"))
                out += await read_answers(ws, n, mode)
        return out

    def mirror(relay: RelayProcess) -> dict[str, Any]:
        return relay_status(relay)["mirror"]

    with run_relay("-e", "shadowecho=echo") as shadow, \
            run_relay("--upstream", jina_flow.url, "--mirror", shadow.url) as primary:
        wait_until(lambda: mirror(primary)["healthy"], 10, "the mirror links")
        answers = run(send(primary.url, n_json, n_bytes))
        assert len(answers) == total
        for a in answers:
            assert_ok(a)
            assert executors(a) == ["gateway", "upstream", *FLOW_EXECUTORS], "only the primary's answer"
            (doc,) = a.docs or []
            assert doc.text is not None and doc.text.startswith("M "), "upper-cased by the Flow, not echoed"
        wait_until(lambda: int(relay_status(shadow)["envs"]["requests_total"]) >= total, 15,
                   "the shadow to receive every copy")
        m = wait_until(lambda: (s := mirror(primary))["ok"] >= total and s, 15, "the mirror's answers")
        assert int(relay_status(shadow)["envs"]["requests_total"]) == total, "exactly one copy per request"
        assert (m["sent"], m["ok"], m["failed"]) == (total, total, 0)

        # The shadow goes away: clients do not notice, the mirror's failures are counted.
        stop_process(shadow.proc)
        answers = run(send(primary.url, 5, 0))
        assert len(answers) == 5
        for a in answers:
            assert_ok(a)
        m = wait_until(lambda: (s := mirror(primary))["failed"] >= 5 and s, 15, "the mirror's failures")
        assert m["sent"] == total + 5 and m["ok"] == total
        assert m["healthy"] is False


# ---- arrays reach a docarray < 0.30 Flow's Executors ------------------------------------------------


def _post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """POST /post on the relay (no proxy); the parsed answer."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://127.0.0.1:{port}/post", data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with opener.open(req, timeout=TIMEOUT_S) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("door", ["websocket", "http"])
def test_arrays_sent_as_json_reach_a_legacy_flows_executors(relay_bytes_up: RelayProcess, door: str) -> None:
    # docarray < 0.30 reads an array without `cls_name` as None: the Executor would hold none, and its answer
    # (the documents it held, serialized again) would have none. The relay marks them "numpy", as a Jina
    # client does. `/vectors` goes to UpperExec's default handler, which writes a tag on each document.
    docs = [{"id": "a1", "text": "vec", "embedding": [1.0, 2.0, 3.0]}, {"id": "a2", "tensor": [[0.5, 1.5]]}]
    body = {"data": docs, "execEndpoint": "/vectors"}
    if door == "websocket":
        async def go() -> DataRequest:
            async with connect(relay_bytes_up.url, subprotocols=["json"], open_timeout=10) as ws:  # type: ignore[list-item]
                await ws.send(orjson.dumps(body).decode())
                (resp,) = await read_answers(ws, 1, "json")
                return resp

        resp = run(go())
        assert_ok(resp)
        got = [d.to_json_dict() for d in resp.docs or []]
    else:
        got = _post(relay_bytes_up.port, body)["data"]
    assert [d["tags"].get("default_endpoint") for d in got] == [True, True], "the Executor held these documents"
    assert got[0]["embedding"] == [1.0, 2.0, 3.0]
    assert got[1]["tensor"] == [[0.5, 1.5]]
