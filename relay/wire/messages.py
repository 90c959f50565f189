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
RFC 3339 text of the json subprotocol, `format_isoformat` writes Python's isoformat (a Jina HTTP
gateway's), both on `format_utc_seconds`.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable
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
    `data.docs` of that `jina.DataRequestProto` and nowhere else; `raw_docs` is that list of
    `DocumentProto`s (kept so as not to walk the message for it each time), `docs_proto` hands it out
    while the documents are in that form, and `load_docs()` moves them into `docs` (dropping `raw`).
    Code that reads or changes `docs` of a request from `proto_codec.decode_request` calls `load_docs()`
    first; `docs` given directly win over the message. `raw_parameters` is the dict that `parameters`
    was read into from `raw`: while `parameters` is that very object, the encoder writes the message's
    own `parameters` back, so parameters are changed by assigning a new dict, never in place (Executors
    get copies, see relay.executors.params_for). None of the three is part of the request's value: they
    are left out of `==` and `repr`.
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
    raw_docs: Any = field(default=None, compare=False, repr=False)
    raw_parameters: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # The subprotocol the answer goes back in, where a door knows it (a WebSocket client's): an upstream's answer
    # in the same subprotocol is then carried as it came, the relay's parts spliced in (relay.wire.splice).
    answer_subprotocol: str | None = field(default=None, compare=False, repr=False)
    # Such an answer (a relay.wire.splice.SplicedAnswer): the codec of its subprotocol encodes it by splicing.
    spliced: Any = field(default=None, compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        return self.status is not None and self.status.is_error

    @property
    def docs_proto(self) -> Any:
        """The documents as the protobuf list they arrived in (`DocumentProto`s, changeable in place),
        or None when they are not (or no longer) in protobuf form."""
        return self.raw_docs if self.docs is None else None

    def load_docs(self) -> list[Document] | None:
        """`docs`, converted from the protobuf form first if they are still in it. Raises BadRequest
        for what the Document model cannot hold (a sparse array)."""
        raw_docs = self.raw_docs
        if raw_docs is not None:
            if self.docs is None:
                self.docs = [Document.from_proto(d) for d in raw_docs]
            # From here on the Documents are the documents: the message's copy is stale.
            self.raw = self.raw_docs = self.raw_parameters = None
        return self.docs

    def take_docs(self, other: DataRequest) -> None:
        """Take the documents of `other` (an answer's, replacing the request's), in whichever form."""
        self.docs = other.docs
        self.docs_bytes = other.docs_bytes
        self.raw, self.raw_docs, self.raw_parameters = other.raw, other.raw_docs, other.raw_parameters

    def route_spans(self) -> list[tuple[str, int]]:
        """Each route entry's executor and span in ns (see `route_spans`)."""
        return route_spans(self.routes)

    def fill_doc_ids(self, new_id: Callable[[], str]) -> None:
        """Give each top-level document without an id one, in whichever form the documents are."""
        docs = self.docs
        if docs is not None:
            for doc in docs:
                if doc.id is None:
                    doc.id = new_id()
            return
        raw_docs = self.raw_docs
        if raw_docs is not None:
            # An id absent from a DocumentProto reads as "", which from_proto leaves as None.
            for d in raw_docs:
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


def format_utc_seconds(seconds: int) -> str:
    """Whole seconds since the epoch as `YYYY-MM-DDTHH:MM:SS` (UTC, no zone): the part every timestamp text
    of the wire shares. Cached: the answers of one second all start the same."""
    prefix = _prefix_cache.get(seconds)
    if prefix is None:
        if len(_prefix_cache) > 4096:
            _prefix_cache.clear()
        # Not strftime: its %Y does not zero-pad years before 1000 on glibc ("1-01-01T...").
        t = time.gmtime(seconds)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        _prefix_cache[seconds] = prefix
    return prefix


def format_timestamp(ns: int) -> str:
    """RFC 3339 UTC with a `Z`, as protobuf's JSON mapping writes a Timestamp: 0, 3, 6 or 9
    fractional digits, the fewest that hold the value exactly."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    prefix = _prefix_cache.get(seconds)  # looked up here first: a call per timestamp costs on every answer
    if prefix is None:
        prefix = format_utc_seconds(seconds)
    if nanos == 0:
        return prefix + "Z"
    if nanos % 1_000_000 == 0:
        return f"{prefix}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{prefix}.{nanos // 1000:06d}Z"
    return f"{prefix}.{nanos:09d}Z"


def format_isoformat(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as Python's `datetime.isoformat()` of a UTC datetime, as pydantic writes a
    Jina HTTP gateway's route times: `2026-11-26T21:23:40.739553+00:00`, without the fraction when it is zero."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    prefix = _prefix_cache.get(seconds)
    if prefix is None:
        prefix = format_utc_seconds(seconds)
    micros = rest // 1000
    return f"{prefix}.{micros:06d}+00:00" if micros else f"{prefix}+00:00"


_seconds_cache: dict[str, int] = {}
# Nanoseconds per unit of a fraction of n digits (n = 1..9).
_FRACTION_SCALE = tuple(10 ** (9 - n) for n in range(1, 10))


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
    # What gateways write (`.` digits `Z`: 3, 6 or 9 of them), read in one step; anything else below.
    if rest[-1:] == "Z" and rest[:1] == "." and rest[1:-1].isdecimal() and len(rest) <= 11:
        return seconds * 1_000_000_000 + int(rest[1:-1]) * _FRACTION_SCALE[len(rest) - 3]
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


def route_spans(routes: Iterable[Route] | None) -> list[tuple[str, int]]:
    """Each route entry's executor and its span (end minus start, ns), in order: the time a request spent in
    each hop, on the server's clock (both stamps from the same entry, so its offset from ours cancels out).
    Entries without a name or a stamp, or ending before they start, are left out; odd entries too: this never
    raises."""
    out: list[tuple[str, int]] = []
    try:
        for route in routes or ():
            try:
                name, start_ns, end_ns = route.executor, route.start_ns, route.end_ns
                if start_ns is None or end_ns is None or not isinstance(name, str) or not name:
                    continue
                span_ns = end_ns - start_ns
                if span_ns >= 0:  # False for NaN too
                    out.append((name, span_ns))
            except Exception:
                continue
    except Exception:
        pass  # not iterable: no spans
    return out


def timestamp_span_ns(start: str, end: str) -> int:
    """`end` minus `start` in ns, two RFC 3339 stamps as `parse_timestamp` reads them. Two stamps of one second
    (read before: its date and time are known good) in one layout (`...ss.ffffffZ`, `...ss.ffffff+00:00`: a
    route entry's start and end, mostly) are subtracted as their fractions, without reading the date again.
    Raises ValueError on a text that is not a stamp."""
    size = len(start)
    if size == len(end) and start[:20] == end[:20] and start[19:20] == "." and start[:19] in _seconds_cache:
        cut = size - 1 if start[-1:] == "Z" else size - 6 if start[-6:] == "+00:00" else 0
        if cut > 20 and end[cut:] == start[cut:] and cut - 20 <= 9:
            first, last = start[20:cut], end[20:cut]
            if first.isdecimal() and last.isdecimal():
                return (int(last) - int(first)) * _FRACTION_SCALE[cut - 21]
    return parse_timestamp(end) - parse_timestamp(start)
