"""Many clients: can one relay hold 1,000 and 10,000 concurrent WebSocket sessions, idle and then active?

What it measures, for each N in `--sizes` (default 1000,10000), on a fresh `flowrelay serve -e echo`:

  open    N sessions (bytes subprotocol, permessage-deflate off) opened by K client processes (2,500 sessions
          each at most, each with its own uvloop event loop; `--open-concurrency` handshakes in flight per
          process): how long it took, handshake time p50/p99/max, failures by cause, and the kernel's listen
          queue counters (TcpExtListenOverflows / ListenDrops from /proc/net/netstat: a full accept queue drops
          SYNs, which the client retries after 1 s, 3 s, ...);
  idle    the sessions held open, doing nothing, for `--hold` seconds (full: 25 s, longer than the relay's 20 s
          keepalive ping, so every session answers one ping): how many are still open (clients' view, the
          relay's `connections_open` in GET /status, the relay's open file descriptors), and the relay's
          memory: per idle session = (relay RSS with N sessions - RSS with 0) / N, RSS from /proc/PID/status
          (the median of the samples taken during the hold; RSS with 0 is taken after one warm-up session);
  active  every session sends a 1-doc request every `--interval` seconds (1 s: N requests/s in all, each
          session starting at a random offset) for `--active` seconds and waits for each answer: requests sent
          and answered (goal: all), answer latency p50/p99, the relay's requests_total agreeing, and the CPU
          of the relay and of the client processes over the phase (a relay near 1.0 core is saturated: the
          sessions then send less often than asked, since each waits for its answer). Answers slower than
          100 ms are counted by the second of the relay's uptime in which they were sent: this shows whether
          they line up with the relay's keepalive pings (each session once every 20 s, spread over the interval
          in batches of 100) or with anything else the relay does at one moment;
  close   every session closed by its client; the relay's connections_open back to 0.

Then, once, a burst: the largest N opened with every handshake of a client process at once (no pacing), to
show what the listener's accept backlog (4096, capped by net.core.somaxconn) does to a burst of connections:
a full accept queue drops SYNs (ListenOverflows; the client retries after 1 s), else a handshake over 1 s waited
behind the others for the relay's one core; handshakes over 10 s would have failed with a 10 s open timeout
(websockets' default), which the clients here raise to 30 s.

The script raises RLIMIT_NOFILE to N + 4096 for itself (`resource.setrlimit`), so that the relay and the client
processes inherit it, and checks the relay's limit with `resource.prlimit` (raising it there too if it is lower).
Above the hard limit only a process with CAP_SYS_RESOURCE may go: without it the soft limit is raised to the
hard one, and a warning says when that is below N. Kernel socket memory is not in RSS: the
TCP `mem` pages of /proc/net/sockstat (machine-wide, both ends of every connection) are shown beside it.

How to read it: one row per N with the medians of the repetitions (min-max beside the memory figure); goals:
under 30 KB of relay RSS per idle session, and 10,000 sessions held (open after the hold, all active requests
answered). The burst table says how many handshakes failed or took over 1 s (a SYN retry when there were
listen overflows, else a wait behind the other handshakes).

    python bench/sessions.py [--quick] [--sizes 1000,10000] [--reps 3]
    # ~6 min full, ~2.5 min quick; writes bench/results/sessions.json

It is also the client process it starts (`python bench/sessions.py client URL --sessions N ...`), which speaks
a line protocol on stdin/stdout with the main script: it opens its sessions and prints a JSON line, then
obeys `status`, `active SECONDS INTERVAL` and `close`, one JSON line each, and exits by itself after
`--max-lifetime` seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import math
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import common as c

GOAL_KB_PER_SESSION = 30.0
GOAL_SESSIONS = 10_000
PER_PROCESS = 2_500
OPEN_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 30.0
FD_HEADROOM = 4096
SLOW_S = 0.1
# A client process's garbage collections longer than this are reported with the time they ran: a client that stops
# for a collection reads every answer of that moment late, which would be charged to the relay.
GC_PAUSE_REPORT_S = 0.01


# ---- the client process ------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _pcts(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"p50_ms": c.percentile(values, 50) * 1e3, "p99_ms": c.percentile(values, 99) * 1e3,
            "max_ms": (values[-1] * 1e3) if values else float("nan"), "count": len(values)}


def watch_gc_pauses() -> list[tuple[float, float, int]]:
    """Record this process's garbage collections over GC_PAUSE_REPORT_S: (wall time at start, seconds, generation)."""
    pauses: list[tuple[float, float, int]] = []
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        if took > GC_PAUSE_REPORT_S:
            pauses.append((time.time() - took, took, info["generation"]))

    gc.callbacks.append(on_gc)
    return pauses


