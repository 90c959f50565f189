"""Start the relay for tests: `flowrelay serve` as a subprocess, or a relay inside the test's event loop.

    with run_relay("-e", "upper", "-e", "sleeper=sleep:2ms") as relay:
        ...  # talk to relay.url

    async with relay_in_process("upper", prefetch=2) as server:
        ...  # talk to ws_url(server)

    async with relay_in_process(backend=Chain([MyExecutor("x")])) as server:
        ...  # a backend of the test's own

The subprocess is started with `--port 0`; the port is read from the line the relay prints when it is
listening, so there is no pick-a-free-port race. It is stopped by its PID: SIGTERM, then SIGKILL after a
bound. Also here: a small WebSocket client helper (`exchange`) that sends frames and reads until the
server closes, every step bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flowrelay.cli.serve import build_relay
from relay.backend import Backend
from relay.config import RelayConfig
from relay.executors import Chain
from relay.metrics import RelayMetrics
from relay.server import RelayServer

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
TERM_GRACE_S = 15.0
KILL_GRACE_S = 5.0
IO_TIMEOUT_S = 20.0
OUTPUT_LINES_KEPT = 400
_SERVING = re.compile(r"^flowrelay serving wss?://[^:/]+:(\d+)/")


def flowrelay_command() -> list[str]:
    """The installed `flowrelay` console script next to this interpreter, else `python -m flowrelay`."""
    script = Path(sys.executable).with_name("flowrelay")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "flowrelay"]


RUN_FLOWRELAY = """
import sys
from flowrelay.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def prelude_command(prelude: str) -> list[str]:
    """The `flowrelay` command, with `prelude` (Python source) run first in the same process."""
    return [sys.executable, "-c", textwrap.dedent(prelude) + RUN_FLOWRELAY]


def relay_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RelayStartError(RuntimeError):
    """`flowrelay serve` exited, or did not print its serving line in time."""


@dataclass
class RelayProcess:
    """A running `flowrelay serve`."""

    proc: subprocess.Popen[str]
    port: int
    _output: collections.deque[str] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def output(self) -> str:
        return "\n".join(self._output)

    def terminate(self) -> None:
        """Send SIGTERM (the graceful stop); `wait` collects the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float = TERM_GRACE_S) -> int:
        return self.proc.wait(timeout=timeout)


def _pump(stream: IO[str], sink: collections.deque[str], ready: threading.Event) -> None:
    # Keeps draining for the process's whole life, so its logging never blocks on a full pipe.
    try:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if _SERVING.match(line):
                ready.set()
    except (OSError, ValueError):
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[str]) -> None:
    """SIGTERM by PID, wait up to TERM_GRACE_S, then SIGKILL; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_S)


@contextlib.contextmanager
def run_relay(
    *args: str, timeout_s: float = START_TIMEOUT_S, preexec_fn: Callable[[], None] | None = None,
    prelude: str | None = None,
) -> Iterator[RelayProcess]:
    """`flowrelay serve --host 127.0.0.1 --port 0 ARGS...`, stopped (SIGTERM, then SIGKILL) on exit.
    `preexec_fn` runs in the child before the relay starts (e.g. to lower its resource limits); `prelude` is
    Python the child runs before the command (to take a package away, say)."""
    cmd = [*(flowrelay_command() if prelude is None else prelude_command(prelude)),
           "serve", "--host", LOOPBACK, "--port", "0", *args]
    output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
    ready = threading.Event()
    proc = subprocess.Popen(
        cmd,
        env=relay_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        preexec_fn=preexec_fn,
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, output, ready), daemon=True)
    pump.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
            ready.wait(0.05)
        port = next((int(m.group(1)) for line in list(output) if (m := _SERVING.match(line))), None)
        if port is None:
            tail = "\n".join(output)
            raise RelayStartError(f"flowrelay serve did not start (exit {proc.poll()}): {' '.join(cmd)}\n{tail}")
        while not _accepts(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _accepts(port):
            raise RelayStartError(f"flowrelay serve printed port {port} but does not accept on it")
        yield RelayProcess(proc, port, output)
    finally:
        stop_process(proc)
        pump.join(timeout=KILL_GRACE_S)
        if not pump.is_alive() and proc.stdout is not None:
            proc.stdout.close()


# ---- in-process ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay_in_process(
    *specs: str, backend: Backend | None = None, metrics: RelayMetrics | None = None, grpc: bool = False,
    **config: Any,
) -> AsyncIterator[RelayServer]:
    """A relay on 127.0.0.1 and a free port, wired as `flowrelay serve` wires it, in the running event loop:
    built-in Executors from `specs` (default `upper`) or `backend`; with `grpc`, a gRPC door on a free port too
    (`relay.grpc.port`). Stopped gracefully on exit."""
    config.setdefault("ping_interval_s", None)
    relay = build_relay(RelayConfig(host=LOOPBACK, port=0, **config),
                        backend or Chain.from_specs(list(specs) or ["upper"]), metrics, 0 if grpc else None)
    async with serving_while(relay.serve, relay.stop):
        yield relay


