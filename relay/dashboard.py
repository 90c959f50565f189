"""The relay's live dashboard: GET `/dashboard` (the page) and `/dashboard/events` (server-sent events).

Once a second, on the relay's event loop, the dashboard reads the counters the Prometheus exporter already keeps
(relay.metrics.RelayMetrics: connections, requests by outcome, the gateway span's and each Executor's bucket
histograms, close codes) and turns the second's differences into a row: connections open and opened, requests
and errors per second, in flight, the gateway span's p50/p90/p99 and each Executor's (an upstream Flow's entries
included) p50/p99, close codes, and the upstream's health. Nothing is added to the per-request path: the cost is
one such read a second, plus each browser's share of the stream (`python bench/metrics_cost.py` measures it).
Percentiles come from the Prometheus buckets (relay.common.buckets: ten per decade), so they are within the
buckets' 28 % of the truth, like a Grafana panel's `histogram_quantile`.

A browser first gets the last hour of rows (a bounded window, in memory), then one row a second. The pages sit
behind `--auth-token` like `/status` and `/metrics` (a browser passes `?token=`; the page hands its own query
string on to the event stream).

The dashboard is wired by flowrelay.cli.serve: its pages are extra routes of the HTTP door (`routes()`), its
sampling a task of the relay's lifetime (`run()`).

Imports: anyio, the standard library, relay.common, relay.gateway, relay.metrics, relay.net.http_types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from html import escape
from typing import Any

import anyio

from relay.common.buckets import LATENCY_BUCKETS_S, bucket_quantile
from relay.common.web import HTML_CONTENT_TYPE, SSE_CONTENT_TYPE, SSE_KEEPALIVE, SSE_RETRY, chart_box, render_page
from relay.common.web.events import HELLO, EventLog, MemoryRows
from relay.gateway import Gateway
from relay.metrics import RelayMetrics
from relay.net.http_types import HttpResponse

PAGE_PATH = "/dashboard"
EVENTS_PATH = "/dashboard/events"
INTERVAL_S = 1.0
HISTORY_ROWS = 3600  # an hour of seconds
KEEPALIVE_S = 15.0

_COLORS = ("#4c78a8", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")
_CLOSE_COLORS = ("#54a24b", "#4c78a8", "#e45756", "#f58518", "#b279a2", "#9d755d", "#eeca3b", "#bab0ac")
TIME = "time (s)"


def _time(chart_id: str, title: str, y: str, series: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": chart_id, "kind": "time", "title": title, "x": TIME, "y": y, "series": series, **extra}


CHARTS: list[dict[str, Any]] = [
    _time("fig-relay-requests", "Requests per second", "requests per second (req/s)", [
        {"label": "ok/s", "key": "ok_rps", "color": "#54a24b"},
        {"label": "errors/s", "key": "errors_rps", "color": "#e45756"},
    ]),
    _time("fig-relay-latency", "Latency at the relay (admission to answer ready)", "latency (ms)", [
        {"label": "p50", "key": "p50_ms", "color": "#4c78a8"},
        {"label": "p90", "key": "p90_ms", "color": "#72b7b2"},
        {"label": "p99", "key": "p99_ms", "color": "#f58518"},
        {"label": "mean", "key": "mean_ms", "color": "#9d755d", "dash": True, "show": False},
    ], toggle_log=True, note="From the Prometheus buckets (ten per decade): within 28 % of the true value."),
    _time("fig-relay-executors", "Per Executor and upstream (p50 of each second)", "time per request (ms)", [
        {"map": "executors", "field": "p50_ms", "palette": list(_COLORS)},
        {"map": "executors", "field": "p99_ms", "palette": list(_COLORS), "prefix": "p99 ", "dash": True,
         "show": False},
    ], toggle_log=True, empty="no Executor spans yet"),
    _time("fig-relay-connections", "Connections", "connections", [
        {"label": "open", "key": "connections", "color": "#4c78a8"},
        {"label": "opened/s", "key": "opened", "per_second": True, "color": "#54a24b", "dash": True},
        {"label": "refused/s", "key": "refused", "per_second": True, "color": "#e45756", "if_any": True},
        {"label": "requests in flight", "key": "in_flight", "color": "#b279a2"},
    ], height=260),
    _time("fig-relay-closes", "Close codes per second", "closes per second (1/s)", [
        {"map": "closes", "per_second": True, "palette": list(_CLOSE_COLORS)},
    ], bars=True, stacked=True, height=260, empty="no connection closed yet"),
    _time("fig-relay-upstream", "Upstream links connected", "links", [
        {"label": "connected", "key": "upstream_links", "color": "#54a24b", "if_present": True},
        {"label": "in flight upstream", "key": "upstream_in_flight", "color": "#b279a2", "dash": True,
         "if_present": True},
    ], height=220, empty="no upstream: the relay runs its own Executors"),
]
TILES = [
    {"key": "connections", "label": "connections", "unit": "", "fmt": "count"},
    {"key": "ok_rps", "label": "ok", "unit": "req/s", "fmt": "rate"},
    {"key": "errors_rps", "label": "errors", "unit": "/s", "fmt": "rate"},
    {"key": "p50_ms", "label": "latency p50", "unit": "ms", "fmt": "ms"},
    {"key": "p99_ms", "label": "latency p99", "unit": "ms", "fmt": "ms"},
    {"key": "in_flight", "label": "in flight", "unit": "", "fmt": "count"},
    {"key": "upstream", "label": "upstream", "unit": "", "fmt": "text"},
]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _figures(counts: list[int], total_s: float) -> dict[str, Any]:
    """p50/p90/p99/mean in ms, and the count, of one second's bucket counts."""
    n = sum(counts)
    return {"p50_ms": _ms(bucket_quantile(0.5, counts)), "p90_ms": _ms(bucket_quantile(0.9, counts)),
            "p99_ms": _ms(bucket_quantile(0.99, counts)), "mean_ms": _ms(total_s / n) if n else None, "count": n}


