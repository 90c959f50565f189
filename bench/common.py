"""Shared pieces of the benchmarks: servers started and stopped by PID, a pipelined client, statistics.

Everything targets 127.0.0.1 and is bounded in time. Servers run as subprocesses in their own process
group and are stopped by PID (SIGTERM, then SIGKILL after a bound), also when a benchmark is interrupted.

This file is also a small command line, so that clients and the bare echo server run in processes of
their own (one core each on a 2-core machine, and a CPU time per process that can be read):

    python bench/common.py echo [--port 0] [--max-lifetime 900]
        a bare websockets+uvloop echo server, permessage-deflate off: the ceiling of the stack.
        Prints `READY ws://127.0.0.1:PORT` once it listens.
    python bench/common.py client URL --mode json|bytes --window 32 --duration 3 --warmup 0.5
                                      [--match id|fifo] [--server-pids 1,2]
        one connection, WINDOW requests in flight (each answer sends the next one), 1 doc per request,
        frames pre-encoded with relay.wire and stamped with a counter. `--match id` reads the counter back
        from every answer (json: `parameters.rid`, bytes: `header.request_id`); an echoed request carries
        it in the same place, so every target gets the same client work. `--match fifo` parses nothing:
        the k-th answer is taken for the k-th request (a client doing nothing but send and receive).
        Prints one JSON object: answers/s over the measured window, latency p50/p99 (ms), CPU seconds
        of the client and of the server PIDs over the window.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ID_WIDTH = 24
_PLACEHOLDER = b"RIDPLACEHOLDERX" + b"X" * (ID_WIDTH - 15)
DOC_TEXT = "hello flowrelay!"  # 16 bytes, the load engine's default text size
CORRELATION_KEY = "rid"


# ---- the machine -------------------------------------------------------------------------------


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def _stat_cpu_s(path: Path) -> float:
    """User + system CPU seconds from a /proc stat file (a process's or one thread's); 0 when it is gone."""
    try:
        stat = path.read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds of live processes, from /proc (10 ms resolution)."""
    return sum(_stat_cpu_s(Path(f"/proc/{pid}/stat")) for pid in pids)


def thread_cpu_s(pid: int, name: str) -> float:
    """CPU seconds of the threads of process `pid` named `name` (as /proc/.../comm keeps it: 15 characters)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name[:15]:
            total += _stat_cpu_s(task / "stat")
    return total


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (every core), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def status_kb(pid: int, key: str = "VmRSS") -> int | None:
    """A kB figure from /proc/PID/status (VmRSS, VmHWM, ...); None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has reaped (servers count once stopped)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Noise:
    """How busy the machine was with other work while a benchmark ran: the machine's CPU time less ours.

    Read `report()` after every server is stopped (a server's CPU counts as ours once it is reaped)."""

    def __init__(self) -> None:
        self.wall0 = time.monotonic()
        self.busy0 = machine_busy_s()
        self.own0 = own_cpu_s()

    def report(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        other = (machine_busy_s() - self.busy0) - (own_cpu_s() - self.own0)
        return {"wall_s": wall, "other_cpu_s": max(other, 0.0),
                "other_cores": max(other, 0.0) / wall if wall > 0 else 0.0}


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.3, sample_s: float = 3.0) -> float:
    """Wait (at most `max_wait_s`) until other processes use under `threshold_cores` over `sample_s`.
    Returns what they used in the last sample, in cores."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy0, t0 = machine_busy_s() - own_cpu_s(), time.monotonic()
        time.sleep(sample_s)
        used = (machine_busy_s() - own_cpu_s() - busy0) / (time.monotonic() - t0)
        if used < threshold_cores or time.monotonic() >= deadline:
            return used
        print(f"  waiting for a quiet machine: other processes use {used:.2f} cores", flush=True)


def noise_line(noise: dict[str, float]) -> str:
    return (f"other processes used {noise['other_cpu_s']:.1f} CPU-s during the {noise['wall_s']:.0f} s run "
            f"({noise['other_cores']:.2f} of {os.cpu_count()} cores)")


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: cores, versions, the code's commit and whether it had local edits."""
    import platform

    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    versions = {}
    for mod in ("websockets", "uvloop", "orjson"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    changed = [line[3:] for line in git("status", "--porcelain", "--", "relay", "loadtest").splitlines()]
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_in_relay_or_loadtest": changed,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def install_sigterm_as_interrupt() -> None:
    """So that `kill PID` of a benchmark still runs its `finally` blocks and stops its servers."""

    def handler(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# ---- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess: its URL, its PIDs (for CPU accounting) and how to stop it."""

    name: str
    url: str
    proc: subprocess.Popen[str] | None = None
    pid_source: Callable[[], list[int]] | None = None
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))

    def pids(self) -> list[int]:
        if self.pid_source is not None:
            return self.pid_source()
        return [self.proc.pid] if self.proc is not None else []


