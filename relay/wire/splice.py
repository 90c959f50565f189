"""An upstream Flow's answer, carried to a client of the same subprotocol as the bytes it came in.

The relay changes little in an answer it relays: the request id (the client's, where the link renamed it), its own
`gateway` route entry (first, as a Jina gateway puts its own), the upstream gateway's entry renamed `upstream`, and,
in json, the link's correlation parameter taken out. The documents, usually most of the answer, are not touched:
decoding them and encoding them again costs per document and changes nothing. So an answer is read as far as the
relay needs (request id, status, parameters in json, routes) and kept as the bytes it came in; when its client
speaks the same subprotocol, the door's encoder (`encode_response` of proto_codec or json_codec) writes it by
splicing the relay's parts into those bytes (`SplicedAnswer.encode`). A client of another subprotocol, or another
door, gets `SplicedAnswer.decode()`: the whole answer decoded, as before.

What the client reads is what the decode-and-encode path gives, field for field (tests/test_wire_splice.py):
bytes: a valid `DataRequestProto` (a message's fields are read in any order; the repeated `routes` keep theirs:
the relay's entry, then the upstream's), arrays of top-level documents marked `cls_name: numpy` as
`proto_codec.encode_response` marks them; json: the keys in a Jina gateway's order (`header`, `parameters`,
`routes`, `data`; in `header`: `request_id`, `status`, `exec_endpoint`, `target_executor`), as jina's own client
and the captured frames have them. An answer not in the shape a Jina gateway writes (fields out of place, unknown
fields, json keys in another order) is decoded and encoded as before instead.

Imports orjson, protobuf and relay.wire (json_codec, proto_codec, messages).
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.wire import json_codec, proto_codec
from relay.wire.documents import struct_to_dict
from relay.wire.errors import WireError
from relay.wire.messages import DataRequest, Route
from relay.wire.proto import jina_pb2

# The route entry a Jina gateway writes for itself, which the relay renames (its own comes first).
GATEWAY_EXECUTOR = "gateway"

_GATEWAY_EXECUTOR_FIELD = b"\x0a\x07gateway"  # RouteProto.executor = "gateway"
_NS = 1_000_000_000
# Top-level fields of jina.DataRequestProto (length-delimited, all of them) and of jina.HeaderProto.
_HEADER, _PARAMETERS, _ROUTES, _DATA = 1, 2, 3, 4
_TARGET_EXECUTOR_EMPTY = b"\x22\x00"  # header.target_executor = "": what a gateway answers, and the relay
_ROUTE_TAG = b"\x1a"
_DATA_TAG = b"\x22"
_JSON_DATA_KEY = b',"data":'
_JSON_HEAD_KEYS = ["header", "parameters", "routes"]


class SplicedAnswer:
    """What an upstream answer reader returns in `DataRequest.spliced`: `encode(req)` the answer to `req`'s client
    (the same subprotocol) spliced from the upstream's bytes, `decode()` the whole answer decoded instead."""

    __slots__ = ()
    subprotocol: str = ""

    def encode(self, req: DataRequest) -> bytes:
        raise NotImplementedError

    def decode(self) -> DataRequest:
        raise NotImplementedError


# ---- bytes (docarray < 0.30) ---------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it. Raises IndexError past the end."""
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + 1
        shift += 7


_SMALL = [bytes((n,)) for n in range(0x80)]


def _put_varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + _put_varint(len(payload)) + payload


def _fields(buf: bytes) -> list[tuple[int, int, int, int]] | None:
    """The length-delimited fields of a message: (number, field start, payload start, end); None if any field is
    of another wire type or runs past the end."""
    out = []
    pos, size = 0, len(buf)
    try:
        while pos < size:
            field_start = pos
            key, pos = _varint(buf, pos)
            if key & 7 != 2:
                return None
            length, pos = _varint(buf, pos)
            end = pos + length
            if end > size:
                return None
            out.append((key >> 3, field_start, pos, end))
            pos = end
    except IndexError:
        return None
    return out


_seconds_fields: dict[int, bytes] = {}


def _timestamp(ns: int) -> bytes:
    """A Timestamp's bytes (`ns` not negative); the seconds' part cached (the answers of one second share it)."""
    seconds, nanos = divmod(ns, _NS)
    out = _seconds_fields.get(seconds)
    if out is None:
        if len(_seconds_fields) > 64:
            _seconds_fields.clear()
        out = _seconds_fields[seconds] = b"\x08" + _put_varint(seconds) if seconds else b""
    return out + b"\x10" + _put_varint(nanos) if nanos else out


def route_field(route: Route) -> bytes:
    """One `routes` field (tag included) holding `route`, as `proto_codec` writes it."""
    if route.status is not None or (route.start_ns or 0) < 0 or (route.end_ns or 0) < 0:
        pb = jina_pb2.DataRequestProto()
        proto_codec._routes_to_proto([route], pb.routes)
        return _len_field(_ROUTE_TAG, pb.routes[0].SerializeToString())
    executor = route.executor.encode()
    out = b"\x0a" + _put_varint(len(executor)) + executor
    if route.start_ns is not None:
        out += _len_field(b"\x12", _timestamp(route.start_ns))
    if route.end_ns is not None:
        out += _len_field(b"\x1a", _timestamp(route.end_ns))
    return _len_field(_ROUTE_TAG, out)


