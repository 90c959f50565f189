"""Helpers for the live dashboards' tests: a `flowrelay load --dashboard` run in the background, and HTTP GETs.

    with LiveLoad(relay.url, "--rate", "200", "--duration", "12s") as run:
        run.url            # http://127.0.0.1:PORT/ (port 0 was asked: read from what the command prints)
        run.wait(60)       # its exit code

The run is stopped by its PID (SIGINT, then SIGKILL after a bound) if the test leaves before it ends.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from relay_process import flowrelay_command, relay_env

_DASHBOARD_AT = re.compile(r"dashboard at (http://\S+/)")
START_TIMEOUT_S = 30.0


class LiveLoad:
    """`flowrelay load TARGET --dashboard 127.0.0.1:0 ARGS...` running in the background."""

    def __init__(self, target: str, *args: str) -> None:
        cmd = [*flowrelay_command(), "load", target, "--dashboard", "127.0.0.1:0", "--quiet", *args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=relay_env())
        self.output: collections.deque[str] = collections.deque(maxlen=400)
        self._found = threading.Event()
        self.url = ""
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._found.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("flowrelay load printed no dashboard URL:\n" + "".join(self.output))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = _DASHBOARD_AT.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._found.set()

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def interrupt(self) -> None:
        """Ctrl-C: ends a linger at once."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> LiveLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> tuple[int, str, bytes]:
    """GET ``url``: status, content type, body (an HTTP error status is returned, not raised)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def wait_until(condition: Any, timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())