async def client_main(url: str, sessions: int, open_concurrency: int, gc_freeze: bool) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    gc_pauses = watch_gc_pauses()
    prefix, suffix = c.request_template("bytes")
    sem = asyncio.Semaphore(open_concurrency)
    errors: collections.Counter[str] = collections.Counter()
    open_times: list[float] = []

    async def open_one() -> ClientConnection | None:
        async with sem:
            t = perf()
            try:
                ws = await connect(url, subprotocols=["bytes"], compression=None, ping_interval=None,  # type: ignore[list-item]
                                   open_timeout=OPEN_TIMEOUT_S, close_timeout=5, proxy=None)
            except Exception as exc:  # every cause is counted and reported, none is fatal
                errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
                return None
            open_times.append(perf() - t)
            return ws

    t0 = perf()
    opened = [ws for ws in await asyncio.gather(*(open_one() for _ in range(sessions))) if ws is not None]
    if gc_freeze:
        # The sessions live as long as the process: out of the collector's sight, as the relay and `flowrelay
        # load` keep theirs, so that no full collection over them stops this client in the active phase.
        gc.collect()
        gc.freeze()
    _emit({"phase": "open", "opened": len(opened), "failed": sessions - len(opened), "errors": dict(errors),
           "open_s": perf() - t0, "handshake": _pcts(open_times),
           "handshakes_over_1s": sum(1 for x in open_times if x > 1.0),
           "handshakes_over_10s": sum(1 for x in open_times if x > 10.0)})

    def status() -> dict[str, Any]:
        codes: collections.Counter[str] = collections.Counter()
        for ws in opened:
            if ws.state is not State.OPEN:
                codes[str(ws.close_code)] += 1
        return {"phase": "status", "open": sum(1 for ws in opened if ws.state is State.OPEN),
                "closed_by_code": dict(codes)}

    async def active(seconds: float, interval: float) -> dict[str, Any]:
        counts: collections.Counter[str] = collections.Counter()
        latencies: list[float] = []
        slow: collections.Counter[int] = collections.Counter()  # answers over SLOW_S, by wall-clock second sent
        until = loop.time() + seconds

        async def one(k: int, ws: ClientConnection) -> None:
            await asyncio.sleep(random.random() * interval)
            next_at = loop.time()
            seq = 0
            while loop.time() < until:
                seq += 1
                rid = b"%0*d" % (c.ID_WIDTH, k * 1_000_000 + seq)
                t = perf()
                try:
                    await ws.send(prefix + rid + suffix)
                    counts["sent"] += 1
                    msg = await asyncio.wait_for(ws.recv(decode=False), ANSWER_TIMEOUT_S)
                except TimeoutError:
                    counts["timeout"] += 1
                    return  # an answer may still come: this session can no longer pair answers with requests
                except ConnectionClosed:
                    counts["closed"] += 1
                    return
                took = perf() - t
                latencies.append(took)
                if took > SLOW_S:
                    slow[int(time.time() - took)] += 1
                counts["answered" if rid in msg else "wrong_answer"] += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))

        t1 = perf()
        gc_pauses.clear()
        await asyncio.gather(*(one(k, ws) for k, ws in enumerate(opened) if ws.state is State.OPEN))
        return {"phase": "active", "seconds": perf() - t1, "sessions": len(opened), **dict(counts),
                "latency": _pcts(latencies), "slow_by_second": {str(k): v for k, v in slow.items()},
                "gc_pauses": [[t, took, gen] for t, took, gen in gc_pauses]}

    reader = loop.run_in_executor(None, sys.stdin.readline)
    while True:
        line = (await reader).strip()
        if not line or line == "close":
            t2 = perf()
            await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
            _emit({"phase": "closed", "close_s": perf() - t2})
            return
        if line == "status":
            _emit(status())
        elif line.startswith("active"):
            _, seconds, interval = line.split()
            _emit(await active(float(seconds), float(interval)))
        reader = loop.run_in_executor(None, sys.stdin.readline)


