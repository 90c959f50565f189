"""A browser's HAR export as a recording: what a web app sent to a relay (or a Jina gateway), ready to replay.

Chrome and Chromium (DevTools > Network > Save all as HAR) keep a WebSocket's frames in the entry's
`_webSocketMessages`: `{"type": "send" | "receive", "time": <epoch seconds>, "opcode": 1 | 2, "data": ...}`
(binary frames base64). Each WebSocket entry becomes one connection, in the subprotocol its handshake answer
names (`Sec-WebSocket-Protocol`; json when none); each frame sent is a request (end-of-stream markers left out),
each frame received an answer: matched by request id in bytes mode, in order in json mode (a json client cannot
choose its ids; a relay answers a connection's requests in order unless its Executors take different times).
HTTP entries for the data routes of a Jina HTTP gateway (`POST /post`, `/index`, `/search`, `PUT /update`,
`DELETE /delete`) become requests of the `http` door, grouped by the HAR's `connection` when it has one.

A HAR has wall-clock times only, to the millisecond or so: arrival times are those (the monotonic clock of
the recording is the wall clock), and an answer's latency is the browser's round trip (`latency` is
`round_trip` in recording.json). `/dry_run` connections are left out.

Imports: the standard library, orjson, relay.wire, relay.capture.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from relay.capture.format import ANSWER, CONNECTION, HTTP, LATENCY_ROUND_TRIP, REQUEST, WEBSOCKET
from relay.capture.reader import Recording, RecordingAssembler
from relay.capture.redact import Redactor
from relay.capture.writer import SegmentWriter
from relay.wire.answers import read_json_answer, read_proto_answer
from relay.wire.errors import WireError
from relay.wire.proto import jina_pb2

# The data routes of Jina's HTTP gateway (JINA-WIRE.md §8.1): the path is the endpoint, but for /post.
HTTP_DATA_PATHS = ("/post", "/index", "/search", "/update", "/delete")
RECORDS_PER_FRAME = 50_000


class HarError(ValueError):
    """Not a HAR file, or one with nothing to import; the message says what."""


@dataclass
class HarImport:
    """What a HAR held: the records of a recording, and what was left out."""

    records: list[tuple[Any, ...]] = field(default_factory=list)
    connections: int = 0
    requests: int = 0
    answers: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    meta: dict[str, Any] = field(default_factory=dict)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _iso_ns(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return _ns(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _header(headers: Any, name: str) -> str | None:
    for h in headers or ():
        if isinstance(h, dict) and str(h.get("name", "")).lower() == name:
            return str(h.get("value", ""))
    return None


def _endpoint_of_json(body: bytes | str) -> tuple[str | None, bool]:
    """(endpoint, is end of stream) of a json request frame; endpoint None when it is not a request."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    if not obj:
        return None, True
    endpoint = obj.get("execEndpoint", obj.get("exec_endpoint")) or "/"
    return (endpoint if isinstance(endpoint, str) else None), False


