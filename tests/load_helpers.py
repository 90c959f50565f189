"""Helpers for the load-engine tests: run `flowrelay load`, in a subprocess or in-process, and a fake gateway.

`FakeGateway` is a small WebSocket server on 127.0.0.1 that answers like a Jina gateway (relay.wire
codecs, a `gateway` route entry, json clients get a gateway-made request id) and misbehaves on request:
it can stall every answer once for a while, drop or close a connection once, delay chosen requests so
answers come back out of order. It logs every arrival (`arrivals`: connection, monotonic time, frame), which
is what a replay test compares with its recording. It runs in a background thread with its own event loop, so the load
engine can drive it from the test's thread (in-process) or from a `flowrelay load` subprocess; it counts
what it saw (connections, requests, the largest number in flight at once).

Relays are started with `relay_process.run_relay` (another module of this folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
from relay_process import LOOPBACK, flowrelay_command
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from loadtest.config import LoadConfig
from loadtest.engine import run_load
from loadtest.measure.meter import RowSink
from loadtest.outputs.summary import build_summary
from loadtest.result import RunResult
from relay.wire import json_codec, proto_codec
from relay.wire.codecs import choose_subprotocol
from relay.wire.messages import DataRequest, EndOfStream, Route, now_ns

CLI_TIMEOUT_S = 90.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# The engine's per-connection answer-matching key in json mode (a gateway echoes parameters).
CORRELATION_KEY = "flowrelay_rid"


# ---- running the load tester -----------------------------------------------------------------------


def run_load_cli(*args: str, timeout_s: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`flowrelay load ARGS...` as a subprocess; bounded by `timeout_s`."""
    return subprocess.run(
        [*flowrelay_command(), "load", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def cli_summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The summary a `--json` run printed on stdout."""
    assert proc.stdout.strip(), f"no summary on stdout; exit {proc.returncode}, stderr:\n{proc.stderr}"
    return orjson.loads(proc.stdout)


class RowList(list[dict[str, Any]]):
    """A time-series sink that keeps every row in a list (fine for a test's few seconds; the engine itself
    keeps none)."""

    def add(self, row: dict[str, Any], interval: object = None) -> None:
        self.append(row)

    def replace_last(self, row: dict[str, Any], interval: object = None) -> None:
        self[-1] = row


def load_in_process(target: str, series: RowSink | None = None, **options: Any) -> tuple[dict[str, Any], RunResult]:
    """Run the engine in this process; returns the summary (as summary.json has it) and the raw result.
    `series` (e.g. a RowList) takes the time series' rows."""
    options.setdefault("grace_s", 5.0)
    options.setdefault("connect_timeout_s", 5.0)
    result = run_load(LoadConfig(target=target, **options), series=series)
    return build_summary(result), result


def assert_adds_up(summary: dict[str, Any]) -> None:
    """Every sent request ended in exactly one way."""
    r = summary["requests"]
    ended = r["ok"] + r["failed"] + r["transport_failed"] + r["timeout"] + r["unanswered"]
    assert r["sent"] == ended, f"requests do not add up: {r}"


def read_request_log(path: Path) -> list[list[Any]]:
    """The records of a requests.msgpack file: [rid, due_s, sent_s, answered_s, status, docs]."""
    with path.open("rb") as fh:
        return [list(rec) for rec in msgpack.Unpacker(fh, raw=False)]


def flatten_keys(node: Any, prefix: str = "", skip: frozenset[str] = frozenset()) -> set[str]:
    """Dotted key paths of nested dicts (lists are leaves); keys in `skip` are kept but not descended."""
    if not isinstance(node, dict):
        return set()
    keys: set[str] = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys.add(path)
        if key not in skip:
            keys |= flatten_keys(value, path + ".", skip)
    return keys


# ---- a misbehaving gateway ---------------------------------------------------------------------------


class FakeGateway:
    """A gateway stand-in that answers every request after `delay_s` (or `delay_for(rid)`) seconds.

    * `stall_after=N`: when the N-th request arrives, every answer not yet sent waits until `stall_s`
      seconds later (once per gateway).
    * `kill_after=N`: the connection that carries the N-th request is ended at once, that request
      unanswered (once per gateway): dropped at the TCP level (`kill_code=None`, the client sees 1006)
      or closed with `kill_code`.

    Use as a context manager; `url` is where it listens.
    """

    def __init__(
        self,
        delay_s: float = 0.001,
        delay_for: Callable[[str], float] | None = None,
        stall_after: int | None = None,
        stall_s: float = 0.5,
        kill_after: int | None = None,
        kill_code: int | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.delay_for = delay_for
        self.stall_after = stall_after
        self.stall_s = stall_s
        self.kill_after = kill_after
        self.kill_code = kill_code
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.out_of_order = 0  # answers sent before an answer to a request that arrived earlier
        self.arrivals: list[Arrival] = []  # every request frame, end-of-stream markers left out
        self.stalled = False
        self.killed = False
        self._stall_until = 0.0
        self._arrived = 0
        self._answered_upto = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # answers not yet sent, on every connection

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    # -- lifecycle --

    def __enter__(self) -> FakeGateway:
        self._thread = threading.Thread(target=self._run, name="fake-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("fake gateway did not start")
        if self._error is not None:
            raise RuntimeError(f"fake gateway failed to start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            assert not self._thread.is_alive(), "fake gateway thread did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            LOOPBACK,
            0,
            select_subprotocol=lambda conn, offered: choose_subprotocol(offered),
            ping_interval=None,
            max_size=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            # Answers still waiting (a long delay) must not hold the shutdown up.
            for task in list(self._tasks):
                task.cancel()

    # -- one connection --

    async def _handle(self, ws: ServerConnection) -> None:
        number = self.connections
        self.connections += 1
        is_bytes = ws.subprotocol == "bytes"
        codec = proto_codec if is_bytes else json_codec
        tasks: set[asyncio.Task[None]] = set()
        every = self._tasks
        try:
            async for message in ws:
                arrived = time.monotonic_ns()
                req = codec.decode_request(message)  # type: ignore[arg-type]
                if isinstance(req, EndOfStream):
                    break
                self.arrivals.append(Arrival(number, arrived, ws.subprotocol, message))
                self.requests += 1
                if self.kill_after is not None and not self.killed and self.requests >= self.kill_after:
                    self.killed = True
                    if self.kill_code is None:
                        ws.transport.abort()
                    else:
                        await ws.close(self.kill_code, "test gateway going away")
                    break
                if self.stall_after is not None and not self.stalled and self.requests >= self.stall_after:
                    self.stalled = True
                    self._stall_until = asyncio.get_running_loop().time() + self.stall_s
                self._arrived += 1
                task = asyncio.create_task(self._answer(ws, req, is_bytes, self._arrived))
                tasks.add(task)
                every.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(every.discard)
        except ConnectionClosed:
            pass
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, ws: ServerConnection, req: DataRequest, is_bytes: bool, order: int) -> None:
        loop = asyncio.get_running_loop()
        start_ns = now_ns()
        if is_bytes:
            rid = req.request_id
        else:
            rid = str((req.parameters or {}).get(CORRELATION_KEY, ""))
            req.request_id = uuid.uuid4().hex  # a gateway makes its own id for json clients
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay_for(rid) if self.delay_for is not None else self.delay_s
            if delay > 0:
                await asyncio.sleep(delay)
            wait = self._stall_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            req.routes = [Route("gateway", start_ns, now_ns())]
            if order < self._answered_upto:
                self.out_of_order += 1
            self._answered_upto = max(self._answered_upto, order)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(codec_of(is_bytes).encode_response(req), text=not is_bytes)
                self.answered += 1
        finally:
            self.in_flight -= 1


@dataclass(frozen=True)
class Arrival:
    """A frame as the fake gateway received it: on which of its connections (from 0), when (time.monotonic_ns),
    in which subprotocol."""

    connection: int
    mono_ns: int
    subprotocol: str | None
    frame: bytes | str


def codec_of(is_bytes: bool) -> Any:
    return proto_codec if is_bytes else json_codec


@contextlib.contextmanager
def fake_gateway(**options: Any) -> Iterator[FakeGateway]:
    with FakeGateway(**options) as gw:
        yield gw
