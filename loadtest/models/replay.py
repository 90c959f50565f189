"""The replay model: a recording's requests, sent again with their recorded gaps (or re-timed), each recorded
connection on a session of its own.

Timing. Request i of the recording arrived `offset_i` seconds after the first one; in a replay it is due at
`offset_i / speed` (`--speed 2` halves every gap, and keeps the connections' interleaving). With `--rate R` the
recording is re-timed as an open model: the requests keep their order and content, the k-th is due at k / R
(or at the k-th arrival of a Poisson process with `--arrival poisson`). With `--loop` the recording starts over
one mean gap after its last request (the k-th repetition offset by k x (span + mean gap) / speed; under `--rate`
the count just goes on), until `--duration` or `--requests`. As in every open-model run, latency counts from each
request's due time.

Content. Each recorded request is sent as it was received, with a fresh request id (bytes: `header.request_id`;
json: `parameters.flowrelay_rid`, which the engine matches answers by); a json request keeps its JSON as it was,
the correlation parameter added. A session speaks its connection's recorded subprotocol (HTTP-door requests are
json, gRPC ones bytes), or the one `--subprotocol` asks for, in which case requests are translated with
relay.wire's codecs: json <-> bytes, and docarray >= 0.30 `DocProto` documents with `--docarray v2`, as the
relay translates for such Flows. A grpc:// target takes bytes, an http:// one json, whatever was recorded.

Processes. `--procs N` splits by recorded connection: connection r (in order of first arrival) goes to worker
r mod N, so a session's requests stay on one worker and in order. Each worker's plan holds its connections'
requests in arrival order: its s-th send is `templates[s % len]` on `session_of[s % len]`, because every
repetition of the recording brings each worker the same requests in the same order.

The narrow interface the engine uses: `load_recording`, `ReplaySpec` (what the run is told, checked once),
`ReplayPlan.build(...)` for one worker (`connections`, `subprotocols`, `templates`, `session_of`, `recorded`,
`schedule`), and `ReplaySchedule`, a `Schedule` whose `shard` splits by connection.

Imports: the standard library, orjson, loadtest.models.schedule, loadtest.payloads, relay.wire, relay.capture.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest.models.schedule import ConstantRate, Schedule
from loadtest.payloads import CORRELATION_KEY, PLACEHOLDER, Template, template_from_frame
from relay.capture.format import GRPC, HTTP, RecordedConnection, RecordedRequest
from relay.capture.har import HarError, recording_from_har
from relay.capture.reader import Recording, RecordingError, read_recording
from relay.wire import json_codec, proto_codec
from relay.wire.codecs import bytes_codec
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest, EndOfStream
from relay.wire.proto import jina_pb2

__all__ = [
    "ReplayError",
    "ReplayPlan",
    "ReplaySchedule",
    "ReplaySpec",
    "load_recording",
    "request_frame",
    "session_subprotocol",
]

# A recording of one request has no gap to take the mean of: its repetitions are this far apart.
SINGLE_REQUEST_PERIOD_S = 1.0


class ReplayError(ValueError):
    """A recording that cannot be replayed as asked; the message says why."""


@functools.lru_cache(maxsize=2)
def load_recording(source: Path | str) -> Recording:
    """A recording folder, one of its segments, or a browser's HAR file. Raises ReplayError.

    Read once per process and kept (the command line checks it before the run, the workers then plan from it,
    and `--procs` workers forked after that share it); a Recording is never changed by its readers."""
    path = Path(source)
    try:
        recording = recording_from_har(path) if path.suffix.lower() == ".har" else read_recording(path)
    except (RecordingError, HarError) as exc:
        raise ReplayError(str(exc)) from None
    if not recording.requests:
        raise ReplayError(f"{path}: the recording holds no requests")
    return recording


def _offsets_s(recording: Recording) -> list[float]:
    first = recording.requests[0].mono_ns
    return [(r.mono_ns - first) / 1e9 for r in recording.requests]


@dataclass(frozen=True)
class ReplaySpec:
    """What a replay run is told (`flowrelay load URL --replay SOURCE ...`), with what the recording implies."""

    source: Path
    speed: float = 1.0
    rate: float | None = None
    loop: bool = False
    subprotocol: str | None = None  # None: each session in its connection's recorded subprotocol
    connections: int = 0
    requests: int = 0
    span_s: float = 0.0

    @classmethod
    def of(cls, recording: Recording, source: Path, speed: float = 1.0, rate: float | None = None,
           loop: bool = False, subprotocol: str | None = None) -> ReplaySpec:
        if not (math.isfinite(speed) and speed > 0):
            raise ReplayError(f"--speed must be > 0, got {speed:g}")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ReplayError(f"--rate must be > 0, got {rate:g}")
        offsets = _offsets_s(recording)
        # Connections that sent nothing (a /dry_run, say) get no session.
        senders = len({r.conn for r in recording.requests})
        return cls(source, speed, rate, loop, subprotocol, senders, len(offsets), offsets[-1])

    @property
    def period_s(self) -> float:
        """Recorded seconds from one repetition's first request to the next one's (span plus a mean gap)."""
        if self.requests < 2:
            return SINGLE_REQUEST_PERIOD_S
        return self.span_s + self.span_s / (self.requests - 1)

    @property
    def target_rps(self) -> float:
        """The rate the replay means to send at: `--rate`, or the recording's own mean rate times the speed."""
        if self.rate is not None:
            return self.rate
        return self.requests / self.period_s * self.speed


