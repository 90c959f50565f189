"""What the relay's dashboard costs the relay: nothing per request; a sample a second; each browser's stream.

The dashboard (relay/dashboard.py) adds no code to the per-request path: it reads the Prometheus exporter's
counters, which every `flowrelay serve` keeps anyway, once a second. So its cost is

  1. the once-a-second sample (read the counters, compute the second's percentiles from the buckets, encode the
     row, hand it to the event log), timed here with timeit on an exporter that has seen requests through three
     Executors, two endpoints and a few close codes; as a share of the relay's CPU it is that time over the CPU
     the relay spends on a second of requests at RATE;
  2. what the browsers watching add: measured end to end, a `flowrelay serve` subprocess at a fixed open-model
     rate (`flowrelay load`), its CPU per answered request with no browser and with BROWSERS event streams read
     at once, interleaved, medians of the repetitions.

    python bench/dashboard_cost.py [--rate 2000] [--browsers 2] [--duration 10] [--reps 3]

Goal: under 1 % of the relay's CPU per request.
"""

from __future__ import annotations

import asyncio
import threading
import timeit
from typing import Any

import common as c

from relay.dashboard import RelayDashboard
from relay.executors import Chain
from relay.metrics import RelayMetrics
from relay.server import RelayConfig, RelayServer
from relay.wire.messages import DataRequest, Route, Status

EXECUTORS = ("upper", "sleeper=sleep:1ms", "embed:64")


def _busy_metrics() -> RelayMetrics:
    """An exporter that has counted requests through three Executors on two endpoints, and a few closes."""
    metrics = RelayMetrics()
    t = 1_700_000_000_000_000_000
    for i in range(20_000):
        metrics.request_started("/index")
        routes = [Route("gateway", t, t + 1_400_000 + i % 977 * 1000), Route("upper", t + 10_000, t + 40_000),
                  Route("sleeper", t + 40_000, t + 1_100_000 + i % 313 * 1000),
                  Route("embed", t + 1_100_000, t + 1_300_000)]
        req = DataRequest(request_id="r", exec_endpoint="/index" if i % 3 else "/search", routes=routes,
                          status=Status(code=1 if i % 50 == 0 else 0))
        metrics.request_finished(req, 0.0014 + (i % 977) * 1e-6, "websocket")
    for code in (1000, 1001, 1006):
        metrics.connection_opened("bytes")
        metrics.connection_closed("bytes", code, None)
    return metrics


def sample_us(number: int) -> float:
    """One second's sample and its hand-over to a subscribed browser, in microseconds."""

    async def measure() -> float:
        server = RelayServer(RelayConfig(port=0), Chain.from_specs(list(EXECUTORS)))
        metrics = _busy_metrics()
        dashboard = RelayDashboard(server, metrics)
        browser = dashboard.log.subscribe(lambda: None)

        def one() -> None:
            dashboard.log.add_row(dashboard.sample())
            browser.take()

        best = min(timeit.repeat(one, number=number, repeat=5)) / number
        dashboard.close()
        return best * 1e6

    return asyncio.run(measure())


def _read_streams(url: str, n: int, stop: threading.Event) -> list[threading.Thread]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)

    def read() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        conn.request("GET", parts.path)
        response = conn.getresponse()
        while not stop.is_set():
            try:
                if not response.readline():
                    break
            except OSError:
                continue
        conn.close()

    threads = [threading.Thread(target=read, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def end_to_end(rate: int, duration_s: float, browsers: int) -> dict[str, Any]:
    """Relay CPU per answered request at `rate`, with `browsers` event streams read (0: none)."""
    with c.relay_server(*EXECUTORS) as relay:
        port = int(relay.url.rsplit(":", 1)[1])
        stop = threading.Event()
        readers = _read_streams(f"http://127.0.0.1:{port}/dashboard/events", browsers, stop) if browsers else []
        try:
            cpu0 = c.proc_cpu_s(relay.pids())
            summary, _ = c.flowrelay_load([relay.url, "--rate", str(rate), "--duration", f"{duration_s}s",
                                           "--connections", "4", "--endpoint", "/index"], timeout_s=duration_s + 60)
            cpu = c.proc_cpu_s(relay.pids()) - cpu0
        finally:
            stop.set()
            for t in readers:
                t.join(timeout=5)
    ok = summary["requests"]["ok"] + summary["requests"]["failed"]
    return {"answered": ok, "relay_cpu_s": cpu, "relay_cpu_us_per_request": cpu / ok * 1e6 if ok else float("nan")}


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--rate", type=int, default=2000, help="requests per second (default 2000)")
    p.add_argument("--browsers", type=int, default=2, help="event streams read at once (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    args = p.parse_args()
    duration = 5.0 if args.quick else args.duration
    load_before = c.header(f"relay dashboard cost: {', '.join(EXECUTORS)}; {args.rate}/s for {duration:g} s",
                           args.wait_quiet)
    noise = c.Noise()
    sample = sample_us(200)
    print(f"  the once-a-second sample: {sample:.1f} us", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"no browser": [], f"{args.browsers} browsers": []}
    for rep in range(args.reps):
        for name, n in (("no browser", 0), (f"{args.browsers} browsers", args.browsers)):
            result = end_to_end(args.rate, duration, n)
            runs[name].append(result)
            print(f"  rep {rep + 1} {name}: {result['relay_cpu_us_per_request']:.2f} us of relay CPU per request "
                  f"({result['answered']} answered)", flush=True)
    medians = {name: c.median([r["relay_cpu_us_per_request"] for r in rs]) for name, rs in runs.items()}
    base = medians["no browser"]
    with_browsers = medians[f"{args.browsers} browsers"]
    sample_share = sample / (args.rate * base) if base else float("nan")  # us per second over us per second
    stream_share = (with_browsers - base) / base if base else float("nan")
    print()
    print(c.table(["", "relay CPU us/request (median)", "reps"], [
        [name, medians[name], c.spread([r["relay_cpu_us_per_request"] for r in rs])] for name, rs in runs.items()]))
    print("\nper request: nothing added on the hot path (the counters are the Prometheus exporter's)")
    print(f"the sample: {sample:.1f} us a second = {sample_share * 100:.3f} % of the relay's CPU at {args.rate}/s")
    print(f"{args.browsers} browsers watching: {stream_share * 100:+.2f} % relay CPU per request "
          f"(goal < 1 %: {'met' if sample_share + max(stream_share, 0) < 0.01 else 'NOT met'})")
    load_after = c.load_average()
    report = noise.report()
    print(c.noise_line(report))
    c.write_results("dashboard_cost", {
        "benchmark": "dashboard_cost",
        "command": "python bench/dashboard_cost.py" + (" --quick" if args.quick else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": report,
        "rate": args.rate,
        "duration_s": duration,
        "browsers": args.browsers,
        "executors": list(EXECUTORS),
        "sample_us": sample,
        "sample_share_of_relay_cpu": sample_share,
        "runs": runs,
        "median_relay_cpu_us_per_request": medians,
        "browsers_added_share": stream_share,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
