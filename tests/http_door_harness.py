"""Serve the HTTP door for tests that drive it from outside (curl, Chromium, schemathesis).

    with serve_http("-e", "upper", "--cors") as relay:
        ...  # relay.http_url, relay.port

The arguments are `flowrelay serve`'s: this is the real command as a subprocess on 127.0.0.1 and a free port
(tests/relay_process.run_relay), with the door installed by the CLI as for any user.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from relay_process import LOOPBACK, RelayProcess, run_relay


@dataclass
class HttpRelay:
    """Where an HTTP gateway listens (a relay, or a Jina Flow to compare with)."""

    port: int
    process: RelayProcess | None = None

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@contextlib.contextmanager
def serve_http(*args: str) -> Iterator[HttpRelay]:
    """`flowrelay serve ARGS` on 127.0.0.1 and a free port, stopped on exit."""
    with run_relay(*args) as proc:
        yield HttpRelay(proc.port, proc)
