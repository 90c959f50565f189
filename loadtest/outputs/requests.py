"""The per-request log (`--log-requests`): every request as a msgpack record, in requests.msgpack (one file per
worker, `.wN`, with --procs).

A record is `[rid, due_s, sent_s, answered_s or None, outcome, docs]` (times on the run's clock; outcome `ok`, an
exception name, a failure reason, `timeout` or `unanswered`). Records are kept in memory for at most a second:
the worker's ticker writes them (`flush`) as each second closes. Implements loadtest.measure.meter.RequestSink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack


class RequestLog:
    """One worker's request log, open for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._records: list[tuple[Any, ...]] = []

    def add(self, record: tuple[Any, ...]) -> None:
        self._records.append(record)

    def flush(self) -> None:
        if self._records:
            packer = msgpack.Packer()
            self._file.write(b"".join(packer.pack(rec) for rec in self._records))
            self._records.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()
