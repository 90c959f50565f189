"""`--procs N`: a run split among N worker processes, forked before any event loop exists, and merged back.

Each worker runs its share (every n-th due time of the schedule, its share of the connections and users) in its
own event loop and talks to the parent over one queue: an interval per second (`interval`), its metrics sink's
state four times a second (`metrics`), and at the end its result (`result`), or why it could not run: `connect`
(the target could not be reached: ConnectError, exit 1 "cannot connect") or `crash` (anything else: the parent
raises WorkerCrashed, "worker N crashed: KeyError: 'x'", and stops the other workers at once). A worker that
dies without a word (killed) is a crash too. The parent merges the k-th second of every worker into one row once
all have reported it (loadtest.result.merge_second), hands it on and forgets it, and merges the results
(loadtest.result.merge_results). SIGTERM stops the workers too; a worker ends itself when its parent is gone.

Imports loadtest.config, loadtest.result and loadtest.measure (types); the worker itself is handed in
(loadtest.engine.run_worker), so this module knows nothing of sessions or models.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from loadtest.config import LoadConfig
from loadtest.measure.meter import MetricsSink, RowSink
from loadtest.measure.series import Interval
from loadtest.result import RunResult, WorkerResult, merge_results, merge_second
from loadtest.sessions.base import ConnectError
from relay.common.loop import describe_error

# How long after the last expected event (end of schedule, grace, connect timeout) the parent gives up waiting.
COLLECT_SLACK_S = 60.0
# How long a worker has to stop after the run (or a crash) before it is killed.
STOP_WAIT_S = 5.0


class WorkerCrashed(Exception):
    """A worker process failed (not a connection problem); the message names the worker and the error, and
    `details` holds the worker's traceback when it could send one."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class MetricsExporter(Protocol):
    """Serves the workers' metrics; owned by run_load's caller, which stops it."""

    def sink(self, worker: int) -> MetricsSink:
        """A sink for a worker in this process, read live by the exporter. (For forked workers the parent makes
        one each too, a placeholder at 0 until the worker's first `update`.)"""
        ...

    def sink_factory(self) -> Callable[[int], MetricsSink]:
        """Makes a worker's sink inside a worker process (picklable, for spawned processes)."""
        ...

    def update(self, worker: int, state: Any) -> None:
        """The latest state of a worker running in another process."""
        ...

    def start(self) -> None:
        """Begin serving (called after the worker processes are forked: no thread crosses a fork)."""
        ...


RunWorker = Callable[..., WorkerResult]


def _worker_main(run_worker: RunWorker, cfg: LoadConfig, index: int, n: int, run_id: str, out: Any,
                 make_sink: Callable[[int], MetricsSink] | None) -> None:
    """Entry point of a worker process: run, stream intervals (and metrics), send the result back."""
    sink = make_sink(index) if make_sink is not None else None

    def on_interval(interval: Interval, _row: dict[str, Any]) -> None:
        out.put(("interval", index, interval.to_plain()))

    def publish() -> None:
        # Four times a second, so that a scraper's rate() over the workers is not a second stale.
        out.put(("metrics", index, sink.state()))  # type: ignore[union-attr]

    try:
        result = run_worker(cfg, index, n, run_id, sink=sink, on_interval=on_interval,
                            publish=publish if sink is not None else None, parent_pid=os.getppid())
        if sink is not None:
            out.put(("metrics", index, sink.state()))  # the final counts, before the result
        out.put(("result", index, result.to_plain()))
    except ConnectError as exc:
        out.put(("connect", index, str(exc)))
    except BaseException as exc:  # the parent must hear of every way a worker ends
        out.put(("crash", index, (describe_error(exc), traceback.format_exc())))


