"""Requests, responses and their parts, independent of the subprotocol that carries them.

One `DataRequest` class serves both directions: a response is the request after the Flow has
processed it (same id and endpoint, routes and status filled in), exactly as a Jina gateway
answers with the `DataRequestProto` it was sent.

A request read from a bytes frame by `proto_codec.decode_request` may keep its documents in the
protobuf message it arrived in (`raw`) until something needs them as `Document`s: `load_docs()`
converts them, `docs_proto` hands out the protobuf documents while they are still there. Executors
that never look at the documents (echo, sleep, fail) thus cost no conversion either way.

Timestamps are integer nanoseconds since the Unix epoch (UTC), the resolution of
`google.protobuf.Timestamp`; `format_timestamp` and `parse_timestamp` convert to and from the
RFC 3339 text of the json subprotocol.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.wire.documents import Document

STATUS_SUCCESS = 0
STATUS_ERROR = 1


@dataclass(slots=True)
class ExceptionInfo:
    """What an Executor raised: `StatusProto.ExceptionProto`."""

    name: str
    args: list[str] = field(default_factory=list)
    stacks: list[str] = field(default_factory=list)
    executor: str = ""


@dataclass(slots=True)
class Status:
    """`StatusProto`. Code 0 is success, 1 an error (Jina >= 3.6); treat any code >= 1 as failure."""

    code: int = STATUS_SUCCESS
    description: str = ""
    exception: ExceptionInfo | None = None

    @property
    def is_error(self) -> bool:
        return self.code >= STATUS_ERROR


@dataclass(slots=True)
class Route:
    """One entry of `routes`: who handled the request, from when to when (server clock, ns)."""

    executor: str
    start_ns: int | None = None
    end_ns: int | None = None
    status: Status | None = None


@dataclass(slots=True)
class DataRequest:
    """A data request or response.

    `docs` None means `"data": null` (no documents); `parameters` None means none were given.
    `docs_bytes` carries `DataContentProto.docs_bytes` through untouched (opaque docarray bytes).

    Documents still in protobuf form: while `raw` is set (and `docs` is None), the documents are the
    `data.docs` of that `jina.DataRequestProto` and nowhere else; `load_docs()` moves them into `docs`
    (and drops `raw`), `docs_proto` is the protobuf list while they are there. Code that reads or
    changes `docs` of a request that came from `proto_codec.decode_request` calls `load_docs()` first.
    `raw_parameters` is the dict that `parameters` was read into from `raw`: as long as `parameters` is
    that very object, the encoder writes the message's own `parameters` back. So parameters are changed
    by assigning a new dict, never in place (Executors get copies, see relay.executors.params_for).
    Neither field is part of the request's value: both are left out of `==` and `repr`.
    """

    request_id: str = ""
    exec_endpoint: str | None = None
    target_executor: str | None = None
    parameters: dict[str, Any] | None = None
    docs: list[Document] | None = None
    routes: list[Route] = field(default_factory=list)
    status: Status | None = None
    docs_bytes: bytes | None = None
    raw: Any = field(default=None, compare=False, repr=False)
    raw_parameters: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        return self.status is not None and self.status.is_error

    @property
    def docs_proto(self) -> Any:
        """The documents as the protobuf list they arrived in (`DocumentProto`s, changeable in place),
        or None when they are not (or no longer) in protobuf form."""
        raw = self.raw
        if raw is None or self.docs is not None:
            return None
        return raw.data.docs.docs

    def load_docs(self) -> list[Document] | None:
        """`docs`, converted from the protobuf form first if they are still in it. Raises BadRequest
        for what the Document model cannot hold (a sparse array)."""
        raw = self.raw
        if raw is not None:
            if self.docs is None:
                self.docs = [Document.from_proto(d) for d in raw.data.docs.docs]
            # From here on the Documents are the documents: the message's copy is stale.
            self.raw = None
            self.raw_parameters = None
        return self.docs

    def fill_doc_ids(self, new_id: Callable[[], str]) -> None:
        """Give each top-level document without an id one, in whichever form the documents are."""
        docs = self.docs
        if docs is not None:
            for doc in docs:
                if doc.id is None:
                    doc.id = new_id()
            return
        raw = self.raw
        if raw is not None:
            # An id absent from a DocumentProto reads as "", which from_proto leaves as None.
            for d in raw.data.docs.docs:
                if not d.id:
                    d.id = new_id()


class EndOfStream:
    """The client's end-of-stream marker: `{}` in json mode, a single `0x00` byte in bytes mode."""

    _instance: EndOfStream | None = None

    def __new__(cls) -> EndOfStream:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM = EndOfStream()
JSON_END_OF_STREAM = "{}"
BYTES_END_OF_STREAM = b"\x00"


# ---- timestamps --------------------------------------------------------------------------------


def now_ns() -> int:
    """Wall-clock time at microsecond resolution, as a Jina gateway stamps its routes."""
    return time.time_ns() // 1000 * 1000


_prefix_cache: dict[int, str] = {}


def format_timestamp(ns: int) -> str:
    """RFC 3339 UTC with a `Z`, as protobuf's JSON mapping writes a Timestamp: 0, 3, 6 or 9
    fractional digits, the fewest that hold the value exactly."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    prefix = _prefix_cache.get(seconds)
    if prefix is None:
        if len(_prefix_cache) > 4096:
            _prefix_cache.clear()
        # Not strftime: its %Y does not zero-pad years before 1000 on glibc ("1-01-01T...").
        t = time.gmtime(seconds)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        _prefix_cache[seconds] = prefix
    if nanos == 0:
        return prefix + "Z"
    if nanos % 1_000_000 == 0:
        return f"{prefix}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{prefix}.{nanos // 1000:06d}Z"
    return f"{prefix}.{nanos:09d}Z"


_seconds_cache: dict[str, int] = {}


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch from RFC 3339 text (`...Z` or `...+00:00`, any fraction length)."""
    base = text[:19]
    seconds = _seconds_cache.get(base)
    if seconds is None:
        if len(_seconds_cache) > 4096:
            _seconds_cache.clear()
        try:
            seconds = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
        _seconds_cache[base] = seconds
    rest = text[19:]
    nanos = 0
    offset_s = 0
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac = rest[1:end]
        nanos = int(frac[:9].ljust(9, "0")) if frac else 0
        rest = rest[end:]
    if rest and rest not in ("Z", "z"):
        sign = -1 if rest[0] == "-" else 1
        hh, mm = rest[1:3], rest[4:6]
        offset_s = sign * (int(hh) * 3600 + int(mm) * 60)
    return (seconds - offset_s) * 1_000_000_000 + nanos
