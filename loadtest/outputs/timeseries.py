"""The per-second time series on disk: `timeseries.jsonl`, one JSON object per line, in time order, and beside it
the same seconds' histograms in `latency.hlog` (loadtest.outputs.hlog): `SeriesFiles` writes both.

Each row (keys: see `loadtest.measure.Interval.to_row`) is written as its second closes and then
forgotten: the engine hands rows over (`loadtest.measure.meter.RowSink`) and keeps none, so a soak of hours
costs no memory for its time series. Every line is flushed as it is written: `tail -f` follows a run,
and a run cut short leaves every second it completed.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson

from loadtest.measure.series import Interval
from loadtest.outputs.hlog import INTERVALS_FILE, IntervalLogFile

TIMESERIES_FILE = "timeseries.jsonl"


class TimeSeriesFile:
    """Writes rows to `path` as they come. The file is created with the first row (a run that cannot
    connect leaves no file behind) and replaces any file of an earlier run in the same place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0  # rows in the file so far
        self._fh: IO[bytes] | None = None
        self._last_at = 0  # where the last row starts, for `replace_last`
        self._closed = False

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        return self._fh

    def add(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        """Append a row (one second, closed)."""
        fh = self._open()
        self._last_at = fh.tell()
        fh.write(orjson.dumps(row) + b"\n")
        fh.flush()
        self.rows += 1

    def replace_last(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        """Write the last row again, amended: a run's final sliver of a second joins the second before it."""
        if self._fh is None or not self.rows:
            self.add(row)
            return
        fh = self._fh
        fh.seek(self._last_at)
        fh.truncate()
        fh.write(orjson.dumps(row) + b"\n")
        fh.flush()

    def close(self, complete: bool = True) -> None:
        """Close the file. `complete`: the run ended normally, so the file exists even if no second had
        anything to show (what a reader of the results folder expects)."""
        if self._closed:
            return
        self._closed = True
        if self._fh is None and complete:
            self._open()
        if self._fh is not None:
            self._fh.close()


class SeriesFiles:
    """A results folder's time series as the run goes (a `RowSink`): timeseries.jsonl and latency.hlog, second by
    second. `start_wall`: the wall-clock time of the run's second 0 when known (a cluster's T0); else the interval
    log takes it from its first second."""

    def __init__(self, out: Path, start_wall: float | None = None) -> None:
        self.rows = TimeSeriesFile(out / TIMESERIES_FILE)
        self.log = IntervalLogFile(out / INTERVALS_FILE, start_wall)

    def add(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        self.rows.add(row)
        if interval is not None:
            self.log.add(row, interval)

    def replace_last(self, row: dict[str, Any], interval: Interval | None = None) -> None:
        self.rows.replace_last(row)
        if interval is not None:
            self.log.replace_last(row, interval)

    def close(self, complete: bool = True) -> None:
        self.rows.close(complete)
        self.log.close(complete)
