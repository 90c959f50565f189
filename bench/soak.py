"""Soak: steady load through the relay for a long time; do the relay's and the load engine's memory stay flat?

What it measures: `flowrelay serve -e upper -e sleeper=sleep:2ms` (built-in Executors) under
`flowrelay load --rate 300 --connections 8` (bytes, 1 doc per request, even arrivals) for `--duration`
(default 15m; `--quick` 2m). Every 10 s it samples the resident memory (VmRSS, /proc/PID/status) of the
relay process and of the load process (with any worker it forked), and their CPU. After the run it
checks that the load run's totals add up:

  - sent == ok + failed + timeout + unanswered + transport_failed (summary.json, measured and warm-up);
  - sent + dropped == the schedule (rate x duration, within one request per connection);
  - every request answered ok, none failed, dropped, timed out or unanswered;
  - the per-second time series (timeseries.jsonl) sums to the summary's sent and ok;
  - docs sent == docs received == ok (one document per request);
  - the relay counted every request it was sent (`requests_total` of GET /status).

How to read it: memory is judged after a warm-up (the first 2 minutes; 20 % of the run in quick mode), in
which allocators, caches and histograms settle. For each process the table shows the first, last, min
and max RSS after warm-up, the largest distance of a sample from the first one (goal: within 5 %), and
the least-squares slope in KB per minute (and as % of the first sample per minute): a leak shows as a
steady positive slope even when it is still inside 5 %. Latency p50/p99 per minute are printed as the run
goes, to show the service stayed steady.

    python bench/soak.py [--quick] [--duration 15m] [--rate 300] [--connections 8]
    # 15 min full, 2 min quick; writes bench/results/soak.json (soak-quick.json with --quick)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import common as c

from relay.common.units import parse_duration

GOAL_WITHIN_PCT = 5.0
SAMPLE_S = 10.0
WARMUP_FULL_S = 120.0
WARMUP_QUICK_FRACTION = 0.2


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (the load engine forks workers only with --procs > 1)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(x) for x in (task / "children").read_text().split()]
    return pids


def relay_status(url: str) -> dict[str, Any]:
    http = url.replace("ws://", "http://", 1).rstrip("/") + "/status"
    with urllib.request.urlopen(http, timeout=5) as resp:  # 127.0.0.1 only: the relay this script started
        return json.loads(resp.read())


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den if den else float("nan")


def memory_verdict(samples: list[dict[str, Any]], key: str, warmup_s: float) -> dict[str, Any]:
    after = [(s["t"], s[key]) for s in samples if s["t"] >= warmup_s and s[key] is not None]
    if not after:
        return {"samples_after_warmup": 0, "within_goal": False}
    values = [v for _, v in after]
    first = values[0]
    worst = max(abs(v - first) for v in values)
    slope = slope_per_min(after)
    return {
        "samples_after_warmup": len(after),
        "first_kb": first,
        "last_kb": values[-1],
        "min_kb": min(values),
        "max_kb": max(values),
        "max_deviation_kb": worst,
        "max_deviation_pct": 100.0 * worst / first,
        "last_vs_first_pct": 100.0 * (values[-1] - first) / first,
        "slope_kb_per_min": slope,
        "slope_pct_per_min": 100.0 * slope / first,
        "within_goal": 100.0 * worst / first <= GOAL_WITHIN_PCT,
    }


def check_totals(summary: dict[str, Any], rows: list[dict[str, Any]], rate: float, duration_s: float,
                 connections: int, relay_requests: int | None) -> list[dict[str, Any]]:
    """The accounting checks listed in the docstring: each {check, ok, detail}."""
    req, warm = summary["requests"], summary["warmup"]["requests"]
    checks = []

    def add(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    for label, r in (("measured", req), ("warm-up", warm)):
        ends = r["ok"] + r["failed"] + r["timeout"] + r["unanswered"] + r["transport_failed"]
        add(f"{label}: sent == ok+failed+timeout+unanswered+transport_failed", r["sent"] == ends,
            f"{r['sent']} vs {ends}")
    sent = req["sent"] + warm["sent"]
    dropped = req["dropped"] + warm["dropped"]
    ok = req["ok"] + warm["ok"]
    planned = rate * duration_s
    add("sent + dropped == rate x duration", abs(sent + dropped - planned) <= connections + 1,
        f"{sent} + {dropped} vs {planned:.0f}")
    bad = {k: req[k] + warm[k] for k in ("failed", "timeout", "dropped", "unanswered", "transport_failed")}
    add("every request answered ok", ok == sent and not any(bad.values()),
        f"ok {ok} of {sent}; " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    ts_sent = sum(r.get("sent", 0) for r in rows)
    ts_ok = sum(r.get("ok", 0) for r in rows)
    add("timeseries.jsonl sums to the summary", ts_sent == sent and ts_ok == ok,
        f"sent {ts_sent} vs {sent}, ok {ts_ok} vs {ok} ({len(rows)} rows)")
    docs = summary["docs"]
    add("docs sent == received == ok", docs["sent"] == docs["received"] == ok,
        f"{docs['sent']} / {docs['received']} / {ok}")
    add("relay requests_total == sent", relay_requests == sent, f"{relay_requests} vs {sent}")
    return checks


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--duration", help="how long to run the load (default 15m; --quick 2m)")
    p.add_argument("--rate", type=float, default=300.0, help="requests per second (default 300)")
    p.add_argument("--connections", type=int, default=8, help="load connections (default 8)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    duration_s = parse_duration(args.duration or ("2m" if args.quick else "15m"))
    warmup_s = duration_s * WARMUP_QUICK_FRACTION if args.quick else min(WARMUP_FULL_S, duration_s * 0.5)
    name = "soak-quick" if args.quick else "soak"
    load_before = c.header(f"soak: relay upper -> sleeper=sleep:2ms, {args.rate:g}/s over {args.connections} "
                           f"connections for {duration_s:.0f} s, RSS every {SAMPLE_S:g} s, warm-up {warmup_s:.0f} s"
                           f"{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    work = Path(tempfile.mkdtemp(prefix="flowrelay-bench-soak-", dir="/tmp"))
    samples: list[dict[str, Any]] = []
    try:
        with c.relay_server("upper", "sleeper=sleep:2ms") as relay:
            relay_pid = relay.pids()[0]
            cmd = [c.PYTHON, "-m", "flowrelay", "load", relay.url, "--subprotocol", "bytes", "--rate", f"{args.rate:g}",
                   "--connections", str(args.connections), "--duration", f"{duration_s:g}s", "--out",
                   str(work / "run"), "--json", "--quiet"]
            print(f"relay {relay.url} (pid {relay_pid}); load: flowrelay load {' '.join(cmd[4:])}", flush=True)
            out_path, err_path = work / "load.out", work / "load.err"
            with out_path.open("wb") as out, err_path.open("wb") as err:
                load = subprocess.Popen(cmd, cwd=c.REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True)
            try:
                t0 = time.monotonic()
                deadline = t0 + duration_s + 120.0  # the run, its grace period, start-up: then it is stuck
                next_at = t0
                last_minute = -1
                while load.poll() is None and time.monotonic() < deadline:
                    now = time.monotonic()
                    if now >= next_at:
                        load_pids = with_children(load.pid)
                        rss_load = [c.status_kb(x) for x in load_pids]
                        samples.append({
                            "t": round(now - t0, 2),
                            "relay_rss_kb": c.status_kb(relay_pid),
                            "load_rss_kb": sum(x for x in rss_load if x) or None,
                            "load_pids": len(load_pids),
                            "relay_cpu_s": c.proc_cpu_s([relay_pid]),
                            "load_cpu_s": c.proc_cpu_s(load_pids),
                        })
                        next_at += SAMPLE_S
                        minute = int((now - t0) // 60)
                        if minute != last_minute:
                            last_minute = minute
                            s = samples[-1]
                            print(f"  t={s['t']:6.0f} s  relay RSS {(s['relay_rss_kb'] or 0) / 1024:7.2f} MiB  "
                                  f"load RSS {(s['load_rss_kb'] or 0) / 1024:7.2f} MiB", flush=True)
                    time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
                if load.poll() is None:
                    raise RuntimeError(f"flowrelay load still running {duration_s + 120:.0f} s after its start")
            finally:
                if load.poll() is None:
                    c.stop_process(load)  # type: ignore[arg-type]
            status = relay_status(relay.url)
            relay_requests = int(status["envs"]["requests_total"])
            if load.returncode != 0:
                raise RuntimeError(f"flowrelay load failed (exit {load.returncode}): "
                                   f"{err_path.read_text()[-2000:]}")
        summary = json.loads(out_path.read_text())
        rows = [json.loads(line) for line in (work / "run" / "timeseries.jsonl").read_text().splitlines() if line]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = c.load_average()
    noise_r = noise.report()

    checks = check_totals(summary, rows, args.rate, duration_s, args.connections, relay_requests)
    memory = {"relay": memory_verdict(samples, "relay_rss_kb", warmup_s),
              "load": memory_verdict(samples, "load_rss_kb", warmup_s)}
    per_min = []
    for m in range(int(duration_s // 60) + 1):
        rs = [r for r in rows if m * 60 <= r["t"] < (m + 1) * 60]
        if rs:
            per_min.append({"minute": m + 1, "sent": sum(r["sent"] for r in rs), "ok": sum(r["ok"] for r in rs),
                            "p50_ms_median": c.median([r["p50_ms"] for r in rs if r.get("p50_ms") is not None]),
                            "p99_ms_max": max((r["p99_ms"] for r in rs if r.get("p99_ms") is not None), default=None)})
    cpu = {}
    if len(samples) >= 2:
        span = samples[-1]["t"] - samples[0]["t"]
        n = summary["requests"]["sent"] + summary["warmup"]["requests"]["sent"]
        for who in ("relay", "load"):
            used = samples[-1][f"{who}_cpu_s"] - samples[0][f"{who}_cpu_s"]
            cpu[who] = {"cores": used / span if span else float("nan"),
                        "us_per_req": 1e6 * used / (n * span / duration_s) if n else float("nan")}

    print()
    print(c.table(["minute", "sent", "ok", "p50 ms (median of seconds)", "p99 ms (worst second)"],
                  [[str(x["minute"]), str(x["sent"]), str(x["ok"]), x["p50_ms_median"], x["p99_ms_max"]]
                   for x in per_min]))
    print()
    rows_mem = []
    for who, v in memory.items():
        if not v.get("samples_after_warmup"):
            rows_mem.append([who, "-", "-", "-", "-", "-", "-", "no samples"])
            continue
        rows_mem.append([who, v["first_kb"] / 1024, v["last_kb"] / 1024, v["min_kb"] / 1024, v["max_kb"] / 1024,
                         f"{v['max_deviation_pct']:.2f} %",
                         f"{v['slope_kb_per_min']:+.1f} ({v['slope_pct_per_min']:+.3f} %)",
                         "ok" if v["within_goal"] else "MISSED"])
    print(f"RSS after warm-up ({warmup_s:.0f} s), {sum(1 for s in samples if s['t'] >= warmup_s)} samples every "
          f"{SAMPLE_S:g} s:")
    print(c.table(["process", "first MiB", "last MiB", "min MiB", "max MiB", "max |dev| from first",
                   "slope KB/min (%/min)", f"within {GOAL_WITHIN_PCT:g} %"], rows_mem))
    print()
    print(c.table(["accounting check", "ok", "detail"], [[x["check"], "ok" if x["ok"] else "FAILED", x["detail"]]
                                                         for x in checks]))
    if cpu:
        print(f"\nCPU: relay {cpu['relay']['cores']:.3f} cores ({cpu['relay']['us_per_req']:.0f} us/req), "
              f"load {cpu['load']['cores']:.3f} cores ({cpu['load']['us_per_req']:.0f} us/req); latency p50 "
              f"{summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms over the whole run")
    print(f"load average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    all_ok = all(x["ok"] for x in checks)
    parts = []
    for who, v in memory.items():
        dev = v.get("max_deviation_pct", float("nan"))
        parts.append(f"{who} RSS max deviation {dev:.2f} % = {dev / GOAL_WITHIN_PCT:.2f} of the "
                     f"{GOAL_WITHIN_PCT:g} % goal ({'ok' if v.get('within_goal') else 'MISSED'}), "
                     f"slope {v.get('slope_pct_per_min', 0):+.3f} %/min")
    parts.append(f"totals add up: {'ok' if all_ok else 'FAILED'} ({sum(x['ok'] for x in checks)}/{len(checks)} checks)")
    print("ratios: " + "; ".join(parts))
    cmd_line = "python bench/soak.py" + (" --quick" if args.quick else "")
    if args.duration:
        cmd_line += f" --duration {args.duration}"
    if args.rate != 300.0:
        cmd_line += f" --rate {args.rate:g}"
    if args.connections != 8:
        cmd_line += f" --connections {args.connections}"
    path = c.write_results(name, {
        "benchmark": "soak",
        "command": cmd_line,
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "setup": {"relay": "flowrelay serve -e upper -e sleeper=sleep:2ms", "rate": args.rate,
                  "connections": args.connections, "duration_s": duration_s, "warmup_s": warmup_s,
                  "sample_s": SAMPLE_S, "subprotocol": "bytes"},
        "memory": memory,
        "goal_within_pct": GOAL_WITHIN_PCT,
        "accounting": checks,
        "accounting_ok": all_ok,
        "cpu": cpu,
        "latency_ms": summary["latency_ms"],
        "hops_ms": summary.get("hops"),
        "requests": summary["requests"],
        "per_minute": per_min,
        "relay_status": status,
        "samples": samples,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
