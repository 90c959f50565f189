"""Typed errors for bad input on the wire, each knowing the WebSocket close code that answers it.

A server's reply to any of these is one line: close with `err.close_code` and `err.reason`.
Reasons are kept within the 123 bytes a close frame allows.
"""

from __future__ import annotations

# RFC 6455 section 7.4.1
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

MAX_REASON_BYTES = 123


def clip_reason(reason: str) -> str:
    """Shorten `reason` to what fits in a close frame, on a UTF-8 character boundary."""
    raw = reason.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return reason
    return raw[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


class WireError(Exception):
    """Input that breaks the protocol. The connection is closed with `close_code` and `reason`."""

    close_code: int = CLOSE_INVALID_PAYLOAD

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = clip_reason(reason)


class MalformedPayload(WireError):
    """The frame is not valid JSON, or not a parsable DataRequestProto (close 1007)."""

    close_code = CLOSE_INVALID_PAYLOAD


class BadRequest(WireError):
    """The frame parses but is not a valid request: wrong types, not an object (close 1007)."""

    close_code = CLOSE_INVALID_PAYLOAD


class WrongFrameType(WireError):
    """A binary frame on a json connection, or a text frame on a bytes connection (close 1003)."""

    close_code = CLOSE_UNSUPPORTED_DATA


class FrameTooLarge(WireError):
    """A message larger than the configured maximum (close 1009)."""

    close_code = CLOSE_MESSAGE_TOO_BIG
