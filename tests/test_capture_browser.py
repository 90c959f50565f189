"""A HAR from Chromium itself imports and replays.

A page on 127.0.0.1 opens two WebSockets to a relay, one `json` and one `bytes` (binary frames built by the
test with relay.wire, handed to the page in base64), and sends requests on each with irregular gaps. Headless
Chromium (tests/browser_harness.py) runs it; its DevTools protocol events, from the performance log, become a
HAR as DevTools would save it (tests/devtools_har.py). `flowrelay record import` turns the HAR into a recording,
and `flowrelay load --replay` sends it to a gateway that logs what arrives: the same requests, each socket on a
connection of its own, in its subprotocol, in order, answered as the relay answered them. `--replay page.har`
reads the HAR directly too.

Without chromium, chromedriver or selenium the test skips with the reason, except under CI (env CI set).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from browser_harness import chromium, page_errors, serve_page
from devtools_har import har_from_performance_log
from load_helpers import cli_summary, fake_gateway, run_load_cli
from relay_process import flowrelay_command, run_relay

from relay.capture.reader import read_recording
from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest

WAIT_S = 30.0
GAPS_MS = (0, 35, 10, 60, 20)

PAGE = """<!DOCTYPE html>
<meta charset="utf-8"><title>an app on a relay</title>
<script>
const relay = %(relay)s, texts = %(texts)s, binaries = %(binaries)s, gaps = %(gaps)s;
window.__answers = 0;
function after(ms) { return new Promise(r => setTimeout(r, ms)); }
function open(subprotocol) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(relay, subprotocol);
    ws.binaryType = "arraybuffer";
    ws.onmessage = () => { window.__answers += 1; };
    ws.onopen = () => resolve(ws);
    ws.onerror = reject;
  });
}
async function run(subprotocol, frames) {
  const ws = await open(subprotocol);
  for (let i = 0; i < frames.length; i++) {
    await after(gaps[i %% gaps.length]);
    ws.send(frames[i]);
  }
}
const bytes = binaries.map(b => Uint8Array.from(atob(b), c => c.charCodeAt(0)));
Promise.all([run("json", texts), run("bytes", bytes)]).catch(e => console.error(String(e)));
</script>
<p>sending</p>
"""


def _frames() -> tuple[list[str], list[bytes]]:
    texts = [json.dumps({"data": [{"id": f"web-{i}", "text": f"typed by a user {i}"}], "execEndpoint": "/search"})
             for i in range(len(GAPS_MS))]
    binaries = [proto_codec.encode(DataRequest(request_id=f"web-bin-{i}", exec_endpoint="/index",
                                               docs=[Document(id=f"bin-{i}", text=f"binary {i}")]))
                for i in range(len(GAPS_MS))]
    return texts, binaries


def _normalised(frame: bytes | str, subprotocol: str | None) -> Any:
    if subprotocol == "bytes":
        req = proto_codec.decode(frame if isinstance(frame, bytes) else frame.encode())
        req.request_id = ""
        return req
    obj = orjson.loads(frame)
    obj.get("parameters", {}).pop("flowrelay_rid", None)
    if not obj.get("parameters"):
        obj.pop("parameters", None)
    return obj


def test_a_har_from_chromium_imports_and_replays(tmp_path: Path) -> None:
    texts, binaries = _frames()
    with run_relay("-e", "upper") as relay, chromium((800, 600), WAIT_S) as driver:
        page = PAGE % {"relay": json.dumps(relay.url + "/"), "texts": json.dumps(texts),
                       "binaries": json.dumps([base64.b64encode(b).decode() for b in binaries]),
                       "gaps": json.dumps(GAPS_MS)}
        with serve_page(page.encode()) as url:
            driver.get_log("performance")
            driver.get(url)
            deadline = time.monotonic() + WAIT_S
            while driver.execute_script("return window.__answers") < 2 * len(GAPS_MS):
                assert time.monotonic() < deadline, f"the page got no answers; errors: {page_errors(driver)}"
                time.sleep(0.1)
            har = har_from_performance_log(driver.get_log("performance"))
    har_path = tmp_path / "page.har"
    har_path.write_text(json.dumps(har))
    assert sum(len(e["_webSocketMessages"]) for e in har["log"]["entries"]) == 4 * len(GAPS_MS)

    done = subprocess.run([*flowrelay_command(), "record", "import", str(har_path), "--out", str(tmp_path / "rec")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    recording = read_recording(tmp_path / "rec")
    assert sorted((c.door, c.subprotocol, c.requests) for c in recording.connections.values()) == [
        ("websocket", "bytes", len(GAPS_MS)), ("websocket", "json", len(GAPS_MS))]
    assert recording.answered == 2 * len(GAPS_MS)  # the relay's answers, matched to the requests
    assert all(r.answer is not None and r.answer.error is None for r in recording.requests)

    sent = {"json": [_normalised(t, "json") for t in texts], "bytes": [_normalised(b, "bytes") for b in binaries]}
    for source in (tmp_path / "rec", har_path):
        with fake_gateway(delay_s=0.0) as gw:
            replay = run_load_cli(gw.url, "--replay", str(source), "--json", "--quiet")
            assert replay.returncode == 0, replay.stderr
            arrivals = list(gw.arrivals)
        summary = cli_summary(replay)
        assert summary["requests"]["ok"] == 2 * len(GAPS_MS)
        assert summary["replay_diff"]["compared"] == 2 * len(GAPS_MS)
        assert summary["replay_diff"]["latency_basis"]["recorded"] == "round_trip"
        by_sub: dict[str, list[Any]] = {}
        connections: dict[str, set[int]] = {}
        for a in arrivals:
            assert a.subprotocol is not None
            by_sub.setdefault(a.subprotocol, []).append(_normalised(a.frame, a.subprotocol))
            connections.setdefault(a.subprotocol, set()).add(a.connection)
        assert by_sub == sent
        assert all(len(c) == 1 for c in connections.values()) and len(connections) == 2
