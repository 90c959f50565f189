"""GraphQL over HTTP on the relay's port: `POST /graphql`, `GET /graphql`, GraphiQL and its files.

* `POST /graphql` with a JSON body `{"query", "variables", "operationName", "extensions"}` (content type JSON or
  absent), or the query itself with `Content-Type: application/graphql`.
* `GET /graphql?query=...&variables=...&operationName=...` runs a query; a mutation over GET answers 405 (GraphQL
  over HTTP: GET must not change anything). `GET /graphql` without `query` is the GraphiQL page, whose files are
  under `/graphql-assets/` (relay.doors.graphql.graphiql).
* Answers are `application/json` in GraphQL's response shape, 200 once the request is a GraphQL request (errors
  in the query or from the Flow are in `errors`, as Jina's gateway answers them). A request that is not one
  answers 400 (no query, a body that is not JSON, variables that are not an object), 415 for other content
  types, 405 for other methods, with `{"errors": [{"message": ...}]}`. With `--auth-token`, running a request
  needs the token (`Authorization: Bearer TOKEN` or `?token=TOKEN`: 401 otherwise); the page and its files do
  not. The body limit is the other doors' (413).
* Without graphql-core installed the relay still serves everything else; `/graphql` answers 503 with the fix.

The door reaches the relay only through a FlowSeam (relay.doors.graphql.seam). Imports: that seam,
relay.net.http_types, relay.doors.static_assets, this package and orjson; graphql-core via execution, lazily.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from relay.doors.graphql import graphiql
from relay.doors.graphql.seam import FlowSeam
from relay.doors.static_assets import asset_response
from relay.net.http_types import HttpRequest, HttpResponse, is_json_media_type, media_type

if TYPE_CHECKING:
    from relay.doors.graphql.execution import GraphQLExecutor

log = logging.getLogger("flowrelay.graphql")

PATH = "/graphql"
ASSET_PREFIX = graphiql.ASSET_PREFIX
MISSING_LIBRARY = (
    "GraphQL needs the graphql-core package, a dependency of flowrelay that is not installed here: "
    "pip install 'graphql-core>=3.2.3,<3.4', then restart the relay"
)
_JSON = [("content-type", "application/json")]


def graphql_error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    """A request the door cannot run, in GraphQL's error shape."""
    return HttpResponse(status, [*_JSON, *(headers or [])], orjson.dumps({"errors": [{"message": message}]}))


class _NotAGraphQLRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = graphql_error(status, message)


