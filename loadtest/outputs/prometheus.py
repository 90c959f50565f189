"""The load engine's Prometheus exporter: `flowrelay load --metrics-port P` serves GET /metrics during a run.

Names, types and labels are the contract in `dashboards/METRICS.md` (`flowrelay_load_*`, every series
with a `worker` label). Histograms use the relay's buckets (`relay.metrics.LATENCY_BUCKETS_S`, 100 µs to
60 s, worst-case `histogram_quantile` error 28 %), so load and relay panels line up; the per-hop spans
come from `loadtest.measure.hops.hop_spans` (computed once per answer by the meter), as in the summary.

One port whatever `--procs` is: the parent process serves, and it alone. With `--procs 1` the worker runs
in the parent and its `LoadSink` is read live at each scrape. With `--procs N` each forked worker counts
into a `LoadSink` of its own and sends a copy of it (`state()`, a few kB) to the parent once a second,
with its time-series interval, and once more when it ends, before its result; the parent keeps the
latest copy per worker and serves them all, each under its `worker` label (at 0 from the start, so that
`rate()` sees the first second). So a scrape sees values at most a second old while the run goes on, and
the exact final counts after it (during `--metrics-linger`). Prometheus scrapes one target, `HOST:P`,
for any number of workers; summing over `worker` gives the run's totals. (Alternatives not taken: a port
per worker makes the scrape config depend on `--procs`; prometheus_client's multiprocess mode needs a
directory of mmapped files, an environment variable set before import, and slower locked counters.)

The server is a small `http.server` on its own thread, bound when the exporter is made (a busy port is
reported before any traffic), serving from `start()`, which the engine calls after forking its workers
so that no thread is alive across a fork. Counts are plain ints bumped by the event loop's thread; a
scrape copies them (list and dict copies are atomic under the GIL).

Counts include warm-up requests (a live view shows the warm-up for what it is); the summary leaves
them out of its figures. A request ends in exactly one of `ok` or `failed{reason}` (`executor: Name`,
`close 1006`, `timeout`, `unanswered`, ...), so at the end `sent == ok + sum(failed)`.

Imports: the standard library, prometheus_client and relay.metrics (buckets and histogram); the hop spans come
computed (loadtest.measure.meter). The engine does not import this module: the CLI hands it to `run_load`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from loadtest.outputs.http_server import BackgroundHTTPServer
from relay.metrics import CONTENT_TYPE, LATENCY_BUCKETS_S, BucketHistogram, capped, histogram_family

__all__ = ["LoadSink", "PrometheusExporter"]

_PREFIX = "flowrelay_load_"
_bisect = bisect_left
_BOUNDS = LATENCY_BUCKETS_S


class LoadSink:
    """One worker's counters and histograms (the engine's `MetricsSink`)."""

    __slots__ = (
        "achieved_rate",
        "docs_received",
        "docs_sent",
        "dropped",
        "failed",
        "hops",
        "latency",
        "ok",
        "scheduler_lag",
        "sent",
        "service_time",
        "target_rate",
        "worker",
    )

    def __init__(self, worker: int = 0) -> None:
        self.worker = worker
        self.sent = 0
        self.ok = 0
        self.dropped = 0
        self.docs_sent = 0
        self.docs_received = 0
        self.failed: dict[str, int] = {}
        self.latency = BucketHistogram()
        self.service_time = BucketHistogram()
        self.scheduler_lag = BucketHistogram()
        self.hops: dict[str, BucketHistogram] = {}
        self.target_rate: float | None = None
        self.achieved_rate = 0.0

    # ---- events, from the worker's event loop --------------------------------------------------

    # BucketHistogram.observe is inlined below (`counts[bisect(...)] += 1; total += v`): these run for
    # every request, and with hops six times per answer.

    def on_sent(self, docs: int, lag_s: float) -> None:
        self.sent += 1
        self.docs_sent += docs
        hist = self.scheduler_lag
        hist.counts[_bisect(_BOUNDS, lag_s)] += 1
        hist.total += lag_s

    def on_answer(self, latency_s: float, service_s: float, hops: Mapping[str, float] | None, docs: int,
                  error: str | None) -> None:
        self.docs_received += docs
        if error is not None:
            self.on_failure("executor: " + error)
            return
        self.ok += 1
        hist = self.latency
        hist.counts[_bisect(_BOUNDS, latency_s)] += 1
        hist.total += latency_s
        hist = self.service_time
        hist.counts[_bisect(_BOUNDS, service_s)] += 1
        hist.total += service_s
        if hops:
            by_hop = self.hops
            for name, span_s in hops.items():
                hist = by_hop.get(name)
                if hist is None:
                    label = capped(by_hop, name)
                    hist = by_hop.get(label)
                    if hist is None:
                        hist = by_hop[label] = BucketHistogram()
                hist.counts[_bisect(_BOUNDS, span_s)] += 1
                hist.total += span_s

    def on_failure(self, reason: str) -> None:
        failed = self.failed
        if reason not in failed:
            reason = capped(failed, reason)
        failed[reason] = failed.get(reason, 0) + 1

    def on_dropped(self) -> None:
        self.dropped += 1

    def on_tick(self, target_rate: float | None, achieved_rate: float) -> None:
        self.target_rate = target_rate
        self.achieved_rate = achieved_rate

    @property
    def in_flight(self) -> int:
        """Sent and not yet ended, from the counts themselves (so it agrees with them at every scrape)."""
        return self.sent - self.ok - sum(self.failed.values())

    # ---- crossing a process boundary -----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "sent": self.sent,
            "ok": self.ok,
            "dropped": self.dropped,
            "docs_sent": self.docs_sent,
            "docs_received": self.docs_received,
            "failed": dict(self.failed),
            "latency": self.latency.state(),
            "service_time": self.service_time.state(),
            "scheduler_lag": self.scheduler_lag.state(),
            "hops": {name: h.state() for name, h in list(self.hops.items())},
            "target_rate": self.target_rate,
            "achieved_rate": self.achieved_rate,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LoadSink:
        sink = cls(int(state["worker"]))
        for key in ("sent", "ok", "dropped", "docs_sent", "docs_received"):
            setattr(sink, key, int(state[key]))
        sink.failed = {str(k): int(v) for k, v in state["failed"].items()}
        sink.latency = BucketHistogram.from_state(state["latency"])
        sink.service_time = BucketHistogram.from_state(state["service_time"])
        sink.scheduler_lag = BucketHistogram.from_state(state["scheduler_lag"])
        sink.hops = {str(k): BucketHistogram.from_state(v) for k, v in state["hops"].items()}
        sink.target_rate = None if state["target_rate"] is None else float(state["target_rate"])
        sink.achieved_rate = float(state["achieved_rate"])
        return sink


def _make_sink(worker: int) -> LoadSink:
    return LoadSink(worker)


class PrometheusExporter:
    """Serves every worker's `LoadSink` at GET /metrics on HOST:PORT (the engine's `MetricsExporter`).

    Binds on construction (raises OSError if it cannot); `start()` serves; `linger()` waits out
    `linger_s`; `close()` stops. Also a context manager that closes.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", linger_s: float = 0.0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a custom collector: see collect()
        self._sinks: dict[int, LoadSink] = {}
        self._server = BackgroundHTTPServer(host, port, self._handler_class(), "metrics-http", linger_s)
        self.host = host
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"{self._server.origin}/metrics"

    @property
    def linger_s(self) -> float:
        return self._server.linger_s

    # ---- the engine's side ---------------------------------------------------------------------

    def sink(self, worker: int) -> LoadSink:
        sink = self._sinks[worker] = LoadSink(worker)
        return sink

    def sink_factory(self) -> Callable[[int], LoadSink]:
        return _make_sink

    def update(self, worker: int, state: dict[str, Any]) -> None:
        self._sinks[worker] = LoadSink.from_state(state)

    def start(self) -> None:
        self._server.start()

    # ---- the caller's side ---------------------------------------------------------------------

    def linger(self) -> None:
        """Keep serving `linger_s` after the run, so that a scraper takes the final values."""
        self._server.linger()

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> PrometheusExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- exposition ----------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        sinks = sorted(list(self._sinks.items()))
        rows = [(str(w), s) for w, s in sinks]

        def counter(name: str, doc: str, attr: str) -> CounterMetricFamily:
            c = CounterMetricFamily(_PREFIX + name, doc, labels=["worker"])
            for w, s in rows:
                c.add_metric([w], getattr(s, attr))
            return c

        yield counter("requests_sent", "Requests sent", "sent")
        yield counter("requests_ok", "Requests answered with success", "ok")
        failed = CounterMetricFamily(_PREFIX + "requests_failed", "Requests failed, by reason",
                                     labels=["worker", "reason"])
        for w, s in rows:
            for reason, n in sorted(list(s.failed.items())):
                failed.add_metric([w, reason], n)
        yield failed
        yield counter("requests_dropped", "Requests due but not sent: every connection was at its in-flight limit",
                      "dropped")
        in_flight = GaugeMetricFamily(_PREFIX + "requests_in_flight", "Requests sent and not yet answered",
                                      labels=["worker"])
        target = GaugeMetricFamily(_PREFIX + "target_rate", "The schedule's target rate now (this worker's "
                                   "share), requests/s", labels=["worker"])
        achieved = GaugeMetricFamily(_PREFIX + "achieved_rate", "Requests sent per second over the last interval",
                                     labels=["worker"])
        for w, s in rows:
            in_flight.add_metric([w], s.in_flight)
            if s.target_rate is not None:  # the closed model has no target rate
                target.add_metric([w], s.target_rate)
            achieved.add_metric([w], s.achieved_rate)
        yield in_flight
        yield target
        yield achieved
        yield counter("docs_sent", "Documents sent", "docs_sent")
        yield counter("docs_received", "Documents received", "docs_received")
        for attr, name, doc in (
            ("latency", "latency_seconds", "Answer time minus intended send time (ok answers)"),
            ("service_time", "service_time_seconds", "Answer time minus actual send time (ok answers)"),
            ("scheduler_lag", "scheduler_lag_seconds", "Actual send time minus intended send time"),
        ):
            yield histogram_family(_PREFIX + name, doc, ["worker"], (([w], getattr(s, attr)) for w, s in rows))
        yield histogram_family(
            _PREFIX + "hop_seconds",
            "Per-hop spans from routes: gateway, each Executor, outside_gateway (ok answers)",
            ["worker", "hop"],
            (([w, hop], h) for w, s in rows for hop, h in sorted(list(s.hops.items()))),
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in ("/metrics", "/"):
                    self.send_error(404, "GET /metrics")
                    return
                body = exporter.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape a second would flood the terminal

        return Handler
