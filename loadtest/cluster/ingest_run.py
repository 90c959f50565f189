"""`flowrelay ingest FILE URL ... --workers N --coordinator HOST:PORT`: one shard of an ingestion.

Every worker runs the same command. Worker k of N sends the records i with i mod N == k of FILE (a
folder: its files in name order; loadtest.ingest.readers), with ids as an unsplit run derives them, and
keeps its own checkpoint, dead-letter file and summary beside the ones named on the command line
(`docs.ckpt` -> `docs.K-of-N.ckpt`, `failed.jsonl` -> `failed.K-of-N.jsonl`), so the guarantee holds per
shard: re-running a shard's command (or the whole Job) resumes it. Worker 0 hosts the coordinator with an
IngestMerger (the cluster's progress and merged summary, written to --summary-json). The worker joins
before it opens its input (its shard is its index, which the coordinator may assign), waits at the
barrier once its sessions are open, reports its counts once a second, stops (resumably) when the run is
aborted or the coordinator is lost, and hands its shard's summary over at the end.

Imports orjson, loadtest.ingest (run, delivery, checkpoint, report), relay.common.loop and loadtest.cluster.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from loadtest.cluster.client import ClusterError, ClusterOptions, WorkerClient
from loadtest.cluster.host import ClusterUsage, run_as_worker
from loadtest.cluster.ingest_merge import IngestMerger
from loadtest.ingest.checkpoint import write_atomic
from loadtest.ingest.delivery import Delivery
from loadtest.ingest.report import format_summary
from loadtest.ingest.run import EXIT_INCOMPLETE, EXIT_USAGE, IngestConfig, UsageError, run_ingest
from relay.common import loop as event_loop

EXIT_OK = 0


def shard_path(path: Path, index: int, workers: int) -> Path:
    """`docs.ckpt` -> `docs.1-of-3.ckpt`: each shard's own file beside the one named."""
    return path.with_name(f"{path.stem}.{index}-of-{workers}{path.suffix}")


def comparable_options(cfg: IngestConfig) -> dict[str, Any]:
    """What every worker must agree on: the whole command's options, as plain data."""
    return orjson.loads(orjson.dumps(dataclasses.asdict(cfg), default=str))


def shard_config(cfg: IngestConfig, index: int, workers: int) -> IngestConfig:
    return dataclasses.replace(
        cfg,
        reader=dataclasses.replace(cfg.reader, shard_index=index, shard_count=workers),
        checkpoint=shard_path(cfg.checkpoint, index, workers) if cfg.checkpoint else None,
        dead_letter=shard_path(cfg.dead_letter, index, workers) if cfg.dead_letter else None,
        # Worker 0's terminal shows the cluster's progress (the coordinator's); the others show their own.
        progress=cfg.progress and index != 0,
    )


class ShardHold:
    """The ingestion's `Alongside`: the coordinator connection in the delivery's event loop."""

    def __init__(self, client: WorkerClient) -> None:
        self.client = client
        self.rows = 0

    @asynccontextmanager
    async def hold(self, delivery: Delivery) -> AsyncIterator[None]:
        async with self.client.attached(on_abort=lambda reason: delivery.stop("aborted", reason)):
            yield

    async def start_gate(self) -> float:
        return await self.client.barrier()

    def progress(self, delivery: Delivery) -> None:
        c = delivery.counters
        self.client.send_row(self.rows, {"read": c.read, "sent": c.docs_sent, "acknowledged": c.docs_acknowledged,
                                         "dead_lettered": c.docs_dead_lettered})
        self.rows += 1


async def _hand_over(client: WorkerClient, summary: dict[str, Any]) -> None:
    async with client.attached():
        await client.hand_over(summary)


def run_shard(cfg: IngestConfig, opts: ClusterOptions, bind: str, summary_json: Path | None,
              json_output: bool) -> int:
    """This process's shard; returns its exit code (worker 0: the run's). Raises UsageError."""

    def merger() -> IngestMerger:
        return IngestMerger(opts.workers, summary_json, json_output, cfg.progress)

    def part(client: WorkerClient) -> int:
        index = client.index
        assert index is not None
        shard = shard_config(cfg, index, opts.workers)
        hold = ShardHold(client)
        try:
            result = run_ingest(shard, alongside=hold)
        except UsageError as exc:
            print(f"flowrelay ingest: worker {index}: {exc}", file=sys.stderr)
            client.fail(str(exc))
            return EXIT_USAGE
        except ClusterError as exc:
            print(f"flowrelay ingest: worker {index}: {exc}", file=sys.stderr, flush=True)
            return EXIT_INCOMPLETE
        summary = dict(result.summary, worker={"index": index, "of": opts.workers})
        if summary_json is not None:
            write_atomic(shard_path(summary_json, index, opts.workers),
                         orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        if index != 0 and not json_output:
            print(format_summary(summary))
        try:
            event_loop.run(_hand_over, client, summary)
        except ClusterError as exc:
            print(f"flowrelay ingest: worker {index}: {exc} (its shard: {result.summary['outcome']})",
                  file=sys.stderr, flush=True)
            return EXIT_INCOMPLETE
        return EXIT_OK

    try:
        return run_as_worker(opts, bind, "ingest", comparable_options(cfg), 0, merger, part)
    except ClusterUsage as exc:
        raise UsageError(str(exc)) from None
