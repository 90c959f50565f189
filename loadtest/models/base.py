"""The one interface every load model implements (as k6's lib/executor), and what a model drives.

A load model decides when requests go out; nothing else. A worker (loadtest.engine) gives it `Traffic`: the
worker's sessions, its clock, and `post` / `drop`, which build the request, send it and measure it. Models:

* loadtest.models.open.OpenModel: each request at its due time from a schedule (loadtest.models.schedule), never
  before; latency runs from the due time; a request due when every connection is full is dropped;
* loadtest.models.closed.ClosedModel: C users, each sending its next request as its last one settles.

loadtest.engine.model_for picks the model a run's configuration asks for, with one worker's share of it.

A model is driven by the worker's task group: `run` is awaited in it and returns once the model will send nothing
more (the worker then finishes its sessions); its per-request work happens in callbacks (`settled`, and the hooks
it sets on sessions: `after_read`, `on_up`), never in a task per request.

Imports nothing of the engine; loadtest.sessions for types only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from loadtest.sessions.kinds import LoadSession


class Traffic(Protocol):
    """What a load model drives: one worker's sessions and its per-request work."""

    sessions: Sequence[LoadSession]
    zero: float  # time.perf_counter() at the run clock's 0

    def clock(self) -> float:
        """Seconds on the run's clock (0 when every session was open)."""
        ...

    def pick(self, seq: int, previous: LoadSession | None = None) -> LoadSession | None:
        """A session with room for request number `seq`, or None when all are full. `previous`: the session the
        request before it in the same pass of the model went on (None for a pass's first): a traffic that does
        not tie requests to connections keeps using it while it has room, so that requests due together leave in
        one write; otherwise the sessions are tried in turn."""
        ...

    def post(self, session: LoadSession, due_s: float, seq: int, now_s: float, rid: str | None = None) -> None:
        """Send request number `seq` (due at `due_s`, sent at `now_s`) on `session`, without waiting, and measure
        it. `rid`: its request id, when the model needs to know it before it is sent (a fresh one otherwise)."""
        ...

    def new_rid(self) -> str:
        """A request id for `post`."""
        ...

    def drop(self, due_s: float) -> None:
        """A request due at `due_s` could not be sent (every connection full or down): counted, never sent late."""
        ...


class LoadModel(ABC):
    """One way of pacing a worker's requests."""

    @abstractmethod
    async def run(self, traffic: Traffic) -> None:
        """Send this worker's share of the run; return once nothing more will be sent."""

    # Called when a request leaves the table (answered, failed or timed out), for a model that paces by it (the
    # closed model); None keeps it off the per-answer path of the others.
    settled: Callable[[str], None] | None = None

    def target_rate_at(self, t_s: float) -> float | None:
        """This worker's intended rate at `t_s` (requests/s), for the live metrics; None where there is none."""
        return None


def share(total: int, worker: int, n_workers: int) -> int:
    """Worker `worker`'s share of `total` things split among `n_workers` (the first ones get the remainder)."""
    return total // n_workers + (1 if worker < total % n_workers else 0)
