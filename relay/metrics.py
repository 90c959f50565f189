"""The relay's Prometheus exporter: the `Observer` hooks counted in memory, GET `/metrics` renders them.

Names, types and labels are the contract in `dashboards/METRICS.md`. The relay serves the text
exposition format (`text/plain; version=0.0.4`) on its own port, next to `/status`, through
an extra route of the HTTP door (relay.doors.http); `flowrelay.cli.serve` wires it in for every `flowrelay serve`.

Why not prometheus_client's `Counter`/`Histogram` objects: `Histogram.observe()` walks the buckets one by
one and every increment takes a lock, so one observation costs 0.6-0.9 µs and a labelled `inc()` 0.9 µs
here: about 4 µs for the calls one request makes. The hooks run on the relay's per-message path, in one
thread (the event loop, which also answers `/metrics`), so here they only bump plain ints and find a
bucket with `bisect`. Measured with `python bench/metrics_cost.py`: about 0.6 µs added per request through
two Executors (the relay spends ~26 µs of CPU per request, see bench/results), and ~1 ms to render
/metrics once (a pause of the event loop per scrape).
prometheus_client still does the rest: a registry of this exporter's own (never the global one), the
metric families and the exposition.

Buckets: `relay.common.buckets` (shared with the load engine's exporter, so relay and load histograms
line up in a dashboard).

Native histograms: not offered. prometheus_client (0.26 here) has no native-histogram instrument, and
Prometheus ingests native histograms only from the protobuf exposition format, which prometheus_client
does not write (it can emit a native sample only in the experimental OpenMetrics 2.0 text, which
Prometheus does not scrape). The classic buckets above are the honest alternative.

Label values that come from clients (endpoints, close codes received) are capped at `MAX_LABEL_VALUES`
distinct per label, then `other`. Executor names come from the relay's configuration or, relaying to an
upstream Flow, from its routes: capped the same way.

Imports: the standard library, prometheus_client, relay.common.buckets, relay.observer and relay.wire.messages.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from relay.common.buckets import CONTENT_TYPE, LATENCY_BUCKETS_S, BucketHistogram, capped, histogram_family
from relay.observer import REFUSAL_REASONS, Observer
from relay.wire.messages import DataRequest

__all__ = ["RelayMetrics"]

_bisect = bisect_left
_BOUNDS = LATENCY_BUCKETS_S


class _Endpoint:
    __slots__ = ("duration", "error", "ok")

    def __init__(self) -> None:
        self.ok = 0
        self.error = 0
        self.duration = BucketHistogram()


class RelayMetrics(Observer):
    """The relay's metrics, counted from the gateway's and the server's hooks; `render()` is the body of GET
    /metrics."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.connections_open: dict[str, int] = {}
        self.connections_total: dict[str, int] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.executors: dict[str, BucketHistogram] = {}
        # door -> [ok, error]: the doors are the relay's own names, a handful.
        self.doors: dict[str, list[int]] = {}
        # (code, direction) -> count; received codes are client-supplied, so each direction is capped.
        self.closes: dict[tuple[str, str], int] = {}
        self._close_codes: dict[str, dict[str, None]] = {"sent": {}, "received": {}}
        # Every reason is shown from the start, at 0: a refusal is rare, and rate() needs the series before it.
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        # The shadow Flow's answers (`--mirror`); the series appear with the first mirrored request.
        self.mirror_outcomes: dict[str, int] = {}
        self.mirror_duration = BucketHistogram()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a custom collector: see collect()

    # ---- Observer hooks (the per-message path: keep them short) --------------------------------

    def connection_opened(self, subprotocol: str) -> None:
        self.connections_open[subprotocol] = self.connections_open.get(subprotocol, 0) + 1
        self.connections_total[subprotocol] = self.connections_total.get(subprotocol, 0) + 1

    def connection_closed(self, subprotocol: str, code_sent: int | None, code_received: int | None) -> None:
        self.connections_open[subprotocol] = self.connections_open.get(subprotocol, 0) - 1
        if code_sent is not None:
            self._close("sent", code_sent)
        elif code_received is not None:
            # Only a close the client started: when the relay closed first, the client's frame is its echo.
            self._close("received", code_received)
        else:
            # No close frame either way: the TCP connection dropped, which RFC 6455 reports as 1006.
            self._close("received", 1006)

    def connection_refused(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def request_started(self, endpoint: str) -> None:
        self.in_flight += 1

    def request_finished(self, req: DataRequest, duration_s: float, door: str) -> None:
        self.in_flight -= 1
        ep = self.endpoints.get(req.exec_endpoint)  # type: ignore[arg-type]
        if ep is None:
            ep = self._endpoint(req.exec_endpoint or "/")
        status = req.status
        failed = status is not None and status.code >= 1
        if failed:
            ep.error += 1
        else:
            ep.ok += 1
        by_door = self.doors.get(door)
        if by_door is None:
            by_door = self.doors[door] = [0, 0]
        by_door[failed] += 1
        # BucketHistogram.observe, inlined: this runs for every request and every Executor of it.
        hist = ep.duration
        hist.counts[_bisect(_BOUNDS, duration_s)] += 1
        hist.total += duration_s
        routes = req.routes
        if len(routes) < 2:
            return
        executors = self.executors
        # routes[0] is the gateway's own entry (the span above); the rest are the Executors'.
        for route in routes[1:]:
            end = route.end_ns
            if end is None:  # an Executor skipped by targetExecutor
                continue
            hist = executors.get(route.executor)
            if hist is None:
                hist = self._executor(route.executor)
            span_s = (end - route.start_ns) / 1e9  # type: ignore[operator]
            hist.counts[_bisect(_BOUNDS, span_s)] += 1
            hist.total += span_s

    def bytes_in(self, n: int) -> None:
        self.bytes_received += n

    def bytes_out(self, n: int) -> None:
        self.bytes_sent += n

    def mirror_finished(self, ok: bool, duration_s: float) -> None:
        outcome = "ok" if ok else "error"
        self.mirror_outcomes[outcome] = self.mirror_outcomes.get(outcome, 0) + 1
        self.mirror_duration.observe(duration_s)

    # ---- first sight of a label value ----------------------------------------------------------

    def _endpoint(self, name: str) -> _Endpoint:
        label = capped(self.endpoints, name)
        ep = self.endpoints.get(label)
        if ep is None:
            ep = self.endpoints[label] = _Endpoint()
        return ep

    def _executor(self, name: str) -> BucketHistogram:
        label = capped(self.executors, name)
        hist = self.executors.get(label)
        if hist is None:
            hist = self.executors[label] = BucketHistogram()
        return hist

    def _close(self, direction: str, code: int) -> None:
        seen = self._close_codes[direction]
        label = capped(seen, str(code))
        seen[label] = None
        key = (label, direction)
        self.closes[key] = self.closes.get(key, 0) + 1

    # ---- exposition ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        p = "flowrelay_relay_"
        g = GaugeMetricFamily(p + "connections_open", "WebSocket connections open now", labels=["subprotocol"])
        for sp, n in sorted(self.connections_open.items()):
            g.add_metric([sp], n)
        yield g
        yield _counters(p + "connections", "WebSocket connections accepted", ["subprotocol"],
                        self.connections_total)
        yield _counters(p + "connections_refused", "Clients refused for want of capacity: fd_limit (out of file "
                        "descriptors at accept), max_connections (HTTP 503 past --max-connections)", ["reason"],
                        self.refused)
        c = CounterMetricFamily(p + "requests", "Requests answered, by endpoint and outcome (ok, error: an "
                                "Executor raised)", labels=["endpoint", "outcome"])
        endpoints = sorted(self.endpoints.items())
        for name, ep in endpoints:
            c.add_metric([name, "ok"], ep.ok)
            c.add_metric([name, "error"], ep.error)
        yield c
        c = CounterMetricFamily(p + "door_requests", "Requests answered, by the door they came in through "
                                "(websocket, http, graphql, grpc) and outcome", labels=["door", "outcome"])
        for door, (ok, error) in sorted(self.doors.items()):
            c.add_metric([door, "ok"], ok)
            c.add_metric([door, "error"], error)
        yield c
        yield GaugeMetricFamily(p + "requests_in_flight", "Requests admitted and not yet answered",
                                value=self.in_flight)
        yield histogram_family(p + "request_duration_seconds", "The gateway span: admission to response ready",
                               ["endpoint"], (([name], ep.duration) for name, ep in endpoints))
        yield histogram_family(p + "executor_duration_seconds", "Each Executor's span, from its route entry",
                               ["executor"], (([name], h) for name, h in sorted(self.executors.items())))
        yield CounterMetricFamily(p + "received_bytes", "Request payload bytes read", value=self.bytes_received)
        yield CounterMetricFamily(p + "sent_bytes", "Response payload bytes written", value=self.bytes_sent)
        yield _counters(p + "closes", "WebSocket close codes sent by the relay and received from clients",
                        ["code", "direction"], self.closes)
        if self.mirror_outcomes:
            yield _counters(p + "mirror_requests", "Copies of requests answered by the shadow Flow (--mirror), by "
                            "outcome (ok, error: an error status or no answer)", ["outcome"],
                            self.mirror_outcomes)
            yield histogram_family(p + "mirror_duration_seconds", "The shadow Flow's time to answer a copy",
                                   [], [([], self.mirror_duration)])

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def http_handler(self) -> tuple[int, str, bytes]:
        """The HTTP door's extra route `/metrics`: status, content type, body."""
        return 200, CONTENT_TYPE, self.render()



def _counters(name: str, documentation: str, labels: list[str],
              counts: Mapping[str, int] | Mapping[tuple[str, ...], int]) -> CounterMetricFamily:
    """A counter family from counts keyed by their label value (or values, for several labels), in label order."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family
