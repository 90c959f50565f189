"""One ingestion, start to end: input, checkpoint, dead-letter file, ledger, delivery, summary, exit code.

Exit codes (the README states them):

  0  complete: every Document of the input was acknowledged by the Flow;
  3  complete, with dead letters: every Document was acknowledged or written to the dead-letter file
     with a reason (the summary and the file say which);
  1  could not run, or stopped before the end: target unreachable, no connection for --offline-limit,
     a batch that failed past --retries with no --dead-letter file, a read error in the input, a
     checkpoint that could not be written, an interrupt, or a crash (a failed background task: raised,
     the CLI names it). Nothing settled is lost: run the same command again to resume (with --checkpoint);
  2  usage: bad flags, a missing input or column, a checkpoint of another input or batch size, or one
     in use by another run; reported before any traffic;
  4  a malformed record with --strict (or with no --dead-letter file): stopped there, file:line on stderr.

Imports the ingest modules, loadtest.sessions and relay.common.loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from loadtest.ingest import checkpoint as ckpt
from loadtest.ingest.deadletter import DeadLetterFile
from loadtest.ingest.delivery import Delivery, DeliveryConfig
from loadtest.ingest.ledger import Ledger
from loadtest.ingest.prepare import Item, RequestShape, prepare_input
from loadtest.ingest.progress import Settled
from loadtest.ingest.readers import Input, InputError, ReaderOptions, Record, open_input
from loadtest.ingest.report import ProgressLine
from loadtest.ingest.sources import InlineSource, ProcessSource, can_fork, process_pays
from loadtest.sessions.base import ConnectError
from relay.common import loop as event_loop

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_DEAD_LETTERS = 3
EXIT_MALFORMED = 4


class UsageError(ValueError):
    """Reported before any traffic; exit 2."""


@dataclass
class IngestConfig:
    input: str
    reader: ReaderOptions
    delivery: DeliveryConfig
    checkpoint: Path | None = None
    dead_letter: Path | None = None
    progress: bool = True
    read_in: str = "auto"  # process: read and encode in a forked process; inline: in the sending loop


class Alongside(Protocol):
    """What runs beside an ingestion in its event loop: a cluster worker's hold on its coordinator."""

    def hold(self, delivery: Delivery) -> AbstractAsyncContextManager[Any]:
        """Entered before the delivery runs, left after it; may stop it (`delivery.stop`)."""
        ...

    async def start_gate(self) -> float:
        """Awaited once the sessions are open: when sending starts (a time.perf_counter() value)."""
        ...

    def progress(self, delivery: Delivery) -> None:
        """About once a second, with the progress line."""
        ...


@dataclass
class IngestResult:
    summary: dict[str, Any]
    exit_code: int


@dataclass
class _Prepared:
    inp: Input
    ledger: Ledger
    resumed: bool
    settled_before: int
    notes: list[str]
    lock: ckpt.CheckpointLock | None
    already_complete: dict[str, Any] | None


def _prepare(cfg: IngestConfig) -> _Prepared:
    """Everything that can be refused before any traffic. Raises UsageError."""
    try:
        inp = open_input(cfg.input, cfg.reader)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    lock = None
    try:
        state = None
        identity = None
        notes: list[str] = []
        if cfg.checkpoint is not None:
            if cfg.checkpoint.is_dir():
                raise UsageError(f"--checkpoint {cfg.checkpoint} is a folder; give a file name")
            if not cfg.checkpoint.parent.is_dir():
                raise UsageError(f"--checkpoint {cfg.checkpoint}: no folder {cfg.checkpoint.parent}")
            lock = ckpt.CheckpointLock(cfg.checkpoint)
            lock.acquire()
            state = ckpt.load(cfg.checkpoint)
            try:
                identity = inp.identity()
            except OSError as exc:
                raise UsageError(f"{cfg.input}: {exc}") from None
            if state is not None:
                notes += ckpt.check_resumable(state, identity, cfg.delivery.batch, cfg.checkpoint)
        if state is not None and state.get("complete"):
            return _Prepared(inp, Ledger(Settled(), identity, cfg.delivery.batch), True, 0, notes, lock, state)
        inp.prepare()
        settled = Settled(int(state["watermark"]), state.get("done") or ()) if state else Settled()
        settled_before = settled.count()
        dl = None
        if cfg.dead_letter is not None:
            if cfg.dead_letter.is_dir():
                raise UsageError(f"--dead-letter {cfg.dead_letter} is a folder; give a file name")
            resume_from = None
            if state is not None:
                saved = state.get("dead_letter") or {}
                same = saved.get("path") == str(cfg.dead_letter.resolve())
                # Another file than the checkpoint's: append to it, adopting nothing.
                resume_from = int(saved.get("bytes", 0)) if same else (
                    cfg.dead_letter.stat().st_size if cfg.dead_letter.exists() else 0)
            try:
                dl = DeadLetterFile(cfg.dead_letter, resume_from)
            except OSError as exc:
                raise UsageError(f"--dead-letter {cfg.dead_letter}: {exc}") from None
            notes += dl.notes
        ledger = Ledger(
            settled,
            identity,
            cfg.delivery.batch,
            acknowledged=int(state.get("acknowledged", 0)) if state else 0,
            dead_lettered=int(state.get("dead_lettered", 0)) if state else 0,
            deadletters=dl,
            checkpoint_path=cfg.checkpoint,
        )
        if dl is not None and dl.adopted:
            ledger.adopt([p for p in dl.adopted if not settled.is_settled(p)])
        return _Prepared(inp, ledger, state is not None, settled_before, notes, lock, None)
    except (InputError, ckpt.CheckpointError) as exc:
        if lock is not None:
            lock.release()
        inp.close()
        raise UsageError(str(exc)) from None
    except BaseException:
        if lock is not None:
            lock.release()
        inp.close()
        raise


