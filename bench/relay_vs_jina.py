"""Relay vs a real Jina Flow vs a bare echo server: the same pipelined client against all three.

What it measures: requests/s and latency p50/p99 of one client connection keeping a window of 32
requests in flight (each answer sends the next request), 1 doc per request, permessage-deflate off,
first in the `json` subprotocol, then in `bytes`, against:

  (a) jina   a real Jina 3.34 Flow, gateway -> one trivial Executor `upper` (tests/jina_peer.py);
  (b) relay  `flowrelay serve -e upper`;
  (c) echo   a bare websockets+uvloop echo server: the ceiling of the stack (it parses nothing).

Every target gets exactly the same client work: frames are pre-encoded with relay.wire and stamped with
a counter; each answer is parsed to read the counter back (json: `parameters.rid`, bytes:
`header.request_id`), which an echoed request carries in the same place. The client runs in a process
of its own; the server's CPU over the measured window is read from /proc (Jina: all its processes).

How to read it: one row per (subprotocol, target) with the median of the repetitions (min-max of the
repetitions beside it); `server CPU us/req` says where the time goes (a server near 1e6 / req/s is
saturated). Ratios are ratios of medians: relay/jina (goal >= 20) and relay/echo (goal >= 0.6), per
subprotocol. Repetitions are interleaved (rep -> subprotocol -> target, target order rotated per rep)
so that drift in the machine's load hits every target alike.

    python bench/relay_vs_jina.py [--quick]      # ~2 min full, ~1 min quick; writes bench/results/relay_vs_jina.json
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import common as c

GOAL_VS_JINA = 20.0
GOAL_VS_ECHO = 0.6
WINDOW = 32
MODES = ("json", "bytes")
TARGETS = ("jina", "relay", "echo")


def main() -> int:
    p = c.base_args(__doc__ or "")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    fast_s, fast_warm = (1.0, 0.3) if args.quick else (2.0, 0.5)
    jina_s, jina_warm = (2.0, 0.7) if args.quick else (4.0, 1.0)
    load_before = c.header(f"relay_vs_jina: one connection, {WINDOW} in flight, 1 doc/request, {args.reps} reps"
                           f"{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers = {
            "echo": stack.enter_context(c.echo_server()),
            "relay": stack.enter_context(c.relay_server("upper")),
            "jina": stack.enter_context(c.jina_flow()),
        }
        print("servers: " + ", ".join(f"{k} {s.url}" for k, s in servers.items()), flush=True)
        for rep in range(args.reps):
            order = TARGETS[rep % 3 :] + TARGETS[: rep % 3]
            for mode in MODES:
                for name in order:
                    srv = servers[name]
                    dur, warm = (jina_s, jina_warm) if name == "jina" else (fast_s, fast_warm)
                    res = c.run_pipelined(srv.url, mode, WINDOW, dur, warm, match="id", server_pids=srv.pids())
                    res.update(rep=rep, target=name)
                    runs.append(res)
                    print(f"  rep {rep + 1} {mode:5} {name:5} {res['rps']:9,.0f} req/s  p50 {res['p50_ms']:7.3f} ms"
                          f"  p99 {res['p99_ms']:7.3f} ms", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    summary: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    for mode in MODES:
        summary[mode] = {}
        for name in TARGETS:
            rs = [r for r in runs if r["mode"] == mode and r["target"] == name]
            rps = [r["rps"] for r in rs]
            srv_us = [c.us_per_answer(r) for r in rs]
            cli_us = [c.us_per_answer(r, "client_cpu_s") for r in rs]
            m = {
                "rps": c.median(rps),
                "p50_ms": c.median([r["p50_ms"] for r in rs]),
                "p99_ms": c.median([r["p99_ms"] for r in rs]),
                "server_cpu_us_per_req": c.median(srv_us),
                "client_cpu_us_per_req": c.median(cli_us),
                "answered_per_rep": c.median([r["answered"] for r in rs]),
            }
            summary[mode][name] = m
            rows.append([mode, name, m["rps"], c.spread(rps), m["p50_ms"], m["p99_ms"], m["server_cpu_us_per_req"],
                         m["client_cpu_us_per_req"]])
    ratios: dict[str, dict[str, float]] = {}
    for mode in MODES:
        s = summary[mode]
        per_rep_a = []
        per_rep_c = []
        for rep in range(args.reps):
            by = {r["target"]: r["rps"] for r in runs if r["mode"] == mode and r["rep"] == rep}
            per_rep_a.append(by["relay"] / by["jina"] if by.get("jina") else float("nan"))
            per_rep_c.append(by["relay"] / by["echo"] if by.get("echo") else float("nan"))
        ratios[mode] = {
            "relay_over_jina": s["relay"]["rps"] / s["jina"]["rps"] if s["jina"]["rps"] else float("nan"),
            "relay_over_echo": s["relay"]["rps"] / s["echo"]["rps"] if s["echo"]["rps"] else float("nan"),
            "relay_over_jina_per_rep": per_rep_a,
            "relay_over_echo_per_rep": per_rep_c,
        }

    print()
    print(c.table(["mode", "target", "req/s", "(min-max)", "p50 ms", "p99 ms", "server CPU us/req",
                   "client CPU us/req"], rows))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    goals = {}
    parts = []
    for mode in MODES:
        a, e = ratios[mode]["relay_over_jina"], ratios[mode]["relay_over_echo"]
        goals[mode] = {"relay_over_jina": a >= GOAL_VS_JINA, "relay_over_echo": e >= GOAL_VS_ECHO}
        parts.append(f"{mode}: relay/jina {a:.1f} (goal >= {GOAL_VS_JINA:g} {'ok' if a >= GOAL_VS_JINA else 'MISSED'}),"
                     f" relay/echo {e:.2f} (goal >= {GOAL_VS_ECHO:g} {'ok' if e >= GOAL_VS_ECHO else 'MISSED'})")
    print("ratios: " + "; ".join(parts))
    path = c.write_results("relay_vs_jina", {
        "benchmark": "relay_vs_jina",
        "command": "python bench/relay_vs_jina.py" + (" --quick" if args.quick else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "window": WINDOW,
        "durations_s": {"fast_targets": fast_s, "jina": jina_s, "warmup_fast": fast_warm, "warmup_jina": jina_warm},
        "reps": args.reps,
        "medians": summary,
        "ratios": ratios,
        "goals": {"relay_over_jina": GOAL_VS_JINA, "relay_over_echo": GOAL_VS_ECHO, "met": goals},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
