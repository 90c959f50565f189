"""The coordinator protocol's messages and their framing: msgpack maps on a TCP stream, no I/O here.

Each message is one msgpack map with a `kind` key; msgpack is self-delimiting, so the stream needs no length
prefix (`FrameReader` feeds bytes in and takes whole messages out, refusing a message over `MAX_MESSAGE`).
A worker's connection goes:

    worker                                  coordinator (run by worker 0)
    hello {protocol, job, workers, index?, options, host, pid}
                                            welcome {index, seed, run_id}   or   refused {reason}
    (opens its sessions)
    ready
                                            ping {seq, sent}  x PROBES   (the clock offset, NTP-style)
    pong {seq, sent, worker_time}
                                            start {t0}        (once all N are ready: t0 = now + 2 s, wall clock)
    row {k, payload} once a second          heartbeat once a second, both ways
    result {payload}                        done
                                            abort {reason}    (a worker was lost, or the barrier timed out)
    failed {reason}   (the worker cannot run, e.g. its target is unreachable)

`payload` is the job's own plain data (a load worker's interval and recorder snapshot, an ingest worker's
counts): the coordinator hands it to a merger without reading it. A message that is not a map with a
known `kind` and its fields is a `ProtocolError`, which ends that connection.

Imports: the standard library and msgpack.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgpack

PROTOCOL = 1
MAX_MESSAGE = 64 * 1024 * 1024  # a recorder snapshot with many hops is ~100 kB; a final result a few MB at most

# kind -> the fields it must carry (others are allowed, for later versions).
FIELDS: dict[str, tuple[str, ...]] = {
    "hello": ("protocol", "job", "workers", "index", "options", "host", "pid"),
    "welcome": ("index", "seed", "run_id"),
    "refused": ("reason",),
    "ready": (),
    "ping": ("seq", "sent"),
    "pong": ("seq", "sent", "worker_time"),
    "start": ("t0",),
    "heartbeat": (),
    "row": ("k", "payload"),
    "result": ("payload",),
    "done": (),
    "abort": ("reason",),
    "failed": ("reason",),
}


class ProtocolError(ValueError):
    """Bytes on a coordinator connection that are not a message of this protocol."""


def message(kind: str, **fields: Any) -> dict[str, Any]:
    """A message as a dict; checks that `kind` is known and its fields are all there."""
    msg = {"kind": kind, **fields}
    check(msg)
    return msg


def check(msg: Any) -> dict[str, Any]:
    """`msg` if it is a well-formed message, else ProtocolError saying what is wrong."""
    if not isinstance(msg, Mapping):
        raise ProtocolError(f"expected a message (a map), got {type(msg).__name__}")
    kind = msg.get("kind")
    if kind not in FIELDS:
        raise ProtocolError(f"unknown message kind {kind!r}")
    missing = [name for name in FIELDS[kind] if name not in msg]
    if missing:
        raise ProtocolError(f"{kind} message without {', '.join(missing)}")
    return dict(msg)


def encode(msg: Mapping[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


class FrameReader:
    """Bytes from a stream in, whole messages out (`feed`, then iterate)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_message, strict_map_key=False)

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Add `data`; yield every message it completes."""
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise ProtocolError(f"a message over {MAX_MESSAGE} bytes") from None
        while True:
            try:
                msg = next(self._unpacker)
            except StopIteration:
                return
            except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
                raise ProtocolError(f"not msgpack: {exc}") from None
            yield check(msg)