def _renamed_route(payload: bytes, pb: jina_pb2.RouteProto, name: str) -> bytes:
    """A gateway's own route entry, as the field of one named `name`."""
    if payload.startswith(_GATEWAY_EXECUTOR_FIELD):  # the executor first, as every encoder writes it
        encoded = name.encode()
        rest = payload[len(_GATEWAY_EXECUTOR_FIELD):]
        return _len_field(_ROUTE_TAG, b"\x0a" + _put_varint(len(encoded)) + encoded + rest)
    pb.executor = name
    return _len_field(_ROUTE_TAG, pb.SerializeToString())


class ProtoAnswer(SplicedAnswer):
    """A bytes answer (docarray < 0.30), parsed (to read it) and in parts as it came: its header's status, its
    parameters, its routes (the gateway's renamed) and its documents."""

    subprotocol = proto_codec.SUBPROTOCOL
    __slots__ = ("_data", "_parameters", "_pb", "_routes", "_status")

    def __init__(self, pb: jina_pb2.DataRequestProto, status: bytes, parameters: bytes, routes: list[bytes],
                 data: bytes) -> None:
        self._pb = pb
        self._status = status
        self._parameters = parameters
        self._routes = routes
        self._data = data

    def encode(self, req: DataRequest) -> bytes:
        """The answer to `req`: its request id and endpoint in the header, its first route entry (the relay's own)
        before the upstream's; `req.routes[1:]` are the upstream's, as read."""
        rid = req.request_id.encode()
        header = b"\x0a" + _put_varint(len(rid)) + rid + self._status
        if req.exec_endpoint is not None:
            endpoint = req.exec_endpoint.encode()
            header += b"\x1a" + _put_varint(len(endpoint)) + endpoint
        header += _TARGET_EXECUTOR_EMPTY
        data = self._data
        content = self._pb.data
        # Arrays of top-level documents marked as `encode_response` marks them: the bytes as they came unless an
        # (older) gateway left one unmarked.
        if content.WhichOneof("documents") == "docs" and proto_codec.mark_numpy_proto(content.docs.docs):
            data = _len_field(_DATA_TAG, content.SerializeToString())
        return b"".join((b"\x0a", _put_varint(len(header)), header, self._parameters, route_field(req.routes[0]),
                         *self._routes, data))

    def decode(self) -> DataRequest:
        return _whole(self._pb)


def _envelope(pb: jina_pb2.DataRequestProto) -> DataRequest:
    """Request id, status and routes of an answer: what the relay reads of every answer."""
    h = pb.header
    resp = DataRequest(h.request_id)
    if h.HasField("status"):
        resp.status = proto_codec.from_status_proto(h.status)
    routes = resp.routes
    for r in pb.routes:
        # An unset Timestamp reads as 0 s 0 ns (no real stamp is the epoch itself); seconds and nanos read
        # directly, not through Timestamp's methods (a third of a route's cost).
        start, end = r.start_time, r.end_time
        routes.append(Route(
            r.executor,
            start.seconds * _NS + start.nanos or None,
            end.seconds * _NS + end.nanos or None,
            proto_codec.from_status_proto(r.status) if r.HasField("status") else None,
        ))
    return resp


def _whole(pb: jina_pb2.DataRequestProto) -> DataRequest:
    """An answer as the relay reads it for a client of another subprotocol: its envelope and parameters, the
    documents left in the parsed message (as `proto_codec.decode_lazy` leaves them)."""
    resp = _envelope(pb)
    if pb.HasField("parameters"):
        params = pb.parameters
        resp.parameters = struct_to_dict(params) if params.fields else {}
    data = pb.data
    which = data.WhichOneof("documents")
    if which == "docs":
        resp.raw, resp.raw_docs, resp.raw_parameters = pb, data.docs.docs, resp.parameters
    elif which == "docs_bytes":
        resp.docs_bytes = data.docs_bytes
    return resp


def read_proto_answer_whole(payload: bytes) -> DataRequest:
    """A bytes answer (docarray < 0.30) read as far as the relay uses it: id, status, parameters, routes; the
    documents stay in the parsed message. Raises MalformedPayload if unparsable."""
    return _whole(proto_codec.parse(payload))


