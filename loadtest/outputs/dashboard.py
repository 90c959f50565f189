"""The live dashboard of a load run: `flowrelay load ... --dashboard [HOST:]PORT`.

GET `/` is the run's page (loadtest.outputs.report.page: the report's page, live), GET `/events` a stream of
server-sent events: `hello` (what the run is), then one `data:` line per second with that second's row (the keys
of timeseries.jsonl), every row so far first, so a reload keeps the history; `replace` when the run's final sliver
of a second joins the second before it; `thresholds` (each threshold's state: holding, failing now, no figure
yet), `workers` (each worker's rate and health, when a feeder has them), and at the end `summary`: the report's
final sections, after which the page is what report.html shows.

The server runs on threads of its own (loadtest.outputs.http_server), never on a worker's event loop: the run
hands each row over (`add`, a RowSink) and goes on; a browser that stops reading is dropped after a backlog of
`max_backlog` rows (it reconnects and starts from the history). The run never waits for a browser: `close` ends
every stream. Rows are kept in a spool (relay.common.web.events.SpooledRows): the last two minutes in memory,
older ones in an unnamed temporary file, so a run of hours holds a few hundred kilobytes of rows in memory
whatever its length, and a new browser still gets every second from the start.

The serving thread starts with the first row (or `start()`): with `--procs` the workers are forked by then, and
no thread of ours is alive across a fork (a page opened earlier waits in the listen backlog until then).

`DashboardFeed` is what a feeder calls: rows, thresholds' states, workers' health, the summary. In one process
the CLI feeds it (`RunFeed`: rows from run_load's RowSink, thresholds judged by loadtest.outputs.live_thresholds);
a cluster's worker 0 can feed merged rows and its workers' health through the same calls.

Imports: the standard library, relay.common.web, loadtest.config, loadtest.measure.series (a type),
loadtest.outputs (report, live_thresholds, http_server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import urlsplit

from loadtest.config import LoadConfig
from loadtest.measure.series import Interval
from loadtest.outputs.http_server import BackgroundHTTPServer
from loadtest.outputs.live_thresholds import LiveThresholds
from loadtest.outputs.report.page import final_sections, load_page, run_context
from loadtest.outputs.summary import run_fields
from relay.common.web import HTML_CONTENT_TYPE, SSE_CONTENT_TYPE, SSE_KEEPALIVE, SSE_RETRY
from relay.common.web.events import HELLO, EventLog, SpooledRows

DEFAULT_HOST = "127.0.0.1"
EVENTS_PATH = "/events"
KEEPALIVE_S = 15.0
ROWS_IN_MEMORY = 120
MAX_BACKLOG = 600  # rows a browser may fall behind before it is dropped (it reconnects and starts over)
_WRITE_BATCH = 256  # history messages per socket write


def parse_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (an IPv6 host in brackets: `[::1]:8080`) -> (host, port); the host defaults to 127.0.0.1.
    Raises ValueError with a message for the user."""
    text = str(text).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be 0..65535")
    return host, port


def run_info(cfg: LoadConfig) -> dict[str, Any]:
    """What the page says about a run before it has a summary: summary.json's keys, from the configuration."""
    return {**run_fields(cfg, time.time()), "rate": {"target_rps": cfg.target_rps()}}


class DashboardFeed(Protocol):
    """What a live dashboard is told, from whichever process feeds it."""

    def add(self, row: dict[str, Any]) -> None:
        """A second closed: its row (timeseries.jsonl's keys)."""
        ...

    def replace_last(self, row: dict[str, Any]) -> None:
        """The last row again, amended (the run's final sliver of a second joined it)."""
        ...

    def set_thresholds(self, states: list[dict[str, Any]]) -> None:
        """Each threshold's state now (loadtest.outputs.live_thresholds)."""
        ...

    def set_workers(self, workers: list[dict[str, Any]]) -> None:
        """Each worker's health: {worker, healthy, health, sent_rps, ok_rps, errors_rps, age_s}."""
        ...

    def finish(self, summary: dict[str, Any]) -> None:
        """The run is over: its summary (with the thresholds' verdicts)."""
        ...


