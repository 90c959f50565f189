"""The WebSocket client shell both halves run on (relay.common.ws_client), against real servers on 127.0.0.1: how a
connection ends (one behaviour for the load sessions and the upstream links), and how a refused handshake reads.

* a normal close: the closing handshake, `on_end("close 1000")` once;
* a server that closes first, with a code and reason: `on_end("close 1011: ...")` once, and `send` says no;
* a server that answers the handshake and then ignores everything, the close frame included: `close()` still
  returns, the connection cut off at the bound, `on_end("close 1006")` once;
* a refusal: ConnectFailed with the HTTP status;
* data frames, which the shell frames itself: websockets reads them back as sent, whatever their length; their
  masking keys do not repeat, and a forked process draws its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from frame_cuts import CUT_STYLES, cut_points
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from relay.common.frames import data_frame
from relay.common.ws_client import CLOSE_TIMEOUT_S, ConnectFailed, MaskKeys, WsClient, open_ws

# A bound for each scenario well past CLOSE_TIMEOUT_S: only a close that never returns trips it.
SCENARIO_BOUND_S = CLOSE_TIMEOUT_S + 10.0


@contextlib.asynccontextmanager
async def websocket_server(handler: Any, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None, **kwargs) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


class _DeafServer(asyncio.Protocol):
    """Completes the opening handshake, then reads and ignores everything: it never answers a close frame and
    never closes TCP."""

    def __init__(self, seen_end: asyncio.Event) -> None:
        self.protocol = ServerProtocol()
        self.seen_end = seen_end
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.open:
            return
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            self.protocol.send_response(self.protocol.accept(event))  # type: ignore[arg-type]
            assert self.transport is not None
            self.transport.write(b"".join(self.protocol.data_to_send()))
            self.open = True

    def eof_received(self) -> bool:
        self.seen_end.set()  # the client has closed its side
        return True  # and ours stays open: deaf to that too

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen_end.set()


async def _opened(url: str, ends: list[str], messages: list[bytes] | None = None) -> WsClient:
    return await open_ws(url, (messages if messages is not None else []).append, ends.append, timeout_s=5.0)


def test_a_normal_close_ends_with_the_closing_handshake() -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def go() -> tuple[list[str], list[bytes]]:
        ends: list[str] = []
        messages: list[bytes] = []
        async with websocket_server(echo) as url:
            client = await _opened(url, ends, messages)
            assert client.send(b"hello", text=False)
            while not messages:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(client.close(), SCENARIO_BOUND_S)
        return ends, messages

    ends, messages = asyncio.run(go())
    assert messages == [b"hello"]
    assert ends == ["close 1000"], "on_end once, with the server's echo of our close"


def test_a_server_that_closes_first_is_reported_with_its_code_and_reason() -> None:
    async def closer(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(1011, "flow crashed")

    async def go() -> tuple[list[str], bool]:
        ends: list[str] = []
        async with websocket_server(closer) as url:
            client = await _opened(url, ends)
            client.send(b"x", text=False)
            while not ends:
                await asyncio.sleep(0.01)
            sent_after = client.send(b"y", text=False)
            await asyncio.wait_for(client.close(), SCENARIO_BOUND_S)  # a no-op once it ended
        return ends, sent_after

    ends, sent_after = asyncio.run(go())
    assert ends == ["close 1011: flow crashed"]
    assert sent_after is False


def test_a_server_deaf_to_the_close_is_cut_off_at_the_bound() -> None:
    async def go() -> tuple[list[str], bool]:
        seen_end = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _DeafServer(seen_end), "127.0.0.1", 0)
        try:
            ends: list[str] = []
            client = await _opened(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", ends)
            await asyncio.wait_for(client.close(), SCENARIO_BOUND_S)
            await asyncio.wait_for(seen_end.wait(), SCENARIO_BOUND_S)
            return ends, client.ended
        finally:
            server.close()

    ends, ended = asyncio.run(go())
    assert ended
    assert ends == ["close 1006"], "no close frame came back"


def test_a_refused_handshake_carries_its_status() -> None:
    async def never(ws: ServerConnection) -> None:
        await ws.wait_closed()

    def refuse(conn: ServerConnection, _request: Any) -> Any:
        return conn.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def go() -> ConnectFailed:
        async with websocket_server(never, process_request=refuse) as url:
            with pytest.raises(ConnectFailed) as info:
                await open_ws(url, lambda m: None, lambda r: None, timeout_s=5.0)
        return info.value

    refused = asyncio.run(go())
    assert refused.status == 403
    assert "HTTP 403" in str(refused)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("masked", [True, False], ids=["client", "server"])
def test_data_frames_framed_here_read_back_as_websockets_reads_them(size: int, text: bool, masked: bool) -> None:
    payload = bytes(i % 251 for i in range(size)) if not text else b"x" * size
    frame = data_frame(payload, text, MaskKeys().next() if masked else None)
    reader = StreamReader()
    reader.feed_data(frame)
    parser = Frame.parse(reader.read_exact, mask=masked)
    with pytest.raises(StopIteration) as done:
        next(parser)
    parsed = done.value.value
    assert parsed.opcode is (Opcode.TEXT if text else Opcode.BINARY)
    assert parsed.fin and parsed.data == payload


def test_masking_keys_differ_from_frame_to_frame_and_in_a_forked_process() -> None:
    keys = MaskKeys()
    drawn = [keys.next() for _ in range(3000)]  # across several draws from os.urandom
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) > 2990, "keys repeat no more than chance allows"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, keys.next())
        os._exit(0)
    os.waitpid(pid, 0)
    child_key = os.read(read_end, 4)
    os.close(read_end)
    os.close(write_end)
    assert child_key != keys.next(), "a forked process does not reuse its parent's keys"


class _ScriptedServer(asyncio.Protocol):
    """Completes the opening handshake, then writes `stream` (raw frames) in the pieces `cuts` makes of it, one write
    per loop turn with a pause between, so that the client reads it in those pieces; keeps what the client sends."""

    def __init__(self, stream: bytes, cuts: list[int], received: asyncio.Queue[Frame]) -> None:
        self.protocol = ServerProtocol()
        self.stream, self.cuts, self.received = stream, cuts, received
        self.transport: asyncio.Transport | None = None
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(0)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if not self.open:
                self.protocol.send_response(self.protocol.accept(event))  # type: ignore[arg-type]
                assert self.transport is not None
                self.transport.write(b"".join(self.protocol.data_to_send()))
                self.open = True
                asyncio.get_running_loop().create_task(self._write_in_pieces())
            else:
                self.received.put_nowait(event)  # type: ignore[arg-type]
                assert self.transport is not None
                self.transport.write(b"".join(self.protocol.data_to_send()))  # pongs, and the close answered

    async def _write_in_pieces(self) -> None:
        assert self.transport is not None
        at = 0
        for cut in [*self.cuts, len(self.stream)]:
            await asyncio.sleep(0.005)  # the first after the handshake's answer too: each piece is a read of its own
            self.transport.write(self.stream[at:cut])
            at = cut


def _server_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=False)


READ_SCRIPT = [
    _server_frame(Opcode.TEXT, b"first"),
    _server_frame(Opcode.BINARY, bytes(range(200))),
    _server_frame(Opcode.PING, b"are you there"),
    _server_frame(Opcode.TEXT, b"frag", fin=False),  # a fragmented message, a ping in the middle of it
    _server_frame(Opcode.PING, b"mid"),
    _server_frame(Opcode.CONT, b"men", fin=False),
    _server_frame(Opcode.CONT, b"ted"),
    _server_frame(Opcode.BINARY, b"\x00" * 70_000),  # a 64-bit length, longer than a read
    _server_frame(Opcode.TEXT, b""),
    _server_frame(Opcode.BINARY, b"\x01" * 126),  # a 16-bit length
    _server_frame(Opcode.TEXT, b"last"),
]
READ_EXPECTED = [b"first", bytes(range(200)), b"fragmented", b"\x00" * 70_000, b"", b"\x01" * 126, b"last"]


@pytest.mark.parametrize("cuts", CUT_STYLES)
def test_data_frames_read_in_any_pieces_with_control_frames_between(cuts: str) -> None:
    stream = b"".join(READ_SCRIPT)
    pieces = cut_points(READ_SCRIPT, cuts)

    async def go() -> tuple[list[bytes], list[Frame], list[str]]:
        received: asyncio.Queue[Frame] = asyncio.Queue()
        server = await asyncio.get_running_loop().create_server(
            lambda: _ScriptedServer(stream, pieces, received), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ends: list[str] = []
        messages: list[bytes] = []
        client = await _opened(f"ws://127.0.0.1:{port}", ends, messages)
        async with asyncio.timeout(SCENARIO_BOUND_S):
            while len(messages) < len(READ_EXPECTED):
                await asyncio.sleep(0.005)
            pongs = [await received.get() for _ in range(2)]
            await client.close()
        server.close()
        return messages, pongs, ends

    messages, pongs, ends = asyncio.run(go())
    assert messages == READ_EXPECTED
    assert [(p.opcode, p.data) for p in pongs] == [(Opcode.PONG, b"are you there"), (Opcode.PONG, b"mid")]
    assert ends == ["close 1000"], ends


def test_a_frame_over_the_size_limit_closes_with_1009_after_the_frames_before_it() -> None:
    stream = _server_frame(Opcode.TEXT, b"small") + _server_frame(Opcode.BINARY, b"\x00" * 5_000)

    async def go() -> tuple[list[bytes], list[str], list[Frame]]:
        received: asyncio.Queue[Frame] = asyncio.Queue()
        server = await asyncio.get_running_loop().create_server(
            lambda: _ScriptedServer(stream, [3], received), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ends: list[str] = []
        messages: list[bytes] = []
        await open_ws(f"ws://127.0.0.1:{port}", messages.append, ends.append, max_size=1_000, timeout_s=5.0)
        async with asyncio.timeout(SCENARIO_BOUND_S):
            close = await received.get()
            while not ends:
                await asyncio.sleep(0.01)
        server.close()
        return messages, ends, [close]

    messages, ends, (close,) = asyncio.run(go())
    assert messages == [b"small"]
    assert close.opcode is Opcode.CLOSE and close.data[:2] == (1009).to_bytes(2, "big")
    assert len(ends) == 1, ends  # reported once (websockets discards what follows its own 1009, the answer too)
