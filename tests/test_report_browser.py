"""The HTML report in a real browser: headless Chromium opens the page from disk and every chart draws.

Debian's `chromium` and `chromedriver` (scripts/setup_system.sh installs both) are driven through selenium.
Each page is loaded from a file:// URL with networking features off and a fresh profile; the test checks
that every chart drew (a uPlot canvas painted in its series' colours, or HTML bars), with a title and axis
titles, that no console error was logged, that the page fetched nothing but itself, and saves a full-page
screenshot PNG beside the report.

Without chromium, chromedriver or selenium the tests skip with the reason, except under CI (env CI set),
where that is a failure.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from browser_harness import chart_states, chromium, clear_logs, drawn, requested_urls
from test_report import COMPARISON_FIGURES, REPORT_FIGURES, copy_results, results_pair

from loadtest.outputs import report

RENDER_TIMEOUT_S = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 900), RENDER_TIMEOUT_S) as driver:
        yield driver


def load(driver: Any, url: str, expected: tuple[str, ...]) -> list[dict[str, Any]]:
    """Open ``url`` and wait until every expected chart has drawn (or the timeout passes)."""
    clear_logs(driver)
    driver.get(url)
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    charts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        charts = [c for c in chart_states(driver) if c["shown"]]
        by_id = {c["id"]: c for c in charts}
        if all(i in by_id and (drawn(by_id[i]) or by_id[i]["empty"]) for i in expected):
            break
        time.sleep(0.2)
    return charts


def screenshot(driver: Any, png: Path) -> Path:
    """The whole page, not just the window, as a PNG."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png",
        "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
    })
    png.write_bytes(base64.b64decode(shot["data"]))
    return png


def check_charts(charts: list[dict[str, Any]], expected: tuple[str, ...], empty: tuple[str, ...] = ()) -> None:
    """Every expected chart is there and drew its data (the ones in ``empty`` say, instead, that there is none)."""
    by_id = {c["id"]: c for c in charts}
    assert set(by_id) == set(expected), f"charts on the page: {sorted(by_id)}"
    for name, chart in by_id.items():
        if name in empty:
            assert chart["empty"] and not chart["series"], f"{name}: should say it has nothing to show: {chart}"
        else:
            assert drawn(chart), f"{name}: nothing drawn: {chart}"
        assert chart["title"].strip(), f"{name}: untitled"
        assert chart["x"].strip() or chart["y"].strip(), f"{name}: no axis title"
        # a bar chart of one category is one bar high; an empty chart is its note
        tall_enough = 60 if chart["kind"] == "bars" or name in empty else 150
        assert chart["width"] > 300 and chart["height"] > tall_enough, f"{name}: squeezed to {chart}"


def check_clean(driver: Any, allowed: tuple[str, ...] = ("file:",)) -> None:
    """No console error, no page error, nothing fetched but the page (and what ``allowed`` starts)."""
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    page_errors = driver.execute_script("return window.__pageErrors || []")
    assert not page_errors, f"page errors: {page_errors}"
    foreign = [u for u in requested_urls(driver) if not u.startswith((*allowed, "data:", "blob:", "about:"))]
    assert not foreign, f"the page asked the network for {foreign}"
    assert driver.title.startswith("flowrelay")


def _check_page(driver: Any, page: Path, expected: tuple[str, ...], empty: tuple[str, ...] = ()) -> Path:
    check_charts(load(driver, page.resolve().as_uri(), expected), expected, empty)
    check_clean(driver)
    png = screenshot(driver, page.with_suffix(".png"))
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 50_000, f"screenshot {png}: {len(data)} bytes"
    return png


def test_report_renders_every_chart_in_chromium(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    a, _ = results_pair(tmp_path_factory)
    results = copy_results(a, tmp_path_factory.mktemp("browser") / "results")
    page = report.write_report(results, results / "report.html")
    png = _check_page(browser, page, REPORT_FIGURES)
    assert png == results / "report.png"
    # the summary's tables are there, with the thresholds' verdicts
    text = browser.find_element("id", "thresholds").text
    assert "latency.p99<250ms" in text and "FAIL" in text
    # the time charts draw every second of the results folder
    rows = [orjson.loads(line) for line in (results / "timeseries.jsonl").read_bytes().splitlines()]
    xs = browser.execute_script("return window.flowrelay.charts['fig-latency'].plot.data[0]")
    assert xs == [r["t"] for r in rows] or xs == [r["t"] for r in rows[:-2]] + [rows[-1]["t"]]


def test_report_of_an_error_free_run_renders(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    _, b = results_pair(tmp_path_factory)
    results = copy_results(b, tmp_path_factory.mktemp("browser") / "results")
    page = report.write_report(results, results / "report.html")
    _check_page(browser, page, tuple(f for f in REPORT_FIGURES if f != "fig-errors-reason"),
                empty=("fig-errors-time",))


def test_comparison_renders_every_chart_in_chromium(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = results_pair(tmp_path_factory)
    out = tmp_path_factory.mktemp("browser") / "comparison.html"
    page = report.write_comparison([a, b], out)
    png = _check_page(browser, page, COMPARISON_FIGURES)
    assert png == out.with_suffix(".png")
    # both runs' curves, in the runs' two colours
    series = browser.execute_script(
        "return window.flowrelay.charts['fig-cmp-latency'].plot.series.slice(1).map(s => s.label)")
    assert any(s.startswith("A: ") for s in series) and any(s.startswith("B: ") for s in series)


def test_a_short_last_interval_is_folded_into_the_one_before(browser: Any, tmp_path: Path,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    """The run's final sliver of a second (a few late answers) joins the second before it on the charts, so
    that it does not read as a spike of hundreds per second; the max and the counts add up."""
    _, b = results_pair(tmp_path_factory)
    results = copy_results(b, tmp_path / "results")
    rows = [orjson.loads(line) for line in (results / "timeseries.jsonl").read_bytes().splitlines()]
    last = rows[-1]
    sliver = {**last, "t": round(last["t"] + 0.004, 6), "interval_s": 0.004, "sent": 0, "ok": 1, "answered": 1,
              "errors": 1, "error_reasons": {"timeout": 1}, "max_ms": 999.0, "sent_rps": 0.0, "ok_rps": 250.0}
    rows.append(sliver)
    (results / "timeseries.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    page = report.write_report(results, results / "report.html")
    load(browser, page.resolve().as_uri(), ("fig-throughput",))
    shown = browser.execute_script("return window.flowrelay.charts['fig-throughput'].plot.data")
    xs, ok_per_s = shown[0], shown[2]
    assert len(xs) == len(rows) - 1 and xs[-1] == sliver["t"]
    merged_interval = last["interval_s"] + 0.004
    assert ok_per_s[-1] == pytest.approx((last["ok"] + 1) / merged_interval, abs=0.01)
    latency = browser.execute_script("return window.flowrelay.charts['fig-latency'].plot.data")
    assert latency[5][-1] == 999.0  # the max of the two
    assert latency[1][-1] == last["p50_ms"]  # the earlier interval's percentiles stay