class DashboardServer:
    """The live page and its event stream on HOST:PORT (a `DashboardFeed`). Binds on construction (raises
    OSError); serves from the first row or `start()`; `close()` ends every stream and stops."""

    def __init__(self, host: str, port: int, run: Mapping[str, Any], linger_s: float = 0.0) -> None:
        self.log = EventLog(SpooledRows(ROWS_IN_MEMORY), max_backlog=MAX_BACKLOG)
        self.log.set_state(HELLO, {"ctx": run_context(run)})
        self._page = load_page(run, [], None, events=EVENTS_PATH.lstrip("/")).encode()
        self._server = BackgroundHTTPServer(host, port, self._handler_class(), "dashboard-http", linger_s)
        self.host = host
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"{self._server.origin}/"

    @property
    def linger_s(self) -> float:
        return self._server.linger_s

    # ---- the feed ------------------------------------------------------------------------------

    def add(self, row: dict[str, Any]) -> None:
        self.log.add_row(row)
        if not self._server.serving:
            self.start()

    def replace_last(self, row: dict[str, Any]) -> None:
        self.log.replace_last_row(row)

    def set_thresholds(self, states: list[dict[str, Any]]) -> None:
        self.log.set_state("thresholds", states)

    def set_workers(self, workers: list[dict[str, Any]]) -> None:
        self.log.set_state("workers", workers)

    def finish(self, summary: dict[str, Any]) -> None:
        self.log.set_state("summary", final_sections(summary, "this run"))

    # ---- serving -------------------------------------------------------------------------------

    def start(self) -> None:
        self._server.start()

    def linger(self) -> None:
        """Keep the page up `linger_s` after the run (a browser may still be reading)."""
        self._server.linger()

    def close(self) -> None:
        """End every stream (the browsers keep what they drew) and stop serving."""
        self.log.close()
        self._server.close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/":
                    self._send(200, HTML_CONTENT_TYPE, server._page)
                elif path == EVENTS_PATH:
                    server._stream(self)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: the dashboard is at / and /events\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        """One browser's event stream, on its request's thread, until the browser or the server goes."""
        wake = threading.Event()
        sub = self.log.subscribe(wake.set)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", SSE_CONTENT_TYPE)
            handler.send_header("Cache-Control", "no-store")
            handler.end_headers()
            out = handler.wfile
            out.write(SSE_RETRY)
            batch: list[bytes] = []
            for message in sub.history:
                batch.append(message)
                if len(batch) >= _WRITE_BATCH:
                    out.write(b"".join(batch))
                    batch.clear()
            out.write(b"".join(batch))
            while True:
                messages = sub.take()
                if messages:
                    out.write(b"".join(messages))
                    continue
                if sub.closed:
                    break
                if not wake.wait(KEEPALIVE_S):
                    out.write(SSE_KEEPALIVE)
                wake.clear()
        except (OSError, ValueError):
            pass  # the browser went away, or the run's rows were closed under a history being read
        finally:
            self.log.unsubscribe(sub)


def run_feed(dashboard: DashboardFeed, cfg: LoadConfig, exprs: Sequence[str], then: Any = None) -> RunFeed:
    """The feed of `cfg`'s run to `dashboard`, its thresholds `exprs` judged against the schedule's target rate."""
    schedule = cfg.schedule() if cfg.replay is None else None  # a replay's schedule comes from its recording
    return RunFeed(dashboard, LiveThresholds(exprs, schedule.target_rate_at if schedule else None), then)


class RunFeed:
    """A run's rows (a RowSink: run_load's, or a cluster's merged seconds) to a results folder's series and to a
    dashboard, with the thresholds judged live."""

    def __init__(self, dashboard: DashboardFeed, thresholds: LiveThresholds, then: Any = None) -> None:
        self.dashboard = dashboard
        self.thresholds = thresholds
        self.then = then  # the results folder's series (a RowSink), written first
        dashboard.set_thresholds(thresholds.states())

    def add(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        if self.then is not None:
            self.then.add(row, interval)
        self.dashboard.add(row)
        self.dashboard.set_thresholds(self.thresholds.on_row(row))

    def replace_last(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        if self.then is not None:
            self.then.replace_last(row, interval)
        self.dashboard.replace_last(row)
