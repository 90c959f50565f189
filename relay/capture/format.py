"""The recording format: what a recording folder holds, and the layout of each record.

A recording is a folder:

    recording.json                 what recorded it: format name and version, when, sampling, redacted fields,
                                   and what an answer's latency measures (`latency`: `gateway` or `round_trip`)
    segment-000001.msgpack.zst     segments, in order; a new one when the current reaches --record-max-size
    segment-000002.msgpack.zst     or --record-max-age
    index.jsonl                    one line per frame written: segment, offset, length, record counts, times

A segment is a sequence of zstd frames, each one independently decodable: one frame per flush of the writer
(at least one a second), so that a relay killed -9 loses at most what it received since the last flush, and a
torn last frame costs nothing before it. A frame's content is msgpack values: a FRAME record (the frame's
number and a monotonic/wall clock pair taken at the flush), then arrays of records of the kinds below (an array
per chunk the writer packs in one call). Each segment starts with a frame holding a CONNECTION record for every
connection still open, so one segment can be read alone.

    FRAME       [0, frame_no, mono_ns, wall_ns]
    CONNECTION  [1, conn, mono_ns, door, subprotocol]              door: websocket | http | grpc
    REQUEST     [2, conn, mono_ns, request_id, endpoint, body]     body: the frame or HTTP body as received
    ANSWER      [3, conn, payload]  or  [3, conn, payload, mono_ns, request_id, latency_ns, error]
    CLOSED      [4, conn, mono_ns]

Times are integer nanoseconds on the relay's monotonic clock (`time.monotonic_ns`): gaps between arrivals are
exact whatever the wall clock does. A record's wall time is its monotonic time plus the offset of the FRAME
record it follows (wall_ns - mono_ns). An answer joins its request by connection and request id.

An answer is recorded as the relay sent it (`payload`: the frame or HTTP body, in the connection's subprotocol),
which costs the relay nothing to produce, and nothing else (each item packed costs the relay's event loop): a
reader takes its request id, status, route entries (the first, the relay's own, is its receipt-to-answer
latency) and document ids from it (relay.wire.answers). An import from a browser adds what a payload cannot say:
when it arrived, the request id it answers (a json gateway's ids are its own), the browser's round trip as
latency, and an error where there is no payload (an HTTP error status); None where the payload says it.

The index is appended after each frame: a reader may follow it while the relay is still writing. Readers do
not need it (frames are self-delimiting); it is what `flowrelay record info` reads to describe a recording
without decompressing it.

Pure: no I/O. Imports: the standard library and relay.wire.messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.wire.messages import Route

FORMAT_NAME = "flowrelay-recording"
FORMAT_VERSION = 1
META_FILE = "recording.json"
INDEX_FILE = "index.jsonl"
SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".msgpack.zst"

FRAME = 0
CONNECTION = 1
REQUEST = 2
ANSWER = 3
CLOSED = 4

WEBSOCKET = "websocket"
HTTP = "http"
GRPC = "grpc"
DOORS = (WEBSOCKET, HTTP, GRPC)

# What an answer's `latency_ns` measures: the relay's receipt to answer (its gateway route entry), or a client's
# round trip (a HAR import: the browser's send and receive times).
LATENCY_GATEWAY = "gateway"
LATENCY_ROUND_TRIP = "round_trip"


def segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:06d}{SEGMENT_SUFFIX}"


def is_segment_name(name: str) -> bool:
    return name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)


# ---- what a reader hands out ---------------------------------------------------------------------


@dataclass(slots=True)
class RecordedAnswer:
    """The answer a recorded request got: its status, how long it took, its route entries and document ids
    (None: opaque `docs_bytes`, or no answer body), as a reader takes them from the recorded payload."""

    mono_ns: int | None  # when it was answered (an import's; a relay's answer has it in its routes)
    status_code: int
    error: str | None
    latency_ns: int | None
    routes: list[Route] = field(default_factory=list)
    doc_ids: list[str] | None = None

    @property
    def is_error(self) -> bool:
        return self.status_code >= 1


@dataclass(slots=True)
class RecordedRequest:
    """One request as the relay received it. `index` is its place in the recording's arrival order."""

    index: int
    conn: int
    mono_ns: int
    wall_ns: int
    request_id: str
    endpoint: str
    body: bytes | str
    answer: RecordedAnswer | None = None


@dataclass(slots=True)
class RecordedConnection:
    """One client connection: which door it came through and in which subprotocol."""

    conn: int
    door: str
    subprotocol: str
    opened_mono_ns: int
    closed_mono_ns: int | None = None
    requests: int = 0

    @property
    def codec(self) -> str:
        """The frames its requests are in: `bytes` (DataRequestProto: WebSocket bytes, gRPC) or `json`."""
        return "bytes" if self.subprotocol == "bytes" else "json"
