"""The `json` subprotocol: one TEXT frame is one request, one TEXT frame comes back per request.

Requests are read as a Jina gateway's `JinaEndpointRequestModel` reads them (camelCase or snake_case
keys, `data` as a list or as `{"docs": [...]}`, unknown keys ignored, `execEndpoint` defaulting to
`/`); a request without `data` is taken as `data: null` instead of killing the connection. Responses
are written in the shape of `DataRequest.to_dict()` on a real gateway: snake_case keys, proto3
defaults omitted (no `header.status` on success, no `end_time` on an unfinished route), timestamps
in RFC 3339 UTC with `Z`, and every Document field present, nulls included. See JINA-WIRE.md §3.

The `encode_request`/`decode_response` pair is the client side, used by the load engine.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.wire.documents import Document, as_struct_values
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import (
    END_OF_STREAM,
    DataRequest,
    EndOfStream,
    ExceptionInfo,
    Route,
    Status,
    format_timestamp,
    parse_timestamp,
)

SUBPROTOCOL = "json"
END_OF_STREAM_FRAME = b"{}"


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _loads(payload: str | bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"invalid JSON: {exc}") from None


def _read_docs(data: Any) -> list[Document] | None:
    if data is None:
        return None
    if isinstance(data, dict):
        if "docs" not in data:
            raise BadRequest("'data' must be a list of documents or an object with a 'docs' list")
        data = data["docs"]
        if data is None:
            return None
    if not isinstance(data, list):
        raise BadRequest(f"'data' must be a list of documents, got {type(data).__name__}")
    return [Document.from_json_dict(d) for d in data]


def decode_request(payload: str | bytes) -> DataRequest | EndOfStream:
    """A client's TEXT frame as a request, or END_OF_STREAM for `{}`. Raises a WireError if bad."""
    obj = _loads(payload)
    if not isinstance(obj, dict):
        raise BadRequest(f"a request must be a JSON object, got {type(obj).__name__}")
    if not obj:
        return END_OF_STREAM
    endpoint = _field(obj, "execEndpoint", "exec_endpoint")
    if endpoint is None:
        endpoint = "/"
    elif not isinstance(endpoint, str):
        raise BadRequest("'execEndpoint' must be a string")
    target = _field(obj, "targetExecutor", "target_executor")
    if target is not None and not isinstance(target, str):
        raise BadRequest("'targetExecutor' must be a string")
    params = obj.get("parameters")
    if params is not None:
        if not isinstance(params, dict):
            raise BadRequest("'parameters' must be an object")
        params = as_struct_values(params)
    try:
        docs = _read_docs(obj.get("data"))
    except RecursionError:
        # chunks/matches nested hundreds deep: refuse them rather than let the recursion escape.
        raise BadRequest("documents are nested too deeply") from None
    return DataRequest(exec_endpoint=endpoint, target_executor=target, parameters=params, docs=docs)


def status_dict(status: Status) -> dict[str, Any]:
    # proto3 JSON mapping: default values are left out.
    out: dict[str, Any] = {}
    if status.code:
        out["code"] = status.code
    if status.description:
        out["description"] = status.description
    exc = status.exception
    if exc is not None:
        e: dict[str, Any] = {}
        if exc.name:
            e["name"] = exc.name
        if exc.args:
            e["args"] = exc.args
        if exc.stacks:
            e["stacks"] = exc.stacks
        if exc.executor:
            e["executor"] = exc.executor
        out["exception"] = e
    return out


def _route_dict(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"executor": route.executor}
    if route.start_ns is not None:
        out["start_time"] = format_timestamp(route.start_ns)
    if route.end_ns is not None:
        out["end_time"] = format_timestamp(route.end_ns)
    if route.status is not None:
        out["status"] = status_dict(route.status)
    return out


def routes_to_json(routes: list[Route]) -> list[dict[str, Any]]:
    """Routes as the json subprotocol writes them (`executor`, `start_time`, `end_time`, `status`)."""
    return [_route_dict(r) for r in routes]


def routes_from_json(items: list[Any]) -> list[Route]:
    """Routes written by `routes_to_json` (camelCase keys are read too). Raises BadRequest if malformed."""
    try:
        return [_read_route(r) for r in items]
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"malformed routes: {exc}") from None


