"""The chart specs of a load run's page (live dashboard and report) and of the comparison of two runs.

A spec is plain data that the page's script (relay/common/web/charts.js) draws with uPlot:

- ``time`` charts read the per-second rows (live as they come, or a results folder's): each series names a row
  key, a map in the row (one series per key: error reasons, hops), or the target rate. These are the same on
  the live page and in the report, which is why a run's live page at its end and its report look the same.
- ``xy`` charts carry their points (the HdrHistogram percentile plot of the summary's distribution).
- ``bars`` carry categories and values (where the time goes per hop, errors by reason, comparisons).

The summary-driven specs exist once the run is over: in the report, and in the live page's final event.

Imports: the standard library and loadtest.outputs.report.data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loadtest.outputs.report.data import (
    GATEWAY,
    GATEWAY_OWN,
    OUTSIDE,
    OUTSIDE_LABEL,
    distribution_points,
    error_counts,
    hop_label,
    hop_parts,
    hops_of,
    num,
    percentile_axis,
)

# One palette for every chart, so a colour means the same thing throughout the page.
C_SENT = "#4c78a8"
C_OK = "#54a24b"
C_ERR = "#e45756"
C_DROP = "#f58518"
C_TARGET = "#8c959f"
C_P50 = "#4c78a8"
C_P90 = "#72b7b2"
C_P99 = "#f58518"
C_P999 = "#b279a2"
C_MAX = "#e45756"
C_SERVICE = "#9d755d"
C_LAG = "#b279a2"
C_INFLIGHT = "#4c78a8"
C_RUN = ("#4c78a8", "#f58518")  # run A, run B
C_HOPS = ("#4c78a8", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")
C_GATEWAY = "#bab0ac"
C_OUTSIDE = "#f58518"
C_REASONS = ("#e45756", "#b279a2", "#9d755d", "#ff9da6", "#eeca3b", "#72b7b2", "#4c78a8", "#bab0ac")

TIME = "time since start (s)"
REQ_PER_S = "requests per second (req/s)"
LATENCY_MS = "latency (ms)"
HOP_NAMES = {GATEWAY: "gateway (all)", OUTSIDE: OUTSIDE_LABEL}
HOP_COLORS = {GATEWAY: C_GATEWAY, OUTSIDE: C_OUTSIDE, GATEWAY_OWN: C_GATEWAY, OUTSIDE_LABEL: C_OUTSIDE}


def _time(chart_id: str, title: str, y: str, series: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": chart_id, "kind": "time", "title": title, "x": TIME, "y": y, "series": series, **extra}


def _line(label: str, key: str, color: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "key": key, "color": color, **extra}


# ---- over the rows: the live page and the report alike ------------------------------------------------


def time_charts() -> list[dict[str, Any]]:
    """The per-second charts, in page order."""
    return [
        _time("fig-throughput", "Throughput over time", REQ_PER_S, [
            _line("sent/s", "sent_rps", C_SENT),
            _line("ok/s", "ok_rps", C_OK),
            _line("errors/s", "errors", C_ERR, per_second=True),
            _line("dropped/s", "dropped", C_DROP, per_second=True, dash=True, if_any=True),
            {"label": "target/s", "target": True, "color": C_TARGET, "dash": True, "width": 1.5},
        ], warmup=True, section="throughput"),
        _time("fig-latency", "Latency percentiles over time (from the intended send time)", LATENCY_MS, [
            _line("p50", "p50_ms", C_P50),
            _line("p90", "p90_ms", C_P90),
            _line("p99", "p99_ms", C_P99),
            _line("p99.9", "p999_ms", C_P999, show=False),
            _line("max", "max_ms", C_MAX, width=1.5),
            _line("service time p50", "service_p50_ms", C_SERVICE, dash=True, width=1.5, show=False),
            _line("service time p99", "service_p99_ms", C_SERVICE, dash=True, width=1.5, show=False),
        ], warmup=True, toggle_log=True, height=360, section="latency",
           note="Click a name in the legend to show or hide that percentile."),
        _time("fig-hops-time", "Where the time goes, per hop (p50 of each second)", "time per request (ms)", [
            {"map": "hops", "field": "p50_ms", "palette": list(C_HOPS), "names": HOP_NAMES,
             "colors": {GATEWAY: C_GATEWAY, OUTSIDE: C_OUTSIDE}},
            {"map": "hops", "field": "p99_ms", "palette": list(C_HOPS), "names": HOP_NAMES, "prefix": "p99 ",
             "colors": {GATEWAY: C_GATEWAY, OUTSIDE: C_OUTSIDE}, "dash": True, "show": False},
        ], toggle_log=True, section="hops", empty="no route timestamps: the target names no hops"),
        _time("fig-inflight", "In flight and dropped", "requests", [
            _line("in flight", "inflight", C_INFLIGHT),
            _line("dropped/s", "dropped", C_DROP, per_second=True, dash=True),
        ], warmup=True, height=260, section="sender"),
        _time("fig-lag", "Scheduler lag (actual send minus intended send)", "lag (ms)", [
            _line("lag p99", "lag_p99_ms", C_LAG),
            _line("lag max", "lag_max_ms", C_MAX, width=1.5),
        ], warmup=True, toggle_log=True, height=260, section="sender"),
        _time("fig-errors-time", "Errors over time, by reason", "errors per second (1/s)", [
            {"map": "error_reasons", "per_second": True, "palette": list(C_REASONS)},
            _line("dropped (never sent)", "dropped", C_DROP, per_second=True, if_any=True),
        ], bars=True, stacked=True, warmup=True, height=300, section="errors",
           empty="no errors and no drops in this run"),
    ]


# ---- from the summary: once the run is over ----------------------------------------------------------


def distribution_chart(runs: Sequence[tuple[str, dict[str, Any]]], chart_id: str = "fig-distribution"
                       ) -> dict[str, Any]:
    """HdrHistogram's percentile plot: latency against percentile, the tail stretched out. One curve per
    run (``runs`` is [(name, summary)]); with a single run also the service time."""
    series = []
    coarse_any = False
    for i, (name, summary) in enumerate(runs):
        keys = [("latency_ms", "latency")]
        if len(runs) == 1:
            keys.append(("service_time_ms", "service time"))
        for key, what in keys:
            points, full = distribution_points(summary, key)
            coarse_any |= not full
            if not points:
                continue
            color = (C_P50 if key == "latency_ms" else C_SERVICE) if len(runs) == 1 else C_RUN[i % 2]
            series.append({"label": what if len(runs) == 1 else f"{name}: {what}", "color": color,
                           "points": percentile_axis(points), "step": full, "markers": not full,
                           "dash": key != "latency_ms"})
    title = "Latency by percentile (HdrHistogram)"
    if coarse_any:
        title += " - from the summary's percentiles only"
    return {"id": chart_id, "kind": "xy", "title": title, "x": "percentile (log scale of 1/(1−p))",
            "y": LATENCY_MS, "x_axis": "percentile", "series": series, "toggle_log": True, "height": 360,
            "empty": "no answers, so no distribution"}


def hops_chart(summary: dict[str, Any]) -> dict[str, Any] | None:
    """A stacked bar per statistic (p50, mean): which hop the time goes to. None when there are no hops."""
    hops = hops_of(summary)
    if not hops:
        return None
    stats = (("p50", "median (p50)"), ("mean", "mean"))
    by_stat = {stat: dict(hop_parts(hops, stat)) for stat, _ in stats}
    names: list[str] = []
    for stat, _ in stats:
        names += [n for n in by_stat[stat] if n not in names]
    series = [{"label": name, "color": HOP_COLORS.get(name, C_HOPS[i % len(C_HOPS)]),
               "values": [by_stat[stat].get(name) for stat, _ in stats]} for i, name in enumerate(names)]
    return {"id": "fig-hops", "kind": "bars", "title": "Where the time goes, per hop", "x": "time per request (ms)",
            "stacked": True, "unit": "ms", "categories": [label for _, label in stats], "series": series}


def errors_chart(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Requests by the reason they failed or were dropped; None when none did."""
    counts = error_counts(summary)
    if not counts:
        return None
    return {"id": "fig-errors-reason", "kind": "bars", "title": "Errors by reason (measured window)",
            "x": "requests (count)", "unit": "count", "stacked": True, "categories": [k for k, _ in counts],
            "series": [
                {"label": "failed", "color": C_ERR,
                 "values": [None if k.startswith("dropped: ") else v for k, v in counts]},
                {"label": "dropped (never sent)", "color": C_DROP,
                 "values": [v if k.startswith("dropped: ") else None for k, v in counts]},
            ]}


