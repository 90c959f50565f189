"""HdrHistogram interval logs (`.hlog`) in a results folder, readable by HdrHistogram's own tools.

Two files:

* `latency.hlog`: the seconds of timeseries.jsonl (warm-up included), as each closes: a line per histogram of
  the second, tagged `latency` (from the intended send time), `service_time` (from the actual send),
  `scheduler_lag` and `hop.NAME` (one per hop that second). HdrHistogram's HistogramLogProcessor and
  HistogramLogAnalyzer plot them (`-tag latency`); values are in microseconds, so give those tools
  `-outputValueUnitRatio 1000` for milliseconds.
* `totals.hlog`: the run's totals, one line per histogram (the same tags), warm-up excluded as in summary.json.

Every line is followed by a comment with what the bucket counts cannot carry: the exact sum (for the mean), max
and out-of-range counts. HdrHistogram readers skip comments; `flowrelay report --merge` reads them, so merged
figures are exact.

The format is HdrHistogram's (log format 1.2): `#[StartTime: ...]` and `#[BaseTime: ...]` headers in seconds
since the epoch, a legend, then `Tag=T,start,length,max,HISTFAAA...` lines with times relative to BaseTime.
hdrh's own writer is not used for the lines: in hdrhistogram 0.10.x it takes the start time in the wrong
unit, cannot tag a line, and floors the interval max to the unit; its reader reads what we write (the
tests check), though it takes a file name rather than a stream.

Imports: the standard library, hdrh and loadtest.measure.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hdrh.histogram import HdrHistogram

from loadtest.measure.histograms import LatencyHistogram
from loadtest.measure.recorder import Recorder
from loadtest.measure.series import Interval, RunTotals

INTERVALS_FILE = "latency.hlog"
TOTALS_FILE = "totals.hlog"
TOTAL_TAGS = ("latency", "service_time", "scheduler_lag")
HOP_PREFIX = "hop."
_MAX_UNIT_RATIO = 1000.0  # values are microseconds; Interval_Max is written in milliseconds
_EXTRAS = re.compile(r"#\[flowrelay Tag=(\S+) sum_us=(\d+) max_us=(\d+) over_range=(\d+) under_range=(\d+)\]")
_LINE = re.compile(r"Tag=([^,]+),([\d.]+),([\d.]+),([\d.]+),(\S+)")


class LogError(ValueError):
    """A file that is not an interval log flowrelay wrote."""


def _header(fh: IO[str], start_wall: float, what: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_wall)) + f".{int(start_wall * 1000) % 1000:03d}Z"
    fh.write(f"#[flowrelay: {what}; values in microseconds (-outputValueUnitRatio 1000 for ms)]\n")
    fh.write("#[Histogram log format version 1.2]\n")
    fh.write(f"#[StartTime: {start_wall:.3f} (seconds since epoch), {stamp}]\n")
    fh.write(f"#[BaseTime: {start_wall:.3f} (seconds since epoch)]\n")
    fh.write('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n')


def _lines(tagged: list[tuple[str, LatencyHistogram]], start_s: float, length_s: float) -> str:
    """Each histogram's interval line, and its exact figures in a comment after it."""
    text = []
    for tag, histogram in tagged:
        max_ms = histogram._max_us / _MAX_UNIT_RATIO if histogram.count else 0.0
        text.append(f"Tag={tag},{start_s:.3f},{length_s:.3f},{max_ms:.3f},{histogram.histoblob().decode('ascii')}\n"
                    f"#[flowrelay Tag={tag} sum_us={histogram._sum_us} max_us={histogram._max_us} "
                    f"over_range={histogram.over_range} under_range={histogram.under_range}]\n")
    return "".join(text)


def _tagged(latency: LatencyHistogram, service_time: LatencyHistogram, scheduler_lag: LatencyHistogram,
            hops: dict[str, LatencyHistogram]) -> list[tuple[str, LatencyHistogram]]:
    named = dict(zip(TOTAL_TAGS, (latency, service_time, scheduler_lag), strict=True))
    return [*named.items(), *((HOP_PREFIX + name, h) for name, h in hops.items())]