def response_dict(resp: DataRequest) -> dict[str, Any]:
    """The response as the dict a gateway serialises (before JSON)."""
    header: dict[str, Any] = {"request_id": resp.request_id}
    if resp.status is not None and (resp.status.code or resp.status.description or resp.status.exception):
        header["status"] = status_dict(resp.status)
    if resp.exec_endpoint is not None:
        header["exec_endpoint"] = resp.exec_endpoint
    if resp.target_executor is not None:
        header["target_executor"] = resp.target_executor
    return {
        "header": header,
        "parameters": resp.parameters if resp.parameters is not None else {},
        "routes": [_route_dict(r) for r in resp.routes],
        "data": [d.to_json_dict() for d in resp.docs] if resp.docs else [],
    }


def encode_response(resp: DataRequest) -> bytes:
    """UTF-8 JSON for one response TEXT frame. An upstream's json answer is spliced (`resp.spliced`,
    relay.wire.splice)."""
    spliced = resp.spliced
    if spliced is not None and spliced.subprotocol == SUBPROTOCOL:
        return spliced.encode(resp)  # type: ignore[no-any-return]
    return orjson.dumps(response_dict(resp))


# ---- client side -------------------------------------------------------------------------------


def encode_request(req: DataRequest) -> bytes:
    """UTF-8 JSON for one request TEXT frame. Always carries `data` (a gateway dies without it)."""
    obj: dict[str, Any] = {
        "data": [d.to_json_dict(full=False) for d in req.docs] if req.docs is not None else None,
        "execEndpoint": req.exec_endpoint or "/",
    }
    if req.target_executor is not None:
        obj["targetExecutor"] = req.target_executor
    if req.parameters is not None:
        obj["parameters"] = req.parameters
    return orjson.dumps(obj)


def _read_status(obj: Any) -> Status | None:
    if not isinstance(obj, dict):
        return None
    exc = obj.get("exception")
    info = None
    if isinstance(exc, dict):
        info = ExceptionInfo(
            name=exc.get("name", ""),
            args=list(exc.get("args") or []),
            stacks=list(exc.get("stacks") or []),
            executor=exc.get("executor", ""),
        )
    return Status(code=int(obj.get("code", 0)), description=obj.get("description", ""), exception=info)


def _read_route(obj: dict[str, Any]) -> Route:
    start = _field(obj, "startTime", "start_time")
    end = _field(obj, "endTime", "end_time")
    return Route(
        executor=obj.get("executor", ""),
        start_ns=parse_timestamp(start) if start else None,
        end_ns=parse_timestamp(end) if end else None,
        status=_read_status(obj.get("status")),
    )


def decode_response(payload: str | bytes) -> DataRequest:
    """A gateway's response frame (json mode; camelCase HTTP-style keys are read too)."""
    obj = _loads(payload)
    if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        raise BadRequest("a response must be a JSON object with a 'header'")
    header = obj["header"]
    return DataRequest(
        request_id=_field(header, "requestId", "request_id") or "",
        exec_endpoint=_field(header, "execEndpoint", "exec_endpoint"),
        target_executor=_field(header, "targetExecutor", "target_executor"),
        parameters=obj.get("parameters"),
        docs=_read_docs(obj.get("data")),
        routes=[_read_route(r) for r in obj.get("routes") or ()],
        status=_read_status(header.get("status")),
    )


def decode_response_envelope(payload: str | bytes) -> tuple[DataRequest, int]:
    """A response without building its Documents: the request with `docs` None, and the doc count.
    What a load generator needs per answer (id, parameters, status, routes), at a fraction of the cost."""
    obj = _loads(payload)
    if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        raise BadRequest("a response must be a JSON object with a 'header'")
    header = obj["header"]
    data = obj.get("data")
    if isinstance(data, dict):
        data = data.get("docs")
    req = DataRequest(
        request_id=_field(header, "requestId", "request_id") or "",
        exec_endpoint=_field(header, "execEndpoint", "exec_endpoint"),
        parameters=obj.get("parameters"),
        routes=[_read_route(r) for r in obj.get("routes") or ()],
        status=_read_status(header.get("status")),
    )
    return req, len(data) if isinstance(data, list) else 0
