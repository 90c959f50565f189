"""Writing a recording: records buffered from the event loop, packed, compressed and written by a thread.

`RecordingWriter` is what a relay holds. Appending to its `buffer` is all the event loop does per record
(relay.capture.tap; records are tuples, see relay.capture.format). A thread wakes every `flush_interval_s`
(0.5 s by default, so that a relay killed -9 loses at most a second even when a flush is late), takes what is
buffered, and hands it to a `SegmentWriter`, which redacts bodies (if asked), packs the records with msgpack in
one call, compresses them into one zstd frame, appends the frame to the current segment, then a line to the
index. zstd releases the GIL while it compresses; packing does not, and is, with the appends, what recording
costs the relay (bench/record_cost.py).

A full disk or another write error does not stop the relay: the batch is dropped, counted and logged. Past
`max_buffered` records waiting (the thread cannot keep up), new requests and answers are dropped and counted
rather than held in memory; connection records are always kept, so that what is recorded stays readable.

`SegmentWriter` is also used without the thread, by `flowrelay record import` (relay.capture.har).

Imports: the standard library, msgpack, zstandard, relay.capture.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import orjson
import zstandard

from relay.capture.format import (
    ANSWER,
    CLOSED,
    CONNECTION,
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAME,
    INDEX_FILE,
    META_FILE,
    REQUEST,
    is_segment_name,
    segment_name,
)
from relay.capture.redact import Redactor

log = logging.getLogger("flowrelay.capture")

DEFAULT_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SEGMENT_AGE_S = 600.0
DEFAULT_FLUSH_INTERVAL_S = 0.5
DEFAULT_MAX_BUFFERED = 1_000_000
# zstd level 1: on relay traffic it compresses as well as the default level 3 (about 30:1 on small JSON
# requests), at two thirds of the CPU.
ZSTD_LEVEL = 1


class RecordingExists(ValueError):
    """The folder already holds a recording: a recording is one relay's run, never appended to."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """`recording.json`, replaced atomically (a reader never sees half of it)."""
    tmp = directory / (META_FILE + ".tmp")
    tmp.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, directory / META_FILE)