def final_charts(summary: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """The charts a run's summary adds to the page, in page order."""
    charts = [distribution_chart([(label, summary)]), hops_chart(summary), errors_chart(summary)]
    return [c for c in charts if c is not None]


# ---- the comparison of two runs -------------------------------------------------------------------------


def comparison_charts(summaries: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Charts of run B against run A; the time charts read row set 0 (A) and 1 (B)."""
    pct = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]
    charts: list[dict[str, Any]] = [
        {"id": "fig-cmp-percentiles", "kind": "bars", "title": "Latency percentiles", "x": LATENCY_MS,
         "unit": "ms", "categories": [label for _, label in pct],
         "series": [{"label": n, "color": C_RUN[i % 2], "values": [num(s["latency_ms"].get(k)) for k, _ in pct]}
                    for i, (n, s) in enumerate(zip(names, summaries, strict=True))]},
        distribution_chart(list(zip(names, summaries, strict=True)), "fig-cmp-distribution"),
        _time("fig-cmp-latency", "Latency over time: p50 (solid) and p99 (dashed)", LATENCY_MS, [
            series for i, name in enumerate(names) for series in (
                _line(f"{name}: p50", "p50_ms", C_RUN[i % 2], rows=i),
                _line(f"{name}: p99", "p99_ms", C_RUN[i % 2], rows=i, dash=True),
                _line(f"{name}: max", "max_ms", C_RUN[i % 2], rows=i, width=1, show=False))
        ], toggle_log=True, height=360),
    ]
    hop_names: list[str] = []
    for s in summaries:
        hop_names += [n for n in hops_of(s) if n not in hop_names]
    if hop_names:
        charts.append({"id": "fig-cmp-hops", "kind": "bars", "title": "Per hop, p50", "x": "time per request (ms)",
                       "unit": "ms", "categories": [hop_label(h) for h in hop_names],
                       "series": [{"label": n, "color": C_RUN[i % 2],
                                   "values": [num((hops_of(s).get(h) or {}).get("p50")) for h in hop_names]}
                                  for i, (n, s) in enumerate(zip(names, summaries, strict=True))]})
    charts.append(_time("fig-cmp-throughput", "Throughput over time: ok/s (solid) and errors/s (dashed)", REQ_PER_S, [
        series for i, name in enumerate(names) for series in (
            _line(f"{name}: ok/s", "ok_rps", C_RUN[i % 2], rows=i),
            _line(f"{name}: errors/s", "errors", C_RUN[i % 2], rows=i, per_second=True, dash=True))
    ]))
    return charts
