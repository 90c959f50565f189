"""Choosing a codec by subprotocol, as a Jina gateway does, and the one frame type each uses."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from relay.wire import json_codec, proto_codec, proto_v2_codec

SUPPORTED = ("bytes", "json")
# The document generations a Flow can speak in `bytes` mode: docarray < 0.30 (v1) and >= 0.30 (v2).
DOCARRAY_VERSIONS = ("v1", "v2")


def codec_for(subprotocol: str | None) -> ModuleType:
    """The codec module for a negotiated subprotocol; anything but `bytes` means json."""
    return proto_codec if subprotocol == "bytes" else json_codec


def bytes_codec(docarray: str = "v1") -> ModuleType:
    """The `bytes` codec for a Flow's docarray generation: `proto_codec` (v1) or `proto_v2_codec` (v2)."""
    if docarray not in DOCARRAY_VERSIONS:
        raise ValueError(f"docarray must be one of {', '.join(DOCARRAY_VERSIONS)}, not {docarray!r}")
    return proto_v2_codec if docarray == "v2" else proto_codec


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """The first offered subprotocol we support (RFC 6455: the server picks one of the client's)."""
    for name in offered:
        name = name.strip()
        if name in SUPPORTED:
            return name
    return None
