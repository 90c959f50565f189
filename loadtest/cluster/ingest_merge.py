"""The coordinator's merger for `flowrelay ingest`: the shards' progress and summaries -> one summary.

Each worker sends its counts about once a second (a row) and its shard's summary at the end (the summary
`flowrelay ingest` prints for one input). The coordinator prints the cluster's progress line (Documents
settled by all shards, and per worker), and at the end the merged summary: counts added up, errors
merged, the duration the longest shard's, `workers` {count, lost, clock_offsets_ms, aborted} and
`per_worker` (each shard's outcome and counts). Its exit code is the run's: 1 when a worker was lost, the
run aborted, or a shard stopped (resumable: run the same commands again); else 4 when a shard met a
malformed record it could not set aside, 3 when some Documents were dead-lettered, 0 when every
Document of every shard was acknowledged.

Imports the standard library, orjson and loadtest (ingest report and checkpoint, cluster coordinator).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from loadtest.cluster.coordinator import LostWorker, Outcome
from loadtest.ingest.checkpoint import write_atomic
from loadtest.ingest.report import format_summary

EXIT_OK, EXIT_INCOMPLETE, EXIT_DEAD_LETTERS, EXIT_MALFORMED = 0, 1, 3, 4
PROGRESS_EVERY_S = 1.0
SUMMED = ("documents", "batches")


def worst_exit(codes: list[int]) -> int:
    for code in (EXIT_INCOMPLETE, 2, EXIT_MALFORMED, EXIT_DEAD_LETTERS):
        if code in codes:
            return code
    return EXIT_OK


class IngestMerger:
    """See the module's docstring; `summary_json`: where worker 0 writes the merged summary (or None)."""

    def __init__(self, workers: int, summary_json: Path | None, json_output: bool, progress: bool) -> None:
        self.workers = workers
        self.summary_json = summary_json
        self.json_output = json_output
        self.show_progress = progress
        self.counts: dict[int, dict[str, int]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.lost_workers: dict[int, LostWorker] = {}
        self._shown_at = 0.0

    def started(self, t0: float, clock_offsets_ms: dict[int, float]) -> None:
        pass

    def row(self, worker: int, k: int, payload: Any) -> None:
        self.counts[worker] = payload
        now = time.monotonic()
        if self.show_progress and now - self._shown_at >= PROGRESS_EVERY_S:
            self._shown_at = now
            settled = {w: c["acknowledged"] + c["dead_lettered"] for w, c in sorted(self.counts.items())}
            each = "  ".join(f"w{w} {n:,}" for w, n in settled.items())
            print(f"cluster: {sum(settled.values()):,} documents settled ({each})", file=sys.stderr, flush=True)

    def lost(self, worker: LostWorker) -> None:
        self.lost_workers[worker.index] = worker

    def result(self, worker: int, payload: Any) -> None:
        self.results[worker] = payload

    def finish(self, outcome: Outcome) -> int:
        if not outcome.started:
            print(f"flowrelay ingest: the run did not start: {outcome.aborted}", file=sys.stderr, flush=True)
            return EXIT_INCOMPLETE
        if not self.results:
            print(f"flowrelay ingest: no worker handed over a summary: {outcome.aborted}", file=sys.stderr)
            return EXIT_INCOMPLETE
        shards = [self.results[i] for i in sorted(self.results)]
        summary = self.merged(shards)
        codes = [int(s["exit_code"]) for s in shards]
        if outcome.lost or outcome.aborted is not None or len(shards) < self.workers:
            codes.append(EXIT_INCOMPLETE)
        code = worst_exit(codes)
        complete = all(s["complete"] for s in shards) and code != EXIT_INCOMPLETE
        lost = "; ".join(w.describe() for w in outcome.lost)
        summary.update(
            complete=complete,
            exit_code=code,
            outcome=(f"{len(shards)} of {self.workers} shards: " + ("complete" if complete else "not complete; run "
                     "the same commands again to resume every shard from its checkpoint"))
            + (f" ({lost})" if lost else ""),
            workers={"count": self.workers,
                     "lost": [{"worker": w.index, "at_s": w.at_s, "reason": w.reason} for w in outcome.lost],
                     "clock_offsets_ms": [outcome.clock_offsets_ms.get(i) for i in range(self.workers)],
                     "aborted": outcome.aborted, "coordinator_cpu_s": round(time.process_time(), 3)},
            per_worker=[self._own(i, outcome) for i in range(self.workers)],
        )
        if self.summary_json is not None:
            write_atomic(self.summary_json, orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        if self.json_output:
            sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(format_summary(summary))
        sys.stdout.flush()
        return code

    @staticmethod
    def merged(shards: list[dict[str, Any]]) -> dict[str, Any]:
        """The shards' summaries added up, in the shape of one ingestion's summary."""
        summary = dict(shards[0])
        for key in SUMMED:
            summary[key] = {name: sum(int(s[key][name]) for s in shards) for name in shards[0][key]}
        errors: Counter[str] = Counter()
        for s in shards:
            errors.update(s["errors"])
        summary["errors"] = dict(errors.most_common())
        summary["connections"] = sum(int(s["connections"]) for s in shards)
        rates = [s["rate"] for s in shards]
        summary["rate"] = None if None in rates else sum(rates)
        summary["duration_s"] = max(float(s["duration_s"]) for s in shards)
        acknowledged = summary["documents"]["acknowledged"]
        summary["docs_per_s"] = round(acknowledged / summary["duration_s"], 1) if summary["duration_s"] > 0 else 0.0
        records = [s["totals"]["records"] for s in shards]
        summary["totals"] = {
            "records": None if None in records else sum(records),
            "acknowledged": sum(int(s["totals"]["acknowledged"]) for s in shards),
            "dead_lettered": sum(int(s["totals"]["dead_lettered"]) for s in shards),
        }
        resumed = [s["resumed"] for s in shards if s.get("resumed")]
        summary["resumed"] = {"settled_before": sum(int(r["settled_before"]) for r in resumed)} if resumed else None
        dead_letters = [s["dead_letter"] for s in shards if s.get("dead_letter")]
        summary["dead_letter"] = ", ".join(dead_letters) if dead_letters else None
        checkpoints = [s["checkpoint"] for s in shards if s.get("checkpoint")]
        if checkpoints:
            summary["checkpoint"] = {"path": ", ".join(c["path"] for c in checkpoints),
                                     "writes": sum(int(c["writes"]) for c in checkpoints), "mean_write_ms": None}
        return summary

    def _own(self, index: int, outcome: Outcome) -> dict[str, Any]:
        lost = self.lost_workers.get(index)
        own = self.results.get(index)
        return {
            "worker": index,
            "host": outcome.hosts.get(index),
            "lost_at_s": lost.at_s if lost else None,
            "outcome": own["outcome"] if own else None,
            "exit_code": own["exit_code"] if own else None,
            "documents": own["documents"] if own else self.counts.get(index),
        }
