"""Serve the HTTP door on a free loopback port for tests that drive it from outside (curl, Chromium, schemathesis).

    with serve_http("-e", "upper", "--cors") as relay:
        ...  # relay.http_url, relay.port

The arguments are `flowrelay serve`'s. When `flowrelay serve` installs the door itself (its CLI wires
`HttpDoor`), this is the real command as a subprocess (tests/relay_process.run_relay). Until then it is the same
configuration built by the CLI's own parser, run in-process in a thread of its own: a RelayServer with its
listener, the Prometheus observer and `/metrics` as `flowrelay serve` sets them up, and `server.http_door =
HttpDoor(server)`; flags the parser does not know yet (`--cors`) are set on the config directly. Either way
the door is reached over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay_process import LOOPBACK, run_relay

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
_RELAY = Path(__file__).resolve().parents[1] / "relay"


def door_wired_in_cli() -> bool:
    """True once `flowrelay serve` installs the HTTP door itself."""
    return any("HttpDoor(" in (_RELAY / name).read_text() for name in ("cli.py", "server.py"))


@dataclass
class HttpRelay:
    port: int
    mode: str  # "serve" (a `flowrelay serve` subprocess) or "in-process"
    server: Any = None  # the RelayServer, in-process only

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/"


def _config_from_cli(args: tuple[str, ...]) -> tuple[Any, Any]:
    """The relay's configuration and backend, built by `flowrelay serve`'s own parser and checks."""
    from relay.cli import add_serve_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="flowrelay serve")
    add_serve_arguments(parser)
    ns, unknown = parser.parse_known_args(["--host", LOOPBACK, "--port", "0", *args])
    if set(unknown) - {"--cors"}:
        raise ValueError(f"unknown serve arguments: {unknown}")
    config, chain = config_from_args(ns)
    if "--cors" in args:
        config.cors = True  # until the CLI knows the flag
    config.ping_interval_s = None
    return config, chain


@contextlib.contextmanager
def _in_process(args: tuple[str, ...]) -> Iterator[HttpRelay]:
    from relay.http_door import HttpDoor
    from relay.metrics import RelayMetrics
    from relay.server import RelayServer

    config, chain = _config_from_cli(args)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        metrics = RelayMetrics()
        server = RelayServer(config, chain, observer=metrics)
        server.extra_http["/metrics"] = metrics.http_handler
        server.http_door = HttpDoor(server)
        stop = asyncio.Event()
        state["stop"] = stop
        try:
            await server.start()
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            raise
        state["server"] = server
        ready.set()
        try:
            await stop.wait()
        finally:
            await server.stop()

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(BaseException):
            loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="http-door-relay", daemon=True)
    thread.start()
    if not ready.wait(START_TIMEOUT_S) or "server" not in state:
        raise RuntimeError(f"in-process relay did not start: {state.get('error')!r}")
    server = state["server"]
    try:
        yield HttpRelay(server.port, "in-process", server)
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(STOP_TIMEOUT_S)


@contextlib.contextmanager
def serve_http(*args: str) -> Iterator[HttpRelay]:
    """The door behind a relay configured by `flowrelay serve ARGS`, on 127.0.0.1 and a free port."""
    if door_wired_in_cli():
        with run_relay(*args) as proc:
            yield HttpRelay(proc.port, "serve")
    else:
        with _in_process(args) as relay:
            yield relay
