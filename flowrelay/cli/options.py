"""Options the traffic verbs (`load`, `ingest`) read the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def parse_params(items: Iterable[str], example: str) -> dict[str, Any]:
    """`--param KEY=JSON` flags as request parameters: the value as JSON, or as a string when it is not JSON.
    Raises ValueError naming the flag and showing `example`."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected KEY=JSON, e.g. {example}")
        try:
            params[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            params[key] = value
    return params
