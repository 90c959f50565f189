"""Runs started by hand, merged from their results folders into one, exactly: `flowrelay report --merge`.

Each folder holds what `flowrelay load --out` writes: summary.json (with `accounting`, the exact request
counts), timeseries.jsonl and latency.hlog (the seconds) and totals.hlog (the run's histograms, with the
exact sums beside the bucket counts: loadtest.outputs.hlog). The merged folder gets the same files, so
`flowrelay report` draws it like any run:

* the totals: request counts added up, every histogram merged (percentiles come from the merged counts,
  never from averaging the runs' percentiles), rates over the longest measured window, the target rates
  and connections added up, the thresholds of the first run evaluated again on the merged figures;
* the seconds: each run's second is placed on one time axis by its wall-clock start (latency.hlog's
  StartTime) and merged with the other runs' second that ends nearest the same whole second from the
  earliest start, so runs started together line up second by second.

Runs of different targets, endpoints or warm-ups are not merged (their figures do not add up).
Imports loadtest.measure, loadtest.thresholds and loadtest.outputs (summary, hlog, timeseries, report).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import thresholds as thresholds_mod
from loadtest.measure.accounting import Accounting
from loadtest.measure.recorder import Recorder
from loadtest.measure.series import Interval
from loadtest.outputs.hlog import (
    INTERVALS_FILE,
    TOTAL_TAGS,
    TOTALS_FILE,
    IntervalLog,
    LogError,
    read_log,
    write_totals,
)
from loadtest.outputs.report import ResultsError, load_results
from loadtest.outputs.summary import figures, write_summary
from loadtest.outputs.timeseries import SeriesFiles

# Keys that must agree for runs to be merged.
SAME = ("target", "transport", "endpoint", "warmup_s")


class MergeError(ValueError):
    """Folders that cannot be merged; the message says which and why."""


@dataclass
class RunFolder:
    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    totals: IntervalLog
    seconds: IntervalLog

    def recorder(self) -> Recorder:
        tags = {i.tag for i in self.totals.intervals}
        missing = [t for t in TOTAL_TAGS if t not in tags]
        if missing:
            raise MergeError(f"{self.path / TOTALS_FILE}: no {', '.join(missing)} histogram")
        try:
            (totals,) = self.totals.spans()
        except (LogError, ValueError):
            raise MergeError(f"{self.path / TOTALS_FILE}: not one run's totals") from None
        return Recorder.from_parts(float(self.summary["warmup_s"]), totals,
                                   Accounting.from_plain(self.summary["accounting"]))


def read_folder(path: Path) -> RunFolder:
    try:
        results = load_results(path)
        totals = read_log(path / TOTALS_FILE)
        seconds = read_log(path / INTERVALS_FILE)
    except (ResultsError, LogError) as exc:
        raise MergeError(str(exc)) from None
    if "accounting" not in results.summary:
        raise MergeError(f"{path}: summary.json has no `accounting` (written by an older flowrelay): run it again")
    return RunFolder(path, results.summary, results.rows, totals, seconds)


def _added(runs: list[RunFolder], key: str) -> Any:
    values = [r.summary.get(key) for r in runs]
    return None if any(v is None for v in values) else sum(values)


def merge_folders(dirs: list[Path], out: Path) -> dict[str, Any]:
    """Merge the results folders `dirs` into `out` (summary.json, timeseries.jsonl, latency.hlog, totals.hlog);
    returns the merged summary. Raises MergeError."""
    if len(dirs) < 2:
        raise MergeError("give two results folders or more to merge")
    runs = [read_folder(d) for d in dirs]
    first = runs[0]
    for run in runs[1:]:
        differ = [k for k in SAME if run.summary.get(k) != first.summary.get(k)]
        if differ:
            raise MergeError(f"{run.path} and {first.path} differ in {', '.join(differ)}: their figures do not add up")
    recorder = runs[0].recorder()
    for run in runs[1:]:
        recorder.merge(run.recorder())
    measured_s = max(float(r.summary["measured_duration_s"]) for r in runs)
    rates = [r.summary["rate"]["target_rps"] for r in runs]
    dropped: Counter[str] = Counter()
    for run in runs:
        dropped.update(run.summary["requests"].get("dropped_by_reason") or {})
    start_wall = min(r.seconds.start_wall for r in runs)

    summary = dict(first.summary)
    summary.update(
        connections=_added(runs, "connections"),
        concurrency=_added(runs, "concurrency"),
        procs=_added(runs, "procs"),
        started_at=min(r.summary["started_at"] for r in runs),
        duration_s=max(float(r.summary["duration_s"]) for r in runs),
        docs={k: sum(int(r.summary["docs"][k]) for r in runs) for k in ("sent", "received")},
        reconnects=sum(int(r.summary.get("reconnects") or 0) for r in runs),
        late_answers=sum(int(r.summary.get("late_answers") or 0) for r in runs),
    )
    summary.update(figures(recorder, measured_s, None if None in rates else sum(rates), dropped))
    summary["merged_from"] = [str(r.path) for r in runs]
    exprs = [t["expr"] for t in first.summary.get("thresholds") or []]
    summary["thresholds"] = thresholds_mod.evaluate(exprs, summary)

    out.mkdir(parents=True, exist_ok=True)
    series = SeriesFiles(out, start_wall)
    try:
        for interval in _merged_seconds(runs, start_wall):
            series.add(interval.to_row(), interval)
    finally:
        series.close()
    write_summary(out, summary)
    write_totals(out / TOTALS_FILE, start_wall, float(summary["duration_s"]), recorder)
    return summary


def _merged_seconds(runs: list[RunFolder], start_wall: float) -> list[Interval]:
    seconds: dict[int, Interval] = {}
    for run in runs:
        try:
            spans = run.seconds.spans()
        except LogError as exc:
            raise MergeError(f"{run.path / INTERVALS_FILE}: {exc}") from None
        if len(run.rows) != len(spans):
            raise MergeError(f"{run.path}: {len(run.rows)} rows in timeseries.jsonl but {len(spans)} seconds in "
                             f"{INTERVALS_FILE}: the folder is incomplete")
        shift_s = run.seconds.start_wall - start_wall
        for row, h in zip(run.rows, spans, strict=True):
            interval = Interval.from_row(row, h.latency, h.service_time, h.scheduler_lag, h.hops, shift_s)
            k = round(interval.end_s)
            if k in seconds:
                seconds[k].merge(interval)
            else:
                seconds[k] = interval
    return [seconds[k] for k in sorted(seconds)]