def _pump(stream: Any, sink: collections.deque[str], ready: threading.Event, marker: str,
          found: list[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            line = line.rstrip("\n")
            sink.append(line)
            if not ready.is_set() and marker in line:
                found.append(line)
                ready.set()
    ready.set()


def stop_process(proc: subprocess.Popen[str], term_grace_s: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL by PID after `term_grace_s`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=term_grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


@contextlib.contextmanager
def _spawn(name: str, cmd: list[str], marker: str, parse_url: Callable[[str], str],
           timeout_s: float = 30.0) -> Iterator[Server]:
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True, env=_child_env(),
    )
    server = Server(name=name, url="", proc=proc)
    ready = threading.Event()
    found: list[str] = []
    pump = threading.Thread(target=_pump, args=(proc.stdout, server.output, ready, marker, found), daemon=True)
    pump.start()
    try:
        ready.wait(timeout_s)
        if not found:
            tail = "\n".join(server.output)
            raise RuntimeError(f"{name} did not start within {timeout_s:g} s:\n{tail}")
        server.url = parse_url(found[0])
        yield server
    finally:
        stop_process(proc)
        pump.join(timeout=5.0)
        if proc.stdout is not None and not pump.is_alive():
            proc.stdout.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FLOWRELAY_NO_UVLOOP", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def relay_server(*executors: str, extra: Sequence[str] = ()) -> contextlib.AbstractContextManager[Server]:
    """`flowrelay serve --port 0 -e ...` on 127.0.0.1 (logs at WARNING)."""
    cmd = [PYTHON, "-m", "flowrelay", "serve", "--host", LOOPBACK, "--port", "0", "--log-level", "WARNING"]
    for e in executors:
        cmd += ["-e", e]
    cmd += list(extra)

    def url(line: str) -> str:
        # "flowrelay serving ws://127.0.0.1:PORT/ executors: ..."
        return line.split()[2].rstrip("/")

    return _spawn("relay " + " ".join(executors), cmd, "flowrelay serving ws://", url)


def echo_server(max_lifetime_s: float = 900.0) -> contextlib.AbstractContextManager[Server]:
    """A bare websockets+uvloop echo server (this file's `echo` command)."""
    cmd = [PYTHON, str(Path(__file__).resolve()), "echo", "--port", "0", "--max-lifetime", str(max_lifetime_s)]
    return _spawn("bare echo", cmd, "READY ws://", lambda line: line.split()[1])


@contextlib.contextmanager
def jina_flow(timeout_s: float = 120.0) -> Iterator[Server]:
    """A real Jina 3.34 Flow with one trivial Executor (`upper`), via tests/jina_peer.py."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        import jina_peer  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with jina_peer.run_flow(protocol="websocket", sleep_ms=0, no_sleeper=True, timeout_s=timeout_s) as flow:
        yield Server(name="jina", url=flow.url, pid_source=flow.pids)


# ---- child processes with their CPU time ---------------------------------------------------------


@dataclass
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float  # user + system of the child and everything it waited for
    wall_s: float
    timed_out: bool


def run_child(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None,
              cpu_samples: list[tuple[float, float]] | None = None) -> ChildRun:
    """Run a command to its end (killed by PID past `timeout_s`), with its exact CPU time from wait4.

    `cpu_samples`, when given, receives (seconds since the start, CPU seconds so far) of the child process every
    0.1 s while it runs (from /proc, 10 ms resolution): what it used in a window of its run, start-up left out."""
    # Named per thread too: bench/proxy_overhead.py runs two load children at once.
    tag = f"{os.getpid()}-{threading.get_ident()}"
    out_path = RESULTS_DIR / f".child-{tag}.out"
    err_path = RESULTS_DIR / f".child-{tag}.err"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timed_out = False
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env or _child_env(), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        status, rusage = 0, None
        try:
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.monotonic() > deadline and not timed_out:
                    timed_out = True
                    os.kill(proc.pid, signal.SIGKILL)
                if cpu_samples is not None and (not cpu_samples or time.perf_counter() - started
                                                >= cpu_samples[-1][0] + 0.1):
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        cpu_samples.append((time.perf_counter() - started,
                                            _stat_cpu_s(Path(f"/proc/{proc.pid}/stat"))))
                time.sleep(0.02)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.wait4(proc.pid, 0)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    cpu = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else float("nan")
    return ChildRun(proc.returncode, stdout, stderr, cpu, wall, timed_out)


def run_pipelined(url: str, mode: str, window: int, duration_s: float, warmup_s: float, match: str = "id",
                  server_pids: Sequence[int] = (), endpoint: str = "/index") -> dict[str, Any]:
    """The pipelined client in a process of its own; returns its JSON result."""
    cmd = [PYTHON, str(Path(__file__).resolve()), "client", url, "--mode", mode, "--window", str(window),
           "--duration", str(duration_s), "--warmup", str(warmup_s), "--match", match, "--endpoint", endpoint]
    if server_pids:
        cmd += ["--server-pids", ",".join(map(str, server_pids))]
    run = run_child(cmd, timeout_s=duration_s + warmup_s + 60.0)
    if run.returncode != 0 or not run.stdout.strip():
        raise RuntimeError(f"client failed (exit {run.returncode}): {run.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    result["process_cpu_s"] = run.cpu_s
    return result


def flowrelay_load(args: list[str], timeout_s: float,
                   cpu_samples: list[tuple[float, float]] | None = None) -> tuple[dict[str, Any], ChildRun]:
    """`flowrelay load ... --json --quiet` in a child process: its summary.json and its run (CPU time)."""
    cmd = [PYTHON, "-m", "flowrelay", "load", *args, "--json", "--quiet"]
    run = run_child(cmd, timeout_s=timeout_s, cpu_samples=cpu_samples)
    if run.returncode not in (0, 99) or not run.stdout.strip():
        raise RuntimeError(f"flowrelay load failed (exit {run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout), run


# ---- statistics and output ---------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def us_per_answer(run: dict[str, Any], cpu_key: str = "server_cpu_s") -> float:
    """A pipelined run's CPU seconds (`cpu_key`) per answered request, in microseconds (NaN: none answered)."""
    return run[cpu_key] / run["answered"] * 1e6 if run["answered"] else float("nan")


def spread(values: Sequence[float]) -> str:
    """`min-max` of the repetitions, to show how noisy a median is."""
    clean = [v for v in values if v == v]
    if not clean:
        return "-"
    return f"{fmt_num(min(clean))}-{fmt_num(max(clean))}"


def fmt_num(v: float | None, digits: int = 3) -> str:
    if v is None or v != v:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}" if v else "0"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt_num(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                    strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def base_args(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter windows (still 3 repetitions)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, interleaved (default 3; medians are reported)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to use under 0.3 cores")
    return p


