"""The relay's GET /metrics, as Prometheus reads it: counts match what clients sent, one Executor sample per
request per Executor, close codes by direction, gauges back to zero, client-supplied labels capped.

Each test starts `flowrelay serve` as a subprocess (so the CLI's wiring is covered too), talks to it over
real sockets on 127.0.0.1, then scrapes /metrics and parses it with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import orjson
import pytest
from metrics_helpers import scrape, series, value
from relay_process import RelayProcess, read_until_closed, run_relay
from upstream_helpers import relay_status, wait_until
from websockets.asyncio.client import connect

from relay.common.buckets import LATENCY_BUCKETS_S, MAX_LABEL_VALUES, MAX_QUANTILE_ERROR, OTHER
from relay.wire import DataRequest, Document, proto_codec

TIMEOUT_S = 30.0


def json_frame(endpoint: str, text: str = "hello") -> str:
    return orjson.dumps({"data": [{"text": text}], "execEndpoint": endpoint}).decode()


def bytes_frame(rid: str, endpoint: str, text: str = "hello") -> bytes:
    return proto_codec.encode_request(DataRequest(request_id=rid, exec_endpoint=endpoint, docs=[Document(text=text)]))


@pytest.fixture
def relay() -> Iterator[RelayProcess]:
    # `fail` raises on /fail only, after `upper`: every request has both Executors' route entries.
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", "fail:/fail") as r:
        yield r


class Traffic:
    """What the clients sent and received, to compare with the relay's counts."""

    def __init__(self) -> None:
        self.sent_chars = 0
        self.received_chars = 0

    async def session(self, url: str, mode: str, frames: list[str | bytes], client_closes: bool = False) -> int | None:
        """Send `frames` on one connection; read until the relay closes (or, with `client_closes`, read one
        answer per frame and close first). Returns the close code the relay sent, if any."""
        async with connect(url, subprotocols=[mode], compression=None, max_size=None) as ws:  # type: ignore[list-item]
            for f in frames:
                await ws.send(f)
                self.sent_chars += len(f)
            if client_closes:
                for _ in frames:
                    answer = await ws.recv()  # (not `+= await`: that reads the total before waiting)
                    self.received_chars += len(answer)
                await ws.close(1000)
                return None
            received = await read_until_closed(ws)
            self.received_chars += sum(len(r) for r in received)
            return ws.close_code


