"""The real-Jina fixtures work: a Flow starts, answers on its wire protocols, and leaves nothing behind.

Only plain ``websockets`` and ``orjson`` talk to the Flow here, so these tests stay independent of the
project's own codecs and show what a real gateway sends.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import orjson
import pytest
from jina_peer import LOOPBACK, RunningFlow, group_pids, require_peer, run_flow, tcp_sockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.jina

IO_TIMEOUT_S = 20.0


async def _exchange(url: str, subprotocol: str, sends: list[str | bytes]) -> tuple[list[str | bytes], int | None]:
    """Send frames, then read until the server closes; return the frames received and the close code."""
    received: list[str | bytes] = []
    async with asyncio.timeout(IO_TIMEOUT_S):
        async with connect(url, subprotocols=[subprotocol], open_timeout=IO_TIMEOUT_S) as ws:
            for frame in sends:
                await ws.send(frame)
            # Bounded twice over: by the timeout above and by a frame count far above what is expected.
            for _ in range(100):
                try:
                    received.append(await ws.recv())
                except ConnectionClosed:
                    break
            return received, ws.close_code


def test_json_index_round_trip(jina_flow: RunningFlow) -> None:
    request = {"data": [{"text": "hello"}], "execEndpoint": "/index"}
    frames, close_code = asyncio.run(_exchange(jina_flow.url + "/", "json", [orjson.dumps(request).decode(), "{}"]))

    assert close_code == 1000
    assert len(frames) == 1
    assert isinstance(frames[0], str), "json mode answers in TEXT frames"
    reply: dict[str, Any] = orjson.loads(frames[0])
    routes = reply["routes"]
    assert [r["executor"] for r in routes] == ["gateway", "upper", "sleeper"]
    for route in routes:
        assert route["start_time"].endswith("Z")
        assert route["end_time"].endswith("Z")
    assert reply["header"]["exec_endpoint"] == "/index"
    assert "status" not in reply["header"], "success carries no status"
    assert [d["text"] for d in reply["data"]] == ["HELLO"]


def test_dry_run_json(jina_flow: RunningFlow) -> None:
    frames, close_code = asyncio.run(_exchange(jina_flow.url + "/dry_run", "json", []))

    assert len(frames) == 1 and isinstance(frames[0], str)
    assert orjson.loads(frames[0]) == {}, "a successful StatusProto has only default fields"
    assert close_code == 1000


def test_http_status_on_websocket_port(jina_flow: RunningFlow) -> None:
    with urllib.request.urlopen(jina_flow.http_url + "/status", timeout=IO_TIMEOUT_S) as resp:
        assert resp.status == 200
        body = json.load(resp)
    assert "jina" in body
    assert body["jina"].get("jina") == "3.34.0"


def test_v2_dry_run_bytes(jina_flow_v2: RunningFlow) -> None:
    frames, close_code = asyncio.run(_exchange(jina_flow_v2.url + "/dry_run", "bytes", [b""]))

    # A successful StatusProto (code 0, everything default) serialises to zero bytes.
    assert frames == [b""]
    assert close_code == 1000


def test_flow_binds_loopback_and_leaves_no_process() -> None:
    require_peer("legacy")
    with run_flow(no_sleeper=True, sleep_ms=0) as flow:
        pids = flow.pids()
        # flow_serve.py forks one process for the gateway and one per executor (the sleeper is off).
        assert flow.pid in pids
        assert len(pids) == 3, pids
        frames, close_code = asyncio.run(_exchange(flow.url + "/dry_run", "json", []))
        assert frames and close_code == 1000
        sockets = tcp_sockets(pids)
        listening = {(s.local_host, s.local_port) for s in sockets if s.listening}
        # The gateway port plus one gRPC port per executor, all on loopback.
        assert (LOOPBACK, flow.port) in listening
        assert len(listening) == 2, sockets
        assert all(s.local_host == LOOPBACK for s in sockets), sockets
        assert all(s.remote_host == LOOPBACK for s in sockets if not s.listening), sockets
    assert group_pids(flow.pgid) == []
    for pid in pids:
        assert not _alive(pid), f"process {pid} of the Flow outlived it"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
