"""`flowrelay load ... --workers N --coordinator HOST:PORT`: one worker's run, and worker 0's coordinator.

Every worker runs the same command. Worker 0 (the index from `--worker-index`, else JOB_COMPLETION_INDEX, else the
coordinator's choice) first forks the coordinator (loadtest.cluster.host) with a LoadMerger, which prints the
cluster's live line and summary, feeds worker 0's `--dashboard` and writes the merged results to --out; its exit
code is the run's. Then every worker, worker 0 included:

1. joins the coordinator (retrying until --barrier-timeout while worker 0 is not up);
2. runs the engine's `Worker` (loadtest.engine) for its index: its share of the connections and users, every
   N-th request of the one global schedule (seeded by the coordinator), a replay's recorded connections r with
   r mod N == its index; the coordinator's barrier is its start gate, so its clock starts at T0;
3. streams a row per second (its interval, from the Meter's `on_interval`, and its figures so far,
   `Worker.result()`), and at the end hands its result over; when the run is aborted it stops (`Worker.stop`:
   its sessions close) and still hands over what it did;
4. writes its own share to --out/worker-K/ (summary.json, timeseries.jsonl, .hlog files: the parts that
   `flowrelay report --merge` adds up to the whole), and exits 0, or 1 with the reason when it could not
   take its part or the run was aborted (refused, aborted, arrived after the start, lost the coordinator).

Imports loadtest (engine, result, config, outputs), relay.common.loop and loadtest.cluster.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from loadtest.cluster.client import ClusterError, ClusterOptions, WorkerClient
from loadtest.cluster.host import ClusterUsage, run_as_worker
from loadtest.cluster.load_merge import LoadMerger, comparable_options, share_config
from loadtest.config import LoadConfig
from loadtest.engine import Worker
from loadtest.measure.meter import MetricsSink
from loadtest.measure.series import Interval
from loadtest.outputs.dashboard import DashboardServer
from loadtest.outputs.live import LiveLine
from loadtest.outputs.summary import build_summary, format_table, write_results
from loadtest.outputs.timeseries import SeriesFiles
from loadtest.procs import MetricsExporter
from loadtest.result import WorkerResult, merge_results
from loadtest.sessions.base import ConnectError
from relay.common import loop as event_loop

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


@dataclasses.dataclass
class LoadWorkerRun:
    """What the CLI hands over: the run, the cluster options and the outputs. `dashboard`: worker 0's (bound,
    not serving: the coordinator's process serves it with the merged seconds)."""

    cfg: LoadConfig
    opts: ClusterOptions
    bind: str
    exprs: list[str]
    out: Path | None
    quiet: bool
    json_output: bool
    exporter: MetricsExporter | None
    dashboard: DashboardServer | None = None


def run_worker(run: LoadWorkerRun) -> int:
    """This process's part of the run; returns its exit code (worker 0: the run's)."""

    def merger() -> LoadMerger:
        return LoadMerger(run.cfg, run.opts.workers, run.out, run.exprs, LiveLine(enabled=not run.quiet),
                          run.json_output, run.dashboard)

    def part(client: WorkerClient) -> int:
        if run.dashboard is not None:
            run.dashboard.close()  # this process's copy of its socket: the coordinator's process serves it
        return _take_part(run, client)

    try:
        return run_as_worker(run.opts, run.bind, "load", comparable_options(run.cfg), run.cfg.seed, merger, part)
    except ClusterUsage as exc:
        print(f"flowrelay load: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _take_part(run: LoadWorkerRun, client: WorkerClient) -> int:
    index = client.index
    assert index is not None
    workers = run.opts.workers
    cfg = dataclasses.replace(run.cfg, seed=client.seed)
    own_out = run.out / f"worker-{index}" if run.out is not None else None
    if own_out is not None:
        own_out.mkdir(parents=True, exist_ok=True)
        if cfg.log_requests is not None:
            cfg = dataclasses.replace(cfg, log_requests=own_out / cfg.log_requests.name)
    series = SeriesFiles(own_out) if own_out is not None else None
    # Worker 0's terminal shows the cluster's line (the coordinator's); the others show their own.
    live = LiveLine(enabled=not run.quiet and index != 0)
    sink = None
    if run.exporter is not None:
        sink = run.exporter.sink(index)
        run.exporter.start()
    result: WorkerResult | None = None
    failure: str | None = None
    try:
        result, failure = event_loop.run(_work, client, cfg, workers, live, sink, series)
    except ClusterError as exc:
        failure = str(exc)
    finally:
        if series is not None:
            series.close(complete=result is not None)
    if result is not None:
        own = merge_results(share_config(cfg, index, workers), [result])
        summary = build_summary(own)
        summary["worker"] = {"index": index, "of": workers}
        if own_out is not None:
            write_results(own_out, summary, own, client.t0)
        if index != 0 and not run.json_output:
            print(format_table(summary))
            print(f"\nworker {index}: its share is handed over to worker 0")
        failure = client.abort_reason or failure
    if failure is not None:
        print(f"flowrelay load: worker {index}: {failure}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    return EXIT_OK


async def _work(client: WorkerClient, cfg: LoadConfig, workers: int, live: LiveLine, sink: MetricsSink | None,
                series: SeriesFiles | None) -> tuple[WorkerResult, str | None]:
    """The worker's run in its event loop, beside its hold on the coordinator: its result, and why it could not
    be handed over (None: it was). Raises ClusterError when the worker could not take its part."""
    index = client.index
    assert index is not None
    rows = 0

    def on_interval(interval: Interval, row: dict[str, Any]) -> None:
        nonlocal rows
        live(row)
        client.send_row(rows, {"interval": interval.to_plain(), "partial": worker.result().to_plain()})
        rows += 1

    async def at_t0() -> float:
        t0 = await client.barrier()
        if series is not None:
            series.log.start_wall = client.t0
        return t0

    # Not alone even with --workers 1: the coordinator merges its seconds, so its final sliver stays a row of its own.
    worker = Worker(cfg, index, workers, client.run_id, sink=sink, series=series, on_interval=on_interval,
                    start_gate=at_t0, alone=False)
    async with client.attached(on_abort=lambda _reason: worker.stop()):
        try:
            result = await worker.run()
        except ConnectError as exc:
            await client.report_failure(f"cannot connect to {cfg.target}: {exc}")
            raise ClusterError(f"cannot connect to {cfg.target}: {exc}") from None
        try:
            await client.hand_over(result.to_plain())
        except ClusterError as exc:
            return result, str(exc)
    return result, None
