"""Writing a recording: records buffered from the event loop, packed, compressed and written by a thread.

`RecordingWriter` is what a relay holds. Its `append` is all the event loop does per record: a list append
(records are tuples, see relay.capture.format). A thread wakes every `flush_interval_s` (0.5 s by default, so
that a relay killed -9 loses at most a second even when a flush is late), takes what is buffered, and hands it
to a `SegmentWriter`, which redacts request bodies, packs the records with msgpack, compresses them into one
zstd frame, appends the frame to the current segment, then a line to the index. zstd releases the GIL while it
compresses; packing does not, and is what recording costs the relay beyond the appends (bench/record_cost.py).

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
        packer = self._packer
        pack = packer.pack
        pack((FRAME, self.frames, mono_ns, wall_ns))
        open_conns = self._open
        redactor = self.redactor
        requests = answers = 0
        first_mono = last_mono = None
        for rec in records:
            kind = rec[0]
            if kind == REQUEST:
                requests += 1
                if redactor is not None:
                    conn_rec = open_conns.get(rec[1])
                    codec = conn_rec[4] if conn_rec is not None else "json"
                    rec = (*rec[:5], redactor.body(rec[5], "bytes" if codec == "bytes" else "json"))
                if first_mono is None:
                    first_mono = rec[2]
                last_mono = rec[2]
            elif kind == ANSWER:
                answers += 1
                if redactor is not None and redactor.redacts_ids:
                    rec = (*rec[:8], redactor.ids(rec[8]))
            elif kind == CONNECTION:
                open_conns[rec[1]] = rec
            elif kind == CLOSED:
                open_conns.pop(rec[1], None)
            pack(rec)
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
        self._buffer: list[Any] = []
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

    def append(self, record: tuple[Any, ...]) -> None:
        """A request or answer record (from the event loop). Dropped, and counted, past `max_buffered`."""
        buffer = self._buffer
        if len(buffer) < self.max_buffered:
            buffer.append(record)
        else:
            self.dropped += 1

    def append_always(self, record: tuple[Any, ...]) -> None:
        """A connection record: never dropped (without it its requests could not be read)."""
        self._buffer.append(record)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        """Write what is buffered as one frame (the writer thread; or the caller, once the thread has stopped)."""
        buffer = self._buffer
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
