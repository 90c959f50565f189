"""The HTML of a load run's page (its live dashboard and its report) and of the comparison of two runs.

One page for both: the header, the sections, and the boxes the charts are drawn in are the same whether the page
is served live by loadtest.outputs.dashboard or written to `report.html`; what the run's summary adds at its end
(the summary tables, the thresholds' verdicts, the percentile plot, the per-hop and per-reason breakdowns) comes
from `final_sections`, which the report puts in its slots and the live page receives in its last event. The page
itself, the chart library and the script that draws the specs of loadtest.outputs.report.figures are
relay.common.web's. A report of a short run weighs about a hundred kilobytes (the plotly report weighed 4.9 MB).

Everything quoted from a results folder (error reasons and hop names come from the target) is escaped here; the
page's script sets text, never markup, from its data.

Imports: the standard library, relay.common.web and loadtest.outputs.report (data, figures).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loadtest.outputs.report.data import (
    GATEWAY,
    OUTSIDE,
    Results,
    error_counts,
    hop_label,
    hops_of,
    is_number,
    load_results,
    num,
    target_breakpoints,
)
from loadtest.outputs.report.figures import comparison_charts, final_charts, time_charts
from relay.common.web import UPLOT_VERSION, chart_box, render_page

REPORT_FILE = "report.html"
COMPARISON_FILE = "comparison.html"
_PERCENTILE_KEYS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("p9999", "p99.99"))
LOAD_NAV = (("summary", "Summary"), ("thresholds", "Thresholds"), ("throughput", "Throughput"),
            ("latency", "Latency"), ("hops", "Per hop"), ("sender", "Sender"), ("errors", "Errors"))
# The live tiles: the last second's figures.
LIVE_TILES = (
    {"key": "sent_rps", "label": "sent", "unit": "req/s", "fmt": "rate"},
    {"key": "ok_rps", "label": "ok", "unit": "req/s", "fmt": "rate"},
    {"key": "errors", "label": "errors", "unit": "/s", "fmt": "rate", "per_second": True},
    {"key": "p50_ms", "label": "latency p50", "unit": "ms", "fmt": "ms"},
    {"key": "p99_ms", "label": "latency p99", "unit": "ms", "fmt": "ms"},
    {"key": "max_ms", "label": "latency max", "unit": "ms", "fmt": "ms"},
    {"key": "inflight", "label": "in flight", "unit": "", "fmt": "count"},
    {"key": "dropped", "label": "dropped", "unit": "/s", "fmt": "rate", "per_second": True},
    {"key": "lag_p99_ms", "label": "scheduler lag p99", "unit": "ms", "fmt": "ms"},
)


# ---- formatting --------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt_ms(value: object) -> str:
    v = num(value)
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
    v = num(value)
    return "–" if v is None else f"{v:,.0f}"


def _fmt_rate(value: object) -> str:
    v = num(value)
    return "–" if v is None else f"{v:,.1f}"


def _fmt_fraction(value: object) -> str:
    v = num(value)
    if v is None:
        return "–"
    if v == 0:
        return "0 %"
    return f"{v * 100:.3g} %"


def _fmt_value(value: object) -> str:
    v = num(value)
    if v is None:
        return "–" if value is None else _esc(value)
    return f"{v:g}" if abs(v) < 1e6 else f"{v:,.0f}"




# ---- chart boxes and sections ------------------------------------------------------------------------------


def _charts_of(specs: Iterable[Mapping[str, Any]], section: str) -> str:
    return "".join(chart_box(s) for s in specs if s.get("section") == section)


def _thresholds_badge(thresholds: Sequence[dict[str, Any]]) -> str:
    if not thresholds:
        return '<span class="badge none">no thresholds</span>'
    failed = sum(1 for t in thresholds if not t.get("ok"))
    if failed:
        return f'<span class="badge fail">{failed} of {len(thresholds)} thresholds failed</span>'
    return f'<span class="badge pass">all {len(thresholds)} thresholds passed</span>'


def run_description(s: Mapping[str, Any]) -> str:
    """One line saying what the run was (from summary.json, or from the live run's configuration)."""
    sp = s.get("subprotocol") or {}
    if s.get("model") == "closed":
        model = f"closed model, {s.get('concurrency')} in flight"
    elif s.get("model") == "replay":
        rp = s.get("replay") or {}
        model = f"replay of {rp.get('source')} at " + (f"{rp['rate']:g}/s" if rp.get("rate") else
                                                       f"speed {rp.get('speed', 1):g}")
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


def _summary_html(s: dict[str, Any]) -> str:
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
        ["rate", f"target {_fmt_rate(target) + ' req/s' if is_number(target) else '–'} · achieved (sent) "
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
        f'<div class="tiles">{tiles}</div>{run_table}'
        f'<h3>Latency (ms)</h3>{_table(_STAT_HEADER, _latency_rows(s))}'
        '<p class="note">Latency counts from each request\'s intended send time (so a stalled sender is '
        "charged to the server, as wrk2 does); service time from the moment it was actually sent. Figures "
        "cover ok answers in the measured window (warm-up left out).</p>"
    )


def _thresholds_html(s: dict[str, Any]) -> str:
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
    return (f"<h3>Verdict {_thresholds_badge(thresholds)}</h3>{body}"
            '<p class="note">Values are in the threshold\'s own unit: milliseconds for latency, a fraction for '
            "rates; judged on the whole run's figures (warm-up left out).</p>")


def _hops_html(s: dict[str, Any], chart: Mapping[str, Any] | None) -> str:
    hops = hops_of(s)
    if not hops or chart is None:
        return '<p class="note">The target returned no route timestamps, so there is no per-hop breakdown.</p>'
    names = {GATEWAY: "gateway (whole span, Executors included)", OUTSIDE: "outside the gateway"}
    rows = [_stat_row(names.get(n, f"Executor {n}"), f) for n, f in hops.items()]
    return (
        chart_box(chart)
        + '<p class="note">Each bar cuts a request\'s round trip into parts that do not overlap: every '
        "Executor's span, the gateway's own time (its span less its Executors') and the time outside the "
        "gateway (network, queues, (de)serialisation, the client). Means add up to the round trip; medians "
        "of parts need not add up to the median of the whole.</p>"
        f"<h3>Hop percentiles over the run (ms)</h3>{_table(('hop', *_STAT_HEADER[1:]), rows)}"
    )


def _errors_html(s: dict[str, Any], chart: Mapping[str, Any] | None) -> str:
    counts = error_counts(s)
    sent = num((s.get("requests") or {}).get("sent")) or 0
    if not counts or chart is None:
        return '<p class="note">No errors and no dropped requests in the measured window.</p>'
    table_rows = [[k, f"{v:,}", _fmt_fraction(v / sent) if sent else "–"] for k, v in counts]
    return chart_box(chart) + _table(("reason", "requests", "share of sent"), table_rows)


def final_sections(summary: dict[str, Any], label: str) -> dict[str, Any]:
    """What a run's summary adds to its page: HTML for the page's slots, and the charts drawn in them."""
    charts = {c["id"]: c for c in final_charts(summary, label)}
    html_slots = {
        "badge": _thresholds_badge(summary.get("thresholds") or []),
        "summary": _summary_html(summary),
        "thresholds": _thresholds_html(summary),
        "latency-final": chart_box(charts["fig-distribution"])
        + '<p class="note">The percentile plot stretches the tail: each step right is one more nine (90%, 99%, '
        "99.9%, ...). Latency from the intended send time, service time from the actual send.</p>",
        "hops-final": _hops_html(summary, charts.get("fig-hops")),
        "errors-final": _errors_html(summary, charts.get("fig-errors-reason")),
    }
    return {"html": html_slots, "charts": list(charts.values())}


def _slot(name: str, final: Mapping[str, str] | None, tag: str = "div") -> str:
    return f'<{tag} data-slot="{name}">{(final or {}).get(name, "")}</{tag}>'


def load_page(run: Mapping[str, Any], rows: Sequence[dict[str, Any]], final: Mapping[str, Any] | None,
              events: str | None = None) -> str:
    """A load run's page. ``run`` describes the run (summary.json's keys: target, model, ...); ``rows`` the
    per-second rows so far; ``final`` what `final_sections` gives once the run is over; ``events`` the URL of
    the live event stream (None: a report, complete as it is)."""
    live = events is not None
    slots = (final or {}).get("html")
    specs = time_charts()
    ended_hidden = "" if slots else " hidden"
    body = [
        f'<section id="now" data-live-only{"" if live and not slots else " hidden"}><h2>Now '
        f'<span class="status" data-slot="now-t"></span></h2><div class="tiles" data-slot="now-tiles"></div>'
        '<div data-slot="workers"></div></section>',
        f'<section id="summary" data-final-only{ended_hidden}><h2>Summary</h2>{_slot("summary", slots)}</section>',
        f'<section id="thresholds"><h2>Thresholds</h2>{_slot("thresholds", slots)}</section>',
        f'<section id="throughput"><h2>Throughput</h2>{_charts_of(specs, "throughput")}</section>',
        f'<section id="latency"><h2>Latency</h2>{_charts_of(specs, "latency")}'
        f'{_slot("latency-final", slots)}</section>',
        f'<section id="hops"><h2>Per hop: which Executor the time goes to</h2>{_charts_of(specs, "hops")}'
        f'{_slot("hops-final", slots)}</section>',
        '<section id="sender"><h2>The sender: in flight, drops and scheduler lag</h2><div class="grid2">'
        f'{_charts_of(specs, "sender")}</div><p class="note">A request whose due time finds every connection at its '
        "in-flight limit is dropped (never sent late in silence); the scheduler's lag is how late requests went "
        "out: a lag that grows means the load generator, not the target, is the limit.</p></section>",
        f'<section id="errors"><h2>Errors</h2>{_charts_of(specs, "errors")}{_slot("errors-final", slots)}'
        '<p class="note">Errors are failed answers (the Executor\'s exception), transport failures and timeouts; '
        "dropped requests were never sent (no room in flight).</p></section>",
    ]
    badge = slots["badge"] if slots else '<span class="badge live">live</span>'
    header = (f'<h1>flowrelay load {"dashboard" if live else "report"} <span data-slot="badge">{badge}</span>'
              f'<span class="status" data-slot="status"></span></h1><div class="sub">{run_description(run)}'
              + (f" · results <code>{_esc(run['results'])}</code>" if run.get("results") else "") + "</div>")
    data = {
        "live": live,
        "events": events,
        "fold": True,
        "rows": [list(rows)],
        "ctx": run_context(run),
        "tiles": list(LIVE_TILES) if live else None,
        "charts": specs + list((final or {}).get("charts") or []),
    }
    generated = _esc(time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    footer = (f"flowrelay load {'dashboard' if live else 'report'} · generated {generated} · "
              f"charts by uPlot {UPLOT_VERSION} (MIT), inlined: this page needs no network"
              + (" beyond its own server's event stream" if live else ""))
    return render_page(title=f"flowrelay load: {run['target']}", header=header, nav=LOAD_NAV, body="\n".join(body),
                       data=data, footer=footer)


def run_context(run: Mapping[str, Any]) -> dict[str, Any]:
    """What the time charts need besides the rows: the target rate's breakpoints and the warm-up."""
    rate = run.get("rate") or {}
    return {"target": target_breakpoints(run.get("model"), num(rate.get("target_rps")), run.get("stages")),
            "warmup_s": num(run.get("warmup_s")) or 0.0}


def render_report(results: Results) -> str:
    """The HTML of one run's report."""
    summary = results.summary
    run = {**summary, "results": str(results.path)}
    return load_page(run, results.rows, final_sections(summary, results.label))


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
        return num(node)

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
    charts = comparison_charts([a, b], names)
    by_id = {c["id"]: c for c in charts}
    body = [
        '<section id="figures"><h2>Figures side by side</h2>'
        + _compare_table(a, b, names)
        + '<p class="note">B/A in green where B is better by 5 % or more, in red where it is worse; '
        "“new” where A had none.</p></section>",
        f'<section id="thresholds"><h2>Thresholds</h2>{_compare_thresholds(a, b, names)}</section>',
        '<section id="latency"><h2>Latency</h2><div class="grid2">'
        + chart_box(by_id["fig-cmp-percentiles"]) + chart_box(by_id["fig-cmp-distribution"]) + "</div>"
        + chart_box(by_id["fig-cmp-latency"]) + "</section>",
    ]
    if "fig-cmp-hops" in by_id:
        body.append('<section id="hops"><h2>Per hop</h2>' + chart_box(by_id["fig-cmp-hops"])
                    + '<p class="note">The gateway\'s span includes its Executors\'.</p></section>')
    else:
        body.append('<section id="hops"><h2>Per hop</h2><p class="note">Neither run has route timestamps.</p>'
                    "</section>")
    body.append('<section id="throughput"><h2>Throughput</h2>' + chart_box(by_id["fig-cmp-throughput"])
                + "</section>")
    nav = [("figures", "Figures"), ("thresholds", "Thresholds"), ("latency", "Latency"), ("hops", "Per hop"),
           ("throughput", "Throughput")]
    sub = "<br>".join(f"<b>{_esc(n)}</b> {run_description(r.summary)} · results <code>{_esc(r.path)}</code>"
                      for n, r in zip(names, runs, strict=True))
    data = {"live": False, "fold": True, "rows": [r.rows for r in runs], "ctx": {}, "charts": charts}
    footer = (f"flowrelay comparison · generated {_esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} · charts by uPlot "
              f"{UPLOT_VERSION} (MIT), inlined: this file needs no network")
    return render_page(title=f"flowrelay comparison: {names[0]} vs {names[1]}",
                       header=f'<h1>flowrelay load comparison: B against A</h1><div class="sub">{sub}</div>',
                       nav=nav, body="\n".join(body), data=data, footer=footer)


def write_comparison(dirs: list[Path], html_path: Path) -> Path:
    """Write the HTML comparing the second results folder (B) with the first (A) to ``html_path``; raises
    ResultsError when a folder is missing or malformed, ValueError unless there are two."""
    if len(dirs) != 2:
        raise ValueError(f"a comparison takes two results folders, got {len(dirs)}")
    page = render_comparison([load_results(Path(d)) for d in dirs])
    return _write(Path(html_path), page)
