"""Static files that the doors serve (the docs pages' and GraphiQL's scripts and styles): one answer for them all.

An `Asset` is a file's bytes with its content type and an ETag (a hash of the bytes); `load_asset` reads one
from a table of files (or of generated bodies), with byte replacements made as it is read; `asset_response`
answers GET or HEAD with it (304 when the client's `If-None-Match` matches, 405 for other methods), cacheable for
an hour, with `nosniff`. `html_page` writes the pages that load them. Imports relay.net.http_types only.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relay.net.http_types import HttpRequest, HttpResponse

JS = "application/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def load_asset(
    name: str,
    root: Path | None,
    files: Mapping[str, tuple[str, str]],
    generated: Mapping[str, tuple[bytes, str]],
    patches: Mapping[str, tuple[tuple[bytes, bytes], ...]],
) -> Asset | None:
    """The asset `name`: a generated body, or the file `files[name]` = (path under `root`, content type) with
    `patches[name]`'s (old, new) replacements made; None when there is no such asset or it cannot be read."""
    found = generated.get(name)
    if found is not None:
        return Asset.of(*found)
    entry = files.get(name)
    if entry is None or root is None:
        return None
    try:
        body = (root / entry[0]).read_bytes()
    except OSError:
        return None
    for old, new in patches.get(name, ()):
        body = body.replace(old, new)
    return Asset.of(body, entry[1])


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


def html_page(title: str, head: str, body: str) -> bytes:
    """A page: `title` (escaped here), then `head` and `body` as they are (markup)."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
{head}
</head>
<body>
{body}
</body>
</html>
""".encode()