class ReplaySchedule(Schedule):
    """Due times of a replay (see the module docstring), over the whole recording; `shard` by connection."""

    def __init__(self, offsets_s: Sequence[float], owners: Sequence[int], speed: float = 1.0,
                 rate: float | None = None, loop: bool = False, duration_s: float | None = None,
                 max_requests: int | None = None, arrival: str = "even", seed: int | None = None,
                 period_s: float | None = None) -> None:
        if not offsets_s or len(offsets_s) != len(owners):
            raise ValueError("a replay schedule needs one owner per recorded request, and at least one request")
        if loop and duration_s is None and max_requests is None:
            raise ReplayError("--loop repeats the recording without end: give --duration or --requests")
        self.offsets_s = list(offsets_s)
        self.owners = list(owners)
        self.speed = speed
        self.rate = rate
        self.loop = loop
        self.duration_s = duration_s
        n = len(self.offsets_s)
        # Without --loop the recording is sent once: at most its own number of requests.
        self.max_requests = max_requests if loop else min(n, max_requests if max_requests is not None else n)
        self.period_s = period_s if period_s is not None else (
            SINGLE_REQUEST_PERIOD_S if n < 2 else self.offsets_s[-1] * n / (n - 1))
        self._timed = None if rate is None else ConstantRate(rate, duration_s, self.max_requests, arrival, seed)

    def __repr__(self) -> str:
        return (f"ReplaySchedule(requests={len(self.offsets_s)}, speed={self.speed!r}, rate={self.rate!r}, "
                f"loop={self.loop!r}, duration_s={self.duration_s!r}, max_requests={self.max_requests!r})")

    def _stream(self) -> Iterator[tuple[float, int]]:
        """(due time, place in the recording) of every request of the run, in order."""
        n = len(self.offsets_s)
        if self._timed is not None:
            for k, due in enumerate(self._timed.due_times()):
                yield due, k % n
            return
        offsets, speed = self.offsets_s, self.speed
        end = self.duration_s if self.duration_s is not None else math.inf
        left = self.max_requests if self.max_requests is not None else math.inf
        repetition = 0
        while left > 0:
            base = repetition * self.period_s
            for j in range(n):
                due = (base + offsets[j]) / speed
                if due >= end or left <= 0:
                    return
                yield due, j
                left -= 1
            if not self.loop:
                return
            repetition += 1

    def due_times(self) -> Iterator[float]:
        return (due for due, _ in self._stream())

    def shard(self, worker: int, n_workers: int) -> Iterator[float]:
        """The due times of the requests of worker `worker`'s connections (connection rank mod n_workers)."""
        if not 0 <= worker < n_workers:
            raise ValueError(f"worker must be in 0..{n_workers - 1}, got {worker}")
        owners = self.owners
        return (due for due, j in self._stream() if owners[j] % n_workers == worker)

    @property
    def total_duration_s(self) -> float | None:
        if self._timed is not None:
            return self._timed.total_duration_s
        if not self.loop:
            once = self.offsets_s[-1] / self.speed
            return once if self.duration_s is None else min(once, self.duration_s)
        return self.duration_s

    def target_rate_at(self, t_s: float) -> float:
        end = self.total_duration_s
        if t_s < 0 or (end is not None and t_s > end):
            return 0.0
        if self.rate is not None:
            return self.rate
        return len(self.offsets_s) / self.period_s * self.speed


