"""The coordinator's merger for `flowrelay load`: the workers' seconds and results -> one exact result.

Each worker's row of second k carries its interval (`Interval.to_plain`: counts and encoded HdrHistograms, per hop
too) and its figures so far (`WorkerResult.to_plain`: the recorder snapshot with every hop, counts, docs). Second k
is merged (loadtest.result.merge_second) once every worker still in the run has sent its k-th row (a worker that
handed its result over has sent all its rows; a lost one is not waited for), and goes to the merged results
folder (timeseries.jsonl and latency.hlog), the live line and, with `--dashboard`, worker 0's live dashboard (its
thresholds judged on the merged seconds, and each worker's rate and health); nothing else of a second is kept.
The figures so far are kept per worker (the latest only, still encoded) for a worker that is lost: what it had
done until its last row counts, and what it had in flight then is `unanswered`.

At the end: the workers' results merged (loadtest.result.merge_results: histograms merged exactly, percentiles
never averaged), summary.json with `workers` {count, lost, clock_offsets_ms, aborted, coordinator_cpu_s} and
`per_worker` (each worker's own figures), thresholds evaluated on the merged figures, totals.hlog and the run's
report.html (loadtest.outputs.report). The exit code
is the run's: 1 aborted or a worker lost, else 99 when a threshold failed, else 0.

Also here: what every worker must agree on (`comparable_options`) and a worker's share of the run
(`share_config`), for its own results folder. Imports loadtest (result, config, measure, models.base, outputs,
thresholds) and loadtest.cluster.coordinator (types).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from loadtest import thresholds as thresholds_mod
from loadtest.cluster.coordinator import LostWorker, Outcome
from loadtest.config import LoadConfig
from loadtest.measure.recorder import Recorder
from loadtest.models.base import share
from loadtest.outputs.dashboard import DashboardServer, run_feed
from loadtest.outputs.live import LiveLine
from loadtest.outputs.report import REPORT_FILE, ResultsError, write_report
from loadtest.outputs.summary import build_summary, print_summary, write_results
from loadtest.outputs.timeseries import SeriesFiles
from loadtest.result import WorkerResult, merge_results, merge_second

EXIT_OK, EXIT_RUN_FAILED, EXIT_THRESHOLDS = 0, 1, 99
# Options that may differ from worker to worker: where each serves its metrics and dashboard, where it writes its
# request log.
PER_WORKER = ("metrics_port", "metrics_host", "metrics_linger_s", "log_requests", "procs", "dashboard",
              "dashboard_linger_s")
PER_WORKER_FIGURES = ("requests", "rate", "latency_ms", "service_time_ms", "scheduler_lag_ms", "docs")


def comparable_options(cfg: LoadConfig) -> dict[str, Any]:
    """The run's options as plain data, for the coordinator to check that every worker runs the same."""
    plain = dataclasses.asdict(cfg)
    for key in PER_WORKER:
        plain.pop(key, None)
    return orjson.loads(orjson.dumps(plain, default=str))


def share_config(cfg: LoadConfig, index: int, workers: int) -> LoadConfig:
    """Worker `index`'s part of the run, as its own results folder describes it: its connections and users, and
    1/N of the target rate (its requests are every N-th of the schedule). A replay's connections are its share of
    the recorded ones (connection r goes to worker r mod N)."""
    return dataclasses.replace(
        cfg,
        connections=share(cfg.connections, index, workers) or 1,
        concurrency=share(cfg.concurrency, index, workers) if cfg.concurrency else None,
        rate=cfg.rate / workers if cfg.rate else None,
        stages=[(d, r / workers) for d, r in cfg.stages] if cfg.stages else None,
        requests=share(cfg.requests, index, workers) if cfg.requests else None,
        procs=1,
    )


def settle_lost(partial: WorkerResult) -> WorkerResult:
    """A lost worker's figures as of its last row: what it had in flight is counted as `unanswered`."""
    recorder = Recorder.from_snapshot(partial.snapshot)
    for ledger in (recorder.accounting, recorder.accounting.warmup):
        ledger.unanswered += ledger.in_flight
    return dataclasses.replace(partial, snapshot=recorder.snapshot())


