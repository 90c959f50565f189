"""The relay's dashboard: `flowrelay serve` serves `/dashboard` and `/dashboard/events` behind `--auth-token`.

A relay subprocess on 127.0.0.1 with a token gets traffic over its HTTP door (POST /post, a 2 % failing
Executor) and WebSocket sessions that open and close; the event stream then carries a row a second with the
requests and errors, the gateway span's and each Executor's percentiles, the connections and close codes. In a
real Chromium the page shows the stream's numbers, a reload shows the earlier seconds, and nothing is asked of
any other host.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from browser_harness import chart_states, chromium, clear_logs, drawn, page_errors, requested_urls, wait_for
from dashboard_helpers import get, wait_until
from relay_process import run_relay
from sse_helpers import EventStream
from websockets.sync.client import connect

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOW = ("-e", "upper", "-e", "sleeper=sleep:2ms", "-e", "fail:0.02", "--auth-token", TOKEN)
TIMEOUT_S = 40.0


class Traffic:
    """POST /post with the token, about 100 a second, and a WebSocket session opened and closed each second."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        body = orjson.dumps({"data": [{"text": "hello"}], "execEndpoint": "/"})
        next_ws = 0.0
        while not self.stop.is_set():
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}/post", data=body,
                                             headers={**AUTH, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            self.sent += 1
            if time.monotonic() >= next_ws:
                next_ws = time.monotonic() + 1.0
                with connect(f"ws://127.0.0.1:{self.port}/", additional_headers=AUTH, subprotocols=["json"]):
                    pass  # a normal close: code 1000 from the client
            self.stop.wait(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def test_relay_serves_its_dashboard_behind_the_token() -> None:
    with run_relay("--log-level", "WARNING", *FLOW) as relay:
        base = f"http://127.0.0.1:{relay.port}"
        for path in ("/dashboard", "/dashboard/events"):
            status, _, body = get(base + path)
            assert status == 401 and b"token" in body, path
        status, content_type, page = get(f"{base}/dashboard?token={TOKEN}")
        assert status == 200 and content_type.startswith("text/html")
        assert b"flowrelay relay dashboard" in page and b'"events":"/dashboard/events"' in page
        assert get(base + "/dashboard", AUTH)[0] == 200

        traffic = Traffic(relay.port)
        try:
            with EventStream(f"{base}/dashboard/events?token={TOKEN}") as stream:
                assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
                assert stream.wait_for(lambda s: sum(r["ok"] for r in s.rows()) > 200
                                       and any(r["closes"] for r in s.rows()), TIMEOUT_S)
        finally:
            traffic.close()

    events = stream.snapshot()
    assert events[0][0] == "hello"
    rows = stream.rows()
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(rows))
    busy = [r for r in rows if r["ok"]]
    assert sum(r["ok"] + r["errors"] for r in rows) <= traffic.sent
    assert sum(r["errors"] for r in rows) >= 1, "the failing Executor shows"
    for row in busy:
        assert row["ok_rps"] == pytest.approx(row["ok"] / row["interval_s"], abs=0.01)
        assert 2.0 <= row["p50_ms"] <= row["p99_ms"], "the 2 ms sleeper is inside the gateway's span"
        assert set(row["executors"]) >= {"upper", "sleeper", "fail"}
        assert 1.6 <= row["executors"]["sleeper"]["p50_ms"] <= 3.2, "within the buckets' 28 %"
    assert any(code.startswith("1000") for r in rows for code in r["closes"])
    assert rows[-1]["upstream"].startswith("none")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 900), TIMEOUT_S) as driver:
        yield driver


def test_relay_dashboard_in_chromium(browser: Any) -> None:
    with run_relay("--log-level", "WARNING", *FLOW) as relay:
        base = f"http://127.0.0.1:{relay.port}"
        traffic = Traffic(relay.port)
        try:
            with EventStream(f"{base}/dashboard/events?token={TOKEN}") as stream:
                clear_logs(browser)
                browser.get(f"{base}/dashboard?token={TOKEN}")

                def rows() -> list[dict[str, Any]]:
                    return browser.execute_script("return window.flowrelay.rows()[0]")

                assert wait_until(lambda: sum(r["ok"] for r in rows()) > 100, TIMEOUT_S)

                def page_now() -> tuple[list[dict[str, Any]], list[list[Any]]] | None:
                    """The page's rows and its tiles, read at once; None while the tiles still show an earlier
                    second than the last row (the page draws them after the row arrives)."""
                    shown, tiles = browser.execute_script("""
                        return [window.flowrelay.rows()[0],
                          Array.from(document.querySelectorAll('[data-slot="now-tiles"] .tile')).map(t => {
                            const n = t.querySelector('.n');
                            return [t.dataset.key, JSON.parse(n.dataset.value), n.dataset.t]; })]""")
                    if not tiles or any(float(t) != shown[-1]["t"] for _, _, t in tiles):
                        return None
                    return shown, tiles

                shown, tiles = wait_for(browser, page_now, "the tiles to show the last second", TIMEOUT_S)
                streamed = {r["t"]: r for r in stream.rows()}
                assert shown == [streamed[r["t"]] for r in shown], "the page's rows are the stream's"
                last = streamed[shown[-1]["t"]]
                for key, value, _ in tiles:
                    assert value == last[key], (key, value, last)
                charts = {c["id"]: c for c in chart_states(browser)}
                for name in ("fig-relay-requests", "fig-relay-latency", "fig-relay-executors",
                             "fig-relay-connections"):
                    assert drawn(charts[name]), charts[name]
                assert charts["fig-relay-upstream"]["empty"], "no upstream: said, not drawn"

                before = len(rows())
                browser.refresh()
                assert wait_until(lambda: len(rows()) >= before, TIMEOUT_S)
                assert rows()[0]["t"] == stream.rows()[0]["t"], "a reload shows the earlier seconds"
                assert not page_errors(browser), page_errors(browser)
                foreign = [u for u in requested_urls(browser) if not u.startswith(base)]
                assert not foreign, f"the page asked other hosts for {foreign}"
        finally:
            traffic.close()