@contextlib.asynccontextmanager
async def serving_while(
    serve: Callable[..., Awaitable[None]], stop: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """`serve(task_status=...)` (a relay's, a backend's) started in a task group for the body, then `stop()`ped
    (or cancelled, without `stop`) and awaited. The body's own error is raised as it is, not inside the task
    group's exception group."""
    failed: Exception | None = None
    async with anyio.create_task_group() as tasks:
        await tasks.start(serve)
        try:
            yield
        except Exception as exc:
            failed = exc
        finally:
            if stop is not None:
                stop()
            else:
                tasks.cancel_scope.cancel()
    if failed is not None:
        raise failed


def ws_url(server: RelayServer | RelayProcess, path: str = "/") -> str:
    return f"ws://{LOOPBACK}:{server.port}{path}"


def http_get(port: int, path: str) -> tuple[int, Any]:
    """GET on 127.0.0.1 without any proxy; returns (status, parsed JSON body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{LOOPBACK}:{port}{path}", timeout=IO_TIMEOUT_S) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"null")


# ---- a bounded client ------------------------------------------------------------------------------


@dataclass
class Exchange:
    """What one connection saw: the frames received (in order), the close, the negotiated subprotocol."""

    frames: list[str | bytes]
    close_code: int | None
    close_reason: str
    subprotocol: str | None
    server_closed_first: bool

    def json(self) -> list[Any]:
        return [orjson.loads(f) for f in self.frames]


async def read_until_closed(ws: ClientConnection, limit: int = 1000) -> list[str | bytes]:
    received: list[str | bytes] = []
    for _ in range(limit):
        try:
            received.append(await ws.recv())
        except ConnectionClosed:
            break
    return received


def _closed_by_server(ws: ClientConnection) -> bool:
    p = ws.protocol
    return p.close_rcvd is not None and (p.close_sent is None or bool(p.close_rcvd_then_sent))


async def exchange(
    url: str,
    frames: Sequence[str | bytes | dict[str, Any]],
    subprotocols: Sequence[str] | None = ("json",),
    limit: int = 1000,
    timeout_s: float = IO_TIMEOUT_S,
) -> Exchange:
    """Send `frames` (dicts as JSON text), then read until the server closes (at most `limit` frames)."""
    async with asyncio.timeout(timeout_s):
        async with connect(
            url,
            subprotocols=list(subprotocols) if subprotocols is not None else None,
            compression=None,
            open_timeout=timeout_s,
            max_size=None,
        ) as ws:
            for frame in frames:
                await ws.send(orjson.dumps(frame).decode() if isinstance(frame, dict) else frame)
            received = await read_until_closed(ws, limit)
            return Exchange(received, ws.close_code, ws.close_reason or "", ws.subprotocol, _closed_by_server(ws))
