"""Worker 0 hosts the coordinator: a process of its own, forked before any event loop or thread exists.

The listening socket is bound in worker 0's process first, so that a busy port is a usage error (exit 2)
before any traffic, and handed to the forked child, which runs the coordinator (its own event loop, its own
core when there is one: worker 0's load is not slowed by the merging) and exits with the run's exit code.
Worker 0 then takes part as any worker does, over loopback, and in the end returns the child's exit code.
The child stops when worker 0's process goes away.

Imports the standard library, anyio, relay.common.loop and loadtest.cluster.coordinator.
"""

from __future__ import annotations

import contextlib
import ipaddress
import multiprocessing as mp
import os
import socket
import sys
import uuid
from collections.abc import Callable
from typing import Any

import anyio.abc

from loadtest.cluster.client import ClusterError, ClusterOptions, WorkerClient
from loadtest.cluster.coordinator import Coordinator, CoordinatorConfig, Merger
from relay.common import loop as event_loop

STOP_WAIT_S = 5.0
USAGE = 2  # a worker's usage error (after it joined) stays its exit code, also worker 0's


class ClusterUsage(ValueError):
    """Worker 0 cannot listen where it was told to: exit 2 before any traffic."""


def say(message: str) -> None:
    print(f"flowrelay cluster: {message}", file=sys.stderr, flush=True)


def listen(host: str, port: int) -> socket.socket:
    """The coordinator's listening socket (raises OSError when the address is busy or not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=256, reuse_port=False)


def loopback_for(bind: str) -> str:
    """How worker 0 reaches its own coordinator: loopback when it listens on every address or on loopback."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(bind).is_loopback:
            return bind
    return bind


def _serve(sock: socket.socket, cfg: CoordinatorConfig, make_merger: Callable[[], Merger], parent: int) -> None:
    """The child's whole life: serve the coordinator, exit with the run's code."""
    merger = make_merger()
    coordinator = Coordinator(cfg, merger, say, alive=lambda: os.getppid() == parent)

    async def main() -> int:
        listener = await anyio.abc.SocketListener.from_socket(sock)
        return await coordinator.serve(listener)

    code = event_loop.run(main)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class HostedCoordinator:
    """The coordinator's child process (see the module's docstring)."""

    def __init__(self, sock: socket.socket, cfg: CoordinatorConfig, make_merger: Callable[[], Merger]) -> None:
        ctx = mp.get_context("fork")
        self.process: Any = ctx.Process(target=_serve, args=(sock, cfg, make_merger, os.getpid()),
                                        name="flowrelay-coordinator", daemon=False)
        self.process.start()
        sock.close()  # the child has it

    def wait(self) -> int:
        """The run's exit code, once the coordinator is done (1 if it died)."""
        self.process.join()
        code = self.process.exitcode
        return code if isinstance(code, int) and code >= 0 else 1

    def stop(self) -> None:
        """End the coordinator now (worker 0 could not even join its own coordinator)."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_WAIT_S)


def host_if_worker_0(opts: ClusterOptions, bind: str, job: str, options: dict[str, Any], seed: int,
                     make_merger: Callable[[], Merger]) -> HostedCoordinator | None:
    """Worker 0 forks the coordinator (call before any thread or event loop); other workers: None.
    Raises ClusterUsage when the coordinator cannot listen."""
    if opts.index != 0:
        return None
    try:
        sock = listen(bind, opts.port)
    except OSError as exc:
        raise ClusterUsage(f"cannot listen for workers on {bind}:{opts.port}: {exc}") from None
    cfg = CoordinatorConfig(workers=opts.workers, job=job, options=options, seed=seed, run_id=uuid.uuid4().hex,
                            barrier_timeout_s=opts.barrier_timeout_s, worker_timeout_s=opts.worker_timeout_s,
                            on_worker_loss=opts.on_worker_loss)
    return HostedCoordinator(sock, cfg, make_merger)


def run_as_worker(opts: ClusterOptions, bind: str, job: str, options: dict[str, Any], seed: int,
                  make_merger: Callable[[], Merger], part: Callable[[WorkerClient], int]) -> int:
    """A worker's whole life: worker 0 hosts the coordinator; every worker joins, then does `part` (its share,
    returning its exit code). Returns the process's exit code: worker 0's is the run's. Raises ClusterUsage."""
    hosted = host_if_worker_0(opts, bind, job, options, seed, make_merger)
    client = WorkerClient(opts, job, options, loopback_for(bind) if hosted is not None else None)
    try:
        client.join()
    except ClusterError as exc:
        print(f"flowrelay {job}: {exc}", file=sys.stderr, flush=True)
        if hosted is not None:
            hosted.stop()
        return 1
    try:
        code = part(client)
    finally:
        client.close()
    if hosted is None:
        return code
    run_code = hosted.wait()
    return code if code == USAGE else run_code
