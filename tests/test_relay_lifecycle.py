"""One request lifecycle for every door: a failure anywhere in the relay is an error answer, never a lost request.

Against an in-process relay with its WebSocket (json and bytes), HTTP and gRPC doors, built as `flowrelay serve`
builds it, with Executors or backends of the tests' own that fail where nothing built in would:

* an answer that no encoder can write (an Executor leaves an unencodable value in it), from an Executor that
  runs inline and from one that awaits (whose request has a task of its own): the client gets an error status
  naming the cause, the rest of the connection is served, end of stream closes 1000 at once, and no request
  stays in flight (Prometheus' gauge comes back to 0). Before, the answer was lost and the connection waited
  for it until the drain timeout;
* a dry run that fails in the relay (a backend that raises; an upstream that answers its dry run with
  garbage): every door answers an error status, and the WebSocket `/dry_run` session is closed. Before, the
  probe's exception was never retrieved and the client's socket stayed open;
* a plain HTTP client that leaves before its answer: the task answering it ends with it, and the request is
  still finished (counted, not in flight) when the backend answers later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from metrics_helpers import scrape, value
from relay_process import LOOPBACK, exchange, http_get, relay_in_process, ws_url
from upstream_helpers import bytes_request, decode_answer, json_request
from websockets.asyncio.server import ServerConnection, serve

from relay.backend import Respond
from relay.executors import Chain, Executor, UpperExecutor
from relay.metrics import RelayMetrics
from relay.server import RelayServer
from relay.upstream.backend import UpstreamBackend
from relay.upstream.pool import UpstreamConfig, UpstreamPool
from relay.wire import DataRequest, proto_codec
from relay.wire.proto import jina_pb2

TIMEOUT_S = 20.0
ENCODING_FAILED = "encoding the answer: "


class Spoiler(Executor):
    """Leaves in the answer what no encoder can write, when the request asks (`parameters.spoil`)."""

    kind = "Spoiler"
    uses_docs = False

    def process(self, req: DataRequest, params: dict[str, Any]) -> None:
        if params.get("spoil"):
            req.parameters = {"spoiled": object()}


class AwaitingSpoiler(Spoiler):
    """The same, after awaiting: its requests are answered from a task of their own."""

    kind = "AwaitingSpoiler"
    is_async = True

    async def process_async(self, req: DataRequest, params: dict[str, Any]) -> None:
        await asyncio.sleep(0.001)
        self.process(req, params)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S * 3))


def assert_encoding_failed(req: DataRequest) -> None:
    assert req.status is not None and req.status.is_error, req
    assert ENCODING_FAILED in req.status.description
    assert req.status.exception is not None and req.status.exception.executor == "gateway"


def assert_upper_cased(req: DataRequest, text: str) -> None:
    assert req.status is None or not req.status.is_error, req.status
    assert [d.text for d in req.docs or []] == [text.upper()]


async def grpc_unary(relay: RelayServer, method: str, payload: bytes) -> bytes:
    assert relay.grpc is not None
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{relay.grpc.port}") as channel:
        return await channel.unary_unary(method)(payload, timeout=TIMEOUT_S)  # type: ignore[no-any-return]


async def grpc_stream(relay: RelayServer, frames: list[bytes]) -> list[bytes]:
    assert relay.grpc is not None

    async def requests() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{relay.grpc.port}") as channel:
        call = channel.stream_stream("/jina.JinaRPC/Call")(requests(), timeout=TIMEOUT_S)
        return [answer async for answer in call]  # type: ignore[misc]


async def http_post(port: int, body: dict[str, Any]) -> tuple[int, Any]:
    def post() -> tuple[int, Any]:
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(f"http://{LOOPBACK}:{port}/post", data=orjson.dumps(body), method="POST",
                                     headers={"content-type": "application/json"})
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            return resp.status, orjson.loads(resp.read())

    return await asyncio.to_thread(post)


# ---- an answer that cannot be encoded -------------------------------------------------------------------


@pytest.mark.parametrize("spoiler", [Spoiler, AwaitingSpoiler], ids=["inline", "awaiting"])
def test_an_answer_that_cannot_be_encoded_is_an_error_answer_on_every_door(spoiler: type[Spoiler]) -> None:
    async def go() -> None:
        metrics = RelayMetrics()
        backend = Chain([spoiler("spoiler"), UpperExecutor("upper")])
        async with relay_in_process(backend=backend, metrics=metrics, grpc=True) as relay:
            url = ws_url(relay)
            # WebSocket, json: the spoiled answer, the next one, then end of stream closes 1000.
            ex = await exchange(url, [json_request("bad", spoil=True), json_request("good"), "{}"])
            assert ex.close_code == 1000
            spoiled, good = (decode_answer(f, "json") for f in ex.frames)
            assert_encoding_failed(spoiled)
            assert_upper_cased(good, "good")
            # WebSocket, bytes: the same, the answers matched by the client's ids.
            frames = [bytes_request("b1", "bad", spoil=True), bytes_request("b2", "good"), b"\x00"]
            ex = await exchange(url, frames, subprotocols=("bytes",))
            assert ex.close_code == 1000
            answers = {a.request_id: a for a in (decode_answer(f, "bytes") for f in ex.frames)}
            assert_encoding_failed(answers["b1"])
            assert_upper_cased(answers["b2"], "good")
            # HTTP: Jina's shape, an error status with a 200.
            status, body = await http_post(relay.port, {"data": [{"text": "bad"}], "parameters": {"spoil": True}})
            assert status == 200 and body["header"]["status"]["code"] == 1
            assert ENCODING_FAILED in body["header"]["status"]["description"]
            # gRPC: one call, and a stream of two.
            single = await grpc_unary(relay, "/jina.JinaSingleDataRequestRPC/process_single_data",
                                      bytes_request("g1", "bad", spoil=True))
            assert_encoding_failed(proto_codec.decode_response(single))
            streamed = await grpc_stream(relay, [bytes_request("g2", "bad", spoil=True), bytes_request("g3", "ok")])
            answers = {a.request_id: a for a in map(proto_codec.decode_response, streamed)}
            assert_encoding_failed(answers["g2"])
            assert_upper_cased(answers["g3"], "ok")
            # Nothing is left in flight, and every request counted.
            _, samples = await asyncio.to_thread(scrape, relay.port)
            assert value(samples, "flowrelay_relay_requests_in_flight") == 0
            assert value(samples, "flowrelay_relay_requests_total", endpoint="/index", outcome="error") == 4
            assert value(samples, "flowrelay_relay_requests_total", endpoint="/", outcome="error") == 1  # HTTP's
            assert value(samples, "flowrelay_relay_requests_total", endpoint="/index", outcome="ok") == 3

    run(go())


# ---- a dry run that fails in the relay -----------------------------------------------------------------


class BrokenDryRun(Chain):
    async def dry_run(self) -> Any:
        raise RuntimeError("the dry run broke")


async def _garbage_dry_run(ws: ServerConnection) -> None:
    """An upstream gateway that answers its `/dry_run` with a frame that is no StatusProto (and echoes requests)."""
    if ws.request is not None and ws.request.path == "/dry_run":
        await ws.send(b"\xff\xff\xff\xff")
        return
    async for message in ws:
        await ws.send(message)


@contextlib.asynccontextmanager
async def upstream_with_a_garbage_dry_run() -> AsyncIterator[UpstreamBackend]:
    async with serve(_garbage_dry_run, LOOPBACK, 0, subprotocols=["bytes"], compression=None) as gw:  # type: ignore[list-item]
        url = f"ws://{LOOPBACK}:{next(iter(gw.sockets)).getsockname()[1]}"
        yield UpstreamBackend(UpstreamPool(UpstreamConfig(url=url, connections=1)))


@pytest.mark.parametrize("cause", ["backend raises", "upstream answers garbage"])
def test_a_dry_run_that_fails_in_the_relay_is_answered_on_every_door(cause: str) -> None:
    expected = "the dry run broke" if cause == "backend raises" else "DecodeError"

    async def go() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if cause == "backend raises":
                backend: Any = BrokenDryRun.from_specs(["upper"])
            else:
                backend = await stack.enter_async_context(upstream_with_a_garbage_dry_run())
            relay = await stack.enter_async_context(relay_in_process(backend=backend, grpc=True))
            for mode in ("json", "bytes"):
                ex = await exchange(ws_url(relay, "/dry_run"), [], subprotocols=(mode,))
                assert ex.close_code == 1000, mode  # the session is closed once answered
                (frame,) = ex.frames
                if mode == "bytes":
                    status = proto_codec.from_status_proto(jina_pb2.StatusProto.FromString(frame))  # type: ignore[arg-type]
                    code, description = status.code, status.description
                else:
                    status_json = orjson.loads(frame)
                    code, description = status_json.get("code"), status_json.get("description", "")
                assert code == 1 and expected in description, (mode, frame)
            code, body = await asyncio.to_thread(http_get, relay.port, "/dry_run")
            assert code == 200 and body["code"] == 1 and expected in body["description"]
            answer = await grpc_unary(relay, "/jina.JinaGatewayDryRunRPC/dry_run", b"")
            status = proto_codec.from_status_proto(jina_pb2.StatusProto.FromString(answer))
            assert status.is_error and expected in status.description
            # The relay goes on serving.
            ex = await exchange(ws_url(relay), [json_request("still here"), "{}"])
            assert ex.close_code == 1000 and len(ex.frames) == 1

    run(go())


# ---- a plain HTTP client that leaves --------------------------------------------------------------------


class HeldBackend(Chain):
    """Answers nothing until the test says so."""

    def __init__(self) -> None:
        super().__init__([])
        self.held: list[tuple[DataRequest, Respond]] = []

    def submit(self, req: DataRequest, respond: Respond) -> None:
        self.held.append((req, respond))


async def _until(predicate: Any, what: str) -> None:
    for _ in range(int(TIMEOUT_S / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_http_client_that_leaves_takes_its_task_with_it() -> None:
    async def go() -> None:
        backend = HeldBackend()
        async with relay_in_process(backend=backend) as relay:
            gateway = relay.gateway
            body = orjson.dumps({"data": [{"text": "wait"}]})
            head = f"POST /post HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            client = socket.create_connection((LOOPBACK, relay.port), timeout=TIMEOUT_S)
            client.sendall(head.encode() + b"\r\n\r\n" + body)
            await _until(lambda: backend.held, "the request to reach the backend")
            assert gateway.tasks_running == 1 and gateway.stats.in_flight == 1
            client.close()
            await _until(lambda: gateway.tasks_running == 0, "the task of a client that left to end")
            # The backend answers later: the request is finished, with nobody to send it to.
            req, respond = backend.held.pop()
            respond(req)
            assert gateway.stats.in_flight == 0 and gateway.stats.requests_total == 1

    run(go())
