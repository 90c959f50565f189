"""The closed model: C users, each with one request in flight, sending its next as soon as its last one settled.

A user's next request is sent from the callback that settles its last one (answer, failure or timeout), in the
same turn of the event loop: no task or timer per request. User u sends on connection u mod N. A user whose
connection is down waits, parked, until that connection is up again (the session's `on_up` wakes it), or until
the run's time is up; it never polls. The run ends when every user has retired: past `duration_s`, or once the
request budget (`requests`) is spent, a user retires instead of sending.

This is how most load tools drive a server, and it hides stalls (coordinated omission: during a stall the users
wait, so few requests see it); the open model (loadtest.models.open) is the one to judge latency with.

Imports loadtest.models.
"""

from __future__ import annotations

import anyio

from loadtest.models.base import LoadModel, Traffic, share


class ClosedModel(LoadModel):
    """Worker `worker`'s share (of `n_workers`) of `concurrency` users and of the `requests` budget."""

    def __init__(self, concurrency: int, requests: int | None, duration_s: float | None, worker: int = 0,
                 n_workers: int = 1) -> None:
        self.users = share(concurrency, worker, n_workers)
        self.duration_s = duration_s
        self._budget = share(requests, worker, n_workers) if requests else None
        self._user_of: dict[str, int] = {}  # which user each request in flight belongs to
        self._parked: list[int] = []  # users whose connection is down
        self._users_left = self.users
        self.settled = self._settled

    async def run(self, traffic: Traffic) -> None:
        self._traffic = traffic
        self._user_seq = list(range(self.users))
        self._done = anyio.Event()
        if self.users == 0:
            return
        sessions = traffic.sessions
        for s in sessions:
            s.on_up = self._wake_parked
        try:
            for u in range(self.users):
                self._user_next(u)
            if self.duration_s is not None:
                # Until the run's own clock says the time is up: the loop's timer can fire up to a millisecond early.
                while not self._done.is_set() and (left_s := self.duration_s - traffic.clock()) > 0:
                    with anyio.move_on_after(left_s):
                        await self._done.wait()
                self._retire_parked()  # the time is up: users waiting for their connection retire now
            await self._done.wait()  # users with a request in flight retire as it settles
        finally:
            for s in sessions:
                s.on_up = None

    def _settled(self, rid: str) -> None:
        user = self._user_of.pop(rid, None)
        if user is not None:
            self._user_next(user)

    def _wake_parked(self) -> None:
        parked, self._parked = self._parked, []
        for u in parked:
            self._user_next(u)

    def _retire_parked(self) -> None:
        parked, self._parked = self._parked, []
        for _ in parked:
            self._retire()

    def _retire(self) -> None:
        self._users_left -= 1
        if self._users_left == 0:
            self._done.set()

    def _user_next(self, u: int) -> None:
        """User `u` has nothing in flight: send its next request, park it until its connection is up, or retire."""
        traffic = self._traffic
        now = traffic.clock()
        deadline = self.duration_s
        if (deadline is not None and now >= deadline) or self._budget == 0:
            self._retire()
            return
        sessions = traffic.sessions
        session = sessions[u % len(sessions)]
        if not session.connected:
            self._parked.append(u)
            return
        if self._budget is not None:
            self._budget -= 1
        seq = self._user_seq[u]
        self._user_seq[u] = seq + self.users
        rid = traffic.new_rid()
        self._user_of[rid] = u  # before the send: a dead connection fails the request at once
        traffic.post(session, now, seq, now, rid)
        if self._budget == 0 and self._parked:
            self._retire_parked()  # the budget is spent: users waiting for their connection retire now
