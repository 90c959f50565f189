"""gRPC and HTTP: the load engine over both, the relay in front of a gRPC Flow, and the relay's gRPC door.

Against real Jina 3.34 Flows (`gateway -> upper -> sleeper`, sleeper at 2 ms; marked `jina`, needs the
peer venv), started with `--protocol grpc`, `--protocol http` and `--protocol websocket`:

* the load engine measures each with the same models and outputs: both rates exact, the same hops
  (gateway, upper, sleeper, and the time outside the gateway) as over WebSocket, counts adding up;
  `flowrelay load grpc://` / `http://` write the same summary and apply thresholds;
* `flowrelay serve --upstream grpc://` serves a json WebSocket client from a gRPC-only Flow (routes
  gateway, upstream, upper, sleeper), and the load engine measures through it;
* jina's own `Client(protocol='grpc')` works against the relay's gRPC door (`--grpc-port`), over the
  built-in Executors and over a gRPC upstream.

Without Jina: the load engine against the relay's gRPC door and against a small aiohttp stand-in for
an HTTP gateway (camelCase answers, `+00:00` timestamps, HTTP 503s); failure reasons when a gRPC target
dies (`grpc UNAVAILABLE`); a relay's gRPC upstream failing and recovering; answers in request order
when a gRPC client asks; usage errors before any traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from aiohttp import web
from jina_peer import RunningFlow, flow_fixture, free_port, require_peer
from load_helpers import assert_adds_up, cli_summary, load_in_process, run_load_cli
from relay_process import LOOPBACK, RelayProcess, exchange, http_get, run_relay

from relay.wire import DataRequest, Document, json_codec, proto_codec

FLOW_SLEEP_MS = 2.0
RATE = 100.0
DURATION_S = 2.0
HTTP_CONNECTIONS = 64  # one request at a time per HTTP/1.1 connection: room for a stalled gateway
JINA_HOPS = {"gateway", "upper", "sleeper", "outside_gateway"}
CLIENT_SCRIPT = Path(__file__).parent / "jina_scripts" / "client_post.py"
CLIENT_TIMEOUT_S = 90.0
_GRPC_DOOR = re.compile(r"^flowrelay serving grpcs?://[^:/]+:(\d+)/")


# ---- helpers -------------------------------------------------------------------------------------


def grpc_door_port(relay: RelayProcess, timeout_s: float = 10.0) -> int:
    """The port of a relay's gRPC door, from the line it prints once listening."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in relay.output().splitlines():
            m = _GRPC_DOOR.match(line)
            if m:
                return int(m.group(1))
        time.sleep(0.05)
    raise AssertionError(f"the relay printed no gRPC door line:\n{relay.output()}")