# ---- frames --------------------------------------------------------------------------------------


def session_subprotocol(conn: RecordedConnection, override: str | None) -> str:
    """What a replay session of `conn` speaks over WebSocket: `--subprotocol`, else what the connection spoke
    (an HTTP door's requests are json, a gRPC door's bytes)."""
    if override is not None:
        return override
    if conn.door == HTTP:
        return "json"
    if conn.door == GRPC:
        return "bytes"
    return conn.subprotocol if conn.subprotocol in ("json", "bytes") else "json"


def _json_docs(obj: dict[str, Any]) -> list[Any]:
    data = obj.get("data")
    if isinstance(data, dict):
        data = data.get("docs")
    return data if isinstance(data, list) else []


def _json_frame(body: bytes | str, endpoint: str) -> tuple[bytes, int, bool]:
    obj = orjson.loads(body)
    if not isinstance(obj, dict) or not obj:
        raise ReplayError("a recorded json request is not a request object")
    if obj.get("execEndpoint", obj.get("exec_endpoint")) != endpoint:
        obj.pop("exec_endpoint", None)
        obj["execEndpoint"] = endpoint  # an HTTP door request's endpoint was its path
    obj.setdefault("data", None)  # a gateway's json door dies without it
    params = obj.get("parameters")
    if params is None:
        params = obj["parameters"] = {}
    if not isinstance(params, dict):
        raise ReplayError("a recorded json request's parameters are not an object")
    params[CORRELATION_KEY] = PLACEHOLDER
    docs = _json_docs(obj)
    return orjson.dumps(obj), len(docs), bool(docs) and all(isinstance(d, dict) and d.get("id") for d in docs)


def _decoded(body: bytes | str, codec: str, endpoint: str) -> DataRequest:
    try:
        req = proto_codec.decode(body) if codec == "bytes" else json_codec.decode_request(body)  # type: ignore[arg-type]
    except WireError as exc:
        raise ReplayError(f"a recorded request cannot be read: {exc.reason}") from None
    if isinstance(req, EndOfStream):
        raise ReplayError("a recorded request is an end-of-stream marker")
    req.exec_endpoint = endpoint
    return req