class IntervalLogFile:
    """`latency.hlog`, written a second at a time (the `RowSink` of a results folder, beside timeseries.jsonl).
    `start_wall` is the wall-clock time of the run's second 0 (T0); None: taken from the first interval."""

    def __init__(self, path: Path, start_wall: float | None = None) -> None:
        self.path = path
        self.start_wall = start_wall
        self._fh: IO[str] | None = None
        self._last_at = 0
        self._closed = False

    def _open(self, now_s: float) -> IO[str]:
        """The file, created (with its header) on first use; `now_s`: the run's clock now."""
        if self._fh is None:
            if self.start_wall is None:
                self.start_wall = time.time() - now_s
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="ascii")
            _header(self._fh, self.start_wall, "per-second histograms")
        return self._fh

    def add(self, row: object, interval: Interval) -> None:
        fh = self._open(interval.end_s)
        self._last_at = fh.tell()
        tagged = _tagged(interval.latency, interval.service_time, interval.lag, interval.hops)
        fh.write(_lines(tagged, interval.start_s, interval.end_s - interval.start_s))
        fh.flush()

    def replace_last(self, row: object, interval: Interval) -> None:
        if self._fh is None:
            self.add(row, interval)
            return
        self._fh.seek(self._last_at)
        self._fh.truncate()
        self.add(row, interval)

    def close(self, complete: bool = True) -> None:
        """Close the file. `complete`: the run ended normally, so the file exists even without a second in it."""
        if self._closed:
            return
        self._closed = True
        if self._fh is None and complete:
            self._open(0.0)
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_totals(path: Path, start_wall: float, length_s: float, recorder: Recorder) -> None:
    """`totals.hlog`: one line per histogram of the run, each with its exact extras in a comment."""
    tagged = _tagged(recorder.latency, recorder.service_time, recorder.scheduler_lag, recorder.hops)
    with path.open("w", encoding="ascii") as fh:
        _header(fh, start_wall, "the run's totals, warm-up excluded")
        fh.write(_lines(tagged, 0.0, length_s))


@dataclass
class LoggedInterval:
    tag: str
    start_s: float  # relative to the log's start time
    length_s: float
    histogram: LatencyHistogram


@dataclass
class IntervalLog:
    start_wall: float
    intervals: list[LoggedInterval]

    def tagged(self, tag: str) -> list[LoggedInterval]:
        return [i for i in self.intervals if i.tag == tag]

    def spans(self) -> list[RunTotals]:
        """The log's histograms grouped by the span they cover (a second, or the run), in order; a span begins
        with its `latency` line."""
        spans: list[RunTotals] = []
        for i in self.intervals:
            if i.tag == TOTAL_TAGS[0]:
                spans.append(RunTotals())
            elif not spans:
                raise LogError(f"a {i.tag} line before any {TOTAL_TAGS[0]} line")
            totals = spans[-1]
            if i.tag.startswith(HOP_PREFIX):
                totals.hops[i.tag[len(HOP_PREFIX):]] = i.histogram
            elif i.tag in TOTAL_TAGS:
                setattr(totals, i.tag, i.histogram)
        return spans


def read_log(path: Path) -> IntervalLog:
    """Every line of a log flowrelay wrote, decoded; exact where the comments say more than the counts."""
    start_wall: float | None = None
    lines_read: list[tuple[str, float, float, int, HdrHistogram]] = []
    extras: dict[int, tuple[int, int, int, int]] = {}  # the index of an interval line -> its exact figures
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LogError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if line.startswith("#[StartTime:"):
            start_wall = float(line.split()[1])
            continue
        exact = _EXTRAS.match(line)
        if exact:
            if not lines_read or lines_read[-1][0] != exact.group(1):
                raise LogError(f"{path}:{number}: figures for {exact.group(1)} without its interval line")
            sum_us, max_us, over, under = map(int, exact.groups()[1:])
            extras[len(lines_read) - 1] = (sum_us, max_us, over, under)
            continue
        match = _LINE.match(line)
        if match is None:
            continue  # comments and the legend
        tag, start_s, length_s, max_ms, payload = match.groups()
        try:
            hdr = HdrHistogram.decode(payload)
        except Exception as exc:  # base64, zlib and hdrh each raise their own types
            raise LogError(f"{path}:{number}: not an encoded histogram: {exc}") from None
        lines_read.append((tag, float(start_s), float(length_s), round(float(max_ms) * _MAX_UNIT_RATIO), hdr))
    if start_wall is None:
        raise LogError(f"{path}: no #[StartTime: ...] line: not an interval log flowrelay wrote")
    intervals = []
    for n, (tag, start_s, length_s, max_us, hdr) in enumerate(lines_read):
        # Without figures beside it, an interval's mean is its counts' (exact to the bucket, as any HDR tool's).
        sum_us, max_us, over, under = extras.get(n, (round(hdr.get_mean_value() * hdr.total_count), max_us, 0, 0))
        intervals.append(LoggedInterval(tag, start_s, length_s, LatencyHistogram.from_hdr(hdr, sum_us, max_us, over,
                                                                                           under)))
    return IntervalLog(start_wall, intervals)