def read_proto_answer(payload: bytes, gateway_renamed: str) -> DataRequest:
    """An upstream's bytes answer (docarray < 0.30) with `spliced` set: request id, status and routes read, the
    rest kept as it came; the gateway's route entry is spliced back as `gateway_renamed`. An answer not laid out
    as a gateway writes it (one header first, then parameters, routes and data, in that order) is read as
    `read_proto_answer_whole` reads it, without `spliced`. Raises MalformedPayload if unparsable."""
    pb = proto_codec.parse(payload)
    fields = _fields(payload)
    numbers = [f[0] for f in fields] if fields else []
    if (fields is None or numbers[:1] != [_HEADER] or numbers.count(_HEADER) > 1 or numbers != sorted(numbers)
            or numbers[-1] > _DATA):
        return _whole(pb)
    resp = _envelope(pb)
    header = pb.header
    status = _len_field(b"\x12", header.status.SerializeToString()) if header.HasField("status") else b""
    spliced_routes = []
    params_start = params_end = data_start = len(payload)
    gateways = [r.executor == GATEWAY_EXECUTOR for r in resp.routes]
    for number, field_start, start, end in fields[1:]:
        if number == _PARAMETERS:
            params_start, params_end = min(params_start, field_start), end
        elif number == _ROUTES:
            if gateways[len(spliced_routes)]:
                spliced_routes.append(_renamed_route(payload[start:end], pb.routes[len(spliced_routes)],
                                                     gateway_renamed))
            else:
                spliced_routes.append(payload[field_start:end])
        elif data_start == len(payload):
            data_start = field_start
    resp.spliced = ProtoAnswer(pb, status, payload[params_start:params_end], spliced_routes, payload[data_start:])
    return resp


# ---- json ------------------------------------------------------------------------------------------


class JsonAnswer(SplicedAnswer):
    """A json answer in two parts: what comes before `data` (header, parameters, routes) read, `data` as it
    came."""

    subprotocol = json_codec.SUBPROTOCOL
    __slots__ = ("_data", "_drop", "_head", "_payload", "_rename")

    def __init__(self, payload: bytes, head: dict[str, Any], data: bytes, rename: str, drop: str) -> None:
        self._payload = payload
        self._head = head
        self._data = data
        self._rename = rename
        self._drop = drop

    def encode(self, req: DataRequest) -> bytes:
        """The answer to `req`: its request id and endpoint in the header, its first route entry (the relay's own)
        before the upstream's; the header's other keys, the parameters and the documents as the upstream wrote
        them."""
        head = self._head
        header = {**head["header"], "request_id": req.request_id, "target_executor": ""}
        if req.exec_endpoint is not None:
            header["exec_endpoint"] = req.exec_endpoint
        header = {k: header[k] for k in _header_order(header)}
        rename = self._rename
        routes = [json_codec.routes_to_json(req.routes[:1])[0]]
        for r in head["routes"]:
            routes.append({**r, "executor": rename} if r.get("executor") == GATEWAY_EXECUTOR else r)
        params = head["parameters"]
        out = orjson.dumps({"header": header, "parameters": params if params is not None else {}, "routes": routes})
        return out[:-1] + self._data

    def decode(self) -> DataRequest:
        return read_json_answer_whole(self._payload, self._drop)


# A gateway's header keys in its order (protobuf field order); any others after them.
_HEADER_KEYS = ("request_id", "status", "exec_endpoint", "target_executor")


def _header_order(header: dict[str, Any]) -> list[str]:
    keys = [k for k in _HEADER_KEYS if k in header]
    return keys + [k for k in header if k not in _HEADER_KEYS] if len(keys) != len(header) else keys


def read_json_answer_whole(payload: bytes | str, drop: str) -> DataRequest:
    """A json answer decoded whole (Documents and all), the parameter `drop` (already read) taken out."""
    resp = json_codec.decode_response(payload)
    if resp.parameters:
        resp.parameters.pop(drop, None)
    return resp


def read_json_answer(payload: bytes | str, gateway_renamed: str, drop: str) -> DataRequest:
    """An upstream's json answer with `spliced` set: header, parameters and routes read, `data` kept as bytes
    (its parameter `drop` goes when `parameters` loses it: the reader's caller takes it out); the gateway's
    route entry is spliced back as `gateway_renamed`. An answer whose keys are not a gateway's in a gateway's
    order is decoded whole instead (`json_codec.decode_response`, no `spliced`). Raises a WireError if it is not
    an answer."""
    if isinstance(payload, str):
        payload = payload.encode()
    # `,"data":` can only be a key (a quote after a comma opens a string, one before a colon closes a key), and
    # the part before it parses as an object with one closing brace only when the key is at the top level.
    cut = payload.find(_JSON_DATA_KEY)
    head = None
    if cut > 0 and payload[-1:] == b"}":
        try:
            head = orjson.loads(payload[:cut] + b"}")
        except orjson.JSONDecodeError:
            head = None
    if (not isinstance(head, dict) or list(head) != _JSON_HEAD_KEYS or not isinstance(head["header"], dict)
            or not isinstance(head["routes"], list) or not isinstance(head["parameters"], (dict, type(None)))):
        return json_codec.decode_response(payload)
    header = head["header"]
    try:
        routes = json_codec.routes_from_json(head["routes"])
    except WireError:
        return json_codec.decode_response(payload)
    resp = DataRequest(
        request_id=header.get("request_id") or "",
        exec_endpoint=header.get("exec_endpoint"),
        parameters=head["parameters"],
        routes=routes,
        status=json_codec._read_status(header.get("status")),
    )
    data = payload[cut:]
    if data == b',"data":null}':  # what the decode-and-encode path answers for no documents
        data = b',"data":[]}'
    resp.spliced = JsonAnswer(payload, head, data, gateway_renamed, drop)
    return resp
