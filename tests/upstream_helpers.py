"""Helpers for the relay-in-front-of-a-Flow, fault, limit, fuzz and slow-reader tests.

* `RestartableFlow`: a real Jina Flow (via `jina_peer.run_flow`) that a test can kill outright mid-stream
  (SIGKILL to its whole process group, as a crash or an OOM kill would) and start again on the same port.
* `LoadRun`: `flowrelay load` as a subprocess in the background, its summary and time series read from its
  `--out` folder when it ends; stopped by PID whatever happens.
* `wait_until`: bounded polling; `relay_status`: the relay's GET /status; `rss_mb`: a process's resident
  memory from /proc; request builders and a bounded reader for the two subprotocols.

Everything talks to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from jina_peer import RunningFlow, require_peer, run_flow
from relay_process import LOOPBACK, RelayProcess, flowrelay_command, http_get, stop_process
from websockets.asyncio.client import ClientConnection

from relay.wire import DataRequest, Document, json_codec, proto_codec

T = TypeVar("T")

POLL_S = 0.05


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = POLL_S) -> T:
    """Call `predicate` until it returns something truthy (returned), at most `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def relay_status(relay: RelayProcess | int) -> dict[str, Any]:
    """GET /status of a relay (by process or port); asserts HTTP 200."""
    port = relay if isinstance(relay, int) else relay.port
    code, body = http_get(port, "/status")
    assert code == 200, f"/status answered HTTP {code}: {body}"
    return body


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS line for pid {pid}")


# ---- requests and answers ----------------------------------------------------------------------------


def json_request(text: str = "hello", endpoint: str = "/index", **parameters: Any) -> str:
    return orjson.dumps(
        {"data": [{"text": text}], "execEndpoint": endpoint, "parameters": parameters}
    ).decode()


def bytes_request(rid: str, text: str = "hello", endpoint: str = "/index", **parameters: Any) -> bytes:
    return proto_codec.encode_request(
        DataRequest(request_id=rid, exec_endpoint=endpoint, parameters=parameters, docs=[Document(text=text)])
    )


def decode_answer(frame: str | bytes, mode: str) -> DataRequest:
    """An answer in `mode`, checking it came in that mode's frame type."""
    if mode == "bytes":
        assert isinstance(frame, bytes), f"a bytes client got a text frame: {frame!r:.200}"
        return proto_codec.decode_response(frame)
    assert isinstance(frame, str), f"a json client got a binary frame: {frame!r:.200}"
    return json_codec.decode_response(frame)


async def read_answers(ws: ClientConnection, n: int, mode: str, timeout_s: float = 30.0) -> list[DataRequest]:
    """Exactly `n` answers from `ws`, bounded in time."""
    out = []
    async with asyncio.timeout(timeout_s):
        for _ in range(n):
            out.append(decode_answer(await ws.recv(), mode))
    return out


# ---- a Flow that can be killed and restarted ---------------------------------------------------------


class RestartableFlow:
    """A real Jina Flow on a fixed port that can be killed (SIGKILL, the whole process group) and restarted.

    Use as a context manager; whatever state it is in, it is stopped on exit.
    """

    def __init__(self, flavour: str = "legacy", sleep_ms: float = 2.0) -> None:
        self.flavour = flavour
        self.sleep_ms = sleep_ms
        self.port: int | None = None
        self.flow: RunningFlow | None = None
        self._cm: contextlib.AbstractContextManager[RunningFlow] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"ws://{LOOPBACK}:{self.port}"

    def start(self) -> RunningFlow:
        assert self._cm is None, "already running"
        cm = run_flow(flavour=self.flavour, port=self.port, sleep_ms=self.sleep_ms)
        self.flow = cm.__enter__()
        self._cm = cm
        self.port = self.flow.port
        return self.flow

    def kill(self) -> None:
        """SIGKILL every process of the Flow at once (no clean shutdown), then reap it."""
        assert self._cm is not None and self.flow is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.flow.pgid, signal.SIGKILL)
        self._exit()

    def stop(self) -> None:
        if self._cm is not None:
            self._exit()

    def _exit(self) -> None:
        cm, self._cm, self.flow = self._cm, None, None
        assert cm is not None
        cm.__exit__(None, None, None)

    def __enter__(self) -> RestartableFlow:
        require_peer(self.flavour)  # skip locally, fail under CI, when the peer venv is missing
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- `flowrelay load` in the background --------------------------------------------------------------


class LoadRun:
    """`flowrelay load TARGET ARGS... --quiet --out DIR` in the background (output to files, never a pipe
    that could fill up). `finish()` waits (bounded) and returns the summary; the process is stopped by PID
    on exit whatever happened."""

    def __init__(self, target: str, out: Path, *args: str) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self._stdout = (out / "stdout.txt").open("w")
        self._stderr = (out / "stderr.txt").open("w")
        self.cmd = [*flowrelay_command(), "load", target, *args, "--quiet", "--json", "--out", str(out)]
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> LoadRun:
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self._stdout.close()
        self._stderr.close()

    def finish(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"flowrelay load did not end within {timeout_s:g} s") from None
        self._stdout.flush()
        self._stderr.flush()
        summary_file = self.out / "summary.json"
        assert summary_file.exists(), f"flowrelay load exited {code} without a summary; stderr:\n{self.stderr()}"
        assert code == 0, f"flowrelay load exited {code}; stderr:\n{self.stderr()}"
        return orjson.loads(summary_file.read_bytes())

    def rows(self) -> list[dict[str, Any]]:
        lines = (self.out / "timeseries.jsonl").read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.strip()]

    def stderr(self) -> str:
        return (self.out / "stderr.txt").read_text()[-4000:]


def assert_adds_up(summary: dict[str, Any]) -> None:
    """Every request the load engine sent ended in exactly one counted way."""
    r = summary["requests"]
    ended = r["ok"] + r["failed"] + r["transport_failed"] + r["timeout"] + r["unanswered"]
    assert r["sent"] == ended, f"requests do not add up: {r}"

