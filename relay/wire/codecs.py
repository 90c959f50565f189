"""Choosing a codec by subprotocol, as a Jina gateway does, and the one frame type each uses."""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from relay.wire import json_codec, proto_codec

SUPPORTED = ("bytes", "json")


def codec_for(subprotocol: str | None) -> ModuleType:
    """The codec module for a negotiated subprotocol; anything but `bytes` means json."""
    return proto_codec if subprotocol == "bytes" else json_codec


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """The first offered subprotocol we support (RFC 6455: the server picks one of the client's)."""
    for name in offered:
        name = name.strip()
        if name in SUPPORTED:
            return name
    return None
