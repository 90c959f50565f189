"""What recording costs the relay: the same relay with and without `--record`, at capacity.

What it measures: requests/s of one client connection keeping 32 requests in flight (each answer sends the next),
1 doc per request, against three relays started side by side (`flowrelay serve -e upper`):

  (a) off      no recording;
  (b) record   `--record DIR`: every request and answer recorded (sample 1);
  (c) redact   `--record DIR --record-redact text`: the same, each body parsed and redacted in the writer thread.

first in the `json` subprotocol, then in `bytes`. The relay's CPU over the measured window is read from /proc (its
writer thread included): CPU per request says what recording adds; requests/s says what it takes from capacity
(the relay's event loop is the bottleneck: one core). Repetitions are interleaved (rep -> subprotocol -> variant,
variant order rotated per rep), medians reported with the min-max of the repetitions beside them. After the runs
the relays are stopped and the recordings measured: compressed bytes per request and answer, records dropped.

Goal (issue 17): recording costs the relay less than 10 % of its capacity (record/off >= 0.9).

    python bench/record_cost.py [--quick]     # ~1.5 min; writes bench/results/record_cost.json
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import common as c

GOAL_RATIO = 0.9
WINDOW = 32
MODES = ("json", "bytes")
VARIANTS = ("off", "record", "redact")


def _extra(variant: str, folder: Path) -> list[str]:
    if variant == "off":
        return []
    extra = ["--record", str(folder / variant)]
    if variant == "redact":
        extra += ["--record-redact", "text"]
    return extra


def main() -> int:
    p = c.base_args(__doc__ or "")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    dur, warm = (1.5, 0.4) if args.quick else (3.0, 0.7)
    load_before = c.header(f"record_cost: one connection, {WINDOW} in flight, 1 doc/request, {args.reps} reps"
                           f"{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    recordings: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="flowrelay-record-cost-") as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            servers = {v: stack.enter_context(c.relay_server("upper", extra=_extra(v, folder))) for v in VARIANTS}
            print("servers: " + ", ".join(f"{k} {s.url}" for k, s in servers.items()), flush=True)
            for rep in range(args.reps):
                order = VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]
                for mode in MODES:
                    for name in order:
                        srv = servers[name]
                        res = c.run_pipelined(srv.url, mode, WINDOW, dur, warm, match="id", server_pids=srv.pids())
                        res.update(rep=rep, variant=name)
                        runs.append(res)
                        cpu_us = c.us_per_answer(res)
                        print(f"  rep {rep + 1} {mode:5} {name:6} {res['rps']:9,.0f} req/s  relay CPU {cpu_us:6.1f} "
                              f"us/req  p50 {res['p50_ms']:6.3f} ms  p99 {res['p99_ms']:6.3f} ms", flush=True)
        # The relays have stopped: their recordings are closed, with their totals in recording.json.
        for variant in VARIANTS[1:]:
            meta = json.loads((folder / variant / "recording.json").read_text())
            recordings[variant] = {k: meta.get(k) for k in ("requests", "answers", "bytes", "segments", "frames",
                                                            "dropped", "write_errors")}
            recordings[variant]["bytes_per_request"] = meta["bytes"] / meta["requests"] if meta["requests"] else None
    load_after = c.load_average()
    noise_r = noise.report()

    medians: dict[str, dict[str, dict[str, float]]] = {mode: {} for mode in MODES}
    rows = []
    for mode, name in itertools.product(MODES, VARIANTS):
        of_both = [r for r in runs if (r["mode"], r["variant"]) == (mode, name)]
        rps = [r["rps"] for r in of_both]
        cpu = [c.us_per_answer(r) for r in of_both]
        m = {"rps": c.median(rps), "relay_cpu_us_per_req": c.median(cpu),
             "p50_ms": c.median([r["p50_ms"] for r in of_both]), "p99_ms": c.median([r["p99_ms"] for r in of_both])}
        medians[mode][name] = m
        rows.append([mode, name, m["rps"], c.spread(rps), m["relay_cpu_us_per_req"], c.spread(cpu),
                     m["p50_ms"], m["p99_ms"]])
    ratios: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        per_rep: dict[str, list[float]] = {"record": [], "redact": []}
        for rep in range(args.reps):
            by = {r["variant"]: r["rps"] for r in runs if r["mode"] == mode and r["rep"] == rep}
            for v in per_rep:
                per_rep[v].append(by[v] / by["off"] if by.get("off") else float("nan"))
        m = medians[mode]
        ratios[mode] = {
            "record_over_off": m["record"]["rps"] / m["off"]["rps"],
            "redact_over_off": m["redact"]["rps"] / m["off"]["rps"],
            "record_over_off_per_rep": per_rep["record"],
            "redact_over_off_per_rep": per_rep["redact"],
            "record_cpu_added_us_per_req": m["record"]["relay_cpu_us_per_req"] - m["off"]["relay_cpu_us_per_req"],
            "redact_cpu_added_us_per_req": m["redact"]["relay_cpu_us_per_req"] - m["off"]["relay_cpu_us_per_req"],
        }

    print()
    print(c.table(["mode", "relay", "req/s", "(min-max)", "relay CPU us/req", "(min-max)", "p50 ms", "p99 ms"], rows))
    for variant, rec in recordings.items():
        print(f"recording ({variant}): {rec['requests']:,} requests, {rec['answers']:,} answers, "
              f"{rec['bytes'] / 1e6:.1f} MB compressed ({c.fmt_num(rec['bytes_per_request'])} bytes per request "
              f"and its answer), {rec['frames']} frames, dropped {rec['dropped']}")
    print(f"\nload average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    goals = {}
    parts = []
    for mode in MODES:
        r = ratios[mode]
        met = r["record_over_off"] >= GOAL_RATIO
        goals[mode] = met
        verdict = "ok" if met else "MISSED"
        parts.append(f"{mode}: record/off {r['record_over_off']:.3f} (goal >= {GOAL_RATIO} {verdict}),"
                     f" +{r['record_cpu_added_us_per_req']:.2f} us/req; redact/off {r['redact_over_off']:.3f}")
    print("ratios: " + "; ".join(parts))
    path = c.write_results("record_cost", {
        "benchmark": "record_cost",
        "command": "python bench/record_cost.py" + (" --quick" if args.quick else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "window": WINDOW,
        "durations_s": {"measured": dur, "warmup": warm},
        "reps": args.reps,
        "medians": medians,
        "ratios": ratios,
        "recordings": recordings,
        "goal": {"record_over_off": GOAL_RATIO, "met": goals},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
