"""The HTML report in a real browser: headless Chromium opens the page from disk and every chart draws.

Debian's `chromium` and `chromedriver` (scripts/setup_system.sh installs both) are driven through selenium.
Each page is loaded from a file:// URL with networking features off and a fresh profile; the test checks
that every plotly chart drew an SVG with data traces, that no console error was logged, that the page
fetched nothing but itself, and saves a full-page screenshot PNG beside the report.

Without chromium, chromedriver or selenium the tests skip with the reason, except under CI (env CI set),
where that is a failure.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import chromium, clear_logs, requested_urls
from test_report import COMPARISON_FIGURES, REPORT_FIGURES, copy_results, results_pair

from loadtest.outputs import report

RENDER_TIMEOUT_S = 30.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per chart: the plot's SVG, its data traces, and the traces' drawn paths (a line, a bar, a step).
_CHARTS_JS = """
const out = [];
for (const gd of document.querySelectorAll('.plotly-graph-div')) {
  let drawn = 0;
  for (const path of gd.querySelectorAll('g.trace path')) {
    const d = path.getAttribute('d') || '';
    if (d.length > 6 && d !== 'M0,0Z') drawn++;
  }
  const text = sel => { const e = gd.querySelector(sel); return e ? e.textContent : ''; };
  out.push({
    id: gd.id,
    main_svg: gd.querySelectorAll('svg.main-svg').length,
    traces: gd.querySelectorAll('g.trace').length,
    data: (gd.data || []).length,
    drawn: drawn,
    title: text('.gtitle'),
    xtitle: text('.xtitle'),
    ytitle: text('.ytitle'),
    width: gd.getBoundingClientRect().width,
    height: gd.getBoundingClientRect().height,
  });
}
return out;
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 900), RENDER_TIMEOUT_S) as driver:
        yield driver


def _load(driver: Any, page: Path) -> list[dict[str, Any]]:
    """Open ``page`` from disk and wait until every chart has drawn (or the timeout passes)."""
    clear_logs(driver)
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    charts: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        charts = driver.execute_script(_CHARTS_JS)
        if charts and all(c["main_svg"] and c["drawn"] for c in charts):
            break
        time.sleep(0.2)
    return charts


def _screenshot(driver: Any, png: Path) -> Path:
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


def _check_page(driver: Any, page: Path, expected: tuple[str, ...]) -> Path:
    charts = _load(driver, page)
    by_id = {c["id"]: c for c in charts}
    assert set(by_id) == set(expected), f"charts on the page: {sorted(by_id)}"
    for chart in charts:
        name = chart["id"]
        assert chart["main_svg"] >= 1, f"{name}: plotly drew no SVG"
        assert chart["data"] >= 1 and chart["traces"] >= 1, f"{name}: no data traces: {chart}"
        assert chart["drawn"] >= 1, f"{name}: traces present but nothing drawn: {chart}"
        assert chart["title"].strip(), f"{name}: untitled"
        assert chart["xtitle"].strip() or chart["ytitle"].strip(), f"{name}: no axis title"
        assert chart["width"] > 300 and chart["height"] > 150, f"{name}: squeezed to {chart}"

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    page_errors = driver.execute_script("return window.__pageErrors || []")
    assert not page_errors, f"page errors: {page_errors}"
    foreign = [u for u in requested_urls(driver) if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert not foreign, f"the page asked the network for {foreign}"
    assert driver.title.startswith("flowrelay")

    png = _screenshot(driver, page.with_suffix(".png"))
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 50_000, f"screenshot {png}: {len(data)} bytes"
    return png


def test_report_renders_every_chart_in_chromium(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    a, _ = results_pair(tmp_path_factory)
    results = copy_results(a, tmp_path_factory.mktemp("browser") / "results")
    page = report.write_report(results, results / "report.html")
    png = _check_page(browser, page, REPORT_FIGURES)
    assert png == results / "report.png"


def test_report_of_an_error_free_run_renders(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    _, b = results_pair(tmp_path_factory)
    results = copy_results(b, tmp_path_factory.mktemp("browser") / "results")
    page = report.write_report(results, results / "report.html")
    _check_page(browser, page, tuple(f for f in REPORT_FIGURES if f != "fig-errors-reason"))


def test_comparison_renders_every_chart_in_chromium(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = results_pair(tmp_path_factory)
    out = tmp_path_factory.mktemp("browser") / "comparison.html"
    page = report.write_comparison([a, b], out)
    png = _check_page(browser, page, COMPARISON_FIGURES)
    assert png == out.with_suffix(".png")
