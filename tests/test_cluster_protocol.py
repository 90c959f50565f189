"""The coordinator protocol on real sockets with fake workers (no load engine): joining, the barrier, clock
offsets, rows, results, refusals, lost workers and aborts, as loadtest.cluster's docstrings promise.

Each test runs a Coordinator on 127.0.0.1 (port 0) in its event loop, with a recording merger, and workers
that are either real `WorkerClient`s (their blocking join in a thread) or raw connections speaking the
messages by hand where a test needs a misbehaving worker.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import pytest

from loadtest.cluster.client import ClusterError, ClusterOptions, WorkerClient
from loadtest.cluster.clock import offset_of
from loadtest.cluster.coordinator import Coordinator, CoordinatorConfig, LostWorker, Outcome
from loadtest.cluster.link import Connection
from loadtest.cluster.messages import PROTOCOL, FrameReader, ProtocolError, encode, message

LOOPBACK = "127.0.0.1"
OPTIONS = {"rate": 100.0, "duration_s": 2.0}
TEST_TIMEOUT_S = 30.0


@dataclass
class RecordingMerger:
    t0: float | None = None
    offsets: dict[int, float] = field(default_factory=dict)
    rows: list[tuple[int, int, Any]] = field(default_factory=list)
    results: dict[int, Any] = field(default_factory=dict)
    lost_workers: list[LostWorker] = field(default_factory=list)
    outcome: Outcome | None = None

    def started(self, t0: float, clock_offsets_ms: dict[int, float]) -> None:
        self.t0, self.offsets = t0, clock_offsets_ms

    def row(self, worker: int, k: int, payload: Any) -> None:
        self.rows.append((worker, k, payload))

    def lost(self, worker: LostWorker) -> None:
        self.lost_workers.append(worker)

    def result(self, worker: int, payload: Any) -> None:
        self.results[worker] = payload

    def finish(self, outcome: Outcome) -> int:
        self.outcome = outcome
        return 1 if outcome.aborted or outcome.lost else 0


def config(workers: int = 3, **kw: Any) -> CoordinatorConfig:
    base: dict[str, Any] = {"workers": workers, "job": "load", "options": OPTIONS, "seed": 7, "run_id": "r1",
                            "barrier_timeout_s": 10.0, "worker_timeout_s": 2.0, "start_delay_s": 0.3,
                            "heartbeat_s": 0.2}
    base.update(kw)
    return CoordinatorConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def opts(port: int, workers: int = 3, index: int | None = None, **kw: Any) -> ClusterOptions:
    base: dict[str, Any] = {"barrier_timeout_s": 10.0, "worker_timeout_s": 2.0, "heartbeat_s": 0.2}
    base.update(kw)
    return ClusterOptions(workers=workers, host=LOOPBACK, port=port, index=index, **base)


@dataclass
class Run:
    merger: RecordingMerger
    port: int
    said: list[str]
    code: int | None = None


def run_cluster(cfg: CoordinatorConfig, scenario: Callable[[Run], Awaitable[None]],
                port: int | None = None, coordinator_after_s: float = 0.0) -> Run:
    """Serve a coordinator and run `scenario` (the workers) beside it; returns what happened."""
    run = Run(RecordingMerger(), port or free_port(), [])

    async def coordinate() -> None:
        await anyio.sleep(coordinator_after_s)
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=run.port)
        run.code = await Coordinator(cfg, run.merger, run.said.append).serve(listener)

    async def main() -> None:
        with anyio.fail_after(TEST_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(coordinate)
                await scenario(run)

    anyio.run(main)
    return run


async def full_worker(port: int, index: int | None, rows: int = 2, workers: int = 3,
                      options: dict[str, Any] | None = None, record: list[Any] | None = None,
                      run_s: float = 0.0) -> WorkerClient:
    """A well-behaved worker: join, barrier, `rows` rows (over `run_s`), result."""
    client = WorkerClient(opts(port, workers, index), "load", options or OPTIONS)
    await anyio.to_thread.run_sync(client.join)
    try:
        async with client.attached():
            t0 = await client.barrier()
            if record is not None:
                record.append((client.index, time.perf_counter() - t0, client.t0))
            for k in range(rows):
                client.send_row(k, {"sent": 10 + k, "worker": client.index})
            await anyio.sleep(run_s)
            await client.hand_over({"sent": 21, "worker": client.index})
    finally:
        client.close()
    return client


# ---- the pure parts ------------------------------------------------------------------------------------


def test_frames_split_anywhere_come_out_whole() -> None:
    data = b"".join(encode(message("row", k=k, payload={"x": b"\x00" * k})) for k in range(50))
    reader = FrameReader()
    got = []
    for i in range(0, len(data), 7):
        got.extend(reader.feed(data[i : i + 7]))
    assert [m["k"] for m in got] == list(range(50))
    assert got[3]["payload"]["x"] == b"\x00\x00\x00"


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unknown message kind"):
        list(FrameReader().feed(encode({"kind": "nonsense"})))
    with pytest.raises(ProtocolError, match="without index"):
        list(FrameReader().feed(encode({"kind": "welcome", "seed": 1, "run_id": "x"})))
    with pytest.raises(ProtocolError, match="a map"):
        list(FrameReader().feed(encode([1, 2])))


def test_clock_offset_takes_the_tightest_round_trip() -> None:
    # The worker is 50 ms ahead; the second sample's round trip is the shortest.
    samples = [(100.0, 100.060, 100.010), (200.0, 200.0505, 200.001), (300.0, 300.070, 300.030)]
    measured = offset_of(samples)
    assert measured.offset_ms == pytest.approx(50.0, abs=0.01)
    assert measured.error_ms == pytest.approx(0.5, abs=0.01)


# ---- joining and the barrier ---------------------------------------------------------------------------


def test_three_workers_in_any_order_start_together_and_hand_over() -> None:
    record: list[Any] = []

    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            # One without an index (assigned), started first; then 2 and 0 by JOB_COMPLETION_INDEX-style indexes.
            tg.start_soon(full_worker, run.port, None, 2, 3, None, record)
            await anyio.sleep(0.2)
            tg.start_soon(full_worker, run.port, 2, 2, 3, None, record)
            await anyio.sleep(0.2)
            tg.start_soon(full_worker, run.port, 0, 2, 3, None, record)

    run = run_cluster(config(), workers)
    assert run.code == 0
    assert sorted(i for i, _, _ in record) == [0, 1, 2]  # the index-less worker got 1
    assert len({t0 for _, _, t0 in record}) == 1  # one T0 for everyone
    assert all(late_s < 0.05 for _, late_s, _ in record)  # each woke at T0 on its own clock
    assert sorted((w, k) for w, k, _ in run.merger.rows) == [(w, k) for w in range(3) for k in range(2)]
    assert run.merger.results == {i: {"sent": 21, "worker": i} for i in range(3)}
    assert set(run.merger.offsets) == {0, 1, 2}
    assert all(abs(ms) < 5 for ms in run.merger.offsets.values())  # one machine: one clock
    outcome = run.merger.outcome
    assert outcome is not None and outcome.started and not outcome.lost and outcome.aborted is None


def test_workers_that_start_before_the_coordinator_wait_for_it() -> None:
    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            for index in (1, 0):
                tg.start_soon(full_worker, run.port, index, 1, 2)

    run = run_cluster(config(2), workers, coordinator_after_s=1.0)
    assert run.code == 0 and set(run.merger.results) == {0, 1}


def test_no_coordinator_within_the_barrier_timeout_is_an_error() -> None:
    client = WorkerClient(opts(free_port(), 2, 1, barrier_timeout_s=0.5), "load", OPTIONS)
    with pytest.raises(ClusterError, match=r"no coordinator at 127\.0\.0\.1:\d+ after 0\.5 s"):
        client.join()


async def refused_reason(port: int, index: int | None, workers: int = 3, options: dict[str, Any] | None = None,
                         job: str = "load") -> str:
    client = WorkerClient(opts(port, workers, index), job, options or OPTIONS)
    with pytest.raises(ClusterError) as err:
        await anyio.to_thread.run_sync(client.join)
    return str(err.value)


async def waiting_worker(port: int, workers: int, index: int, errors: list[str],
                         joined: anyio.Event | None = None) -> None:
    """Join (then set `joined`) and wait at the barrier; the ClusterError that ends it goes to `errors`."""
    client = WorkerClient(opts(port, workers, index), "load", OPTIONS)
    await anyio.to_thread.run_sync(client.join)
    if joined is not None:
        joined.set()
    try:
        async with client.attached():
            await client.barrier()
    except ClusterError as exc:
        errors.append(str(exc))
    finally:
        client.close()


def test_hellos_that_do_not_fit_are_refused_with_the_reason() -> None:
    reasons: dict[str, str] = {}

    async def workers(run: Run) -> None:
        first = WorkerClient(opts(run.port, 2, 1), "load", OPTIONS)
        await anyio.to_thread.run_sync(first.join)
        reasons["taken"] = await refused_reason(run.port, 1, 2)
        reasons["range"] = await refused_reason(run.port, 5, 2)
        reasons["count"] = await refused_reason(run.port, 0, 4)
        reasons["options"] = await refused_reason(run.port, 0, 2, {"rate": 200.0, "duration_s": 2.0})
        reasons["job"] = await refused_reason(run.port, 0, 2, job="ingest")
        reasons["full"] = await refused_reason(run.port, None, 2)
        first.close()
        async with anyio.create_task_group() as tg:
            for index in (0, 1):
                tg.start_soon(full_worker, run.port, index, 0, 2)

    run = run_cluster(config(2), workers)
    assert "worker index 1 is taken" in reasons["taken"]
    assert "out of range 0..1" in reasons["range"]
    assert "--workers 4; the run has 2" in reasons["count"]
    assert "options differ from worker 0's in rate" in reasons["options"]
    assert "runs `ingest`" in reasons["job"]
    assert "places for workers without an index are taken" in reasons["full"]
    assert run.code == 0  # the refusals did not disturb the run; index 1 was free again once its holder left


def test_a_worker_arriving_after_the_start_is_refused() -> None:
    reason: list[str] = []

    async def late(run: Run) -> None:
        await anyio.sleep(0.8)  # the run started at about 0.1 s and lasts 1.5 s
        reason.append(await refused_reason(run.port, 1, 2))

    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(full_worker, run.port, 0, 8, 2, None, None, 1.5)
            tg.start_soon(full_worker, run.port, 1, 8, 2, None, None, 1.5)
            tg.start_soon(late, run)

    run = run_cluster(config(2, start_delay_s=0.1), workers)
    assert "the run started" in reason[0] and "would add load" in reason[0]
    assert run.code == 0


def test_a_worker_that_sees_the_start_already_past_refuses_to_start() -> None:
    errors: list[str] = []

    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting_worker, run.port, 2, 0, errors)
            tg.start_soon(waiting_worker, run.port, 2, 1, errors)

    # T0 = the moment of the announcement: by the time a worker reads it, it is past.
    run = run_cluster(config(2, start_delay_s=0.0, worker_timeout_s=0.5), workers)
    assert len(errors) == 2 and all("arrived after the start" in e for e in errors)
    assert run.code == 1  # both went away without a result: lost


def test_the_barrier_times_out_naming_the_missing_workers() -> None:
    errors: list[str] = []

    async def workers(run: Run) -> None:
        await waiting_worker(run.port, 3, 0, errors)

    run = run_cluster(config(3, barrier_timeout_s=1.0), workers)
    assert run.code == 1 and run.merger.outcome is not None and not run.merger.outcome.started
    assert "only 1 of 3 workers were ready after 1 s" in (run.merger.outcome.aborted or "")
    assert "not ready: 1, 2" in (run.merger.outcome.aborted or "")
    assert errors and "aborted" in errors[0]


async def raw_worker(port: int, index: int, clock_skew_s: float = 0.0) -> Connection:
    """Join by hand; answer pings with a skewed clock; return the connection once started."""
    for _ in range(50):  # the coordinator's listener comes up beside us
        try:
            stream = await anyio.connect_tcp(LOOPBACK, port)
            break
        except OSError:
            await anyio.sleep(0.05)
    conn = Connection(stream)
    await conn.send(message("hello", protocol=PROTOCOL, job="load", workers=2, index=index, options=OPTIONS,
                            host="fake", pid=0))
    assert (await conn.receive())["kind"] == "welcome"
    await conn.send(message("ready"))
    while True:
        msg = await conn.receive()
        if msg["kind"] == "ping":
            await conn.send(message("pong", seq=msg["seq"], sent=msg["sent"], worker_time=time.time() + clock_skew_s))
        elif msg["kind"] == "start":
            return conn


def test_a_clock_offset_over_10_ms_is_measured_and_warned_about() -> None:
    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(full_worker, run.port, 0, 1, 2)
            conn = await raw_worker(run.port, 1, clock_skew_s=0.040)
            await conn.send(message("result", payload={}))
            assert (await conn.receive())["kind"] in ("heartbeat", "done")
            await anyio.sleep(0.3)
            await conn.aclose()

    run = run_cluster(config(2), workers)
    assert run.merger.offsets[1] == pytest.approx(40.0, abs=3.0)
    assert abs(run.merger.offsets[0]) < 3.0
    assert any("worker 1's clock is" in line and "ms ahead of worker 0's" in line for line in run.said)


# ---- losses and aborts ---------------------------------------------------------------------------------


def test_a_killed_worker_is_lost_and_with_continue_the_others_finish() -> None:
    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(full_worker, run.port, 0, 6, 2)
            conn = await raw_worker(run.port, 1)
            await anyio.sleep(0.5)  # past T0
            await conn.send(message("row", k=0, payload={"sent": 5}))
            await anyio.sleep(0.2)
            await conn.aclose()  # as a kill -9 does: the kernel closes the socket

    run = run_cluster(config(2, on_worker_loss="continue"), workers)
    assert run.code == 1
    (lost,) = run.merger.lost_workers
    assert lost.index == 1 and lost.reason == "its connection closed" and lost.at_s >= 0
    assert "worker 1 lost at" in lost.describe()
    assert (1, 0, {"sent": 5}) in run.merger.rows  # its rows until then count
    assert 0 in run.merger.results  # the other finished
    assert any(line.startswith("worker 1 lost at") for line in run.said)


def test_a_silent_worker_is_lost_after_the_timeout_and_abort_stops_the_others() -> None:
    errors: list[str] = []

    async def staying(port: int) -> None:
        client = WorkerClient(opts(port, 2, 0), "load", OPTIONS)
        await anyio.to_thread.run_sync(client.join)
        try:
            async with client.attached(on_abort=errors.append):
                await client.barrier()
                await anyio.sleep(10)  # a long run, cut short by the abort
        finally:
            client.close()

    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(staying, run.port)
            conn = await raw_worker(run.port, 1)
            await anyio.sleep(0.1)  # then silence: no heartbeat, no row
            await anyio.sleep(3.0)
            await conn.aclose()
            tg.cancel_scope.cancel()

    run = run_cluster(config(2, worker_timeout_s=1.0), workers)
    assert run.code == 1
    (lost,) = run.merger.lost_workers
    assert lost.index == 1 and lost.reason == "no heartbeat for 1 s"
    assert errors and "aborted" in errors[0] and "worker 1 lost at" in errors[0]


def test_a_worker_that_cannot_run_aborts_the_run() -> None:
    errors: list[str] = []

    async def failing(port: int) -> None:
        client = WorkerClient(opts(port, 2, 1), "load", OPTIONS)
        await anyio.to_thread.run_sync(client.join)
        try:
            async with client.attached():
                await client.report_failure("cannot connect to ws://127.0.0.1:9: refused")
        finally:
            client.close()

    async def workers(run: Run) -> None:
        async with anyio.create_task_group() as tg:
            joined = anyio.Event()
            tg.start_soon(waiting_worker, run.port, 2, 0, errors, joined)
            await joined.wait()  # worker 0 is in the run (a worker joining after the abort is refused instead)
            tg.start_soon(failing, run.port)

    run = run_cluster(config(2), workers)
    assert run.code == 1
    assert run.merger.outcome is not None
    assert "worker 1 cannot run: cannot connect" in (run.merger.outcome.aborted or "")
    assert errors and "worker 1 cannot run" in errors[0]


def test_a_worker_notices_a_lost_coordinator() -> None:
    reasons: list[str] = []

    async def main() -> None:
        port = free_port()
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=port)

        async def silent(stream: anyio.abc.ByteStream) -> None:
            conn = Connection(stream)
            await conn.receive()
            await conn.send(message("welcome", index=0, seed=1, run_id="x"))
            await anyio.sleep(5)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, silent)
            client = WorkerClient(opts(port, 1, 0, worker_timeout_s=0.6), "load", OPTIONS)
            await anyio.to_thread.run_sync(client.join)
            async with client.attached(on_abort=reasons.append):
                with anyio.move_on_after(3):
                    await anyio.sleep(3)
            client.close()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert reasons and "lost the coordinator" in reasons[0] and "nothing heard for 0.6 s" in reasons[0]
