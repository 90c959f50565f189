"""How exact the built-in `sleep` Executor is, idle and under load: the known delay users calibrate against.

Runs what a user runs (a relay `upper -> nap=sleep:1ms`, then `flowrelay load`) and reads what a user reads:
the `nap` hop from the answers' route entries (summary.json's hops) and every request's end-to-end latency
(requests.msgpack: answer minus intended send time). Two loads, interleaved, each repeated:

    busy  --rate 1000 --procs 2 --connections 4 (5 s): bursts from several connections and processes
    idle  --rate 100 --connections 1 (5 s)

Goals: no end-to-end latency under the delay, the `nap` hop's mean at least the delay and its p50 within
100 µs of it, in every repetition.

    python bench/sleep_accuracy.py [--reps 3] [--delay 1ms]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

from relay.common.units import parse_duration

LOADS = {
    "busy": ["--rate", "1000", "--procs", "2", "--connections", "4"],
    "idle": ["--rate", "100", "--connections", "1"],
}


def _latencies_s(out: Path) -> list[float]:
    latencies = []
    for path in sorted(out.glob("requests.msgpack*")):
        with path.open("rb") as fh:
            for record in msgpack.Unpacker(fh, raw=False):
                due_s, answered_s = record[1], record[3]
                if answered_s is not None:
                    latencies.append(answered_s - due_s)
    return latencies


def one_run(url: str, load: str, seconds: str, workdir: Path, tag: str) -> dict[str, Any]:
    out = workdir / tag
    summary, _ = c.flowrelay_load([url + "/", *LOADS[load], "--duration", seconds, "--out", str(out),
                                   "--log-requests"], timeout_s=120)
    nap = summary["hops"]["nap"]
    latencies = _latencies_s(out)
    return {
        "load": load,
        "answered": len(latencies),
        "nap_mean_ms": nap["mean"],
        "nap_p50_ms": nap["p50"],
        "nap_p99_ms": nap["p99"],
        "e2e_min_ms": min(latencies) * 1e3,
        "e2e_p50_ms": summary["latency_ms"]["p50"],
    }


def main() -> int:
    ap = c.base_args(__doc__ or "")
    ap.add_argument("--delay", default="1ms", help="the sleep Executor's delay (default 1ms)")
    args = ap.parse_args()
    delay_ms = parse_duration(args.delay) * 1e3
    seconds = "3s" if args.quick else "5s"
    load = c.header(f"sleep accuracy: relay upper -> nap=sleep:{args.delay}", args.wait_quiet)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, c.relay_server("upper", f"nap=sleep:{args.delay}") as relay:
        for rep in range(args.reps):
            for kind in ("busy", "idle") if rep % 2 == 0 else ("idle", "busy"):
                row = one_run(relay.url, kind, seconds, Path(tmp), f"{kind}{rep}")
                row["rep"] = rep
                rows.append(row)
                print(f"  rep {rep} {kind}: nap mean {row['nap_mean_ms']:.3f} ms, p50 {row['nap_p50_ms']:.3f} ms, "
                      f"lowest end-to-end {row['e2e_min_ms']:.3f} ms ({row['answered']} answered)", flush=True)
    print()
    print(c.table(["load", "rep", "nap mean ms", "nap p50 ms", "p50 error us", "lowest e2e ms", "answered"],
                  [[r["load"], str(r["rep"]), r["nap_mean_ms"], r["nap_p50_ms"],
                    (r["nap_p50_ms"] - delay_ms) * 1e3, r["e2e_min_ms"], str(r["answered"])] for r in rows]))
    never_early = all(r["e2e_min_ms"] >= delay_ms for r in rows)
    mean_ok = all(r["nap_mean_ms"] >= delay_ms for r in rows)
    p50_ok = all(abs(r["nap_p50_ms"] - delay_ms) <= 0.1 for r in rows)
    print(f"\nevery end-to-end latency >= {delay_ms:g} ms: {'met' if never_early else 'MISSED'}; "
          f"nap mean >= {delay_ms:g} ms: {'met' if mean_ok else 'MISSED'}; "
          f"nap p50 within 100 us: {'met' if p50_ok else 'MISSED'}")
    path = c.write_results("sleep_accuracy", {
        "machine": c.machine_info(), "load_average_before": load, "delay_ms": delay_ms, "runs": rows,
        "goals": {"never_early": never_early, "mean_at_least_delay": mean_ok, "p50_within_100us": p50_ok},
    })
    print(f"results: {path}")
    return 0 if never_early and mean_ok and p50_ok else 1


if __name__ == "__main__":
    sys.exit(main())