@dataclasses.dataclass
class _WorkerSeen:
    """What the merger last heard from a worker: for the dashboard's table of workers."""

    interval: dict[str, Any]
    at: float  # time.monotonic()


class LoadMerger:
    """See the module's docstring; `exprs` are the run's thresholds, `out` worker 0's --out (or None), `dashboard`
    worker 0's live dashboard (or None; served from this process)."""

    def __init__(self, cfg: LoadConfig, workers: int, out: Path | None, exprs: list[str], live: LiveLine,
                 json_output: bool, dashboard: DashboardServer | None = None) -> None:
        self.cfg = cfg
        self.workers = workers
        self.out = out
        self.exprs = exprs
        self.live = live
        self.json_output = json_output
        self.dashboard = dashboard
        self.files: SeriesFiles | None = None
        self.series: Any = None  # the RowSink of the merged seconds: the files, through the dashboard's feed
        self.rows_emitted = 0
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}  # second -> worker -> interval (plain)
        self.partial: dict[int, dict[str, Any]] = {}  # worker -> its latest figures so far (plain)
        self.rows_of: dict[int, int] = {}  # worker -> rows received
        self.seen: dict[int, _WorkerSeen] = {}
        self.results: dict[int, WorkerResult] = {}
        self.lost_workers: dict[int, LostWorker] = {}
        if dashboard is not None:  # served from the start: the page shows the workers as they come
            dashboard.start()
            self._show_workers()

    # ---- the coordinator's events ----------------------------------------------------------------

    def started(self, t0: float, clock_offsets_ms: dict[int, float]) -> None:
        if self.out is not None:
            self.files = self.series = SeriesFiles(self.out, start_wall=t0)
        if self.dashboard is not None:
            self.series = run_feed(self.dashboard, self.cfg, self.exprs, self.files)
            self._show_workers()

    def row(self, worker: int, k: int, payload: Any) -> None:
        self.pending.setdefault(k, {})[worker] = payload["interval"]
        self.partial[worker] = payload["partial"]
        self.rows_of[worker] = k + 1
        self.seen[worker] = _WorkerSeen(payload["interval"], time.monotonic())
        self._emit_ready()

    def lost(self, worker: LostWorker) -> None:
        self.lost_workers[worker.index] = worker
        self._emit_ready()
        self._show_workers()

    def result(self, worker: int, payload: Any) -> None:
        self.results[worker] = WorkerResult(**payload)
        self._emit_ready()
        self._show_workers()

    def _waiting_for(self, k: int) -> bool:
        """Some worker still in the run has not sent its k-th row yet."""
        return any(w not in self.results and w not in self.lost_workers and self.rows_of.get(w, 0) <= k
                   for w in range(self.workers))

    def _emit_ready(self) -> None:
        emitted = False
        while self.rows_emitted in self.pending and not self._waiting_for(self.rows_emitted):
            self._emit(self.pending.pop(self.rows_emitted))
            self.rows_emitted += 1
            emitted = True
        if emitted:
            self._show_workers()

    def _emit(self, parts: dict[int, dict[str, Any]]) -> None:
        interval = merge_second([parts[w] for w in sorted(parts)])
        row = interval.to_row()
        if self.series is not None:
            self.series.add(row, interval)
        self.live(row)

    def _show_workers(self) -> None:
        """Each worker's rate (its last second) and health, on the dashboard."""
        if self.dashboard is None:
            return
        now = time.monotonic()
        table = []
        for w in range(self.workers):
            seen = self.seen.get(w)
            lost = self.lost_workers.get(w)
            figures: dict[str, Any] = {"worker": w, "healthy": lost is None,
                                       "health": lost.describe() if lost is not None
                                       else "done" if w in self.results else "running" if seen else "starting",
                                       "sent_rps": None, "ok_rps": None, "errors_rps": None,
                                       "age_s": round(now - seen.at, 1) if seen else None}
            if seen is not None:
                span = float(seen.interval["end_s"]) - float(seen.interval["start_s"])
                if span > 0:
                    for key in ("sent", "ok", "errors"):
                        figures[f"{key}_rps"] = round(int(seen.interval[key]) / span, 1)
            table.append(figures)
        self.dashboard.set_workers(table)

    # ---- the end ---------------------------------------------------------------------------------

    def finish(self, outcome: Outcome) -> int:
        try:
            return self._finish(outcome)
        finally:
            if self.dashboard is not None:
                sys.stdout.flush()
                with contextlib.suppress(KeyboardInterrupt):
                    self.dashboard.linger()
                self.dashboard.close()

    def _finish(self, outcome: Outcome) -> int:
        for k in sorted(self.pending):  # seconds some worker never reached (its last sliver, or it was lost)
            self._emit(self.pending[k])
        self.pending.clear()
        if self.files is not None:
            self.files.close(complete=outcome.started)
        if not outcome.started:
            print(f"flowrelay load: the run did not start: {outcome.aborted}", file=sys.stderr, flush=True)
            return EXIT_RUN_FAILED
        each: dict[int, WorkerResult] = dict(self.results)
        for index, plain in self.partial.items():
            if index not in each:
                each[index] = settle_lost(WorkerResult(**plain))
        if not each:
            print(f"flowrelay load: no worker sent any figures: {outcome.aborted}", file=sys.stderr, flush=True)
            return EXIT_RUN_FAILED
        merged = merge_results(self.cfg, [each[i] for i in sorted(each)], self.rows_emitted)
        summary = build_summary(merged)
        summary["workers"] = {
            "count": self.workers,
            "lost": [{"worker": w.index, "at_s": w.at_s, "reason": w.reason} for w in outcome.lost],
            "clock_offsets_ms": [outcome.clock_offsets_ms.get(i) for i in range(self.workers)],
            "aborted": outcome.aborted,
            # The coordinator's own process (forked by worker 0: its CPU count starts at the fork).
            "coordinator_cpu_s": round(time.process_time(), 3),
        }
        summary["per_worker"] = [self._own_figures(i, each.get(i), outcome) for i in range(self.workers)]
        summary["thresholds"] = thresholds_mod.evaluate(self.exprs, summary)
        if self.out is not None:
            write_results(self.out, summary, merged, outcome.t0)
            try:
                write_report(self.out, self.out / REPORT_FILE)
            except (ResultsError, OSError) as exc:
                print(f"flowrelay load: the report could not be written: {exc}", file=sys.stderr)
        if self.dashboard is not None:
            self._show_workers()
            self.dashboard.finish(summary)
        print_summary(summary, self.json_output)
        if not self.json_output:
            lost = "; ".join(self.lost_workers[i].describe() for i in sorted(self.lost_workers)) or "none lost"
            offsets = ", ".join(f"{ms:+.1f}" for ms in outcome.clock_offsets_ms.values())
            print(f"workers     {self.workers} ({lost}); clock offsets {offsets} ms")
            if self.out is not None:
                print(f"\nresults in {self.out}/ (report: {REPORT_FILE}; each worker's own in {self.out}/worker-K/)")
        sys.stdout.flush()
        if outcome.aborted is not None or outcome.lost:
            return EXIT_RUN_FAILED
        if any(not t["ok"] for t in summary["thresholds"]):
            return EXIT_THRESHOLDS
        return EXIT_OK

    def _own_figures(self, index: int, result: WorkerResult | None, outcome: Outcome) -> dict[str, Any]:
        lost = self.lost_workers.get(index)
        figures: dict[str, Any] = {"worker": index, "host": outcome.hosts.get(index),
                                   "lost_at_s": lost.at_s if lost else None}
        if result is not None:
            own = build_summary(merge_results(share_config(self.cfg, index, self.workers), [result]))
            figures.update({key: own[key] for key in PER_WORKER_FIGURES})
        return figures
