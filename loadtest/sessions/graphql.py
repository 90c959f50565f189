"""The GraphQL load target: `flowrelay load http://HOST:PORT/graphql --graphql 'mutation { docs(data: $docs) { id } }'`.

A GraphQL session is an HTTP session (loadtest.sessions.http: one keep-alive connection, one request at a time,
the same reconnects, timeouts and failure reasons) that POSTs a GraphQL request instead of Jina's request model,
to the target URL's path (`/graphql` when it has none). Every request sends the run's query with the engine's
generated Documents as variables:

    $docs            the Documents, as `[StrawberryDocumentInput!]` (tags as a JSON string, as Jina reads them)
    $parameters      `--param`s, as a JSON string (`JSONScalar`)
    $execEndpoint    `--endpoint`
    $targetExecutor  `--target-executor`

A query may use them without declaring them (`prepare_query` adds `$docs: [StrawberryDocumentInput!]` and the
others); it is checked against Jina's schema before the run, so a typo is a usage error, not a run of failures.
Each request asks for the routes in the answer's `extensions` (the relay gives them; a Jina gateway ignores the
ask), so hops are measured from the routes where they come back and end to end otherwise. An answer with
`errors` counts as failed: an Executor's error by its exception name, as on every target, another GraphQL error
by its `extensions.code` (`GraphQLError` when it has none).

Imports: loadtest.sessions.http (the connection it runs on), loadtest.payloads (the correlation key it drops),
relay.wire, relay.doors.graphql's schema text and documents module, graphql-core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from loadtest.payloads import CORRELATION_KEY
from loadtest.sessions.base import Outcomes
from loadtest.sessions.http import HttpSession
from relay.doors.graphql.documents import input_from_json
from relay.wire import json_codec
from relay.wire.errors import BadRequest, MalformedPayload
from relay.wire.messages import STATUS_ERROR, DataRequest, ExceptionInfo, Status

DEFAULT_PATH = "/graphql"
# The variables a run fills, with the type declared for a query that uses one without declaring it.
FILLED = {
    "docs": "[StrawberryDocumentInput!]",
    "parameters": "JSONScalar",
    "execEndpoint": "String",
    "targetExecutor": "String",
}
EXTENSIONS = {"routes": True}


@dataclass(frozen=True)
class PreparedQuery:
    """The query to send (its undeclared variables declared) and the variables the run fills for it."""

    text: str
    fills: tuple[str, ...]


def prepare_query(text: str) -> PreparedQuery:
    """Check `text` (one operation, valid against Jina's schema once its run variables are declared) and declare
    the run variables it uses. Raises ValueError with what is wrong, for the user."""
    from graphql import (
        DocumentNode,
        GraphQLError,
        NameNode,
        OperationDefinitionNode,
        VariableDefinitionNode,
        VariableNode,
        build_schema,
        parse,
        parse_type,
        print_ast,
        validate,
        visit,
    )
    from graphql.language import Visitor

    from relay.doors.graphql.schema import SDL

    try:
        document = parse(text)
    except GraphQLError as exc:
        raise ValueError(_describe(exc)) from None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        raise ValueError(f"give one operation (a query or a mutation), not {len(operations)}")
    (operation,) = operations
    declared = {d.variable.name.value: d for d in operation.variable_definitions or ()}
    used: set[str] = set()

    class Uses(Visitor):
        def enter_variable(self, node: VariableNode, *_args: Any) -> None:
            used.add(node.name.value)

    visit(document, Uses())
    unknown = sorted(n for n in used | {n for n, d in declared.items() if d.default_value is None}
                     if n not in FILLED)
    if unknown:
        raise ValueError(f"the query uses ${', $'.join(unknown)}; a run fills only ${', $'.join(FILLED)}")
    added = [
        VariableDefinitionNode(variable=VariableNode(name=NameNode(value=name)), type=parse_type(FILLED[name]),
                               directives=())
        for name in FILLED if name in used and name not in declared
    ]
    if added:  # AST nodes are immutable (graphql-core 3.3): a new operation in a new document
        declaring = OperationDefinitionNode(
            operation=operation.operation, name=operation.name, directives=operation.directives,
            variable_definitions=(*(operation.variable_definitions or ()), *added),
            selection_set=operation.selection_set,
        )
        document = DocumentNode(definitions=tuple(declaring if d is operation else d for d in document.definitions))
    errors = validate(build_schema(SDL), document)
    if errors:
        raise ValueError("; ".join(_describe(e) for e in errors[:3]))
    return PreparedQuery(print_ast(document), tuple(n for n in FILLED if n in used or n in declared))


def _describe(error: Any) -> str:
    where = ", ".join(f"line {loc.line} column {loc.column}" for loc in error.locations or ())
    return f"{error.message} ({where})" if where else error.message


class GraphQLSession(HttpSession):
    """One keep-alive connection POSTing GraphQL requests; same interface as loadtest.sessions.http.HttpSession."""

    def __init__(self, url: str, query: str, outcomes: Outcomes, index: int = 0,
                 connect_timeout_s: float = 10.0) -> None:
        super().__init__(url, outcomes, index, connect_timeout_s)
        parts = urlsplit(url)
        self.base = f"{parts.scheme}://{parts.netloc}"  # GET / probes the server, as for the HTTP target
        self.post_url = self.base + (parts.path if parts.path not in ("", "/") else DEFAULT_PATH)
        self.query = prepare_query(query)

    def request_body(self, frame: bytes) -> bytes:
        """The GraphQL request for the engine's json frame (`{"data": [...], "execEndpoint": ..., ...}`)."""
        req = orjson.loads(frame)
        variables: dict[str, Any] = {}
        for name in self.query.fills:
            if name == "docs":
                variables[name] = [input_from_json(d) for d in req.get("data") or ()]
            elif name == "parameters":
                params = {k: v for k, v in (req.get("parameters") or {}).items() if k != CORRELATION_KEY}
                variables[name] = orjson.dumps(params).decode() if params else None
            else:
                variables[name] = req.get(name)
        return orjson.dumps({"query": self.query.text, "variables": variables, "extensions": EXTENSIONS})

    def read_answer(self, body: bytes) -> tuple[DataRequest, int]:
        """A GraphQL answer as what the measurement reads: routes (from `extensions`), status, doc count."""
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedPayload(f"the GraphQL answer is not JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise BadRequest("a GraphQL answer must be a JSON object")
        data = answer.get("data")
        docs = sum(len(v) for v in data.values() if isinstance(v, list)) if isinstance(data, dict) else 0
        routes_by_field = (answer.get("extensions") or {}).get("routes")
        routes = []
        if isinstance(routes_by_field, dict) and routes_by_field:
            routes = json_codec.routes_from_json(next(iter(routes_by_field.values())))
        errors = answer.get("errors")
        status = None
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            ext = first.get("extensions") or {}
            name = ext.get("exception") or ext.get("code") or "GraphQLError"
            status = Status(STATUS_ERROR, str(first.get("message", "")),
                            ExceptionInfo(str(name), executor=str(ext.get("executor", ""))))
        return DataRequest(routes=routes, status=status), docs