def run_in_procs(cfg: LoadConfig, run_worker: RunWorker, on_row: Callable[[dict[str, Any]], None] | None,
                 metrics: MetricsExporter | None, series: RowSink | None) -> RunResult:
    """Run `cfg` in `cfg.procs` forked workers (each runs `run_worker`) and merge what they send."""
    run_id = uuid.uuid4().hex
    ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    out = ctx.Queue()
    make_sink = metrics.sink_factory() if metrics is not None else None
    procs = [ctx.Process(target=_worker_main, args=(run_worker, cfg, i, cfg.procs, run_id, out, make_sink),
                         daemon=True) for i in range(cfg.procs)]
    for p in procs:
        p.start()
    # SIGTERM must not leave the workers running: turn it into an exception that reaches the finally below.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _collect(cfg, procs, out, on_row, metrics, series)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=STOP_WAIT_S)
            if p.is_alive():
                p.kill()
                p.join(timeout=STOP_WAIT_S)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _collect(cfg: LoadConfig, procs: list[Any], out: Any, on_row: Callable[[dict[str, Any]], None] | None,
             metrics: MetricsExporter | None, series: RowSink | None = None) -> RunResult:
    """Read the workers' intervals, metrics and results off the queue until each has finished. A second is merged
    and handed on (`series`, then `on_row`) once every worker has reported it, then forgotten: only seconds some
    worker has yet to report are held, a few at most. The first crash ends the collection (WorkerCrashed)."""
    if metrics is not None:
        # Every worker's series exist at 0 from the start, so rate() and increase() see the first second.
        for i in range(cfg.procs):
            metrics.sink(i)
        metrics.start()
    results: dict[int, WorkerResult] = {}
    unreachable: list[str] = []
    reported: set[int] = set()  # workers whose last word (result or connect error) has come
    pending_rows: dict[int, dict[int, dict[str, Any]]] = {}
    next_k = 0
    counts = [0] * cfg.procs
    planned = (cfg.duration_s or 0) + sum(d for d, _ in cfg.stages or [])
    limit = planned + cfg.grace_s + cfg.connect_timeout_s + COLLECT_SLACK_S if planned else 24 * 3600
    deadline = time.monotonic() + limit
    while len(results) + len(unreachable) < cfg.procs and time.monotonic() < deadline:
        try:
            kind, worker, payload = out.get(timeout=1.0)
        except queue.Empty:
            silent = [i for i, p in enumerate(procs) if not p.is_alive() and i not in reported]
            if silent and out.empty():
                i = silent[0]
                raise WorkerCrashed(f"worker {i} crashed: its process ended (exit code {procs[i].exitcode}) "
                                    "without a result") from None
            continue
        if kind == "interval":
            k = counts[worker]
            counts[worker] += 1
            pending_rows.setdefault(k, {})[worker] = payload
            while next_k in pending_rows and len(pending_rows[next_k]) == cfg.procs:
                ready = pending_rows.pop(next_k)
                interval = merge_second([ready[w] for w in sorted(ready)])
                row = interval.to_row()
                if series is not None:
                    series.add(row, interval)
                if on_row is not None:
                    on_row(row)
                next_k += 1
        elif kind == "metrics":
            metrics.update(worker, payload)  # type: ignore[union-attr]
        elif kind == "result":
            results[worker] = WorkerResult(**payload)
            reported.add(worker)
        elif kind == "connect":
            unreachable.append(payload)
            reported.add(worker)
        else:
            message, details = payload
            raise WorkerCrashed(f"worker {worker} crashed: {message}", details)
    if unreachable:
        raise ConnectError("; ".join(sorted(set(unreachable))))
    if len(results) < cfg.procs:
        raise WorkerCrashed(f"only {len(results)} of {cfg.procs} workers reported a result in {limit:g} s")
    # Seconds that not every worker reached (a worker's last sliver): merged from those that did.
    for k in sorted(pending_rows):
        ready = pending_rows[k]
        if series is not None:
            interval = merge_second([ready[w] for w in sorted(ready)])
            series.add(interval.to_row(), interval)
    return merge_results(cfg, [results[i] for i in sorted(results)], next_k + len(pending_rows))
