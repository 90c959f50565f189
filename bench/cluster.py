"""One load run over several workers: what the coordinator costs, 2 workers against 1, and an exact merge.

Against a relay (`flowrelay serve -e echo`) on this machine, interleaved, per repetition:

  single     `flowrelay load --concurrency 64 --connections 2` (closed model: as fast as the target answers);
  cluster-1  the same with `--workers 1 --coordinator 127.0.0.1:P`: one worker, plus the coordinator's
             process (barrier, heartbeats, a row per second merged, the final merge and summary);
  cluster-2  `--workers 2`, two worker processes of the same command (JOB_COMPLETION_INDEX 0 and 1).

Figures: ok answers/s (medians, min-max beside them); the coordinator's CPU per request (its process's CPU
time, from the merged summary, over the requests of the run) and as a share of the worker's CPU: on a
machine whose cores are busy, that share is the capacity the coordinator takes from the workers (goal
< 2 %); 1 - cluster-1 / single says the same from throughput, where the machine is quiet enough for it
(the min-max spread says whether it was). On a 2-core machine the relay, the worker(s) and the
coordinator share the cores, so cluster-2 against single says how the merge and the extra process cost
there, not how a cluster of machines scales.

Then one open-model run at 2,000/s for 5 s on 2 workers with --out: merged `sent` against the one-machine
schedule (10,000), and `flowrelay report --merge` of the two workers' folders against the merged result,
key by key, to the last count.

    python bench/cluster.py [--quick] [--reps N]   # ~5 min (20 s windows; --quick: 8 s); bench/results/cluster.json
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    REPO,
    base_args,
    flowrelay_load,
    fmt_load,
    header,
    load_average,
    median,
    relay_server,
    run_child,
    spread,
    table,
    write_results,
)

CONCURRENCY = 64
CONNECTIONS = 2
MERGE_KEYS = ("requests", "accounting", "latency_ms", "service_time_ms", "scheduler_lag_ms", "hops", "errors",
              "docs", "rate", "latency_distribution", "connections")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_args(url: str, workers: int, port: int, duration_s: float, extra: list[str]) -> list[str]:
    return [url, "--concurrency", str(CONCURRENCY), "--connections", str(CONNECTIONS), "--duration",
            f"{duration_s}s", "--workers", str(workers), "--coordinator", f"127.0.0.1:{port}", *extra]


def run_cluster(args: list[str], workers: int, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Worker 0 in this thread (its summary is the run's), the others as background processes; returns
    the merged summary and worker 0's CPU seconds (its coordinator's process included)."""
    others = []
    for index in range(1, workers):
        env = dict(os.environ, JOB_COMPLETION_INDEX=str(index))
        others.append(subprocess.Popen([PYTHON, "-m", "flowrelay", "load", *args, "--json", "--quiet"], cwd=REPO,
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    env = dict(os.environ, JOB_COMPLETION_INDEX="0")
    try:
        run = run_child([PYTHON, "-m", "flowrelay", "load", *args, "--json", "--quiet"], timeout_s, env=env)
    finally:
        for proc in others:
            _, err = proc.communicate(timeout=timeout_s)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed (exit {proc.returncode}): {err[-2000:]}")
    if run.returncode != 0 or not run.stdout.strip():
        raise RuntimeError(f"worker 0 failed (exit {run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout), run.cpu_s


def main() -> int:
    parser = base_args(__doc__ or "")
    opts = parser.parse_args()
    duration_s = 8.0 if opts.quick else 20.0
    load = header("flowrelay load on 1 worker, on 1 worker + coordinator, on 2 workers (closed model, 64 in flight)",
                  opts.wait_quiet)
    rows: dict[str, list[float]] = {"single": [], "cluster-1": [], "cluster-2": []}
    coordinator_us: list[float] = []
    coordinator_share: list[float] = []
    timeout = duration_s + 120
    with relay_server("echo") as relay:
        for rep in range(opts.reps):
            single, _ = flowrelay_load([relay.url, "--concurrency", str(CONCURRENCY), "--connections",
                                                 str(CONNECTIONS), "--duration", f"{duration_s}s"], timeout)
            rows["single"].append(single["rate"]["ok_rps"])
            one, one_cpu = run_cluster(cluster_args(relay.url, 1, free_port(), duration_s, []), 1, timeout)
            rows["cluster-1"].append(one["rate"]["ok_rps"])
            coordinator_cpu = one["workers"]["coordinator_cpu_s"]
            coordinator_us.append(coordinator_cpu / one["requests"]["sent"] * 1e6)
            coordinator_share.append(coordinator_cpu / max(one_cpu - coordinator_cpu, 1e-9))
            two, _ = run_cluster(cluster_args(relay.url, 2, free_port(), duration_s, []), 2, timeout)
            rows["cluster-2"].append(two["rate"]["ok_rps"])
            print(f"  rep {rep + 1}: single {rows['single'][-1]:,.0f}/s  cluster-1 {rows['cluster-1'][-1]:,.0f}/s "
                  f"(coordinator {coordinator_us[-1]:.2f} us/request)  cluster-2 {rows['cluster-2'][-1]:,.0f}/s",
                  flush=True)

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            args = [relay.url, "--rate", "2000", "--duration", "5s", "--connections", "2", "--workers", "2",
                    "--coordinator", f"127.0.0.1:{free_port()}", "--out", str(out)]
            merged, _ = run_cluster(args, 2, timeout)
            again = Path(tmp) / "again"
            by_hand = subprocess.run([PYTHON, "-m", "flowrelay", "report", "--merge", str(out / "worker-0"),
                                      str(out / "worker-1"), "--out", str(again)], cwd=REPO, capture_output=True,
                                     text=True, timeout=120, check=False)
            if by_hand.returncode != 0:
                raise RuntimeError(f"report --merge failed: {by_hand.stderr[-2000:]}")
            halves = json.loads((again / "summary.json").read_text())
            differing = [k for k in MERGE_KEYS if halves[k] != merged[k]]

    capacity_cost = 1 - median(rows["cluster-1"]) / median(rows["single"])
    cpu_share = median(coordinator_share)
    print()
    print(table(["run", "ok answers/s (median)", "min-max"],
                [[name, median(v), spread(v)] for name, v in rows.items()]))
    print(f"\ncoordinator: {median(coordinator_us):.2f} us CPU per request ({spread(coordinator_us)}), "
          f"{cpu_share * 100:.2f} % of the worker's CPU (goal < 2 %: {'met' if cpu_share < 0.02 else 'NOT met'}); "
          f"from throughput 1 - cluster-1/single = {capacity_cost * 100:+.2f} %")
    print(f"2 workers / 1: {median(rows['cluster-2']) / median(rows['single']):.2f}")
    print(f"open model 2,000/s for 5 s on 2 workers: sent {merged['requests']['sent']:,} (schedule 10,000); "
          f"report --merge of the two workers' folders equals the merged result: "
          f"{'yes, every key' if not differing else 'NO: ' + ', '.join(differing)}")
    after = load_average()
    print(f"load average after: {fmt_load(after)}")
    write_results("cluster", {
        "load_average_before": load, "load_average_after": after, "duration_s": duration_s, "reps": opts.reps,
        "ok_rps": rows, "coordinator_us_per_request": coordinator_us, "coordinator_cpu_share": coordinator_share,
        "capacity_cost": capacity_cost, "open_sent": merged["requests"]["sent"], "merge_differs": differing,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return 0 if cpu_share < 0.02 and not differing and merged["requests"]["sent"] == 10_000 else 1


if __name__ == "__main__":
    sys.exit(main())