# ---- the machine and the relay, from /proc -------------------------------------------------------


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def tcp_ext() -> dict[str, int]:
    """TcpExt counters of /proc/net/netstat (machine-wide)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], (int(v) for v in values.split()[1:]), strict=False))
    return {}


def listen_counters() -> dict[str, int]:
    ext = tcp_ext()
    return {k: ext.get(k, 0) for k in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies")}


def sockstat_tcp_pages() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            return int(parts[parts.index("mem") + 1])
    return 0


def relay_status(url: str) -> dict[str, Any]:
    http = url.replace("ws://", "http://", 1).rstrip("/") + "/status"
    with urllib.request.urlopen(http, timeout=10) as resp:  # 127.0.0.1 only: the relay this script started
        return json.loads(resp.read())


def raise_nofile(want: int, pid: int = 0) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE of `pid` (0: this process) to `want`: the hard limit too when allowed
    (CAP_SYS_RESOURCE), else the soft limit up to the hard one. Returns the limits in force."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE) if pid else resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft, hard
    try:
        new = (want, max(hard, want))
        if pid:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, new)
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
    except (ValueError, PermissionError):  # no CAP_SYS_RESOURCE: the hard limit stays
        new = (min(want, hard), hard)
        if pid:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, new)
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
    return resource.prlimit(pid, resource.RLIMIT_NOFILE) if pid else resource.getrlimit(resource.RLIMIT_NOFILE)


# ---- the client processes, from the main script ------------------------------------------------------


class ClientProc:
    """One client process and the JSON lines it prints."""

    def __init__(self, url: str, sessions: int, open_concurrency: int, max_lifetime_s: float, err_path: Path,
                 gc_freeze: bool = True) -> None:
        cmd = [c.PYTHON, str(Path(__file__).resolve()), "client", url, "--sessions", str(sessions),
               "--open-concurrency", str(open_concurrency), "--max-lifetime", str(max_lifetime_s)]
        if not gc_freeze:
            cmd.append("--no-gc-freeze")
        self.err = err_path.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=c.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, phase: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"client {self.proc.pid}: no {phase!r} line within {timeout_s:g} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"client {self.proc.pid} exited (code {self.proc.poll()}) before {phase!r}")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if obj.get("phase") == phase:
                    return obj

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("close")
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.stop_process(self.proc)  # type: ignore[arg-type]
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            if self.proc.stdout is not None and not self.thread.is_alive():
                self.proc.stdout.close()
        self.err.close()


def all_expect(clients: list[ClientProc], phase: str, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    return [cl.expect(phase, max(1.0, deadline - time.monotonic())) for cl in clients]


def merge_pcts(parts: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Client processes report their own percentiles: the merged figure is the worst of them for p99/max
    and the count-weighted median of p50s (an approximation, said so in the output)."""
    stats = [p[key] for p in parts if p[key]["count"]]
    if not stats:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "count": 0}
    return {"p50_ms": c.median([s["p50_ms"] for s in stats]), "p99_ms": max(s["p99_ms"] for s in stats),
            "max_ms": max(s["max_ms"] for s in stats), "count": sum(s["count"] for s in stats)}


