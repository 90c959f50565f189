"""A server-sent events client for the tests of the live pages: reads a stream on a thread, keeps every event.

    with EventStream("http://127.0.0.1:PORT/events") as stream:
        stream.wait_for(lambda s: len(s.rows()) >= 3)
        stream.rows()  # the rows, with `replace` events applied

Every read is bounded; `close` shuts the socket, which ends the reader.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

WAIT_S = 30.0


class EventStream:
    """The events of one GET of a server-sent events URL, as (event name, decoded data), in arrival order."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout_s: float = WAIT_S) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("content-type") or ""
        self.events: list[tuple[str, Any]] = []
        self.comments = 0
        self.ended = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if not line:
                    if data:
                        with self._lock:
                            self.events.append((name, orjson.loads(b"\n".join(data))))
                    name, data = "message", []
                elif line.startswith(b":"):
                    self.comments += 1
                elif line.startswith(b"event: "):
                    name = line[7:].decode()
                elif line.startswith(b"data: "):
                    data.append(line[6:])
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.ended.set()

    def snapshot(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.events)

    def rows(self) -> list[dict[str, Any]]:
        """The rows so far, each `replace` applied to the row before it."""
        rows: list[dict[str, Any]] = []
        for name, data in self.snapshot():
            if name == "message":
                rows.append(data)
            elif name == "replace" and rows:
                rows[-1] = data
        return rows

    def last(self, name: str) -> Any:
        found = [data for event, data in self.snapshot() if event == name]
        return found[-1] if found else None

    def wait_for(self, condition: Callable[[EventStream], bool], timeout_s: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self):
                return True
            if self.ended.is_set():
                return condition(self)
            time.sleep(0.05)
        return condition(self)

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
