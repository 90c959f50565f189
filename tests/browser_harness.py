"""Headless Chromium for the tests that check pages in a real browser (the report, the HTTP door's docs).

Debian's `chromium` and `chromedriver` (scripts/setup_system.sh installs both) are driven through selenium,
with networking features off and a fresh profile per module. Pages get an error trap installed before any of
their scripts run, so uncaught errors, `console.error` calls and CSP violations can be read back; the
performance log tells which URLs a page asked for.

Without chromium, chromedriver or selenium a test skips with the reason, except under CI (env CI set), where
that is a failure.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# The machine has no network: without these Chromium spends its start trying to reach the internet.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

# Installed before any page script runs: records uncaught errors, console.error calls and CSP violations.
ERROR_TRAP_JS = """
window.__pageErrors = [];
window.addEventListener('error', e => window.__pageErrors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', e => window.__pageErrors.push('unhandled rejection: ' + e.reason));
document.addEventListener('securitypolicyviolation',
  e => window.__pageErrors.push('CSP: ' + e.violatedDirective + ' ' + e.blockedURI));
const __consoleError = console.error.bind(console);
console.error = (...args) => { window.__pageErrors.push(args.map(String).join(' ')); __consoleError(...args); };
"""


def need_browser() -> None:
    """Skip (or, under CI, fail) when the browser or its driver is not installed."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = f"needs {', '.join(missing)}; scripts/setup_system.sh installs chromium and chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def chromium(window: tuple[int, int], timeout_s: float) -> Iterator[Any]:
    """A headless Chromium (selenium driver) with the error trap and the browser/performance logs on."""
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="flowrelay-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(timeout_s)
        driver.set_script_timeout(timeout_s)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_TRAP_JS})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def serve_page(body: bytes) -> Iterator[str]:
    """One HTML page on a port of 127.0.0.1 of its own (another origin than the relay's), at the URL yielded."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = socketserver.TCPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def clear_logs(driver: Any) -> None:
    """Drop what earlier pages logged, so the next checks see only the next page."""
    driver.get_log("browser")
    driver.get_log("performance")


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the performance log was last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def page_errors(driver: Any) -> list[str]:
    """Errors the trap caught on the page, then SEVERE console entries."""
    errors = list(driver.execute_script("return window.__pageErrors || []"))
    errors += [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return errors


# Per chart box of a flowrelay page: what the page's script drew there. A uPlot chart: its series and points, and
# how many pixels of its canvas are painted in a series' colour (a line or a bar, not just axes and grid); an HTML
# bar chart: its bars; either: the empty-state note, if that is what it shows.
CHARTS_JS = """
const hex = c => { const m = /^#([0-9a-f]{6})$/i.exec(c || ''); if (!m) return null;
  const n = parseInt(m[1], 16); return [n >> 16 & 255, n >> 8 & 255, n & 255]; };
const out = [];
for (const el of document.querySelectorAll('.chart')) {
  const chart = (window.flowrelay && window.flowrelay.charts[el.id]) || null;
  const box = el.getBoundingClientRect();
  const state = {id: el.id, kind: el.dataset.kind, shown: !el.closest('[hidden]'),
    title: (el.querySelector('.title') || {}).textContent || '',
    empty: (el.querySelector('.empty') || {}).textContent || '',
    width: box.width, height: box.height, series: 0, points: 0, painted: 0, bars: 0, x: '', y: ''};
  if (chart) { state.x = chart.spec.x || ''; state.y = chart.spec.y || ''; }
  if (chart && chart.plot) {
    const u = chart.plot;
    state.series = u.series.length - 1;
    state.points = u.data[0].length;
    const colours = u.series.slice(1).filter(s => s.show).map(s => hex(s._stroke || s.stroke)).filter(Boolean);
    const c = u.ctx, img = c.getImageData(0, 0, c.canvas.width, c.canvas.height).data;
    for (let i = 0; i < img.length; i += 4) {
      if (img[i + 3] < 200) continue;
      if (colours.some(k => Math.abs(k[0] - img[i]) + Math.abs(k[1] - img[i + 1]) + Math.abs(k[2] - img[i + 2]) < 24))
        state.painted++;
    }
  }
  state.bars = el.querySelectorAll('.bar[data-value]').length;
  out.push(state);
}
return out;
"""


def chart_states(driver: Any) -> list[dict[str, Any]]:
    """What the page drew in each chart box (see CHARTS_JS)."""
    return list(driver.execute_script(CHARTS_JS))


def drawn(chart: dict[str, Any]) -> bool:
    """A chart that shows data: a uPlot chart with painted series, or an HTML bar chart with bars."""
    return (chart["kind"] == "bars" and chart["bars"] > 0) or (chart["series"] > 0 and chart["painted"] > 30)


def wait_for(driver: Any, condition: Any, what: str, timeout_s: float) -> Any:
    """Poll `condition()` until it returns something true (exceptions count as not yet: the page is still being
    built); that value. Fails naming `what` and the page's errors after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = condition()
        except Exception:
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; page errors: {page_errors(driver)}")


def screenshot(driver: Any, folder: str, name: str, full_height: bool = False) -> Path:
    """Save a screenshot under $FLOWRELAY_SCREENSHOTS (or the temp folder) / `folder` / `name`; its path, printed.
    `full_height`: grow the window to the page's height first (up to 4000 px)."""
    path = Path(os.environ.get("FLOWRELAY_SCREENSHOTS", tempfile.gettempdir())) / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if full_height:
        height = driver.execute_script("return Math.max(document.body.scrollHeight, 900)")
        driver.set_window_size(1280, min(int(height) + 100, 4000))
    assert driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
