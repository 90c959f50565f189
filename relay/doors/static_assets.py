"""Static files that the doors serve (the docs pages' and GraphiQL's scripts and styles): one answer for them all.

An `Asset` is a file's bytes with its content type and an ETag (a hash of the bytes); `asset_response` answers
GET or HEAD with it (304 when the client's `If-None-Match` matches, 405 for other methods), cacheable for an
hour, with `nosniff`. Imports relay.net.http_types only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from relay.net.http_types import HttpRequest, HttpResponse


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def asset_response(req: HttpRequest, found: Asset, method: str) -> HttpResponse:
    """The answer to `method` (upper case) on a static file."""
    if method not in ("GET", "HEAD"):
        return HttpResponse.json(405, {"detail": "Method Not Allowed"}, [("allow", "GET")])
    headers = [
        ("content-type", found.content_type),
        ("etag", found.etag),
        ("cache-control", "public, max-age=3600"),
        ("x-content-type-options", "nosniff"),
    ]
    if req.header("if-none-match") == found.etag:
        return HttpResponse(304, headers[1:], b"")
    return HttpResponse(200, headers, found.body)
