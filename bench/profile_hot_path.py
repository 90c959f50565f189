"""Where the time goes per message: a py-spy profile of the relay or of `flowrelay load` under steady load.

What it does: starts the process to profile on 127.0.0.1 with a steady load on it, samples it with
py-spy for a few seconds (`pip install py-spy`; it needs ptrace, so root or CAP_SYS_PTRACE), measures
that process's CPU over the same seconds, and prints the functions with the most samples, self and
inclusive, each as a share of the samples and as microseconds of CPU per message (share x CPU seconds /
messages). Subjects:

  relay-json, relay-bytes   `flowrelay serve -e upper` under the pipelined client (32 in flight);
  echo-json, echo-bytes     the bare echo server under the same client (the floor of the stack);
  load-closed               `flowrelay load --concurrency 64` (bytes) against the bare echo server;
  load-open                 `flowrelay load --rate R` (bytes, default 20000/s) against the bare echo server.

How to read it: py-spy samples the Python stacks; time spent in C under a Python function (a socket
write inside `transport.write`, protobuf's upb parser) counts to that function. `--native` adds the C
frames but stops the process at every sample (slower, distorts timing: use it for shares, not
rates). Writes the raw collapsed stacks to bench/results/profile-SUBJECT.txt (flamegraph.pl reads them;
kept out of git by bench/.gitignore).

    python bench/profile_hot_path.py relay-bytes [--seconds 4] [--native] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common as c

SUBJECTS = ("relay-json", "relay-bytes", "echo-json", "echo-bytes", "load-closed", "load-open")


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    name, path = m.group(1), m.group(2)
    for cut in ("site-packages/", str(c.REPO) + "/", "lib/python3.11/"):
        if cut in path:
            path = path.split(cut, 1)[1]
    return f"{name} ({path})"


def aggregate(raw: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return total, own, incl


def py_spy() -> str:
    found = Path(c.PYTHON).parent / "py-spy"
    if found.exists():
        return str(found)
    which = shutil.which("py-spy")
    if which is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    return which


def record(pid: int, out: Path, seconds: float, native: bool) -> subprocess.Popen[bytes]:
    cmd = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", "250",
           "--duration", str(int(seconds))]
    cmd += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("subject", choices=SUBJECTS)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--native", action="store_true", help="include C frames (stops the process at each sample)")
    p.add_argument("--rate", type=int, default=20000, help="for load-open")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    c.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = c.RESULTS_DIR / f"profile-{args.subject}.txt"
    out.unlink(missing_ok=True)
    secs = int(max(1, args.seconds))
    print(f"profile {args.subject}: load average {c.fmt_load(c.load_average())}", flush=True)
    info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        kind, _, mode = args.subject.partition("-")
        if kind in ("relay", "echo"):
            srv = stack.enter_context(c.relay_server("upper") if kind == "relay" else c.echo_server())
            pid = srv.pids()[0]
            spy = record(pid, out, secs, args.native)
            time.sleep(0.3)
            res = c.run_pipelined(srv.url, mode, 32, secs - 0.6, 0.2, server_pids=[pid])
            spy.wait(timeout=secs + 30)
            messages, cpu_s = res["answered"], res["server_cpu_s"]
            info = {"rps": res["rps"], "cpu_pct": 100 * cpu_s / res["window_s"]}
        else:
            srv = stack.enter_context(c.echo_server())
            model = ["--concurrency", "64"] if mode == "closed" else ["--rate", str(args.rate)]
            cmd = [c.PYTHON, "-m", "flowrelay", "load", srv.url, *model, "--duration", f"{secs + 2}s", "--json",
                   "--quiet"]
            proc = subprocess.Popen(cmd, cwd=c.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)  # past start-up and connecting
                spy = record(proc.pid, out, secs, args.native)
                cpu0, t0 = c.proc_cpu_s([proc.pid]), time.monotonic()
                time.sleep(secs)
                cpu_s, wall = c.proc_cpu_s([proc.pid]) - cpu0, time.monotonic() - t0
                stdout, _ = proc.communicate(timeout=secs + 60)
            finally:
                if proc.poll() is None:
                    c.stop_process(proc)  # type: ignore[arg-type]
            spy.wait(timeout=secs + 30)
            summary = json.loads(stdout)
            rate = summary["rate"]["ok_rps"]
            messages = int(rate * wall)
            info = {"rps": rate, "cpu_pct": 100 * cpu_s / wall, "scheduler_lag_p99_ms":
                    summary["scheduler_lag_ms"]["p99"]}
    if not out.exists():
        err = spy.stderr.read().decode() if spy.stderr else ""
        print(f"py-spy wrote no profile: {err.strip()}", file=sys.stderr)
        return 1
    total, own, incl = aggregate(out)
    us_per_msg = cpu_s / messages * 1e6 if messages else float("nan")
    print(f"{messages:,} messages at {info['rps']:,.0f}/s, process CPU {info['cpu_pct']:.0f} % = "
          f"{us_per_msg:.1f} us per message; {total} samples{' (native)' if args.native else ''}")

    def rows(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[name, f"{100 * n / total:.1f} %", f"{us_per_msg * n / total:.2f}"]
                for name, n in counter.most_common(args.top)]

    print("\nself (time in the function itself, C calls it makes included)")
    print(c.table(["function", "samples", "us/msg"], rows(own)))
    print("\ninclusive (the function and everything it calls)")
    print(c.table(["function", "samples", "us/msg"], rows(incl)))
    print(f"\nraw stacks: {out.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
