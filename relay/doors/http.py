"""The relay's HTTP door: the routes of a Jina HTTP gateway (JINA-WIRE.md §8.1) on the relay's own port.

The listener hands every plain HTTP request to `HttpDoor.handle`, which answers the ones it knows and returns
None for the others (the listener then answers 404):

* `POST /post` with a `JinaEndpointRequestModel` body (`data` as a list or `{"docs": [...]}` or absent,
  `execEndpoint`/`exec_endpoint` default `/`, `targetExecutor`, `parameters`); `POST /index`, `POST /search`,
  `PUT /update`, `DELETE /delete` with a `JinaRequestModel` body (the path is the endpoint). Each request is
  admitted as the WebSocket door admits one (a request id, a `gateway` route entry, ids for documents without
  one), run through the backend, and answered in the shape of Jina's `JinaResponseModel`: camelCase keys,
  nulls kept, timestamps as Python's isoformat (`...+00:00`), documents in `data` with snake_case keys.
  An Executor's error answers 200 with `header.status.code` 1, as Jina does; an unreachable upstream Flow
  (status exception `UpstreamError`) answers 503, like a Jina gateway's network error. A body that does not
  fit the model answers 422 with FastAPI's `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, and
  malformed JSON the same `json_invalid` error a Jina gateway gives. Other methods on these paths get 405
  (with `Allow`); HEAD is answered like GET on the GET routes.
* `GET /openapi.json`: an OpenAPI 3.1 document generated from the models in relay.doors.openapi;
  `GET /docs` (Swagger UI) and `GET /redoc` (Redoc), whose assets are served from `/docs-assets/...`
  (relay.doors.docs_ui): no CDN, nothing leaves the machine.
* CORS when `config.cors` is on (`--cors`, off by default, as Jina's): preflight `OPTIONS` is answered for any
  path, and the door's answers carry `Access-Control-Allow-Origin` (`*`, or the request's origin when
  `--allowed-origins` restricts them). No credentials are allowed: the relay uses none.

With `--auth-token`, the data routes want `Authorization: Bearer TOKEN` (or `?token=TOKEN`), as the listener's
other routes do; `is_public` tells the listener which requests need no token (preflights, the docs pages, their
assets, the schema). `with_cors` adds the CORS headers to the listener's own answers. Requests count in the
relay's counters and Prometheus metrics like WebSocket ones.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from relay.doors import docs_ui
from relay.doors.graphql.adapter import HttpDoorSeam
from relay.doors.graphql.door import GraphQLDoor
from relay.doors.openapi.document import openapi_document
from relay.doors.openapi.models import DATA_OPERATIONS, LISTENER_OPERATIONS, METRICS_OPERATION, Operation
from relay.doors.openapi.types import Model, validate
from relay.doors.static_assets import asset_response
from relay.net.http_types import HttpRequest, HttpResponse, is_json_media_type
from relay.wire.documents import Document, as_struct_values
from relay.wire.errors import BadRequest
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Route, Status, now_ns

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger("flowrelay.http")

TITLE = "flowrelay"
DESCRIPTION = (
    "A Jina-compatible gateway. These routes are those of a Jina 3.x HTTP gateway (docarray < 0.30): send "
    "documents with `POST /post` (any `execEndpoint`) or the CRUD routes, and get the Flow's answer in the "
    "shape of Jina's `JinaResponseModel`. The same port serves Jina's WebSocket protocol on `/`."
)
# Deeper JSON than this is refused (422) before it reaches the recursive readers and writers; orjson writes at
# most 254 levels, and a document nests two levels per `chunks`.
MAX_NESTING = 100
UPSTREAM_ERROR = "UpstreamError"
CORS_METHODS = ("DELETE", "GET", "OPTIONS", "POST", "PUT")
PUBLIC_PATHS = ("/openapi.json", "/docs", "/redoc")
CORS_MAX_AGE_S = 600

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpDoor:
    """Jina's HTTP gateway routes over a RelayServer's backend, counters and observer."""

    def __init__(self, server: RelayServer, title: str = TITLE, description: str = DESCRIPTION) -> None:
        self.server = server
        self.title = title
        self.description = description
        data = {op.path: op for op in DATA_OPERATIONS}
        self._routes: dict[str, dict[str, Handler]] = {
            path: {op.method.upper(): self._data_handler(op)} for path, op in data.items()
        }
        self._routes["/openapi.json"] = {"GET": self._openapi}
        self._routes["/docs"] = {"GET": self._docs}
        self._routes["/redoc"] = {"GET": self._redoc}
        self._openapi_body: bytes | None = None
        # /graphql and its GraphiQL files (relay.doors.graphql), on this door's lifecycle, CORS and limits.
        self.graphql = GraphQLDoor(HttpDoorSeam(self), title)

    @property
    def cors(self) -> bool:
        return bool(getattr(self.server.config, "cors", False))

    def _is_preflight(self, req: HttpRequest) -> bool:
        return (
            req.method.upper() == "OPTIONS"
            and self.cors
            and bool(req.header("origin"))
            and bool(req.header("access-control-request-method"))
        )

    def is_public(self, req: HttpRequest) -> bool:
        """Whether `req` is to reach the door even without the relay's token: CORS preflights (browsers send no
        credentials with them) and the docs (the pages, their assets and the schema hold no secret, and a page
        could not pass a token on to its own assets). The data routes check the token themselves."""
        path = req.path
        return (
            self._is_preflight(req)
            or path in PUBLIC_PATHS
            or path.startswith(docs_ui.ASSET_PREFIX)
            or self.graphql.is_public(req)
        )

    # ---- dispatch ------------------------------------------------------------------------------

    async def handle(self, req: HttpRequest) -> HttpResponse | None:
        """The answer to `req`, or None when the path is not one of the door's."""
        method = req.method.upper()
        if self._is_preflight(req):
            return self._preflight(req)
        if self.graphql.owns(req.path):
            return self.with_cors(req, await self.graphql.handle(req))
        methods = self._routes.get(req.path)
        if methods is not None:
            # HEAD is GET without the body (the listener leaves the body out), as Starlette answers it.
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                resp = HttpResponse.json(405, {"detail": "Method Not Allowed"}, [("allow", allow)])
            else:
                resp = await handler(req)
        elif req.path.startswith(docs_ui.ASSET_PREFIX):
            found = self._asset(req, req.path[len(docs_ui.ASSET_PREFIX) :], method)
            if found is None:
                return None
            resp = found
        else:
            return None
        return self.with_cors(req, resp)

    # ---- CORS ----------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.server.config.allowed_origins
        return not allowed or origin in allowed

    def _allow_origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.server.config.allowed_origins:
            return [("access-control-allow-origin", origin), ("vary", "Origin")]
        return [("access-control-allow-origin", "*")]

    def with_cors(self, req: HttpRequest, resp: HttpResponse) -> HttpResponse:
        """`resp` with the CORS headers `req` calls for (none when CORS is off or `req` has no Origin). The
        listener may pass its own answers (`/status`, `/dry_run`) through this too."""
        origin = req.header("origin")
        if self.cors and origin and self._origin_allowed(origin):
            if any(k.lower() == "access-control-allow-origin" for k, _ in resp.headers):
                return resp  # already decorated (the door's own answers): a browser refuses the header twice
            resp.headers.extend(self._allow_origin_headers(origin))
        return resp

    def _preflight(self, req: HttpRequest) -> HttpResponse:
        origin = req.header("origin") or ""
        method = (req.header("access-control-request-method") or "").upper()
        text = [("content-type", "text/plain; charset=utf-8")]
        if not self._origin_allowed(origin):
            return HttpResponse(400, text, b"Disallowed CORS origin")
        if method not in CORS_METHODS:
            return HttpResponse(400, text, b"Disallowed CORS method")
        headers = [
            *text,
            *self._allow_origin_headers(origin),
            ("access-control-allow-methods", ", ".join(CORS_METHODS)),
            ("access-control-max-age", str(CORS_MAX_AGE_S)),
        ]
        requested = req.header("access-control-request-headers")
        if requested:
            headers.append(("access-control-allow-headers", requested))
        return HttpResponse(200, headers, b"OK")

    # ---- docs ----------------------------------------------------------------------------------

    def openapi_document(self) -> dict[str, Any]:
        ops = [*DATA_OPERATIONS, *LISTENER_OPERATIONS]
        if "/metrics" in getattr(self.server, "extra_http", {}):
            ops.append(METRICS_OPERATION)
        return openapi_document(
            self.title, _version(), self.description, ops, auth=bool(self.server.config.auth_token)
        )

    async def _openapi(self, req: HttpRequest) -> HttpResponse:
        if self._openapi_body is None:
            self._openapi_body = orjson.dumps(self.openapi_document())
        return HttpResponse(200, [("content-type", "application/json")], self._openapi_body)

    def _page(self, body: bytes) -> HttpResponse:
        if not docs_ui.assets_installed():
            detail = "the docs pages need the drf-spectacular-sidecar package (pip install drf-spectacular-sidecar)"
            return HttpResponse.json(503, {"detail": detail})
        return HttpResponse(
            200,
            [
                ("content-type", "text/html; charset=utf-8"),
                ("content-security-policy", docs_ui.CONTENT_SECURITY_POLICY),
                ("x-content-type-options", "nosniff"),
            ],
            body,
        )

    async def _docs(self, req: HttpRequest) -> HttpResponse:
        return self._page(docs_ui.swagger_ui_page(self.title))

    async def _redoc(self, req: HttpRequest) -> HttpResponse:
        return self._page(docs_ui.redoc_page(self.title))

    def _asset(self, req: HttpRequest, name: str, method: str) -> HttpResponse | None:
        found = docs_ui.asset(name)
        if found is None:
            return None
        return asset_response(req, found, method)

    # ---- data requests -------------------------------------------------------------------------

    def _data_handler(self, op: Operation) -> Handler:
        model = op.request
        assert model is not None
        fixed_endpoint = None if op.path == "/post" else op.path

        async def handler(req: HttpRequest) -> HttpResponse:
            return await self._data(req, model, fixed_endpoint)

        return handler

    def _authorized(self, req: HttpRequest) -> bool:
        token = self.server.config.auth_token
        if not token:
            return True
        header = req.header("authorization") or ""
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
            return True
        return any(hmac.compare_digest(t, token) for t in parse_qs(req.query).get("token", []))

    async def _data(self, req: HttpRequest, model: Model, fixed_endpoint: str | None) -> HttpResponse:
        if not self._authorized(req):
            return HttpResponse.json(
                401,
                {"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"},
                [("www-authenticate", "Bearer")],
            )
        limit = self.server.config.max_message_size
        if limit and len(req.body) > limit:
            return HttpResponse.json(
                413, {"detail": f"request body of {len(req.body)} bytes exceeds the limit of {limit}"}
            )
        body, problem = read_json_body(req)
        if problem is not None:
            return problem
        cleaned, errors = validate(model, body)
        if errors or cleaned is None:
            return HttpResponse.json(422, {"detail": errors})
        try:
            data_request = build_request(cleaned, fixed_endpoint)
        except _DocumentError as exc:
            return HttpResponse.json(422, {"detail": [exc.detail]})
        return await self._run(data_request, len(req.body))

    async def _run(self, req: DataRequest, size: int) -> HttpResponse:
        """Admit `req` as the WebSocket door does, run it through the backend, answer it."""
        await self.execute(req, size)
        payload = orjson.dumps(response_dict(req))
        self.server.observer.bytes_out(len(payload))
        exc_info = req.status.exception if req.status is not None else None
        status = 503 if exc_info is not None and exc_info.name == UPSTREAM_ERROR else 200
        return HttpResponse(status, [("content-type", "application/json")], payload)

    async def execute(self, req: DataRequest, size: int, door: str = "http") -> None:
        """Admit `req` (`size` bytes in) as the WebSocket door does and run it through the backend: on return
        `req` is the answer. Counted in the relay's counters and metrics, under `door`."""
        server = self.server
        ids = server.ids
        req.request_id = ids.next()
        gateway = Route(server.config.name, now_ns())
        req.routes = [gateway]
        for doc in req.docs or ():
            if doc.id is None:
                doc.id = ids.next()
        stats = server.stats
        observer = server.observer
        stats.requests_total += 1
        stats.in_flight += 1
        observer.bytes_in(size)
        observer.request_started(req.exec_endpoint or "/")
        try:
            try:
                await server.chain.run(req)
            except Exception as exc:  # a bug in the relay: the client gets an error status, as on the gRPC door
                log.exception("request %s failed in the relay", req.request_id)
                text = f"{type(exc).__name__}: {exc}"
                req.status = Status(STATUS_ERROR, text, ExceptionInfo(type(exc).__name__, [text], executor="gateway"))
            req.target_executor = ""
        finally:
            # Also when the listener cancels the call (the client left): the counters stay balanced.
            gateway.end_ns = now_ns()
            stats.in_flight -= 1
            if req.is_error:
                stats.requests_failed += 1
            observer.request_finished(req, (gateway.end_ns - gateway.start_ns) / 1e9)  # type: ignore[operator]
            observer.door_request_finished(door, req)


