"""What the Prometheus metrics add per request: the calls one request makes, timed with timeit.

Relay (`relay.metrics.RelayMetrics`, always on in `flowrelay serve`): `request_started`, `bytes_in`,
`bytes_out`, `request_finished` for one request through a chain of two Executors (gateway + 2 route
entries), the same objects reused so that only the hooks are timed. Compared with the base `Observer`,
whose hooks do nothing (the relay without metrics).

Load engine (`loadtest.outputs.prometheus.LoadSink`, only with `--metrics-port`): `on_sent` and
`on_answer` with the same routes' hop spans (computed once per answer by the meter for the summary's histograms
as well, so not counted here).

Also the cost of rendering /metrics once (the relay renders on its event loop, so a scrape is a pause).

    python bench/metrics_cost.py [--number 200000]
"""

from __future__ import annotations

import argparse
import json
import timeit

from loadtest.measure.hops import hop_spans
from loadtest.outputs.prometheus import LoadSink
from relay.metrics import RelayMetrics
from relay.observer import Observer
from relay.wire.messages import DataRequest, Route, Status, route_spans


def _request() -> DataRequest:
    t = 1_700_000_000_000_000_000
    routes = [Route("gateway", t, t + 900_000), Route("upper", t + 10_000, t + 40_000),
              Route("sleeper", t + 40_000, t + 850_000)]
    return DataRequest(request_id="r", exec_endpoint="/", routes=routes, status=Status())


def per_call_ns(stmt: str, env: dict[str, object], number: int, repeat: int = 5) -> float:
    """Best of `repeat` runs of `number` calls, in nanoseconds per call (the least disturbed figure)."""
    return min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=200_000)
    n = ap.parse_args().number
    req = _request()
    relay_stmt = ("o.request_started('/'); o.bytes_in(120); o.bytes_out(300); "
                  "o.request_finished(req, 0.0009, 'websocket')")
    noop = per_call_ns(relay_stmt, {"o": Observer(), "req": req}, n)
    metrics = RelayMetrics()
    relay = per_call_ns(relay_stmt, {"o": metrics, "req": req}, n)
    render_ms = per_call_ns("m.render()", {"m": metrics}, 200) / 1e6

    sink = LoadSink(0)
    load_stmt = "s.on_sent(1, 0.0002); s.on_answer(0.0013, 0.0011, hops, 1, None)"
    load = per_call_ns(load_stmt, {"s": sink, "hops": hop_spans(route_spans(req.routes), 0.0011)}, n)
    print(json.dumps({
        "relay_hooks_noop_ns_per_request": round(noop),
        "relay_metrics_ns_per_request": round(relay),
        "relay_metrics_added_ns_per_request": round(relay - noop),
        "relay_render_ms": round(render_ms, 3),
        "load_sink_ns_per_request": round(load),
    }, indent=2))


if __name__ == "__main__":
    main()
