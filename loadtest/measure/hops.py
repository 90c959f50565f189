"""Per-hop spans: the time a request spent in each hop of a Flow, from the route entries of its answer.

Spans come in as (executor, nanoseconds) pairs, each entry's end minus its start on the server's clock
(`route_spans()` of an answer or a `DataRequest`: relay.wire), and a round trip in seconds; spans go out in
seconds. Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The gateway's entry in a response's routes, and the derived hop outside it.
GATEWAY = "gateway"
OUTSIDE_GATEWAY = "outside_gateway"
#: At most this many distinct hop names are kept apart; the rest are counted under OTHER.
MAX_HOPS = 64


def hop_spans(spans_ns: Iterable[tuple[str, int]] | None, round_trip_s: float) -> dict[str, float]:
    """Seconds spent per hop of one response, from its route entries' spans.

    The result has one key per executor name (the gateway's included): its span; an executor named twice (a
    Flow that visits it twice) gets the sum of its spans. And ``"outside_gateway"``: ``round_trip_s`` minus
    the gateway's span (network, queueing and serialisation outside the gateway), when there is a gateway
    entry and the difference is not negative. Each span subtracts two stamps of the *same* entry, so the
    server's clock offset from ours cancels out. This function never raises: odd pairs are skipped.
    """
    spans: dict[str, float] = {}
    try:
        for pair in spans_ns or ():
            try:
                name, span_ns = pair
                span_s = span_ns / 1e9
                if not span_s >= 0 or not isinstance(name, str) or not name:  # `not >=` rejects NaN too
                    continue
            except Exception:
                continue
            previous = spans.get(name)
            spans[name] = span_s if previous is None else previous + span_s
        gateway_s = spans.get(GATEWAY)
        if gateway_s is not None:
            outside_s = round_trip_s - gateway_s
            if outside_s >= 0:
                spans[OUTSIDE_GATEWAY] = outside_s
    except Exception:
        # Not pairs, or a non-numeric round trip: keep what was found.
        pass
    return spans
