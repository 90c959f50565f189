"""Talking GraphQL over HTTP to a relay or a Jina Flow, for the GraphQL tests (never through a proxy).

    status, body = post_graphql(url, 'mutation { docs(data: {text: "a"}) { text } }')
    status, body = get_graphql(url, "{ docs { id } }")

Also where the captures of Jina's own `/graphql` are (../shared/protocol/captures/a_legacy_graphql/).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from jina_peer import shared_dir

TIMEOUT_S = 30.0


def captures() -> Path:
    return shared_dir() / "protocol" / "captures" / "a_legacy_graphql"


def http_request(method: str, url: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers with lower-case names, body), whatever the status."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=TIMEOUT_S) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def post_graphql(url: str, query: str, variables: dict[str, Any] | None = None, **extra: Any) -> tuple[int, Any]:
    """POST a GraphQL request (JSON body; `extra` adds keys such as operationName or extensions, and `headers`)."""
    headers = {"Content-Type": "application/json", **extra.pop("headers", {})}
    payload: dict[str, Any] = {"query": query, **extra}
    if variables is not None:
        payload["variables"] = variables
    status, _, body = http_request("POST", url, orjson.dumps(payload), headers)
    return status, orjson.loads(body)


def get_graphql(url: str, query: str, **params: str) -> tuple[int, Any]:
    status, _, body = http_request("GET", url + "?" + urllib.parse.urlencode({"query": query, **params}))
    return status, orjson.loads(body)


def without_ids(data: Any) -> Any:
    """`data` with every document `id` left out: ids a gateway makes are random."""
    if isinstance(data, dict):
        return {k: without_ids(v) for k, v in data.items() if k != "id"}
    if isinstance(data, list):
        return [without_ids(v) for v in data]
    return data
