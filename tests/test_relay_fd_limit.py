"""The relay at its file-descriptor limit: clients past it are refused at once, and the relay recovers.

Each test starts `flowrelay serve` with RLIMIT_NOFILE lowered, soft and hard (the relay raises its soft limit
to the hard one at start), opens WebSocket sessions until the limit bites, and shows what a client sees:
HTTP 503 "out of file descriptors" and a closed connection, not a connection left waiting in the listen
backlog. The relay logs the refusals as a warning (one line for a burst, not one per client), counts them
in /metrics (`flowrelay_relay_connections_refused_total{reason="fd_limit"}`), goes on serving the sessions
it holds, and accepts new clients once descriptors are free again. With `--max-connections` below the
limit, clients are refused by that limit first, with its own 503. Both event loops are covered: uvloop
(the default) and asyncio (FLOWRELAY_NO_UVLOOP=1).
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Callable
from typing import Any

import pytest
from metrics_helpers import scrape, value
from relay_process import LOOPBACK, RelayProcess, run_relay
from upstream_helpers import json_request, read_answers, relay_status, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

TIMEOUT_S = 60.0
# Long enough for a busy machine; a client left in the listen backlog would wait for ever.
OPEN_TIMEOUT_S = 15.0
PROBES = 5
REFUSED = "flowrelay_relay_connections_refused_total"
WARNING = "WARNING flowrelay.acceptor: refused"


def nofile_limit(n: int) -> Callable[[], None]:
    """For Popen's preexec_fn: soft and hard RLIMIT_NOFILE of the relay set to `n`."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return lower


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "asyncio":
        monkeypatch.setenv("FLOWRELAY_NO_UVLOOP", "1")
    else:
        pytest.importorskip("uvloop")
        monkeypatch.delenv("FLOWRELAY_NO_UVLOOP", raising=False)
    return str(request.param)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT_S))


async def open_session(url: str) -> ClientConnection:
    return await connect(url, subprotocols=["json"], open_timeout=OPEN_TIMEOUT_S, compression=None)


async def fill(url: str, at_most: int) -> tuple[list[ClientConnection], InvalidStatus]:
    """Open sessions until the relay refuses one; the sessions held and the refusal."""
    held: list[ClientConnection] = []
    for _ in range(at_most):
        try:
            held.append(await open_session(url))
        except InvalidStatus as exc:
            return held, exc
        except BaseException:
            await close_all(held)
            raise
    await close_all(held)
    raise AssertionError(f"{at_most} sessions were accepted: the limit never bit")


async def close_all(sessions: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in sessions), return_exceptions=True)


async def served(ws: ClientConnection, text: str) -> str:
    await ws.send(json_request(text))
    (resp,) = await read_answers(ws, 1, "json")
    return "".join(d.text or "" for d in resp.docs or [])


def probe(port: int) -> bytes:
    """Connect, send nothing, read until the relay closes: what a client past the limit is told."""
    with socket.create_connection((LOOPBACK, port), timeout=OPEN_TIMEOUT_S) as sock:
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


def warnings(relay: RelayProcess) -> list[str]:
    return [line for line in relay.output().splitlines() if WARNING in line]


def test_past_the_fd_limit_clients_are_refused_and_the_relay_recovers(event_loop_kind: str) -> None:
    limit = 64
    # --max-connections above what the limit allows: the relay says so at start, and the fd limit bites first.
    with run_relay("--max-connections", "1000", "-e", "upper", preexec_fn=nofile_limit(limit)) as relay:
        assert "--max-connections 1000 is above what the open-file limit allows" in relay.output()

        async def go() -> None:
            held, refusal = await fill(relay.url, limit)
            try:
                assert refusal.response.status_code == 503
                assert b"out of file descriptors (EMFILE, RLIMIT_NOFILE 64)" in (refusal.response.body or b"")
                assert len(held) > limit // 2, "most descriptors hold sessions"
                # Plain TCP clients past the limit are answered and closed too, not left in the backlog.
                for _ in range(PROBES):
                    answer = await asyncio.to_thread(probe, relay.port)
                    assert answer.startswith(b"HTTP/1.1 503 ")
                    assert b"out of file descriptors" in answer
                # The sessions inside are served all the while.
                assert await served(held[0], "inside") == "INSIDE"
                assert await served(held[-1], "last") == "LAST"
                # Descriptors freed: new clients are let in again, and the others still served.
                freed, held = held[:8], held[8:]
                await close_all(freed)
                await asyncio.to_thread(
                    wait_until, lambda: relay_status(relay)["envs"]["connections_open"] == str(len(held)), 20,
                    "the freed sessions to close",
                )
                fresh = await open_session(relay.url)
                held.append(fresh)
                assert await served(fresh, "new") == "NEW"
                assert await served(held[0], "again") == "AGAIN"
            finally:
                await close_all(held)

        run(go())
        _, samples = scrape(relay.port)
        assert value(samples, REFUSED, reason="fd_limit") == 1 + PROBES
        assert value(samples, REFUSED, reason="max_connections") == 0
        logged = warnings(relay)
        assert logged, relay.output()
        assert "refused 1 connection: out of file descriptors (EMFILE, RLIMIT_NOFILE 64)" in logged[0]
        assert len(logged) < 1 + PROBES, "a burst of refusals is one warning (and a summary), not one per client"
        # Not asyncio's own "socket.accept() out of system resource" error, once a second.
        assert "out of system resource" not in relay.output()


def test_max_connections_below_the_fd_limit_refuses_first() -> None:
    limit, cap = 128, 10
    with run_relay("--max-connections", str(cap), "-e", "upper", preexec_fn=nofile_limit(limit)) as relay:
        assert "is above what the open-file limit allows" not in relay.output()

        async def go() -> None:
            held, refusal = await fill(relay.url, limit)
            try:
                assert len(held) == cap
                assert refusal.response.status_code == 503
                assert f"connection limit reached ({cap})".encode() in (refusal.response.body or b"")
                assert await served(held[0], "inside") == "INSIDE"
            finally:
                await close_all(held)

        run(go())
        _, samples = scrape(relay.port)
        assert value(samples, REFUSED, reason="max_connections") == 1
        assert value(samples, REFUSED, reason="fd_limit") == 0
        assert not warnings(relay)
