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
they were sent.

JSON Lines in bytes mode, the common case, take a shorter road (`prepare_jsonl_bytes`): each line's
object goes straight into the batch's `DocumentProto`s (relay.wire.json_to_proto), without a Record or
a Document per line, and the envelope is built once per run and copied per batch. The frames are the
same bytes as the general road's (tests/test_ingest_prepare.py). `prepare_input` picks the road.
Imports relay.wire, loadtest.payloads and the readers.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtest.ingest.readers import ID_HASH, Block, Input, InputReadError, Record, Skip, derive_id
from loadtest.payloads import CORRELATION_KEY, ID_WIDTH
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.errors import WireError
from relay.wire.json_to_proto import STRING_FIELDS, add_json_doc, docs_request
from relay.wire.messages import DataRequest
from relay.wire.proto import jina_pb2


@dataclass(frozen=True)
class RequestShape:
    """What every request of the run carries besides its Documents."""

    mode: str = "bytes"  # bytes | json
    endpoint: str = "/"
    target_executor: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    # Ascending; a range when they run without gaps (as the reading process hands them over).
    positions: list[int] | range
    lines: Sequence[int | None]
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


def prepare_input(inp: Input, skip: Skip, skip_below: int | None, batch: int, shape: RequestShape) -> Iterator[Item]:
    """The items of the run: JSON Lines in bytes mode by the short road, anything else by `prepare_items`.
    `skip`/`skip_below`: the settled positions, as `Input.records` takes them."""
    if inp.format == "jsonl" and shape.mode == "bytes":
        return prepare_jsonl_bytes(inp, inp.line_blocks(skip, skip_below), batch, shape)
    return prepare_items(inp, inp.records(skip=skip, skip_below=skip_below), batch, shape)


def envelope(shape: RequestShape) -> jina_pb2.DataRequestProto:
    """A bytes-mode request without Documents or request id, as `encode_batch` writes its envelope."""
    pb = jina_pb2.DataRequestProto()
    req = DataRequest(exec_endpoint=shape.endpoint, target_executor=shape.target_executor,
                      parameters=dict(shape.parameters) or None)
    proto_codec.envelope_to_proto(req, pb)
    return pb


def prepare_jsonl_bytes(inp: Input, blocks: Iterator[Block], batch: int, shape: RequestShape) -> Iterator[Item]:
    """`prepare_items` for JSON Lines in bytes mode, from `Input.line_blocks`: the same items, the same
    frames. A whole batch of plain records (strings only, all with ids or none) is parsed and built at
    once (`_whole_batch`); anything else, and whatever a batch with one unusual record holds, goes
    record by record (`_RecordByRecord`), which fills batches exactly as `prepare_items` does."""
    template = envelope(shape)
    slow = _RecordByRecord(inp, template)
    misses = 0  # whole batches tried in a row that were not plain
    try:
        for start, linenos, bodies in blocks:
            n = len(bodies)
            at = 0
            while at < n:
                k = min(batch - len(slow.positions), n - at)
                # Nothing half-filled: the next `batch` records may go at once. An input whose batches are
                # seldom plain (tags on every line, say) is tried now and then only: a miss parses twice.
                if k == batch and (misses < WHOLE_MISSES or misses % WHOLE_RETRY_EVERY == 0):
                    ids_from = inp.id_position(start + at)
                    shards = inp.options.shard_count
                    pb = _whole_batch(template, range(ids_from, ids_from + k * shards, shards), bodies[at : at + k])
                    if pb is not None:
                        misses = 0
                        end = start + at + k
                        yield _prepared_proto(pb, range(start + at, end), linenos[at : at + k], end, inp)
                        at += k
                        continue
                if k == batch:
                    misses += 1
                for i in range(at, at + k):
                    malformed = slow.add(start + i, linenos[i], bodies[i])
                    if malformed is not None:
                        yield malformed
                at += k
                if len(slow.positions) >= batch:
                    yield slow.take()
    except InputReadError as exc:
        yield Failed(str(exc), inp.count, inp.bytes_read())
        return
    if slow.positions:
        yield slow.take()
    yield End(inp.count, inp.bytes_read())


