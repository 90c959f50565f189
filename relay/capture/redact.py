"""Redaction: chosen fields of every document (and of `parameters`) replaced by a keyed hash of the same length.

`--record-redact tags.email,text` names fields by their path in a document: `text`, `uri`, `id`, `tags.email`,
`tags.user.name` (into nested tags); `parameters.token` names a request parameter. Chunks and matches are
documents too and are redacted alike. A string becomes as many hex characters (so a length check or a column
width in the Flow sees what it saw), bytes (`blob`) as many bytes; any other value (a number, a list, ...)
becomes a string of its JSON text's length. The hash is SHAKE-256 under a key drawn for each recording and
written nowhere: equal values stay equal within a recording (a cache or a join in the Flow behaves as it did),
and a hash cannot be looked up in a table of, say, known e-mail addresses.

Both subprotocols' bodies are redacted: JSON (WebSocket json frames, HTTP bodies) and DataRequestProto (WebSocket
bytes frames, gRPC); requests and the answers recorded with them alike (an answer carries its documents back), so
a redacted `id` hashes the same in both and a replay still compares answers' ids with the recorded ones.

Pure: no I/O. Imports: the standard library, orjson, relay.wire.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from relay.wire.proto import docarray_pb2, jina_pb2

PARAMETERS = "parameters"
TAGS = "tags"
# DocumentProto's text and bytes fields: what a path's first part may name besides `tags`.
_STRING_FIELDS = frozenset(
    f.name for f in docarray_pb2.DocumentProto.DESCRIPTOR.fields if f.type == f.TYPE_STRING
)
_BYTES_FIELDS = frozenset(f.name for f in docarray_pb2.DocumentProto.DESCRIPTOR.fields if f.type == f.TYPE_BYTES)
_NESTED = ("chunks", "matches")


class RedactError(ValueError):
    """A field path that cannot be redacted; the message says which and why."""


def parse_fields(spec: str | Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """`tags.email,text` as paths; raises RedactError for a path that names no text, bytes or tags field."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[tuple[str, ...]] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        parts = tuple(item.split("."))
        if any(not p for p in parts):
            raise RedactError(f"redact field {item!r}: empty part in the path")
        head = parts[0]
        if head in (TAGS, PARAMETERS):
            if len(parts) < 2:
                raise RedactError(f"redact field {item!r}: name a key inside {head}, e.g. {head}.email")
        elif len(parts) > 1 or head not in _STRING_FIELDS | _BYTES_FIELDS:
            known = ", ".join(sorted(_STRING_FIELDS | _BYTES_FIELDS))
            raise RedactError(f"redact field {item!r}: a document's text or bytes field ({known}), "
                              "tags.KEY or parameters.KEY")
        paths.append(parts)
    if not paths:
        raise RedactError("no field to redact given")
    return tuple(paths)


class Redactor:
    """Replaces the values at `paths` (see `parse_fields`) in request and answer bodies."""

    def __init__(self, paths: Sequence[tuple[str, ...]], key: bytes | None = None) -> None:
        self.paths = tuple(paths)
        self._key = key if key is not None else os.urandom(16)
        self._doc_paths = tuple(p for p in self.paths if p[0] != PARAMETERS)
        self._param_paths = tuple(p[1:] for p in self.paths if p[0] == PARAMETERS)
        self.failures = 0  # bodies that could not be parsed: recorded empty rather than unredacted

    @property
    def fields(self) -> list[str]:
        return [".".join(p) for p in self.paths]

    # ---- values --------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        n = len(value)
        return hashlib.shake_256(self._key + value.encode("utf-8", "surrogatepass")).hexdigest((n + 1) // 2)[:n]

    def blob(self, value: bytes) -> bytes:
        return hashlib.shake_256(self._key + value).digest(len(value))

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.blob(value)
        return self.text(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode())

    # ---- bodies --------------------------------------------------------------------------------

    def body(self, body: bytes | str, codec: str) -> bytes | str:
        """A request or answer body (`codec` `json` or `bytes`) with the fields redacted; empty if it cannot be
        parsed."""
        try:
            if codec == "bytes":
                return self._proto_body(body if isinstance(body, bytes) else body.encode())
            out = self._json_body(body)
        except (orjson.JSONDecodeError, DecodeError, TypeError, ValueError):
            self.failures += 1
            return b"" if isinstance(body, bytes) else ""
        return out if isinstance(body, bytes) else out.decode()

    def _json_body(self, body: bytes | str) -> bytes:
        obj = orjson.loads(body)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        data = obj.get("data")
        if isinstance(data, dict):
            data = data.get("docs")
        if isinstance(data, list):
            self._json_docs(data)
        params = obj.get(PARAMETERS)
        if isinstance(params, dict):
            for path in self._param_paths:
                self._json_path(params, path)
        return orjson.dumps(obj)

    def _json_docs(self, docs: Iterable[Any]) -> None:
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            for path in self._doc_paths:
                self._json_path(doc, path)
            for name in _NESTED:
                children = doc.get(name)
                if isinstance(children, list):
                    self._json_docs(children)

    def _json_path(self, obj: dict[str, Any], path: tuple[str, ...]) -> None:
        for part in path[:-1]:
            inner = obj.get(part)
            if not isinstance(inner, dict):
                return
            obj = inner
        last = path[-1]
        value = obj.get(last)
        if value is not None:
            obj[last] = self.value(value)

    def _proto_body(self, body: bytes) -> bytes:
        pb = jina_pb2.DataRequestProto()
        pb.ParseFromString(body)
        if pb.data.WhichOneof("documents") == "docs":
            self._proto_docs(pb.data.docs.docs)
        if pb.HasField(PARAMETERS):
            for path in self._param_paths:
                self._struct_path(pb.parameters, path)
        return pb.SerializeToString()

    def _proto_docs(self, docs: Iterable[Any]) -> None:
        for doc in docs:
            for path in self._doc_paths:
                head = path[0]
                if head == TAGS:
                    if doc.HasField(TAGS):
                        self._struct_path(doc.tags, path[1:])
                elif head in _BYTES_FIELDS:
                    value = getattr(doc, head)
                    if value:
                        setattr(doc, head, self.blob(value))
                else:
                    value = getattr(doc, head)
                    if value:
                        setattr(doc, head, self.text(value))
            for name in _NESTED:
                self._proto_docs(getattr(doc, name))

    def _struct_path(self, struct: Any, path: tuple[str, ...]) -> None:
        for part in path[:-1]:
            if part not in struct.fields or struct.fields[part].WhichOneof("kind") != "struct_value":
                return
            struct = struct.fields[part].struct_value
        last = path[-1]
        if last not in struct.fields:
            return
        value = struct[last]
        if value is None:
            return
        if not isinstance(value, str):
            value = _plain(value)
        struct[last] = self.value(value)


def _plain(value: Any) -> Any:
    """A Struct or ListValue as plain Python values (for the JSON text a non-string value is hashed from)."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value
