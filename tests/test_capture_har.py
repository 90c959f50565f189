"""`flowrelay record import FILE.har`: a HAR export in Chrome's shape (WebSocket frames in `_webSocketMessages`,
binary ones base64; HTTP POSTs with their bodies) becomes a recording: a connection per WebSocket, json answers
matched in order, bytes ones by request id, round-trip latencies, end-of-stream and /dry_run left out.
(tests/test_capture_browser.py does the same with a HAR of Chromium's own making.)"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from relay_process import flowrelay_command

from relay.capture.har import HarError, read_har, recording_from_har
from relay.capture.reader import read_recording
from relay.wire import json_codec, proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest, Route

T0 = 1_780_000_000.0


def _json_answer(rid: str, doc_id: str, error: bool = False) -> str:
    answer = {"header": {"request_id": rid}, "parameters": {}, "data": [{"id": doc_id, "text": "X"}],
              "routes": [{"executor": "gateway", "start_time": "2026-05-28T20:26:40.000100Z",
                          "end_time": "2026-05-28T20:26:40.000900Z"}]}
    if error:
        answer["header"]["status"] = {"code": 1, "exception": {"name": "ValueError"}}
    return orjson.dumps(answer).decode()


def _ws_entry(subprotocol: str, messages: list[dict[str, Any]], path: str = "/") -> dict[str, Any]:
    return {
        "_resourceType": "websocket",
        "startedDateTime": "2026-05-28T20:26:39.900Z",
        "request": {"method": "GET", "url": f"ws://127.0.0.1:12345{path}",
                    "headers": [{"name": "Sec-WebSocket-Protocol", "value": subprotocol}]},
        "response": {"status": 101, "headers": [{"name": "Sec-WebSocket-Protocol", "value": subprotocol}]},
        "_webSocketMessages": messages,
    }


def _har(tmp_path: Path) -> Path:
    first = '{"data":[{"id":"a","text":"x"}],"execEndpoint":"/i"}'
    second = '{"data":[{"id":"b","text":"y"}],"execEndpoint":"/i"}'
    json_msgs = [
        {"type": "send", "time": T0 + 0.000, "opcode": 1, "data": first},
        {"type": "send", "time": T0 + 0.040, "opcode": 1, "data": second},
        {"type": "receive", "time": T0 + 0.005, "opcode": 1, "data": _json_answer("g1", "a")},
        {"type": "receive", "time": T0 + 0.047, "opcode": 1, "data": _json_answer("g2", "b", error=True)},
        {"type": "send", "time": T0 + 0.050, "opcode": 1, "data": "{}"},
    ]
    req = proto_codec.encode(DataRequest(request_id="bin-1", exec_endpoint="/s", docs=[Document(id="c")]))
    ans = proto_codec.encode(DataRequest(request_id="bin-1", exec_endpoint="/s", docs=[Document(id="c")],
                                         routes=[Route("gateway", 1, 2)]))
    bytes_msgs = [
        {"type": "send", "time": T0 + 0.010, "opcode": 2, "data": base64.b64encode(req).decode()},
        {"type": "receive", "time": T0 + 0.013, "opcode": 2, "data": base64.b64encode(ans).decode()},
        {"type": "send", "time": T0 + 0.020, "opcode": 2, "data": base64.b64encode(b"\x00").decode()},
    ]
    http_entry = {
        "startedDateTime": "2026-05-28T20:26:40.030Z", "time": 4.5, "connection": "77",
        "request": {"method": "POST", "url": "http://127.0.0.1:12345/search",
                    "postData": {"mimeType": "application/json", "text": '{"data":[{"text":"q"}]}'}},
        "response": {"status": 200, "content": {"mimeType": "application/json",
                                                 "text": orjson.dumps(json_codec.response_dict(
                                                     DataRequest(request_id="h", docs=[Document(id="z")]))).decode()}},
    }
    har = {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "entries": [
        _ws_entry("json", json_msgs),
        _ws_entry("bytes", bytes_msgs),
        _ws_entry("json", [{"type": "send", "time": T0, "opcode": 1, "data": ""}], path="/dry_run"),
        http_entry,
        {"request": {"method": "GET", "url": "http://127.0.0.1:12345/status"}, "response": {"status": 200}},
    ]}}
    path = tmp_path / "app.har"
    path.write_bytes(orjson.dumps(har))
    return path


def test_a_har_becomes_connections_requests_and_answers(tmp_path: Path) -> None:
    rec = recording_from_har(_har(tmp_path))
    assert rec.latency_basis == "round_trip"
    assert [(c.door, c.subprotocol, c.requests) for c in rec.connections.values()] == [
        ("websocket", "json", 2), ("websocket", "bytes", 1), ("http", "json", 1)]
    assert [(r.endpoint, r.conn) for r in rec.requests] == [("/i", 0), ("/s", 1), ("/search", 2), ("/i", 0)]
    first, binary, http, second = rec.requests
    assert first.answer is not None and first.answer.doc_ids == ["a"] and first.answer.error is None
    assert first.answer.latency_ns == pytest.approx(5e6, abs=1e3)
    assert second.answer is not None and second.answer.error == "ValueError"
    assert [r.executor for r in first.answer.routes] == ["gateway"]
    assert binary.request_id == "bin-1" and isinstance(binary.body, bytes)
    assert binary.answer is not None and binary.answer.doc_ids == ["c"]
    assert http.body == b'{"data":[{"text":"q"}]}'
    assert http.answer is not None and http.answer.latency_ns == pytest.approx(4.5e6, abs=1e3)
    assert http.answer.doc_ids == ["z"]
    assert read_har(_har(tmp_path)).skipped["/dry_run connection"] == 1


def test_the_cli_imports_into_a_recording_folder(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    cmd = [*flowrelay_command(), "record", "import", str(_har(tmp_path)), "--out", str(out), "--redact", "text"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "imported 4 requests (4 with their answers) on 3 connection(s)" in done.stdout
    rec = read_recording(out)
    assert len(rec.requests) == 4 and rec.answered == 4
    assert orjson.loads(rec.requests[0].body)["data"][0]["text"] != "x"  # redacted on the way in
    info = subprocess.run([*flowrelay_command(), "record", "info", str(out), "--full", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert info.returncode == 0, info.stderr
    described = orjson.loads(info.stdout)
    assert described["requests"] == 4 and described["complete"]
    assert described["connections"] == {"websocket/json": 1, "websocket/bytes": 1, "http/json": 1}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 2 and "already holds a recording" in again.stderr


def test_what_is_not_a_har_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.har").write_text('{"log": {}}')
    with pytest.raises(HarError, match=r"no log\.entries"):
        read_har(tmp_path / "x.har")
    (tmp_path / "empty.har").write_text('{"log": {"entries": []}}')
    with pytest.raises(HarError, match="no WebSocket frames"):
        read_har(tmp_path / "empty.har")
    done = subprocess.run([*flowrelay_command(), "record", "import", str(tmp_path / "x.har"), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "not a HAR file" in done.stderr
