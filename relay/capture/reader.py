"""Reading a recording: a folder (or one of its segments) back as connections, and requests with their answers.

`read_recording(path)` reads every segment of a folder in order, or one segment file alone (each segment starts
with the connections still open, relay.capture.format), and joins each answer to its request by connection and
request id. Requests come out in arrival order. A frame torn by a relay killed mid-write (always the last one of
its segment) is skipped and counted in `torn_frames`: everything before it reads.

`read_index(folder)` reads the index's complete lines, so it can follow a recording that is still growing.

Imports: the standard library, msgpack, zstandard, orjson, relay.wire, relay.capture.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
    LATENCY_GATEWAY,
    META_FILE,
    REQUEST,
    RecordedAnswer,
    RecordedConnection,
    RecordedRequest,
    is_segment_name,
)
from relay.wire.answers import read_json_answer, read_proto_answer
from relay.wire.errors import WireError

# Compressed bytes handed to the decompressor at a time: what is left over after a frame's end is copied once.
_CHUNK = 1 << 20


class RecordingError(ValueError):
    """Not a recording, or one this version cannot read; the message says which file and why."""


@dataclass
class Recording:
    """What a recording holds. `requests` in arrival order, each with its answer when one was recorded."""

    meta: dict[str, Any]
    connections: dict[int, RecordedConnection]
    requests: list[RecordedRequest]
    torn_frames: int = 0
    orphan_answers: int = 0  # answers whose request is not in the recording (sampling never splits these)
    sources: list[str] = field(default_factory=list)

    @property
    def latency_basis(self) -> str:
        """What recorded latencies measure: `gateway` (the relay's receipt to answer) or `round_trip`."""
        return str(self.meta.get("latency", LATENCY_GATEWAY))

    @property
    def answered(self) -> int:
        return sum(1 for r in self.requests if r.answer is not None)


def segment_paths(path: Path) -> list[Path]:
    """The segment files of a recording folder in order, or `[path]` for a segment file."""
    if path.is_dir():
        segments = sorted(p for p in path.iterdir() if is_segment_name(p.name))
        if not segments:
            raise RecordingError(f"{path}: no recording segments ({'segment-NNNNNN.msgpack.zst'}) in this folder")
        return segments
    if not path.exists():
        raise RecordingError(f"{path}: no such file or folder")
    return [path]


def read_meta(path: Path) -> dict[str, Any]:
    """`recording.json` of the folder (or of the folder a segment is in); empty when there is none."""
    folder = path if path.is_dir() else path.parent
    meta_path = folder / META_FILE
    if not meta_path.exists():
        return {}
    try:
        meta = orjson.loads(meta_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RecordingError(f"{meta_path}: unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise RecordingError(f"{meta_path}: not a {FORMAT_NAME} file")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise RecordingError(f"{meta_path}: format version {meta.get('version')} is newer than this flowrelay "
                             f"reads ({FORMAT_VERSION}); upgrade flowrelay")
    return meta


def frame_contents(data: bytes) -> Iterator[bytes]:
    """The decompressed content of each complete zstd frame in `data`; stops at a torn or corrupt frame,
    raising TornFrame with what was read before it."""
    view = memoryview(data)
    size = len(data)
    pos = 0
    dctx = zstandard.ZstdDecompressor()
    while pos < size:
        start = pos
        obj = dctx.decompressobj()
        parts: list[bytes] = []
        try:
            while not obj.eof and pos < size:
                chunk = view[pos : pos + _CHUNK]
                parts.append(obj.decompress(chunk))
                pos += len(chunk)
        except zstandard.ZstdError:
            raise TornFrame(start) from None
        if not obj.eof:
            raise TornFrame(start)
        pos -= len(obj.unused_data)
        yield b"".join(parts)


class TornFrame(Exception):
    """A frame that ends before its end (a writer killed mid-write) or cannot be decompressed."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"torn frame at offset {offset}")
        self.offset = offset


def iter_segment_records(path: Path) -> Iterator[list[Any]]:
    """Every record of one segment, in order, FRAME records included. A torn last frame ends the iteration
    (re-raised as TornFrame after the records before it)."""
    data = path.read_bytes()
    for content in frame_contents(data):
        unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=False)
        unpacker.feed(content)
        header = next(unpacker)
        if not isinstance(header, list) or not header or header[0] != FRAME:
            raise ValueError("a frame does not start with its FRAME record")
        yield header
        yield from unpacker


def _codec_of(body: bytes | str | None) -> str:
    """The codec of a body whose connection is not in the recording: JSON is an object, a DataRequestProto not."""
    if isinstance(body, str) or not body or body[:1] == b"{":
        return "json"
    return "bytes"


def read_answer(payload: bytes | str | None, codec: str, mono_ns: int | None = None, latency_ns: int | None = None,
                error: str | None = None) -> tuple[RecordedAnswer, str | None]:
    """An ANSWER record's answer, and the request id its payload carries (None: no readable payload). Status,
    route entries and document ids come from the payload; the latency is the first route entry's span (the
    relay's receipt to answer) unless the record gives one."""
    if not payload:
        return RecordedAnswer(mono_ns, 1 if error else 0, error, latency_ns), None
    try:
        answer = read_proto_answer(payload) if codec == "bytes" else read_json_answer(payload)  # type: ignore[arg-type]
        routes = answer.routes
        status = answer.status
        doc_ids = answer.doc_ids
    except (WireError, AttributeError, TypeError, ValueError):
        return RecordedAnswer(mono_ns, 1, error or "unreadable answer", latency_ns), None
    if latency_ns is None and routes and routes[0].start_ns is not None and routes[0].end_ns is not None:
        latency_ns = routes[0].end_ns - routes[0].start_ns
    code = status.code if status is not None else 0
    recorded = RecordedAnswer(mono_ns, code, error or answer.error, latency_ns, routes, doc_ids)
    return recorded, answer.request_id or None


class RecordingAssembler:
    """Builds a Recording from records in the order they were written (see relay.capture.format)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.connections: dict[int, RecordedConnection] = {}
        self.requests: list[RecordedRequest] = []
        self._waiting: dict[tuple[int, str], collections.deque[RecordedRequest]] = {}
        self._wall_offset = 0
        self.orphan_answers = 0

    def add(self, rec: list[Any]) -> None:
        kind = rec[0]
        if kind == REQUEST:
            _, conn, mono, rid, endpoint, body = rec[:6]
            req = RecordedRequest(len(self.requests), conn, mono, mono + self._wall_offset, rid, endpoint, body)
            self.requests.append(req)
            self._waiting.setdefault((conn, rid), collections.deque()).append(req)
            known = self.connections.get(conn)
            if known is not None:
                known.requests += 1
        elif kind == ANSWER:
            conn, payload = rec[1], rec[2]
            mono = rid = latency_ns = error = None
            if len(rec) > 3:  # an import's answer: its time, request id, latency and error given
                mono, rid, latency_ns, error = rec[3:7]
            known = self.connections.get(conn)
            codec = known.codec if known is not None else _codec_of(payload)
            answer, payload_rid = read_answer(payload, codec, mono, latency_ns, error)
            if rid is None:
                rid = payload_rid
            waiting = self._waiting.get((conn, rid)) if rid is not None else None
            if not waiting:
                self.orphan_answers += 1
                return
            req = waiting.popleft()
            if not waiting:
                del self._waiting[(conn, rid)]
            req.answer = answer
        elif kind == FRAME:
            self._wall_offset = rec[3] - rec[2]
        elif kind == CONNECTION:
            _, conn, mono, door, subprotocol = rec[:5]
            if conn not in self.connections:  # repeated at the head of each segment
                self.connections[conn] = RecordedConnection(conn, door, subprotocol, mono)
        elif kind == CLOSED:
            known = self.connections.get(rec[1])
            if known is not None:
                known.closed_mono_ns = rec[2]

    def add_all(self, records: Iterable[list[Any]]) -> None:
        for rec in records:
            self.add(rec)

    def finish(self, torn_frames: int = 0, sources: list[str] | None = None) -> Recording:
        # Stable: records are written in arrival order already; an import may interleave connections.
        requests = sorted(self.requests, key=lambda r: r.mono_ns)
        for i, req in enumerate(requests):
            req.index = i
        for req in requests:
            if req.conn not in self.connections:
                # A segment read alone, whose connection opened (and closed) before it: the body says the codec.
                self.connections[req.conn] = RecordedConnection(req.conn, "unknown", _codec_of(req.body), req.mono_ns)
                self.connections[req.conn].requests = sum(1 for r in requests if r.conn == req.conn)
        return Recording(self.meta, self.connections, requests, torn_frames, self.orphan_answers, sources or [])


def read_recording(path: Path | str) -> Recording:
    """A recording folder, or one segment file, as a Recording. Raises RecordingError."""
    path = Path(path)
    segments = segment_paths(path)
    assembler = RecordingAssembler(read_meta(path))
    torn = 0
    for segment in segments:
        try:
            assembler.add_all(iter_segment_records(segment))
        except TornFrame:
            torn += 1
        except (OSError, ValueError, TypeError, IndexError, msgpack.ExtraData) as exc:
            raise RecordingError(f"{segment}: not a recording segment of this format: {exc}") from None
    return assembler.finish(torn, [str(s) for s in segments])


def read_index(folder: Path | str) -> list[dict[str, Any]]:
    """The index's complete lines (a line still being written is left out): one entry per frame."""
    path = Path(folder) / INDEX_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n")[:-1]:  # whatever follows the last newline is incomplete
        if line.strip():
            entries.append(orjson.loads(line))
    return entries
