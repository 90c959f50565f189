"""`flowrelay serve` as a user runs it: usage errors exit 2 before any traffic, and a signal stops it gracefully.

Each test starts the real console script as a subprocess on 127.0.0.1 (tests/relay_process.py) and stops
it by PID. The graceful-stop tests put slow requests in flight, wait until /status shows the relay has
admitted them, send SIGTERM (or SIGINT), and check that the requests are answered, that the client then
sees close 1001, and that the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from typing import Any

import orjson
import pytest
from relay_process import (
    LOOPBACK,
    RelayProcess,
    exchange,
    flowrelay_command,
    http_get,
    read_until_closed,
    relay_env,
    run_relay,
)
from websockets.asyncio.client import connect

from relay.wire import DataRequest, Document, proto_codec

RUN_TIMEOUT_S = 20.0
IO_TIMEOUT_S = 20.0


def flowrelay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*flowrelay_command(), *args],
        env=relay_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


# ---- usage errors ----------------------------------------------------------------------------------


def test_unknown_executor_kind_exits_2_with_a_message() -> None:
    result = flowrelay("serve", "--port", "0", "--executor", "bogus")
    assert result.returncode == 2
    assert "bogus" in result.stderr
    assert "echo, upper, sleep, fail, embed" in result.stderr, "the message lists what is accepted"
    assert "serving" not in result.stdout


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["-e", "fail:lots"], "lots"),
        (["-e", "embed:0"], "positive"),
        (["-e", "fail:1.5"], "between 0 and 1"),
        (["-e", "upper:typo"], "typo"),
        (["-e", "sleep:forever"], "forever"),
        (["-e", "upper", "-e", "upper"], "unique"),
        (["--prefetch", "-1"], "--prefetch"),
        (["--port", "70000"], "--port"),
        (["--max-message-size", "12XB"], "12XB"),
        (["--drain-timeout", "soon"], "soon"),
        (["--ping-interval", "often"], "often"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_options_exit_2_with_a_message(args: list[str], mentions: str) -> None:
    result = flowrelay("serve", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("flowrelay serve: ")
    assert mentions in result.stderr
    assert "Traceback" not in result.stderr


def test_no_verb_exits_2_with_help() -> None:
    result = flowrelay()
    assert result.returncode == 2
    assert "serve" in result.stdout


def test_a_port_in_use_exits_1_with_a_message() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = flowrelay("serve", "--host", LOOPBACK, "--port", str(port))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert str(port) in result.stderr


def test_serve_announces_its_chain_and_answers() -> None:
    with run_relay("-e", "shout=upper", "-e", "nap=sleep:lognormal:1ms:sigma=0.5", "-e", "embed:4") as relay:
        ex = asyncio.run(exchange(relay.url + "/", [{"data": [{"text": "cli"}]}, "{}"]))
        banner = relay.output()
    (reply,) = ex.json()
    assert [r["executor"] for r in reply["routes"]] == ["gateway", "shout", "nap", "embed"]
    assert reply["data"][0]["text"] == "CLI"
    assert len(reply["data"][0]["embedding"]) == 4
    assert "UpperExecutor as shout" in banner
    assert "lognormal" in banner


def test_default_chain_is_upper() -> None:
    with run_relay() as relay:
        ex = asyncio.run(exchange(relay.url + "/", [{"data": [{"text": "default"}]}, "{}"]))
    (reply,) = ex.json()
    assert [r["executor"] for r in reply["routes"]] == ["gateway", "upper"]
    assert reply["data"][0]["text"] == "DEFAULT"


# ---- graceful stop ---------------------------------------------------------------------------------


def _wait_admitted(relay: RelayProcess, n: int) -> None:
    deadline = time.monotonic() + IO_TIMEOUT_S
    while time.monotonic() < deadline:
        _, body = http_get(relay.port, "/status")
        if int(body["envs"]["requests_total"]) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the relay did not admit {n} requests")


async def _stop_with_requests_in_flight(relay: RelayProcess, mode: str, sig: signal.Signals) -> tuple[Any, ...]:
    async with asyncio.timeout(IO_TIMEOUT_S):
        async with connect(relay.url + "/", subprotocols=[mode], compression=None) as ws:
            for i in range(4):
                if mode == "json":
                    body = {"data": [{"text": f"r{i}"}], "parameters": {"i": i, "sleep_ms": 1000}}
                    await ws.send(orjson.dumps(body).decode())
                else:
                    req = DataRequest(request_id=f"r{i}", parameters={"sleep_ms": 1000}, docs=[Document(text=f"r{i}")])
                    await ws.send(proto_codec.encode_request(req))
            await asyncio.to_thread(_wait_admitted, relay, 4)
            relay.proc.send_signal(sig)
            frames = await read_until_closed(ws)
            return frames, ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    ("mode", "sig"),
    [("json", signal.SIGTERM), ("bytes", signal.SIGTERM), ("json", signal.SIGINT)],
    ids=["json-SIGTERM", "bytes-SIGTERM", "json-SIGINT"],
)
def test_signal_answers_requests_in_flight_then_closes_1001_and_exits_0(mode: str, sig: signal.Signals) -> None:
    with run_relay("-e", "sleeper=sleep:0ms") as relay:
        frames, code, reason = asyncio.run(_stop_with_requests_in_flight(relay, mode, sig))
        exit_code = relay.wait()
        output = relay.output()
    assert len(frames) == 4, "every request in flight is answered before the close"
    if mode == "json":
        assert sorted(int(orjson.loads(f)["parameters"]["i"]) for f in frames) == [0, 1, 2, 3]
    else:
        assert sorted(proto_codec.decode_response(f).request_id for f in frames) == ["r0", "r1", "r2", "r3"]
    assert code == 1001
    assert reason
    assert exit_code == 0
    assert "draining" in output


def test_idle_connections_are_closed_1001_on_sigterm() -> None:
    async def go(relay: RelayProcess) -> list[int | None]:
        async with asyncio.timeout(IO_TIMEOUT_S):
            conns = [await connect(relay.url + "/", subprotocols=["json"]) for _ in range(3)]
            relay.terminate()
            codes = []
            for ws in conns:
                await read_until_closed(ws)
                codes.append(ws.close_code)
            return codes

    with run_relay() as relay:
        codes = asyncio.run(go(relay))
        exit_code = relay.wait()
    assert codes == [1001, 1001, 1001]
    assert exit_code == 0


def test_drain_timeout_bounds_the_stop() -> None:
    # A request that would sleep a minute: after --drain-timeout the relay closes 1001 anyway and exits 0.
    async def go(relay: RelayProcess) -> tuple[list[Any], int | None]:
        async with asyncio.timeout(IO_TIMEOUT_S):
            async with connect(relay.url + "/", subprotocols=["json"]) as ws:
                await ws.send(orjson.dumps({"data": None, "parameters": {"sleep_ms": 60_000}}).decode())
                await asyncio.to_thread(_wait_admitted, relay, 1)
                relay.terminate()
                return await read_until_closed(ws), ws.close_code

    with run_relay("-e", "sleep:0ms", "--drain-timeout", "300ms") as relay:
        frames, code = asyncio.run(go(relay))
        exit_code = relay.wait()
    assert frames == []
    assert code == 1001
    assert exit_code == 0