def header(title: str, wait_quiet_s: float = 0.0) -> tuple[float, float, float]:
    if wait_quiet_s > 0:
        used = wait_for_quiet(wait_quiet_s)
        print(f"  other processes use {used:.2f} cores: starting", flush=True)
    load = load_average()
    print(f"{title}\nload average before: {fmt_load(load)}  ({os.cpu_count()} cores)", flush=True)
    return load


# ---- frames ------------------------------------------------------------------------------------


def request_template(mode: str, endpoint: str = "/index") -> tuple[bytes, bytes]:
    """A 1-doc request encoded with relay.wire, split around the id: frame = prefix + id + suffix."""
    from relay.wire import json_codec, proto_codec
    from relay.wire.documents import Document
    from relay.wire.messages import DataRequest

    placeholder = _PLACEHOLDER.decode()
    req = DataRequest(exec_endpoint=endpoint, docs=[Document(text=DOC_TEXT)])
    if mode == "bytes":
        req.request_id = placeholder
        frame = proto_codec.encode_request(req)
    else:
        req.parameters = {CORRELATION_KEY: placeholder}
        frame = json_codec.encode_request(req)
    at = frame.index(_PLACEHOLDER)
    return frame[:at], frame[at + len(_PLACEHOLDER) :]


# ---- the pipelined client ------------------------------------------------------------------------