# ---- request side --------------------------------------------------------------------------------


class _DocumentError(Exception):
    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail["msg"])
        self.detail = detail


def _unprocessable(errors: list[dict[str, Any]]) -> HttpResponse:
    return HttpResponse.json(422, {"detail": errors})


def read_json_body(req: HttpRequest) -> tuple[Any, HttpResponse | None]:
    """The request's JSON body, or a 422 answer, as FastAPI reads a body: JSON when the content type is absent
    or JSON; any other content type, an empty body or `null` is not the object the model wants."""
    content_type = req.header("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        return None, _unprocessable([{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}])
    raw = req.body
    if raw:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, _json_invalid(raw, exc)
    else:
        value = None
    if value is None:
        return None, _unprocessable([{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}])
    if _too_deep(value, MAX_NESTING):
        return None, _unprocessable(
            [{"loc": ["body"], "msg": f"JSON nested deeper than {MAX_NESTING} levels", "type": "value_error.nesting"}]
        )
    return value, None


def _json_invalid(raw: bytes, exc: orjson.JSONDecodeError) -> HttpResponse:
    """FastAPI's answer to a body that is not JSON, with the message and position of Python's json module
    (which a Jina gateway uses), or orjson's where the json module would have taken it (NaN, say)."""
    msg, pos = exc.msg, exc.pos
    try:
        json.loads(raw)
    except json.JSONDecodeError as std:
        msg, pos = std.msg, std.pos
    except (RecursionError, UnicodeDecodeError, ValueError):
        pass
    # The key order of FastAPI's answer: type, loc, msg, input, ctx.
    detail = {"type": "json_invalid", "loc": ["body", pos], "msg": "JSON decode error", "input": {}}
    detail["ctx"] = {"error": msg}
    return _unprocessable([detail])


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def build_request(cleaned: dict[str, Any], fixed_endpoint: str | None) -> DataRequest:
    """A DataRequest from a validated body (relay.validate). Raises _DocumentError (for a 422) when a
    document passes the model but not the wire layer's reader."""
    data = cleaned.get("data")
    loc: list[str | int] = ["body", "data"]
    if isinstance(data, dict):
        data = data.get("docs")
        loc.append("docs")
    docs: list[Document] | None = None
    if data is not None:
        docs = []
        for i, d in enumerate(data):
            try:
                docs.append(Document.from_json_dict(d))
            except BadRequest as exc:
                raise _DocumentError({"loc": [*loc, i], "msg": exc.reason, "type": "value_error"}) from None
    parameters = cleaned.get("parameters")
    endpoint = fixed_endpoint if fixed_endpoint is not None else cleaned.get("exec_endpoint")
    return DataRequest(
        exec_endpoint="/" if endpoint is None else endpoint,
        target_executor=cleaned.get("target_executor"),
        # As on a Jina gateway: parameters go through protobuf's Struct (numbers become floats); always present.
        parameters=as_struct_values(parameters) if parameters is not None else {},
        docs=docs,
    )


# ---- response side -------------------------------------------------------------------------------

_iso_prefix_cache: dict[int, str] = {}


def isoformat_utc(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as Python's `datetime.isoformat()` of a UTC datetime, as pydantic writes a
    Jina gateway's route times: `2026-11-26T21:23:40.739553+00:00`, without the fraction when it is zero."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    prefix = _iso_prefix_cache.get(seconds)
    if prefix is None:
        if len(_iso_prefix_cache) > 4096:
            _iso_prefix_cache.clear()
        t = time.gmtime(seconds)
        prefix = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        _iso_prefix_cache[seconds] = prefix
    micros = rest // 1000
    return f"{prefix}.{micros:06d}+00:00" if micros else f"{prefix}+00:00"


def status_dict(status: Status | None) -> dict[str, Any] | None:
    """A status as pydantic's StatusProto model writes it (every key present), or None when there is none."""
    if status is None or not (status.code or status.description or status.exception):
        return None
    exc = status.exception
    return {
        "code": status.code,
        "description": status.description,
        "exception": None
        if exc is None
        else {"name": exc.name, "args": list(exc.args), "stacks": list(exc.stacks), "executor": exc.executor},
    }


def response_dict(req: DataRequest) -> dict[str, Any]:
    """The answer in the shape of Jina's `JinaResponseModel` (camelCase, nulls kept, documents snake_case).

    One difference: a route whose Executor did not run (`targetExecutor` did not match) has `endTime` null,
    where a Jina gateway writes the local time of the answer without a time zone."""
    return {
        "header": {
            "requestId": req.request_id,
            "status": status_dict(req.status),
            "execEndpoint": req.exec_endpoint or "",
            "targetExecutor": req.target_executor or "",
        },
        "parameters": req.parameters if req.parameters is not None else {},
        "routes": [
            {
                "executor": r.executor,
                "startTime": isoformat_utc(r.start_ns),
                "endTime": isoformat_utc(r.end_ns),
                "status": status_dict(r.status),
            }
            for r in req.routes
        ],
        "data": [d.to_json_dict() for d in req.docs] if req.docs else [],
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flowrelay")
    except Exception:
        return "dev"
