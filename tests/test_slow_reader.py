"""A client that sends many requests with large answers and never reads cannot make the relay's memory grow.

The relay runs `embed:65536` (each Document gets a 256 KiB float32 embedding: four Documents a request
make answers of 1 MiB in bytes mode, two make 2.5 MiB in json). The slow client pipelines over a thousand
requests, more than 1 GiB of would-be answers, and reads nothing. The relay's memory (VmRSS from
/proc/PID/status) is sampled while it tries to answer: it must level off well under +100 MB, because the
relay reads no more than `--prefetch` requests ahead and a send waits while the client's socket and the
connection's write buffer are full (with only synchronous Executors the answer is sent before the next
request is read at all). Meanwhile another client is served, and once the slow client goes, no connection
is left behind.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from relay_process import RelayProcess, run_relay
from upstream_helpers import json_request, read_answers, relay_status, rss_mb, wait_until
from websockets.asyncio.client import connect

from relay.wire import DataRequest, Document, proto_codec

DIM = 65536
GROWTH_LIMIT_MB = 100.0
WOULD_BE_BYTES = 2**30
SAMPLE_S = 5.0


def run(coro: Any, timeout_s: float = 90.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def request(mode: str, i: int, docs: int) -> str | bytes:
    texts = [f"doc {i}.{k}" for k in range(docs)]
    if mode == "bytes":
        return proto_codec.encode_request(
            DataRequest(request_id=f"r{i}", exec_endpoint="/", docs=[Document(text=t) for t in texts])
        )
    return orjson.dumps({"data": [{"text": t} for t in texts], "execEndpoint": "/"}).decode()


async def answer_size(url: str, mode: str, docs: int) -> int:
    """The size of one answer, read by a well-behaved client."""
    async with connect(url, subprotocols=[mode], max_size=None, open_timeout=10) as ws:
        await ws.send(request(mode, -1, docs))
        frame = await asyncio.wait_for(ws.recv(), 30)
    return len(frame)


async def slow_reader(relay: RelayProcess, mode: str, docs: int, n: int) -> dict[str, Any]:
    base = rss_mb(relay.pid)
    ws = await connect(relay.url, subprotocols=[mode], max_size=None, open_timeout=10)
    try:
        pushed = 0
        for i in range(n):
            try:
                await asyncio.wait_for(ws.send(request(mode, i, docs)), 5.0)
            except TimeoutError:
                break  # the relay no longer reads and the socket buffers are full: pushed is what it holds
            pushed += 1
        samples = []
        deadline = time.monotonic() + SAMPLE_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            samples.append(rss_mb(relay.pid))
        admitted = int((await asyncio.to_thread(relay_status, relay))["envs"]["requests_total"])

        # Another client is served all the while.
        async with connect(relay.url, subprotocols=["json"], max_size=None, open_timeout=10) as other:
            await other.send(json_request("other", "/"))
            (resp,) = await read_answers(other, 1, "json", timeout_s=20)
        other_text = [d.text for d in resp.docs or []]
        return {"base": base, "samples": samples, "pushed": pushed, "admitted": admitted, "other": other_text}
    finally:
        ws.transport.abort()  # a close handshake would queue behind the unread answers


@pytest.mark.parametrize(
    ("mode", "chain", "docs", "n"),
    [
        ("bytes", ("-e", "sleep:1ms", "-e", f"embed:{DIM}", "--prefetch", "16"), 4, 1200),
        ("json", ("-e", f"embed:{DIM}"), 2, 500),
    ],
    ids=["async-chain-prefetch-16-bytes", "sync-chain-default-prefetch-json"],
)
def test_slow_reader_cannot_grow_the_relays_memory(mode: str, chain: tuple[str, ...], docs: int, n: int) -> None:
    with run_relay(*chain) as relay:
        size = run(answer_size(relay.url, mode, docs))
        got = run(slow_reader(relay, mode, docs, n))
        wait_until(lambda: relay_status(relay)["envs"]["connections_open"] == "0", 20,
                   "the slow reader's connection to be let go")
        assert relay.proc.poll() is None

    base, samples = got["base"], got["samples"]
    would_be = got["pushed"] * size
    growth = max(samples) - base
    print(f"\n{mode}: answer {size / 2**20:.2f} MiB x {got['pushed']} pushed = {would_be / 2**30:.2f} GiB would-be; "
          f"{got['admitted']} admitted; RSS {base:.0f} MiB -> max {max(samples):.0f} MiB (+{growth:.0f}), "
          f"last {samples[-1]:.0f} MiB")
    assert would_be > WOULD_BE_BYTES, "the client pushed more than 1 GiB of would-be answers"
    assert growth < GROWTH_LIMIT_MB, f"RSS grew by {growth:.0f} MiB: {samples}"
    assert got["admitted"] < got["pushed"] // 4, "the relay stopped reading the slow client"
    assert got["other"] == ["other"], "another client was answered meanwhile"
