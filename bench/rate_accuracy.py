"""Open-model rate accuracy of `flowrelay load`: does it send at the rate asked, on time?

What it measures: `flowrelay load --rate R --duration D` (even arrivals, one connection, `bytes`) against
the bare echo server, for R from 100/s up to about 80 % of the load generator's open-model capacity
(taken from bench/results/load_capacity.json when it is there, else measured here with a short
closed-model run). From each run's summary.json it reads `rate.achieved_rps / rate.target_rps` and
`scheduler_lag_ms.p99` (how late, after its due time, a request was sent).

How to read it: one row per rate, medians of the repetitions (worst of them beside). Goals: achieved/target
within 0.5 % of 1, and scheduler lag p99 under 1 ms. Repetitions are interleaved (rep -> rate, the
order of rates rotated per repetition).

    python bench/rate_accuracy.py [--quick] [--capacity RPS]      # ~2 min full, ~1 min quick
"""

from __future__ import annotations

import json
import time
from typing import Any

import common as c

GOAL_RATIO_TOL = 0.005
GOAL_LAG_P99_MS = 1.0
LADDER = (100, 500, 1000, 2000, 5000, 10000, 20000, 40000)


def capacity_from_results() -> tuple[float | None, str]:
    path = c.RESULTS_DIR / "load_capacity.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, ""
    cap = data.get("medians", {}).get("open_capacity_rps")
    if not cap or cap != cap:
        cap = data.get("medians", {}).get("closed_rps")
    return (float(cap), f"{path.relative_to(c.REPO)} ({data.get('machine', {}).get('measured_at', '?')})") \
        if cap else (None, "")


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--capacity", type=float, help="the load generator's capacity (answers/s); default: "
                   "bench/results/load_capacity.json, else measured here")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    dur = 2.0 if args.quick else 5.0
    load_before = c.header(f"rate_accuracy: flowrelay load open model, even arrivals, bytes, {dur:g} s per run, "
                           f"{args.reps} reps{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    with c.echo_server() as srv:
        print(f"target: {srv.name} {srv.url}", flush=True)
        source = "--capacity"
        cap = args.capacity
        if cap is None:
            cap, source = capacity_from_results()
        if cap is None:
            measured = []
            for _ in range(3):
                s, _run = c.flowrelay_load([srv.url, "--concurrency", "64", "--duration", "3s"], timeout_s=60)
                measured.append(s["rate"]["ok_rps"])
            cap, source = c.median(measured), "measured here (closed model, 64 in flight, median of 3)"
        top = round(0.8 * cap, -2)
        rates = [r for r in LADDER if r < top * 0.95] + [top]
        print(f"capacity {cap:,.0f}/s from {source}; rates: {', '.join(f'{r:,.0f}' for r in rates)}", flush=True)
        for rep in range(args.reps):
            k = rep % len(rates)
            for rate in rates[k:] + rates[:k]:
                s, run = c.flowrelay_load([srv.url, "--rate", str(rate), "--duration", f"{dur}s"],
                                          timeout_s=dur + 60)
                ratio = s["rate"]["achieved_rps"] / s["rate"]["target_rps"]
                lag = s["scheduler_lag_ms"]
                runs.append({"rep": rep, "rate": rate, "ratio": ratio, "lag_ms": lag,
                             "requests": s["requests"], "latency_ms": s["latency_ms"], "gen_cpu_s": run.cpu_s,
                             "wall_s": run.wall_s})
                print(f"  rep {rep + 1} {rate:8,.0f}/s  achieved/target {ratio:.5f}  lag p50 {lag['p50']} "
                      f"p99 {lag['p99']} ms  dropped {s['requests']['dropped']}", flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    rows = []
    per_rate = []
    for rate in rates:
        rs = [r for r in runs if r["rate"] == rate]
        ratios = [r["ratio"] for r in rs]
        lags = [r["lag_ms"]["p99"] for r in rs]
        m_ratio, m_lag = c.median(ratios), c.median(lags)
        worst_ratio = max(ratios, key=lambda x: abs(x - 1))
        ok_ratio = abs(m_ratio - 1) <= GOAL_RATIO_TOL
        ok_lag = m_lag < GOAL_LAG_P99_MS
        per_rate.append({"rate": rate, "ratio": m_ratio, "worst_ratio": worst_ratio, "lag_p50_ms":
                         c.median([r["lag_ms"]["p50"] for r in rs]), "lag_p99_ms": m_lag, "worst_lag_p99_ms":
                         max(lags), "dropped": sum(r["requests"]["dropped"] for r in rs),
                         "gen_cpu_pct": c.median([100 * r["gen_cpu_s"] / r["wall_s"] for r in rs]),
                         "ok_ratio": ok_ratio, "ok_lag": ok_lag})
        pr = per_rate[-1]
        rows.append([f"{rate:,.0f}", f"{m_ratio:.5f}", f"{worst_ratio:.5f}", pr["lag_p50_ms"], m_lag,
                     max(lags), pr["dropped"], pr["gen_cpu_pct"],
                     ("ok" if ok_ratio else "MISS") + " / " + ("ok" if ok_lag else "MISS")])
    print()
    print(c.table(["rate/s", "achieved/target", "(worst)", "lag p50 ms", "lag p99 ms", "(worst)", "dropped",
                   "gen CPU %", "rate / lag goal"], rows))
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    worst_ratio = max((pr["ratio"] for pr in per_rate), key=lambda x: abs(x - 1))
    worst_lag = max(pr["lag_p99_ms"] for pr in per_rate)
    n_ratio = sum(pr["ok_ratio"] for pr in per_rate)
    n_lag = sum(pr["ok_lag"] for pr in per_rate)
    print(f"ratios: achieved/target within {100 * GOAL_RATIO_TOL:g} % at {n_ratio}/{len(per_rate)} rates (worst "
          f"{worst_ratio:.5f}); scheduler lag p99 < {GOAL_LAG_P99_MS:g} ms at {n_lag}/{len(per_rate)} rates "
          f"(worst {worst_lag:.3f} ms)")
    path = c.write_results("rate_accuracy", {
        "benchmark": "rate_accuracy",
        "command": "python bench/rate_accuracy.py" + (" --quick" if args.quick else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "capacity_rps": cap,
        "capacity_source": source,
        "duration_s": dur,
        "goals": {"ratio_tolerance": GOAL_RATIO_TOL, "lag_p99_ms": GOAL_LAG_P99_MS},
        "per_rate": per_rate,
        "met": {"ratio": n_ratio == len(per_rate), "lag": n_lag == len(per_rate)},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
