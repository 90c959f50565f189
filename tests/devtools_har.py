"""A HAR file from what Chromium's DevTools protocol reported, built as DevTools builds one when it saves a HAR.

Headless Chromium has no "Save all as HAR" button; what DevTools writes into a HAR comes from the same `Network.*`
events the performance log of a chromedriver session carries. For WebSockets: `Network.webSocketCreated` (the
URL), `Network.webSocketWillSendHandshakeRequest` (its `timestamp` on the monotonic clock and `wallTime`, the
request headers), `Network.webSocketHandshakeResponseReceived` (the response headers: the chosen subprotocol),
`Network.webSocketFrameSent` / `Network.webSocketFrameReceived` (`response.opcode`, `response.payloadData`: text,
or base64 for a binary frame). DevTools turns a frame's monotonic timestamp into wall-clock seconds with the
handshake's pair, and lists the frames in the entry's `_webSocketMessages` as
`{"type": "send" | "receive", "time", "opcode", "data"}`: this module does the same.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def _headers(mapping: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in (mapping or {}).items()]


def har_from_performance_log(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A HAR (as a dict) of the WebSocket connections in a chromedriver performance log."""
    sockets: dict[str, dict[str, Any]] = {}
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method", ""), message.get("params", {})
        if not method.startswith("Network.webSocket"):
            continue
        ws = sockets.setdefault(params["requestId"], {"frames": []})
        if method == "Network.webSocketCreated":
            ws["url"] = params["url"]
        elif method == "Network.webSocketWillSendHandshakeRequest":
            ws["clock"] = (params["timestamp"], params["wallTime"])
            ws["request_headers"] = params["request"].get("headers")
        elif method == "Network.webSocketHandshakeResponseReceived":
            ws["status"] = params["response"].get("status")
            ws["response_headers"] = params["response"].get("headers")
        elif method in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            ws["frames"].append(("send" if method.endswith("Sent") else "receive", params["timestamp"],
                                 params["response"]["opcode"], params["response"]["payloadData"]))
    har_entries = []
    for ws in sockets.values():
        if "clock" not in ws:
            continue
        mono0, wall0 = ws["clock"]
        started = dt.datetime.fromtimestamp(wall0, dt.UTC).isoformat().replace("+00:00", "Z")
        har_entries.append({
            "startedDateTime": started,
            "_resourceType": "websocket",
            "request": {"method": "GET", "url": ws.get("url", ""), "headers": _headers(ws.get("request_headers"))},
            "response": {"status": ws.get("status", 101), "headers": _headers(ws.get("response_headers"))},
            "_webSocketMessages": [
                {"type": kind, "time": wall0 + (mono - mono0), "opcode": opcode, "data": data}
                for kind, mono, opcode, data in ws["frames"]
            ],
        })
    return {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
                    "pages": [], "entries": har_entries}}
