"""The coordinator, run by worker 0: who is in the run, when it starts, who was lost, and the merged result.

Workers connect (loadtest.cluster.client) and say hello: with their index (`--worker-index`, or
JOB_COMPLETION_INDEX in a Kubernetes Indexed Job), or without one, and then get the lowest free index from 1
(index 0 is the coordinator's own worker). A hello is refused, with the reason, when its protocol, job,
worker count or run options differ from worker 0's, when its index is out of range or taken by a connected
worker, and when the run has already started: a replaced pod must not add load the schedule does not have.

**The barrier.** A worker reports `ready` once its sessions are open. The coordinator then measures that
worker's clock against its own over the connection (`PROBES` ping/pong exchanges, loadtest.cluster.clock)
and warns when the offset exceeds `clock_warn_ms`. When all N workers are ready and measured it announces
`start` with T0 = now + `start_delay_s` on its wall clock; each worker schedules against T0 on its own
clock. Not all ready within `barrier_timeout_s` of the coordinator's start: the run is aborted.

**During the run** heartbeats go both ways once a second, and each worker streams a row per second, which
the merger (the job's own: loadtest.cluster.load_merge, ingest_merge) merges. A worker whose connection
closes before it handed over its result, or that is silent for `worker_timeout_s`, is lost: named, its
figures until then kept by the merger; with `on_worker_loss="abort"` the others are told to stop. A
worker that cannot run (`failed`) aborts the run. The run is over when every worker handed over its
result, was lost, or (after an abort) went away or stayed silent for `worker_timeout_s`; `serve` then
returns the merger's exit code.

Structured: `serve` owns one task group; each connection, each clock probe and the watcher are its tasks,
and the listener is closed when it returns. Imports anyio and loadtest.cluster (messages, link, clock).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc

from loadtest.cluster.clock import offset_of
from loadtest.cluster.link import GONE, Connection
from loadtest.cluster.messages import PROTOCOL, ProtocolError, message

PROBES = 5
LOSS_POLICIES = ("abort", "continue")


@dataclass(frozen=True)
class CoordinatorConfig:
    """What the coordinator enforces. `options` are worker 0's run options: every worker must send the same."""

    workers: int
    job: str
    options: dict[str, Any]
    seed: int
    run_id: str
    barrier_timeout_s: float = 120.0
    worker_timeout_s: float = 10.0
    on_worker_loss: str = "abort"
    start_delay_s: float = 2.0
    heartbeat_s: float = 1.0
    clock_warn_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a run needs at least one worker")
        if self.on_worker_loss not in LOSS_POLICIES:
            raise ValueError(f"on_worker_loss must be one of {', '.join(LOSS_POLICIES)}")


@dataclass(frozen=True)
class LostWorker:
    index: int
    at_s: float  # seconds after T0
    reason: str

    def describe(self) -> str:
        return f"worker {self.index} lost at {self.at_s:.1f} s ({self.reason})"


@dataclass
class Outcome:
    """How the run went, for the merger's final figures."""

    workers: int
    started: bool
    t0: float | None
    aborted: str | None
    lost: list[LostWorker]
    clock_offsets_ms: dict[int, float]
    hosts: dict[int, str]


class Merger(Protocol):
    """The job's side of the coordinator: merges what the workers send, and makes the final result."""

    def started(self, t0: float, clock_offsets_ms: dict[int, float]) -> None: ...
    def row(self, worker: int, k: int, payload: Any) -> None: ...
    def lost(self, worker: LostWorker) -> None: ...
    def result(self, worker: int, payload: Any) -> None: ...
    def finish(self, outcome: Outcome) -> int:
        """Write the merged outputs; returns the run's exit code."""
        ...


@dataclass(eq=False)
class _Slot:
    index: int
    conn: Connection
    host: str
    last_seen: float
    state: str = "joined"  # joined -> ready -> running -> done | lost | gone
    offset_ms: float | None = None
    pongs: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    pong: anyio.Event = field(default_factory=anyio.Event)