def request_frame(req: RecordedRequest, codec: str, mode: str, docarray: str = "v1") -> tuple[Template, bool]:
    """The frame to send for a recorded request whose body is in `codec` (json or bytes) to a session that speaks
    `mode`, as a Template to stamp with each send's id; and whether its documents all carried ids (only then can
    an answer's ids be compared with the recorded ones: a gateway makes up the missing ones)."""
    body = req.body
    if codec == "json" and mode == "json":
        frame, docs, with_ids = _json_frame(body, req.endpoint)
        return template_from_frame(frame, docs), with_ids
    if codec == "bytes" and mode == "bytes" and docarray == "v1":
        pb = jina_pb2.DataRequestProto()
        try:
            pb.ParseFromString(body if isinstance(body, bytes) else body.encode())
        except Exception as exc:
            raise ReplayError(f"a recorded bytes request cannot be read: {exc}") from None
        pb.header.request_id = PLACEHOLDER
        docs = pb.data.docs.docs
        return template_from_frame(pb.SerializeToString(), len(docs)), bool(docs) and all(d.id for d in docs)
    # Translated: through the one Document model, with relay.wire's codecs.
    decoded = _decoded(body, codec, req.endpoint)
    docs_list = decoded.load_docs() or []
    with_ids = bool(docs_list) and all(d.id for d in docs_list)
    if mode == "bytes":
        decoded.request_id = PLACEHOLDER
        frame = bytes_codec(docarray).encode_request(decoded)
    else:
        decoded.parameters = {**(decoded.parameters or {}), CORRELATION_KEY: PLACEHOLDER}
        frame = json_codec.encode_request(decoded)
    return template_from_frame(frame, len(docs_list)), with_ids


# ---- one worker's plan ---------------------------------------------------------------------------


@dataclass
class ReplayPlan:
    """One worker's share of a replay: its sessions and, in order, the requests it sends on them."""

    connections: int
    subprotocols: list[str]  # per session
    templates: list[Template]  # per request, in the worker's send order
    session_of: list[int]  # per request: the session (index into the worker's sessions)
    recorded: list[RecordedRequest]  # per request: what was recorded (its answer, for the comparison)
    ids_comparable: list[bool]  # per request: its documents carried ids
    schedule: ReplaySchedule
    latency_basis: str  # what the recorded latencies measure (relay.capture.format: gateway or round_trip)

    @classmethod
    def build(cls, recording: Recording, spec: ReplaySpec, frames_of: Any, worker: int = 0, n_workers: int = 1,
              duration_s: float | None = None, max_requests: int | None = None, arrival: str = "even",
              seed: int | None = None, docarray: str = "v1") -> ReplayPlan:
        """Worker `worker` of `n_workers`'s plan. `frames_of(subprotocol)` says which frames (`json`, `bytes`) a
        session offering `subprotocol` sends (the target's scheme decides: loadtest.config.codec_mode)."""
        # Connections ranked by their first request; rank r belongs to worker r % n_workers, as its session r // n.
        rank: dict[int, int] = {}
        for req in recording.requests:
            if req.conn not in rank:
                rank[req.conn] = len(rank)
        if n_workers > len(rank):
            raise ReplayError(f"--procs {n_workers} is more than the recording's {len(rank)} connection(s) that "
                              "sent requests: a replay splits by connection")
        conns = sorted(rank, key=rank.__getitem__)
        mine = [c for c in conns if rank[c] % n_workers == worker]
        subprotocols = [session_subprotocol(recording.connections[c], spec.subprotocol) for c in mine]
        templates: list[Template] = []
        session_of: list[int] = []
        recorded: list[RecordedRequest] = []
        comparable: list[bool] = []
        for req in recording.requests:
            r = rank[req.conn]
            if r % n_workers != worker:
                continue
            session = r // n_workers
            conn = recording.connections[req.conn]
            try:
                template, with_ids = request_frame(req, conn.codec, frames_of(subprotocols[session]), docarray)
            except (ReplayError, RuntimeError, ValueError, WireError) as exc:
                raise ReplayError(f"recorded request {req.index} (connection {req.conn}, {req.endpoint}): "
                                  f"{exc}") from None
            templates.append(template)
            session_of.append(session)
            recorded.append(req)
            comparable.append(with_ids)
        schedule = ReplaySchedule(_offsets_s(recording), [rank[r.conn] for r in recording.requests],
                                  speed=spec.speed, rate=spec.rate, loop=spec.loop, duration_s=duration_s,
                                  max_requests=max_requests, arrival=arrival, seed=seed, period_s=spec.period_s)
        return cls(len(mine), subprotocols, templates, session_of, recorded, comparable, schedule,
                   recording.latency_basis)
