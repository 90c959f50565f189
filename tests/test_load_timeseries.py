"""The time series of a long run streams to `timeseries.jsonl` and is not kept in memory.

A soak runs for hours; its memory must not grow with its length. These tests push thousands of seconds
through the engine's own code with a fake clock (no network, no waiting): a single worker closing its
intervals, and the parent of several workers merging theirs off the queue. Each checks that every second
reached the file, in order and with the documented keys, while the rows held in memory (and the memory
allocated and still alive) stayed bounded.
"""

from __future__ import annotations

import gc
import queue
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadtest.config import LoadConfig
from loadtest.engine import Worker
from loadtest.measure.recorder import Recorder
from loadtest.measure.series import Interval
from loadtest.outputs.timeseries import TimeSeriesFile
from loadtest.procs import _collect
from loadtest.result import WorkerResult

WARM_S = 100  # seconds before measuring: allocators, caches and the file's buffer settle
MID_S = 500  # memory in use here ...
SECONDS = 1500  # ... and here must be the same: keeping each row (~1 KB) would add ~1 MB in between
PER_SECOND = 10  # requests sent and answered each second
# What the memory in use may differ by between MID_S and SECONDS: noise, nothing per second.
GROWTH_LIMIT_BYTES = 64 * 1024
ROW_KEYS = list(Interval(0.0).to_row())


