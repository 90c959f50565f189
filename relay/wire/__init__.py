"""The wire layer: Jina 3.x WebSocket frames <-> request/response objects, with no I/O.

Everything here is pure: functions and small classes that turn bytes into messages and back, in the
manner of h11 and the sans-I/O core of python-websockets. The relay server, the load engine, ingestion
and the tests all share this one Document model and these two codecs. This package imports nothing
from the rest of the project.
"""

from relay.wire.documents import Document, NamedScore, NdArray
from relay.wire.errors import (
    BadRequest,
    FrameTooLarge,
    MalformedPayload,
    WireError,
    WrongFrameType,
)
from relay.wire.messages import END_OF_STREAM, DataRequest, EndOfStream, ExceptionInfo, Route, Status

__all__ = [
    "END_OF_STREAM",
    "BadRequest",
    "DataRequest",
    "Document",
    "EndOfStream",
    "ExceptionInfo",
    "FrameTooLarge",
    "MalformedPayload",
    "NamedScore",
    "NdArray",
    "Route",
    "Status",
    "WireError",
    "WrongFrameType",
]
