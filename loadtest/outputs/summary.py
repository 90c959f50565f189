"""The end of a run: the summary (summary.json) and the table a person reads. (The per-second time series,
`timeseries.jsonl`, is written as the run goes: loadtest.outputs.timeseries.)

`summary.json` carries at least: `target`, `transport` (`websocket`, `grpc` or `http`, from the
target's scheme), `subprotocol` {`offered`, `negotiated`}, `duration_s`,
`requests` {`sent`, `ok`, `failed`, `timeout`, `dropped`, `unanswered`, `transport_failed`}, `rate`
{`target_rps`, `achieved_rps` (sent per second of the measured window), `ok_rps`}, `docs` {`sent`,
`received`}, `latency_ms` (from the intended send time) and `service_time_ms` (from the actual
send), each {`p50`, `p90`, `p99`, `p999`, `p9999`, `max`, `mean`, `count`}, `hops` {name: same keys},
`errors` {reason: count}, `error_rate`, `stages` [[duration_s, target_rps], ...] (null without),
`thresholds` [{`expr`, `ok`, `value`}], and
`latency_distribution` {`latency_ms`, `service_time_ms`}: each the full histogram as HdrHistogram's
percentile-distribution points [[percentile (0..100), ms], ...], thickening toward the tail and ending at
[100, max] (empty when nothing was answered), for the report's percentile plot; and `accounting`, the exact
request counts by ending and reason (loadtest.measure.accounting's plain form), from which `flowrelay report
--merge` adds runs up. Beside summary.json, `write_results` writes totals.hlog (the run's histograms,
loadtest.outputs.hlog).

A replay (`model` `replay`) adds `replay` {`source`, `recorded_requests`, `recorded_connections`, `speed`,
`rate`, `loop`} and, when the recording has answers, `replay_diff` (loadtest.measure.replay_diff).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from loadtest.config import LoadConfig
from loadtest.measure.histograms import LatencyHistogram
from loadtest.measure.recorder import Recorder
from loadtest.measure.replay_diff import format_diff
from loadtest.outputs.hlog import TOTALS_FILE, write_totals
from loadtest.result import RunResult

SUMMARY_FILE = "summary.json"
REQUESTS_FILE = "requests.msgpack"


def build_summary(result: RunResult) -> dict[str, Any]:
    """The run's figures in the documented shape (thresholds are added by the caller)."""
    cfg = result.cfg
    summary = {
        **run_fields(cfg, result.started_wall),
        "subprotocol": _subprotocol(cfg, result.negotiated),
        "duration_s": round(result.elapsed_s, 3),
        **figures(result.recorder, result.measured_duration_s(), cfg.target_rps(), result.dropped_by_reason),
        "docs": {"sent": result.docs_sent, "received": result.docs_received},
        "reconnects": result.reconnects,
        "late_answers": result.late_answers,
        "thresholds": [],
    }
    diff = result.replay_diff
    if diff is not None and (diff.compared or diff.no_recorded_answer):
        summary["replay_diff"] = diff.summary()
    return summary


def figures(recorder: Recorder, measured_s: float, target_rps: float | None,
            dropped_by_reason: Mapping[str, int]) -> dict[str, Any]:
    """The summary's keys that come from the measurements alone (runs merged from their results folders get them
    the same way: loadtest.outputs.merge)."""
    base = recorder.summary(measured_s, target_rps)
    requests = base["requests"]
    requests["dropped_by_reason"] = dict(dropped_by_reason)
    rate = base["rate"]
    return {
        "measured_duration_s": round(measured_s, 3),
        "requests": requests,
        "rate": {
            "target_rps": rate["target_rps"],
            "achieved_rps": rate["sent_rps"],
            "ok_rps": rate["achieved_rps"],
        },
        "latency_ms": base["latency_ms"],
        "service_time_ms": base["service_time_ms"],
        "scheduler_lag_ms": base["scheduler_lag_ms"],
        "hops": _route_order(base["hops_ms"], list(recorder.hops)),
        "errors": base["errors"]["by_reason"],
        "error_rate": base["errors"]["rate"],
        "warmup": base["warmup"],
        "latency_distribution": {
            "latency_ms": _distribution(recorder.latency),
            "service_time_ms": _distribution(recorder.service_time),
        },
        "accounting": recorder.accounting.to_plain(),
    }


def _subprotocol(cfg: Any, negotiated: str | None) -> dict[str, Any]:
    if cfg.replay is not None and cfg.replay.subprotocol is None:
        # Each session spoke what its recorded connection spoke.
        return {"offered": "as recorded", "negotiated": negotiated, "codec": "as recorded"}
    return {"offered": cfg.offer, "negotiated": negotiated, "codec": cfg.mode}


