"""Helpers for the capture and replay tests: real WebSocket clients sending frames with given gaps through a relay
that records them, and frames compared without what a replay changes (its request ids).

    record_connections(folder, [frames of connection 0, frames of connection 1, ...])
    by_connection(gateway.arrivals)   # what a fake gateway got, per connection
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from load_helpers import Arrival
from relay_process import run_relay
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest
from relay.wire.proto import jina_pb2

CORRELATION_KEY = "flowrelay_rid"


def json_frame(doc_id: str, endpoint: str = "/index", **extra: Any) -> str:
    return orjson.dumps({"data": [{"id": doc_id, "text": f"text of {doc_id}", **extra}],
                         "execEndpoint": endpoint}).decode()


def bytes_frame(rid: str, doc_id: str, endpoint: str = "/search") -> bytes:
    return proto_codec.encode(DataRequest(request_id=rid, exec_endpoint=endpoint,
                                          docs=[Document(id=doc_id, text=f"bytes {doc_id}")]))


async def _drain(ws: ClientConnection, answers: list[Any]) -> None:
    try:
        async for message in ws:
            answers.append(message)
    except ConnectionClosed:
        pass


async def send_with_gaps(url: str, subprotocol: str, frames: Sequence[str | bytes], gaps_ms: Sequence[int],
                         start_delay_s: float = 0.0) -> list[Any]:
    """One connection: `frames` sent `gaps_ms` apart (answers read meanwhile), then end of stream; the answers."""
    await asyncio.sleep(start_delay_s)
    answers: list[Any] = []
    async with connect(url, subprotocols=[subprotocol], compression=None, max_size=None) as ws:
        reader = asyncio.create_task(_drain(ws, answers))
        start = time.perf_counter()
        due = 0.0
        for i, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
            await ws.send(frame)
            due += gaps_ms[i % len(gaps_ms)] / 1000
        await ws.send(b"\x00" if subprotocol == "bytes" else "{}")
        await asyncio.wait_for(reader, 20)
    return answers


def record_connections(folder: Path, streams: Sequence[Sequence[str]], gap_ms: int = 6) -> None:
    """A relay (`-e upper`) recording into `folder` while one json connection per stream sends its frames, the
    connections starting 2 ms apart (so that they rank in order)."""
    with run_relay("-e", "upper", "--record", str(folder)) as relay:
        async def all_of_them() -> None:
            await asyncio.gather(*(send_with_gaps(relay.url, "json", s, (gap_ms,), start_delay_s=0.002 * c)
                                   for c, s in enumerate(streams)))
        asyncio.run(all_of_them())


def normalised(frame: bytes | str, subprotocol: str | None) -> Any:
    """A request frame without what a replay changes: its request id (bytes) or correlation parameter (json)."""
    if subprotocol == "bytes":
        pb = jina_pb2.DataRequestProto.FromString(frame if isinstance(frame, bytes) else frame.encode())
        pb.header.request_id = ""
        return pb.SerializeToString(deterministic=True)
    obj = orjson.loads(frame)
    params = obj.get("parameters") or {}
    params.pop(CORRELATION_KEY, None)
    if params:
        obj["parameters"] = params
    else:
        obj.pop("parameters", None)
    return obj


def by_connection(arrivals: Sequence[Arrival]) -> dict[int, list[Arrival]]:
    out: dict[int, list[Arrival]] = {}
    for a in arrivals:
        out.setdefault(a.connection, []).append(a)
    return out