def _id_reader(mode: str) -> Callable[[bytes], int]:
    if mode == "bytes":
        from relay.wire.proto import jina_pb2

        parse = jina_pb2.DataRequestProto.FromString

        def read_bytes(msg: bytes) -> int:
            return int(parse(msg).header.request_id)

        return read_bytes
    import orjson

    loads = orjson.loads

    def read_json(msg: bytes) -> int:
        return int(loads(msg)["parameters"][CORRELATION_KEY])

    return read_json


async def pipelined_client(url: str, mode: str, window: int, duration_s: float, warmup_s: float,
                           match: str = "id", server_pids: Sequence[int] = (),
                           endpoint: str = "/index") -> dict[str, Any]:
    from websockets.asyncio.client import connect

    prefix, suffix = request_template(mode, endpoint)
    text = mode == "json"
    read_id = _id_reader(mode) if match == "id" else None
    ws = await asyncio.wait_for(
        connect(url, subprotocols=[mode], compression=None, max_size=None, ping_interval=None,  # type: ignore[list-item]
                open_timeout=10),
        15,
    )
    perf = time.perf_counter
    sent_by_id: dict[int, float] = {}
    sent_fifo: collections.deque[float] = collections.deque()
    seq = 0
    latencies: list[float] = []
    answered = 0
    marks: dict[str, tuple[float, float, float]] = {}

    def mark(name: str) -> None:
        t = os.times()
        marks[name] = (perf(), t.user + t.system, proc_cpu_s(server_pids))

    async def send_next() -> None:
        nonlocal seq
        seq += 1
        frame = prefix + b"%0*d" % (ID_WIDTH, seq) + suffix
        if read_id is not None:
            sent_by_id[seq] = perf()
        else:
            sent_fifo.append(perf())
        await ws.send(frame, text=text)

    t0 = perf()
    start, end = t0 + warmup_s, t0 + warmup_s + duration_s
    in_window = False
    late = 0
    try:
        for _ in range(window):
            await send_next()
        while True:
            msg = await ws.recv(decode=False)
            now = perf()
            if read_id is not None:
                sent_at = sent_by_id.pop(read_id(msg), None)
                if sent_at is None:
                    late += 1
                    continue
            else:
                sent_at = sent_fifo.popleft()
            if start <= now < end:
                if not in_window:
                    in_window = True
                    mark("start")
                latencies.append(now - sent_at)
                answered += 1
            elif now >= end and in_window and "end" not in marks:
                mark("end")
            if now < end:
                await send_next()
            elif not (sent_by_id or sent_fifo):
                break
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2.0)
    if "end" not in marks:
        mark("end")
    marks.setdefault("start", marks["end"])
    (t_a, c_a, s_a), (t_b, c_b, s_b) = marks["start"], marks["end"]
    window_s = t_b - t_a
    latencies.sort()
    return {
        "url": url,
        "mode": mode,
        "window": window,
        "match": match,
        "answered": answered,
        "window_s": window_s,
        "rps": answered / window_s if window_s > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu_s": c_b - c_a,
        "server_cpu_s": s_b - s_a if server_pids else None,
        "unknown_answers": late,
    }


