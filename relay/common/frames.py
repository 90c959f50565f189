"""Reading whole WebSocket data frames straight from the bytes a read brought, for both shells (the relay's
listener, relay.net.listener, and the client shell, relay.common.ws_client).

websockets' sans-I/O core parses every frame through a chain of generators, a `Frame` dataclass and an `Opcode`
enum lookup, a few microseconds a message, and more when the loop wakes with cold caches for a single answer.
Almost every frame of a pipelined connection is the simplest kind: one whole (FIN) text or binary message, no
extension, no reserved bit. `read_data_frames` reads those itself and stops at the first frame that is anything
else (a control frame, a fragment, a reserved bit, a wrong mask bit, a payload over the size limit): from there
the shell hands the bytes to websockets, which does the RFC 6455 work (pings answered, the closing handshake,
errors closed with their code), and takes over again once websockets stands between frames with nothing
buffered (`websockets_idle`). Nothing is ever parsed by both. The other way, `data_frame` writes such a frame,
masked as a client sends it or not as a server does.

Imports: the standard library and websockets (its C `apply_mask`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from websockets.frames import apply_mask
from websockets.protocol import Protocol, State

# A partial frame is kept (and joined with the next read) up to this size; a longer one is left to websockets,
# whose buffer grows without copying the whole of it again at every read.
PARTIAL_MAX_BYTES = 64 * 1024

# (payload, is_text) for each whole data message, in order.
MessageSink = Callable[[bytes, bool], None]

_pack = struct.pack


def data_frame(payload: bytes, text: bool, mask: bytes | None = None) -> bytes:
    """One whole (FIN) text or binary frame, no extension (RFC 6455 5.2): masked with `mask` as a client sends it,
    or unmasked (`mask` None) as a server does."""
    first = 0x81 if text else 0x82
    masked = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        header = _pack("!BB", first, masked | n)
    elif n < 0x10000:
        header = _pack("!BBH", first, masked | 126, n)
    else:
        header = _pack("!BBQ", first, masked | 127, n)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


def read_data_frames(buf: bytes, masked: bool, max_size: int | None, deliver: MessageSink) -> tuple[int, bool]:
    """Deliver the whole, final, plain data frames at the start of `buf` (client frames are `masked`, a server's
    are not); return where reading stopped, and whether it stopped at a frame left to websockets (True) rather
    than at the end of `buf` or inside an incomplete data frame (False)."""
    end = len(buf)
    at = 0
    header = 6 if masked else 2
    while end - at >= 2:
        first = buf[at]
        second = buf[at + 1]
        # FIN set, no reserved bit, opcode text (1) or binary (2); the mask bit as the side requires.
        if (first != 0x81 and first != 0x82) or bool(second & 0x80) != masked:
            return at, True
        length = second & 0x7F
        start = at + header
        if length == 126:
            start += 2
            if start > end:
                return at, False
            length = int.from_bytes(buf[at + 2 : at + 4], "big")
        elif length == 127:
            start += 8
            if start > end:
                return at, False
            length = int.from_bytes(buf[at + 2 : at + 10], "big")
        if max_size is not None and length > max_size:
            return at, True  # websockets closes with 1009
        stop = start + length
        if stop > end:
            return at, False
        payload = apply_mask(buf[start:stop], buf[start - 4:start]) if masked else buf[start:stop]
        deliver(payload, first == 0x81)
        at = stop
    return at, False


def websockets_idle(protocol: Protocol) -> bool:
    """Whether websockets' parser stands between two frames with nothing buffered, outside any fragmented message,
    on an open connection: then the next bytes may be read by `read_data_frames` again."""
    return (protocol.state is State.OPEN and not protocol.reader.buffer and protocol.current_size is None
            and not protocol.extensions)


def read_plain(partial: bytes, data: bytes, masked: bool, max_size: int | None,
               deliver: MessageSink) -> tuple[bytes, bytes | None]:
    """One read of a shell that reads data frames here: `partial` (the start of a frame the last read cut) and
    `data` read as far as `read_data_frames` can; returns what to keep for the next read, and the bytes websockets
    must read from here on (None while reading stays here)."""
    if partial:
        data = partial + data
    at, handover = read_data_frames(data, masked, max_size, deliver)
    if handover or len(data) - at > PARTIAL_MAX_BYTES:
        return b"", data[at:]
    return data[at:], None
