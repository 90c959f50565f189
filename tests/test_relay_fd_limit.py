"""The relay at its file-descriptor limit: clients past it are refused at once, and the relay recovers.

Each test starts `flowrelay serve` with RLIMIT_NOFILE lowered, soft and hard (the relay raises its soft limit
to the hard one at start), opens WebSocket sessions until the limit bites, and shows what a client sees:
HTTP 503 "out of file descriptors" and a closed connection, not a connection left waiting in the listen
backlog. The relay logs the refusals as a warning (one line for a burst, not one per client), counts them
in /metrics (`flowrelay_relay_connections_refused_total{reason="fd_limit"}`), goes on serving the sessions
it holds, and accepts new clients once descriptors are free again. With `--max-connections` below the
limit, clients are refused by that limit first, with its own 503. Both event loops are covered: uvloop
(the default) and asyncio (FLOWRELAY_NO_UVLOOP=1).

The test's sessions are websockets' sans-I/O client on plain blocking sockets: websockets' asyncio client
(17.4) could fail its own handshake with an AssertionError (`assert self.close_deadline is None`) when the
relay answered 503 and closed at once, which is exactly the refusal these tests look for. Reading the
handshake's answer ourselves, a refusal is always seen as the HTTP response it is.
"""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Callable

import pytest
from metrics_helpers import scrape, value
from relay_process import LOOPBACK, RelayProcess, http_get, run_relay
from upstream_helpers import decode_answer, json_request, wait_until
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

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


class Session:
    """A json WebSocket session on a plain socket, driven by websockets' sans-I/O client."""

    def __init__(self, sock: socket.socket, ws: ClientProtocol) -> None:
        self.sock = sock
        self.ws = ws

    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def served(self, text: str) -> str:
        """Send one request, read its answer: the documents' text."""
        self.ws.send_text(json_request(text).encode())
        self._flush()
        while True:
            for event in self.ws.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    (resp,) = [decode_answer(event.data.decode(), "json")]
                    return "".join(d.text or "" for d in resp.docs or [])
            data = self.sock.recv(65536)
            assert data, "the relay closed the session"
            self.ws.receive_data(data)

    def close(self) -> None:
        """The closing handshake: our close frame, then the relay's and its end of the TCP connection."""
        with contextlib.suppress(OSError), self.sock:
            self.ws.send_close(1000)
            self._flush()
            while self.sock.recv(65536):
                pass


def open_session(port: int) -> Session | Response:
    """A session, or the HTTP response that refused the handshake (read whole: the relay closes after it)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=OPEN_TIMEOUT_S)
    ws = ClientProtocol(parse_uri(f"ws://{LOOPBACK}:{port}/"), subprotocols=[Subprotocol("json")], max_size=None)
    ws.send_request(ws.connect())
    session = Session(sock, ws)
    try:
        session._flush()
        while True:
            data = sock.recv(65536)
            if data:
                ws.receive_data(data)
            else:
                ws.receive_eof()
            for event in ws.events_received():
                if isinstance(event, Response):
                    if event.status_code == 101 and ws.state is State.OPEN:
                        return session
                    sock.close()
                    return event
            assert data, "the relay closed the connection without answering the handshake"
    except BaseException:
        sock.close()
        raise


def fill(port: int, at_most: int) -> tuple[list[Session], Response]:
    """Open sessions until the relay refuses one; the sessions held and the refusal."""
    held: list[Session] = []
    try:
        for _ in range(at_most):
            opened = open_session(port)
            if isinstance(opened, Response):
                return held, opened
            held.append(opened)
    except BaseException:
        close_all(held)
        raise
    close_all(held)
    raise AssertionError(f"{at_most} sessions were accepted: the limit never bit")


def close_all(sessions: list[Session]) -> None:
    for session in sessions:
        session.close()


def open_sessions(port: int) -> int | None:
    """The relay's count of open sessions (/status), or None while it cannot take even that request."""
    code, body = http_get(port, "/status")
    return int(body["envs"]["connections_open"]) if code == 200 else None


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

        held, refusal = fill(relay.port, limit)
        try:
            assert refusal.status_code == 503
            assert b"out of file descriptors (EMFILE, RLIMIT_NOFILE 64)" in (refusal.body or b"")
            assert len(held) > limit // 2, "most descriptors hold sessions"
            # Plain TCP clients past the limit are answered and closed too, not left in the backlog.
            for _ in range(PROBES):
                answer = probe(relay.port)
                assert answer.startswith(b"HTTP/1.1 503 ")
                assert b"out of file descriptors" in answer
            # The sessions inside are served all the while.
            assert held[0].served("inside") == "INSIDE"
            assert held[-1].served("last") == "LAST"
            # Descriptors freed: new clients are let in again, and the others still served.
            freed, held = held[:8], held[8:]
            close_all(freed)
            wait_until(lambda: open_sessions(relay.port) == len(held), 20, "the freed sessions to close")
            fresh = open_session(relay.port)
            assert isinstance(fresh, Session), f"refused once descriptors were free: {fresh}"
            held.append(fresh)
            assert fresh.served("new") == "NEW"
            assert held[0].served("again") == "AGAIN"
        finally:
            close_all(held)
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

        held, refusal = fill(relay.port, limit)
        try:
            assert len(held) == cap
            assert refusal.status_code == 503
            assert f"connection limit reached ({cap})".encode() in (refusal.body or b"")
            assert held[0].served("inside") == "INSIDE"
        finally:
            close_all(held)
        _, samples = scrape(relay.port)
        assert value(samples, REFUSED, reason="max_connections") == 1
        assert value(samples, REFUSED, reason="fd_limit") == 0
        assert not warnings(relay)