def peer_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    for var in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy"):
        env.pop(var, None)
        env.pop(var.upper(), None)
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    env["JINA_OPTOUT_TELEMETRY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def jina_client(port: int, protocol: str = "grpc") -> dict[str, Any]:
    """Run tests/jina_scripts/client_post.py in the peer venv against 127.0.0.1:port."""
    python = require_peer()
    proc = subprocess.run(
        [str(python), str(CLIENT_SCRIPT), "--port", str(port), "--protocol", protocol],
        env=peer_env(),
        cwd=CLIENT_SCRIPT.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"client script failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, value in result.items():
        assert not (isinstance(value, dict) and "error" in value), f"{name}: {value['error']}\n{value['traceback']}"
    return result


def grpc_url(port: int) -> str:
    return f"grpc://{LOOPBACK}:{port}"


async def grpc_stream(port: int, requests: list[DataRequest], metadata: tuple[tuple[str, str], ...] = ()) -> list[
        DataRequest]:
    """Send `requests` on one `JinaRPC/Call` stream; every answer, in the order received."""
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
        await asyncio.wait_for(ch.channel_ready(), 10)
        call = ch.stream_stream("/jina.JinaRPC/Call")(
            iter([proto_codec.encode_request(r) for r in requests]), metadata=metadata, timeout=20
        )
        return [proto_codec.decode_response(m) async for m in call]


class FakeHttpGateway:
    """A Jina-style HTTP gateway stand-in on 127.0.0.1: `GET /` -> `{}`, `POST /post` answered as a
    3.34 HTTP gateway does (camelCase header, `+00:00` timestamps, `gateway` and `upper` routes, texts
    upper-cased); every `fail_every`-th request gets HTTP 503 instead. Runs in a thread of its own."""

    def __init__(self, fail_every: int = 0, delay_s: float = 0.001) -> None:
        self.fail_every = fail_every
        self.delay_s = delay_s
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> FakeHttpGateway:
        self._thread.start()
        assert self._ready.wait(10), "fake HTTP gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/", self._health)
        app.router.add_post("/post", self._post)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        n = self.requests
        if self.fail_every and n % self.fail_every == 0:
            return web.json_response({"header": {"requestId": f"{n:032x}", "status": {"code": 1}}}, status=503)
        start = time.time()
        await asyncio.sleep(self.delay_s)
        mid = time.time()

        def stamp(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+00:00"

        docs = [{**d, "text": (d.get("text") or "").upper()} for d in body.get("data") or []]
        answer = {
            "header": {"requestId": f"{n:032x}", "status": None, "execEndpoint": body.get("execEndpoint", "/"),
                       "targetExecutor": ""},
            "parameters": body.get("parameters") or {},
            "routes": [
                {"executor": "gateway", "startTime": stamp(start), "endTime": stamp(time.time()), "status": None},
                {"executor": "upper", "startTime": stamp(start), "endTime": stamp(mid), "status": None},
            ],
            "data": docs,
        }
        return web.json_response(answer)


@contextlib.contextmanager
def fake_http_gateway(**options: Any) -> Iterator[FakeHttpGateway]:
    with FakeHttpGateway(**options) as gw:
        yield gw


# ---- without Jina: the load engine over gRPC and HTTP -----------------------------------------------


@pytest.fixture(scope="module")
def relay_with_grpc() -> Iterator[tuple[RelayProcess, int]]:
    with run_relay("--grpc-port", "0", "-e", "upper", "-e", "sleeper=sleep:2ms") as relay:
        yield relay, grpc_door_port(relay)


def test_load_over_grpc_measures_the_relays_door(relay_with_grpc: tuple[RelayProcess, int]) -> None:
    _, port = relay_with_grpc
    summary, result = load_in_process(grpc_url(port), rate=200.0, duration_s=1.5, connections=2)
    req = summary["requests"]
    assert req["sent"] == 300 and req["ok"] == 300, summary["errors"]
    assert_adds_up(summary)
    assert summary["rate"]["achieved_rps"] == pytest.approx(200.0)
    assert summary["transport"] == "grpc"
    assert summary["subprotocol"] == {"offered": None, "negotiated": None, "codec": "bytes"}
    assert set(summary["hops"]) == {"gateway", "upper", "sleeper", "outside_gateway"}
    assert all(h["count"] == 300 for h in summary["hops"].values())
    assert 1.8 <= summary["hops"]["sleeper"]["p50"] <= 20.0
    assert summary["docs"]["received"] == 300
    assert result.late_answers == 0


def test_load_over_grpc_closed_model(relay_with_grpc: tuple[RelayProcess, int]) -> None:
    _, port = relay_with_grpc
    summary, _ = load_in_process(grpc_url(port), concurrency=8, requests=400, connections=2)
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == 400
    assert summary["model"] == "closed"


def test_load_over_grpc_in_two_processes(relay_with_grpc: tuple[RelayProcess, int]) -> None:
    _, port = relay_with_grpc
    proc = run_load_cli(grpc_url(port), "--rate", "400", "--duration", "1s", "--procs", "2", "--connections", "2",
                        "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = cli_summary(proc)
    assert summary["requests"]["sent"] == summary["requests"]["ok"] == 400
    assert summary["procs"] == 2 and summary["transport"] == "grpc"


def test_grpc_target_that_dies_fails_in_flight_requests_as_unavailable() -> None:
    with run_relay("--grpc-port", "0", "-e", "sleeper=sleep:50ms") as relay:
        port = grpc_door_port(relay)
        killer = threading.Timer(1.0, relay.proc.kill)  # SIGKILL by PID: no goodbye on the stream
        killer.start()
        try:
            summary, _ = load_in_process(grpc_url(port), rate=200.0, duration_s=2.5, timeout_s=5.0)
        finally:
            killer.cancel()
    req = summary["requests"]
    assert_adds_up(summary)
    assert summary["errors"].get("grpc UNAVAILABLE", 0) >= 1, summary["errors"]
    assert req["transport_failed"] == summary["errors"]["grpc UNAVAILABLE"]
    assert 150 <= req["ok"] <= 210, req
    assert req["dropped_by_reason"].get("no connection", 0) > 0, req


def test_load_over_http_reads_camelcase_answers_and_counts_503s() -> None:
    # The closed model: each of the 4 users sends its next request once the last one settled, so every
    # request goes out however slowly this process is scheduled. (At a fixed rate, a stall of the test's
    # own process, which also runs the stand-in gateway, makes more requests due at once than there are
    # connections, and the engine rightly drops those: see the next test.)
    with fake_http_gateway(fail_every=10) as gw:
        summary, _ = load_in_process(gw.url, concurrency=4, requests=150, connections=4)
    req = summary["requests"]
    assert req["sent"] == 150 and req["dropped"] == 0
    assert gw.requests == 150
    assert_adds_up(summary)
    assert summary["errors"] == {"http 503": 15}
    assert req["transport_failed"] == 15 and req["ok"] == 135
    assert summary["transport"] == "http"
    assert summary["subprotocol"]["codec"] == "json"
    assert set(summary["hops"]) == {"gateway", "upper", "outside_gateway"}
    assert summary["hops"]["upper"]["count"] == 135
    assert summary["hops"]["upper"]["p50"] >= 0.9, "the +00:00 timestamps parse to the microsecond"
    assert summary["docs"]["received"] == 135


def test_http_keeps_one_request_per_connection_and_drops_the_rest() -> None:
    # 2 connections, 50 ms per answer: at most 2 in flight, so of 100 due in 1 s about 40 go out.
    with fake_http_gateway(delay_s=0.05) as gw:
        summary, _ = load_in_process(gw.url, rate=100.0, duration_s=1.0, connections=2)
    req = summary["requests"]
    assert_adds_up(summary)
    assert req["dropped_by_reason"] == {"in-flight limit": req["dropped"]}
    assert req["sent"] + req["dropped"] == 100
    assert 30 <= req["sent"] <= 44, req
    assert req["ok"] == req["sent"]


def test_cli_over_http_writes_the_summary_and_applies_thresholds(tmp_path: Path) -> None:
    with fake_http_gateway() as gw:
        ok = run_load_cli(gw.url, "--rate", "50", "--duration", "1s", "--connections", "4", "--json", "--quiet",
                          "--out", str(tmp_path / "run"), "--threshold", "errors.rate<0.01")
        failing = run_load_cli(gw.url, "--rate", "20", "--duration", "0.5s", "--connections", "2", "--quiet",
                               "--threshold", "latency.p50<0.001ms")
    assert ok.returncode == 0, ok.stderr
    summary = cli_summary(ok)
    assert summary["requests"]["ok"] == 50
    assert summary["thresholds"] == [{"expr": "errors.rate<0.01", "ok": True, "value": 0.0}]
    assert orjson.loads((tmp_path / "run" / "summary.json").read_bytes())["transport"] == "http"
    assert failing.returncode == 99, failing.stderr
    assert "(http, codec json)" in failing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grpc://127.0.0.1:1", "--subprotocol", "json"], "--subprotocol is for ws:// targets"),
        (["http://127.0.0.1:1", "--compression"], "--compression (permessage-deflate) is for ws://"),
        (["http://127.0.0.1:1", "--concurrency", "4", "--requests", "4"], "--connections >= 4"),
        (["tcp://127.0.0.1:1"], "the scheme must be ws://, wss://, grpc://"),
    ],
)
def test_usage_errors_before_any_traffic(args: list[str], message: str) -> None:
    extra = [] if "--concurrency" in args else ["--rate", "10", "--duration", "1s"]
    proc = run_load_cli(*args, *extra)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_unreachable_target_is_reported_at_once(scheme: str) -> None:
    started = time.monotonic()
    proc = run_load_cli(f"{scheme}://127.0.0.1:{free_port()}", "--rate", "10", "--duration", "1s", "--quiet")
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr
    assert re.search(r"Connection refused|Connect call failed", proc.stderr), proc.stderr
    assert time.monotonic() - started < 8.0, "a refused connection is not waited out"
    assert "Unclosed" not in proc.stderr


# ---- without Jina: the relay's gRPC door and gRPC upstream --------------------------------------------


def test_grpc_door_answers_in_request_order_when_asked() -> None:
    with run_relay("--grpc-port", "0", "-e", "jitter=sleep:exponential:5ms") as relay:
        port = grpc_door_port(relay)
        reqs = [DataRequest(request_id=f"r{i:02d}", docs=[Document(text=str(i))]) for i in range(30)]
        ordered = asyncio.run(grpc_stream(port, reqs, (("__results_in_order__", "true"),)))
        free = asyncio.run(grpc_stream(port, reqs))
    assert [r.request_id for r in ordered] == [r.request_id for r in reqs]
    assert sorted(r.request_id for r in free) == [r.request_id for r in reqs]
    assert [r.request_id for r in free] != [r.request_id for r in reqs], "unordered: as soon as ready"


def test_grpc_door_rejects_a_bad_message_after_answering_the_rest() -> None:
    async def go(port: int) -> tuple[list[DataRequest], grpc.StatusCode | None]:
        frames = [proto_codec.encode_request(DataRequest(request_id="good", docs=[Document(text="a")])), b"\xff\xff"]
        got: list[DataRequest] = []
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
            call = ch.stream_stream("/jina.JinaRPC/Call")(iter(frames), timeout=20)
            try:
                async for m in call:
                    got.append(proto_codec.decode_response(m))
            except grpc.aio.AioRpcError as err:
                return got, err.code()
        return got, None

    with run_relay("--grpc-port", "0", "-e", "upper") as relay:
        got, code = asyncio.run(go(grpc_door_port(relay)))
    assert [(r.request_id, r.docs[0].text) for r in got] == [("good", "A")]  # type: ignore[index]
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_door_answers_what_is_in_flight_before_it_stops() -> None:
    async def go(relay: RelayProcess, port: int) -> tuple[list[str], grpc.StatusCode | None, str]:
        got: list[str] = []
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
            outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def requests() -> Any:
                while (frame := await outbox.get()) is not None:
                    yield frame

            call = ch.stream_stream("/jina.JinaRPC/Call")(requests(), timeout=20)
            for i in range(5):
                outbox.put_nowait(proto_codec.encode_request(DataRequest(request_id=f"r{i}", docs=[])))
            await asyncio.sleep(0.1)  # all five in flight, each sleeping 300 ms
            relay.terminate()  # SIGTERM: the graceful stop
            try:
                async for m in call:
                    got.append(proto_codec.decode_response(m).request_id)
            except grpc.aio.AioRpcError as err:
                return got, err.code(), err.details() or ""
            return got, None, ""

    with run_relay("--grpc-port", "0", "-e", "sleeper=sleep:300ms") as relay:
        got, code, details = asyncio.run(go(relay, grpc_door_port(relay)))
        assert relay.wait() == 0
    assert sorted(got) == [f"r{i}" for i in range(5)]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "the relay is shutting down"


def test_grpc_door_wants_the_token_when_one_is_set() -> None:
    async def go(port: int, metadata: tuple[tuple[str, str], ...]) -> Any:
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.enable_http_proxy", 0)]) as ch:
            try:
                return await ch.unary_unary("/jina.JinaGatewayDryRunRPC/dry_run")(b"", metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as err:
                return err.code()

    with run_relay("--grpc-port", "0", "--auth-token", "s3cret") as relay:
        port = grpc_door_port(relay)
        assert asyncio.run(go(port, ())) == grpc.StatusCode.UNAUTHENTICATED
        assert asyncio.run(go(port, (("authorization", "Bearer s3cret"),))) == b""  # StatusProto: SUCCESS


def test_relay_with_a_grpc_upstream_fails_over_and_recovers() -> None:
    upstream_port = free_port()
    with contextlib.ExitStack() as first:
        first.enter_context(run_relay("--grpc-port", str(upstream_port), "-e", "upper"))
        with run_relay("--upstream", grpc_url(upstream_port), "--upstream-connections", "2") as front:
            req = json_codec.encode_request(DataRequest(exec_endpoint="/", docs=[Document(text="x")])).decode()
            ex = asyncio.run(exchange(front.url + "/", [req, "{}"], ["json"]))
            (answer,) = [json_codec.decode_response(f) for f in ex.frames]
            assert [r.executor for r in answer.routes] == ["gateway", "upstream", "upper"]
            assert answer.docs[0].text == "X"  # type: ignore[index]
            assert http_get(front.port, "/status")[1]["upstream"]["protocol"] == "grpc"

            first.close()  # the upstream goes away
            time.sleep(0.5)
            ex = asyncio.run(exchange(front.url + "/", [req, "{}"], ["json"]))
            (down,) = [json_codec.decode_response(f) for f in ex.frames]
            assert down.status is not None and down.status.code == 1
            assert down.status.description.startswith(f"upstream {grpc_url(upstream_port)} unavailable: ")
            status = http_get(front.port, "/status")[1]["upstream"]
            assert status["healthy"] is False and status["connected_links"] == 0

            with run_relay("--grpc-port", str(upstream_port), "-e", "upper"):
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and not http_get(front.port, "/status")[1]["upstream"]["healthy"]:
                    time.sleep(0.1)
                status = http_get(front.port, "/status")[1]["upstream"]
                assert status["healthy"] is True and len(status["recoveries_s"]) == 1
                ex = asyncio.run(exchange(front.url + "/", [req, "{}"], ["json"]))
                (again,) = [json_codec.decode_response(f) for f in ex.frames]
                assert again.status is None and again.docs[0].text == "X"  # type: ignore[index]


def test_serve_refuses_json_towards_a_grpc_upstream() -> None:
    from relay_process import flowrelay_command

    proc = subprocess.run(
        [*flowrelay_command(), "serve", "--port", "0", "--upstream", "grpc://127.0.0.1:1", "--upstream-subprotocol",
         "json"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "gRPC carries protobuf" in proc.stderr


# ---- real Jina Flows ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_flow() -> Iterator[RunningFlow]:
    yield from flow_fixture(flavour="legacy", protocol="grpc", sleep_ms=FLOW_SLEEP_MS)


@pytest.fixture(scope="module")
def http_flow() -> Iterator[RunningFlow]:
    yield from flow_fixture(flavour="legacy", protocol="http", sleep_ms=FLOW_SLEEP_MS)


@pytest.fixture(scope="module")
def protocol_runs(jina_flow: RunningFlow, grpc_flow: RunningFlow, http_flow: RunningFlow) -> dict[str, dict[str, Any]]:
    """One run of the load engine per protocol, each against its own Flow with the same Executors."""
    targets = {
        "websocket": (jina_flow.url, {}),
        "grpc": (grpc_url(grpc_flow.port), {}),
        "http": (http_flow.http_url, {"connections": HTTP_CONNECTIONS}),
    }
    runs = {}
    for name, (url, options) in targets.items():
        summary, result = load_in_process(url, rate=RATE, duration_s=DURATION_S, **options)
        assert result.late_answers == 0
        runs[name] = summary
    return runs


@pytest.mark.jina
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_jina_flow_rates_exact_over(protocol_runs: dict[str, dict[str, Any]], protocol: str) -> None:
    summary = protocol_runs[protocol]
    req = summary["requests"]
    # Every due request is either sent or, over HTTP when every connection is busy, dropped and counted.
    assert req["sent"] + req["dropped"] == int(RATE * DURATION_S)
    assert req["dropped"] <= 0.05 * RATE * DURATION_S, summary["requests"]
    assert req["ok"] == req["sent"], summary["errors"]
    assert_adds_up(summary)
    assert summary["rate"]["target_rps"] == pytest.approx(RATE)
    assert summary["rate"]["achieved_rps"] == pytest.approx(req["sent"] / DURATION_S)
    assert summary["docs"]["received"] == req["sent"]
    assert summary["transport"] == protocol


@pytest.mark.jina
def test_jina_flow_hops_are_the_same_over_every_protocol(protocol_runs: dict[str, dict[str, Any]]) -> None:
    hops = {name: s["hops"] for name, s in protocol_runs.items()}
    assert set(hops["websocket"]) == JINA_HOPS
    assert list(hops["grpc"]) == list(hops["websocket"]) == list(hops["http"]), "same hops, in route order"
    for name, h in hops.items():
        ok = protocol_runs[name]["requests"]["ok"]
        assert all(v["count"] == ok for v in h.values()), (name, h)
        assert FLOW_SLEEP_MS - 0.2 <= h["sleeper"]["p50"] <= 25.0, (name, h["sleeper"])
        assert h["gateway"]["p50"] >= h["sleeper"]["p50"]


@pytest.mark.jina
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_jina_flow_cli_run_over(grpc_flow: RunningFlow, http_flow: RunningFlow, protocol: str) -> None:
    url = grpc_url(grpc_flow.port) if protocol == "grpc" else http_flow.http_url
    proc = run_load_cli(url, "--rate", "50", "--duration", "1s", "--connections", "8", "--json", "--quiet",
                        "--threshold", "errors.rate<0.01", "--threshold", "requests.ok>=50")
    assert proc.returncode == 0, proc.stderr
    summary = cli_summary(proc)
    assert summary["requests"]["ok"] == 50
    assert set(summary["hops"]) == JINA_HOPS
    assert all(t["ok"] for t in summary["thresholds"])


@pytest.mark.jina
def test_relay_serves_a_json_client_from_a_grpc_flow(grpc_flow: RunningFlow) -> None:
    with run_relay("--upstream", grpc_url(grpc_flow.port)) as relay:
        reqs = [
            json_codec.encode_request(
                DataRequest(exec_endpoint="/index", parameters={"i": i}, docs=[Document(text=f"doc{i}")])
            ).decode()
            for i in range(5)
        ]
        ex = asyncio.run(exchange(relay.url + "/", [*reqs, "{}"], ["json"]))
        status = http_get(relay.port, "/status")[1]["upstream"]
        dry = http_get(relay.port, "/dry_run")[1]
        fail = json_codec.encode_request(DataRequest(exec_endpoint="/fail", docs=[Document(text="x")])).decode()
        failed = asyncio.run(exchange(relay.url + "/", [fail, "{}"], ["json"]))
    assert ex.close_code == 1000
    answers = sorted((json_codec.decode_response(f) for f in ex.frames), key=lambda r: r.parameters["i"])
    assert len(answers) == 5
    for i, a in enumerate(answers):
        assert a.status is None
        assert a.parameters == {"i": i}
        assert [d.text for d in a.docs or ()] == [f"DOC{i}"]
        assert [r.executor for r in a.routes] == ["gateway", "upstream", "upper", "sleeper"]
        gw, up, upper, sleeper = a.routes
        assert gw.start_ns <= up.start_ns <= upper.start_ns <= sleeper.end_ns <= up.end_ns <= gw.end_ns  # type: ignore[operator]
    assert status["protocol"] == "grpc" and status["healthy"] is True and status["connected_links"] == 2
    assert dry["code"] == 0
    (f,) = [json_codec.decode_response(x) for x in failed.frames]
    assert f.status is not None and f.status.code == 1 and f.status.exception.executor == "UpperExec"  # type: ignore[union-attr]


@pytest.mark.jina
def test_load_through_the_relay_to_a_grpc_flow_sees_every_hop(grpc_flow: RunningFlow) -> None:
    with run_relay("--upstream", grpc_url(grpc_flow.port)) as relay:
        summary, _ = load_in_process(relay.url, subprotocol="json", rate=RATE, duration_s=DURATION_S)
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == int(RATE * DURATION_S)
    assert_adds_up(summary)
    assert list(summary["hops"]) == ["gateway", "upstream", "upper", "sleeper", "outside_gateway"]


def _check_jina_client_result(result: dict[str, Any], hops: list[str], fail_executor: str) -> None:
    assert result["ready"] is True
    index = result["index"]
    texts = {d["id"]: d["text"] for d in index["docs"]}
    assert set(texts) == set(index["sent_ids"]), "the client's document ids come back"
    assert sorted(texts.values()) == ["HELLO", "THIRD", "WORLD"]
    responses = result["responses"]
    assert sorted(len(r["docs"]) for r in responses) == [1, 2]
    for r in responses:
        assert r["status_code"] == 0 and r["exec_endpoint"] == "/index"
        assert r["parameters"] == {"p": 1.0}
        assert [rt["executor"] for rt in r["routes"]] == hops
        gw, *rest = r["routes"]
        assert all(gw["start_ns"] <= h["start_ns"] <= h["end_ns"] <= gw["end_ns"] for h in rest)
    if "unary" in result:  # the gRPC-only steps
        unary = result["unary"]
        assert len(unary) == 3
        assert sorted(d["text"] for r in unary for d in r["docs"]) == ["HELLO", "THIRD", "WORLD"]
        assert all([rt["executor"] for rt in r["routes"]] == hops for r in unary)
        assert result["in_order"] == [f"DOC{i}" for i in range(6)]
    (failed,) = result["fail"]
    assert failed["status_code"] == 1
    assert failed["exception"] == "ValueError"
    assert failed["exception_executor"] == fail_executor


@pytest.mark.jina
def test_jina_grpc_client_against_the_relays_grpc_door() -> None:
    with run_relay("--grpc-port", "0", "-e", "upper", "-e", "boom=fail:/fail", "-e", "embed:8") as relay:
        result = jina_client(grpc_door_port(relay), "grpc")
    _check_jina_client_result(result, ["gateway", "upper", "boom", "embed"], "FailExecutor")
    assert all(d["embedding_dtype"] == "float32" and len(d["embedding"]) == 8 for d in result["index"]["docs"])


@pytest.mark.jina
def test_jina_grpc_client_through_the_relay_to_a_grpc_flow(grpc_flow: RunningFlow) -> None:
    with run_relay("--grpc-port", "0", "--upstream", grpc_url(grpc_flow.port)) as relay:
        result = jina_client(grpc_door_port(relay), "grpc")
    _check_jina_client_result(result, ["gateway", "upstream", "upper", "sleeper"], "UpperExec")


def _has_http_door(port: int) -> bool:
    """Does the relay answer `POST /post` (its HTTP door), or 404/405 as before the door existed?"""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}/post", data=b'{"data": []}', method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as err:
        return err.code not in (404, 405)
    except OSError:
        return False


@pytest.mark.jina
def test_jina_http_client_against_the_relay() -> None:
    with run_relay("-e", "upper", "-e", "boom=fail:/fail", "-e", "embed:8") as relay:
        if not _has_http_door(relay.port):
            pytest.skip("the relay's HTTP door (POST /post, built separately) does not answer yet; "
                        "jina's Client(protocol='http') needs it")
        result = jina_client(relay.port, "http")
    _check_jina_client_result(result, ["gateway", "upper", "boom", "embed"], "FailExecutor")