def _source(cfg: IngestConfig, p: _Prepared) -> InlineSource | ProcessSource:
    """The prepared batches: from a forked reading process, or inline. Call before any event loop exists."""
    d = cfg.delivery
    shape = RequestShape(d.mode, d.endpoint, d.target_executor, dict(d.parameters))
    settled = p.ledger.settled

    def items() -> Iterator[Item]:
        # Only what earlier runs settled can be skipped: positions this run settles lie behind the reader.
        return prepare_input(p.inp, settled.is_settled, settled.high(), d.batch, shape)

    wanted = cfg.read_in == "process" or (cfg.read_in == "auto" and process_pays())
    if wanted and can_fork():
        return ProcessSource(items, high=max(64, 2 * d.window), coalesce=not p.inp.pipe)
    return InlineSource(items())


async def _deliver(cfg: IngestConfig, p: _Prepared, progress: ProgressLine, source: InlineSource | ProcessSource,
                   alongside: Alongside | None) -> tuple[Delivery, str | None]:
    loop = asyncio.get_running_loop()
    ledger = p.ledger
    ledger.start(loop)

    def malformed(rec: Record) -> None:
        progress.warn(f"flowrelay ingest: {rec.where()}: {rec.error} (dead-lettered)")

    def on_progress(d: Delivery) -> None:
        progress(d)
        if alongside is not None:
            alongside.progress(d)

    delivery = Delivery(cfg.delivery, source, ledger, p.inp.display, on_progress=on_progress, on_malformed=malformed,
                        start_gate=alongside.start_gate if alongside is not None else None)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, delivery.interrupt)
    connect_error = None
    try:
        async with alongside.hold(delivery) if alongside is not None else contextlib.nullcontext():
            await delivery.run()
    except ConnectError as exc:
        connect_error = str(exc)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        complete = _complete(delivery, ledger) and connect_error is None
        await ledger.close(complete, delivery.input_records if complete else None)
    return delivery, connect_error


def _complete(delivery: Delivery, ledger: Ledger) -> bool:
    s = ledger.settled
    return (delivery.eof and delivery.stop_kind is None and delivery.input_records is not None
            and s.watermark == delivery.input_records and not s.ranges)


def run_ingest(cfg: IngestConfig, stream: TextIO | None = None,
               warn: Callable[[str], None] | None = None, alongside: Alongside | None = None) -> IngestResult:
    """Run one ingestion. Raises UsageError (exit 2) before any traffic; otherwise returns the summary.
    `alongside` runs in the ingestion's event loop with it (a cluster worker's coordinator connection)."""
    stream = stream or sys.stderr
    say = warn or (lambda message: print(message, file=stream, flush=True))
    p = _prepare(cfg)
    try:
        for note in p.notes:
            say(f"flowrelay ingest: {note}")
        if p.already_complete is not None:
            return _already_complete(cfg, p)
        progress = ProgressLine(p.inp, stream, enabled=cfg.progress)
        source = _source(cfg, p)
        delivery, connect_error = event_loop.run(_deliver, cfg, p, progress, source, alongside)
        if cfg.progress:
            progress(delivery)
        progress.done()
        return _result(cfg, p, delivery, connect_error)
    finally:
        p.inp.close()
        if p.lock is not None:
            p.lock.release()


