"""A closed session is freed by reference counting alone, and an open one keeps little for the collector.

The relay freezes long-lived objects out of Python's full garbage collections (relay.common.gc_freeze); that is only
safe if nothing of a closed session waits for the collector: a frozen reference cycle is never freed. So these
tests open and close many sessions against an in-process relay with the collector disabled, in every way a
session ends (closed by the client, dropped with a TCP reset, closed by the relay after bad input, an answered
request then a close), and check that the number of objects the collector tracks comes back to what it was:
under uvloop (the relay's loop, the only one it freezes under) all of them; under asyncio's own loop, whose
socket transport is a reference cycle of its own, those of the relay, websockets and h11. The client is plain
blocking sockets in a worker thread, which allocates nothing that outlives a call.

They also check what an idle session holds: no h11 parser, no handshake request (websockets' parser generator
would keep it), and a bounded number of tracked objects per session.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gc
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from relay_process import relay_in_process
from upstream_helpers import bytes_request

from relay.common.gc_freeze import freeze_long_lived, safe_to_freeze
from relay.net.listener import RelayProtocol
from relay.server import RelayServer

SESSIONS = 60
# Tracked objects an idle echo session may hold on the relay's side: protocol, session, gateway logic,
# websockets' protocol, reader, parser generators, write/event lists, uuid, transport and socket. It was about
# 49 before the handshake state was dropped; a leak of one structure per session would show as many more.
MAX_TRACKED_PER_IDLE_SESSION = 25
REQUEST = bytes_request("r1", "hi")


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame, masked with a zero key (so the payload goes as is)."""
    n = len(payload)
    assert n < 126, "short frames only"
    head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    return head + b"\x00\x00\x00\x00" + payload


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _recv_to_eof(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def _open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bytes\r\n\r\n".encode()
    )
    head = _recv_until(sock, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:80]
    return sock


def _end(sock: socket.socket, how: str) -> None:
    if how == "client_close":
        sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
        _recv_to_eof(sock)
    elif how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "relay_close":
        sock.sendall(_frame(0x1, b"a text frame on a bytes connection"))  # the relay closes 1003
        assert sock.recv(65536)[:1] == b"\x88"  # its close frame
        sock.sendall(_frame(0x8, struct.pack("!H", 1003)))  # the client's answer ends the close handshake
        _recv_to_eof(sock)
    elif how == "request_then_close":
        sock.sendall(_frame(0x2, REQUEST))
        assert sock.recv(65536)  # the answer (or its start)
        sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
        _recv_to_eof(sock)
    elif how == "handshake_then_frame":
        # A frame in the same write as the handshake: fed to websockets after the handshake is released.
        sock.close()
        return
    sock.close()


def _client_round(port: int, n: int, how: str) -> None:
    if how == "handshake_then_frame":
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: bytes\r\n\r\n".encode() + _frame(0x2, REQUEST)
            )
            data = _recv_until(sock, b"\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 101"), data[:80]
            if len(data) <= data.index(b"\r\n\r\n") + 4:
                assert sock.recv(65536)  # the answer to the frame that came with the handshake
            sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
            _recv_to_eof(sock)
            sock.close()
        return
    socks = [_open(port) for _ in range(n)]
    for sock in socks:
        _end(sock, how)
    socks.clear()


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _loop_factories() -> list[Any]:
    # asyncio's own loop whatever the event loop policy (another test may have installed uvloop's).
    factories: list[Any] = [pytest.param(asyncio.SelectorEventLoop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return factories
    factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    return factories


def _ours() -> int:
    """Tracked objects of the relay's, websockets' or h11's types."""
    n = 0
    for o in gc.get_objects():
        module = vars(type(o)).get("__module__")
        if isinstance(module, str) and module.split(".")[0] in ("relay", "websockets", "h11"):
            n += 1
    return n


def _run(loop_factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> Any:
    loop = loop_factory()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))
    finally:
        loop.close()


async def _wait_closed(server: RelayServer) -> None:
    for _ in range(200):
        if not server.connections and server.gateway.stats.connections_open == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(server.connections)} connections still open")