def test_counts_match_what_was_sent(relay: RelayProcess) -> None:
    url = relay.url
    traffic = Traffic()

    async def go() -> list[int | None]:
        return list(await asyncio.gather(
            # json: 3 ok, 2 executor errors, end of stream -> the relay closes 1000
            traffic.session(url, "json", [*(json_frame("/index") for _ in range(3)),
                                          *(json_frame("/fail") for _ in range(2)), "{}"]),
            # bytes: 4 ok, 1 executor error, end of stream -> 1000
            traffic.session(url, "bytes", [*(bytes_frame(f"b{i}", "/index") for i in range(4)),
                                           bytes_frame("bf", "/fail"), b"\x00"]),
            # json: 1 ok, then a malformed frame -> answered first, then the relay closes 1007
            traffic.session(url, "json", [json_frame("/index"), "{not json"]),
            # bytes: 1 ok, then the client closes first with 1000
            traffic.session(url, "bytes", [bytes_frame("c0", "/index")], client_closes=True),
        ))

    codes = asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
    assert codes == [1000, 1000, 1007, None]

    # The relay's bookkeeping of a closed connection ends just after the client sees the close.
    deadline = time.monotonic() + 10.0
    while True:
        content_type, m = scrape(relay.port)
        open_now = series(m, "flowrelay_relay_connections_open")
        if all(v == 0 for v in open_now.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    assert content_type.startswith("text/plain; version=0.0.4")
    assert open_now == {frozenset({("subprotocol", "json")}): 0, frozenset({("subprotocol", "bytes")}): 0}
    assert value(m, "flowrelay_relay_connections_total", subprotocol="json") == 2
    assert value(m, "flowrelay_relay_connections_total", subprotocol="bytes") == 2

    requests = series(m, "flowrelay_relay_requests_total")
    assert value(m, "flowrelay_relay_requests_total", endpoint="/index", outcome="ok") == 3 + 4 + 1 + 1
    assert value(m, "flowrelay_relay_requests_total", endpoint="/fail", outcome="error") == 2 + 1
    assert sum(requests.values()) == 12
    assert value(m, "flowrelay_relay_requests_in_flight") == 0

    assert value(m, "flowrelay_relay_request_duration_seconds_count", endpoint="/index") == 9
    assert value(m, "flowrelay_relay_request_duration_seconds_count", endpoint="/fail") == 3
    assert value(m, "flowrelay_relay_request_duration_seconds_bucket", endpoint="/index", le="+Inf") == 9
    # One sample per request per Executor, the failing one included (its route entry has both stamps).
    for executor in ("upper", "fail"):
        assert value(m, "flowrelay_relay_executor_duration_seconds_count", executor=executor) == 12
        assert value(m, "flowrelay_relay_executor_duration_seconds_sum", executor=executor) >= 0
    assert len(series(m, "flowrelay_relay_executor_duration_seconds_count")) == 2

    closes = series(m, "flowrelay_relay_closes_total")
    assert closes == {
        frozenset({("code", "1000"), ("direction", "sent")}): 2,
        frozenset({("code", "1007"), ("direction", "sent")}): 1,
        frozenset({("code", "1000"), ("direction", "received")}): 1,
    }
    # All frames here are ASCII, so characters are bytes.
    assert value(m, "flowrelay_relay_received_bytes_total") == traffic.sent_chars
    assert value(m, "flowrelay_relay_sent_bytes_total") == traffic.received_chars


def test_histogram_buckets_are_cumulative_and_the_documented_ones(relay: RelayProcess) -> None:
    async def go() -> None:
        await Traffic().session(relay.url, "json", [json_frame("/index") for _ in range(5)] + ["{}"])

    asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
    _, m = scrape(relay.port)
    hist = series(m, "flowrelay_relay_request_duration_seconds_bucket")
    buckets = {dict(labels)["le"]: v for labels, v in hist.items()}
    les = sorted(float(le) for le in buckets)
    assert les == [*LATENCY_BUCKETS_S, float("inf")]
    counts = [buckets[k] for k in sorted(buckets, key=float)]
    assert counts == sorted(counts), "cumulative"
    assert counts[-1] == 5


def test_endpoint_labels_are_capped(relay: RelayProcess) -> None:
    n = MAX_LABEL_VALUES + 5

    async def go() -> None:
        await Traffic().session(relay.url, "json", [json_frame(f"/e{i}") for i in range(n)] + ["{}"])

    asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
    _, m = scrape(relay.port)
    ok = {dict(labels)["endpoint"]: v for labels, v in series(m, "flowrelay_relay_requests_total").items()
          if dict(labels)["outcome"] == "ok"}
    assert len(ok) == MAX_LABEL_VALUES + 1
    assert ok[OTHER] == n - MAX_LABEL_VALUES
    assert sum(ok.values()) == n
    assert len(series(m, "flowrelay_relay_request_duration_seconds_count")) == MAX_LABEL_VALUES + 1


def test_bucket_layout() -> None:
    bounds = LATENCY_BUCKETS_S
    assert bounds[0] == pytest.approx(1e-4) and bounds[-1] == 60.0
    assert list(bounds) == sorted(set(bounds))
    # ten a decade: 1e-4 .. 1e1 is 50, then 10 .. 60 s
    assert len(bounds) == 59
    assert round(MAX_QUANTILE_ERROR, 6) == 0.28
    for slo in (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0):
        assert slo in bounds


def test_mirror_figures_reach_prometheus() -> None:
    """`--mirror`: the shadow Flow's answers are counted in /metrics as in /status (two relays stand in for the
    primary Flow and the shadow)."""
    n = 12
    with run_relay("-e", "upper") as flow, run_relay("-e", "shadowecho=echo") as shadow, \
            run_relay("--upstream", flow.url, "--mirror", shadow.url) as relay:
        wait_until(lambda: relay_status(relay)["mirror"]["healthy"], 10, "the mirror's links")

        async def go() -> None:
            await Traffic().session(relay.url, "json", [json_frame("/index") for _ in range(n)] + ["{}"])

        asyncio.run(asyncio.wait_for(go(), TIMEOUT_S))
        wait_until(lambda: relay_status(relay)["mirror"]["ok"] == n, 15, "the shadow's answers")
        _, m = scrape(relay.port)
    assert value(m, "flowrelay_relay_mirror_requests_total", outcome="ok") == n
    assert ("flowrelay_relay_mirror_requests_total", frozenset({("outcome", "error")})) not in m
    assert value(m, "flowrelay_relay_mirror_duration_seconds_count") == n
    assert value(m, "flowrelay_relay_mirror_duration_seconds_sum") > 0
    assert value(m, "flowrelay_relay_mirror_duration_seconds_bucket", le="+Inf") == n