def run_size(n: int, args: argparse.Namespace, open_concurrency: int, active: bool, label: str,
             work: Path) -> dict[str, Any]:
    """One fresh relay, N sessions: open, hold idle, (active), close."""
    procs = max(1, math.ceil(n / PER_PROCESS))
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    out: dict[str, Any] = {"sessions": n, "client_processes": procs, "open_concurrency_per_process": open_concurrency,
                           "label": label}
    with c.relay_server("echo", extra=args.relay_arg) as relay:
        relay_t0 = time.time()  # its keepalive loop starts with it (slow answers are told by this uptime)
        pid = relay.pids()[0]
        out["relay_nofile"] = list(raise_nofile(n + FD_HEADROOM, pid))
        # One warm-up session with one request, then RSS with no session.
        warm = ClientProc(relay.url, 1, 1, 120, work / "warm.err")
        try:
            warm.expect("open", 30)
            warm.send("active 0.5 1")
            warm.expect("active", 60)
        finally:
            warm.stop()
        time.sleep(1.0)
        rss0 = []
        for _ in range(3):
            rss0.append(c.status_kb(pid) or 0)
            time.sleep(0.3)
        out["rss0_kb"] = c.median(rss0)
        out["fds0"] = open_fds(pid)
        sock0 = sockstat_tcp_pages()
        listen0 = listen_counters()
        req0 = int(relay_status(relay.url)["envs"]["requests_total"])
        lifetime = 60 + OPEN_TIMEOUT_S + args.hold + (args.active + ANSWER_TIMEOUT_S if active else 0) + 120
        clients: list[ClientProc] = []
        try:
            t0 = time.monotonic()
            cpu_open0 = c.proc_cpu_s([pid])
            clients = [ClientProc(relay.url, k, open_concurrency, lifetime, work / f"client-{i}.err",
                                  not args.client_no_gc_freeze)
                       for i, k in enumerate(shares)]
            opens = all_expect(clients, "open", 60 + OPEN_TIMEOUT_S + n / 50)
            out["open_wall_s"] = time.monotonic() - t0
            out["opened"] = sum(o["opened"] for o in opens)
            out["open_failed"] = sum(o["failed"] for o in opens)
            errors: collections.Counter[str] = collections.Counter()
            for o in opens:
                errors.update(o["errors"])
            out["open_errors"] = dict(errors)
            out["handshake"] = merge_pcts(opens, "handshake")
            out["handshakes_over_1s"] = sum(o["handshakes_over_1s"] for o in opens)
            out["handshakes_over_10s"] = sum(o["handshakes_over_10s"] for o in opens)
            out["open_relay_cpu_s"] = c.proc_cpu_s([pid]) - cpu_open0
            listen1 = listen_counters()
            out["listen_counters"] = {k: listen1[k] - listen0[k] for k in listen1}
            print(f"    {label} N={n:,}: opened {out['opened']:,} in {out['open_wall_s']:.1f} s "
                  f"({out['open_failed']} failed; handshake p99 {out['handshake']['p99_ms']:.0f} ms, "
                  f"{out['handshakes_over_1s']} over 1 s; listen overflows "
                  f"{out['listen_counters']['ListenOverflows']})",
                  flush=True)
            # Idle hold: RSS samples after a short settle.
            hold_end = time.monotonic() + args.hold
            time.sleep(min(2.0, args.hold / 4))
            samples = []
            while time.monotonic() < hold_end:
                samples.append(c.status_kb(pid) or 0)
                time.sleep(min(1.0, max(0.0, hold_end - time.monotonic())))
            out["rss_idle_kb"] = c.median(samples)
            out["rss_idle_samples"] = len(samples)
            out["fds_idle"] = open_fds(pid)
            out["sock_tcp_pages_delta"] = sockstat_tcp_pages() - sock0
            st = relay_status(relay.url)
            out["relay_connections_open_idle"] = int(st["envs"]["connections_open"])
            for cl in clients:
                cl.send("status")
            stats = all_expect(clients, "status", 60)
            out["client_open_after_hold"] = sum(s["open"] for s in stats)
            closed: collections.Counter[str] = collections.Counter()
            for s in stats:
                closed.update(s["closed_by_code"])
            out["client_closed_during_hold"] = dict(closed)
            per = (out["rss_idle_kb"] - out["rss0_kb"]) / max(out["opened"], 1)
            out["kb_per_idle_session"] = per
            print(f"    {label} N={n:,}: after {args.hold:g} s idle: open {out['client_open_after_hold']:,} (clients), "
                  f"{out['relay_connections_open_idle']:,} (relay), fds {out['fds_idle']:,}; relay RSS "
                  f"{out['rss0_kb'] / 1024:.1f} -> {out['rss_idle_kb'] / 1024:.1f} MiB = {per:.1f} KB/session",
                  flush=True)
            if active:
                client_pids = [cl.proc.pid for cl in clients]
                cpu_r0, cpu_c0, t_a = c.proc_cpu_s([pid]), c.proc_cpu_s(client_pids), time.monotonic()
                busy0 = c.machine_busy_s()
                for cl in clients:
                    cl.send(f"active {args.active:g} {args.interval:g}")
                acts = all_expect(clients, "active", args.active + ANSWER_TIMEOUT_S + 120)
                wall_a = time.monotonic() - t_a
                relay_cpu_a, client_cpu_a = c.proc_cpu_s([pid]) - cpu_r0, c.proc_cpu_s(client_pids) - cpu_c0
                # Everything else the machine did meanwhile (this script's own share is negligible).
                other_a = max(0.0, c.machine_busy_s() - busy0 - relay_cpu_a - client_cpu_a)
                sent = sum(a.get("sent", 0) for a in acts)
                answered = sum(a.get("answered", 0) for a in acts)
                out["active"] = {
                    "sent": sent, "answered": answered,
                    "timeout": sum(a.get("timeout", 0) for a in acts),
                    "closed": sum(a.get("closed", 0) for a in acts),
                    "wrong_answer": sum(a.get("wrong_answer", 0) for a in acts),
                    "seconds": max(a["seconds"] for a in acts),
                    "latency": merge_pcts(acts, "latency"),
                    "relay_requests": int(relay_status(relay.url)["envs"]["requests_total"]) - req0,
                    "rss_after_kb": c.status_kb(pid) or 0,
                    "relay_cpu_cores": relay_cpu_a / wall_a,
                    "clients_cpu_cores": client_cpu_a / wall_a,
                    "other_cpu_cores": other_a / wall_a,
                    "relay_cpu_us_per_req": 1e6 * relay_cpu_a / max(answered, 1),
                }
                slow: collections.Counter[int] = collections.Counter()
                for act in acts:
                    for sec, k in act.get("slow_by_second", {}).items():
                        slow[int(sec) - int(relay_t0)] += k
                out["active"]["slow_by_relay_second"] = dict(sorted(slow.items()))
                # The clients' own pauses, by the second of the relay's uptime they began in: answers read late
                # because a client stopped are not the relay's.
                pauses = sorted((round(t - relay_t0, 3), round(took * 1e3, 1), gen, i)
                                for i, act in enumerate(acts) for t, took, gen in act.get("gc_pauses", []))
                out["active"]["client_gc_pauses"] = [{"relay_s": t, "ms": ms, "generation": g, "client": i}
                                                     for t, ms, g, i in pauses]
                a = out["active"]
                a["rps"] = sent / a["seconds"] if a["seconds"] else float("nan")
                a["all_answered"] = sent > 0 and answered == sent == a["relay_requests"]
                print(f"    {label} N={n:,}: active {a['seconds']:.1f} s: sent {sent:,} ({a['rps']:,.0f}/s), answered "
                      f"{answered:,}, relay counted {a['relay_requests']:,}; latency p50 "
                      f"{a['latency']['p50_ms']:.1f} ms, p99 {a['latency']['p99_ms']:.1f} ms; relay CPU "
                      f"{a['relay_cpu_cores']:.2f} cores ({a['relay_cpu_us_per_req']:.0f} us/req), clients "
                      f"{a['clients_cpu_cores']:.2f} cores, other processes {a['other_cpu_cores']:.2f} cores; "
                      f"relay RSS {a['rss_after_kb'] / 1024:.1f} MiB", flush=True)
                if slow:
                    print(f"    {label} N={n:,}: answers over {SLOW_S * 1e3:.0f} ms by the second of the relay's "
                          "uptime they were sent in: " + ", ".join(f"{k} s: {v:,}" for k, v in sorted(slow.items())),
                          flush=True)
                if pauses:
                    print(f"    {label} N={n:,}: client garbage collections over {GC_PAUSE_REPORT_S * 1e3:.0f} ms "
                          "(relay uptime s, ms, generation, client): "
                          + ", ".join(f"{t:.1f} s {ms:.0f} ms gen {g} #{i}" for t, ms, g, i in pauses), flush=True)
            for cl in clients:
                cl.send("close")
            all_expect(clients, "closed", 120)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                left = int(relay_status(relay.url)["envs"]["connections_open"])
                if left == 0:
                    break
                time.sleep(0.5)
            out["relay_connections_open_after_close"] = left
            out["rss_after_close_kb"] = c.status_kb(pid) or 0
        finally:
            for cl in clients:
                cl.stop()
        out["relay_output_tail"] = [line for line in relay.output if "WARNING" in line or "ERROR" in line][-20:]
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        cp = argparse.ArgumentParser()
        cp.add_argument("cmd")
        cp.add_argument("url")
        cp.add_argument("--sessions", type=int, required=True)
        cp.add_argument("--open-concurrency", type=int, default=50)
        cp.add_argument("--max-lifetime", type=float, default=600.0)
        cp.add_argument("--no-gc-freeze", action="store_true")
        a = cp.parse_args()
        raise_nofile(a.sessions + FD_HEADROOM)
        import uvloop

        with contextlib.suppress(TimeoutError):
            main_coro = client_main(a.url, a.sessions, a.open_concurrency, not a.no_gc_freeze)
            uvloop.run(asyncio.wait_for(main_coro, a.max_lifetime))
        return 0

    p = c.base_args(__doc__ or "")
    p.add_argument("--sizes", default="1000,10000", help="session counts, comma-separated (default 1000,10000)")
    p.add_argument("--hold", type=float, help="seconds to hold the sessions idle (default 25; --quick 6)")
    p.add_argument("--active", type=float, help="seconds of the active phase (default 15; --quick 6)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a session's requests (default 1)")
    p.add_argument("--open-concurrency", type=int, default=50,
                   help="handshakes in flight per client process (default 50)")
    p.add_argument("--no-burst", action="store_true", help="skip the burst test")
    p.add_argument("--client-no-gc-freeze", action="store_true",
                   help="leave the client processes' sessions in sight of the garbage collector (as before)")
    p.add_argument("--relay-arg", action="append", default=[],
                   help="one more `flowrelay serve` argument (repeatable), e.g. --relay-arg=--no-gc-freeze")
    args = p.parse_args()
    args.hold = args.hold or (6.0 if args.quick else 25.0)
    args.active = args.active or (6.0 if args.quick else 15.0)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    c.install_sigterm_as_interrupt()
    nofile = raise_nofile(max(sizes) + FD_HEADROOM)
    load_before = c.header(f"sessions: {', '.join(f'{n:,}' for n in sizes)} WebSocket sessions on `flowrelay serve -e "
                           f"echo`, hold {args.hold:g} s, active {args.active:g} s at 1 request/{args.interval:g} s "
                           f"per session, {args.reps} reps{' (quick)' if args.quick else ''}", args.wait_quiet)
    if nofile[0] < max(sizes) + 64:
        print(f"WARNING: RLIMIT_NOFILE {nofile[0]:,}/{nofile[1]:,} is below {max(sizes):,} sessions and cannot be "
              "raised here (raising the hard limit needs CAP_SYS_RESOURCE)", flush=True)
    print(f"RLIMIT_NOFILE of this script (inherited by the relay and the clients): {nofile[0]:,}/{nofile[1]:,}; "
          f"net.core.somaxconn {Path('/proc/sys/net/core/somaxconn').read_text().strip()}, "
          f"tcp_max_syn_backlog {Path('/proc/sys/net/ipv4/tcp_max_syn_backlog').read_text().strip()}", flush=True)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    burst: dict[str, Any] | None = None
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"flowrelay-bench-sessions-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        for rep in range(args.reps):
            order = sizes if rep % 2 == 0 else sizes[::-1]
            for n in order:
                r = run_size(n, args, args.open_concurrency, True, f"rep {rep + 1}", work)
                r["rep"] = rep
                runs.append(r)
        if not args.no_burst:
            n = max(sizes)
            print(f"  burst: {n:,} sessions, every handshake of a client process at once", flush=True)
            burst = run_size(n, args, PER_PROCESS, False, "burst", work)
    finally:
        for f in work.glob("*.err"):
            text = f.read_text(errors="replace").strip()
            if text:
                print(f"  client stderr ({f.name}): {text[-800:]}", flush=True)
            f.unlink()
        with contextlib.suppress(OSError):
            work.rmdir()
    load_after = c.load_average()
    noise_r = noise.report()

    summary: dict[str, Any] = {}
    rows = []
    for n in sizes:
        rs = [r for r in runs if r["sessions"] == n]
        kb = [r["kb_per_idle_session"] for r in rs]
        held = [r["client_open_after_hold"] for r in rs]
        act = [r["active"] for r in rs]
        m = {
            "kb_per_idle_session": c.median(kb),
            "held_after_idle": min(held),
            "relay_connections_open_idle": min(r["relay_connections_open_idle"] for r in rs),
            "open_failed": max(r["open_failed"] for r in rs),
            "open_wall_s": c.median([r["open_wall_s"] for r in rs]),
            "handshake_p99_ms": c.median([r["handshake"]["p99_ms"] for r in rs]),
            "listen_overflows": max(r["listen_counters"]["ListenOverflows"] for r in rs),
            "handshakes_over_1s": max(r["handshakes_over_1s"] for r in rs),
            "active_rps": c.median([a["rps"] for a in act]),
            "active_sent": sum(a["sent"] for a in act),
            "active_answered": sum(a["answered"] for a in act),
            "all_answered": all(a["all_answered"] for a in act),
            "active_p50_ms": c.median([a["latency"]["p50_ms"] for a in act]),
            "active_p99_ms": c.median([a["latency"]["p99_ms"] for a in act]),
            # Per rep, beside what the rest of the machine used meanwhile: one slow rep among quiet ones is a
            # pause of the relay's; every rep slow while other processes take a core is the machine.
            "active_p99_ms_by_rep": [a["latency"]["p99_ms"] for a in act],
            "active_other_cpu_cores_by_rep": [a["other_cpu_cores"] for a in act],
            "active_relay_cpu_cores": c.median([a["relay_cpu_cores"] for a in act]),
            "active_clients_cpu_cores": c.median([a["clients_cpu_cores"] for a in act]),
            "active_other_cpu_cores": c.median([a["other_cpu_cores"] for a in act]),
            "active_relay_cpu_us_per_req": c.median([a["relay_cpu_us_per_req"] for a in act]),
            "rss0_mib": c.median([r["rss0_kb"] for r in rs]) / 1024,
            "rss_idle_mib": c.median([r["rss_idle_kb"] for r in rs]) / 1024,
            "sock_kb_per_connection": c.median([4 * r["sock_tcp_pages_delta"] / max(r["opened"], 1) for r in rs]),
        }
        summary[str(n)] = m
        rows.append([f"{n:,}", f"{m['held_after_idle']:,}", f"{m['relay_connections_open_idle']:,}",
                     m["open_wall_s"], m["handshake_p99_ms"], str(m["handshakes_over_1s"]), str(m["listen_overflows"]),
                     m["rss0_mib"], m["rss_idle_mib"],
                     m["kb_per_idle_session"], c.spread(kb), m["active_rps"],
                     f"{m['active_answered']:,}/{m['active_sent']:,}", m["active_p50_ms"], m["active_p99_ms"],
                     m["active_relay_cpu_cores"], m["active_clients_cpu_cores"], m["active_other_cpu_cores"]])
    print()
    print(c.table(["sessions", "held (min)", "relay open", "open s", "handshake p99 ms", ">1 s", "overflows",
                   "RSS0 MiB", "RSS N MiB",
                   "KB/session", "(min-max)", "active req/s", "answered/sent", "p50 ms", "p99 ms", "relay cores",
                   "client cores", "other cores"], rows))
    print("(>1 s: handshakes that took over 1 s (a SYN retry if the listen queue overflowed, else a wait behind "
          "the other handshakes), most in a rep; overflows: "
          "TcpExtListenOverflows during the opening, most in a rep; latency p50: median of the client processes' "
          "p50s, p99: the worst process's p99; cores: CPU over the active phase, other = the rest of the machine; "
          "kernel TCP memory is not in RSS, "
          f"it grew {c.median([m['sock_kb_per_connection'] for m in summary.values()]):.1f} KB per connection, "
          "both ends, machine-wide)")
    if burst is not None:
        print()
        print(c.table(["burst", "opened", "failed", "open s", "handshake p50 ms", "p99 ms", "max ms", "over 1 s",
                       "over 10 s", "ListenOverflows", "ListenDrops", "held after idle"],
                      [[f"{burst['sessions']:,} at once", f"{burst['opened']:,}", str(burst["open_failed"]),
                        burst["open_wall_s"], burst["handshake"]["p50_ms"], burst["handshake"]["p99_ms"],
                        burst["handshake"]["max_ms"], str(burst["handshakes_over_1s"]),
                        str(burst["handshakes_over_10s"]),
                        str(burst["listen_counters"]["ListenOverflows"]), str(burst["listen_counters"]["ListenDrops"]),
                        f"{burst['client_open_after_hold']:,}"]]))
        if burst["open_errors"]:
            print("burst handshake failures: " + "; ".join(f"{k} x{v}" for k, v in burst["open_errors"].items()))
    for n in sizes:
        m = summary[str(n)]
        print(f"N={n:,}: active p99 per rep " + ", ".join(
            f"{p99:,.1f} ms (other processes {oth:.2f} cores)"
            for p99, oth in zip(m["active_p99_ms_by_rep"], m["active_other_cpu_cores_by_rep"], strict=True)))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    big = summary.get(str(GOAL_SESSIONS)) or summary[str(max(sizes))]
    n_big = GOAL_SESSIONS if str(GOAL_SESSIONS) in summary else max(sizes)
    worst_kb = max(m["kb_per_idle_session"] for m in summary.values())
    held_ok = big["held_after_idle"] >= GOAL_SESSIONS and big["relay_connections_open_idle"] >= GOAL_SESSIONS
    met = {"kb_per_idle_session": worst_kb < GOAL_KB_PER_SESSION, "held_10000": held_ok,
           "all_answered": all(m["all_answered"] for m in summary.values())}
    print(f"ratios: relay RSS per idle session {worst_kb:.1f} KB (worst size) = "
          f"{worst_kb / GOAL_KB_PER_SESSION:.2f} of the {GOAL_KB_PER_SESSION:g} KB goal "
          f"({'ok' if met['kb_per_idle_session'] else 'MISSED'}); held "
          f"{big['held_after_idle']:,} of {n_big:,} = {big['held_after_idle'] / GOAL_SESSIONS:.2f} of the "
          f"{GOAL_SESSIONS:,} goal ({'ok' if held_ok else 'MISSED'}); active requests all answered: "
          f"{'ok' if met['all_answered'] else 'MISSED'}")
    path = c.write_results("sessions", {
        "benchmark": "sessions",
        "command": "python bench/sessions.py" + (" --quick" if args.quick else "")
        + (f" --sizes {args.sizes}" if args.sizes != "1000,10000" else "")
        + "".join(f" --relay-arg={a}" for a in args.relay_arg),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "setup": {"relay": "flowrelay serve -e echo", "subprotocol": "bytes", "hold_s": args.hold,
                  "active_s": args.active, "interval_s": args.interval, "per_process": PER_PROCESS,
                  "open_concurrency_per_process": args.open_concurrency, "rlimit_nofile": list(nofile),
                  "reps": args.reps},
        "medians": summary,
        "goals": {"kb_per_idle_session": GOAL_KB_PER_SESSION, "sessions": GOAL_SESSIONS, "met": met},
        "burst": burst,
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
