"""Per-hop spans: the time a request spent in each hop of a Flow, from the route timestamps of its answer.

Times come in as the server's epoch-nanosecond stamps and a round trip in seconds; spans go out in seconds.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The gateway's entry in a response's routes, and the derived hop outside it.
GATEWAY = "gateway"
OUTSIDE_GATEWAY = "outside_gateway"
#: At most this many distinct hop names are kept apart; the rest are counted under OTHER.
MAX_HOPS = 64


def hop_spans(routes: Iterable[Any] | None, round_trip_s: float) -> dict[str, float]:
    """Seconds spent per hop of one response, from its routes.

    ``routes`` holds objects with ``executor`` (str), ``start_ns`` and ``end_ns``
    (int or None, epoch nanoseconds on the server's clock). The result has:

    * ``"gateway"``: the gateway entry's end minus start;
    * one key per executor name: its end minus start;
    * ``"outside_gateway"``: ``round_trip_s`` minus the gateway's span (network,
      queueing and serialisation outside the gateway), only when the gateway
      entry has both stamps.

    Each span subtracts two stamps of the *same* entry, so the server's clock
    offset from ours cancels out. An executor named twice (a Flow that visits it
    twice) gets the sum of its spans. Entries missing a stamp, with a negative
    span, or otherwise odd are skipped; this function never raises.
    """
    spans: dict[str, float] = {}
    try:
        if not routes:
            return spans
        for route in routes:
            # Per entry, so one odd entry does not lose the others.
            try:
                start_ns = route.start_ns
                end_ns = route.end_ns
                if start_ns is None or end_ns is None:
                    continue
                name = route.executor
                if not isinstance(name, str) or not name:
                    continue
                span_ns = end_ns - start_ns
                if not span_ns >= 0:  # also rejects NaN
                    continue
                span_s = span_ns / 1e9
                previous = spans.get(name)
                spans[name] = span_s if previous is None else previous + span_s
            except Exception:
                continue
        gateway_s = spans.get(GATEWAY)
        if gateway_s is not None:
            outside_s = round_trip_s - gateway_s
            if outside_s >= 0:
                spans[OUTSIDE_GATEWAY] = outside_s
    except Exception:
        # A non-iterable routes or a non-numeric round trip: keep what was found.
        pass
    return spans