WHOLE_MISSES = 8
WHOLE_RETRY_EVERY = 64
_ID_LESS = frozenset((STRING_FIELDS | {"tags"}) - {"id"})
_get_id = operator.methodcaller("get", "id")


def _whole_batch(template: jina_pb2.DataRequestProto, id_positions: range, bodies: list[bytes]) -> Any:
    """The request for the records of texts `bodies` (whose ids, when derived, come from `id_positions`:
    their ordinals in the whole input) when each is a plain Document (see relay.wire.json_to_proto.docs_request)
    and either all have ids or none has (then all are derived, as `derive_id` does); else None, and nothing
    has changed."""
    try:
        dicts = list(map(orjson.loads, bodies))
    except orjson.JSONDecodeError:
        return None
    if set(map(type, dicts)) != {dict}:
        return None
    if all(map(_ID_LESS.issuperset, dicts)):
        new_hash = ID_HASH.copy
        for position, d, body in zip(id_positions, dicts, bodies, strict=True):
            h = new_hash()
            h.update(b"%d\x00" % position + body)
            d["id"] = h.hexdigest()
    elif not all(map(_get_id, dicts)):  # some without an id, or with one the model reads as empty
        return None
    return docs_request(template, dicts)


class _RecordByRecord:
    """A batch filled one record at a time: what `prepare_items` does with the readers' Records."""

    def __init__(self, inp: Input, template: jina_pb2.DataRequestProto) -> None:
        self.inp = inp
        self.template = template
        self._new()

    def _new(self) -> None:
        pb = self.pb = jina_pb2.DataRequestProto()
        pb.CopyFrom(self.template)
        self.docs = pb.data.docs.docs
        self.positions: list[int] = []
        self.linenos: list[int | None] = []

    def add(self, position: int, lineno: int, body: bytes) -> Malformed | None:
        """Add one record to the batch, or return it as Malformed."""
        try:
            d = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._malformed(position, lineno, body, f"not JSON: {exc}")
        if type(d) is dict:
            doc_id = d.get("id")
            # As the readers do: an id the model would read as empty (none, null, "") is derived.
            if doc_id is None or doc_id == "":
                d["id"] = derive_id(self.inp.id_position(position), body)
        try:
            add_json_doc(self.docs, d)
        except (WireError, ValueError) as exc:
            return self._malformed(position, lineno, body, f"not a Document: {exc}")
        self.positions.append(position)
        self.linenos.append(lineno)
        return None

    def take(self) -> Prepared:
        """The batch as it is; a new one begins. Arrays are marked as `proto_codec.encode_request` marks them (a
        whole plain batch has none)."""
        positions = self.positions
        proto_codec.mark_numpy_proto(self.docs)
        item = _prepared_proto(self.pb, positions, self.linenos, positions[-1] + 1, self.inp)
        self._new()
        return item

    def _malformed(self, position: int, lineno: int, body: bytes, error: str) -> Malformed:
        record = Record(position, self.inp.display, lineno, None, error, body.decode("utf-8", "replace"))
        return Malformed(record, position + 1, self.inp.bytes_read())


def _prepared_proto(pb: jina_pb2.DataRequestProto, positions: list[int] | range, linenos: Sequence[int | None],
                    read: int, inp: Input) -> Prepared:
    """The batch of `pb`'s Documents; `read`: how many records reading had gone through (the batch's last
    position + 1, as `inp.count` was when `prepare_items` took it)."""
    header = pb.header
    while True:
        placeholder = _placeholder()
        header.request_id = placeholder
        frame = pb.SerializeToString(deterministic=True)
        mark = placeholder.encode("ascii")
        at = frame.find(mark)
        if at >= 0 and frame.find(mark, at + 1) < 0:
            return Prepared(positions, linenos, frame[:at], frame[at + len(mark) :], None, read,  # type: ignore[arg-type]
                            inp.bytes_read())
        # The Documents happen to hold this random token: draw another.
