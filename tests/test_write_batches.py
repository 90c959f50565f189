"""What one turn of the event loop writes, on both WebSocket shells (relay.common.writes): messages queued together
leave together, but in writes of at most 16 messages, so that a peer pipelining many requests starts on the first
ones while the rest are still being made (without the cut, the load engine and the relay took turns, each idle
while the other worked).

* the client shell (relay.common.ws_client): 40 messages sent from one callback reach a real server, in order,
  in three writes of 16, 16 and 8;
* the relay's listener: 40 requests that arrive in one TCP segment are answered, all of them, in writes of at
  most 16 answers, the first written before the last request is even read.

The writes are seen by wrapping the transport's `write` of a real connection; nothing here measures time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from relay_process import relay_in_process, ws_url
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from relay.common.frames import data_frame
from relay.common.writes import FLUSH_EVERY_MESSAGES
from relay.common.ws_client import MaskKeys, WsClient, open_ws

TIMEOUT_S = 20.0
MESSAGES = 40


def _spy_writes(transport: Any) -> list[bytes]:
    """Wrap `transport.write` to keep a copy of each write; returns the list the copies go to."""
    writes: list[bytes] = []
    write = transport.write

    def spied(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = spied
    return writes


def _frames_in(chunk: bytes, masked: bool) -> list[Frame]:
    """The whole frames one write carried."""
    reader = StreamReader()
    reader.feed_data(chunk)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=masked)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


def test_the_client_writes_a_turn_of_40_messages_in_batches_of_16() -> None:
    async def go() -> tuple[list[int], list[bytes]]:
        received: list[bytes] = []
        all_in = asyncio.Event()

        async def collect(ws: ServerConnection) -> None:
            async for message in ws:
                received.append(message)  # type: ignore[arg-type]
                if len(received) == MESSAGES:
                    all_in.set()

        async with serve(collect, "127.0.0.1", 0, compression=None) as server:
            url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
            client: WsClient = await open_ws(url, lambda m: None, lambda r: None, timeout_s=5.0)
            writes = _spy_writes(client.transport)
            for i in range(MESSAGES):  # one callback: one turn of the loop
                client.send(b"message %d" % i, text=False)
            await asyncio.wait_for(all_in.wait(), TIMEOUT_S)
            await client.close()
        per_write = [len(_frames_in(w, masked=True)) for w in writes if w]
        return per_write, received

    per_write, received = asyncio.run(go())
    assert received == [b"message %d" % i for i in range(MESSAGES)]
    assert per_write[:3] == [FLUSH_EVERY_MESSAGES, FLUSH_EVERY_MESSAGES, MESSAGES - 2 * FLUSH_EVERY_MESSAGES]


def test_the_relay_answers_40_requests_of_one_read_in_writes_of_at_most_16() -> None:
    async def go() -> tuple[list[int], list[bytes]]:
        answers: list[bytes] = []
        all_in = asyncio.Event()

        def on_answer(message: bytes) -> None:
            answers.append(message)
            if len(answers) == MESSAGES:
                all_in.set()

        async with relay_in_process("echo") as relay:
            client = await open_ws(ws_url(relay), on_answer, lambda r: None, subprotocol="json", timeout_s=5.0)
            (conn,) = [c for c in relay.connections if c.session is not None]
            writes = _spy_writes(conn.transport)
            keys = MaskKeys()
            frames = [data_frame(orjson.dumps({"data": [{"text": f"r{i}"}], "execEndpoint": "/"}), True, keys.next())
                      for i in range(MESSAGES)]
            assert client.transport is not None
            client.transport.write(b"".join(frames))  # one segment: the relay reads them all at once
            await asyncio.wait_for(all_in.wait(), TIMEOUT_S)
            await client.close()
        per_write = [sum(f.opcode is Opcode.TEXT for f in _frames_in(w, masked=False)) for w in writes]
        return per_write, answers

    per_write, answers = asyncio.run(go())
    assert [orjson.loads(a)["data"][0]["text"] for a in answers] == [f"r{i}" for i in range(MESSAGES)]
    assert sum(per_write) == MESSAGES
    assert max(per_write) <= FLUSH_EVERY_MESSAGES
    assert per_write[0] == FLUSH_EVERY_MESSAGES, "the first 16 answers leave before the rest of the read is handled"
