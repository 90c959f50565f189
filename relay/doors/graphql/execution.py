"""Running one GraphQL request against Jina's schema: parse and validate (cached), execute, encode the answer.

Each `docs` field of an operation becomes one `DataRequest` through the Flow (FlowSeam.run), so aliases send
several; a mutation's run one after another, a query's concurrently, as GraphQL executes them. The answer is
`{"data": ..., "errors": [...], "extensions": {...}}` in GraphQL's standard shape (`errors` only when there are
some; `data` null when the request failed before execution, as Jina's gateway answers it):

* An Executor's error does not fail the field: the documents come back as the Flow answered them (as Jina
  answers) and `errors` says which Executor raised what (`extensions.executor`, `exception`, `args`, with
  `code` EXECUTOR_ERROR), where Jina reports nothing. An unreachable upstream Flow has no documents to give: the
  field fails (data null, `code` UPSTREAM_UNAVAILABLE). Input GraphQL's types accept but a Document cannot hold
  (tags that are not an object, a negative granularity) is a field error with `code` BAD_USER_INPUT.
* Malformed or invalid queries get graphql-core's errors, with `locations`; an unknown field names its type.
* Bounds: a query of at most `MAX_TOKENS` tokens, selections at most `MAX_SELECTION_DEPTH` deep (fragments
  included), so answers stay within what JSON writers handle; input documents are bounded in
  relay.doors.graphql.documents.
* `extensions.routes` (when the request's `extensions` has `"routes": true`): per `docs` field (by its response
  key), the routes of its Flow request as the json subprotocol writes them (`executor`, `start_time`,
  `end_time`: RFC 3339), for clients that measure hops (the load target).

Imports graphql-core, relay.wire and this package.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
    execute,
    parse,
    specified_rules,
    validate,
)
from graphql.utilities import get_operation_ast

from relay.doors.graphql import schema as jina_schema
from relay.doors.graphql.documents import documents_from_input, json_object
from relay.doors.graphql.seam import FlowSeam
from relay.wire import json_codec
from relay.wire.errors import BadRequest
from relay.wire.messages import DataRequest, Status

MAX_TOKENS = 100_000
MAX_SELECTION_DEPTH = 50
# Parsed and validated queries kept, by their text; longer texts (data written inline) are not kept.
CACHE_ENTRIES = 256
CACHE_MAX_QUERY_CHARS = 16 * 1024
UPSTREAM_ERROR = "UpstreamError"
# `extensions.code` of the errors the door reports while executing (the convention of Apollo and others): input
# that GraphQL's types let through but a Document cannot hold, an Executor's error, an unreachable upstream.
BAD_USER_INPUT = "BAD_USER_INPUT"
EXECUTOR_ERROR = "EXECUTOR_ERROR"
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"


class SelectionDepthRule(ValidationRule):
    """Refuses operations whose selections nest deeper than MAX_SELECTION_DEPTH, through fragments too."""

    def enter_document(self, node: DocumentNode, *_args: Any) -> None:
        fragments = {d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)}
        depths: dict[str, int] = {}
        for definition in node.definitions:
            if isinstance(definition, OperationDefinitionNode):
                depth = _selection_depth(definition.selection_set, fragments, depths)
                if depth > MAX_SELECTION_DEPTH:
                    self.report_error(GraphQLError(
                        f"selections nest {depth} levels deep; at most {MAX_SELECTION_DEPTH} are served",
                        definition,
                    ))


def _selection_depth(selection_set: SelectionSetNode | None, fragments: Mapping[str, FragmentDefinitionNode],
                     depths: dict[str, int]) -> int:
    """How many levels of fields `selection_set` nests; each fragment is measured once (a fragment that spreads
    itself counts as flat here: NoFragmentCyclesRule reports it)."""
    if selection_set is None:
        return 0
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            depth = 1 + _selection_depth(selection.selection_set, fragments, depths)
        elif isinstance(selection, InlineFragmentNode):
            depth = _selection_depth(selection.selection_set, fragments, depths)
        else:
            assert isinstance(selection, FragmentSpreadNode)
            name = selection.name.value
            if name not in depths:
                depths[name] = 0  # in progress: a cycle measures as flat
                fragment = fragments.get(name)
                depths[name] = _selection_depth(fragment.selection_set if fragment else None, fragments, depths)
            depth = depths[name]
        deepest = max(deepest, depth)
    return deepest


RULES = (*specified_rules, SelectionDepthRule)


@dataclass
class Prepared:
    """A query parsed and validated: the document, or the errors that stop it."""

    document: DocumentNode | None
    errors: list[GraphQLError]

    def is_mutation(self, operation_name: str | None) -> bool:
        """Whether the operation that `operation_name` picks is a mutation."""
        if self.document is None:
            return False
        op = get_operation_ast(self.document, operation_name)
        return op is not None and op.operation is OperationType.MUTATION


@dataclass
class _RequestState:
    """What one GraphQL request's `docs` fields share: the bytes in to count (once), errors and routes."""

    size: int
    want_routes: bool
    errors: list[GraphQLError] = field(default_factory=list)
    routes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def take_size(self) -> int:
        size, self.size = self.size, 0
        return size


