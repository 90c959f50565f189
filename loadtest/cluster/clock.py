"""Clock offsets between machines, NTP-style, from ping/pong samples over one connection. Pure.

The coordinator sends `ping` at `sent` (its wall clock), the worker answers with its own wall clock
`worker_time`, and the answer arrives at `received`. If the two legs took equally long, the worker's clock
read `worker_time` at the coordinator's `(sent + received) / 2`, so the offset is the difference; the true
offset is within half the round trip of it. Of several samples the one with the shortest round trip is
the tightest, as NTP takes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Offset:
    """The worker's clock minus the coordinator's, in ms (positive: the worker's is ahead), +- `error_ms`."""

    offset_ms: float
    error_ms: float


def offset_of(samples: Iterable[tuple[float, float, float]]) -> Offset:
    """From (sent, worker_time, received) samples, in seconds; raises ValueError without any."""
    best: tuple[float, float] | None = None
    for sent, worker_time, received in samples:
        rtt = max(0.0, received - sent)
        offset = worker_time - (sent + received) / 2.0
        if best is None or rtt < best[0]:
            best = (rtt, offset)
    if best is None:
        raise ValueError("no clock samples")
    rtt, offset = best
    return Offset(round(offset * 1000.0, 3), round(rtt * 500.0, 3))
