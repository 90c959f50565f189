"""`flowrelay demo`: the main job on the embedded default, for a newcomer's first run.

Starts a relay with built-in Executors (`upper -> sleeper (2 ms) -> embed`) as a child process on a
free loopback port, runs a short load test against it (open model, both connections persistent, bytes
subprotocol), prints the live line and the summary, writes the results folder and its HTML report, then
stops the relay. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.config import LoadConfig
from loadtest.engine import run_load
from loadtest.outputs.live import LiveLine
from loadtest.outputs.summary import build_summary, format_table, write_results
from loadtest.outputs.timeseries import SeriesFiles
from loadtest.payloads import DocSpec
from loadtest.sessions.base import ConnectError
from loadtest.thresholds import evaluate, parse_threshold
from relay.common.units import parse_duration

DEMO_EXECUTORS = ["upper", "sleeper=sleep:2ms", "embed:64"]
DEMO_THRESHOLDS = ["latency.p99<250ms", "errors.rate<0.001"]
_READY = re.compile(rb"serving ws://127\.0\.0\.1:(\d+)/")


def start_relay(executors: list[str], timeout_s: float = 20.0) -> tuple[subprocess.Popen[bytes], int]:
    """A `flowrelay serve` child on a free loopback port; returns it and its port once it listens."""
    cmd = [sys.executable, "-m", "flowrelay", "serve", "--port", "0", "--log-level", "WARNING"]
    for e in executors:
        cmd += ["--executor", e]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    lines: list[bytes] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = _READY.search(line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("the relay did not start:\n" + b"".join(lines[-20:]).decode(errors="replace"))


def stop_relay(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run(args: argparse.Namespace) -> int:
    duration_s = parse_duration(args.duration)
    out = Path(args.out)
    print(f"starting a relay with {' -> '.join(DEMO_EXECUTORS)} on 127.0.0.1 ...", flush=True)
    proc, port = start_relay(DEMO_EXECUTORS)
    try:
        target = f"ws://127.0.0.1:{port}"
        print(f"relay up at {target}; load: {args.rate:g} requests/s for {duration_s:g} s over 2 connections "
              f"(bytes), 4 docs per request\n", flush=True)
        cfg = LoadConfig(target=target, subprotocol="bytes", connections=2, rate=args.rate, duration_s=duration_s,
                         warmup_s=min(1.0, duration_s / 5), endpoint="/index",
                         docs=_docs(), grace_s=5.0)
        series = SeriesFiles(out)
        try:
            result = run_load(cfg, on_row=LiveLine(), series=series)
        except ConnectError as exc:
            series.close(complete=False)
            print(f"flowrelay demo: {exc}", file=sys.stderr)
            return 1
        series.close()
    finally:
        stop_relay(proc)
    result.recorder.accounting.check()  # every request sent is answered, failed or timed out
    summary = build_summary(result)
    summary["thresholds"] = evaluate([parse_threshold(t) for t in DEMO_THRESHOLDS], summary)
    write_results(out, summary, result, series.log.start_wall)
    print()
    print(format_table(summary))
    report = _write_report(out)
    print(f"\nresults in {out}/; report: {report}")
    return 0 if all(t["ok"] for t in summary["thresholds"]) else 99


def _docs() -> DocSpec:
    return DocSpec(docs_per_request=4, text_bytes=64)


def _write_report(out: Path) -> Path:
    from loadtest.outputs import report

    return report.write_report(out, out / report.REPORT_FILE)


def register(sub: Any) -> dict[str, Any]:
    p = sub.add_parser("demo", help="start a relay with built-in Executors and load-test it (the first thing to run)",
                       description="Start a relay with built-in Executors on 127.0.0.1, run a short load test "
                       "against it, print the summary and write results/.")
    p.add_argument("--rate", type=float, default=300.0, help="requests per second (default 300)")
    p.add_argument("--duration", default="8s", help="how long to send (default 8s)")
    p.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    return {"demo": run}