class GraphQLExecutor:
    """Jina's schema over a FlowSeam: `prepare` a query, then `run` it."""

    def __init__(self, seam: FlowSeam) -> None:
        self.seam = seam
        self.schema = jina_schema.build(self._resolve_docs)
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()

    def prepare(self, query: str) -> Prepared:
        """`query` parsed and validated (from the cache when it was seen before)."""
        cached = self._prepared.get(query)
        if cached is not None:
            self._prepared.move_to_end(query)
            return cached
        try:
            document = parse(query, max_tokens=MAX_TOKENS)
        except GraphQLError as exc:
            prepared = Prepared(None, [exc])
        except RecursionError:
            prepared = Prepared(None, [GraphQLError("the query nests too deeply to be read")])
        else:
            prepared = Prepared(document, validate(self.schema, document, RULES))
            if prepared.errors:
                prepared.document = None
        if len(query) <= CACHE_MAX_QUERY_CHARS:
            self._prepared[query] = prepared
            if len(self._prepared) > CACHE_ENTRIES:
                self._prepared.popitem(last=False)
        return prepared

    async def run(self, prepared: Prepared, variables: dict[str, Any] | None, operation_name: str | None,
                  size: int, want_routes: bool = False) -> dict[str, Any]:
        """Execute a prepared query; the answer as a dict in GraphQL's response shape."""
        if prepared.document is None:
            return answer(None, prepared.errors)
        state = _RequestState(size, want_routes)
        try:
            result = execute(self.schema, prepared.document, variable_values=variables,
                             operation_name=operation_name, context_value=state)
            if inspect.isawaitable(result):
                result = await result
        except RecursionError:
            return answer(None, [GraphQLError("the variables nest too deeply to be read")])
        assert isinstance(result, ExecutionResult)
        extensions = {"routes": state.routes} if want_routes and state.routes else None
        return answer(result.data, [*(result.errors or ()), *state.errors], extensions)

    async def _resolve_docs(self, _root: Any, info: Any, data: list[dict[str, Any]] | None = None,
                            targetExecutor: str | None = None, parameters: Any = None,
                            execEndpoint: str = "/search") -> list[Any]:
        state: _RequestState = info.context
        try:
            docs = documents_from_input(data) if data is not None else None
            params = json_object(parameters, "parameters") if parameters is not None else {}
        except BadRequest as exc:
            raise GraphQLError(exc.reason, extensions={"code": BAD_USER_INPUT}) from None
        req = DataRequest(exec_endpoint=execEndpoint, target_executor=targetExecutor, parameters=params, docs=docs)
        await self.seam.run(req, state.take_size())
        if state.want_routes:
            state.routes[info.path.key] = json_codec.routes_to_json(req.routes)
        status = req.status
        if status is not None and status.is_error:
            error = executor_error(status, info)
            if error.extensions and error.extensions.get("exception") == UPSTREAM_ERROR:
                raise error  # no documents to answer with
            state.errors.append(error)
        try:
            return req.load_docs() or []
        except BadRequest as exc:
            raise GraphQLError(f"the Flow answered documents GraphQL cannot show: {exc.reason}",
                               extensions={"code": "INTERNAL_SERVER_ERROR"}) from None


def executor_error(status: Status, info: Any) -> GraphQLError:
    """An error status of the Flow as a GraphQL error on the field: which Executor raised what."""
    exc = status.exception
    name = exc.name if exc is not None else "error"
    executor = exc.executor if exc is not None and exc.executor else "the Flow"
    description = status.description or name
    return GraphQLError(
        f"{executor} failed: {description}",
        info.field_nodes,
        path=info.path.as_list(),
        extensions={"code": UPSTREAM_UNAVAILABLE if name == UPSTREAM_ERROR else EXECUTOR_ERROR, "executor": executor,
                    "exception": name, "args": list(exc.args) if exc is not None else []},
    )


def answer(data: Any, errors: list[GraphQLError], extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """GraphQL's response shape: `data` first (null when execution never started, as Jina's gateway writes it),
    then `errors` when there are some, then `extensions`."""
    out: dict[str, Any] = {"data": data}
    if errors:
        out["errors"] = [e.formatted for e in errors]
    if extensions:
        out["extensions"] = extensions
    return out