# ---- the bare echo server ------------------------------------------------------------------------


async def echo_main(port: int, max_lifetime_s: float) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: ServerConnection) -> None:
        text = ws.subprotocol != "bytes"
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await ws.recv(decode=False), text=text)

    def pick(_conn: ServerConnection, offered: Sequence[str]) -> str | None:
        return offered[0] if offered else None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(echo, LOOPBACK, port, compression=None, max_size=None, ping_interval=None,
                     select_subprotocol=pick) as server:  # type: ignore[arg-type]
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY ws://{LOOPBACK}:{bound}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_lifetime_s)


# ---- the bare forwarder ---------------------------------------------------------------------------


class _Forward(asyncio.Protocol):
    """One side of a forwarded TCP connection: what it reads goes to the other side as it is."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Forward | None = None
        self.held: list[bytes] = []  # read before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's subclasses

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.held.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()


async def forward_main(port: int, upstream: str, max_lifetime_s: float) -> None:
    """Accept on `port`; forward each connection's bytes both ways to `upstream` (host:port), nothing else."""
    host, _, up_port = upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references

    def accepted() -> _Forward:
        front = _Forward()

        async def connect() -> None:
            try:
                _, back = await loop.create_connection(_Forward, host, int(up_port))
            except OSError:
                if front.transport is not None:
                    front.transport.close()
                return
            if front.transport is None or front.transport.is_closing():  # the client left meanwhile
                if back.transport is not None:
                    back.transport.close()
                return
            front.peer, back.peer = back, front
            for side in (front, back):  # what either side sent before both were connected
                other = side.peer
                assert other is not None and other.transport is not None
                for data in side.held:
                    other.transport.write(data)
                side.held.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return front

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(accepted, LOOPBACK, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY ws://{LOOPBACK}:{bound}", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_lifetime_s)
    server.close()


def bare_forwarder(upstream_url: str, max_lifetime_s: float = 900.0) -> contextlib.AbstractContextManager[Server]:
    """A process that forwards TCP bytes to `upstream_url`'s host and port and does nothing else (this file's
    `forward` command): what one more process on the path costs, whatever it does."""
    hostport = upstream_url.split("://", 1)[-1].split("/", 1)[0]
    cmd = [PYTHON, str(Path(__file__).resolve()), "forward", hostport, "--port", "0",
           "--max-lifetime", str(max_lifetime_s)]
    return _spawn("bare forwarder", cmd, "READY ws://", lambda line: line.split()[1])


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="bench helpers: the bare echo server, the bare forwarder and the "
                                "pipelined client")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, default=0)
    e.add_argument("--max-lifetime", type=float, default=900.0)
    f = sub.add_parser("forward")
    f.add_argument("upstream", help="host:port")
    f.add_argument("--port", type=int, default=0)
    f.add_argument("--max-lifetime", type=float, default=900.0)
    c = sub.add_parser("client")
    c.add_argument("url")
    c.add_argument("--mode", choices=["json", "bytes"], default="json")
    c.add_argument("--window", type=int, default=32)
    c.add_argument("--duration", type=float, default=3.0)
    c.add_argument("--warmup", type=float, default=0.5)
    c.add_argument("--match", choices=["id", "fifo"], default="id")
    c.add_argument("--endpoint", default="/index")
    c.add_argument("--server-pids", default="")
    args = p.parse_args(argv)

    import uvloop

    if args.cmd == "echo":
        uvloop.run(echo_main(args.port, args.max_lifetime))
        return 0
    if args.cmd == "forward":
        uvloop.run(forward_main(args.port, args.upstream, args.max_lifetime))
        return 0
    pids = [int(x) for x in args.server_pids.split(",") if x]
    result = uvloop.run(
        asyncio.wait_for(
            pipelined_client(args.url, args.mode, args.window, args.duration, args.warmup, args.match, pids,
                             args.endpoint),
            args.duration + args.warmup + 45.0,
        )
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