def _minus(now: tuple[list[int], float], before: tuple[list[int], float] | None) -> tuple[list[int], float]:
    if before is None:
        return now
    return [a - b for a, b in zip(now[0], before[0], strict=True)], now[1] - before[1]


class _Reading:
    """The exporter's cumulative counters at one moment (copies: the relay counts on)."""

    def __init__(self, m: RelayMetrics) -> None:
        self.at = time.monotonic()
        self.opened = sum(m.connections_total.values())
        self.refused = sum(m.refused.values())
        self.ok = sum(ep.ok for ep in m.endpoints.values())
        self.errors = sum(ep.error for ep in m.endpoints.values())
        duration = [0] * (len(LATENCY_BUCKETS_S) + 1)
        total = 0.0
        for ep in m.endpoints.values():
            for i, count in enumerate(ep.duration.counts):
                duration[i] += count
            total += ep.duration.total
        self.duration = (duration, total)
        self.executors = {name: h.state() for name, h in m.executors.items()}
        self.closes = {f"{code} {direction}": n for (code, direction), n in m.closes.items()}


class RelayDashboard:
    """Samples a relay's metrics once a second and serves the page and its event stream."""

    def __init__(self, gateway: Gateway, metrics: RelayMetrics, history_rows: int = HISTORY_ROWS) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.log = EventLog(MemoryRows(history_rows))
        self.log.set_state(HELLO, {"ctx": {}})
        # Where the relay listens, for the page's header (known once it listens: set by whoever wires it).
        self.where: Callable[[], str] = lambda: f"{gateway.config.host}:{gateway.config.port}"
        self._started = time.monotonic()
        self._last = _Reading(metrics)
        self._page: bytes | None = None

    def routes(self) -> dict[str, Callable[[], tuple[int, str, bytes] | HttpResponse]]:
        """The pages, as extra GET routes of the HTTP door."""
        return {PAGE_PATH: self._page_response, EVENTS_PATH: self._events_response}

    async def run(self) -> None:
        """Sample once a second for as long as the relay lives; open streams end with it."""
        try:
            while True:
                # A wake-up a little early or late only changes the second's length, which the row carries.
                await anyio.sleep(INTERVAL_S)
                self.log.add_row(self.sample())
        finally:
            self.log.close()

    # ---- once a second ---------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """The row of the second since the last sample (and start the next)."""
        m = self.metrics
        now, before = _Reading(m), self._last
        self._last = now
        interval_s = max(now.at - before.at, 1e-9)
        ok, errors = now.ok - before.ok, now.errors - before.errors
        duration = _minus(now.duration, before.duration)
        executors = {}
        for name, state in now.executors.items():
            counts, total = _minus(state, before.executors.get(name))
            if sum(counts):
                executors[name] = _figures(counts, total)
        closes = {k: n - before.closes.get(k, 0) for k, n in now.closes.items() if n - before.closes.get(k, 0)}
        row: dict[str, Any] = {
            "t": round(now.at - self._started, 3),
            "interval_s": round(interval_s, 6),
            "connections": sum(m.connections_open.values()),
            "opened": now.opened - before.opened,
            "refused": now.refused - before.refused,
            "ok": ok,
            "errors": errors,
            "ok_rps": round(ok / interval_s, 3),
            "errors_rps": round(errors / interval_s, 3),
            "in_flight": m.in_flight,
            **{k: v for k, v in _figures(*duration).items() if k != "count"},
            "executors": executors,
            "closes": closes,
            "bytes_in": m.bytes_received,
            "bytes_out": m.bytes_sent,
        }
        row.update(self._upstream())
        return row

    def _upstream(self) -> dict[str, Any]:
        upstream = self.gateway.backend.status().get("upstream")
        if not upstream:
            return {"upstream": "none (built-in Executors)", "upstream_links": None, "upstream_in_flight": None}
        links = f"{upstream.get('connected_links')} of {upstream.get('links')} links"
        state = f"healthy, {links}" if upstream.get("healthy") else f"down ({links}): {upstream.get('last_error')}"
        return {"upstream": state, "upstream_links": upstream.get("connected_links"),
                "upstream_in_flight": upstream.get("in_flight")}

    # ---- HTTP ------------------------------------------------------------------------------------

    def _page_response(self) -> tuple[int, str, bytes]:
        if self._page is None:
            self._page = self._render().encode()
        return 200, HTML_CONTENT_TYPE, self._page

    def _events_response(self) -> HttpResponse:
        return HttpResponse(200, [("content-type", SSE_CONTENT_TYPE), ("cache-control", "no-store")],
                            stream=self._stream())

    async def _stream(self) -> AsyncIterator[bytes]:
        woken = asyncio.Event()
        loop = asyncio.get_running_loop()
        sub = self.log.subscribe(lambda: loop.call_soon_threadsafe(woken.set))
        try:
            yield SSE_RETRY + b"".join(sub.history)
            while True:
                messages = sub.take()
                if messages:
                    yield b"".join(messages)
                    continue
                if sub.closed:
                    return
                try:
                    await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield SSE_KEEPALIVE
                woken.clear()
        finally:
            self.log.unsubscribe(sub)

    def _render(self) -> str:
        cfg = self.gateway.config
        where = f"{'wss' if cfg.certfile else 'ws'}://{self.where()}/"
        charts = {c["id"]: c for c in CHARTS}
        body = "\n".join([
            '<section id="now"><h2>Now <span class="status" data-slot="now-t"></span></h2>'
            '<div class="tiles" data-slot="now-tiles"></div></section>',
            '<section id="requests"><h2>Requests</h2>' + chart_box(charts["fig-relay-requests"])
            + chart_box(charts["fig-relay-latency"]) + chart_box(charts["fig-relay-executors"]) + "</section>",
            '<section id="connections"><h2>Connections</h2><div class="grid2">'
            + chart_box(charts["fig-relay-connections"]) + chart_box(charts["fig-relay-closes"]) + "</div>"
            '<p class="note">Close codes: 1000 normal, 1001 the relay stopping, 1003/1007/1009 bad input, 1006 '
            "the connection dropped with no close frame, 1011 a keepalive ping unanswered.</p></section>",
            '<section id="upstream"><h2>Upstream</h2>' + chart_box(charts["fig-relay-upstream"]) + "</section>",
        ])
        header = ('<h1>flowrelay relay dashboard <span data-slot="badge"><span class="badge live">live</span></span>'
                  '<span class="status" data-slot="status"></span></h1>'
                  f'<div class="sub"><code>{escape(where)}</code> · {escape(self.gateway.backend.describe())}</div>')
        data = {"live": True, "events": EVENTS_PATH, "fold": False,
                "rows": [[]], "ctx": {}, "tiles": TILES, "charts": CHARTS}
        return render_page(title=f"flowrelay relay: {where}", header=header,
                           nav=(("now", "Now"), ("requests", "Requests"), ("connections", "Connections"),
                                ("upstream", "Upstream")),
                           body=body, data=data,
                           footer="flowrelay relay dashboard · charts by uPlot (MIT), served by the relay: this page "
                           "needs no network beyond the relay")
