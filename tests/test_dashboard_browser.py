"""The live dashboard of a load run in a real Chromium: it follows the run, survives a reload, ends as the report.

A real run (`flowrelay load --dashboard` against a `flowrelay serve` subprocess on 127.0.0.1) is watched by the
browser and, beside it, by a plain event-stream client: the numbers the page shows are the stream's rows; a
reload shows the earlier seconds again; the page asks nothing of any other host; and once the run is over the
live page shows what the run's report.html shows (the same charts over the same seconds, the same summary,
thresholds and breakdowns).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import chart_states, chromium, clear_logs, drawn, page_errors, requested_urls
from dashboard_helpers import LiveLoad, wait_until
from relay_process import run_relay
from sse_helpers import EventStream

from loadtest.outputs import report

FLOW = ("-e", "upper", "-e", "sleeper=sleep:2ms", "-e", "fail:0.02")
TIMEOUT_S = 60.0
# The live tiles whose numbers are a row's own values; the others are a count over the row's interval.
AS_IS = ("sent_rps", "ok_rps", "p50_ms", "p99_ms", "max_ms", "inflight", "lag_p99_ms")
PER_SECOND = ("errors", "dropped")
# What the page shows in each section once the run is over (the parts with no clock in them).
SECTIONS_JS = """
const text = sel => { const e = document.querySelector(sel); return e ? e.innerText : null; };
const charts = {};
for (const [id, c] of Object.entries(window.flowrelay.charts)) {
  if (document.getElementById(id).closest('[hidden]')) continue;
  const bars = Array.from(document.querySelectorAll('#' + id + ' .bar[data-value]')).map(b => b.dataset.value);
  charts[id] = c.plot ? {x: c.plot.data[0], series: c.plot.series.slice(1).map(s => s.label)} : {bars: bars};
}
return {summary: text('#summary'), thresholds: text('#thresholds'), hops: text('[data-slot="hops-final"]'),
        errors: text('[data-slot="errors-final"]'), latency: text('[data-slot="latency-final"]'),
        badge: text('[data-slot="badge"]'), now_hidden: document.getElementById('now').hidden, charts: charts};
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 900), TIMEOUT_S) as driver:
        yield driver


TILES_JS = """
        return Array.from(document.querySelectorAll('[data-slot="now-tiles"] .tile')).map(t => ({
          key: t.dataset.key, value: JSON.parse(t.querySelector('.n').dataset.value || 'null'),
          t: t.querySelector('.n').dataset.t, text: t.querySelector('.n').textContent}))"""


def page_rows(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script("return window.flowrelay.rows()[0]")


def snapshot(driver: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tiles and the rows as one script sees them, so no row can arrive between the two reads."""
    both = driver.execute_script(f"return [(() => {{ {TILES_JS} }})(), window.flowrelay.rows()[0]]")
    return both[0], both[1]


def test_live_page_follows_the_run_and_ends_as_the_report(browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "results"
    with run_relay("--log-level", "WARNING", *FLOW) as relay, LiveLoad(
            relay.url, "--rate", "200", "--duration", "8s", "--warmup", "1s", "--out", str(out),
            "--dashboard-linger", "60s", "--threshold", "latency.p99<250ms", "--threshold", "errors.rate<0.001",
    ) as run, EventStream(run.url + "events") as stream:
        clear_logs(browser)
        browser.get(run.url)
        assert wait_until(lambda: len(page_rows(browser)) >= 3, TIMEOUT_S), list(run.output)

        # The numbers shown are the stream's: the tiles show the last row the page has, the page holds the rows.
        # Redraws are coalesced, so a row can arrive a frame before the tiles show it: read both in one moment
        # and wait for a moment when the page is settled.
        def settled(shown: list[dict[str, Any]], rows: list[dict[str, Any]]) -> bool:
            return bool(rows) and all(float(t["t"]) == rows[-1]["t"] for t in shown)

        snaps: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        assert wait_until(lambda: snaps.append(snapshot(browser)) or settled(*snaps[-1]), TIMEOUT_S), snaps[-1]
        shown, rows = snaps[-1]
        streamed = {r["t"]: r for r in stream.rows()}
        assert rows == [streamed[r["t"]] for r in rows]
        last = streamed[rows[-1]["t"]]
        for tile in shown:
            assert float(tile["t"]) == last["t"]
            if tile["key"] in AS_IS:
                assert tile["value"] == last[tile["key"]], tile
            elif tile["key"] in PER_SECOND:
                assert tile["value"] == pytest.approx(last[tile["key"]] / last["interval_s"]), tile
        assert {t["key"] for t in shown} >= {*AS_IS, *PER_SECOND}
        # the charts draw the same seconds
        xs = browser.execute_script("return window.flowrelay.charts['fig-throughput'].plot.data[0]")
        assert xs[: len(rows)] == [r["t"] for r in rows]
        # each threshold's state, live
        assert wait_until(lambda: "holding" in browser.find_element("id", "thresholds").text
                          or "failing" in browser.find_element("id", "thresholds").text, TIMEOUT_S)

        # A reload shows the earlier seconds again, from the first.
        before = len(page_rows(browser))
        browser.refresh()
        assert wait_until(lambda: len(page_rows(browser)) >= before, TIMEOUT_S)
        assert page_rows(browser)[0]["t"] == stream.rows()[0]["t"] < 1.5

        # The run ends: the page becomes the report.
        assert wait_until(lambda: browser.execute_script("return window.flowrelay.ended()"), TIMEOUT_S)
        assert wait_until(lambda: all(drawn(c) or c["empty"] for c in chart_states(browser) if c["shown"]), 20)
        time.sleep(0.3)  # the last redraw is coalesced
        live = browser.execute_script(SECTIONS_JS)
        assert not page_errors(browser), page_errors(browser)
        foreign = [u for u in requested_urls(browser) if not u.startswith(run.url)]
        assert not foreign, f"the page asked other hosts for {foreign}"
        assert stream.rows() == page_rows(browser)
        run.interrupt()
        assert run.wait(20) == 99

    page = report.write_report(out, out / "report.html")
    browser.get(page.resolve().as_uri())
    assert wait_until(lambda: all(drawn(c) or c["empty"] for c in chart_states(browser) if c["shown"]), 20)
    time.sleep(0.3)
    written = browser.execute_script(SECTIONS_JS)
    assert live["now_hidden"] and written["now_hidden"]
    assert set(live["charts"]) == set(written["charts"]) >= {"fig-throughput", "fig-distribution", "fig-hops",
                                                              "fig-errors-reason"}
    assert live == written
    assert "1 of 2 thresholds failed" in live["badge"]