def _outcome(cfg: IngestConfig, p: _Prepared, delivery: Delivery | None,
             connect_error: str | None) -> tuple[bool, str, int]:
    ledger = p.ledger
    if connect_error is not None:
        return False, f"could not connect: {connect_error}", EXIT_INCOMPLETE
    if ledger.error is not None:
        return False, f"stopped: {ledger.error}", EXIT_INCOMPLETE
    if delivery is not None and delivery.stop_kind is not None:
        resume = "; run the same command to resume" if cfg.checkpoint is not None else ""
        code = EXIT_MALFORMED if delivery.stop_kind == "malformed" else EXIT_INCOMPLETE
        return False, f"stopped: {delivery.stop_message}{resume}", code
    if delivery is not None and not _complete(delivery, ledger):
        return False, "stopped before the end of the input", EXIT_INCOMPLETE
    if ledger.dead_lettered:
        where = f" (see {cfg.dead_letter})" if cfg.dead_letter else ""
        return True, (f"complete: {ledger.acknowledged:,} acknowledged, {ledger.dead_lettered:,} dead-lettered "
                      f"with a reason{where}"), EXIT_DEAD_LETTERS
    return True, f"complete: every document acknowledged ({ledger.acknowledged:,})", EXIT_OK


def _base_summary(cfg: IngestConfig, p: _Prepared) -> dict[str, Any]:
    d = cfg.delivery
    return {
        "input": {"name": p.inp.display, "format": p.inp.format},
        "target": d.target,
        "endpoint": d.endpoint,
        "subprotocol": d.subprotocol,
        "batch": d.batch,
        "connections": d.connections,
        "max_inflight": d.max_inflight,
        "rate": d.rate,
        "retries": d.retries,
        "dead_letter": str(cfg.dead_letter) if cfg.dead_letter is not None else None,
    }


def _already_complete(cfg: IngestConfig, p: _Prepared) -> IngestResult:
    state = p.already_complete or {}
    acknowledged, dead = int(state.get("acknowledged", 0)), int(state.get("dead_lettered", 0))
    p.ledger.acknowledged, p.ledger.dead_lettered = acknowledged, dead
    _, outcome, code = _outcome(cfg, p, None, None)
    zero = dict.fromkeys(("read", "malformed", "sent", "acknowledged", "failed", "retried", "dead_lettered",
                          "unsettled"), 0)
    summary = {
        **_base_summary(cfg, p),
        "documents": zero,
        "batches": dict.fromkeys(("sent", "attempts", "acknowledged", "failed", "retried", "dead_lettered"), 0),
        "errors": {},
        "duration_s": 0.0,
        "docs_per_s": 0.0,
        "resumed": True,
        "settled_before": int(state.get("records") or 0),
        "totals": {"records": state.get("records"), "acknowledged": acknowledged, "dead_lettered": dead},
        "checkpoint": {"path": str(cfg.checkpoint), "writes": 0, "mean_write_ms": None},
        "complete": True,
        "outcome": f"already {outcome} (the checkpoint says so; nothing sent)",
        "exit_code": code,
    }
    summary["resumed"] = {"settled_before": summary.pop("settled_before")}
    return IngestResult(summary, code)


def _result(cfg: IngestConfig, p: _Prepared, delivery: Delivery, connect_error: str | None) -> IngestResult:
    c = delivery.counters
    ledger = p.ledger
    complete, outcome, code = _outcome(cfg, p, delivery, connect_error)
    duration = delivery.elapsed_s
    writes = ledger.write_stats()
    summary = {
        **_base_summary(cfg, p),
        "documents": {
            "read": c.read,
            "malformed": c.malformed,
            "sent": c.docs_sent,
            "acknowledged": c.docs_acknowledged,
            "failed": c.docs_failed,
            "retried": c.docs_retried,
            "dead_lettered": c.docs_dead_lettered,
            "unsettled": c.read - c.docs_acknowledged - c.docs_dead_lettered,
        },
        "batches": {
            "sent": c.batches_sent,
            "attempts": c.attempts,
            "acknowledged": c.batches_acknowledged,
            "failed": c.batches_failed,
            "retried": c.batches_retried,
            "dead_lettered": c.batches_dead_lettered,
        },
        "errors": dict(sorted(c.reasons.items(), key=lambda kv: -kv[1])),
        "duration_s": round(duration, 3),
        "docs_per_s": round(c.docs_acknowledged / duration, 1) if duration > 0 else 0.0,
        "resumed": {"settled_before": p.settled_before} if p.resumed else None,
        "totals": {
            "records": delivery.input_records if complete else None,
            "acknowledged": ledger.acknowledged,
            "dead_lettered": ledger.dead_lettered,
        },
        "checkpoint": ({"path": str(cfg.checkpoint), "writes": writes["writes"], "mean_write_ms": writes["mean_ms"]}
                       if cfg.checkpoint is not None else None),
        "complete": complete,
        "outcome": outcome,
        "exit_code": code,
    }
    return IngestResult(summary, code)
