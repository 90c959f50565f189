"""What N idle WebSocket sessions cost Python's garbage collector in the relay, measured in-process.

A relay (`-e echo`, uvloop, keepalive on, as `flowrelay serve`) runs in this process; a client process opens N
bare WebSocket handshakes (raw sockets, bytes subprotocol) and holds them idle. With the sessions open the
script counts the objects the collector tracks (`gc.get_objects()`, minus those of the same relay with one
warm-up session closed), per session and by type, and times full collections (`gc.collect()`, generation 2:
what the interpreter runs by itself every so often and what holds every answer back meanwhile). Frozen objects
(`gc.freeze()`, `gc.get_freeze_count()`) are not scanned by a collection and are reported apart. After the
client closes everything, it counts again: what is left is what closed sessions leak (or what only the
collector, not reference counting, would free).

    python bench/relay_gc.py [--sessions 10000] [--collects 5] [--top 25] [--no-freeze]
    # run it under the benchmark lock: flock -x /tmp/flowrelay-bench.lock .venv/bin/python bench/relay_gc.py

It is also its own client process (`python bench/relay_gc.py client PORT N`): it prints `open` once N
handshakes are answered, then closes them all when told `close` on stdin (and exits by itself after
`--max-lifetime` seconds whatever happens).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gc
import json
import os
import statistics
import sys
import time
from typing import Any

import anyio
import common as c

from flowrelay.cli.serve import build_relay
from relay.config import RelayConfig
from relay.executors import Chain
from relay.server import RelayServer

OPEN_CONCURRENCY = 200


# ---- the client process ------------------------------------------------------------------------


async def client_main(port: int, n: int, max_lifetime_s: float) -> None:
    sem = asyncio.Semaphore(OPEN_CONCURRENCY)
    writers: list[asyncio.StreamWriter] = []
    failed = 0

    async def open_one() -> None:
        nonlocal failed
        async with sem:
            try:
                reader, writer = await asyncio.open_connection(c.LOOPBACK, port)
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: {c.LOOPBACK}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: bytes\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                if not head.startswith(b"HTTP/1.1 101"):
                    raise RuntimeError(head[:40])
                writers.append(writer)
            except Exception:  # counted and reported: the caller compares with N
                failed += 1

    await asyncio.gather(*(open_one() for _ in range(n)))
    print(json.dumps({"open": len(writers), "failed": failed}), flush=True)
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), max_lifetime_s)
    if line.strip() == "close":
        close_frame = b"\x88\x82" + b"\x00\x00\x00\x00" + (1000).to_bytes(2, "big")  # masked with a zero key
        for w in writers:
            w.write(close_frame)
        await asyncio.sleep(1.0)
        for w in writers:
            w.close()
        await asyncio.sleep(1.0)
    print(json.dumps({"closed": len(writers)}), flush=True)


# ---- the relay side ------------------------------------------------------------------------------


def tracked_by_type(baseline_ids: set[int], top: int) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        if id(o) not in baseline_ids:
            counts[type(o).__qualname__] += 1
    return counts.most_common(top)


def time_collections(k: int) -> list[float]:
    times = []
    for _ in range(k):
        t = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t)
    return times


async def wait_for(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return pred()


async def relay_main(args: argparse.Namespace) -> dict[str, Any]:
    config = RelayConfig(host=c.LOOPBACK, port=0)
    config.gc_freeze = not args.no_freeze  # as `flowrelay serve` (--no-gc-freeze)
    server = build_relay(config, Chain.from_specs(["echo"]))
    async with anyio.create_task_group() as tasks:
        await tasks.start(server.serve)
        try:
            return await measure(server, args)
        finally:
            server.stop()


async def measure(server: RelayServer, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"sessions": args.sessions}
    # A warm-up session, opened and closed, so that lazily made module-level objects are in the baseline.
    await one_client(server.port, 1, args, server)
    await wait_for(lambda: not server.connections, 10)
    gc.collect()
    base = gc.get_objects()
    base_ids = {id(o) for o in base}
    n0 = len(base)
    del base
    out["tracked_baseline"] = n0
    out["freeze_count_baseline"] = gc.get_freeze_count()

    proc = await asyncio.create_subprocess_exec(
        c.PYTHON, __file__, "client", str(server.port), str(args.sessions), "--max-lifetime", "300",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    t = time.monotonic()
    opened = json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
    out["open_s"] = time.monotonic() - t
    out["opened"] = opened["open"]
    out["open_failed"] = opened["failed"]
    n = opened["open"]
    await wait_for(lambda: server.gateway.stats.connections_open >= n, 30)
    # Let the keepalive loop and anything else that runs after a burst of accepts have its turn.
    await asyncio.sleep(args.settle)
    gc.collect()
    n1 = len(gc.get_objects())
    out["tracked_open"] = n1
    out["freeze_count_open"] = gc.get_freeze_count()
    out["frozen_per_session"] = (out["freeze_count_open"] - out["freeze_count_baseline"]) / max(n, 1)
    out["unfrozen_per_session"] = (n1 - n0) / max(n, 1)
    out["tracked_per_session"] = out["unfrozen_per_session"] + out["frozen_per_session"]
    out["tracked_unfrozen_total"] = n1
    out["by_type_per_session"] = {k: v / max(n, 1) for k, v in tracked_by_type(base_ids, args.top)}
    times = time_collections(args.collects)
    out["full_collect_ms"] = {"median": statistics.median(times) * 1e3, "min": min(times) * 1e3,
                              "max": max(times) * 1e3, "count": len(times)}
    out["gc_stats"] = gc.get_stats()

    proc.stdin.write(b"close\n")
    await proc.stdin.drain()
    await asyncio.wait_for(proc.stdout.readline(), 120)
    await proc.wait()
    await wait_for(lambda: server.gateway.stats.connections_open == 0 and not server.connections, 30)
    out["connections_open_after_close"] = server.gateway.stats.connections_open
    # Unfrozen, so that the count below includes what a frozen session might have left behind.
    gc.unfreeze()
    gc.collect()
    out["tracked_after_close"] = len(gc.get_objects())
    # What was frozen before the sessions (modules, the server) is counted again once unfrozen.
    left = out["tracked_after_close"] - n0 - out["freeze_count_baseline"]
    out["left_per_session_after_close"] = left / max(n, 1)
    return out


async def one_client(port: int, n: int, args: argparse.Namespace, server: RelayServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        c.PYTHON, __file__, "client", str(port), str(n), "--max-lifetime", "60",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    await asyncio.wait_for(proc.stdout.readline(), 60)
    proc.stdin.write(b"close\n")
    await proc.stdin.drain()
    await asyncio.wait_for(proc.stdout.readline(), 60)
    await proc.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        cp = argparse.ArgumentParser()
        cp.add_argument("cmd")
        cp.add_argument("port", type=int)
        cp.add_argument("sessions", type=int)
        cp.add_argument("--max-lifetime", type=float, default=300.0)
        a = cp.parse_args()
        import uvloop

        uvloop.run(client_main(a.port, a.sessions, a.max_lifetime))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--collects", type=int, default=5, help="full collections timed (default 5)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the last accept and counting")
    p.add_argument("--top", type=int, default=25, help="types shown in the breakdown (default 25)")
    p.add_argument("--no-freeze", action="store_true", help="the relay without gc.freeze (--no-gc-freeze)")
    args = p.parse_args()
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load_before = c.load_average()
    import uvloop

    out = uvloop.run(relay_main(args))
    out["load_average_before"] = load_before
    out["load_average_after"] = c.load_average()
    out["python"] = sys.version.split()[0]
    out["gc_freeze"] = not args.no_freeze
    print(f"{out['opened']:,} sessions open ({out['open_failed']} failed), gc.freeze "
          f"{'on' if out['gc_freeze'] else 'off'}: {out['tracked_per_session']:.1f} GC-tracked objects per session "
          f"({out['frozen_per_session']:.1f} of them frozen); {out['tracked_unfrozen_total']:,} objects scanned by "
          "a full collection, which took "
          f"{out['full_collect_ms']['median']:.1f} ms (median of {out['full_collect_ms']['count']}, "
          f"{out['full_collect_ms']['min']:.1f}-{out['full_collect_ms']['max']:.1f})")
    print("unfrozen tracked objects per session by type: " + ", ".join(
        f"{k} {v:.2f}" for k, v in out["by_type_per_session"].items()))
    print(f"after close: {out['left_per_session_after_close']:.2f} tracked objects per session left "
          f"(relay connections_open {out['connections_open_after_close']})")
    print(f"load average {c.fmt_load(out['load_average_before'])} -> {c.fmt_load(out['load_average_after'])}")
    path = c.write_results("relay_gc", out)
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
