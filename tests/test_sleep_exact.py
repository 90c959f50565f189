"""A known delay is exact: the built-in `sleep` Executor never answers before its delay, even on a busy relay.

The relay's loop is kept busy with bursts from several connections of this process and with `flowrelay load`
runs from two other processes (Poisson arrivals, so requests come in clumps), while probe connections read
every answer's `routes`. What a user reads must hold for every request:

* the sleeping Executor's route entry spans at least its delay (a fixed 1 ms; for exponential and lognormal
  draws, at least that request's own draw);
* the end-to-end latency, from the probe's send and from the load runs' intended send times, is at least the
  delay as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from load_helpers import read_request_log
from relay_process import flowrelay_command, relay_in_process, ws_url
from websockets.asyncio.client import connect

from relay.common import loop as event_loop
from relay.executors import Chain, SleepExecutor, UpperExecutor
from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest

TIMEOUT_S = 90.0
PROBE_CONNECTIONS = 4
BURSTS = 12
BURST_SIZE = 40
LOAD_PROCESSES = 2
NAP = "nap"


class DrawRecorder(SleepExecutor):
    """The built-in sleep, which also notes each request's delay (its draw) for the test to check against."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delays_s: dict[str, float] = {}

    async def process_async(self, req: DataRequest, params: dict[str, Any]) -> None:
        delay_s = self.delay_for(params)
        self.delays_s[req.request_id] = delay_s
        # The real path, told to sleep exactly this draw.
        await super().process_async(req, {"sleep_ms": delay_s * 1000.0})


async def _probe(url: str, index: int) -> list[tuple[str, int, float]]:
    """Bursts of bytes-mode requests on one connection; (request id, nap span in ns, round trip in s) each."""
    out: list[tuple[str, int, float]] = []
    sent_at: dict[str, float] = {}
    async with connect(url, subprotocols=["bytes"], compression=None, max_size=None) as ws:  # type: ignore[list-item]
        for burst in range(BURSTS):
            for k in range(BURST_SIZE):
                rid = f"probe-{index}-{burst}-{k}"
                sent_at[rid] = time.perf_counter()
                await ws.send(proto_codec.encode_request(DataRequest(request_id=rid, docs=[Document(text="a")])))
            for _ in range(BURST_SIZE):
                answer = proto_codec.decode_response(await ws.recv())
                now = time.perf_counter()
                (nap,) = [r for r in answer.routes if r.executor == NAP]
                assert nap.start_ns is not None and nap.end_ns is not None, answer.routes
                out.append((answer.request_id, nap.end_ns - nap.start_ns, now - sent_at[answer.request_id]))
            await asyncio.sleep(0.01)
    return out


async def _background_load(url: str, out: Path) -> list[asyncio.subprocess.Process]:
    procs = []
    for i in range(LOAD_PROCESSES):
        procs.append(await asyncio.create_subprocess_exec(
            *flowrelay_command(), "load", url, "--rate", "1200", "--arrival", "poisson", "--duration", "3s",
            "--connections", "2", "--subprotocol", "bytes", "--quiet", "--out", str(out / f"load{i}"),
            "--log-requests", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        ))
    return procs


async def _busy_relay_run(sleeper: DrawRecorder, tmp_path: Path) -> list[tuple[str, int, float]]:
    chain = Chain([UpperExecutor("upper"), sleeper])
    async with relay_in_process(backend=chain) as server:
        url = ws_url(server)
        procs = await _background_load(url, tmp_path)
        try:
            probes = await asyncio.gather(*(_probe(url, i) for i in range(PROBE_CONNECTIONS)))
            for proc in procs:
                _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
                assert proc.returncode == 0, err.decode()
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
    return [answer for probe in probes for answer in probe]


def _load_latencies_s(tmp_path: Path) -> list[float]:
    """End-to-end latency (answer minus intended send time) of every answered request of the load runs."""
    out = []
    for i in range(LOAD_PROCESSES):
        for record in read_request_log(tmp_path / f"load{i}" / "requests.msgpack"):
            due_s, answered_s = record[1], record[3]
            if answered_s is not None:
                out.append(answered_s - due_s)
    return out


@pytest.mark.parametrize(
    ("distribution", "median_s"),
    [("fixed", 0.001), ("exponential", 0.002), ("lognormal", 0.002)],
)
def test_no_request_is_answered_before_its_delay_on_a_busy_relay(
    distribution: str, median_s: float, tmp_path: Path
) -> None:
    sleeper = DrawRecorder(NAP, median_s, distribution, seed=12)
    # On the loop `flowrelay serve` runs on (uvloop where installed), whose own timers are the coarse ones.
    answers = event_loop.run(asyncio.wait_for, _busy_relay_run(sleeper, tmp_path), TIMEOUT_S)

    assert len(answers) == PROBE_CONNECTIONS * BURSTS * BURST_SIZE
    short = [(rid, span_ns / 1e6, sleeper.delays_s[rid] * 1e3) for rid, span_ns, _ in answers
             if span_ns < sleeper.delays_s[rid] * 1e9]
    assert not short, f"{len(short)} nap spans under their delay (request, span ms, delay ms): {short[:5]}"
    early = [(rid, rtt * 1e3) for rid, _, rtt in answers if rtt < sleeper.delays_s[rid]]
    assert not early, f"answered before the delay had passed: {early[:5]}"

    latencies = _load_latencies_s(tmp_path)
    assert len(latencies) > 1000, "the load runs kept the relay busy"
    assert len(sleeper.delays_s) >= len(latencies) + len(answers)
    if distribution == "fixed":
        under = [lat for lat in latencies if lat < median_s]
        assert not under, f"{len(under)} end-to-end latencies under {median_s * 1e3:g} ms, e.g. {under[:5]}"
    else:
        # The load runs' requests drew their delays too: the smallest latency is at least the smallest draw.
        assert min(latencies) >= min(sleeper.delays_s.values())
