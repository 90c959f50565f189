"""What a load run returns, and how the results of its workers merge into one: exactly, whatever the number of
workers (processes here; machines for a coordinator that shards the schedule across them).

A worker's result (`WorkerResult`) is plain data (its recorder as a msgpack-able snapshot), so that it crosses a
process boundary; `merge_results` adds workers' results into the run's (`RunResult`: HdrHistograms and counts merge
exactly); `merge_second` merges the workers' k-th second of the time series into one interval.

Imports loadtest.config and loadtest.measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtest.config import LoadConfig
from loadtest.measure.recorder import Recorder
from loadtest.measure.replay_diff import ReplayDiff
from loadtest.measure.series import Interval


@dataclass
class Totals:
    """What a worker counts besides its recorder; a run's are its workers' added up (`merge_results`)."""

    negotiated: str | None
    docs_sent: int
    docs_received: int
    started_wall: float
    elapsed_s: float
    reconnects: int
    late_answers: int
    dropped_by_reason: dict[str, int]
    dispatch_end_s: float


@dataclass
class WorkerResult(Totals):
    snapshot: dict[str, Any]  # the worker's Recorder
    intervals: int  # rows of the time series this worker closed (they went to its sink or its parent)
    replay_diff: dict[str, Any] | None = None  # ReplayDiff.to_plain() of a replay run

    def to_plain(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class RunResult(Totals):
    cfg: LoadConfig
    recorder: Recorder
    intervals: int  # rows of the time series (handed to the run's RowSink as they closed, not kept)
    replay_diff: ReplayDiff | None = None  # a replay run's answers against the recorded ones

    def measured_duration_s(self) -> float:
        """The window the figures cover: the schedule's length (or the time spent sending), less warm-up."""
        cfg = self.cfg
        if cfg.stages:
            planned: float | None = sum(d for d, _ in cfg.stages)
        else:
            planned = cfg.duration_s
        if planned is None or (cfg.requests and self.dispatch_end_s < planned):
            planned = self.dispatch_end_s
        return max(planned - cfg.warmup_s, 1e-9)


def merge_results(cfg: LoadConfig, results: list[WorkerResult], intervals: int | None = None) -> RunResult:
    """One RunResult from every worker's; `intervals` counts the merged time series' rows (one worker's own when
    None)."""
    recorder = Recorder.from_snapshot(results[0].snapshot)
    for r in results[1:]:
        recorder.merge(Recorder.from_snapshot(r.snapshot))
    dropped: dict[str, int] = {}
    for r in results:
        for k, v in r.dropped_by_reason.items():
            dropped[k] = dropped.get(k, 0) + v
    diff: ReplayDiff | None = None
    for r in results:
        if r.replay_diff is not None:
            part = ReplayDiff.from_plain(r.replay_diff)
            if diff is None:
                diff = part
            else:
                diff.merge(part)
    return RunResult(
        cfg=cfg,
        recorder=recorder,
        intervals=results[0].intervals if intervals is None else intervals,
        negotiated=results[0].negotiated,
        docs_sent=sum(r.docs_sent for r in results),
        docs_received=sum(r.docs_received for r in results),
        started_wall=min(r.started_wall for r in results),
        elapsed_s=max(r.elapsed_s for r in results),
        reconnects=sum(r.reconnects for r in results),
        late_answers=sum(r.late_answers for r in results),
        dropped_by_reason=dropped,
        dispatch_end_s=max(r.dispatch_end_s for r in results),
        replay_diff=diff,
    )


def merge_second(parts: list[dict[str, Any]]) -> Interval:
    """One interval from the workers' intervals (`Interval.to_plain`) of the same second: their k-th."""
    merged = Interval.from_plain(parts[0])
    for part in parts[1:]:
        merged.merge(Interval.from_plain(part))
    return merged