class Coordinator:
    """See the module's docstring. `say` takes the lines an operator should read (warnings, losses)."""

    def __init__(self, cfg: CoordinatorConfig, merger: Merger, say: Callable[[str], None],
                 alive: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        self.merger = merger
        self.say = say
        self.alive = alive  # False once whoever started the coordinator is gone: stop
        self.slots: dict[int, _Slot] = {}
        self.t0: float | None = None
        self.aborted: str | None = None
        self.lost: list[LostWorker] = []
        self.offsets: dict[int, float] = {}
        self.hosts: dict[int, str] = {}
        self._over: anyio.Event | None = None  # made in serve(): an event belongs to its loop
        self._aborted_at = 0.0
        self._began = 0.0
        self._tg: anyio.abc.TaskGroup | None = None
        self._sending = 0  # sends under way: the last ones (abort, done) get a moment before the end

    # ---- lifetime --------------------------------------------------------------------------------

    async def serve(self, listener: anyio.abc.Listener[Any]) -> int:
        """Run the coordinator on `listener` until the run is over; returns the merger's exit code."""
        self._began = anyio.current_time()
        self._over = over = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(listener.serve, self._connection, tg)
            tg.start_soon(self._watch)
            await over.wait()
            with anyio.move_on_after(min(2.0, self.cfg.worker_timeout_s)):
                while self._sending:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await listener.aclose()
        outcome = Outcome(self.cfg.workers, self.t0 is not None, self.t0, self.aborted, list(self.lost),
                          dict(sorted(self.offsets.items())), dict(sorted(self.hosts.items())))
        return self.merger.finish(outcome)

    def _since_t0(self) -> float:
        return round(time.time() - self.t0, 3) if self.t0 is not None else 0.0

    # ---- a worker's connection -------------------------------------------------------------------

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        conn = Connection(stream)
        slot: _Slot | None = None
        try:
            with anyio.fail_after(self.cfg.barrier_timeout_s):
                hello = await conn.receive()
            slot = await self._welcome(conn, hello)
            if slot is None:
                return
            while True:
                msg = await conn.receive()
                slot.last_seen = anyio.current_time()
                await self._on_message(slot, msg)
        except ProtocolError as exc:
            self.say(f"a connection from {conn.peer()} broke the protocol and was closed: {exc}")
        except (TimeoutError, *GONE):
            pass
        finally:
            if slot is not None:
                self._went_away(slot)
            await conn.aclose()

    def _refusal(self, hello: dict[str, Any]) -> str | None:
        """Why a hello cannot join (None: it can)."""
        cfg = self.cfg
        if hello["kind"] != "hello":
            return f"expected hello, got {hello['kind']}"
        if hello["protocol"] != PROTOCOL:
            return f"coordinator protocol {hello['protocol']!r} is not this coordinator's ({PROTOCOL}): same version"
        if hello["job"] != cfg.job:
            return f"this worker runs `{hello['job']}`, the coordinator's run is `{cfg.job}`"
        if hello["workers"] != cfg.workers:
            return f"this worker was started with --workers {hello['workers']}; the run has {cfg.workers}"
        options = hello["options"] if isinstance(hello["options"], dict) else {}
        differ = sorted(k for k in set(options) | set(cfg.options) if options.get(k) != cfg.options.get(k))
        if differ:
            return (f"this worker's options differ from worker 0's in {', '.join(differ)}: every worker must run "
                    "the same command")
        if self.t0 is not None:
            return (f"the run started {self._since_t0():.1f} s ago: a worker that joins after the start would add "
                    "load the schedule does not have (a replaced pod?)")
        if self.aborted is not None:
            return f"the run was aborted: {self.aborted}"
        index = hello["index"]
        if index is not None:
            if not isinstance(index, int) or not 0 <= index < cfg.workers:
                return f"worker index {index!r} is out of range 0..{cfg.workers - 1}"
            if index in self.slots:
                return f"worker index {index} is taken by {self.slots[index].host}"
        elif all(i in self.slots for i in range(1, cfg.workers)):
            return f"all {cfg.workers - 1} places for workers without an index are taken"
        return None

    async def _welcome(self, conn: Connection, hello: dict[str, Any]) -> _Slot | None:
        reason = self._refusal(hello)
        if reason is not None:
            self.say(f"refused a worker from {conn.peer()}: {reason}")
            await conn.send(message("refused", reason=reason))
            return None
        index = hello["index"]
        if index is None:
            index = next(i for i in range(1, self.cfg.workers) if i not in self.slots)
        host = f"{hello['host']} (pid {hello['pid']}, {conn.peer()})"
        slot = self.slots[index] = _Slot(index, conn, host, anyio.current_time())
        self.hosts[index] = str(hello["host"])
        await conn.send(message("welcome", index=index, seed=self.cfg.seed, run_id=self.cfg.run_id))
        return slot

    async def _on_message(self, slot: _Slot, msg: dict[str, Any]) -> None:
        kind = msg["kind"]
        if kind == "heartbeat":
            return
        if kind == "pong":
            slot.pongs[int(msg["seq"])] = (float(msg["sent"]), float(msg["worker_time"]), time.time())
            slot.pong.set()
        elif kind == "ready":
            if slot.state == "joined":
                slot.state = "ready"
                self._tg.start_soon(self._probe, slot)  # type: ignore[union-attr]
        elif kind == "row":
            if slot.state == "running":
                self.merger.row(slot.index, int(msg["k"]), msg["payload"])
        elif kind == "result":
            if slot.state == "running":
                slot.state = "done"
                self.merger.result(slot.index, msg["payload"])
                await self._send(slot, message("done"))
                self._check_over()
        elif kind == "failed":
            slot.state = "gone"
            self._abort(f"worker {slot.index} cannot run: {msg['reason']}")
        else:
            raise ProtocolError(f"a worker does not send {kind}")

    def _went_away(self, slot: _Slot) -> None:
        if self.slots.get(slot.index) is not slot:
            return
        if slot.state in ("joined", "ready") and self.t0 is None:
            del self.slots[slot.index]  # before the start a worker may come back (a restarted pod)
            self.say(f"worker {slot.index} ({slot.host}) left before the start")
        elif slot.state == "running":
            if self.aborted is not None:
                slot.state = "gone"
            else:
                self._lose(slot, "its connection closed")
        self._check_over()

    # ---- the barrier -----------------------------------------------------------------------------

    async def _probe(self, slot: _Slot) -> None:
        """Measure the worker's clock (PROBES round trips), then see whether everyone is ready."""
        samples = []
        try:
            for seq in range(PROBES):
                slot.pong = anyio.Event()
                sent = time.time()
                await slot.conn.send(message("ping", seq=seq, sent=sent))
                with anyio.fail_after(self.cfg.worker_timeout_s):
                    await slot.pong.wait()
                samples.append(slot.pongs[seq])
        except (TimeoutError, *GONE):
            return  # it went away (and its connection's task says so), or it will time out at the barrier
        measured = offset_of(samples)
        slot.offset_ms = measured.offset_ms
        self.offsets[slot.index] = measured.offset_ms
        if abs(measured.offset_ms) > self.cfg.clock_warn_ms:
            ahead = "ahead of" if measured.offset_ms > 0 else "behind"
            self.say(f"warning: worker {slot.index}'s clock is {abs(measured.offset_ms):.1f} ms {ahead} worker 0's "
                     f"(+- {measured.error_ms:.1f} ms, over {PROBES} round trips): its share starts that much off; "
                     "keep the machines' clocks in sync (NTP, chrony)")
        await self._maybe_start()

    async def _maybe_start(self) -> None:
        cfg = self.cfg
        if self.t0 is not None or self.aborted is not None:
            return
        if len(self.slots) < cfg.workers or any(s.offset_ms is None for s in self.slots.values()):
            return
        self.t0 = time.time() + cfg.start_delay_s
        now = anyio.current_time()
        for slot in self.slots.values():
            slot.state = "running"
            slot.last_seen = now
        self.merger.started(self.t0, dict(sorted(self.offsets.items())))
        self.say(f"all {cfg.workers} workers ready; the run starts in {cfg.start_delay_s:g} s "
                 f"(T0 {time.strftime('%H:%M:%S', time.localtime(self.t0))}.{int(self.t0 * 1000) % 1000:03d})")
        for slot in list(self.slots.values()):
            await self._send(slot, message("start", t0=self.t0))

    # ---- the run ---------------------------------------------------------------------------------

    async def _send(self, slot: _Slot, msg: dict[str, Any]) -> None:
        """Send, bounded: a worker that takes no bytes for `worker_timeout_s` is as good as gone."""
        self._sending += 1
        try:
            with anyio.move_on_after(self.cfg.worker_timeout_s):
                await slot.conn.send(msg)
        except GONE:
            pass
        finally:
            self._sending -= 1

    async def _watch(self) -> None:
        """Once a heartbeat period: heartbeats out, the barrier's deadline, silent workers, the end of an abort."""
        cfg = self.cfg
        over = self._over
        assert over is not None
        while not over.is_set():
            await anyio.sleep(cfg.heartbeat_s)
            now = anyio.current_time()
            if self.alive is not None and not self.alive():
                self._abort("worker 0's process is gone")
                over.set()
                return
            for slot in list(self.slots.values()):
                if slot.state in ("joined", "ready", "running"):
                    self._tg.start_soon(self._send, slot, message("heartbeat"))  # type: ignore[union-attr]
            if self.t0 is None and self.aborted is None and now - self._began > cfg.barrier_timeout_s:
                ready = sorted(i for i, s in self.slots.items() if s.offset_ms is not None)
                missing = [i for i in range(cfg.workers) if i not in ready]
                self._abort(f"only {len(ready)} of {cfg.workers} workers were ready after {cfg.barrier_timeout_s:g} s "
                            f"(--barrier-timeout); not ready: {', '.join(map(str, missing))}")
            for slot in list(self.slots.values()):
                if slot.state == "running" and now - slot.last_seen > cfg.worker_timeout_s:
                    if self.aborted is not None:
                        slot.state = "gone"
                    else:
                        self._lose(slot, f"no heartbeat for {cfg.worker_timeout_s:g} s")
            if self.aborted is not None and now - self._aborted_at > cfg.worker_timeout_s:
                over.set()
            self._check_over()

    def _lose(self, slot: _Slot, reason: str) -> None:
        slot.state = "lost"
        lost = LostWorker(slot.index, self._since_t0(), reason)
        self.lost.append(lost)
        self.merger.lost(lost)
        self.say(lost.describe())
        if self.cfg.on_worker_loss == "abort":
            self._abort(lost.describe() + "; --on-worker-loss abort")

    def _abort(self, reason: str) -> None:
        if self.aborted is not None:
            return
        self.aborted = reason
        self._aborted_at = anyio.current_time()
        self.say(f"aborting the run: {reason}")
        for slot in list(self.slots.values()):
            if slot.state in ("joined", "ready"):
                slot.state = "gone"
            if slot.state in ("gone", "running"):
                self._tg.start_soon(self._send, slot, message("abort", reason=reason))  # type: ignore[union-attr]
        self._check_over()

    def _check_over(self) -> None:
        if self._over is None or self._over.is_set():
            return
        started_all = self.t0 is not None and len(self.slots) == self.cfg.workers
        settled = all(s.state in ("done", "lost", "gone") for s in self.slots.values())
        if (started_all or self.aborted is not None) and settled:
            self._over.set()
