"""Keep long-lived sessions out of Python's full garbage collections: the relay's (`freeze_long_lived`) and a load
run's (`freeze` once its sessions are open, `thaw` when it ends).

A full (generation 2) collection scans every object the collector tracks, and holds the event loop meanwhile:
with 10,000 sessions open that was a pause of 100 ms and more, and every answer of that moment waited for it.
Objects that live as long as the process (modules, the server) or as a session (its protocol, websockets'
state, the gateway logic) are moved out of the collector's sight with `gc.freeze()`: after the relay has
started, and then whenever enough sessions were opened since the last freeze.

This is safe because a closed session is freed by reference counting alone (the listener breaks its reference
cycles when the connection is lost; tests/test_relay_gc.py checks it): frozen objects are never collected, so a
frozen reference cycle would stay in memory until the process ends. A collection right before each freeze
keeps the garbage cycles of that moment from being frozen. It is done under uvloop only (the relay's default
loop): asyncio's own socket transport keeps a bound method of itself (a reference cycle per connection), so
there a closed connection waits for the collector, and frozen it would never be freed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("flowrelay.gc")

# Sessions opened since the last freeze that call for another one; at about 15 tracked objects a session, a
# thousand of them add some 15,000 objects to each full collection (a few milliseconds).
FREEZE_AFTER_SESSIONS = 1000
CHECK_INTERVAL_S = 1.0


def safe_to_freeze(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this loop's transports are freed by reference counting once closed (uvloop's are)."""
    return type(loop).__module__.split(".")[0] == "uvloop"


def freeze() -> float:
    """Collect what is garbage now, then freeze everything that is left; returns the seconds it took."""
    t = time.perf_counter()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t


async def freeze_long_lived(
    opened_total: Callable[[], int],
    after_sessions: int = FREEZE_AFTER_SESSIONS,
    interval_s: float = CHECK_INTERVAL_S,
) -> None:
    """Freeze once now, then each time `after_sessions` more sessions were opened (checked every `interval_s`)."""
    frozen_at = opened_total()
    took = freeze()
    log.debug("gc.freeze at start: %d objects frozen in %.1f ms", gc.get_freeze_count(), took * 1e3)
    while True:
        await asyncio.sleep(interval_s)
        opened = opened_total()
        if opened - frozen_at >= after_sessions:
            frozen_at = opened
            took = freeze()
            log.debug("gc.freeze after %d sessions: %d objects frozen in %.1f ms", opened, gc.get_freeze_count(),
                      took * 1e3)


def thaw() -> None:
    """Give what was frozen back to the collector. A load run freezes its sessions once they are open (a full
    collection over thousands of them stopped the engine for 100-200 ms, and every request due meanwhile was sent
    that late) and thaws them when it ends: what became garbage meanwhile (a connection replaced by a reconnect,
    whose objects are reference cycles) is then collected, so nothing outlives the run."""
    gc.unfreeze()
