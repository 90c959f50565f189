"""Writing a recording: records packed on the event loop into reused buffers, compressed at once by a thread.

The relay's side (relay.capture.tap) packs each record with msgpack as it happens, into a `Block`: a packer whose
buffer is reused. Recording keeps no Python object of a request alive (a frame, an answer, its tuple: all freed as
they would be without recording): holding each request's objects until a flush makes the allocator hand out fresh
memory for every request and return it to the system at every flush (measured: 35,000 to 60,000 page faults for
80,000 requests, against 3,000 with packing at once), which costs more than packing. And the bytes packed must be
compressed soon: a buffer left for a quarter of a second is out of the CPU's cache when the next block is packed
into it, a cache miss per 64 bytes (measured: 2.7 us per json request against 1.4 when compressed at once). So the
tap hands a block over every 256 requests (or 0.25 s), which wakes `RecordingWriter`'s thread; the thread
compresses it into the current zstd frame at once (zstd releases the GIL while it compresses) and gives the packer
back for the tap to fill again. Every `flush_interval_s` (0.25 s) the frame is finished, appended to the current
segment, and a line added to the index. A record is thus on disk within about half a second, so a relay killed -9
loses at most the last second.

A full disk or another write error does not stop the relay: the blocks are dropped, counted and logged. Past
`max_buffered` records waiting (the thread cannot keep up), the tap's blocks are dropped and counted rather than
held in memory, unless they open or close connections (without those, what is recorded would not read).

`SegmentWriter` is the file side, also used without the thread, by `flowrelay record import` (relay.capture.har),
which hands it records to pack; `--record-redact` unpacks, redacts and repacks in the thread.

Imports: the standard library, msgpack, zstandard, orjson, relay.capture.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
DEFAULT_FLUSH_INTERVAL_S = 0.25
DEFAULT_MAX_BUFFERED = 1_000_000
# zstd level 1: on relay traffic it compresses as well as the default level 3 (about 30:1 on small JSON
# requests), at two thirds of the CPU.
ZSTD_LEVEL = 1
# Packers kept for reuse once written (each keeps its buffer, sized by the traffic of one hand-over).
SPARE_PACKERS = 4
# The writer thread's name, for the operating system too (top -H, /proc/PID/task/*/comm: 15 characters).
THREAD_NAME = "flowrelay-recorder"


def _name_os_thread(name: str) -> None:
    """Give the calling thread `name` in the operating system's tables (Python before 3.14 does not)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


@dataclass(slots=True)
class Block:
    """Records packed one after the other (each a msgpack array, relay.capture.format), and how many of each."""

    packer: msgpack.Packer
    records: int = 0
    requests: int = 0
    answers: int = 0
    with_connections: bool = False  # holds CONNECTION or CLOSED records: never dropped


def new_packer() -> msgpack.Packer:
    return msgpack.Packer(autoreset=False)