def _rows_alive() -> int:
    """Time-series rows (dicts shaped like Interval.to_row's) that something still holds."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is dict and "sent_rps" in o and "service_p99_ms" in o)


class _Growth:
    """How much more memory is in use (tracemalloc, allocated since `start`) at `stop` than at `mark`,
    and how many rows are alive at `stop`. What a run holds whatever its length (the open interval's
    histograms, the file's buffer) is in use at both points, so only what grows with the run counts."""

    def __init__(self) -> None:
        self.bytes = -1
        self.rows = -1
        self._at_mark = 0

    def start(self) -> None:
        gc.collect()
        tracemalloc.start()

    def mark(self) -> None:
        gc.collect()
        self._at_mark = tracemalloc.get_traced_memory()[0]

    def stop(self) -> None:
        gc.collect()
        self.bytes = tracemalloc.get_traced_memory()[0] - self._at_mark
        tracemalloc.stop()
        self.rows = _rows_alive()


def _read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _one_second(record: Callable[[float], None], k: int) -> None:
    for i in range(PER_SECOND):
        record(k + i / PER_SECOND)


def test_single_worker_streams_every_second_and_keeps_none(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.jsonl"
    series = TimeSeriesFile(path)
    cfg = LoadConfig(target="ws://127.0.0.1:9", rate=float(PER_SECOND), duration_s=float(SECONDS))
    worker = Worker(cfg, 0, 1, "soak", series=series)
    recorder = worker.recorder

    def record(due: float) -> None:
        recorder.on_sent(due, due)
        recorder.on_answer(due, due, due + 0.002)

    def run_seconds(first: int, last: int) -> None:
        for k in range(first, last):
            _one_second(record, k)
            worker.meter.close_interval(k + 1.0, 0, None)

    run_seconds(0, WARM_S)
    growth = _Growth()
    growth.start()
    try:
        run_seconds(WARM_S, MID_S)
        growth.mark()
        run_seconds(MID_S, SECONDS)
    finally:
        growth.stop()
    assert growth.rows == 0, "no second's row is held once it is written"
    assert growth.bytes < GROWTH_LIMIT_BYTES, f"{growth.bytes} bytes more in use after {SECONDS - MID_S} seconds"

    # The run ends 0.2 s into the next second: that sliver joins the last full second's row.
    end = SECONDS
    _one_second(lambda due: record(end + (due - end) / 10), end)
    worker.meter.close_series(end + 0.2, 0, None)
    series.close()

    rows = _read(path)
    assert len(rows) == end == worker.meter.intervals
    assert all(list(row) == ROW_KEYS for row in rows)
    assert [row["t"] for row in rows[:-1]] == [float(k) for k in range(1, end)]
    assert rows[-1]["t"] == pytest.approx(end + 0.2)
    assert rows[-1]["interval_s"] == pytest.approx(1.2)
    assert rows[-1]["sent"] == rows[-1]["ok"] == 2 * PER_SECOND
    assert sum(row["sent"] for row in rows) == recorder.accounting.sent == (end + 1) * PER_SECOND


class _WorkerQueue:
    """What two forked workers would put on the queue: the first worker's k-th second arrives while the
    second worker is still `lag` seconds behind, then both workers' results. Made as it is read, so the
    messages themselves hold no memory. `growth` starts at WARM_S, is marked at MID_S and stopped once
    every interval has been read."""

    def __init__(self, seconds: int, lag: int, growth: _Growth) -> None:
        self._messages = self._make(seconds, lag, growth)

    @staticmethod
    def _interval(k: int, worker: int, same: dict[str, Any]) -> dict[str, Any]:
        # Workers close a second a hair apart; the counts and histograms are the same every second.
        return {**same, "start_s": float(k), "end_s": k + 1.0 + worker * 0.001}

    def _make(self, seconds: int, lag: int, growth: _Growth) -> Iterator[tuple[str, int, Any]]:
        interval = Interval(0.0)
        interval.sent = interval.answered = interval.ok = PER_SECOND
        for i in range(PER_SECOND):
            interval.latency.record(0.001 * (i + 1))
            interval.service_time.record(0.001 * (i + 1))
        same = interval.to_plain()
        del interval
        for k in range(seconds + lag):
            if k == WARM_S:
                growth.start()
            elif k == MID_S:
                growth.mark()
            if k < seconds:
                yield ("interval", 0, self._interval(k, 0, same))
            if k >= lag:
                yield ("interval", 1, self._interval(k - lag, 1, same))
        growth.stop()
        for worker in (0, 1):
            result = WorkerResult(snapshot=Recorder().snapshot(), intervals=seconds, negotiated=None, docs_sent=0,
                                  docs_received=0, started_wall=time.time(), elapsed_s=float(seconds),
                                  reconnects=0, late_answers=0, dropped_by_reason={},
                                  dispatch_end_s=float(seconds))
            yield ("result", worker, result.to_plain())

    def get(self, timeout: float) -> tuple[str, int, Any]:
        try:
            return next(self._messages)
        except StopIteration:
            raise queue.Empty from None

    def empty(self) -> bool:
        return True


def test_parent_merges_each_second_of_its_workers_and_keeps_none(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.jsonl"
    series = TimeSeriesFile(path)
    seconds = SECONDS
    cfg = LoadConfig(target="ws://127.0.0.1:9", rate=2.0 * PER_SECOND, duration_s=float(seconds), procs=2,
                     connections=2)
    growth = _Growth()
    shown: list[float] = []
    out = _WorkerQueue(seconds, lag=3, growth=growth)
    try:
        result = _collect(cfg, [], out, lambda row: shown.append(row["t"]), None, series)
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    series.close()
    assert growth.rows <= 1, "no merged row is held once it is written (but the last, in a local variable)"
    assert growth.bytes < GROWTH_LIMIT_BYTES, f"{growth.bytes} bytes more in use after {SECONDS - MID_S} seconds"

    rows = _read(path)
    assert len(rows) == seconds == result.intervals == len(shown)
    assert all(list(row) == ROW_KEYS for row in rows)
    assert [row["t"] for row in rows] == shown == [pytest.approx(k + 1.001) for k in range(seconds)]
    assert all(row["sent"] == row["ok"] == 2 * PER_SECOND for row in rows)
    assert all(row["p50_ms"] == pytest.approx(5.0, abs=0.01) for row in rows)


def test_series_file_is_readable_as_it_grows_and_replaces_an_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "timeseries.jsonl"
    earlier = b'{"t":99.0}\n' * 5
    path.write_bytes(earlier)
    never_connected = TimeSeriesFile(path)
    never_connected.close(complete=False)
    assert path.read_bytes() == earlier, "a run that wrote no second leaves an earlier run's file alone"

    series = TimeSeriesFile(path)
    series.add({"t": 1.0})
    assert _read(path) == [{"t": 1.0}], "each second is on disk as soon as it closes"
    series.add({"t": 2.0})
    series.replace_last({"t": 2.2})
    series.close()
    assert _read(path) == [{"t": 1.0}, {"t": 2.2}]

    quiet = TimeSeriesFile(tmp_path / "quiet" / "timeseries.jsonl")
    quiet.close()
    assert quiet.path.read_bytes() == b"", "a finished run always has its file, if empty"