class SegmentWriter:
    """Frames into segments of one recording folder, with rotation and the index. One thread at a time."""

    def __init__(
        self,
        directory: Path,
        meta: dict[str, Any] | None = None,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        max_segment_age_s: float = DEFAULT_MAX_SEGMENT_AGE_S,
        redactor: Redactor | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **(meta or {}),
        }
        if redactor is not None:
            self.meta["redacted"] = redactor.fields
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age_s = max_segment_age_s
        self.redactor = redactor
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._packer = msgpack.Packer(autoreset=False)
        self._fd: int | None = None
        self._index: Any = None
        self.segment_number = 0
        self._segment_name = ""
        self._segment_bytes = 0
        self._segment_opened = 0.0
        self.frames = 0
        self.requests = 0
        self.answers = 0
        self.bytes_written = 0
        # Connections not yet closed: their CONNECTION records start every new segment (a segment reads alone),
        # and their codec says how to redact their bodies.
        self._open: dict[int, Any] = {}

    def open(self) -> None:
        """Create the folder (or take an empty one) and write `recording.json`; raises RecordingExists."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if any(is_segment_name(p.name) for p in self.directory.iterdir()) or (self.directory / META_FILE).exists():
            raise RecordingExists(f"{self.directory} already holds a recording; record into a new folder")
        now = time.time_ns()
        self.meta.setdefault("started_wall_ns", now)
        self.meta.setdefault("started_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1e9)))
        write_meta(self.directory, self.meta)
        self._index = (self.directory / INDEX_FILE).open("ab", buffering=0)

    def write(self, records: list[Any], mono_ns: int, wall_ns: int) -> None:
        """One frame: `records` (relay.capture.format layouts), preceded by a FRAME record with the clock pair."""
        if not records:
            return
        if self._fd is None or self._rotation_due():
            self._next_segment()
        # This runs with the GIL, taken from the relay's event loop: per record, only what C does (a list
        # comprehension, list.count and index, one msgpack call for the whole batch), unless redacting.
        kinds = [rec[0] for rec in records]
        requests = kinds.count(REQUEST)
        answers = kinds.count(ANSWER)
        if kinds.count(CONNECTION) or kinds.count(CLOSED):
            self._track_connections(records, kinds)
        if self.redactor is not None:
            records = [self._redacted(rec) for rec in records]
        first_mono = last_mono = None
        if requests:
            first_mono = records[kinds.index(REQUEST)][2]
            last_mono = records[len(kinds) - 1 - kinds[::-1].index(REQUEST)][2]
        packer = self._packer
        packer.pack((FRAME, self.frames, mono_ns, wall_ns))
        packer.pack(records)
        frame = self._compressor.compress(packer.bytes())
        packer.reset()
        assert self._fd is not None
        offset = self._segment_bytes
        _write_all(self._fd, frame)
        self._segment_bytes += len(frame)
        self.bytes_written += len(frame)
        self.requests += requests
        self.answers += answers
        entry = {
            "segment": self._segment_name,
            "frame": self.frames,
            "offset": offset,
            "length": len(frame),
            "records": len(records),
            "requests": requests,
            "answers": answers,
            "mono_ns": mono_ns,
            "wall_ns": wall_ns,
            "first_request_mono_ns": first_mono,
            "last_request_mono_ns": last_mono,
        }
        self.frames += 1
        self._index.write(orjson.dumps(entry) + b"\n")

    def _track_connections(self, records: list[Any], kinds: list[int]) -> None:
        open_conns = self._open
        for i, kind in enumerate(kinds):
            if kind == CONNECTION:
                open_conns[records[i][1]] = records[i]
            elif kind == CLOSED:
                open_conns.pop(records[i][1], None)

    def _redacted(self, rec: Any) -> Any:
        kind = rec[0]
        if kind == REQUEST:
            return (*rec[:5], self.redactor.body(rec[5], self._codec(rec[1])), *rec[6:])  # type: ignore[union-attr]
        if kind == ANSWER and rec[4]:
            # An answer carries its documents (and their ids) back: redacted as its request was.
            return (*rec[:4], self.redactor.body(rec[4], self._codec(rec[1])), *rec[5:])  # type: ignore[union-attr]
        return rec

    def _codec(self, conn: int) -> str:
        """What a connection's frames are: `bytes` (DataRequestProto) or `json`."""
        known = self._open.get(conn)
        return "bytes" if known is not None and known[4] == "bytes" else "json"

    def _rotation_due(self) -> bool:
        if self.max_segment_bytes and self._segment_bytes >= self.max_segment_bytes:
            return True
        return bool(self.max_segment_age_s) and time.monotonic() - self._segment_opened >= self.max_segment_age_s

    def _next_segment(self) -> None:
        self._close_segment()
        self.segment_number += 1
        self._segment_name = segment_name(self.segment_number)
        path = self.directory / self._segment_name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._segment_bytes = 0
        self._segment_opened = time.monotonic()
        if self._open:
            # A frame of its own at the head of the segment: the connections still open, so it reads alone.
            self.write(list(self._open.values()), time.monotonic_ns(), time.time_ns())

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self, extra_meta: dict[str, Any] | None = None) -> None:
        """Close the segment (fsync'd) and the index; `recording.json` gets the totals."""
        self._close_segment()
        if self._index is not None:
            os.fsync(self._index.fileno())
            self._index.close()
            self._index = None
            now = time.time_ns()
            self.meta.update(
                ended_wall_ns=now,
                ended_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1e9)),
                segments=self.segment_number,
                frames=self.frames,
                requests=self.requests,
                answers=self.answers,
                bytes=self.bytes_written,
                **(extra_meta or {}),
            )
            write_meta(self.directory, self.meta)


class RecordingWriter:
    """The relay's side: `append` records on the event loop; a thread writes them out (see the module docstring)."""

    def __init__(
        self,
        segments: SegmentWriter,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.segments = segments
        self.flush_interval_s = flush_interval_s
        self.max_buffered = max_buffered
        # Records from the event loop; a ConnectionTap appends to it directly, dropping (and counting) past
        # `max_buffered`; connection records go through `append_always`.
        self.buffer: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.write_errors = 0
        self._dropped_logged = 0

    def start(self) -> None:
        """Open the recording (raises RecordingExists, OSError) and start the writer thread."""
        self.segments.open()
        self._thread = threading.Thread(target=self._run, name="flowrelay-recorder", daemon=True)
        self._thread.start()

    def append_always(self, record: tuple[Any, ...]) -> None:
        """A connection record: never dropped (without it its requests could not be read)."""
        self.buffer.append(record)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one frame (the writer thread; or the caller, once the thread has stopped)."""
        buffer = self.buffer
        n = len(buffer)
        if n:
            # A slice and a slice deletion are one operation each under the GIL: records the event loop
            # appends meanwhile land after the first n and stay for the next flush.
            batch = buffer[:n]
            del buffer[:n]
            try:
                self.segments.write(batch, time.monotonic_ns(), time.time_ns())
            except OSError as exc:
                self.write_errors += 1
                log.error("recording: could not write %d records to %s: %s", n, self.segments.directory, exc)
        if self.dropped != self._dropped_logged:
            log.warning("recording: %d records dropped so far: the writer cannot keep up with the traffic",
                        self.dropped)
            self._dropped_logged = self.dropped

    def close(self) -> None:
        """Stop the thread, write what is left, close the recording."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self.segments.close({"dropped": self.dropped, "write_errors": self.write_errors})
