"""The dead-letter file: Documents that could not be delivered, one JSON object per line, with the reason.

Each line: `{"source": "docs.jsonl", "line": 12, "position": 11, "reason": "...", "attempts": 4,
"document": {...}}`; a malformed record has `"document": null` and its text in `"raw"`. `source` and
`line` say where the record is in the input (`line` is null for a folder's files), `position` is its
ordinal among the input's records (what the checkpoint counts), `attempts` how often it was sent (0:
never, it could not be read).

A fresh run truncates the file; a resumed run appends to it. On resume, a last line cut short by a
crash is cut off (its record was not settled, and will be retried), and the complete lines written after
the last checkpoint are *adopted*: their positions are settled already, so they are neither sent again
nor written twice. Writes go through a buffer; `flush` hands them to the OS, and the checkpoint writer
fsyncs the file before every checkpoint. Imports the standard library, orjson and the readers' Record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from loadtest.ingest.readers import Record


class DeadLetterFile:
    """An open dead-letter file."""

    def __init__(self, path: Path, resume_from: int | None) -> None:
        """Open `path`: truncated when `resume_from` is None, else kept, with what lies past byte
        `resume_from` read back as `adopted` (position, number of documents)."""
        self.path = path
        self.adopted: list[int] = []
        self.notes: list[str] = []
        self.written = 0
        if resume_from is None:
            self._fh = path.open("wb")
            return
        self._fh = path.open("ab+")
        fh = self._fh
        size = fh.seek(0, os.SEEK_END)
        if size < resume_from:
            self.notes.append(f"dead-letter file {path} is shorter than the checkpoint recorded "
                              f"({size} < {resume_from} bytes): was it replaced? Appending to it")
            resume_from = size
        fh.seek(resume_from)
        tail = fh.read()
        cut = tail.rfind(b"\n") + 1
        if cut < len(tail):
            # A record cut short by a crash: not settled, so it is dropped here and its batch sent again.
            fh.truncate(resume_from + cut)
            self.notes.append(f"dead-letter file {path}: dropped an incomplete last line left by the crash")
        for line in tail[:cut].splitlines():
            try:
                entry = orjson.loads(line)
                self.adopted.append(int(entry["position"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not ours; nothing to adopt
        fh.seek(0, os.SEEK_END)

    def write(self, record: Record, reason: str, attempts: int) -> None:
        entry: dict[str, Any] = {
            "source": record.source,
            "line": record.line,
            "position": record.position,
            "reason": reason,
            "attempts": attempts,
            "document": record.doc.to_json_dict(full=False) if record.doc is not None else None,
        }
        if record.raw is not None:
            entry["raw"] = record.raw
        self._fh.write(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        self.written += 1

    def flush(self) -> int:
        """Hand the buffered records to the OS; returns the file's length (what a checkpoint covers)."""
        self._fh.flush()
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
