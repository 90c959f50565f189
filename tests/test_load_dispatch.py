"""How the load engine dispatches: the open model sends every request at or after its due time (never
before: latency runs from the due time), in batches when many fall due at once, a batch on one connection and the
connections in turn; the closed model sends
a user's next request when the last one settled, including across a lost connection; the waker that
times the open model (a timerfd on Linux, else the loop's timer) fires no earlier than asked, once per target.

The server is `load_helpers.FakeGateway`; the request log (`--log-requests`) shows each request's due
and send times as the engine recorded them.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from pathlib import Path

import pytest
from load_helpers import RowList, assert_adds_up, fake_gateway, load_in_process, read_request_log

from loadtest.models.waker import LoopWaker
from relay.common.timers import PreciseTimers
from relay.wire import proto_codec


def test_open_model_sends_each_request_at_or_after_its_due_time(tmp_path: Path) -> None:
    # 3000/s: several requests fall due per millisecond, so they go out in batches.
    log = tmp_path / "requests.msgpack"
    rate, duration_s = 3000.0, 1.0
    with fake_gateway(delay_s=0.001) as gw:
        summary, _ = load_in_process(gw.url, rate=rate, duration_s=duration_s, log_requests=log)
    assert_adds_up(summary)
    records = read_request_log(log)
    assert len(records) == summary["requests"]["sent"] == 3000
    assert summary["requests"]["ok"] == 3000
    due_times = sorted(rec[1] for rec in records)
    # Exactly the schedule's due times: request i at i / rate.
    assert all(abs(due - i / rate) < 1e-9 for i, due in enumerate(due_times))
    early = [(rec[1], rec[2]) for rec in records if rec[2] < rec[1]]
    assert not early, f"{len(early)} requests left before their due time, e.g. {early[:3]}"
    assert summary["scheduler_lag_ms"]["p50"] is not None and summary["scheduler_lag_ms"]["p50"] >= 0.0


def test_open_model_with_poisson_arrivals_never_sends_early(tmp_path: Path) -> None:
    log = tmp_path / "requests.msgpack"
    with fake_gateway(delay_s=0.001) as gw:
        summary, _ = load_in_process(gw.url, rate=2000.0, duration_s=1.0, arrival="poisson", seed=7,
                                     log_requests=log)
    assert_adds_up(summary)
    records = read_request_log(log)
    assert len(records) == summary["requests"]["sent"] > 1000
    assert all(rec[2] >= rec[1] for rec in records)


def test_closed_model_users_carry_on_after_their_connection_is_killed() -> None:
    # Four users on one connection, which the gateway ends at its 200th request: the requests in flight
    # fail with the close reason, the users wait for the reconnect and go on.
    with fake_gateway(delay_s=0.002, kill_after=200) as gw:
        rows = RowList()
        summary, _ = load_in_process(gw.url, concurrency=4, duration_s=2.0, series=rows)
        assert gw.killed
    req = summary["requests"]
    assert_adds_up(summary)
    assert summary["reconnects"] >= 1
    assert 1 <= req["transport_failed"] <= 4
    assert req["unanswered"] == req["timeout"] == 0
    first_error = next(i for i, row in enumerate(rows) if row["errors"])
    assert sum(row["ok"] for row in rows[first_error + 1 :]) > 0, rows


def test_closed_model_sends_exactly_the_requests_asked() -> None:
    with fake_gateway(delay_s=0.001) as gw:
        summary, _ = load_in_process(gw.url, concurrency=8, requests=500)
    assert_adds_up(summary)
    assert summary["requests"]["sent"] == summary["requests"]["ok"] == 500


@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "loop-timer"])
def test_waker_fires_no_earlier_than_its_target_and_once_per_target(timerfd: bool) -> None:
    async def main() -> tuple[list[float], float, float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timers = PreciseTimers(loop, use_timerfd=timerfd)
        waker = LoopWaker(lambda: fired.append(time.perf_counter()), timers)
        try:
            first = time.perf_counter() + 0.03
            waker.wake_at(first)
            waker.wake_at(first - 0.01)  # replaces the first target: one fire, at the sooner time
            await asyncio.sleep(0.1)
            second = time.perf_counter() + 0.003
            waker.wake_at(second)
            await asyncio.sleep(0.05)
        finally:
            waker.close()
            timers.close()
        return fired, first - 0.01, second

    fired, first, second = asyncio.run(main())
    assert len(fired) == 2, fired
    assert fired[0] >= first and fired[1] >= second


def test_waker_keeps_a_deadline_that_falls_within_the_next_due_times_window() -> None:
    """Reads move the next due time on often; a deadline that serves it already stays (no kernel timer call)."""

    class CountingTimers(PreciseTimers):
        arms = 0

        def _arm(self, when: float) -> None:
            self.arms += 1
            super()._arm(when)

    async def main() -> tuple[list[float], int, float, float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timers = CountingTimers(loop)
        waker = LoopWaker(lambda: fired.append(time.perf_counter()), timers, slack_s=0.02)
        try:
            due = time.perf_counter() + 0.03
            waker.wake_at(due)
            for k in range(1, 10):  # due times within the first one's slack: the first deadline serves them
                waker.wake_at(due + k * 0.002)
            arms_within = timers.arms
            await asyncio.sleep(0.1)
            later = time.perf_counter() + 0.01
            waker.wake_at(later - 0.005)
            waker.wake_at(later)  # within that deadline's window (slack 0.02): kept
            waker.wake_at(later + 0.03)  # the deadline set would find nothing due: moved on
            await asyncio.sleep(0.1)
        finally:
            waker.close()
            timers.close()
        return fired, arms_within, due + 9 * 0.002, later + 0.03

    fired, arms_within, last_within, moved_on = asyncio.run(main())
    assert arms_within == 1
    assert len(fired) == 2, fired
    assert fired[0] >= last_within and fired[1] >= moved_on


def test_open_model_keeps_requests_due_together_on_one_connection_and_shares_the_rate(tmp_path: Path) -> None:
    # 4000/s on 4 connections: a pass of the dispatcher often finds more than one request due. Those go on one
    # connection (one write), and the passes take the connections in turn: each carries a quarter of the rate.
    log = tmp_path / "requests.msgpack"
    with fake_gateway(delay_s=0.001) as gw:
        summary, _ = load_in_process(gw.url, rate=4000.0, duration_s=1.0, connections=4, log_requests=log,
                                     subprotocol="bytes")
        arrivals = list(gw.arrivals)
    assert_adds_up(summary)
    assert summary["requests"]["ok"] == 4000
    connection_of = {}
    for arrival in arrivals:
        connection_of[proto_codec.decode_request(arrival.frame).request_id] = arrival.connection
    by_due = [connection_of[rec[0]] for rec in sorted(read_request_log(log), key=lambda rec: rec[1])]
    shares = collections.Counter(by_due)
    assert sorted(shares) == [0, 1, 2, 3]
    assert max(shares.values()) < 1.3 * min(shares.values()), shares
    # Sending each request on the next connection in turn would put no two consecutive ones on the same one.
    together = sum(a == b for a, b in itertools.pairwise(by_due))
    assert together > 0.1 * len(by_due), together
