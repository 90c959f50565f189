"""The HTML report of a results folder, and the comparison of two: `flowrelay report`.

A run's results folder (`summary.json` and `timeseries.jsonl`, see `loadtest.outputs.summary`) becomes one
self-contained HTML file that opens with no network, the way k6's web dashboard and Gatling's report
show a run: the summary table, thresholds with pass/fail, throughput and latency percentiles over time,
the HdrHistogram percentile distribution, where the time goes per hop (gateway, each Executor, outside
the gateway), and errors over time and by reason. Two folders become a comparison: figures side by side
with their ratio B/A, and latency-over-time and percentile-distribution overlays.

Charts are plotly figures; plotly.js is inlined once in the page's head (about 4.8 MB, the whole page
stays near 5 MB) and every chart is a small JSON spec drawn by it.

This module reads result files only: it knows nothing of sessions, schedules or the engine, and imports
the standard library, orjson and plotly (plotly lazily, so the `flowrelay` command starts fast).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from loadtest.outputs.timeseries import TIMESERIES_FILE

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

# The name loadtest.outputs.summary writes (not imported from there: that module reads the engine's results).
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
COMPARISON_FILE = "comparison.html"


# Keys summary.json must have, and the type each must be, for a report to make sense.
_REQUIRED: dict[str, type] = {
    "target": str,
    "requests": dict,
    "rate": dict,
    "latency_ms": dict,
    "service_time_ms": dict,
}
_PERCENTILE_KEYS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("p9999", "p99.99"))
_GATEWAY = "gateway"
_OUTSIDE = "outside_gateway"

# One palette for every chart, so a colour means the same thing throughout the page.
C_SENT = "#4c78a8"
C_OK = "#54a24b"
C_ERR = "#e45756"
C_DROP = "#f58518"
C_P50 = "#4c78a8"
C_P90 = "#72b7b2"
C_P99 = "#f58518"
C_MAX = "#e45756"
C_SERVICE = "#9d755d"
C_RUN = ("#4c78a8", "#f58518")  # run A, run B
C_HOPS = ("#4c78a8", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")
C_GATEWAY_OWN = "#bab0ac"
C_OUTSIDE = "#f58518"
C_REASONS = ("#e45756", "#b279a2", "#9d755d", "#ff9da6", "#eeca3b", "#bab0ac", "#72b7b2", "#4c78a8")

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
PLOTLY_CONFIG: dict[str, Any] = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


class ResultsError(ValueError):
    """A results folder that is missing, incomplete or malformed; the message says which and why."""


# ---- reading a results folder ------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """One run's results folder, read and checked."""

    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return self.path.resolve().name or str(self.path)


def load_results(results_dir: Path) -> Results:
    """Read `summary.json` and `timeseries.jsonl` from ``results_dir``; raises ResultsError when either is
    missing or malformed."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir}: no such folder (write one with `flowrelay load ... --out {results_dir}`)")
    summary_path = results_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise ResultsError(
            f"{results_dir}: no {SUMMARY_FILE}, so not a results folder "
            f"(write one with `flowrelay load ... --out {results_dir}`)"
        )
    try:
        summary = orjson.loads(summary_path.read_bytes())
    except OSError as exc:
        raise ResultsError(f"{summary_path}: cannot read: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ResultsError(f"{summary_path}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise ResultsError(f"{summary_path}: expected a JSON object, found {type(summary).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(summary.get(key), kind):
            found = "missing" if key not in summary else f"a {type(summary[key]).__name__}"
            raise ResultsError(f"{summary_path}: '{key}' should be {_json_kind(kind)}, is {found}")
    for key in ("hops", "errors"):
        if not isinstance(summary.get(key, {}), dict):
            raise ResultsError(f"{summary_path}: '{key}' should be an object")
    thresholds = summary.get("thresholds", [])
    if not isinstance(thresholds, list) or not all(isinstance(t, dict) for t in thresholds):
        raise ResultsError(f"{summary_path}: 'thresholds' should be a list of objects")

    series_path = results_dir / TIMESERIES_FILE
    if not series_path.is_file():
        raise ResultsError(f"{results_dir}: no {TIMESERIES_FILE} beside {SUMMARY_FILE}")
    try:
        rows = _read_series(series_path)
    except OSError as exc:
        raise ResultsError(f"{series_path}: cannot read: {exc}") from None
    return Results(results_dir, summary, rows)


def _read_series(series_path: Path) -> list[dict[str, Any]]:
    """The rows of a timeseries.jsonl, read a line at a time (a soak's file can be long); raises
    ResultsError on a malformed line."""
    rows: list[dict[str, Any]] = []
    with series_path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ResultsError(f"{series_path}, line {number}: not valid JSON ({exc})") from None
            if not isinstance(row, dict) or not _is_number(row.get("t")):
                raise ResultsError(f"{series_path}, line {number}: expected an object with a numeric 't'")
            if not isinstance(row.get("error_reasons", {}), dict):
                raise ResultsError(f"{series_path}, line {number}: 'error_reasons' should be an object")
            rows.append(row)
    return rows


def _json_kind(kind: type) -> str:
    return {str: "a string", dict: "an object", list: "a list"}.get(kind, kind.__name__)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


# ---- formatting --------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt_ms(value: object) -> str:
    v = _num(value)
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _fmt_count(value: object) -> str:
    v = _num(value)
    return "–" if v is None else f"{v:,.0f}"


def _fmt_rate(value: object) -> str:
    v = _num(value)
    return "–" if v is None else f"{v:,.1f}"


def _fmt_fraction(value: object) -> str:
    v = _num(value)
    if v is None:
        return "–"
    if v == 0:
        return "0 %"
    return f"{v * 100:.3g} %"


def _fmt_value(value: object) -> str:
    v = _num(value)
    if v is None:
        return "–" if value is None else _esc(value)
    return f"{v:g}" if abs(v) < 1e6 else f"{v:,.0f}"


def _percentile_label(p: float) -> str:
    return f"{p:.6f}".rstrip("0").rstrip(".") + "%"


# ---- figures -----------------------------------------------------------------------------------------


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _template() -> Any:
    """plotly's white theme, its layout part only: the per-trace defaults (colour scales of trace types this
    page never draws) would be repeated in every chart's JSON."""
    import plotly.io as pio

    return _go().layout.Template(layout=pio.templates["plotly_white"].layout)


