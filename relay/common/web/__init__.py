"""The one web page both halves draw: the load run's live dashboard and its report, and the relay's dashboard.

Every page is one self-contained HTML document made from `page.html`: the styles, the chart library, the page's
script and its data are inlined, so a page needs no network (a saved report opens anywhere; a live page asks
only its own server for `events`). The page's script (`charts.js`, `page.js`) draws whatever the data says:
chart specs (which row keys to plot, titles, units), the per-second rows, live tiles, and, at the end of a run,
the final sections. The same script and the same specs draw a live page and a report, so a run's live page at
its end and its `report.html` look the same.

Charts are drawn by uPlot (`uPlot.iife.min.js` and `uPlot.min.css`: the release build of uPlot 1.6.32, MIT,
license in `uPlot.LICENSE`, taken unmodified from the npm registry's `uplot-1.6.32.tgz`, whose sha512 integrity
is `KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==`): 51 KB, where
plotly.js inlined into every report was 4.6 MB.

Live pages stream server-sent events (`events.py` keeps the history and fans rows out to the browsers).

Imports: the standard library and orjson only (nothing of the relay server or the load engine).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any

import orjson

UPLOT_VERSION = "1.6.32"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Inside <script type="application/json">: no "</script>", no "<!--", and the two line separators JSON allows
# but JavaScript source did not always.
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028",
                   0x2029: "\\u2029"}


@functools.cache
def asset(name: str) -> str:
    """The text of one file of this folder (read once)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside an HTML <script> element."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode().translate(_SCRIPT_ESCAPES)


def render_page(*, title: str, header: str, nav: Sequence[tuple[str, str]], body: str, data: Mapping[str, Any],
                footer: str) -> str:
    """The whole page. ``header``, ``body`` and ``footer`` are trusted HTML (their makers escape what they
    quote); ``title`` and the ``nav`` labels are text; ``data`` is what the page's script draws."""
    links = "".join(f'<a href="#{escape(anchor)}">{escape(label)}</a>' for anchor, label in nav)
    values = {
        "title": escape(title),
        "uplot_css": asset("uPlot.min.css"),
        "page_css": asset("page.css"),
        "header": header,
        "nav": links,
        "body": body,
        "footer": footer,
        "data": script_json(data),
        "uplot_js": asset("uPlot.iife.min.js"),
        "page_js": asset("charts.js") + "\n" + asset("page.js"),
    }
    # One pass over the template: a value is never searched for placeholders (the scripts contain braces).
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], asset("page.html"))


def chart_box(spec: Mapping[str, Any]) -> str:
    """The box a chart spec is drawn in: its title, a place for its controls, the plot, and its note."""
    note = f'<p class="note">{escape(spec["note"])}</p>' if spec.get("note") else ""
    return (f'<div class="chart" id="{escape(spec["id"])}" data-kind="{escape(spec["kind"])}">'
            f'<div class="head"><p class="title">{escape(spec["title"])}</p><div class="controls"></div></div>'
            f'<div class="plot"></div>{note}</div>')


def sse_message(data: bytes, event: str | None = None) -> bytes:
    """One server-sent event: ``data`` is one line of JSON (orjson writes no newline)."""
    head = b"event: " + event.encode("ascii") + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"


#: Sent first on every event stream: a browser that loses the stream asks again after a second.
SSE_RETRY = b"retry: 1000\n\n"
#: A comment line, sent on a quiet stream so that a browser that went away is noticed.
SSE_KEEPALIVE = b": keepalive\n\n"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
