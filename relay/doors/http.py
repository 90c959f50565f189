"""The relay's HTTP door: every plain HTTP request on the relay's port, with the routes of a Jina HTTP gateway
(JINA-WIRE.md §8.1).

The listener hands each plain HTTP request to `HttpDoor.handle`, which always answers:

* `GET /` (a health check, open without the token), `GET /status`, `GET /dry_run` (as Jina's HTTP dry run: 200 either
  way, the status in the body), and extra GET routes the CLI adds (`/metrics`).
* `POST /post` with a `JinaEndpointRequestModel` body (`data` as a list or `{"docs": [...]}` or absent,
  `execEndpoint`/`exec_endpoint` default `/`, `targetExecutor`, `parameters`); `POST /index`, `POST /search`,
  `PUT /update`, `DELETE /delete` with a `JinaRequestModel` body (the path is the endpoint). Each request goes
  through the gateway's lifecycle (relay.gateway: a request id, a `gateway` route entry, ids for documents
  without one, the backend, the counters) and is answered in the shape of Jina's `JinaResponseModel`:
  camelCase keys, nulls kept, timestamps as Python's isoformat (`...+00:00`), documents in `data` with
  snake_case keys. An Executor's error answers 200 with `header.status.code` 1, as Jina does; an unreachable
  upstream Flow (status exception `UpstreamError`) answers 503, like a Jina gateway's network error. A body
  that does not fit the model answers 422 with FastAPI's `{"detail": [{"loc": [...], "msg": ..., "type":
  ...}]}`, and malformed JSON the same `json_invalid` error a Jina gateway gives. Other methods on these paths
  get 405 (with `Allow`); HEAD is answered like GET on the GET routes. Other paths get 404.
* `GET /openapi.json`: an OpenAPI 3.1 document generated from the models in relay.doors.openapi;
  `GET /docs` (Swagger UI) and `GET /redoc` (Redoc), whose assets are served from `/docs-assets/...`
  (relay.doors.docs_ui, from the `flowrelay[docs]` extra): no CDN, nothing leaves the machine.
* CORS when `config.cors` is on (`--cors`, off by default, as Jina's): preflight `OPTIONS` is answered for any
  path, and every answer carries `Access-Control-Allow-Origin` (`*`, or the request's origin when
  `--allowed-origins` restricts them). No credentials are allowed: the relay uses none.

With `--auth-token`, everything but `/` and what `is_public` names (preflights, the docs pages, their assets,
the schema) wants `Authorization: Bearer TOKEN` (or `?token=TOKEN`), checked by the gateway. A request whose
client leaves before its answer is cancelled by the listener; the backend's answer is then counted and dropped.

Imports: orjson, relay.config, relay.doors (docs_ui, openapi), relay.gateway, relay.net.http_types, relay.wire.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from relay.doors import docs_ui
from relay.doors.graphql.adapter import GatewaySeam
from relay.doors.graphql.door import GraphQLDoor
from relay.doors.openapi.document import openapi_document
from relay.doors.openapi.models import DATA_OPERATIONS, LISTENER_OPERATIONS, METRICS_OPERATION, Operation
from relay.doors.openapi.types import Model, validate
from relay.doors.static_assets import asset_response
from relay.gateway import UNAUTHORIZED_DETAIL, Gateway, relay_version
from relay.net.http_types import HttpRequest, HttpResponse, is_json_media_type
from relay.observer import DOOR_HTTP
from relay.wire import json_codec
from relay.wire.documents import Document, as_struct_values
from relay.wire.errors import BadRequest
from relay.wire.messages import DataRequest, Status, format_isoformat

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
PUBLIC_PATHS = ("/", "/openapi.json", "/docs", "/redoc")
CORS_MAX_AGE_S = 600
DOCS_MISSING = "the docs pages need the docs extra: pip install 'flowrelay[docs]'"

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
# An extra GET route (`/metrics`, `/dashboard`): status, content type, body; or a whole response (a stream).
ExtraRoute = Callable[[], tuple[int, str, bytes] | HttpResponse]


def unauthorized() -> HttpResponse:
    """The answer to a request without the relay's token (a WebSocket handshake gets it too)."""
    return HttpResponse.json(401, {"detail": UNAUTHORIZED_DETAIL}, [("www-authenticate", "Bearer")])


