"""The closed model against a stand-in worker (loadtest.models.base.Traffic): a user whose connection is down waits
without being looked at, sends the moment its connection is back, and retires when the run's time is up, even if
its connection never comes back. (End to end, with a real connection killed mid-run: test_load_dispatch.py.)"""

from __future__ import annotations

import itertools
import time

import anyio

from loadtest.models.closed import ClosedModel


class StandInSession:
    def __init__(self) -> None:
        self.connected = True
        self.on_up: object = None
        self.after_read: object = None


class StandInWorker:
    """Records what the model sends; counts how often the model looks at the clock."""

    def __init__(self, sessions: list[StandInSession]) -> None:
        self.sessions = sessions
        self.zero = time.perf_counter()
        self.clock_reads = 0
        self.posted: list[tuple[StandInSession, str]] = []
        self._rids = itertools.count()

    def clock(self) -> float:
        self.clock_reads += 1
        return time.perf_counter() - self.zero

    def new_rid(self) -> str:
        return f"r{next(self._rids)}"

    def post(self, session: StandInSession, due_s: float, seq: int, now_s: float, rid: str | None = None) -> None:
        assert rid is not None
        self.posted.append((session, rid))


def test_users_wait_for_their_connection_unpolled_and_go_on_when_it_is_back() -> None:
    session = StandInSession()
    worker = StandInWorker([session])
    model = ClosedModel(concurrency=2, requests=None, duration_s=3600.0)
    seen: dict[str, int] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(model.run, worker)
            await anyio.sleep(0.05)
            assert len(worker.posted) == 2, "each user sends one request"
            # The connection drops: both requests fail, both users wait for it.
            session.connected = False
            for _, rid in list(worker.posted):
                assert model.settled is not None
                model.settled(rid)
            seen["posted_while_down"] = len(worker.posted)
            reads = worker.clock_reads
            await anyio.sleep(0.3)
            seen["reads_while_down"] = worker.clock_reads - reads
            # It is back: the users send at once.
            session.connected = True
            assert callable(session.on_up)
            session.on_up()
            seen["posted_when_back"] = len(worker.posted)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert seen["posted_while_down"] == 2, "nothing is sent on a connection that is down"
    assert seen["reads_while_down"] == 0, "a waiting user is not looked at until its connection is back"
    assert seen["posted_when_back"] == 4


def test_users_waiting_for_a_connection_that_never_returns_retire_when_the_time_is_up() -> None:
    session = StandInSession()
    worker = StandInWorker([session])
    model = ClosedModel(concurrency=3, requests=None, duration_s=0.3)

    async def main() -> bool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(model.run, worker)
            await anyio.sleep(0.05)
            session.connected = False
            for _, rid in list(worker.posted):
                assert model.settled is not None
                model.settled(rid)
        return True  # model.run returned: every user retired

    assert anyio.run(main)
    assert len(worker.posted) == 3


def test_a_spent_budget_retires_the_users_waiting_for_their_connection() -> None:
    up, down = StandInSession(), StandInSession()
    worker = StandInWorker([up, down])
    down.connected = False
    model = ClosedModel(concurrency=2, requests=5, duration_s=None)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(model.run, worker)
            # User 0 (on `up`) spends the budget, one request at a time; user 1 (on `down`) waits for its
            # connection all along, and retires with user 0 once nothing is left to send.
            for _ in range(5):
                await anyio.sleep(0.01)
                assert model.settled is not None
                model.settled(worker.posted[-1][1])

    anyio.run(main)
    assert [s for s, _ in worker.posted] == [up] * 5
