"""Where to cut a stream of WebSocket frames into reads, for the tests of both shells' frame readers
(tests/test_ws_client.py, the client; tests/test_relay_server.py, the relay's listener)."""

from __future__ import annotations

import itertools

CUT_STYLES = ("whole", "bytewise-head", "inside-headers")


def cut_points(frames: list[bytes], style: str) -> list[int]:
    """Offsets at which to cut `b"".join(frames)` into reads: none ("whole"), every byte of the first 60
    ("bytewise-head": every header and payload of the first frames cut), or inside every frame's header (1 and
    3 bytes in), inside the 16- and 64-bit length fields of the longest frame and halfway through its payload, and
    2 bytes before the end ("inside-headers")."""
    total = sum(len(f) for f in frames)
    if style == "whole":
        return []
    if style == "bytewise-head":
        return list(range(1, min(60, total)))
    starts = [0, *itertools.accumulate(len(f) for f in frames)][:-1]
    longest = max(range(len(frames)), key=lambda i: len(frames[i]))
    big = starts[longest]
    cuts = {s + k for s in starts for k in (1, 3)} | {big + 5, big + 9, big + len(frames[longest]) // 2, total - 2}
    return sorted(c for c in cuts if 0 < c < total)
