"""What recording costs the relay: the same relay with and without `--record`, at capacity.

What it measures: requests/s of one client connection keeping 32 requests in flight (each answer sends the next),
1 doc per request, against three relays started side by side (`flowrelay serve -e upper`):

  (a) off      no recording;
  (b) record   `--record DIR`: every request and answer recorded (sample 1);
  (c) redact   `--record DIR --record-redact text`: the same, each body parsed and redacted in the writer thread.

first in the `json` subprotocol, then in `bytes`. The relay's CPU over the measured window is read from /proc, and
split between its recorder thread and the rest (the event loop) by their shares of the whole run. The relay's
capacity is its event loop's (one core: everything a request needs runs there, and the recorder's packing too);
the recorder thread compresses and writes with the GIL released, on the other core. So the capacity ratio is
event-loop CPU per request off / on; requests/s of the pipelined client are beside it, but on this 2-core
machine, shared with the client and with other work, they swing by tens of percent between repetitions.
Repetitions are interleaved (rep -> subprotocol -> variant, variant order rotated per rep), medians reported
with the min-max of the repetitions beside them. After the runs the relays are stopped and the recordings
measured: compressed bytes per request and answer, records dropped.

Also, free of that noise: what the event loop does per request when recording, timed with timeit in this
process (the tap's `request` and `answer` with a request and an answer as the relay encodes them, the blocks
handed over and written by the writer as in the relay).

Goal (issue 17): recording costs the relay less than 10 % of its capacity (capacity ratio record/off >= 0.9).

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

from relay.capture.writer import THREAD_NAME

GOAL_RATIO = 0.9
WINDOW = 32
RECORDER_THREAD = THREAD_NAME
MODES = ("json", "bytes")
VARIANTS = ("off", "record", "redact")


def _extra(variant: str, folder: Path) -> list[str]:
    if variant == "off":
        return []
    extra = ["--record", str(folder / variant)]
    if variant == "redact":
        extra += ["--record-redact", "text"]
    return extra


def hook_cost_us(number: int = 100_000) -> dict[str, float]:
    """Microseconds the event loop spends per request in the tap (request + answer), per subprotocol."""
    import timeit

    from relay.capture.tap import CaptureTap
    from relay.capture.writer import RecordingWriter, SegmentWriter
    from relay.wire import json_codec, proto_codec
    from relay.wire.documents import Document
    from relay.wire.messages import DataRequest, Route

    t = time.time_ns()
    out = {}
    with tempfile.TemporaryDirectory(prefix="flowrelay-record-hooks-") as tmp:
        for mode, codec in (("json", json_codec), ("bytes", proto_codec)):
            writer = RecordingWriter(SegmentWriter(Path(tmp) / mode))
            writer.start()
            tap = CaptureTap(writer)
            conn = tap.connection("websocket", mode, codec.encode_response)
            assert conn is not None
            req = DataRequest(request_id="c905c9e5e793a50a0000000000000001", exec_endpoint="/index",
                              docs=[Document(id="c905c9e5e793a50a0000000000000002", text=c.DOC_TEXT)],
                              parameters={"rid": "000000000001"})
            body: bytes | str = (proto_codec.encode(req) if mode == "bytes"
                                 else json_codec.encode_request(req).decode())
            req.routes = [Route("gateway", t, t + 90_000), Route("upper", t + 1_000, t + 2_000)]
            answer = codec.encode_response(req)

            def one() -> None:
                conn.request(req.request_id, "/index", body)  # noqa: B023
                conn.answer(answer)  # noqa: B023

            out[mode] = min(timeit.repeat(one, number=number, repeat=5)) / number * 1e6
            tap.close()
    return out


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
                        pid = srv.pids()[0]
                        before = c.proc_cpu_s([pid]), c.thread_cpu_s(pid, RECORDER_THREAD)
                        res = c.run_pipelined(srv.url, mode, WINDOW, dur, warm, match="id", server_pids=srv.pids())
                        spent = c.proc_cpu_s([pid]) - before[0]
                        recorder_share = (c.thread_cpu_s(pid, RECORDER_THREAD) - before[1]) / spent if spent else 0.0
                        cpu_us = c.us_per_answer(res)
                        res.update(rep=rep, variant=name, recorder_share=recorder_share,
                                   loop_cpu_us_per_req=cpu_us * (1 - recorder_share))
                        runs.append(res)
                        print(f"  rep {rep + 1} {mode:5} {name:6} {res['rps']:9,.0f} req/s  relay CPU {cpu_us:6.1f} "
                              f"us/req (event loop {res['loop_cpu_us_per_req']:5.1f})  p50 {res['p50_ms']:6.3f} ms  "
                              f"p99 {res['p99_ms']:6.3f} ms", flush=True)
        # The relays have stopped: their recordings are closed, with their totals in recording.json.
        for variant in VARIANTS[1:]:
            meta = json.loads((folder / variant / "recording.json").read_text())
            recordings[variant] = {k: meta.get(k) for k in ("requests", "answers", "bytes", "segments", "frames",
                                                            "dropped", "write_errors")}
            recordings[variant]["bytes_per_request"] = meta["bytes"] / meta["requests"] if meta["requests"] else None
    hooks = hook_cost_us()
    print("event loop per request in the tap (timeit): " + ", ".join(f"{m} {us:.3f} us" for m, us in hooks.items()))
    load_after = c.load_average()
    noise_r = noise.report()

    medians: dict[str, dict[str, dict[str, float]]] = {mode: {} for mode in MODES}
    rows = []
    for mode, name in itertools.product(MODES, VARIANTS):
        of_both = [r for r in runs if (r["mode"], r["variant"]) == (mode, name)]
        rps = [r["rps"] for r in of_both]
        cpu = [c.us_per_answer(r) for r in of_both]
        loop_cpu = [r["loop_cpu_us_per_req"] for r in of_both]
        m = {"rps": c.median(rps), "relay_cpu_us_per_req": c.median(cpu), "loop_cpu_us_per_req": c.median(loop_cpu),
             "p50_ms": c.median([r["p50_ms"] for r in of_both]), "p99_ms": c.median([r["p99_ms"] for r in of_both])}
        medians[mode][name] = m
        rows.append([mode, name, m["rps"], c.spread(rps), m["relay_cpu_us_per_req"], m["loop_cpu_us_per_req"],
                     c.spread(loop_cpu), m["p50_ms"], m["p99_ms"]])
    ratios: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        per_rep: dict[str, list[float]] = {"record": [], "redact": []}
        for rep in range(args.reps):
            by = {r["variant"]: r["rps"] for r in runs if r["mode"] == mode and r["rep"] == rep}
            for v in per_rep:
                per_rep[v].append(by[v] / by["off"] if by.get("off") else float("nan"))
        m = medians[mode]
        ratios[mode] = {
            "capacity_record_over_off": m["off"]["loop_cpu_us_per_req"] / m["record"]["loop_cpu_us_per_req"],
            "capacity_redact_over_off": m["off"]["loop_cpu_us_per_req"] / m["redact"]["loop_cpu_us_per_req"],
            "record_over_off": m["record"]["rps"] / m["off"]["rps"],
            "redact_over_off": m["redact"]["rps"] / m["off"]["rps"],
            "record_over_off_per_rep": per_rep["record"],
            "redact_over_off_per_rep": per_rep["redact"],
            "record_cpu_added_us_per_req": m["record"]["relay_cpu_us_per_req"] - m["off"]["relay_cpu_us_per_req"],
            "redact_cpu_added_us_per_req": m["redact"]["relay_cpu_us_per_req"] - m["off"]["relay_cpu_us_per_req"],
        }

    print()
    print(c.table(["mode", "relay", "req/s", "(min-max)", "relay CPU us/req", "event loop us/req", "(min-max)",
                   "p50 ms", "p99 ms"], rows))
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
        met = r["capacity_record_over_off"] >= GOAL_RATIO
        goals[mode] = met
        verdict = "ok" if met else "MISSED"
        parts.append(f"{mode}: capacity record/off {r['capacity_record_over_off']:.3f} (goal >= {GOAL_RATIO} {verdict})"
                     f", relay CPU +{r['record_cpu_added_us_per_req']:.2f} us/req, req/s record/off "
                     f"{r['record_over_off']:.3f}; capacity redact/off {r['capacity_redact_over_off']:.3f}")
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
        "tap_us_per_request": hooks,
        "goal": {"record_over_off": GOAL_RATIO, "met": goals},
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
