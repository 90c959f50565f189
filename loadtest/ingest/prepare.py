"""Records -> prepared batches: the request frame of each batch, encoded once, with a slot for the request id.

A batch is encoded once, with a placeholder request id of the fixed width the delivery's ids have, and
split around it: every attempt sends `prefix + id + suffix`, so a retry costs a concatenation, not an
encoding (the load engine's templates do the same). In bytes mode the id is `header.request_id`; in json
mode `parameters.flowrelay_rid` (a gateway makes its own ids for json clients and echoes `parameters`).
The placeholder is random per batch and checked to occur exactly once, so no Document can fake it.

What comes out (`Item`): a `Prepared` batch (positions, lines, the split frame, the Document count), a
`Malformed` record (to be dead-lettered, or to stop a strict run), the `End` (how many records the input
had) or a `Failed` read. Each item carries how far reading got, for the progress line. `docs_of` gets
a prepared batch's Documents back (for the dead-letter file) by decoding its frame: they are written as
they were sent. Imports relay.wire, loadtest.payloads and the readers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loadtest.ingest.readers import Input, InputReadError, Record
from loadtest.payloads import CORRELATION_KEY, ID_WIDTH
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest


@dataclass(frozen=True)
class RequestShape:
    """What every request of the run carries besides its Documents."""

    mode: str = "bytes"  # bytes | json
    endpoint: str = "/"
    target_executor: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    positions: list[int]
    lines: list[int | None]
    prefix: bytes
    suffix: bytes
    sources: list[str] | None = None  # per Document, when they differ (a folder's files); else the input's
    read: int = 0  # records the reader had gone through (settled ones included)
    bytes_read: int = 0

    @property
    def size(self) -> int:
        return len(self.positions)

    def frame(self, rid: str) -> bytes:
        return self.prefix + rid.encode("ascii") + self.suffix


@dataclass(slots=True)
class Malformed:
    record: Record
    read: int = 0
    bytes_read: int = 0


@dataclass(slots=True)
class End:
    read: int
    bytes_read: int = 0


@dataclass(slots=True)
class Failed:
    message: str
    read: int = 0
    bytes_read: int = 0


Item = Prepared | Malformed | End | Failed


_rng = random.Random()


def _placeholder() -> str:
    # Not secret, only unlikely: a Document holding it is caught by the check below, and another is drawn.
    return f"{_rng.getrandbits(4 * ID_WIDTH):0{ID_WIDTH}x}"


def encode_batch(docs: list[Document], shape: RequestShape) -> tuple[bytes, bytes]:
    """The request frame for `docs`, split around the request id's place."""
    while True:
        placeholder = _placeholder()
        req = DataRequest(exec_endpoint=shape.endpoint, target_executor=shape.target_executor, docs=docs)
        if shape.mode == "bytes":
            req.request_id = placeholder
            req.parameters = dict(shape.parameters) or None
            frame = proto_codec.encode_request(req)
        else:
            req.parameters = {**shape.parameters, CORRELATION_KEY: placeholder}
            frame = json_codec.encode_request(req)
        mark = placeholder.encode("ascii")
        at = frame.find(mark)
        if at >= 0 and frame.find(mark, at + 1) < 0:
            return frame[:at], frame[at + len(mark) :]
        # The Documents happen to hold this random token: draw another.


def docs_of(item: Prepared, mode: str) -> list[Document]:
    """The Documents of a prepared batch, decoded from its frame (as they were sent)."""
    frame = item.frame("0" * ID_WIDTH)
    req = proto_codec.decode(frame) if mode == "bytes" else json_codec.decode_request(frame)
    return list(getattr(req, "docs", None) or [])


def prepare_items(inp: Input, records: Iterator[Record], batch: int, shape: RequestShape) -> Iterator[Item]:
    """The items of the run, in input order: batches of `batch` Documents, malformed records as they come."""
    is_folder = inp.format == "folder"
    while True:
        chunk: list[Record] = []
        try:
            for rec in records:
                if rec.doc is None:
                    yield Malformed(rec, inp.count, inp.bytes_read())
                    continue
                chunk.append(rec)
                if len(chunk) >= batch:
                    break
            else:
                if chunk:
                    yield _prepared(chunk, is_folder, shape, inp)
                yield End(inp.count, inp.bytes_read())
                return
        except InputReadError as exc:
            yield Failed(str(exc), inp.count, inp.bytes_read())
            return
        yield _prepared(chunk, is_folder, shape, inp)


def _prepared(chunk: list[Record], is_folder: bool, shape: RequestShape, inp: Input) -> Prepared:
    prefix, suffix = encode_batch([r.doc for r in chunk], shape)  # type: ignore[misc]
    return Prepared([r.position for r in chunk], [r.line for r in chunk], prefix, suffix,
                    [r.source for r in chunk] if is_folder else None, inp.count, inp.bytes_read())

