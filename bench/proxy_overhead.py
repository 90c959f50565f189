"""What the relay adds in front of a real Jina Flow: latency at p50 and p99, and CPU per request.

What it measures: one real Jina 3.34 Flow (gateway -> one trivial Executor `upper`, tests/jina_peer.py) and
one `flowrelay serve --upstream ws://FLOW` in front of it (2 upstream links, bytes). First the Flow's
capacity: a short closed-model run straight to it (`flowrelay load --concurrency 32`, its ok answers/s).
Then, at half that capacity, an open-model run (`flowrelay load --rate R`, bytes subprotocol, 1 connection,
1 doc per request, even arrivals, a warm-up left out of the figures) straight to the Flow ("direct"), the
same run through the relay ("relay"), and through a bare forwarder in the relay's place ("bare": a uvloop
process that copies TCP bytes both ways and does nothing else, bench/common.py `forward`), interleaved,
3 repetitions, the order rotated every repetition. The bare forwarder is the floor: what one more process
on the path costs on this machine (two more loopback writes, two more wake-ups of a sleeping process),
whatever that process does; the relay's own work is what it adds beyond that.
Half the closed-model capacity can be more than the machine sustains in an open model (pipelined requests
share reads, writes and wake-ups; evenly spaced ones do not, and the relay and the load generator take
their share of the 2 cores), so a short calibration checks it first, direct and through the relay, and
steps the rate down by 20 % until both hold (everything sent and answered, p50 under 10 ms); the rate
used and its fraction of the capacity are printed and kept.

  added latency (end to end)  through-relay minus direct, `latency_ms` of summary.json (from the intended
                              send time), p50 and p99, paired within each repetition; the median of the
                              repetitions is reported, their min-max beside it;
  bare hop                    through-bare minus direct, and through-relay minus through-bare, paired the same
                              way: the floor any proxy pays here, and what the relay adds above it;
  added latency (hops)        the relay's own span from the answer's routes, within the through-relay run:
                              the relay's `gateway` span minus the Flow gateway's span (`upstream`), p50 and
                              p99 (a difference of two percentiles, not a percentile of differences). It
                              excludes the client's side, but includes the Flow gateway's own work outside
                              its span (reading and parsing the request before it stamps its start, writing
                              the answer after its end), which a client straight to the Flow pays as well
                              (its `outside_gateway`): so it overstates what the relay adds;
  relay CPU per request       the relay process's user+system CPU (/proc/PID/stat) over the through-relay
                              run divided by the requests it answered (warm-up included); the same
                              process's CPU over the direct run (it idles then) is shown as its floor, and
                              its CPU per request in a closed run through it (32 in flight, pipelined) as
                              what the same work costs when requests share reads, writes and wake-ups.

  side by side                then, per repetition, both streams at once, each at half the rate (so the Flow
                              carries the same total): one straight to the Flow, one through the relay. The
                              Flow's stalls and the machine's other work then hit both streams alike, where
                              the interleaved runs above compare two different windows of time: on this
                              2-core machine the Flow's own p99 moves by hundreds of ms from one window to
                              the next, which swamps a 1 ms goal. Added p50 and p99 are relay minus direct
                              within each repetition, the relay's CPU per request of its own stream.

How to read it: the goal is p50 added under 150 us and p99 under 1 ms (end to end, median of the paired
differences). The verdict is `ok` or `MISSED` only when the direct runs' own percentile varies by less than
the goal across the repetitions (or every repetition is past the goal); otherwise it says INCONCLUSIVE.
A Flow's own latency at half capacity is milliseconds with a long tail on a busy 2-core machine, so the
p99 difference carries noise of that order (stalls of the Flow or of the machine land in one run and not the
other): look at the per-repetition spread. The hop figure at p50 is measured inside one run, on the same
requests, so it does not depend on the direct runs; at p99 it is the difference of two tails and says
little. `Flow CPU us/req` is the Flow's processes (gateway and Executor): the relay's links should not
make the Flow work harder.

    python bench/proxy_overhead.py [--quick]     # ~5 min full, ~2.5 min quick; writes bench/results/proxy_overhead.json
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from typing import Any

import common as c

GOAL_P50_US = 150.0
GOAL_P99_US = 1000.0
CAPACITY_CONCURRENCY = 32
LOAD_FRACTION = 0.5
HOLD_P50_MS = 10.0
CALIBRATION_STEP = 0.8
CALIBRATION_TRIES = 5


def load_args(target: c.Server, args: list[str], duration_s: float, warmup_s: float) -> list[str]:
    return [target.url, "--subprotocol", "bytes", *args, "--duration", f"{duration_s}s", "--warmup", f"{warmup_s}s"]


def digest(summary: dict[str, Any], run: c.ChildRun, relay_cpu: float, flow_cpu: float) -> dict[str, Any]:
    """The figures of one `flowrelay load` run; CPU per request over the requests it had answered."""
    req, warm = summary["requests"], summary["warmup"]["requests"]
    answered = req["ok"] + req["failed"] + warm["ok"] + warm["failed"]
    hops = summary.get("hops") or {}
    return {
        "summary_requests": req,
        "warmup_requests": warm,
        "answered_total": answered,
        "rate": summary["rate"],
        "latency_ms": summary["latency_ms"],
        "scheduler_lag_ms": summary["scheduler_lag_ms"],
        "hops_ms": hops,
        "errors": summary.get("errors"),
        "relay_cpu_s": relay_cpu,
        "flow_cpu_s": flow_cpu,
        "load_cpu_s": run.cpu_s,
        "wall_s": run.wall_s,
        "relay_cpu_us_per_req": 1e6 * relay_cpu / answered if answered else float("nan"),
        "flow_cpu_us_per_req": 1e6 * flow_cpu / answered if answered else float("nan"),
    }


def load_run(target: c.Server, relay: c.Server, flow: c.Server, args: list[str], duration_s: float,
             warmup_s: float) -> dict[str, Any]:
    """One `flowrelay load` run against `target`; the CPU of the relay and of the Flow over it."""
    relay_pids, flow_pids = relay.pids(), flow.pids()
    relay0, flow0 = c.proc_cpu_s(relay_pids), c.proc_cpu_s(flow_pids)
    summary, run = c.flowrelay_load(load_args(target, args, duration_s, warmup_s), timeout_s=duration_s + 90)
    return digest(summary, run, c.proc_cpu_s(relay_pids) - relay0, c.proc_cpu_s(flow_pids) - flow0)


def side_by_side(relay: c.Server, flow: c.Server, rate: float, duration_s: float,
                 warmup_s: float) -> dict[str, dict[str, Any]]:
    """Two open-model runs at the same time, each at half of `rate`: one straight to the Flow, one through
    the relay to it. Both streams meet the same Flow at the same moments (its stalls, the machine's other
    work), so their difference is the relay's, not that of two windows of time. The relay's CPU is per
    request of its own stream; the Flow's is per request of both."""
    relay_pids, flow_pids = relay.pids(), flow.pids()
    relay0, flow0 = c.proc_cpu_s(relay_pids), c.proc_cpu_s(flow_pids)
    half = ["--rate", f"{rate / 2:g}"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(c.flowrelay_load, load_args(target, half, duration_s, warmup_s),
                                     duration_s + 90)
                   for name, target in (("direct", flow), ("relay", relay))}
        done = {name: f.result() for name, f in futures.items()}
    relay_cpu, flow_cpu = c.proc_cpu_s(relay_pids) - relay0, c.proc_cpu_s(flow_pids) - flow0
    out = {name: digest(summary, run, relay_cpu if name == "relay" else 0.0, flow_cpu)
           for name, (summary, run) in done.items()}
    both = out["direct"]["answered_total"] + out["relay"]["answered_total"]
    for r in out.values():
        r["flow_cpu_us_per_req"] = 1e6 * flow_cpu / both if both else float("nan")
    return out


