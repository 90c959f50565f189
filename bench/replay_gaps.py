"""How faithfully a replay keeps the recorded gaps: `flowrelay load --replay` against a server that logs arrivals.

What it measures: a client sends two streams through `flowrelay serve -e upper --record DIR`, one json and one
bytes connection, each request a random gap (seeded, 2 to 60 ms) after the previous one. The recording is then
replayed (`flowrelay load URL --replay DIR --speed S`, in a process of its own) against a bare WebSocket server in
this process that answers every request at once and notes when each frame arrived (time.monotonic_ns). For each
connection, each gap between consecutive arrivals is compared with the recorded gap divided by the speed; the
table gives the error's p50/p90/p99/max over both connections, per speed, with the replay's own scheduler lag
(send minus due) beside it. Speeds are interleaved over the repetitions.

Goal (issue 17): gaps within 3 ms of the recorded ones at p90, at speed 1 and halved at speed 2.

    python bench/replay_gaps.py [--quick]    # ~1 min; writes bench/results/replay_gaps.json
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common as c

GOAL_P90_MS = 3.0
SPEEDS = (1.0, 2.0)


class ArrivalLog:
    """A WebSocket server in a thread of this process: answers each request with itself, logs arrivals."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int]] = []  # (connection, monotonic ns)
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        numbers = itertools.count()

        async def handle(ws: Any) -> None:
            number = next(numbers)
            async for message in ws:
                self.arrivals.append((number, time.monotonic_ns()))
                if message in (b"\x00", "{}"):
                    break
                await ws.send(message)  # an echoed request carries the id the load engine matches by

        async with serve(handle, c.LOOPBACK, 0, subprotocols=["json", "bytes"], compression=None,
                         ping_interval=None, max_size=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    @contextlib.contextmanager
    def running(self) -> Iterator[ArrivalLog]:
        self._thread.start()
        self._ready.wait(10)
        try:
            yield self
        finally:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


async def _send_stream(url: str, subprotocol: str, gaps_s: list[float]) -> None:
    from websockets.asyncio.client import connect

    from relay.wire import json_codec, proto_codec
    from relay.wire.documents import Document
    from relay.wire.messages import DataRequest

    async with connect(url, subprotocols=[subprotocol], compression=None) as ws:
        async def drain() -> None:
            with contextlib.suppress(Exception):
                async for _ in ws:
                    pass
        reader = asyncio.create_task(drain())
        start, due = time.perf_counter(), 0.0
        for i, gap in enumerate(gaps_s):
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
            req = DataRequest(exec_endpoint="/index", docs=[Document(id=f"{subprotocol}-{i}", text="hello flowrelay!")])
            if subprotocol == "bytes":
                req.request_id = f"{subprotocol}-{i}"
                await ws.send(proto_codec.encode(req))
            else:
                await ws.send(json_codec.encode_request(req).decode())
            due += gap
        await ws.send(b"\x00" if subprotocol == "bytes" else "{}")
        await asyncio.wait_for(reader, 30)


def record(folder: Path, requests: int, seed: int) -> None:
    rng = random.Random(seed)
    streams = {sub: [rng.uniform(0.002, 0.060) for _ in range(requests)] for sub in ("json", "bytes")}
    with c.relay_server("upper", extra=["--record", str(folder)]) as relay:
        async def both() -> None:
            await asyncio.gather(*(_send_stream(relay.url, sub, gaps) for sub, gaps in streams.items()))
        asyncio.run(both())


def gap_errors_ms(folder: Path, arrivals: list[tuple[int, int]], speed: float) -> list[float]:
    from relay.capture.reader import read_recording

    recording = read_recording(folder)
    recorded: dict[int, list[int]] = {}
    for r in recording.requests:
        recorded.setdefault(r.conn, []).append(r.mono_ns)
    got: dict[int, list[int]] = {}
    for conn, t in arrivals:
        got.setdefault(conn, []).append(t)
    # Replayed connections were opened in the recording's order of first request: match them by size and order.
    rec_lists = sorted(recorded.values(), key=lambda ts: ts[0])
    got_lists = [got[k] for k in sorted(got)]
    errors = []
    for want, have in zip(rec_lists, got_lists, strict=True):
        # The end-of-stream marker arrives too: one more than the requests.
        have = have[: len(want)]
        for (w0, w1), (h0, h1) in zip(itertools.pairwise(want), itertools.pairwise(have), strict=True):
            errors.append(abs((h1 - h0) - (w1 - w0) / speed) / 1e6)
    return errors


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--requests", type=int, default=0, help="requests per connection (default 120, quick 60)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    n = args.requests or (60 if args.quick else 120)
    load_before = c.header(f"replay_gaps: 2 connections x {n} requests, gaps 2-60 ms, speeds {SPEEDS}, "
                           f"{args.reps} reps", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flowrelay-replay-gaps-") as tmp:
        folder = Path(tmp) / "rec"
        record(folder, n, seed=17)
        for rep in range(args.reps):
            for speed in SPEEDS if rep % 2 == 0 else SPEEDS[::-1]:
                with ArrivalLog().running() as log:
                    cmd = [c.PYTHON, "-m", "flowrelay", "load", f"ws://{c.LOOPBACK}:{log.port}", "--replay",
                           str(folder), "--speed", str(speed), "--json", "--quiet"]
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=c.REPO)
                    if done.returncode != 0:
                        raise RuntimeError(f"replay failed (exit {done.returncode}): {done.stderr[-2000:]}")
                    arrivals = list(log.arrivals)
                summary = json.loads(done.stdout)
                errors = sorted(gap_errors_ms(folder, arrivals, speed))
                res = {"rep": rep, "speed": speed, "gaps": len(errors),
                       "p50_ms": c.percentile(errors, 50), "p90_ms": c.percentile(errors, 90),
                       "p99_ms": c.percentile(errors, 99), "max_ms": errors[-1],
                       "scheduler_lag_p99_ms": summary["scheduler_lag_ms"]["p99"],
                       "ok": summary["requests"]["ok"], "sent": summary["requests"]["sent"]}
                runs.append(res)
                print(f"  rep {rep + 1} speed {speed:g}: gap error p50 {res['p50_ms']:.3f} p90 {res['p90_ms']:.3f} "
                      f"p99 {res['p99_ms']:.3f} max {res['max_ms']:.3f} ms; scheduler lag p99 "
                      f"{res['scheduler_lag_p99_ms']} ms", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()
    medians = {}
    rows = []
    for speed in SPEEDS:
        rs = [r for r in runs if r["speed"] == speed]
        m = {k: c.median([r[k] for r in rs]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "scheduler_lag_p99_ms")}
        medians[str(speed)] = m
        rows.append([f"{speed:g}", m["p50_ms"], m["p90_ms"], c.spread([r["p90_ms"] for r in rs]), m["p99_ms"],
                     m["max_ms"], m["scheduler_lag_p99_ms"]])
    print()
    print(c.table(["speed", "gap err p50 ms", "p90 ms", "(min-max)", "p99 ms", "max ms", "sched lag p99 ms"], rows))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    goals = {str(s): medians[str(s)]["p90_ms"] <= GOAL_P90_MS for s in SPEEDS}
    print("goal: " + "; ".join(f"speed {s}: p90 {medians[s]['p90_ms']:.3f} ms "
                               f"({'ok' if ok else 'MISSED'}, goal <= {GOAL_P90_MS} ms)" for s, ok in goals.items()))
    path = c.write_results("replay_gaps", {
        "benchmark": "replay_gaps",
        "command": "python bench/replay_gaps.py" + (" --quick" if args.quick else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "requests_per_connection": n,
        "reps": args.reps,
        "medians": medians,
        "goal": {"p90_ms": GOAL_P90_MS, "met": goals},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
