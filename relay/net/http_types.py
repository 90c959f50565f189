"""Plain HTTP requests and responses as the relay's listener hands them to handlers (no I/O here).

The listener parses HTTP/1.1 with h11 and answers WebSocket upgrades itself; every other request becomes an
`HttpRequest`, and a handler returns an `HttpResponse`. Header names are lower-case.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # without the query string
    query: str  # the raw query string, without '?'
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # The listener's number for the TCP connection the request came on (keep-alive: several requests).
    connection: int = 0

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # A body written as it comes (server-sent events), instead of `body`: the listener sends each chunk as the
    # iterator yields it, until it ends or the client goes; then the connection closes.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, body: object, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        return cls(status, [("content-type", "application/json"), *(headers or [])], orjson.dumps(body))


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower case, without its parameters (`application/json`)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """Whether a Content-Type value is JSON: `application/json` or `application/*+json`."""
    main, _, sub = media_type(content_type).partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