def clean(run: dict[str, Any]) -> str:
    """Empty when a run answered everything it sent, else what went wrong."""
    req = run["summary_requests"]
    bad = {k: req[k] for k in ("failed", "timeout", "dropped", "unanswered", "transport_failed") if req[k]}
    return ", ".join(f"{k} {v}" for k, v in bad.items())


def holds(run: dict[str, Any], rate: float) -> str:
    """Empty when an open-model run kept up with `rate` (sent it all, answered it all, no queue building up
    in the Flow: p50 under HOLD_P50_MS), else why not."""
    why = [clean(run)] if clean(run) else []
    sent = run["rate"]["achieved_rps"] / rate
    if sent < 0.995:
        why.append(f"sent {sent:.3f} of the rate")
    p50 = run["latency_ms"]["p50"]
    if p50 is None or p50 >= HOLD_P50_MS:
        why.append(f"p50 {p50} ms")
    return ", ".join(why)


def calibrate(targets: dict[str, c.Server], relay: c.Server, flow: c.Server, rate: float, duration_s: float,
              warmup_s: float) -> tuple[float, list[dict[str, Any]]]:
    """Half the closed-model capacity may be more than this machine sustains in an open model (evenly spaced
    requests coalesce nothing, and the relay and the load generator share the 2 cores with the Flow): step
    the rate down by CALIBRATION_STEP until a short run holds both direct and through the relay."""
    steps: list[dict[str, Any]] = []
    for _ in range(CALIBRATION_TRIES):
        verdicts = {}
        for name in ("direct", "relay"):
            r = load_run(targets[name], relay, flow, ["--rate", str(rate)], duration_s, warmup_s)
            verdicts[name] = holds(r, rate)
            steps.append({"rate": rate, "target": name, "why_not": verdicts[name], "latency_ms": r["latency_ms"],
                          "achieved_rps": r["rate"]["achieved_rps"]})
        if not any(verdicts.values()):
            print(f"  calibration: {rate:,.0f}/s holds direct and through the relay", flush=True)
            return rate, steps
        why = "; ".join(f"{k}: {v}" for k, v in verdicts.items() if v)
        nxt = max(10.0, round(rate * CALIBRATION_STEP, -1))
        print(f"  calibration: {rate:,.0f}/s does not hold ({why}) -> {nxt:,.0f}/s", flush=True)
        rate = nxt
    print(f"  calibration: giving up stepping down, measuring at {rate:,.0f}/s", flush=True)
    return rate, steps


