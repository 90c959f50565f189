"""A task that lives as long as the relay and fails stops the relay, with the error named and a non-zero exit.

Each test runs the real `flowrelay serve` in a process of its own, with one failure injected into a task the
relay runs beside its connections: the keepalive pings, the gc freezer, the upstream links' sweeper (request
deadlines, pings). Before, such a task died silently and the relay went on without pings, freezes or request
timeouts for the rest of its life; now the process ends with exit code 1 and says which task failed and why.

The failure is injected by patching, in the child process only, a function that task calls; nothing in the
relay knows about tests. A relay that is not told to stop must not stop otherwise: the last test checks that
the same command without an injected failure keeps serving until SIGTERM, then exits 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time

import pytest
from relay_process import LOOPBACK, prelude_command, relay_env, stop_process
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

EXIT_TIMEOUT_S = 30.0
_SERVING = re.compile(r"^flowrelay serving wss?://[^:/]+:(\d+)/")

# The patches, run in the child before `flowrelay serve`.
KEEPALIVE_FAILS = """
from relay.net.listener import WebSocketSession

def ping(self, data):
    raise RuntimeError("injected keepalive failure")

WebSocketSession.ping = ping
"""
FREEZER_FAILS = """
import relay.common.gc_freeze

def freeze():
    raise RuntimeError("injected gc freezer failure")

relay.common.gc_freeze.freeze = freeze
"""
# The sweeper fails each link's requests past their deadline: `expire(now)` on every link of the pool.
SWEEPER_FAILS = """
from relay.upstream.pool import UpstreamPool

def expire(now):
    raise RuntimeError("injected sweeper failure")

original_init = UpstreamPool.__init__

def init(self, cfg):
    original_init(self, cfg)
    for link in self.links:
        link.expire = expire

UpstreamPool.__init__ = init
"""


class Child:
    """`flowrelay serve ARGS` with `patch` applied first; its output is collected as it comes."""

    def __init__(self, patch: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*prelude_command(patch), "serve", "--host", LOOPBACK, "--port", "0", *args],
            env=relay_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def port(self) -> int:
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := _SERVING.match(line):
                    return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the relay did not start:\n{self.output}")

    def exit_code(self) -> int:
        """Wait for the process to end by itself (bounded); its exit code."""
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the relay kept running:\n{self.output}") from None
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        stop_process(self.proc)
        self._reader.join(timeout=5)


@contextlib.contextmanager
def child(patch: str, *args: str) -> Child:  # type: ignore[misc]
    c = Child(patch, *args)
    try:
        yield c
    finally:
        c.stop()


def session(relay: Child) -> ClientConnection:
    return connect(f"ws://{LOOPBACK}:{relay.port()}/", subprotocols=["json"], open_timeout=10)  # type: ignore[list-item]


def test_a_failing_keepalive_stops_the_relay_with_the_error_named() -> None:
    # A session to ping: the keepalive fails on its first ping.
    with child(KEEPALIVE_FAILS, "--ping-interval", "100ms") as relay, session(relay) as ws:
        code = relay.exit_code()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert code == 1, relay.output
    # Stopped as gracefully as by SIGTERM: the session was closed 1001, not dropped.
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "flowrelay serve: the relay's keepalive failed: RuntimeError: injected keepalive failure" in relay.output
    assert "Traceback" in relay.output, "the log has where it failed"


def test_a_failing_gc_freezer_stops_the_relay_with_the_error_named() -> None:
    with child(FREEZER_FAILS, "-e", "echo") as relay:
        code = relay.exit_code()
    assert code == 1, relay.output
    assert "flowrelay serve: the relay's gc freezer failed: RuntimeError: injected gc freezer failure" in relay.output


def test_a_failing_upstream_sweeper_stops_the_relay_with_the_error_named() -> None:
    # Nothing listens upstream: the links keep reconnecting, and the sweeper runs every 50 ms all the same.
    with child(SWEEPER_FAILS, "--upstream", f"ws://{LOOPBACK}:9", "--upstream-timeout", "200ms") as relay:
        code = relay.exit_code()
    assert code == 1, relay.output
    # Named at every level: the relay's backend, the pool's sweep, the error itself.
    assert ("flowrelay serve: the relay's backend failed: the deadline sweep of upstream "
            f"ws://{LOOPBACK}:9 failed: RuntimeError: injected sweeper failure") in relay.output


def test_without_a_failure_the_relay_serves_until_told_to_stop() -> None:
    upstream = ("--upstream", f"ws://{LOOPBACK}:9", "--upstream-timeout", "200ms")
    with child("", "--ping-interval", "100ms", *upstream) as relay:
        with session(relay):
            time.sleep(1.0)  # ten pings and twenty sweeps
            assert relay.proc.poll() is None, relay.output
        os.kill(relay.proc.pid, signal.SIGTERM)
        assert relay.exit_code() == 0, relay.output
    assert "flowrelay stopping: draining requests in flight" in relay.output
