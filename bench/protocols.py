"""One real Jina Flow measured over WebSocket, HTTP, gRPC and GraphQL by the load engine, side by side.

What it measures: three real Jina 3.34 Flows with the same Executors (gateway -> `upper`, a trivial
Executor; tests/jina_peer.py), one per gateway protocol (`--protocol websocket`, `http`, `grpc`; the HTTP
Flow also serves Jina's `/graphql`, `--graphql`, which is the fourth column: `flowrelay load
http://.../graphql --graphql 'mutation { docs(data: $docs) { id } }'`), each driven by `flowrelay load` in a
process of its own, 1 doc per request, first second left out as warm-up:

  open    `--rate R` (default 200/s): the latency a steady load sees (p50/p99 from the due time) and the
          rate achieved;
  closed  `--concurrency 32`: the most the Flow answers (requests/s) with 32 requests in flight.

Connections: WebSocket and gRPC use one (a WebSocket session / one channel with one `JinaRPC/Call`
stream, many requests in flight); HTTP/1.1 carries one request at a time per connection, so HTTP and
GraphQL get 32 keep-alive connections (`--connections 32`), enough for both models.

How to read it: one row per (model, protocol) with the medians of the repetitions (min-max of req/s
beside them). `gen req/s per core` is the load generator's efficiency: requests it completed (warm-up
included) per CPU second of the `flowrelay load` process (user + system from wait4), less its start-up
(the CPU of a one-request run against the same Flow, measured in each repetition: imports, connecting,
exiting), i.e. how many requests per second one core of generator would drive at this cost; the figure
with start-up included is in the JSON (`gen_rps_per_core_raw`).
`Flow CPU us/req` is the Flow's processes' CPU (gateway and Executor, from /proc) per request: where the
time goes (a gateway near one core is the limit of the closed model). Repetitions are interleaved
(rep -> model -> protocol, order rotated per rep).

    python bench/protocols.py [--quick] [--rate 200] [--concurrency 32]
    # ~2 min full, ~1 min quick (plus the Flows' start); writes bench/results/protocols.json
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import common as c

PROTOCOLS = ("websocket", "http", "grpc", "graphql")
FLOW_PROTOCOLS = ("websocket", "http", "grpc")  # graphql is the HTTP Flow's /graphql
SCHEMES = {"websocket": "ws", "http": "http", "grpc": "grpc"}
MODELS = ("open", "closed")
HTTP_CONNECTIONS = 32
ONE_REQUEST_AT_A_TIME = ("http", "graphql")
GRAPHQL_QUERY = "mutation { docs(data: $docs) { id } }"


@contextlib.contextmanager
def jina_flow(protocol: str, timeout_s: float = 120.0) -> Iterator[c.Server]:
    """A real Jina 3.34 Flow (gateway -> `upper`) with a `protocol` gateway, via tests/jina_peer.py; an HTTP
    Flow also serves `/graphql`."""
    sys.path.insert(0, str(c.REPO / "tests"))
    try:
        import jina_peer  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with jina_peer.run_flow(protocol=protocol, sleep_ms=0, no_sleeper=True, timeout_s=timeout_s,
                            graphql=protocol == "http") as flow:
        yield c.Server(name=protocol, url=f"{SCHEMES[protocol]}://{c.LOOPBACK}:{flow.port}", pid_source=flow.pids)


def connection_args(protocol: str) -> list[str]:
    args = ["--connections", str(HTTP_CONNECTIONS if protocol in ONE_REQUEST_AT_A_TIME else 1)]
    return [*args, "--graphql", GRAPHQL_QUERY] if protocol == "graphql" else args


def load_args(protocol: str, model: str, rate: float, concurrency: int, duration_s: float, warmup_s: float
              ) -> list[str]:
    args = [*connection_args(protocol),
            "--duration", f"{duration_s}s", "--warmup", f"{warmup_s}s", "--timeout", "10s"]
    if model == "open":
        return [*args, "--rate", str(rate)]
    return [*args, "--concurrency", str(concurrency)]


def startup_cpu_s(srv: c.Server, protocol: str) -> float:
    """CPU seconds of a `flowrelay load` run that sends one request: the fixed cost of a run."""
    args = [*connection_args(protocol), "--rate", "1", "--requests", "1"]
    _, run = c.flowrelay_load([srv.url, *args], timeout_s=60)
    return run.cpu_s


def one_run(srv: c.Server, protocol: str, model: str, args: list[str], duration_s: float,
            startup_s: float) -> dict[str, Any]:
    flow_cpu0 = c.proc_cpu_s(srv.pids())
    summary, run = c.flowrelay_load([srv.url, *args], timeout_s=duration_s + 90)
    flow_cpu = c.proc_cpu_s(srv.pids()) - flow_cpu0
    req, warm = summary["requests"], summary["warmup"]
    completed = req["ok"] + req["failed"] + warm.get("ok", 0) + warm.get("failed", 0)
    return {
        "protocol": protocol,
        "model": model,
        "rps": summary["rate"]["ok_rps"],
        "sent_rps": summary["rate"]["achieved_rps"],
        "p50_ms": summary["latency_ms"]["p50"],
        "p99_ms": summary["latency_ms"]["p99"],
        "sent": req["sent"],
        "ok": req["ok"],
        "not_ok": req["sent"] - req["ok"],
        "dropped": req["dropped"],
        "errors": summary["errors"],
        "completed_incl_warmup": completed,
        "gen_cpu_s": run.cpu_s,
        "gen_wall_s": run.wall_s,
        "gen_startup_cpu_s": startup_s,
        "gen_rps_per_core": completed / (run.cpu_s - startup_s) if run.cpu_s > startup_s else float("nan"),
        "gen_rps_per_core_raw": completed / run.cpu_s if run.cpu_s > 0 else float("nan"),
        "flow_cpu_us_per_req": flow_cpu / completed * 1e6 if completed else float("nan"),
        "hops": list(summary["hops"]),
    }


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--rate", type=float, default=200.0, help="open model: requests per second (default 200)")
    p.add_argument("--concurrency", type=int, default=32, help="closed model: requests in flight (default 32)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    duration_s, warmup_s = (3.0, 1.0) if args.quick else (5.0, 1.0)
    load_before = c.header(f"protocols: one Jina Flow (gateway -> upper) over WebSocket, HTTP, gRPC and GraphQL, "
                           f"open {args.rate:g}/s and closed {args.concurrency} in flight, {args.reps} reps"
                           f"{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        flows = {proto: stack.enter_context(jina_flow(proto)) for proto in FLOW_PROTOCOLS}
        flows["graphql"] = c.Server(name="graphql", url=flows["http"].url + "/graphql",
                                    pid_source=flows["http"].pid_source)
        print("flows: " + ", ".join(f"{k} {s.url}" for k, s in flows.items()), flush=True)
        for rep in range(args.reps):
            shift = rep % len(PROTOCOLS)
            order = PROTOCOLS[shift:] + PROTOCOLS[:shift]
            startup = {proto: startup_cpu_s(flows[proto], proto) for proto in order}
            print("  rep {} start-up CPU: {}".format(
                rep + 1, ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())), flush=True)
            for model in MODELS:
                for proto in order:
                    la = load_args(proto, model, args.rate, args.concurrency, duration_s, warmup_s)
                    r = one_run(flows[proto], proto, model, la, duration_s + warmup_s, startup[proto])
                    r["rep"] = rep
                    runs.append(r)
                    print(f"  rep {rep + 1} {model:6} {proto:9} {r['rps']:8,.0f} req/s  p50 {r['p50_ms']:8.3f} ms"
                          f"  p99 {r['p99_ms']:8.3f} ms  gen {r['gen_rps_per_core']:8,.0f} req/s/core"
                          f"  not ok {r['not_ok']}  dropped {r['dropped']}", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    medians: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    for model in MODELS:
        medians[model] = {}
        for proto in PROTOCOLS:
            rs = [r for r in runs if r["model"] == model and r["protocol"] == proto]
            rps = [r["rps"] for r in rs]
            m = {key: c.median([r[key] for r in rs])
                 for key in ("rps", "p50_ms", "p99_ms", "gen_rps_per_core", "gen_rps_per_core_raw",
                             "flow_cpu_us_per_req", "gen_cpu_s", "gen_startup_cpu_s")}
            m["not_ok"] = sum(r["not_ok"] for r in rs)
            m["dropped"] = sum(r["dropped"] for r in rs)
            medians[model][proto] = m
            label = f"open {args.rate:g}/s" if model == "open" else f"closed {args.concurrency}"
            rows.append([label, proto, m["rps"], c.spread(rps), m["p50_ms"], m["p99_ms"], m["gen_rps_per_core"],
                         m["flow_cpu_us_per_req"], f"{m['not_ok']}/{m['dropped']}"])

    print()
    print(c.table(["model", "protocol", "req/s", "(min-max)", "p50 ms", "p99 ms", "gen req/s per core",
                   "Flow CPU us/req", "not ok/dropped"], rows))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    command = "python bench/protocols.py" + (" --quick" if args.quick else "")
    if args.rate != 200.0:
        command += f" --rate {args.rate:g}"
    if args.concurrency != 32:
        command += f" --concurrency {args.concurrency}"
    path = c.write_results("protocols", {
        "benchmark": "protocols",
        "command": command,
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "http_connections": HTTP_CONNECTIONS,
        "durations_s": {"measured": duration_s, "warmup": warmup_s},
        "reps": args.reps,
        "medians": medians,
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
