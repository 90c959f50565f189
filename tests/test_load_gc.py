"""A load run keeps its sessions out of Python's full garbage collections while it runs, and leaves nothing behind.

With thousands of connections a full collection scanned every session's objects and stopped the engine for
100-200 ms (5,000 connections at 2,000/s: scheduler lag p99 110 ms, every request due meanwhile sent that late).
The engine freezes what exists once its sessions are open, and thaws it when the run ends. Checked here on a real
run against `load_helpers.FakeGateway`: during the run the sessions are frozen (each second's row sees them so);
after it nothing is frozen, and a run whose connection was replaced by a reconnect (a reference cycle of objects
frozen at the start) leaves no garbage that a collection cannot free.
"""

from __future__ import annotations

import gc
from typing import Any

from load_helpers import RowList, assert_adds_up, fake_gateway, load_in_process

CONNECTIONS = 40


class FrozenPerRow(RowList):
    """Rows, and how many objects were frozen when each second's row was made."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen: list[int] = []

    def add(self, row: dict[str, Any], interval: object = None) -> None:
        self.frozen.append(gc.get_freeze_count())
        super().add(row, interval)


def test_sessions_are_frozen_during_a_run_and_thawed_after_it() -> None:
    gc.unfreeze()  # whatever an earlier test in this process froze
    with fake_gateway(delay_s=0.002) as gw:
        rows = FrozenPerRow()
        summary, _ = load_in_process(gw.url, connections=CONNECTIONS, rate=200.0, duration_s=2.0, series=rows)
    assert_adds_up(summary)
    assert summary["requests"]["ok"] == 400
    # Every session's connection, protocol and shell at least: far more objects than sessions.
    assert rows.frozen and min(rows.frozen) > CONNECTIONS * 10, rows.frozen
    assert gc.get_freeze_count() == 0


def test_a_connection_replaced_mid_run_is_collected_after_the_run() -> None:
    def tracked_after_a_run() -> int:
        with fake_gateway(delay_s=0.005, kill_after=150) as gw:
            summary, _ = load_in_process(gw.url, connections=1, rate=200.0, duration_s=1.5)
            assert gw.killed
        assert summary["reconnects"] >= 1
        gc.collect()
        return len(gc.get_objects()) + gc.get_freeze_count()  # frozen objects are not in get_objects()

    tracked_after_a_run()  # caches and lazily imported modules settle
    first = tracked_after_a_run()
    later = [tracked_after_a_run() for _ in range(3)]
    # A run that left its frozen connection behind would leave thousands of objects each time.
    assert max(later) - first < 500, (first, later)
