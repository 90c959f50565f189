"""The ledger: settles input positions (acknowledged, or dead-lettered with a reason) and says when that is durable.

The delivery calls `acknowledge` or `dead_letter` for a batch with a callback; the callback runs once a
checkpoint that counts the batch is on disk (at once when there is no checkpoint). The delivery keeps a
batch's in-flight slot until then, so the batches that a crash can make us send again (in flight, or
answered but not yet checkpointed) never exceed the in-flight limit.

Checkpoint states are built here, in the event loop (a consistent snapshot: settled positions, totals,
the dead-letter file's length after a flush), at most once per loop iteration, and handed to the
CheckpointWriter thread, which fsyncs the dead-letter file, writes atomically and reports back.
Imports the other ingest modules only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.ingest.checkpoint import CheckpointWriter, encode_state
from loadtest.ingest.deadletter import DeadLetterFile
from loadtest.ingest.progress import Settled
from loadtest.ingest.readers import Record

Durable = Callable[[], None]


class Ledger:
    """What is settled, cumulative over resumed runs, and the path to making it durable."""

    def __init__(
        self,
        settled: Settled,
        identity: dict[str, Any] | None,
        batch: int,
        acknowledged: int = 0,
        dead_lettered: int = 0,
        deadletters: DeadLetterFile | None = None,
        checkpoint_path: Path | None = None,
    ) -> None:
        self.settled = settled
        self.identity = identity
        self.batch = batch
        self.acknowledged = acknowledged
        self.dead_lettered = dead_lettered
        self.deadletters = deadletters
        self.checkpoint_path = checkpoint_path
        self.version = 0
        self.durable_version = 0
        self.error: str | None = None
        self.on_error: Callable[[str], None] | None = None
        self._waiting: deque[tuple[int, Durable]] = deque()
        self._scheduled = False
        self._writer: CheckpointWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._final: asyncio.Future[None] | None = None
        self._final_version = -1

    @property
    def can_dead_letter(self) -> bool:
        return self.deadletters is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the checkpoint thread (when there is a checkpoint); call from inside the event loop."""
        self._loop = loop
        if self.checkpoint_path is not None:
            self._writer = CheckpointWriter(self.checkpoint_path, loop.call_soon_threadsafe, self._durable,
                                            self._failed)

    # ---- settling ------------------------------------------------------------------------------

    def acknowledge(self, positions: list[int] | range, on_durable: Durable) -> None:
        """A batch the Flow answered with success; `positions` ascending (as a batch holds them)."""
        self.settled.mark_positions(positions, ascending=True)
        self.acknowledged += len(positions)
        self._changed(on_durable)

    def dead_letter(self, records: list[Record], reason: str, attempts: int, on_durable: Durable | None) -> None:
        assert self.deadletters is not None
        for r in records:
            self.deadletters.write(r, reason, attempts)
        self.settled.mark_positions(r.position for r in records)
        self.dead_lettered += len(records)
        self._changed(on_durable)

    def adopt(self, positions: list[int]) -> None:
        """Positions found settled in the dead-letter file past the checkpoint (see deadletter)."""
        self.settled.mark_positions(positions)
        self.dead_lettered += len(positions)

    def _changed(self, on_durable: Durable | None) -> None:
        self.version += 1
        if self._writer is None:
            if on_durable is not None:
                on_durable()
            return
        if on_durable is not None:
            self._waiting.append((self.version, on_durable))
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._submit)

    # ---- checkpoint ------------------------------------------------------------------------------

    def state(self, complete: bool = False, records: int | None = None) -> dict[str, Any]:
        dl = self.deadletters
        return {
            "input": self.identity,
            "batch": self.batch,
            **self.settled.to_plain(),
            "acknowledged": self.acknowledged,
            "dead_lettered": self.dead_lettered,
            "dead_letter": {"path": str(dl.path.resolve()), "bytes": dl.flush()} if dl is not None else None,
            "complete": complete,
            "records": records,
        }

    def _submit(self, complete: bool = False, records: int | None = None) -> None:
        self._scheduled = False
        if self._writer is None or self.error is not None:
            return
        data = encode_state(self.state(complete, records))
        fd = self.deadletters.fileno() if self.deadletters is not None else None
        self._writer.submit(self.version, data, fd)

    def _durable(self, version: int) -> None:
        self.durable_version = max(self.durable_version, version)
        waiting = self._waiting
        while waiting and waiting[0][0] <= version:
            waiting.popleft()[1]()
        if self._final is not None and version >= self._final_version and not self._final.done():
            self._final.set_result(None)

    def _failed(self, message: str) -> None:
        self.error = message
        if self._final is not None and not self._final.done():
            self._final.set_result(None)
        if self.on_error is not None:
            self.on_error(message)

    @property
    def pending_durable(self) -> int:
        return len(self._waiting)

    async def close(self, complete: bool, records: int | None, timeout_s: float = 60.0) -> None:
        """Write the final state and wait until it is on disk; close the dead-letter file."""
        try:
            if self._writer is not None and self._loop is not None and self.error is None:
                self.version += 1
                self._final_version = self.version
                self._final = self._loop.create_future()
                self._submit(complete, records)
                try:
                    await asyncio.wait_for(asyncio.shield(self._final), timeout_s)
                except TimeoutError:
                    self.error = f"the last checkpoint write did not finish in {timeout_s:g} s"
        finally:
            if self._writer is not None:
                await asyncio.to_thread(self._writer.close)
            if self.deadletters is not None:
                self.deadletters.close()

    def write_stats(self) -> dict[str, Any]:
        w = self._writer
        if w is None:
            return {"writes": 0, "mean_ms": None}
        return {"writes": w.writes, "mean_ms": round(w.write_s / w.writes * 1000, 3) if w.writes else None}