class HttpDoor:
    """Plain HTTP on the relay's port: Jina's HTTP gateway routes over the gateway's backend and counters."""

    def __init__(self, gateway: Gateway, extra_routes: Mapping[str, ExtraRoute] | None = None,
                 title: str = TITLE, description: str = DESCRIPTION) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.title = title
        self.description = description
        self.extra_routes = dict(extra_routes or {})
        data = {op.path: op for op in DATA_OPERATIONS}
        self._routes: dict[str, dict[str, Handler]] = {
            path: {op.method.upper(): self._data_handler(op)} for path, op in data.items()
        }
        self._routes["/"] = {"GET": self._health}
        self._routes["/status"] = {"GET": self._status}
        self._routes["/dry_run"] = {"GET": self._dry_run}
        for path, extra in self.extra_routes.items():
            self._routes[path] = {"GET": _extra_handler(extra)}
        self._routes["/openapi.json"] = {"GET": self._openapi}
        self._routes["/docs"] = {"GET": self._docs}
        self._routes["/redoc"] = {"GET": self._redoc}
        self._openapi_body: bytes | None = None
        # /graphql and its GraphiQL files (relay.doors.graphql), on this door's gateway, CORS and limits.
        self.graphql = GraphQLDoor(GatewaySeam(gateway), title)

    @property
    def cors(self) -> bool:
        return self.config.cors

    def _is_preflight(self, req: HttpRequest) -> bool:
        return (
            req.method.upper() == "OPTIONS"
            and self.cors
            and bool(req.header("origin"))
            and bool(req.header("access-control-request-method"))
        )

    def is_public(self, req: HttpRequest) -> bool:
        """Whether `req` is to be answered even without the relay's token: the health check `/`, CORS preflights
        (browsers send no credentials with them) and the docs (the pages, their assets and the schema hold no
        secret, and a page could not pass a token on to its own assets)."""
        path = req.path
        return (
            self._is_preflight(req)
            or path in PUBLIC_PATHS
            or path.startswith(docs_ui.ASSET_PREFIX)
            # The GraphQL door checks the token itself, so that a refusal comes back in GraphQL's error shape.
            or self.graphql.is_public(req)
        )

    # ---- dispatch ------------------------------------------------------------------------------

    async def handle(self, req: HttpRequest) -> HttpResponse:
        """The answer to `req`, with the CORS headers it calls for."""
        return self.with_cors(req, await self._answer(req))

    async def _answer(self, req: HttpRequest) -> HttpResponse:
        method = req.method.upper()
        if self._is_preflight(req):
            return self._preflight(req)
        if self.graphql.owns(req.path):
            return await self.graphql.handle(req)
        if not self.is_public(req) and not self.gateway.authorized(req.header("authorization"), req.query):
            return unauthorized()
        methods = self._routes.get(req.path)
        if methods is not None:
            # HEAD is GET without the body (the listener leaves the body out), as Starlette answers it.
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                return HttpResponse.json(405, {"detail": "Method Not Allowed"}, [("allow", allow)])
            return await handler(req)
        if req.path.startswith(docs_ui.ASSET_PREFIX):
            found = self._asset(req, req.path[len(docs_ui.ASSET_PREFIX) :], method)
            if found is not None:
                return found
        return HttpResponse.json(404, {"detail": "Not Found"})

    async def _health(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, {})  # while the relay is up: no token needed

    async def _status(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self.gateway.status())

    async def _dry_run(self, req: HttpRequest) -> HttpResponse:
        # As Jina's HTTP dry run: 200 either way, the status in the body.
        status = await self.gateway.dry_run()
        body = json_codec.status_dict(status)
        return HttpResponse.json(
            200, {"code": status.code, "description": status.description, "exception": body.get("exception")}
        )

    # ---- CORS ----------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.config.allowed_origins
        return not allowed or origin in allowed

    def _allow_origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.config.allowed_origins:
            return [("access-control-allow-origin", origin), ("vary", "Origin")]
        return [("access-control-allow-origin", "*")]

    def with_cors(self, req: HttpRequest, resp: HttpResponse) -> HttpResponse:
        """`resp` with the CORS headers `req` calls for (none when CORS is off or `req` has no Origin)."""
        origin = req.header("origin")
        if self.cors and origin and self._origin_allowed(origin):
            if any(k.lower() == "access-control-allow-origin" for k, _ in resp.headers):
                return resp  # already decorated (a preflight's answer): a browser refuses the header twice
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
        if "/metrics" in self.extra_routes:
            ops.append(METRICS_OPERATION)
        return openapi_document(self.title, relay_version(), self.description, ops, auth=bool(self.config.auth_token))

    async def _openapi(self, req: HttpRequest) -> HttpResponse:
        if self._openapi_body is None:
            self._openapi_body = orjson.dumps(self.openapi_document())
        return HttpResponse(200, [("content-type", "application/json")], self._openapi_body)

    def _page(self, body: bytes) -> HttpResponse:
        if not docs_ui.assets_installed():
            return HttpResponse.json(503, {"detail": DOCS_MISSING})
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

    async def _data(self, req: HttpRequest, model: Model, fixed_endpoint: str | None) -> HttpResponse:
        limit = self.config.max_message_size
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
        gateway = self.gateway
        # `--record`: the recorder of the keep-alive connection the request came on (relay.capture.tap).
        capture = gateway.capture_http_connection(req.connection, encode_answer)
        # An HTTP client cannot choose the request id: the gateway makes one, as Jina's does.
        gateway.admit(data_request, len(req.body), False, capture, req.body)
        payload = await gateway.call(data_request, encode_answer, DOOR_HTTP, capture)
        if payload is None:
            return HttpResponse.json(500, {"detail": "the answer could not be encoded"})
        exc_info = data_request.status.exception if data_request.status is not None else None
        status = 503 if exc_info is not None and exc_info.name == UPSTREAM_ERROR else 200
        return HttpResponse(status, [("content-type", "application/json")], payload)


def _extra_handler(extra: ExtraRoute) -> Handler:
    async def handler(req: HttpRequest) -> HttpResponse:
        answer = extra()
        if isinstance(answer, HttpResponse):  # e.g. a stream (the dashboard's events)
            return answer
        code, content_type, payload = answer
        return HttpResponse(code, [("content-type", content_type)], payload)

    return handler


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
                "startTime": format_isoformat(r.start_ns),
                "endTime": format_isoformat(r.end_ns),
                "status": status_dict(r.status),
            }
            for r in req.routes
        ],
        "data": [d.to_json_dict() for d in req.docs] if req.docs else [],
    }



def encode_answer(req: DataRequest) -> bytes:
    """The door's answer body (relay.gateway.Encode)."""
    return orjson.dumps(response_dict(req))