def verdict(median_us: float, paired_us: list[float], noise_us: float, goal_us: float) -> str:
    """`ok`, `MISSED`, or `INCONCLUSIVE` when the direct runs alone vary by more than the goal across the
    repetitions (then a difference of that size cannot be told from noise), unless every repetition is past
    the goal."""
    if median_us != median_us:
        return "INCONCLUSIVE (no data)"
    quiet = noise_us < goal_us
    if median_us < goal_us and quiet:
        return "ok"
    if median_us >= goal_us and (quiet or min(paired_us) >= goal_us):
        return "MISSED"
    return f"INCONCLUSIVE (the direct runs alone vary by {noise_us / 1e3:.1f} ms)"


def hop_diff(run: dict[str, Any], q: str) -> float:
    hops = run["hops_ms"]
    try:
        return (hops["gateway"][q] - hops["upstream"][q]) * 1e3
    except (KeyError, TypeError):
        return float("nan")


def pair_up(runs: list[dict[str, Any]], reps: int) -> list[dict[str, Any]]:
    """Per repetition: what the relay run adds over the direct run of the same repetition (and, where there
    is a bare-forwarder run, what that adds over direct, and the relay over it)."""
    pairs = []
    for rep in range(reps):
        by = {r["target"]: r for r in runs if r["rep"] == rep}
        d, rl = by["direct"], by["relay"]

        def added(a: dict[str, Any], b: dict[str, Any], q: str) -> float:
            return (a["latency_ms"][q] - b["latency_ms"][q]) * 1e3

        pair = {
            "rep": rep,
            "added_p50_us": added(rl, d, "p50"),
            "added_p99_us": added(rl, d, "p99"),
            "hop_p50_us": hop_diff(rl, "p50"),
            "hop_p99_us": hop_diff(rl, "p99"),
        }
        bare = by.get("bare")
        if bare is not None:
            pair.update({
                "bare_added_p50_us": added(bare, d, "p50"),
                "bare_added_p99_us": added(bare, d, "p99"),
                "relay_over_bare_p50_us": added(rl, bare, "p50"),
                "relay_over_bare_p99_us": added(rl, bare, "p99"),
            })
        pairs.append(pair)
    return pairs