class GraphQLDoor:
    """`/graphql` and `/graphql-assets/` over a FlowSeam."""

    def __init__(self, seam: FlowSeam, title: str = "flowrelay") -> None:
        self.seam = seam
        self.title = title
        self._executor: GraphQLExecutor | None = None
        self._missing = False
        # Made now rather than on the first request, which would wait ~0.1 s for graphql-core's import and the
        # schema (and a relay without graphql-core says so at start).
        self.executor()

    def owns(self, path: str) -> bool:
        """Whether `path` is the door's."""
        return path == PATH or path.startswith(ASSET_PREFIX)

    def is_public(self, req: HttpRequest) -> bool:
        """Whether `req` is to reach the door even without the relay's token: every request on its paths. The page
        and its files need none (a page cannot pass one on to its own files); running a request does, which the
        door checks itself, so that a GraphQL client gets its refusal in GraphQL's error shape."""
        return self.owns(req.path)

    def executor(self) -> GraphQLExecutor | None:
        """The executor; None when graphql-core is not installed."""
        if self._executor is None and not self._missing:
            try:
                from relay.doors.graphql.execution import GraphQLExecutor
            except ImportError as exc:
                log.warning("/graphql answers 503: %s (%s)", MISSING_LIBRARY, exc)
                self._missing = True
                return None
            self._executor = GraphQLExecutor(self.seam)
        return self._executor

    async def handle(self, req: HttpRequest) -> HttpResponse:
        """The answer to a request on one of the door's paths (see `owns`)."""
        method = req.method.upper()
        if req.path.startswith(ASSET_PREFIX):
            found = graphiql.asset(req.path[len(ASSET_PREFIX) :])
            if found is None:
                return HttpResponse.json(404, {"detail": "Not Found"})
            return asset_response(req, found, method)
        if method in ("GET", "HEAD"):
            params = parse_qs(req.query)
            if "query" not in params:
                return self._page()
            return await self._execute(req, params, from_get=True)
        if method == "POST":
            return await self._execute(req, None, from_get=False)
        return graphql_error(405, f"{method} is not a GraphQL request: use POST (or GET for a query)",
                             [("allow", "GET, HEAD, POST")])

    def _page(self) -> HttpResponse:
        headers = [
            ("content-type", "text/html; charset=utf-8"),
            ("content-security-policy", graphiql.CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
        ]
        return HttpResponse(200, headers, graphiql.page(self.title))

    async def _execute(self, req: HttpRequest, params: dict[str, list[str]] | None, from_get: bool) -> HttpResponse:
        seam = self.seam
        if not seam.authorized(req):
            return graphql_error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN",
                                 [("www-authenticate", "Bearer")])
        limit = seam.max_body_bytes
        if limit and len(req.body) > limit:
            return graphql_error(413, f"request body of {len(req.body)} bytes exceeds the limit of {limit}")
        executor = self.executor()
        if executor is None:
            return graphql_error(503, MISSING_LIBRARY)
        try:
            request = _from_query_string(params) if params is not None else _from_body(req)
        except _NotAGraphQLRequest as exc:
            return exc.response
        prepared = executor.prepare(request["query"])
        operation_name = request["operationName"]
        if from_get and prepared.is_mutation(operation_name):
            return graphql_error(405, "mutations are not allowed over GET: send them with POST", [("allow", "POST")])
        extensions = request["extensions"] or {}
        body = await executor.run(prepared, request["variables"], operation_name, len(req.body) + len(req.query),
                                  want_routes=extensions.get("routes") is True)
        payload = orjson.dumps(body)
        seam.sent(len(payload))
        return HttpResponse(200, list(_JSON), payload)


def _from_body(req: HttpRequest) -> dict[str, Any]:
    content_type = req.header("content-type")
    if content_type is not None and media_type(content_type) == "application/graphql":
        try:
            query = req.body.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotAGraphQLRequest(400, "the query is not UTF-8") from None
        return _request({"query": query})
    if content_type is not None and not is_json_media_type(content_type):
        raise _NotAGraphQLRequest(415, f"unsupported content type {content_type!r}: send application/json "
                                  "(or application/graphql with the query alone)")
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError as exc:
        raise _NotAGraphQLRequest(400, f"the body is not JSON: {exc}") from None
    if isinstance(body, list):
        raise _NotAGraphQLRequest(400, "batched requests (a JSON list) are not supported: send one request")
    if not isinstance(body, dict):
        raise _NotAGraphQLRequest(400, "the body must be a JSON object with a 'query'")
    return _request(body)


def _from_query_string(params: dict[str, list[str]]) -> dict[str, Any]:
    return _request({k: v[-1] for k, v in params.items()})


def _object_param(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    """`variables` or `extensions`: an object, absent, or an object as a JSON string (in a query string always;
    some clients send variables so in a body too)."""
    value = raw.get(key)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _NotAGraphQLRequest(400, f"'{key}' is not JSON: {exc}") from None
    if value is not None and not isinstance(value, dict):
        raise _NotAGraphQLRequest(400, f"'{key}' must be a JSON object")
    return value


def _request(raw: dict[str, Any]) -> dict[str, Any]:
    """The request's parts, checked: `query` a string, `variables` and `extensions` objects (or absent),
    `operationName` a string (or absent)."""
    query = raw.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _NotAGraphQLRequest(400, "no GraphQL query in the request: send {\"query\": \"...\"}")
    operation_name = raw.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise _NotAGraphQLRequest(400, "'operationName' must be a string")
    return {"query": query, "variables": _object_param(raw, "variables"), "operationName": operation_name or None,
            "extensions": _object_param(raw, "extensions")}
