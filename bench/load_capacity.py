"""Capacity of one `flowrelay load` process, as a ratio to a bare pipelined websockets client.

What it measures, against a fast target (by default the bare websockets+uvloop echo server, which parses
nothing, so the load generator is what runs out of CPU first; `--target relay` uses `flowrelay serve -e
echo` instead), in the `bytes` subprotocol (the load engine's default; `--mode json` for the other):

  baseline  the bare pipelined client (bench/common.py): one connection, 64 requests in flight, it does
            nothing but send pre-encoded frames and count answers (the k-th answer is the k-th request's);
  closed    `flowrelay load --concurrency 64` on one connection: its ok answers/s;
  open      `flowrelay load --rate R`, R stepped up from 40 % of that repetition's baseline by 10 % of
            it at a time, until a step fails twice in a row (one retry absorbs a stall of the machine);
            the open capacity is the last rate that held. A step holds when it sent >= 99.5 % of its
            target rate, dropped <= 0.1 % of it, left nothing unanswered or timed out, and kept scheduler
            lag p99 < 5 ms and latency p99 < 50 ms (past capacity both grow without bound).

How to read it: medians over the repetitions (min-max beside them). `gen CPU %` is the load
generator's CPU (for flowrelay load: the whole process, start-up included, over its wall time; 100 % =
one core busy: it is the bottleneck); `target CPU %` is the
server's over the same time (near 100 % means the target, not the generator, limits the figure and the
ratio flatters the generator). Ratios: closed/baseline and open/baseline, goal >= 0.7.
Repetitions interleave baseline, closed and open runs.

    python bench/load_capacity.py [--quick] [--target echo|relay] [--mode bytes|json]
    # ~3 min full, ~1.5 min quick; writes bench/results/load_capacity.json (rate_accuracy.py reads it)
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import common as c

GOAL = 0.7
# Against the relay (json or bytes) the engine must come within a tenth of the bare client.
GOAL_RELAY = 0.9
CONCURRENCY = 64
STEP_START = 0.4
STEP = 0.1
MAX_STEPS = 12
LAG_P99_LIMIT_MS = 5.0
LATENCY_P99_LIMIT_MS = 50.0


def holds(summary: dict[str, Any], rate: float) -> tuple[bool, str]:
    """Did an open-model step sustain `rate`? And if not, why."""
    req = summary["requests"]
    sent_ratio = summary["rate"]["achieved_rps"] / rate
    why = []
    if sent_ratio < 0.995:
        why.append(f"sent {sent_ratio:.3f} of target")
    if req["dropped"] > 0.001 * max(req["sent"] + req["dropped"], 1):
        why.append(f"dropped {req['dropped']}")
    if req["unanswered"] or req["timeout"] or req["transport_failed"]:
        why.append("unanswered/timeout")
    lag = summary["scheduler_lag_ms"]["p99"]
    if lag is None or lag >= LAG_P99_LIMIT_MS:
        why.append(f"lag p99 {lag} ms")
    lat = summary["latency_ms"]["p99"]
    if lat is None or lat >= LATENCY_P99_LIMIT_MS:
        why.append(f"latency p99 {lat} ms")
    return not why, ", ".join(why)


def run_load(srv: c.Server, args: list[str], duration_s: float) -> dict[str, Any]:
    cpu0 = c.proc_cpu_s(srv.pids())
    summary, run = c.flowrelay_load([srv.url, *args, "--duration", f"{duration_s}s"], timeout_s=duration_s + 60)
    target_cpu = c.proc_cpu_s(srv.pids()) - cpu0
    return {"summary": summary, "gen_cpu_s": run.cpu_s, "wall_s": run.wall_s, "target_cpu_s": target_cpu}


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--target", choices=["echo", "relay"], default="echo")
    p.add_argument("--mode", choices=["bytes", "json"], default="bytes")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    dur = 3.0 if args.quick else 5.0
    step_dur = 2.0 if args.quick else 4.0
    load_before = c.header(f"load_capacity: flowrelay load vs a bare pipelined client, target {args.target}, "
                           f"{args.mode}, {args.reps} reps{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    reps: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(c.echo_server() if args.target == "echo" else c.relay_server("echo"))
        print(f"target: {srv.name} {srv.url}", flush=True)
        for rep in range(args.reps):
            out: dict[str, Any] = {"rep": rep}
            order = ("baseline", "closed") if rep % 2 == 0 else ("closed", "baseline")
            for kind in order:
                if kind == "baseline":
                    b = c.run_pipelined(srv.url, args.mode, CONCURRENCY, dur, 0.5, match="fifo",
                                        server_pids=srv.pids())
                    b["gen_cpu_pct"] = 100 * b["client_cpu_s"] / b["window_s"]
                    b["target_cpu_pct"] = 100 * b["server_cpu_s"] / b["window_s"]
                    out["baseline"] = b
                    print(f"  rep {rep + 1} baseline  {b['rps']:9,.0f} answers/s  (client CPU {b['gen_cpu_pct']:.0f} %,"
                          f" target CPU {b['target_cpu_pct']:.0f} %)", flush=True)
                else:
                    r = run_load(srv, ["--subprotocol", args.mode, "--concurrency", str(CONCURRENCY)], dur)
                    s = r["summary"]
                    r["rps"] = s["rate"]["ok_rps"]
                    r["gen_cpu_pct"] = 100 * r["gen_cpu_s"] / r["wall_s"]
                    r["target_cpu_pct"] = 100 * r["target_cpu_s"] / r["wall_s"]
                    out["closed"] = {k: v for k, v in r.items() if k != "summary"} | {
                        "latency_ms": s["latency_ms"], "requests": s["requests"]}
                    print(f"  rep {rep + 1} closed    {r['rps']:9,.0f} answers/s  (gen CPU {r['gen_cpu_pct']:.0f} %,"
                          f" target CPU {r['target_cpu_pct']:.0f} %)", flush=True)
            base = out["baseline"]["rps"]
            steps = []
            last_ok = None
            for k in range(MAX_STEPS):
                rate = round(base * (STEP_START + STEP * k), -2)
                for attempt in (1, 2):
                    r = run_load(srv, ["--subprotocol", args.mode, "--rate", str(rate)], step_dur)
                    s = r["summary"]
                    ok, why = holds(s, rate)
                    steps.append({"rate": rate, "attempt": attempt, "ok": ok, "why": why,
                                  "achieved_rps": s["rate"]["achieved_rps"], "ok_rps": s["rate"]["ok_rps"],
                                  "dropped": s["requests"]["dropped"], "lag_p99_ms": s["scheduler_lag_ms"]["p99"],
                                  "latency_p99_ms": s["latency_ms"]["p99"],
                                  "gen_cpu_pct": 100 * r["gen_cpu_s"] / r["wall_s"],
                                  "target_cpu_pct": 100 * r["target_cpu_s"] / r["wall_s"]})
                    print(f"  rep {rep + 1} open {rate:9,.0f}/s  {'holds' if ok else 'fails: ' + why}"
                          f"  (lag p99 {s['scheduler_lag_ms']['p99']} ms, latency p99 {s['latency_ms']['p99']} ms,"
                          f" gen CPU {steps[-1]['gen_cpu_pct']:.0f} %)", flush=True)
                    if ok:
                        break
                if not ok:
                    break
                last_ok = rate
            out["open_steps"] = steps
            out["open_capacity"] = last_ok
            reps.append(out)
    load_after = c.load_average()
    noise_r = noise.report()

    base = [r["baseline"]["rps"] for r in reps]
    closed = [r["closed"]["rps"] for r in reps]
    opened = [float(r["open_capacity"]) if r["open_capacity"] else float("nan") for r in reps]
    m_base, m_closed, m_open = c.median(base), c.median(closed), c.median(opened)
    rows = [
        ["bare pipelined client (64 in flight)", m_base, c.spread(base),
         c.median([r["baseline"]["gen_cpu_pct"] for r in reps]),
         c.median([r["baseline"]["target_cpu_pct"] for r in reps]), 1.0],
        ["flowrelay load --concurrency 64", m_closed, c.spread(closed),
         c.median([r["closed"]["gen_cpu_pct"] for r in reps]),
         c.median([r["closed"]["target_cpu_pct"] for r in reps]), m_closed / m_base],
        ["flowrelay load --rate (highest that held)", m_open, c.spread(opened),
         c.median([next(s["gen_cpu_pct"] for s in r["open_steps"] if s["rate"] == r["open_capacity"] and s["ok"])
                   for r in reps if r["open_capacity"]]),
         c.median([next(s["target_cpu_pct"] for s in r["open_steps"] if s["rate"] == r["open_capacity"] and s["ok"])
                   for r in reps if r["open_capacity"]]), m_open / m_base],
    ]
    print()
    print(c.table(["client", "answers/s", "(min-max)", "gen CPU %", "target CPU %", "vs bare"], rows))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    r_closed, r_open = m_closed / m_base, m_open / m_base
    per_rep = [{"closed": r["closed"]["rps"] / r["baseline"]["rps"],
                "open": (r["open_capacity"] or float("nan")) / r["baseline"]["rps"]} for r in reps]
    print("per repetition (closed, open)/bare: " + ", ".join(f"{x['closed']:.2f} {x['open']:.2f}" for x in per_rep)
          + "  (a repetition whose baseline had both cores to itself is the fairest)")
    goal = GOAL_RELAY if args.target == "relay" else GOAL
    print(f"ratios: closed/bare {r_closed:.2f} (goal >= {goal:g} {'ok' if r_closed >= goal else 'MISSED'}); "
          f"open/bare {r_open:.2f} (goal >= {goal:g} {'ok' if r_open >= goal else 'MISSED'})")
    # The echo target in bytes is the figure rate_accuracy.py reads; the others are kept beside it.
    default = (args.target, args.mode) == ("echo", "bytes")
    name = "load_capacity" if default else f"load_capacity_{args.target}_{args.mode}"
    path = c.write_results(name, {
        "benchmark": "load_capacity",
        "command": "python bench/load_capacity.py" + (" --quick" if args.quick else "")
        + (f" --target {args.target}" if args.target != "echo" else "")
        + (f" --mode {args.mode}" if args.mode != "bytes" else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "target": args.target,
        "mode": args.mode,
        "concurrency": CONCURRENCY,
        "durations_s": {"closed_and_baseline": dur, "open_step": step_dur},
        "open_step_rule": {"start": STEP_START, "step": STEP, "lag_p99_limit_ms": LAG_P99_LIMIT_MS,
                           "latency_p99_limit_ms": LATENCY_P99_LIMIT_MS, "sent_ratio_min": 0.995,
                           "dropped_max_fraction": 0.001},
        "medians": {"baseline_rps": m_base, "closed_rps": m_closed, "open_capacity_rps": m_open},
        "ratios": {"closed_over_baseline": r_closed, "open_over_baseline": r_open, "per_rep": per_rep},
        "goal": goal,
        "met": {"closed": r_closed >= goal, "open": r_open >= goal},
        "reps": reps,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