def spread_us(runs: list[dict[str, Any]], q: str) -> float:
    """How much the direct runs' own percentile `q` varies across the repetitions (the noise floor)."""
    values = [r["latency_ms"][q] for r in runs if r["target"] == "direct"]
    return 1e3 * (max(values) - min(values))


def main() -> int:
    p = c.base_args(__doc__ or "")
    p.add_argument("--rate", type=float, help="skip the capacity run and send at this rate (requests/s)")
    args = p.parse_args()
    c.install_sigterm_as_interrupt()
    cap_s, cap_warm = (4.0, 1.0) if args.quick else (8.0, 2.0)
    run_s, run_warm = (8.0, 2.0) if args.quick else (20.0, 3.0)
    cal_s, cal_warm = (4.0, 1.0) if args.quick else (6.0, 1.0)
    load_before = c.header(f"proxy_overhead: a real Jina Flow, direct vs through `flowrelay serve --upstream`, bytes, "
                           f"1 connection, {args.reps} reps{' (quick)' if args.quick else ''}", args.wait_quiet)
    started = time.monotonic()
    noise = c.Noise()
    runs: list[dict[str, Any]] = []
    sbs_runs: list[dict[str, Any]] = []
    capacity: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        flow = stack.enter_context(c.jina_flow())
        relay = stack.enter_context(c.relay_server(extra=["--upstream", flow.url]))
        bare = stack.enter_context(c.bare_forwarder(flow.url))
        targets = {"direct": flow, "relay": relay, "bare": bare}
        print(f"servers: jina {flow.url} (pids {','.join(map(str, flow.pids()))}), relay {relay.url} "
              f"(pid {relay.pids()[0]}), bare forwarder {bare.url}", flush=True)
        if args.rate:
            rate = args.rate
            capacity = {"given_rate": rate}
        else:
            cap = load_run(flow, relay, flow, ["--concurrency", str(CAPACITY_CONCURRENCY)], cap_s, cap_warm)
            capacity = {"closed_concurrency": CAPACITY_CONCURRENCY, "ok_rps": cap["rate"]["ok_rps"],
                        "latency_ms": cap["latency_ms"], "requests": cap["summary_requests"]}
            rate = max(10.0, round(cap["rate"]["ok_rps"] * LOAD_FRACTION, -1))
            print(f"  Flow capacity (closed, {CAPACITY_CONCURRENCY} in flight): {cap['rate']['ok_rps']:,.0f} ok/s, "
                  f"p50 {cap['latency_ms']['p50']} ms -> open-model rate {rate:,.0f}/s", flush=True)
            # The same closed run through the relay: the capacity it leaves, and its CPU per request when
            # requests come pipelined (reads, writes and wake-ups shared by many of them).
            capr = load_run(relay, relay, flow, ["--concurrency", str(CAPACITY_CONCURRENCY)], cap_s, cap_warm)
            capacity["through_relay"] = {"ok_rps": capr["rate"]["ok_rps"], "latency_ms": capr["latency_ms"],
                                         "requests": capr["summary_requests"],
                                         "relay_cpu_us_per_req": capr["relay_cpu_us_per_req"]}
            print(f"  through the relay (closed, {CAPACITY_CONCURRENCY} in flight): "
                  f"{capr['rate']['ok_rps']:,.0f} ok/s, p50 {capr['latency_ms']['p50']} ms, "
                  f"relay CPU {capr['relay_cpu_us_per_req']:.0f} us/req", flush=True)
            rate, steps = calibrate(targets, relay, flow, rate, cal_s, cal_warm)
            capacity["calibration"] = steps
            capacity["rate_used"] = rate
            capacity["rate_used_over_capacity"] = rate / cap["rate"]["ok_rps"]
        for rep in range(args.reps):
            names = ("direct", "relay", "bare")
            order = names[rep % 3:] + names[:rep % 3]
            for name in order:
                r = load_run(targets[name], relay, flow, ["--rate", str(rate)], run_s, run_warm)
                r.update(rep=rep, target=name, problems=clean(r))
                runs.append(r)
                lat = r["latency_ms"]
                extra = (f"  relay {r['relay_cpu_us_per_req']:.0f} us/req, gateway-upstream p50 "
                         f"{hop_diff(r, 'p50'):.0f} us" if name == "relay" else "")
                print(f"  rep {rep + 1} {name:6} {r['rate']['ok_rps']:7,.0f} ok/s  p50 {lat['p50']:7.3f} ms  "
                      f"p99 {lat['p99']:7.3f} ms{extra}{'  PROBLEMS: ' + r['problems'] if r['problems'] else ''}",
                      flush=True)
        for rep in range(args.reps):
            both = side_by_side(relay, flow, rate, run_s, run_warm)
            for name, r in both.items():
                r.update(rep=rep, target=name, problems=clean(r))
                sbs_runs.append(r)
                lat = r["latency_ms"]
                extra = (f"  relay {r['relay_cpu_us_per_req']:.0f} us/req, gateway-upstream p50 "
                         f"{hop_diff(r, 'p50'):.0f} us" if name == "relay" else "")
                print(f"  side by side {rep + 1} {name:6} {r['rate']['ok_rps']:7,.0f} ok/s  p50 {lat['p50']:7.3f} ms  "
                      f"p99 {lat['p99']:7.3f} ms{extra}{'  PROBLEMS: ' + r['problems'] if r['problems'] else ''}",
                      flush=True)
    load_after = c.load_average()
    noise_r = noise.report()

    def pick(target: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["target"] == target]

    pairs = pair_up(runs, args.reps)
    sbs_pairs = pair_up(sbs_runs, args.reps)
    add50 = [x["added_p50_us"] for x in pairs]
    add99 = [x["added_p99_us"] for x in pairs]
    hop50 = [x["hop_p50_us"] for x in pairs]
    hop99 = [x["hop_p99_us"] for x in pairs]
    relay_cpu = [r["relay_cpu_us_per_req"] for r in pick("relay")]
    relay_idle = [r["relay_cpu_us_per_req"] for r in pick("direct")]
    medians = {
        "rate_rps": rate,
        "direct": {k: c.median([r["latency_ms"][k] for r in pick("direct")]) for k in ("p50", "p99")},
        "relay": {k: c.median([r["latency_ms"][k] for r in pick("relay")]) for k in ("p50", "p99")},
        "bare": {k: c.median([r["latency_ms"][k] for r in pick("bare")]) for k in ("p50", "p99")},
        "added_p50_us": c.median(add50),
        "added_p99_us": c.median(add99),
        **{k: c.median([x[k] for x in pairs]) for k in ("bare_added_p50_us", "bare_added_p99_us",
                                                          "relay_over_bare_p50_us", "relay_over_bare_p99_us")},
        "hop_p50_us": c.median(hop50),
        "hop_p99_us": c.median(hop99),
        "relay_cpu_us_per_req": c.median(relay_cpu),
        "relay_cpu_us_per_req_while_idle": c.median(relay_idle),
        "flow_cpu_us_per_req_direct": c.median([r["flow_cpu_us_per_req"] for r in pick("direct")]),
        "flow_cpu_us_per_req_via_relay": c.median([r["flow_cpu_us_per_req"] for r in pick("relay")]),
    }

    rows = []
    for name in ("direct", "relay", "bare"):
        rs = pick(name)
        rows.append([name, c.median([r["rate"]["ok_rps"] for r in rs]),
                     c.median([r["latency_ms"]["p50"] for r in rs]), c.spread([r["latency_ms"]["p50"] for r in rs]),
                     c.median([r["latency_ms"]["p99"] for r in rs]), c.spread([r["latency_ms"]["p99"] for r in rs]),
                     c.median([r["flow_cpu_us_per_req"] for r in rs]),
                     c.median([r["relay_cpu_us_per_req"] for r in rs])])
    print()
    print(c.table(["target", "ok/s", "p50 ms", "(min-max)", "p99 ms", "(min-max)", "Flow CPU us/req",
                   "relay CPU us/req"], rows))
    print()
    print(c.table(["relay adds", "p50 us", "(min-max)", "p99 us", "(min-max)"], [
        ["end to end (relay - direct, paired per rep)", medians["added_p50_us"], c.spread(add50),
         medians["added_p99_us"], c.spread(add99)],
        ["hops (relay gateway span - upstream span)", medians["hop_p50_us"], c.spread(hop50),
         medians["hop_p99_us"], c.spread(hop99)],
        *[[label, medians[f"{key}_p50_us"], c.spread([x[f"{key}_p50_us"] for x in pairs]),
           medians[f"{key}_p99_us"], c.spread([x[f"{key}_p99_us"] for x in pairs])]
          for label, key in (("a bare forwarder adds (bare - direct): the floor", "bare_added"),
                             ("the relay beyond a bare forwarder (relay - bare)", "relay_over_bare"))],
    ]))
    sbs50 = [x["added_p50_us"] for x in sbs_pairs]
    sbs99 = [x["added_p99_us"] for x in sbs_pairs]
    sbs_noise = {q: spread_us(sbs_runs, q) for q in ("p50", "p99")}
    sbs_relay = [r for r in sbs_runs if r["target"] == "relay"]
    sbs_direct = [r for r in sbs_runs if r["target"] == "direct"]
    medians["side_by_side"] = {
        "rate_rps_each": rate / 2,
        "direct": {k: c.median([r["latency_ms"][k] for r in sbs_direct]) for k in ("p50", "p99")},
        "relay": {k: c.median([r["latency_ms"][k] for r in sbs_relay]) for k in ("p50", "p99")},
        "added_p50_us": c.median(sbs50),
        "added_p99_us": c.median(sbs99),
        "hop_p50_us": c.median([x["hop_p50_us"] for x in sbs_pairs]),
        "relay_cpu_us_per_req": c.median([r["relay_cpu_us_per_req"] for r in sbs_relay]),
        "direct_spread_us": sbs_noise,
    }
    sbs = medians["side_by_side"]
    print(c.table(["relay adds, side by side", "p50 us", "(min-max)", "p99 us", "(min-max)"], [
        [f"both streams at once, {rate / 2:,.0f}/s each (relay - direct, per rep)", sbs["added_p50_us"],
         c.spread(sbs50), sbs["added_p99_us"], c.spread(sbs99)],
    ]))
    pipelined = capacity.get("through_relay", {}).get("relay_cpu_us_per_req")
    medians["relay_cpu_us_per_req_pipelined"] = pipelined
    print(f"\nrelay CPU per request: {medians['relay_cpu_us_per_req']:.0f} us at {rate:,.0f}/s (min-max "
          f"{c.spread(relay_cpu)}); while idle during the direct runs: "
          f"{medians['relay_cpu_us_per_req_while_idle']:.1f} us per direct request"
          + (f"; pipelined ({CAPACITY_CONCURRENCY} in flight): {pipelined:.0f} us" if pipelined else ""))
    problems = [f"rep {r['rep'] + 1} {r['target']}: {r['problems']}" for r in runs if r["problems"]]
    problems += [f"side by side {r['rep'] + 1} {r['target']}: {r['problems']}" for r in sbs_runs if r["problems"]]
    if problems:
        print("PROBLEMS: " + "; ".join(problems))
    print(f"load average after: {c.fmt_load(load_after)}  (before: {c.fmt_load(load_before)}); "
          f"{time.monotonic() - started:.0f} s")
    print(c.noise_line(noise_r))
    m50, m99 = medians["added_p50_us"], medians["added_p99_us"]
    direct = pick("direct")
    noise = {q: 1e3 * (max(r["latency_ms"][q] for r in direct) - min(r["latency_ms"][q] for r in direct))
             for q in ("p50", "p99")}
    medians["direct_spread_us"] = noise
    met = {"p50": verdict(m50, add50, noise["p50"], GOAL_P50_US), "p99": verdict(m99, add99, noise["p99"], GOAL_P99_US),
           "side_by_side_p50": verdict(sbs["added_p50_us"], sbs50, sbs_noise["p50"], GOAL_P50_US),
           "side_by_side_p99": verdict(sbs["added_p99_us"], sbs99, sbs_noise["p99"], GOAL_P99_US)}
    print(f"noise: the direct runs' own p50 spans {noise['p50']:.0f} us and their p99 {noise['p99']:.0f} us across the "
          f"repetitions")
    print(f"ratios: added p50 {m50:.0f} us = {m50 / GOAL_P50_US:.2f} of goal (< {GOAL_P50_US:.0f} us {met['p50']}); "
          f"added p99 {m99:.0f} us = {m99 / GOAL_P99_US:.2f} of goal (< {GOAL_P99_US:.0f} us {met['p99']}); hops p50 "
          f"{medians['hop_p50_us']:.0f} us, p99 {medians['hop_p99_us']:.0f} us; relay CPU "
          f"{medians['relay_cpu_us_per_req']:.0f} us/req")
    print(f"floor: a bare forwarder in the relay's place adds p50 {medians['bare_added_p50_us']:.0f} us, p99 "
          f"{medians['bare_added_p99_us']:.0f} us; the relay adds p50 {medians['relay_over_bare_p50_us']:.0f} us, "
          f"p99 {medians['relay_over_bare_p99_us']:.0f} us beyond it")
    print(f"side by side: added p50 {sbs['added_p50_us']:.0f} us ({met['side_by_side_p50']}), added p99 "
          f"{sbs['added_p99_us']:.0f} us ({met['side_by_side_p99']}); hops p50 {sbs['hop_p50_us']:.0f} us; relay CPU "
          f"{sbs['relay_cpu_us_per_req']:.0f} us/req at {rate / 2:,.0f}/s")
    path = c.write_results("proxy_overhead", {
        "benchmark": "proxy_overhead",
        "command": "python bench/proxy_overhead.py" + (" --quick" if args.quick else "")
        + (f" --rate {args.rate:g}" if args.rate else ""),
        "machine": c.machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes": noise_r,
        "setup": {"flow": "jina 3.34 gateway -> upper (websocket)", "relay": "flowrelay serve --upstream (bytes, "
                  "2 links)", "subprotocol": "bytes", "connections": 1, "docs_per_request": 1,
                  "duration_s": run_s, "warmup_s": run_warm, "reps": args.reps},
        "capacity": capacity,
        "medians": medians,
        "pairs": pairs,
        "side_by_side_pairs": sbs_pairs,
        "side_by_side_runs": sbs_runs,
        "goals": {"added_p50_us": GOAL_P50_US, "added_p99_us": GOAL_P99_US, "met": met},
        "problems": problems,
        "runs": runs,
    })
    print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