class _Importer:
    def __init__(self) -> None:
        self.out = HarImport()
        self._conn = 0

    def _new_connection(self, door: str, subprotocol: str, opened_ns: int) -> int:
        conn = self._conn
        self._conn += 1
        self.out.connections += 1
        self.out.records.append((CONNECTION, conn, opened_ns, door, subprotocol))
        return conn

    def _request(self, conn: int, at_ns: int, rid: str, endpoint: str, body: bytes | str) -> None:
        self.out.requests += 1
        self.out.records.append((REQUEST, conn, at_ns, rid, endpoint, body))

    def _answer(self, conn: int, at_ns: int, rid: str, sent_ns: int, payload: bytes | str | None,
                error: str | None = None) -> None:
        """An answer as received, timed by the browser's round trip."""
        self.out.answers += 1
        self.out.records.append((ANSWER, conn, payload, at_ns, rid, at_ns - sent_ns, error))

    # ---- WebSocket -----------------------------------------------------------------------------

    def websocket(self, entry: dict[str, Any]) -> None:
        request = entry.get("request") or {}
        url = str(request.get("url", ""))
        if urlsplit(url).path == "/dry_run":
            self.out.skipped["/dry_run connection"] += 1
            return
        messages = [m for m in entry.get("_webSocketMessages") or () if isinstance(m, dict)]
        offered = _header(request.get("headers"), "sec-websocket-protocol")
        chosen = _header((entry.get("response") or {}).get("headers"), "sec-websocket-protocol")
        subprotocol = (chosen or (offered or "").split(",")[0]).strip() or "json"
        if subprotocol not in ("json", "bytes"):
            subprotocol = "json"
        opened = _iso_ns(entry.get("startedDateTime"))
        if opened is None:
            opened = _ns(float(messages[0].get("time", 0))) if messages else 0
        conn = self._new_connection(WEBSOCKET, subprotocol, opened)
        is_bytes = subprotocol == "bytes"
        sent: dict[str, int] = {}
        in_order: collections.deque[tuple[str, int]] = collections.deque()
        n = 0
        for m in messages:
            at = _ns(float(m.get("time", 0)))
            binary = m.get("opcode") == 2
            data: bytes | str = str(m.get("data", ""))
            if binary:
                try:
                    data = base64.b64decode(data)
                except ValueError:
                    self.out.skipped["undecodable binary frame"] += 1
                    continue
            if binary != is_bytes:
                self.out.skipped[f"{'binary' if binary else 'text'} frame on a {subprotocol} connection"] += 1
                continue
            if m.get("type") == "send":
                if is_bytes:
                    if data == b"\x00":
                        continue  # end of stream
                    try:
                        pb = jina_pb2.DataRequestProto.FromString(data)  # type: ignore[arg-type]
                    except Exception:
                        self.out.skipped["unparsable request frame"] += 1
                        continue
                    rid = pb.header.request_id or f"har-{conn}-{n}"
                    endpoint = pb.header.exec_endpoint or "/"
                    sent[rid] = at
                else:
                    endpoint_or_none, eos = _endpoint_of_json(data)
                    if eos:
                        continue
                    if endpoint_or_none is None:
                        self.out.skipped["unparsable request frame"] += 1
                        continue
                    endpoint = endpoint_or_none
                    rid = f"har-{conn}-{n}"
                    in_order.append((rid, at))
                n += 1
                self._request(conn, at, rid, endpoint, data)
            elif m.get("type") == "receive":
                try:
                    answer = read_proto_answer(data) if is_bytes else read_json_answer(data)  # type: ignore[arg-type]
                except (WireError, AttributeError, TypeError):
                    self.out.skipped["unreadable answer frame"] += 1
                    continue
                if is_bytes:
                    rid = answer.request_id
                    sent_at = sent.pop(rid, None)
                else:
                    rid, sent_at = in_order.popleft() if in_order else ("", None)
                if sent_at is None:
                    self.out.skipped["answer to no recorded request"] += 1
                    continue
                self._answer(conn, at, rid, sent_at, data)

    # ---- HTTP ----------------------------------------------------------------------------------

    def http(self, entry: dict[str, Any], conns: dict[str, int]) -> None:
        request = entry.get("request") or {}
        path = urlsplit(str(request.get("url", ""))).path
        body = (request.get("postData") or {}).get("text")
        at = _iso_ns(entry.get("startedDateTime"))
        if body is None or at is None:
            self.out.skipped["HTTP request without a body or a start time"] += 1
            return
        endpoint = path
        if path == "/post":
            endpoint_or_none, _ = _endpoint_of_json(body)
            if endpoint_or_none is None:
                self.out.skipped["unparsable HTTP body"] += 1
                return
            endpoint = endpoint_or_none
        key = str(entry.get("connection") or "")
        conn = conns.get(key) if key else None
        if conn is None:
            conn = self._new_connection(HTTP, "json", at)
            if key:
                conns[key] = conn
        rid = f"har-{conn}-{self.out.requests}"
        self._request(conn, at, rid, endpoint, body.encode())
        response = entry.get("response") or {}
        took_ms = entry.get("time")
        if not isinstance(took_ms, (int, float)) or took_ms < 0:
            return
        done = at + _ns(took_ms / 1000.0)
        status = int(response.get("status", 0) or 0)
        content = response.get("content") or {}
        text = content.get("text")
        if status != 200 or not text:
            self._answer(conn, done, rid, at, None, f"http {status}" if status != 200 else None)
            return
        try:
            raw = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode()
        except ValueError:
            self.out.skipped["unreadable HTTP answer"] += 1
            return
        self._answer(conn, done, rid, at, raw)


def read_har(path: Path | str) -> HarImport:
    """The records of a HAR file's WebSocket and HTTP data entries. Raises HarError."""
    path = Path(path)
    try:
        har = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise HarError(f"cannot read {path}: {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise HarError(f"{path} is not JSON: {exc}") from None
    log = har.get("log") if isinstance(har, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        raise HarError(f"{path} is not a HAR file (no log.entries)")
    importer = _Importer()
    http_conns: dict[str, int] = {}
    for entry in log["entries"]:
        if not isinstance(entry, dict):
            continue
        request = entry.get("request") or {}
        url = str(request.get("url", ""))
        scheme = urlsplit(url).scheme
        if "_webSocketMessages" in entry or entry.get("_resourceType") == "websocket" or scheme in ("ws", "wss"):
            importer.websocket(entry)
        elif scheme in ("http", "https") and urlsplit(url).path in HTTP_DATA_PATHS and request.get("method") in (
            "POST", "PUT", "DELETE"
        ):
            importer.http(entry, http_conns)
    out = importer.out
    if not out.requests:
        raise HarError(f"{path}: no WebSocket frames or HTTP data requests to import "
                       "(Chrome keeps WebSocket frames in _webSocketMessages when the HAR is saved with content)")
    creator = log.get("creator") if isinstance(log.get("creator"), dict) else {}
    out.meta = {
        "source": "har",
        "har": path.name,
        "creator": f"{creator.get('name', '')} {creator.get('version', '')}".strip(),
        "latency": LATENCY_ROUND_TRIP,
    }
    return out


def recording_from_har(path: Path | str) -> Recording:
    """A HAR file as a Recording in memory (what `flowrelay load --replay FILE.har` reads)."""
    imported = read_har(path)
    assembler = RecordingAssembler(imported.meta)
    assembler.add_all(list(r) for r in imported.records)
    return assembler.finish(sources=[str(path)])


def import_har(path: Path | str, out_dir: Path | str, redactor: Redactor | None = None) -> HarImport:
    """Write a HAR file's requests and answers as a recording folder. Raises HarError, RecordingExists."""
    imported = read_har(path)
    writer = SegmentWriter(Path(out_dir), imported.meta, max_segment_bytes=0, max_segment_age_s=0,
                           redactor=redactor)
    writer.open()
    records = imported.records
    for start in range(0, len(records), RECORDS_PER_FRAME):
        # The recording's clock is the HAR's wall clock: frames say so with a zero offset.
        writer.write(records[start : start + RECORDS_PER_FRAME], 0, 0)
    writer.close()
    return imported