def run_fields(cfg: LoadConfig, started_wall: float) -> dict[str, Any]:
    """What the run was asked to do, under summary.json's keys (also what a live page shows before the end)."""
    fields = {
        "target": cfg.target,
        "transport": cfg.transport,
        "subprotocol": {"offered": _subprotocol(cfg, None)["offered"]},
        "model": "replay" if cfg.replay is not None else "closed" if cfg.concurrency else "open",
        "arrival": None if cfg.concurrency else cfg.arrival,
        "concurrency": cfg.concurrency,
        "connections": cfg.connections,
        "max_inflight": cfg.max_inflight,
        "procs": cfg.procs,
        "endpoint": cfg.endpoint,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
        "warmup_s": cfg.warmup_s,
        "stages": [list(stage) for stage in cfg.stages] if cfg.stages else None,
        # An http:// run that sent GraphQL (--graphql): the query, as sent.
        "graphql": cfg.graphql,
    }
    replay = cfg.replay
    if replay is not None:
        fields["replay"] = {
            "source": str(replay.source),
            "recorded_requests": replay.requests,
            "recorded_connections": replay.connections,
            "speed": replay.speed,
            "rate": replay.rate,
            "loop": replay.loop,
            "subprotocol": replay.subprotocol or "as recorded",
        }
    return fields


def _distribution(histogram: LatencyHistogram) -> list[list[float]]:
    return [[round(p, 6), ms] for p, ms in histogram.percentile_distribution()]


def _route_order(hops: dict[str, Any], first_seen: list[str]) -> dict[str, Any]:
    """Hops as a request meets them: the gateway, the Executors in the order first seen, then the time
    outside the gateway."""
    order = [n for n in first_seen if n not in ("gateway", "outside_gateway")]
    names = [n for n in ("gateway", *order, "outside_gateway") if n in hops]
    names += [n for n in hops if n not in names]
    return {n: hops[n] for n in names}


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")


def write_results(out_dir: Path, summary: dict[str, Any], result: RunResult, start_wall: float | None) -> None:
    """The end of a results folder: summary.json and totals.hlog. `start_wall`: the wall-clock time of the run's
    second 0, as its latency.hlog has it (None: when the run began)."""
    write_summary(out_dir, summary)
    write_totals(out_dir / TOTALS_FILE, start_wall or result.started_wall, result.elapsed_s, result.recorder)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:.1f}"
    return str(v)


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a person reads it at the end of a run."""
    lines = []
    sp = summary["subprotocol"]
    req = summary["requests"]
    rate = summary["rate"]
    transport = summary.get("transport", "websocket")
    if transport == "websocket":
        lines.append(f"target      {summary['target']}  (offered {sp['offered'] or 'none'}, "
                     f"server echoed {sp['negotiated'] or 'nothing'}, codec {sp['codec']})")
    elif summary.get("graphql"):
        lines.append(f"target      {summary['target']}  (GraphQL over {transport})")
    else:
        lines.append(f"target      {summary['target']}  ({transport}, codec {sp['codec']})")
    if summary["model"] == "replay":
        rp = summary["replay"]
        timing = f"re-timed at {rp['rate']:g}/s" if rp["rate"] else f"speed {rp['speed']:g}"
        model = (f"replay of {rp['source']} ({rp['recorded_requests']} requests), {timing}"
                 f"{', looped' if rp['loop'] else ''}")
    elif summary["model"] == "closed":
        model = f"closed, {summary['concurrency']} in flight"
    else:
        model = f"open, {summary['arrival']} arrivals"
    lines.append(f"model       {model}; {summary['connections']} connection(s), {summary['procs']} process(es)")
    lines.append(f"duration    {summary['duration_s']:.2f} s (measured {summary['measured_duration_s']:.2f} s, "
                 f"warm-up {summary['warmup_s']:g} s)")
    lines.append(
        f"requests    sent {req['sent']}  ok {req['ok']}  failed {req['failed']}  transport {req['transport_failed']}"
        f"  timeout {req['timeout']}  unanswered {req['unanswered']}  | dropped {req['dropped']}"
    )
    target = rate["target_rps"]
    lines.append(f"rate        target {_fmt(target)}/s  achieved {_fmt(rate['achieved_rps'])}/s  "
                 f"ok {_fmt(rate['ok_rps'])}/s")
    lines.append(f"docs        sent {summary['docs']['sent']}  received {summary['docs']['received']}")
    header = f"{'':22s}{'p50':>9s}{'p90':>9s}{'p99':>9s}{'p99.9':>9s}{'max':>9s}{'mean':>9s}  (ms)"
    lines.append("")
    lines.append(header)

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"{name:22s}" + "".join(f"{_fmt(s.get(k)):>9s}" for k in ("p50", "p90", "p99", "p999", "max", "mean")))

    lines.append(row("latency (from due)", summary["latency_ms"]))
    lines.append(row("service time (sent)", summary["service_time_ms"]))
    lines.append(row("scheduler lag", summary["scheduler_lag_ms"]))
    for name, s in summary["hops"].items():
        lines.append(row(f"  hop {name}", s))
    if summary["errors"]:
        lines.append("")
        lines.append("errors")
        for reason, count in summary["errors"].items():
            lines.append(f"  {count:8d}  {reason}")
    if summary["thresholds"]:
        lines.append("")
        lines.append("thresholds")
        for t in summary["thresholds"]:
            mark = "ok  " if t["ok"] else "FAIL"
            lines.append(f"  {mark}  {t['expr']}  (value {_fmt(t.get('value'))})")
    return "\n".join(lines)


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The summary on stdout at the end of a run: summary.json's text (`--json`), or the table and a replay's
    diff."""
    if as_json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    print(format_table(summary))
    if "replay_diff" in summary:
        print()
        print(format_diff(summary["replay_diff"]))
