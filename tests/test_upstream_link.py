"""The upstream links against small stand-in gateways (no Jina needed): deadlines, a refused handshake, a
dropped session, backpressure when every link is full, answers matched by id out of order; and the pool's life in
a task group (`serve`): started once its links are up, its links closed on the way out, and a failing sweep ending
it with the error named."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import anyio
import grpc
import pytest
from backend_helpers import answer, serving
from relay_process import run_relay
from websockets.asyncio.server import ServerConnection, serve

from relay.common.grpc_channel import ENDPOINT_DISCOVERY
from relay.common.loop import TaskFailed, task_group
from relay.upstream.backend import UpstreamBackend
from relay.upstream.pool import UpstreamConfig, UpstreamError, UpstreamPool
from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest, Route, now_ns
from relay.wire.proto import jina_pb2

Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def gateway(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, subprotocols=["bytes"], compression=None, **kwargs) as server:  # type: ignore[list-item]
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


def answer_of(message: bytes) -> bytes:
    """What a gateway answers: the request with its texts upper-cased and its routes."""
    pb = jina_pb2.DataRequestProto.FromString(message)
    for d in pb.data.docs.docs:
        d.text = d.text.upper()
    for name in ("gateway", "upper"):
        r = pb.routes.add()
        r.executor = name
        r.start_time.FromNanoseconds(1_000_000_000)
        r.end_time.FromNanoseconds(2_000_000_000)
    return pb.SerializeToString()


def request(text: str) -> DataRequest:
    req = proto_codec.decode_request(proto_codec.encode(DataRequest(request_id="c", exec_endpoint="/",
                                                                    docs=[Document(id="d", text=text)])))
    assert isinstance(req, DataRequest)
    req.routes = [Route("gateway", now_ns())]
    req.parameters = {}
    return req


def backend_for(url: str, **cfg: Any) -> contextlib.AbstractAsyncContextManager[UpstreamBackend]:
    return serving(UpstreamBackend(UpstreamPool(UpstreamConfig(url=url, **cfg))))


def test_a_request_the_upstream_never_answers_fails_with_the_deadline_and_the_link_serves_on() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            pb = jina_pb2.DataRequestProto.FromString(message)  # type: ignore[arg-type]
            if pb.data.docs.docs[0].text != "ignore me":
                await ws.send(answer_of(message))  # type: ignore[arg-type]

    async def go() -> tuple[DataRequest, DataRequest, dict[str, Any]]:
        async with gateway(handler) as url, backend_for(url, connections=1, request_timeout_s=0.3) as backend:
            lost, kept = request("ignore me"), request("hi")
            await asyncio.wait_for(asyncio.gather(answer(backend, lost), answer(backend, kept)), 5)
            return lost, kept, backend.status()

    lost, kept, status = asyncio.run(go())
    assert lost.status is not None and lost.status.is_error
    assert "did not answer within 0.3 s" in lost.status.description
    assert kept.status is None or not kept.status.is_error
    assert [d.text for d in kept.load_docs() or []] == ["HI"]
    assert [r.executor for r in kept.routes] == ["gateway", "upstream", "upper"]
    assert status["upstream"]["healthy"] and status["upstream"]["in_flight"] == 0


def test_a_refused_handshake_is_named_in_the_status_and_requests_fail_at_once() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    def refuse(conn: ServerConnection, _request: Any) -> Any:
        return conn.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def go() -> tuple[dict[str, Any], DataRequest]:
        async with gateway(handler, process_request=refuse) as url, backend_for(url, connections=2) as backend:
            req = request("hi")
            await asyncio.wait_for(answer(backend, req), 5)
            return backend.status(), req

    status, req = asyncio.run(go())
    assert not status["upstream"]["healthy"]
    assert "refused the handshake: HTTP 403" in status["upstream"]["last_error"]
    assert req.status is not None and "unavailable" in req.status.description


def test_requests_in_flight_when_the_upstream_closes_are_answered_with_its_close_code() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.recv()
        await ws.close(1011, "flow crashed")

    async def go() -> list[DataRequest]:
        async with gateway(handler) as url, backend_for(url, connections=1) as backend:
            reqs = [request("a"), request("b")]
            await asyncio.wait_for(asyncio.gather(*(answer(backend, r) for r in reqs)), 5)
            return reqs

    for req in asyncio.run(go()):
        assert req.status is not None and req.status.is_error
        assert "close 1011: flow crashed" in req.status.description


def test_when_every_link_is_full_requests_wait_then_go_in_order_and_answers_match_by_id() -> None:
    held: list[bytes] = []
    release = asyncio.Event()
    seen = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal seen
        async for message in ws:
            seen += 1
            held.append(message)  # type: ignore[arg-type]
            if len(held) == 2:
                await release.wait()
                # Out of order: the second first.
                for m in reversed(held):
                    await ws.send(answer_of(m))
                held.clear()

    async def go() -> tuple[int, list[DataRequest], int]:
        async with gateway(handler) as url, backend_for(url, connections=1, max_inflight=2) as backend:
            reqs = [request(t) for t in ("one", "two", "three", "four")]
            answered: list[DataRequest] = []
            for r in reqs:
                backend.submit(r, answered.append)
            await asyncio.sleep(0.3)
            seen_while_full = seen
            release.set()
            for _ in range(100):
                if len(answered) == len(reqs):
                    break
                await asyncio.sleep(0.05)
            return seen_while_full, reqs, len(answered)

    seen_while_full, reqs, n_answered = asyncio.run(go())
    assert seen_while_full == 2, "the link carries at most max_inflight requests"
    assert n_answered == 4
    for req, text in zip(reqs, ("ONE", "TWO", "THREE", "FOUR"), strict=True):
        assert [d.text for d in req.load_docs() or []] == [text]
        assert req.request_id == "c"


def test_forward_raises_the_cause_when_no_link_is_up() -> None:
    async def go() -> str:
        pool = UpstreamPool(UpstreamConfig(url="ws://127.0.0.1:9", connections=1, connect_timeout_s=0.5))
        async with anyio.create_task_group() as tg:
            await tg.start(pool.serve)
            with pytest.raises(UpstreamError) as info:
                await pool.forward(request("hi"))
            tg.cancel_scope.cancel()
        return str(info.value)

    assert "unavailable" in asyncio.run(go())


def test_the_pool_serves_in_a_task_group_and_closes_its_links_on_the_way_out() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(answer_of(message))  # type: ignore[arg-type]

    async def go() -> tuple[bool, list[str], bool]:
        async with gateway(handler) as url:
            pool = UpstreamPool(UpstreamConfig(url=url, connections=2))
            async with anyio.create_task_group() as tg:
                await tg.start(pool.serve)
                healthy = pool.healthy
                answer = await pool.forward(request("hi"))
                tg.cancel_scope.cancel()
            return healthy, [d.text or "" for d in answer.load_docs() or []], any(
                link.connected for link in pool.links)

    healthy, texts, still_connected = anyio.run(go)
    assert healthy, "every link is up once serve reports itself started"
    assert texts == ["HI"]
    assert not still_connected


def test_a_failing_sweep_ends_the_pool_with_the_error_named() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    def broken_expire(older_than: float) -> list[Any]:
        raise RuntimeError("injected into the sweep")

    async def go() -> None:
        async with gateway(handler) as url:
            pool = UpstreamPool(UpstreamConfig(url=url, connections=1, request_timeout_s=0.2))
            pool.links[0].expire = broken_expire  # type: ignore[method-assign]
            async with task_group() as tg:
                await tg.start(pool.serve)

    with pytest.raises(TaskFailed) as info:
        anyio.run(go)
    assert "deadline sweep" in str(info.value) and "RuntimeError: injected into the sweep" in str(info.value)


def test_a_relay_in_front_of_a_websocket_flow_answers_endpoint_discovery_on_its_grpc_door() -> None:
    # A WebSocket gateway cannot be asked for its endpoints: the relay answers with those every Flow has.
    from test_grpc_http import grpc_door_port

    async def discover(port: int) -> list[str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
            frame = await ch.unary_unary(ENDPOINT_DISCOVERY)(b"", timeout=10)
        return list(jina_pb2.EndpointsProto.FromString(frame).endpoints)

    with run_relay("--grpc-port", "0", "--upstream", "ws://127.0.0.1:9", "--log-level", "ERROR") as relay:
        endpoints = asyncio.run(discover(grpc_door_port(relay)))
    assert endpoints == ["/default", "_jina_dry_run_"]
