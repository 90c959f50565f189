"""What an ingestion tells its user: a progress line on stderr about once a second, and the summary.

The progress line shows Documents settled (acknowledged + dead-lettered) in this run, the rate over the
last few seconds, how far through the input reading is (by bytes, when the size is known) with an ETA,
and the errors so far. On a terminal it rewrites itself in place; elsewhere (a log file) it prints one
line per update. Warnings (malformed records, with file and line) go through it so they do not tangle.

The summary is a plain dict (what `--json` prints and `--summary-json` writes); `format_summary` is its
text form. Imports relay.common.units and the ingest modules.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, TextIO

from loadtest.ingest.delivery import Delivery
from loadtest.ingest.readers import Input
from relay.common.units import format_duration

RATE_WINDOW_S = 5.0
MAX_WARNINGS = 20


class ProgressLine:
    """The live line, and the warnings printed above it."""

    def __init__(self, inp: Input, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.inp = inp
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._samples: deque[tuple[float, int, int]] = deque()
        self._warnings = 0
        self._shown = False
        self._started = time.monotonic()

    def warn(self, message: str) -> None:
        self._warnings += 1
        if self._warnings > MAX_WARNINGS:
            if self._warnings == MAX_WARNINGS + 1:
                message = "flowrelay ingest: more malformed records: see the dead-letter file"
            else:
                return
        self._clear()
        print(message, file=self.stream, flush=True)

    def __call__(self, delivery: Delivery) -> None:
        if not self.enabled:
            return
        line = self.format(delivery)
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._shown = True
        else:
            print(line, file=self.stream, flush=True)

    def done(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    def _clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False

    def format(self, delivery: Delivery) -> str:
        c = delivery.counters
        now = time.monotonic()
        settled = c.docs_acknowledged + c.docs_dead_lettered
        read_bytes = delivery.bytes_read
        samples = self._samples
        samples.append((now, settled, read_bytes))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_S:
            samples.popleft()
        t0, settled0, bytes0 = samples[0]
        span = now - t0
        if len(samples) < 2:  # the first line: the average since the start
            span = now - self._started
            settled0, bytes0 = 0, 0
        rate = (settled - settled0) / span if span > 0 else 0.0
        total = self.inp.total_bytes
        where = ""
        eta = "?"
        if total:
            fraction = min(read_bytes / total, 1.0)
            where = f"  {fraction * 100:5.1f}%"
            byte_rate = (read_bytes - bytes0) / span if span > 0 else 0.0
            if fraction >= 1.0:
                eta = "0s"
            elif byte_rate > 0:
                eta = format_duration((total - read_bytes) / byte_rate).replace(" ", "")
        elapsed = format_duration(now - self._started).replace(" ", "")
        return (
            f"ingest {elapsed:>7}  done {settled:,} (acked {c.docs_acknowledged:,}, dead {c.docs_dead_lettered:,})"
            f"  {rate:,.0f} docs/s{where}  ETA {eta}  in flight {delivery.inflight}"
            f"  errors {c.batches_failed:,}  retries {c.batches_retried:,}"
        )


def _int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def format_summary(s: dict[str, Any]) -> str:
    d, b = s["documents"], s["batches"]
    lines = [
        f"flowrelay ingest  {s['input']['name']} -> {s['target']} {s['endpoint']} ({s['subprotocol']}, batch "
        f"{s['batch']}, {s['connections']} x {s['max_inflight']} in flight)",
        f"  documents    read {d['read']:,}  sent {d['sent']:,}  acknowledged {d['acknowledged']:,}  "
        f"dead-lettered {d['dead_lettered']:,} ({d['malformed']:,} malformed)  unsettled {d['unsettled']:,}",
        f"  attempts     {b['attempts']:,} requests  failed {b['failed']:,} ({d['failed']:,} docs)  "
        f"retried {b['retried']:,} ({d['retried']:,} docs)",
    ]
    for reason, n in sorted(s["errors"].items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  error        {n:,} x {reason}")
    lines.append(f"  duration     {format_duration(s['duration_s'])}  {s['docs_per_s']:,.0f} docs/s acknowledged")
    t = s["totals"]
    if s["checkpoint"] is not None:
        ck = s["checkpoint"]
        resumed = f"; resumed with {s['resumed']['settled_before']:,} settled before" if s["resumed"] else ""
        lines.append(f"  checkpoint   {ck['path']}: {ck['writes']:,} writes{resumed}")
        lines.append(f"  whole input  {_int(t['records'])} records: acknowledged {t['acknowledged']:,}, "
                     f"dead-lettered {t['dead_lettered']:,}")
    if s["dead_letter"] is not None:
        lines.append(f"  dead letters {s['dead_letter']}")
    lines.append(f"  outcome      {s['outcome']} (exit {s['exit_code']})")
    return "\n".join(lines)
