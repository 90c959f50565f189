"""The live terminal line: one line per second of a run, as k6 and wrk users expect to watch."""

from __future__ import annotations

import sys
from typing import Any, TextIO


def _ms(value: float | None) -> str:
    if value is None:
        return "    -   "
    if value >= 1000:
        return f"{value / 1000:6.2f} s "
    return f"{value:6.2f} ms"


def format_row(row: dict[str, Any]) -> str:
    """`elapsed, sent/s, answered/s, in flight, p50/p99 of the interval, errors` on one line."""
    warm = " warmup" if row.get("warmup") else ""
    sent_rps = row.get("sent_rps") or 0.0
    ok_rps = row.get("ok_rps") or 0.0
    interval = row.get("interval_s") or 1.0
    answered_rps = row.get("answered", 0) / interval if interval else 0.0
    return (
        f"{row['t']:7.1f}s  sent {sent_rps:9.1f}/s  answered {answered_rps:9.1f}/s  ok {ok_rps:9.1f}/s  "
        f"in flight {row.get('inflight', 0):5d}  p50 {_ms(row.get('p50_ms'))}  p99 {_ms(row.get('p99_ms'))}  "
        f"errors {row.get('errors', 0):4d}  dropped {row.get('dropped', 0):4d}{warm}"
    )


class LiveLine:
    """Prints each interval row as it closes."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled

    def __call__(self, row: dict[str, Any]) -> None:
        if self.enabled:
            print(format_row(row), file=self.stream, flush=True)