@pytest.mark.parametrize("loop_factory", _loop_factories())
@pytest.mark.parametrize(
    "how", ["client_close", "reset", "relay_close", "request_then_close", "handshake_then_frame"]
)
def test_closed_sessions_leave_no_tracked_objects(loop_factory: Any, how: str) -> None:
    async def main() -> tuple[int, int, int, int]:
        async with relay_in_process("echo") as server:
            return await measure(server)

    async def measure(server: RelayServer) -> tuple[int, int, int, int]:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            # A warm-up round fills whatever caches a first session fills (loggers, codecs, free lists).
            await loop.run_in_executor(pool, _client_round, server.port, 3, how)
            await _wait_closed(server)
            with _collector_off():
                baseline, ours_before = len(gc.get_objects()), _ours()
                await loop.run_in_executor(pool, _client_round, server.port, SESSIONS, how)
                await _wait_closed(server)
                await asyncio.sleep(0.1)  # callbacks scheduled by the last connection_lost
                after, ours_after = len(gc.get_objects()), _ours()
            return baseline, after, ours_before, ours_after
        finally:
            pool.shutdown()

    baseline, after, ours_before, ours_after = _run(loop_factory, main())
    assert ours_after == ours_before, f"{ours_after - ours_before} relay/websockets/h11 objects left"
    loop = loop_factory()
    frozen_here = safe_to_freeze(loop)
    loop.close()
    if frozen_here:
        # Not one structure per session: a reference cycle left by each session would be a dozen objects or more.
        left = after - baseline
        assert left < SESSIONS // 3, f"{left} tracked objects left by {SESSIONS} closed sessions"


def test_freezes_only_under_uvloop() -> None:
    loop = asyncio.SelectorEventLoop()
    try:
        assert not safe_to_freeze(loop)
    finally:
        loop.close()
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert safe_to_freeze(loop)
    finally:
        loop.close()


@pytest.mark.parametrize("loop_factory", _loop_factories())
def test_idle_session_keeps_no_handshake_state(loop_factory: Any) -> None:
    async def main() -> tuple[int, list[RelayProtocol]]:
        async with relay_in_process("echo") as server:
            return await measure(server)

    async def measure(server: RelayServer) -> tuple[int, list[RelayProtocol]]:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        socks: list[socket.socket] = []
        try:
            socks.extend(await loop.run_in_executor(pool, lambda: [_open(server.port)]))
            await asyncio.sleep(0.1)
            with _collector_off():
                baseline = len(gc.get_objects())
                socks.extend(await loop.run_in_executor(pool, lambda: [_open(server.port) for _ in range(SESSIONS)]))
                for _ in range(100):
                    if server.gateway.stats.connections_open == SESSIONS + 1:
                        break
                    await asyncio.sleep(0.05)
                gc.collect(0)  # only what the client's calls left behind; the sessions are alive
                per_session = (len(gc.get_objects()) - baseline) / SESSIONS
            protos = list(server.connections)
            held = [p for p in protos if p._h11 is not None or p._raw is not None]
            assert not held, "an upgraded connection kept its HTTP parser or raw bytes"
            for proto in protos:
                ws = proto._ws
                assert ws is not None
                frame = ws.parser.gi_frame
                assert frame is not None and "request" not in frame.f_locals, "the handshake request is kept"
                assert "select_subprotocol" not in vars(ws)
            return round(per_session), protos
        finally:
            for s in socks:
                s.close()
            pool.shutdown()

    per_session, _ = _run(loop_factory, main())
    assert per_session <= MAX_TRACKED_PER_IDLE_SESSION


def test_freeze_after_many_sessions() -> None:
    """The freezer freezes at start and again once enough sessions were opened, not before."""
    opened = [0]

    async def main() -> list[int]:
        counts = []
        task = asyncio.create_task(freeze_long_lived(lambda: opened[0], after_sessions=10, interval_s=0.01))
        try:
            await asyncio.sleep(0.05)
            counts.append(gc.get_freeze_count())
            keep = [[object()] for _ in range(50)]  # tracked objects that live on, as a session's would
            opened[0] = 9
            await asyncio.sleep(0.05)
            counts.append(gc.get_freeze_count())
            opened[0] = 10
            await asyncio.sleep(0.05)
            counts.append(gc.get_freeze_count())
            del keep
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return counts

    gc.unfreeze()
    try:
        at_start, below, at_threshold = asyncio.run(main())
    finally:
        gc.unfreeze()
    assert at_start > 0
    # Frozen objects freed meanwhile leave the frozen count: compare with the 50 lists made in between.
    assert below < at_start + 50  # 9 sessions: not yet frozen
    assert at_threshold >= below + 50  # 10: the lists made meanwhile are frozen too