def pack_records(records: Iterable[Any]) -> Block:
    """A block of `records` (tuples or lists), counted."""
    block = Block(new_packer())
    pack = block.packer.pack
    for rec in records:
        pack(rec)
        block.records += 1
        kind = rec[0]
        if kind == REQUEST:
            block.requests += 1
        elif kind == ANSWER:
            block.answers += 1
        else:
            block.with_connections = True
    return block


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
    """Frames into segments of one recording folder, with rotation and the index. One thread at a time.

    `open_connections`, when given, returns the CONNECTION records of the connections still open: they start
    every new segment, so that a segment reads alone."""

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
        self.open_connections: Callable[[], list[Any]] | None = None
        self._compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._header = msgpack.Packer()
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
        # When redacting: each open connection's codec, from the CONNECTION records as they pass.
        self._codecs: dict[int, str] = {}
        # The frame being compressed (begin_frame .. end_frame).
        self._stream: Any = None
        self._parts: list[bytes] = []
        self._frame_clock = (0, 0)
        self._frame_counts = [0, 0, 0]

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
        """One frame of `records` (tuples in relay.capture.format's layouts)."""
        if records:
            self.write_blocks([pack_records(records)], mono_ns, wall_ns)

    def write_blocks(self, blocks: list[Block], mono_ns: int, wall_ns: int) -> None:
        """One frame: a FRAME record with the clock pair, then the blocks' records."""
        if not any(b.records for b in blocks):
            return
        self.begin_frame(mono_ns, wall_ns)
        for block in blocks:
            self.add_block(block)
        self.end_frame()

    def begin_frame(self, mono_ns: int, wall_ns: int) -> None:
        """Start a frame (a new segment first, when this one is full or old): a FRAME record with the clock pair."""
        if self._fd is None or self._rotation_due():
            self._next_segment()
        self._stream = self._compressor.compressobj()
        self._parts = [self._stream.compress(self._header.pack((FRAME, self.frames, mono_ns, wall_ns)))]
        self._frame_clock = (mono_ns, wall_ns)
        self._frame_counts = [0, 0, 0]  # records, requests, answers

    @property
    def in_frame(self) -> bool:
        return self._stream is not None

    def add_block(self, block: Block) -> None:
        """Compress a block's records into the frame begun (zstd releases the GIL while it works)."""
        stream = self._stream
        assert stream is not None, "begin_frame first"
        if self.redactor is not None:
            self._parts.append(stream.compress(self._redacted(block)))
        else:
            with block.packer.getbuffer() as view:
                self._parts.append(stream.compress(view))
        counts = self._frame_counts
        counts[0] += block.records
        counts[1] += block.requests
        counts[2] += block.answers

    def end_frame(self) -> None:
        """Finish the frame begun, write it and its index line."""
        stream = self._stream
        assert stream is not None, "begin_frame first"
        self._stream = None
        records, requests, answers = self._frame_counts
        if not records:
            return
        self._parts.append(stream.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        frame = b"".join(self._parts)
        self._parts = []
        assert self._fd is not None
        offset = self._segment_bytes
        _write_all(self._fd, frame)
        self._segment_bytes += len(frame)
        self.bytes_written += len(frame)
        self.requests += requests
        self.answers += answers
        mono_ns, wall_ns = self._frame_clock
        entry = {
            "segment": self._segment_name,
            "frame": self.frames,
            "offset": offset,
            "length": len(frame),
            "records": records,
            "requests": requests,
            "answers": answers,
            "mono_ns": mono_ns,
            "wall_ns": wall_ns,
        }
        self.frames += 1
        self._index.write(orjson.dumps(entry) + b"\n")

    def _redacted(self, block: Block) -> bytes:
        redactor = self.redactor
        assert redactor is not None
        unpacker = msgpack.Unpacker(raw=False, use_list=True)
        with block.packer.getbuffer() as view:
            unpacker.feed(view)
        records = list(unpacker)
        codecs = self._codecs
        out = msgpack.Packer(autoreset=False)
        for rec in records:
            kind = rec[0]
            if kind == REQUEST:
                rec[5] = redactor.body(rec[5], codecs.get(rec[1], "json"))
            elif kind == ANSWER and rec[2]:
                # An answer carries its documents (and their ids) back: redacted as its request was.
                rec[2] = redactor.body(rec[2], codecs.get(rec[1], "json"))
            elif kind == CONNECTION:
                codecs[rec[1]] = "bytes" if rec[4] == "bytes" else "json"
            elif kind == CLOSED:
                codecs.pop(rec[1], None)
            out.pack(rec)
        return out.bytes()

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
        heads = self.open_connections() if self.open_connections is not None and self.segment_number > 1 else []
        if heads:
            # A frame of its own at the head of the segment: the connections still open, so it reads alone.
            self.write(heads, time.monotonic_ns(), time.time_ns())

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
    """The thread that writes what the relay's tap hands over (see the module docstring)."""

    def __init__(
        self,
        segments: SegmentWriter,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        self.segments = segments
        self.flush_interval_s = flush_interval_s
        self.max_buffered = max_buffered
        # Blocks handed over by the event loop (appended there, taken here: each one list operation, atomic
        # under the GIL), and emptied packers handed back.
        self.blocks: list[Block] = []
        self.spares: list[msgpack.Packer] = []
        self.handed_records = 0  # counted by the event loop
        self.written_records = 0  # counted by this thread
        self._stop = threading.Event()
        self._wake = threading.Event()  # a block handed over, or the stop
        self._frame_started = 0.0
        self._thread: threading.Thread | None = None
        self._thread_name = THREAD_NAME
        self.dropped = 0
        self.write_errors = 0
        self._dropped_logged = 0

    def start(self) -> None:
        """Open the recording (raises RecordingExists, OSError) and start the writer thread."""
        self.segments.open()
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    # ---- the event loop's side -------------------------------------------------------------------

    def spare(self) -> msgpack.Packer:
        """An empty packer for the next block: one handed back, or a new one."""
        spares = self.spares
        return spares.pop() if spares else new_packer()

    def hand_over(self, block: Block) -> bool:
        """Queue a block for the thread; False (the block dropped, its records counted) when too much waits."""
        if self.handed_records - self.written_records >= self.max_buffered and not block.with_connections:
            self.dropped += block.records
            block.packer.reset()
            self.spares.append(block.packer)
            return False
        self.handed_records += block.records
        self.blocks.append(block)
        self._wake.set()
        return True

    # ---- the thread's side -----------------------------------------------------------------------

    def _run(self) -> None:
        _name_os_thread(self._thread_name)
        stopping = False
        while not stopping:
            # Woken by each block handed over: compressed at once, while its buffer is still in the CPU's cache
            # (a block left for a quarter of a second is cold by then: a cache miss per 64 bytes packed).
            wait_s = self.flush_interval_s
            if self.segments.in_frame:
                wait_s = max(0.0, self._frame_started + self.flush_interval_s - time.monotonic())
            self._wake.wait(wait_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            self._compress_handed()
            if self.segments.in_frame and (stopping or time.monotonic() >= self._frame_started + self.flush_interval_s):
                self._end_frame()

    def _compress_handed(self) -> None:
        """Compress the blocks handed over into the current frame (begun if need be); give their packers back."""
        blocks = self.blocks
        n = len(blocks)
        if not n:
            return
        batch = blocks[:n]
        del blocks[:n]
        segments = self.segments
        try:
            if not segments.in_frame:
                segments.begin_frame(time.monotonic_ns(), time.time_ns())
                self._frame_started = time.monotonic()
            for block in batch:
                segments.add_block(block)
        except OSError as exc:
            self._write_failed(sum(b.records for b in batch), exc)
        self.written_records += sum(b.records for b in batch)
        for block in batch:
            block.packer.reset()
            if len(self.spares) < SPARE_PACKERS:
                self.spares.append(block.packer)

    def _end_frame(self) -> None:
        try:
            self.segments.end_frame()
        except OSError as exc:
            self._write_failed(0, exc)
        if self.dropped != self._dropped_logged:
            log.warning("recording: %d records dropped so far: the writer cannot keep up with the traffic",
                        self.dropped)
            self._dropped_logged = self.dropped

    def _write_failed(self, records: int, exc: OSError) -> None:
        self.write_errors += 1
        log.error("recording: could not write to %s (%d records lost): %s", self.segments.directory, records, exc)

    def flush(self) -> None:
        """Write what was handed over as one frame now (a caller once the thread has stopped, or a test)."""
        self._compress_handed()
        if self.segments.in_frame:
            self._end_frame()

    def close(self) -> None:
        """Stop the thread, write what is left, close the recording."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self.segments.close({"dropped": self.dropped, "write_errors": self.write_errors})