def _layout(fig: Figure, title: str, x_title: str, y_title: str, height: int = 380, **extra: Any) -> Figure:
    margin = {"l": 64, "r": 24, "t": 64, "b": 56, **extra.pop("margin", {})}
    fig.update_layout(
        template=_template(),
        title={"text": f"<b>{_esc(title)}</b>", "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        font={"family": FONT, "size": 12, "color": "#222"},
        height=height,
        margin=margin,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0.0},
        uniformtext={"minsize": 10, "mode": "hide"},
        hoverlabel={"namelength": -1},
        **extra,
    )
    fig.update_xaxes(title_text=x_title, zeroline=False, showline=True, linecolor="#bbb", ticks="outside")
    fig.update_yaxes(title_text=y_title, rangemode="tozero", showline=True, linecolor="#bbb", ticks="outside")
    return fig


def _series(rows: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    return [_num(r.get(key)) for r in rows]


def _per_second(rows: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    """A count column of the time series as a rate per second of its interval."""
    out: list[float | None] = []
    for r in rows:
        count = _num(r.get(key))
        interval = _num(r.get("interval_s")) or 1.0
        out.append(None if count is None else round(count / interval, 3))
    return out


_COUNT_KEYS = ("sent", "answered", "ok", "errors", "dropped")


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The time series as charts show it: a short last interval (the drain after sending stops, often a few
    milliseconds) is folded into the interval before it, so a handful of late answers does not read as a
    spike of hundreds per second. Counts and the max add up; the earlier interval's percentiles stay."""
    out = [dict(r) for r in rows]
    if len(out) < 2:
        return out
    lengths = sorted(_num(r.get("interval_s")) or 0.0 for r in out)
    typical = lengths[len(lengths) // 2]
    last, before = out[-1], out[-2]
    if typical > 0 and (_num(last.get("interval_s")) or 0.0) < typical / 2:
        merged = dict(before)
        for key in _COUNT_KEYS:
            merged[key] = (_num(before.get(key)) or 0) + (_num(last.get(key)) or 0)
        reasons = dict(before.get("error_reasons") or {})
        for reason, count in (last.get("error_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
        merged["error_reasons"] = reasons
        merged["t"] = last["t"]
        merged["inflight"] = last.get("inflight")
        interval = (_num(before.get("interval_s")) or 0.0) + (_num(last.get("interval_s")) or 0.0)
        merged["interval_s"] = interval
        if interval > 0:
            merged["sent_rps"] = round(merged["sent"] / interval, 3)
            merged["ok_rps"] = round(merged["ok"] / interval, 3)
        maxes = [v for v in (_num(before.get("max_ms")), _num(last.get("max_ms"))) if v is not None]
        merged["max_ms"] = max(maxes) if maxes else None
        out[-2:] = [merged]
    return out


def _times(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [round(float(r["t"]), 3) for r in rows]


def _shade_warmup(fig: Figure, rows: Sequence[dict[str, Any]], warmup_s: float | None) -> None:
    """Grey out the warm-up: the summary's `warmup_s`, else the intervals flagged as warm-up."""
    if warmup_s is None:
        warm = [float(r["t"]) for r in rows if r.get("warmup")]
        warmup_s = max(warm) if warm else 0.0
    if warmup_s > 0:
        fig.add_vrect(
            x0=0,
            x1=warmup_s,
            fillcolor="#888",
            opacity=0.12,
            line_width=0,
            layer="below",
            annotation_text="warm-up",
            annotation_position="top left",
            annotation_font_size=11,
        )


def _line(x: Sequence[float], y: Sequence[float | None], name: str, color: str, **kw: Any) -> Any:
    line = {"color": color, "width": kw.pop("width", 2)}
    kw.setdefault("marker", {"size": 5})
    if "dash" in kw:
        line["dash"] = kw.pop("dash")
    return _go().Scatter(x=list(x), y=list(y), name=_esc(name), mode=kw.pop("mode", "lines"), line=line, **kw)


def fig_throughput(rows: Sequence[dict[str, Any]], target_rps: float | None = None,
                   warmup_s: float | None = None) -> Figure:
    go = _go()
    t = _times(rows)
    fig = go.Figure()
    mode = _mode(rows)
    series = [("sent/s", _series(rows, "sent_rps"), C_SENT, "solid"), ("ok/s", _series(rows, "ok_rps"), C_OK, "solid"),
              ("errors/s", _per_second(rows, "errors"), C_ERR, "solid")]
    if any(r.get("dropped") for r in rows):
        series.append(("dropped/s", _per_second(rows, "dropped"), C_DROP, "dot"))
    for name, y, color, dash in series:
        fig.add_trace(_line(t, y, name, color, dash=dash, mode=mode))
    top = max([v for _, y, _, _ in series for v in y if v is not None] + [target_rps or 0.0, 1.0])
    fig.update_yaxes(range=[0, top * 1.15])
    if target_rps:
        fig.add_hline(y=target_rps, line_dash="dash", line_color="#999", line_width=1,
                      annotation_text=f"target {target_rps:g}/s", annotation_position="bottom right",
                      annotation_font_size=11)
    _shade_warmup(fig, rows, warmup_s)
    return _layout(fig, "Throughput over time", "time since start (s)", "requests per second (req/s)",
                   hovermode="x unified")


def _mode(rows: Sequence[dict[str, Any]]) -> str:
    """Lines with a marker per interval for short runs, plain lines for long ones."""
    return "lines+markers" if len(rows) <= 60 else "lines"


def _log_toggle() -> list[dict[str, Any]]:
    """Buttons to switch a chart's y axis between linear and log."""
    return [{
        "type": "buttons",
        "direction": "left",
        "x": 0.0,
        "xanchor": "left",
        "y": -0.2,
        "yanchor": "top",
        "showactive": True,
        "pad": {"t": 0, "r": 4},
        "font": {"size": 11},
        "buttons": [
            {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
            {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
        ],
    }]


def fig_latency_over_time(rows: Sequence[dict[str, Any]], warmup_s: float | None = None) -> Figure:
    go = _go()
    t = _times(rows)
    fig = go.Figure()
    for key, name, color in (("p50_ms", "p50", C_P50), ("p90_ms", "p90", C_P90), ("p99_ms", "p99", C_P99),
                             ("max_ms", "max", C_MAX)):
        fig.add_trace(_line(t, _series(rows, key), name, color, width=1.5 if key == "max_ms" else 2,
                            mode=_mode(rows)))
    for key, name, dash in (("service_p50_ms", "service time p50", "dot"),
                            ("service_p99_ms", "service time p99", "dash")):
        fig.add_trace(_line(t, _series(rows, key), name, C_SERVICE, dash=dash, width=1.5, visible="legendonly"))
    _shade_warmup(fig, rows, warmup_s)
    return _layout(fig, "Latency percentiles over time (from the intended send time)", "time since start (s)",
                   "latency (ms)", height=400, hovermode="x unified", updatemenus=_log_toggle(), margin={"b": 80})


def _distribution_points(summary: dict[str, Any], key: str) -> tuple[list[list[float]], bool]:
    """``[[percentile, ms], ...]`` of a histogram: the full distribution when the results folder has it,
    else the summary's few percentiles (the flag says which)."""
    points = (summary.get("latency_distribution") or {}).get(key)
    if isinstance(points, list) and points:
        good = [[float(p[0]), float(p[1])] for p in points
                if isinstance(p, list | tuple) and len(p) == 2 and _is_number(p[0]) and _is_number(p[1])]
        if good:
            return good, True
    figures = summary.get(key) or {}
    coarse = [[p, float(figures[k])] for k, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9),
                                                   ("p9999", 99.99), ("max", 100.0)) if _is_number(figures.get(k))]
    return coarse, False


_PCT_TICKS = ((1.0, "0%"), (2.0, "50%"), (10.0, "90%"), (100.0, "99%"), (1e3, "99.9%"), (1e4, "99.99%"),
              (1e5, "99.999%"), (1e6, "99.9999%"), (1e7, "99.99999%"))


def _to_percentile_axis(points: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[str]]:
    """x = 1/(1-p) (so each 9 of a percentile takes the same width), y, and hover labels.

    The 100% point has no finite x: the max is drawn as a last step at the last finite x."""
    xs: list[float] = []
    ys: list[float] = []
    labels: list[str] = []
    for p, ms in points:
        if p >= 100.0:
            if xs and ms > ys[-1]:
                xs.append(xs[-1])
                ys.append(ms)
                labels.append("max")
            elif not xs:
                xs.append(1.0)
                ys.append(ms)
                labels.append("max")
            continue
        xs.append(1.0 / (1.0 - p / 100.0))
        ys.append(ms)
        labels.append(_percentile_label(p))
    return xs, ys, labels


def _percentile_axis(fig: Figure, max_x: float) -> None:
    top = max(1e4, max_x * 1.15)
    ticks = [(v, label) for v, label in _PCT_TICKS if v <= top]
    fig.update_xaxes(type="log", range=[0, math.log10(top)], tickvals=[v for v, _ in ticks],
                     ticktext=[label for _, label in ticks], title_text="percentile (log scale of 1/(1−p))")


def fig_distribution(runs: Sequence[tuple[str, dict[str, Any]]], with_service: bool = True) -> Figure:
    """HdrHistogram's percentile plot: latency against percentile, the tail stretched out. One curve per
    run (``runs`` is [(name, summary)]); with a single run also the service time."""
    go = _go()
    fig = go.Figure()
    max_x = 1.0
    coarse_any = False
    for i, (name, summary) in enumerate(runs):
        keys = [("latency_ms", "latency")]
        if with_service and len(runs) == 1:
            keys.append(("service_time_ms", "service time"))
        for key, what in keys:
            points, full = _distribution_points(summary, key)
            coarse_any |= not full
            if not points:
                continue
            xs, ys, labels = _to_percentile_axis(points)
            max_x = max([max_x, *xs])
            trace_name = what if len(runs) == 1 else f"{name}: {what}"
            color = (C_P50 if key == "latency_ms" else C_SERVICE) if len(runs) == 1 else C_RUN[i % 2]
            fig.add_trace(go.Scatter(
                x=xs, y=ys, name=_esc(trace_name), customdata=labels, mode="lines" if full else "lines+markers",
                line={"color": color, "width": 2, "shape": "hv" if full else "linear",
                      "dash": "solid" if key == "latency_ms" else "dot"},
                hovertemplate="%{customdata}: %{y:.3f} ms<extra>" + _esc(trace_name) + "</extra>",
            ))
    _percentile_axis(fig, max_x)
    title = "Latency by percentile (HdrHistogram)"
    if coarse_any:
        title += " - from the summary's percentiles only"
    return _layout(fig, title, "percentile", "latency (ms)", height=400, updatemenus=_log_toggle(),
                   margin={"b": 80})


def hop_label(name: str) -> str:
    """How a hop is named on the page."""
    return {_GATEWAY: "gateway (all)", _OUTSIDE: "outside the gateway"}.get(name, name)


def _executors(hops: dict[str, Any]) -> list[str]:
    return [n for n in hops if n not in (_GATEWAY, _OUTSIDE) and isinstance(hops[n], dict)]


def hop_parts(hops: dict[str, Any], stat: str) -> list[tuple[str, float]]:
    """The round trip cut into parts that do not overlap: each Executor's span, the gateway's own time
    (its span minus its Executors') and the time outside the gateway."""
    parts: list[tuple[str, float]] = []
    executors = _executors(hops)
    inside = 0.0
    for name in executors:
        v = _num(hops[name].get(stat))
        if v is not None:
            parts.append((name, v))
            inside += v
    gateway = _num((hops.get(_GATEWAY) or {}).get(stat))
    if gateway is not None:
        parts.append(("gateway (own)", max(0.0, gateway - inside)))
    outside = _num((hops.get(_OUTSIDE) or {}).get(stat))
    if outside is not None:
        parts.append(("outside the gateway", outside))
    return parts


def fig_hops(hops: dict[str, Any]) -> Figure:
    """A stacked bar per statistic (p50, mean): which hop the time goes to."""
    go = _go()
    fig = go.Figure()
    stats = (("p50", "median (p50)"), ("mean", "mean"))
    by_stat = {stat: dict(hop_parts(hops, stat)) for stat, _ in stats}
    names: list[str] = []
    for stat, _ in stats:
        names += [n for n in by_stat[stat] if n not in names]
    for i, name in enumerate(names):
        if name == "gateway (own)":
            color = C_GATEWAY_OWN
        elif name == "outside the gateway":
            color = C_OUTSIDE
        else:
            color = C_HOPS[i % len(C_HOPS)]
        values = [by_stat[stat].get(name) for stat, _ in stats]
        fig.add_trace(go.Bar(
            y=[label for _, label in stats], x=values, name=_esc(name), orientation="h", marker_color=color,
            text=[_fmt_ms(v) for v in values], textposition="inside", insidetextanchor="middle", textangle=0,
            hovertemplate="%{y}: " + _esc(name) + " %{x:.3f} ms<extra></extra>",
        ))
    fig = _layout(fig, "Where the time goes, per hop", "time per request (ms)", "", height=300,
                  barmode="stack")
    fig.update_yaxes(autorange="reversed", rangemode=None)
    fig.update_layout(legend={"traceorder": "normal"})
    return fig


def fig_errors_over_time(rows: Sequence[dict[str, Any]], warmup_s: float | None = None) -> Figure:
    """Errors per second stacked by reason. A row's errors beyond those with a reason (transport failures
    and timeouts carry one) are answers the target reported as failed."""
    go = _go()
    t = _times(rows)
    fig = go.Figure()
    reasons: list[str] = []
    for r in rows:
        for reason in r.get("error_reasons") or {}:
            if reason not in reasons:
                reasons.append(reason)
    intervals = [_num(r.get("interval_s")) or 1.0 for r in rows]
    failed = []
    for r in rows:
        with_reason = sum(v for v in (r.get("error_reasons") or {}).values() if _is_number(v))
        failed.append(max(0.0, (_num(r.get("errors")) or 0.0) - with_reason))
    any_dropped = any(r.get("dropped") for r in rows)
    height = 340
    if not reasons and not any_dropped and not any(failed):
        fig.add_trace(_line(t, [0.0] * len(t), "errors/s", C_ERR))
        fig.add_annotation(text="no errors and no drops in this run", xref="paper", yref="paper", x=0.5, y=0.6,
                           showarrow=False, font={"size": 13, "color": "#555"})
        fig.update_yaxes(range=[0, 1])
        height = 240
    else:
        stacks: list[tuple[str, list[float], str]] = []
        if any(failed):
            stacks.append(("failed answers", failed, C_ERR))
        for i, reason in enumerate(reasons):
            counts = [float((r.get("error_reasons") or {}).get(reason, 0)) for r in rows]
            stacks.append((_short(reason), counts, C_REASONS[(i + 1) % len(C_REASONS)]))
        if any_dropped:
            stacks.append(("dropped (never sent)", [float(r.get("dropped") or 0) for r in rows], C_DROP))
        # Each bar spans the interval it counts: the row's t is the interval's end.
        mids = [round(end - dt / 2, 3) for end, dt in zip(t, intervals, strict=True)]
        widths = [dt * 0.9 for dt in intervals]
        for name, counts, color in stacks:
            y = [round(c / dt, 3) for c, dt in zip(counts, intervals, strict=True)]
            fig.add_trace(go.Bar(x=mids, y=y, width=widths, name=_esc(name), marker_color=color,
                                 hovertemplate="%{y:.1f}/s<extra>" + _esc(name) + "</extra>"))
    _shade_warmup(fig, rows, warmup_s)
    return _layout(fig, "Errors over time, by reason", "time since start (s)", "errors per second (1/s)",
                   height=height, barmode="stack", hovermode="x unified", showlegend=True)


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_counts(summary: dict[str, Any]) -> list[tuple[str, int]]:
    """Every reason a request failed or was dropped, with its count, the most frequent first."""
    counts = [(str(k), int(v)) for k, v in (summary.get("errors") or {}).items() if _is_number(v)]
    dropped = (summary.get("requests") or {}).get("dropped_by_reason") or {}
    counts += [(f"dropped: {k}", int(v)) for k, v in dropped.items() if _is_number(v)]
    return sorted(counts, key=lambda kv: -kv[1])


def fig_errors_by_reason(counts: Sequence[tuple[str, int]]) -> Figure:
    go = _go()
    fig = go.Figure(go.Bar(
        y=[_esc(_short(k)) for k, _ in counts], x=[v for _, v in counts], orientation="h",
        marker_color=[C_DROP if k.startswith("dropped: ") else C_ERR for k, _ in counts],
        text=[f"{v:,}" for _, v in counts], textposition="auto", customdata=[_esc(k) for k, _ in counts],
        hovertemplate="%{customdata}: %{x:,} requests<extra></extra>", name="requests",
    ))
    fig = _layout(fig, "Errors by reason (measured window)", "requests (count)", "",
                  height=max(220, 90 + 34 * len(counts)), showlegend=False)
    fig.update_yaxes(autorange="reversed", rangemode=None)
    return fig


# -- comparison figures --


def fig_compare_bars(title: str, categories: Sequence[str], values: Sequence[tuple[str, Sequence[float | None]]],
                     y_title: str) -> Figure:
    go = _go()
    fig = go.Figure()
    for i, (name, ys) in enumerate(values):
        fig.add_trace(go.Bar(x=[_esc(c) for c in categories], y=list(ys), name=_esc(name), marker_color=C_RUN[i % 2],
                             text=[_fmt_ms(v) for v in ys], textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{y:.3f} ms<extra>" + _esc(name) + "</extra>"))
    return _layout(fig, title, "", y_title, height=380, barmode="group", bargap=0.25)


def fig_compare_latency_over_time(runs: Sequence[Results], names: Sequence[str]) -> Figure:
    go = _go()
    fig = go.Figure()
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        rows = display_rows(run.rows)
        t = _times(rows)
        fig.add_trace(_line(t, _series(rows, "p50_ms"), f"{name}: p50", C_RUN[i % 2]))
        fig.add_trace(_line(t, _series(rows, "p99_ms"), f"{name}: p99", C_RUN[i % 2], dash="dash"))
        fig.add_trace(_line(t, _series(rows, "max_ms"), f"{name}: max", C_RUN[i % 2], dash="dot", width=1,
                            visible="legendonly"))
    return _layout(fig, "Latency over time: p50 (solid) and p99 (dashed)", "time since start (s)", "latency (ms)",
                   height=400, hovermode="x unified", updatemenus=_log_toggle(), margin={"b": 80})


def fig_compare_throughput(runs: Sequence[Results], names: Sequence[str]) -> Figure:
    go = _go()
    fig = go.Figure()
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        rows = display_rows(run.rows)
        t = _times(rows)
        fig.add_trace(_line(t, _series(rows, "ok_rps"), f"{name}: ok/s", C_RUN[i % 2]))
        fig.add_trace(_line(t, _per_second(rows, "errors"), f"{name}: errors/s", C_RUN[i % 2], dash="dot"))
    return _layout(fig, "Throughput over time: ok/s (solid) and errors/s (dotted)", "time since start (s)",
                   "requests per second (req/s)", hovermode="x unified")


# ---- HTML --------------------------------------------------------------------------------------------


_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#f6f8fa; --ok:#1a7f37; --bad:#cf222e; }
* { box-sizing: border-box; }
body { margin:0; font-family:FONT; color:var(--fg); background:var(--bg); font-size:14px; line-height:1.45; }
header { background:#24292f; color:#fff; padding:18px 28px 14px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#c9d1d9; font-size:13px; }
header .sub code { color:#fff; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line); padding:8px 28px; }
nav a { color:var(--muted); text-decoration:none; margin-right:18px; font-size:13px; }
nav a:hover { color:var(--fg); }
main { max-width:1280px; margin:0 auto; padding:16px 28px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:16px 0; }
h2 { font-size:17px; margin:0 0 12px; }
h3 { font-size:14px; margin:16px 0 8px; color:var(--muted); font-weight:600; }
.note { color:var(--muted); font-size:12.5px; margin:6px 0 0; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit, minmax(130px, 1fr)); gap:10px; margin-bottom:14px; }
.tile { border:1px solid var(--line); border-radius:6px; padding:10px 12px; background:#fbfcfd; }
.tile .k { color:var(--muted); font-size:12px; }
.tile .v { font-size:21px; font-weight:600; font-variant-numeric:tabular-nums; }
.tile .u { font-size:12px; color:var(--muted); font-weight:400; margin-left:3px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit, minmax(520px, 1fr)); gap:16px; }
table { border-collapse:collapse; width:100%; font-size:13px; font-variant-numeric:tabular-nums; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#f6f8fa; font-weight:600; color:var(--muted); }
th:first-child, td:first-child { text-align:left; }
td.l, th.l { text-align:left; white-space:normal; }
tr.group td { background:#f6f8fa; font-weight:600; text-align:left; color:var(--muted); }
tbody tr:hover td { background:#f3f6fa; }
.badge { display:inline-block; padding:3px 10px; border-radius:12px; font-size:12px; font-weight:600;
         color:#fff; margin-left:8px; vertical-align:middle; }
.badge.pass { background:var(--ok); } .badge.fail { background:var(--bad); } .badge.none { background:#6e7781; }
td.pass { color:var(--ok); font-weight:600; } td.fail { color:var(--bad); font-weight:600; }
td.better { color:var(--ok); font-weight:600; } td.worse { color:var(--bad); font-weight:600; }
.chart { min-height:200px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 24px; }
""".replace("FONT", FONT)


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _chart(fig: Figure, div_id: str) -> str:
    import plotly.io as pio

    height = fig.layout.height or 380
    return ('<div class="chart">' + pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOTLY_CONFIG,
        default_width="100%", default_height=f"{height}px", validate=True,
    ) + "</div>")


def _page(title: str, heading: str, sub: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{_esc(a)}">{_esc(t)}</a>' for a, t in nav)
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n"
        f"<script id=\"plotly-js\">{_plotly_js()}</script>\n</head>\n<body>\n"
        f"<header><h1>{heading}</h1><div class=\"sub\">{sub}</div></header>\n"
        f"<nav>{links}</nav>\n<main>\n{body}\n</main>\n"
        f"<footer>flowrelay report · generated {_esc(generated)} · charts by plotly.js, inlined: "
        "this file needs no network</footer>\n</body>\n</html>\n"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False,
           left: Sequence[int] = (0,)) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then each cell is trusted HTML of a <td>); the
    columns numbered in ``left`` are text, aligned left."""
    head = "".join(f'<th class="l">{_esc(h)}</th>' if i in left else f"<th>{_esc(h)}</th>"
                   for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = row if raw else [f"<td>{_esc(c)}</td>" for c in row]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _tile(key: str, value: str, unit: str = "") -> str:
    u = f'<span class="u">{_esc(unit)}</span>' if unit else ""
    return f'<div class="tile"><div class="k">{_esc(key)}</div><div class="v">{_esc(value)}{u}</div></div>'


def _thresholds_badge(thresholds: Sequence[dict[str, Any]]) -> str:
    if not thresholds:
        return '<span class="badge none">no thresholds</span>'
    failed = sum(1 for t in thresholds if not t.get("ok"))
    if failed:
        return f'<span class="badge fail">{failed} of {len(thresholds)} thresholds failed</span>'
    return f'<span class="badge pass">all {len(thresholds)} thresholds passed</span>'


def _run_description(s: dict[str, Any]) -> str:
    sp = s.get("subprotocol") or {}
    if s.get("model") == "closed":
        model = f"closed model, {s.get('concurrency')} in flight"
    else:
        model = f"open model, {s.get('arrival') or 'even'} arrivals"
    parts = [
        f"<code>{_esc(s['target'])}</code>",
        _esc(model),
        f"{_esc(s.get('connections', '?'))} connection(s), {_esc(s.get('procs', 1))} process(es)",
        f"subprotocol {_esc(sp.get('negotiated') or sp.get('offered') or 'none')}"
        if s.get("transport", "websocket") == "websocket" else _esc(s["transport"]),
    ]
    if s.get("started_at"):
        parts.append(f"started {_esc(s['started_at'])}")
    return " · ".join(parts)


def _latency_rows(s: dict[str, Any]) -> list[list[str]]:
    rows = []
    named = [("latency (from the intended send)", s.get("latency_ms")),
             ("service time (from the actual send)", s.get("service_time_ms")),
             ("scheduler lag (actual − intended send)", s.get("scheduler_lag_ms"))]
    for name, figures in named:
        if isinstance(figures, dict):
            rows.append(_stat_row(name, figures))
    return rows


def _stat_row(name: str, figures: dict[str, Any]) -> list[str]:
    return [name, *(_fmt_ms(figures.get(k)) for k, _ in _PERCENTILE_KEYS), _fmt_ms(figures.get("max")),
            _fmt_ms(figures.get("mean")), _fmt_count(figures.get("count"))]


_STAT_HEADER = ("", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "count")


def _summary_section(s: dict[str, Any]) -> str:
    req = s["requests"]
    rate = s["rate"]
    lat = s["latency_ms"]
    tiles = "".join([
        _tile("requests sent", _fmt_count(req.get("sent"))),
        _tile("ok", _fmt_count(req.get("ok"))),
        _tile("error rate", _fmt_fraction(s.get("error_rate"))),
        _tile("achieved rate", _fmt_rate(rate.get("achieved_rps")), "req/s"),
        _tile("ok rate", _fmt_rate(rate.get("ok_rps")), "req/s"),
        _tile("latency p50", _fmt_ms(lat.get("p50")), "ms"),
        _tile("latency p99", _fmt_ms(lat.get("p99")), "ms"),
        _tile("latency max", _fmt_ms(lat.get("max")), "ms"),
    ])
    target = rate.get("target_rps")
    run_rows = [
        ["duration", f"{_fmt_value(s.get('duration_s'))} s (measured {_fmt_value(s.get('measured_duration_s'))} s, "
                     f"warm-up {_fmt_value(s.get('warmup_s') or 0)} s)"],
        ["rate", f"target {_fmt_rate(target) + ' req/s' if _is_number(target) else '–'} · achieved (sent) "
                 f"{_fmt_rate(rate.get('achieved_rps'))} req/s · ok {_fmt_rate(rate.get('ok_rps'))} req/s"],
        ["requests", " · ".join(f"{k.replace('_', ' ')} {_fmt_count(req.get(k))}" for k in
                                ("sent", "ok", "failed", "transport_failed", "timeout", "unanswered", "dropped"))],
    ]
    docs = s.get("docs") or {}
    if docs:
        run_rows.append(["documents", f"sent {_fmt_count(docs.get('sent'))} · received "
                                      f"{_fmt_count(docs.get('received'))}"])
    extras = [f"{k.replace('_', ' ')} {_fmt_count(s.get(k))}" for k in ("reconnects", "late_answers") if k in s]
    if extras:
        run_rows.append(["connections", " · ".join(extras)])
    run_table = "<table>" + "".join(
        f'<tr><td>{_esc(k)}</td><td class="l">{_esc(v)}</td></tr>' for k, v in run_rows) + "</table>"
    return (
        '<section id="summary"><h2>Summary</h2>'
        f'<div class="tiles">{tiles}</div>{run_table}'
        f'<h3>Latency (ms)</h3>{_table(_STAT_HEADER, _latency_rows(s))}'
        '<p class="note">Latency counts from each request\'s intended send time (so a stalled sender is '
        "charged to the server, as wrk2 does); service time from the moment it was actually sent. Figures "
        "cover ok answers in the measured window (warm-up left out).</p></section>"
    )


def _thresholds_section(s: dict[str, Any]) -> str:
    thresholds = s.get("thresholds") or []
    if not thresholds:
        body = '<p class="note">No thresholds were set for this run (<code>--threshold EXPR</code>).</p>'
    else:
        rows = []
        for t in thresholds:
            ok = bool(t.get("ok"))
            note = t.get("note") or ""
            rows.append([
                f'<td class="{"pass" if ok else "fail"}">{"✔ pass" if ok else "✘ FAIL"}</td>',
                f'<td class="l"><code>{_esc(t.get("expr", "?"))}</code></td>',
                f"<td>{_fmt_value(t.get('value'))}</td>",
                f'<td class="l">{_esc(note)}</td>',
            ])
        body = _table(("result", "threshold", "value", "note"), rows, raw=True, left=(0, 1, 3))
    return (f'<section id="thresholds"><h2>Thresholds {_thresholds_badge(thresholds)}</h2>{body}'
            '<p class="note">Values are in the threshold\'s own unit: milliseconds for latency, a fraction for '
            "rates.</p></section>")


def _hops_section(s: dict[str, Any], fig_id: str = "fig-hops") -> str:
    hops = {k: v for k, v in (s.get("hops") or {}).items() if isinstance(v, dict)}
    if not hops:
        return ('<section id="hops"><h2>Per hop</h2><p class="note">The target returned no route timestamps, so '
                "there is no per-hop breakdown.</p></section>")
    names = {_GATEWAY: "gateway (whole span, Executors included)", _OUTSIDE: "outside the gateway"}
    rows = [_stat_row(names.get(n, f"Executor {n}"), f) for n, f in hops.items()]
    return (
        '<section id="hops"><h2>Per hop: which Executor the time goes to</h2>'
        + _chart(fig_hops(hops), fig_id)
        + '<p class="note">Each bar cuts a request\'s round trip into parts that do not overlap: every '
        "Executor's span, the gateway's own time (its span less its Executors') and the time outside the "
        "gateway (network, queues, (de)serialisation, the client). Means add up to the round trip; medians "
        "of parts need not add up to the median of the whole.</p>"
        f"<h3>Hop percentiles (ms)</h3>{_table(('hop', *_STAT_HEADER[1:]), rows)}</section>"
    )


def _errors_section(s: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    counts = error_counts(s)
    sent = _num((s.get("requests") or {}).get("sent")) or 0
    parts = ['<section id="errors"><h2>Errors</h2>', _chart(fig_errors_over_time(rows, _num(s.get("warmup_s"))),
                                                             "fig-errors-time")]
    if counts:
        parts.append(_chart(fig_errors_by_reason(counts), "fig-errors-reason"))
        table_rows = [[k, f"{v:,}", _fmt_fraction(v / sent) if sent else "–"] for k, v in counts]
        parts.append(_table(("reason", "requests", "share of sent"), table_rows))
    else:
        parts.append('<p class="note">No errors and no dropped requests in the measured window.</p>')
    parts.append('<p class="note">Errors are failed answers (the Executor\'s exception), transport failures and '
                 "timeouts; dropped requests were never sent (no room in flight).</p></section>")
    return "".join(parts)


def render_report(results: Results) -> str:
    """The HTML of one run's report."""
    s = results.summary
    rows = display_rows(results.rows)
    warmup_s = _num(s.get("warmup_s"))
    target = _num(s["rate"].get("target_rps")) if s.get("model") != "closed" else None
    body = [
        _summary_section(s),
        _thresholds_section(s),
        '<section id="throughput"><h2>Throughput</h2>'
        + _chart(fig_throughput(rows, target, warmup_s), "fig-throughput") + "</section>",
        '<section id="latency"><h2>Latency</h2>'
        + _chart(fig_latency_over_time(rows, warmup_s), "fig-latency")
        + _chart(fig_distribution([(results.label, s)]), "fig-distribution")
        + '<p class="note">The percentile plot stretches the tail: each step right is one more nine (90%, 99%, '
        "99.9%, ...). Latency from the intended send time, service time from the actual send.</p></section>",
        _hops_section(s),
        _errors_section(s, rows),
    ]
    nav = [("summary", "Summary"), ("thresholds", "Thresholds"), ("throughput", "Throughput"),
           ("latency", "Latency"), ("hops", "Per hop"), ("errors", "Errors")]
    heading = f"flowrelay load report {_thresholds_badge(s.get('thresholds') or [])}"
    sub = _run_description(s) + f" · results <code>{_esc(results.path)}</code>"
    return _page(f"flowrelay report: {s['target']}", heading, sub, nav, "\n".join(body))


def write_report(results_dir: Path, html_path: Path) -> Path:
    """Write the HTML report of the results folder ``results_dir`` to ``html_path``; raises ResultsError
    when the folder is missing or malformed."""
    page = render_report(load_results(Path(results_dir)))
    return _write(Path(html_path), page)


def _write(path: Path, page: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# ---- comparison ----------------------------------------------------------------------------------------


def _run_names(runs: Sequence[Results]) -> list[str]:
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = ["/".join(r.path.resolve().parts[-2:]) for r in runs]
    return [f"{tag}: {label}" for tag, label in zip("AB", labels, strict=False)]


# direction of a figure: +1 higher is better, -1 lower is better, 0 neither
_BETTER_HIGHER, _BETTER_LOWER, _NEUTRAL = 1, -1, 0


def _ratio_cell(a: float | None, b: float | None, direction: int) -> str:
    if a is None or b is None:
        return "<td>–</td>"
    if a == 0:
        return "<td>=</td>" if b == 0 else '<td title="A is 0">new</td>'
    ratio = b / a
    css = ""
    if direction and abs(ratio - 1) >= 0.05:
        css = "better" if (ratio > 1) == (direction > 0) else "worse"
    return f'<td class="{css}">×{ratio:.3g}</td>' if css else f"<td>×{ratio:.3g}</td>"


def _compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[list[str]]:
    def get(s: dict[str, Any], *path: str) -> float | None:
        node: Any = s
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return _num(node)

    groups: list[tuple[str, list[tuple[str, tuple[str, ...], int, Any]]]] = [
        ("Throughput (req/s)", [
            ("target rate", ("rate", "target_rps"), _NEUTRAL, _fmt_rate),
            ("achieved rate (sent)", ("rate", "achieved_rps"), _BETTER_HIGHER, _fmt_rate),
            ("ok rate", ("rate", "ok_rps"), _BETTER_HIGHER, _fmt_rate),
            ("requests sent", ("requests", "sent"), _NEUTRAL, _fmt_count),
            ("requests ok", ("requests", "ok"), _NEUTRAL, _fmt_count),
        ]),
        ("Errors", [
            ("error rate", ("error_rate",), _BETTER_LOWER, _fmt_fraction),
            ("failed", ("requests", "failed"), _NEUTRAL, _fmt_count),
            ("transport failed", ("requests", "transport_failed"), _NEUTRAL, _fmt_count),
            ("timed out", ("requests", "timeout"), _NEUTRAL, _fmt_count),
            ("dropped", ("requests", "dropped"), _NEUTRAL, _fmt_count),
        ]),
        ("Latency from the intended send (ms)", [
            (label, ("latency_ms", key), _BETTER_LOWER, _fmt_ms)
            for key, label in (*_PERCENTILE_KEYS, ("max", "max"), ("mean", "mean"))
        ]),
        ("Service time from the actual send (ms)", [
            (label, ("service_time_ms", key), _BETTER_LOWER, _fmt_ms)
            for key, label in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max"), ("mean", "mean"))
        ]),
    ]
    hop_names = [*(a.get("hops") or {})]
    hop_names += [n for n in (b.get("hops") or {}) if n not in hop_names]
    if hop_names:
        groups.append(("Per hop, p50 (ms)",
                       [(hop_label(n), ("hops", n, "p50"), _BETTER_LOWER, _fmt_ms) for n in hop_names]))
    out: list[list[str]] = []
    for title, items in groups:
        out.append([f'<td colspan="4">{_esc(title)}</td>'])
        for label, path, direction, fmt in items:
            va, vb = get(a, *path), get(b, *path)
            out.append([f"<td>{_esc(label)}</td>", f"<td>{fmt(va)}</td>", f"<td>{fmt(vb)}</td>",
                        _ratio_cell(va, vb, direction)])
    return out


def _compare_table(a: dict[str, Any], b: dict[str, Any], names: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in ("figure", names[0], names[1], "B/A"))
    rows = []
    for cells in _compare_rows(a, b):
        css = ' class="group"' if len(cells) == 1 else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _compare_thresholds(a: dict[str, Any], b: dict[str, Any], names: Sequence[str]) -> str:
    exprs: list[str] = []
    by_run: list[dict[str, dict[str, Any]]] = []
    for s in (a, b):
        found = {}
        for t in s.get("thresholds") or []:
            expr = str(t.get("expr", "?"))
            found[expr] = t
            if expr not in exprs:
                exprs.append(expr)
        by_run.append(found)
    if not exprs:
        return '<p class="note">Neither run set thresholds.</p>'
    rows = []
    for expr in exprs:
        cells = [f'<td class="l"><code>{_esc(expr)}</code></td>']
        for found in by_run:
            t = found.get(expr)
            if t is None:
                cells.append("<td>not set</td>")
            else:
                ok = bool(t.get("ok"))
                cells.append(f'<td class="{"pass" if ok else "fail"}">{"✔ pass" if ok else "✘ FAIL"} '
                             f"({_fmt_value(t.get('value'))})</td>")
        rows.append(cells)
    return _table(("threshold", *names), rows, raw=True, left=(0,))


def render_comparison(runs: Sequence[Results]) -> str:
    """The HTML comparing run B (the second) with run A (the first)."""
    if len(runs) != 2:
        raise ValueError(f"a comparison takes two results folders, got {len(runs)}")
    a, b = runs[0].summary, runs[1].summary
    names = _run_names(runs)
    pct_keys = [*_PERCENTILE_KEYS[:4], ("max", "max")]
    percentiles = fig_compare_bars(
        "Latency percentiles", [label for _, label in pct_keys],
        [(n, [_num(s["latency_ms"].get(k)) for k, _ in pct_keys]) for n, s in zip(names, (a, b), strict=True)],
        "latency (ms)")
    hop_names = [*(a.get("hops") or {})]
    hop_names += [n for n in (b.get("hops") or {}) if n not in hop_names]
    body = [
        '<section id="figures"><h2>Figures side by side</h2>'
        + _compare_table(a, b, names)
        + '<p class="note">B/A in green where B is better by 5 % or more, in red where it is worse; '
        "“new” where A had none.</p></section>",
        f'<section id="thresholds"><h2>Thresholds</h2>{_compare_thresholds(a, b, names)}</section>',
        '<section id="latency"><h2>Latency</h2><div class="grid2">'
        + _chart(percentiles, "fig-cmp-percentiles")
        + _chart(fig_distribution([(n, r.summary) for n, r in zip(names, runs, strict=True)]), "fig-cmp-distribution")
        + "</div>"
        + _chart(fig_compare_latency_over_time(runs, names), "fig-cmp-latency")
        + "</section>",
    ]
    if hop_names:
        hops = fig_compare_bars(
            "Per hop, p50", [hop_label(h) for h in hop_names],
            [(n, [_num(((s.get("hops") or {}).get(h) or {}).get("p50")) for h in hop_names])
             for n, s in zip(names, (a, b), strict=True)],
            "time per request (ms)")
        body.append('<section id="hops"><h2>Per hop</h2>' + _chart(hops, "fig-cmp-hops")
                    + '<p class="note">The gateway\'s span includes its Executors\'.</p></section>')
    else:
        body.append('<section id="hops"><h2>Per hop</h2><p class="note">Neither run has route timestamps.</p>'
                    "</section>")
    body.append('<section id="throughput"><h2>Throughput</h2>'
                + _chart(fig_compare_throughput(runs, names), "fig-cmp-throughput") + "</section>")
    nav = [("figures", "Figures"), ("thresholds", "Thresholds"), ("latency", "Latency"), ("hops", "Per hop"),
           ("throughput", "Throughput")]
    sub = "<br>".join(f"<b>{_esc(n)}</b> {_run_description(r.summary)} · results <code>{_esc(r.path)}</code>"
                      for n, r in zip(names, runs, strict=True))
    return _page(f"flowrelay comparison: {names[0]} vs {names[1]}", "flowrelay load comparison: B against A",
                 sub, nav, "\n".join(body))


def write_comparison(dirs: list[Path], html_path: Path) -> Path:
    """Write the HTML comparing the second results folder (B) with the first (A) to ``html_path``; raises
    ResultsError when a folder is missing or malformed, ValueError unless there are two."""
    if len(dirs) != 2:
        raise ValueError(f"a comparison takes two results folders, got {len(dirs)}")
    page = render_comparison([load_results(Path(d)) for d in dirs])
    return _write(Path(html_path), page)
