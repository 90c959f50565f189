"""Jina 3.34's GraphQL endpoint restated for bench/graphql_cost.py: docarray 0.21's strawberry types, Jina's resolver.

From docarray/document/strawberry_type.py (docarray 0.21.1) and jina/serve/runtimes/gateway/http_fastapi_app.py
(jina 3.34.0): the inputs arrive as dataclasses, Jina turns them into dicts (`asdict`) and a request, and answers
`DocumentArray.to_strawberry_type()`, a `StrawberryDocument` with every non-empty field of each document. numpy
is left out (docarray's NdArray scalar is `to_list` / `np.array`; lists stand in here). No `from __future__
import annotations`: strawberry reads these annotations at run time. Imports strawberry (the caller handles its
absence), relay.wire.
"""

import base64
import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any, NewType

import strawberry

from relay.wire.documents import Document
from relay.wire.messages import DataRequest

JSONScalar = strawberry.scalar(
    NewType("JSONScalar", Any),
    serialize=lambda v: v,
    parse_value=lambda v: json.loads(v),
    description="The GenericScalar scalar type represents a generic GraphQL scalar value that could be: "
    "List or Object.",
)
Base64 = strawberry.scalar(
    NewType("Base64", bytes),
    serialize=lambda v: base64.b64encode(v).decode("utf-8"),
    parse_value=lambda v: base64.b64decode(v.encode("utf-8")),
)
NdArray = strawberry.scalar(NewType("NdArray", bytes), serialize=lambda v: list(v), parse_value=lambda v: list(v))


class _NamedScoreFields:
    value: float | None = None
    op_name: str | None = None
    description: str | None = None
    ref_id: str | None = None


class _DocumentFields:
    id: str | None = None
    parent_id: str | None = None
    granularity: int | None = None
    adjacency: int | None = None
    blob: Base64 | None = None  # type: ignore[valid-type]
    tensor: NdArray | None = None  # type: ignore[valid-type]
    mime_type: str | None = None
    text: str | None = None
    weight: float | None = None
    uri: str | None = None
    tags: JSONScalar | None = None  # type: ignore[valid-type]
    offset: float | None = None
    location: list[float] | None = None
    embedding: NdArray | None = None  # type: ignore[valid-type]
    modality: str | None = None


# docarray makes the input types inherit the interfaces; current strawberry refuses that, so both sides inherit
# the same plain fields (the schema is the same).
def _copy(name: str, fields: type) -> type:
    """A fresh class with the annotations and defaults of `fields` (strawberry reads a class's own)."""
    namespace = {k: getattr(fields, k) for k in fields.__annotations__}
    return type(name, (), {"__annotations__": dict(fields.__annotations__), **namespace})


_NamedScoreInterface = strawberry.interface(_copy("_NamedScoreInterface", _NamedScoreFields))


@strawberry.type
class _NamedScore(_NamedScoreInterface):  # type: ignore[valid-type,misc]
    pass


@strawberry.type
class _NameScoreItem:
    name: str
    score: _NamedScore


@strawberry.type
class StrawberryDocument(strawberry.type(_copy("_Base", _DocumentFields))):  # type: ignore[misc]
    evaluations: list[_NameScoreItem] | None = None
    scores: list[_NameScoreItem] | None = None
    chunks: list["StrawberryDocument"] | None = None
    matches: list["StrawberryDocument"] | None = None


_NamedScoreInput = strawberry.input(_copy("_NamedScoreInput", _NamedScoreFields))


@strawberry.input
class _NameScoreItemInput:
    name: str
    score: _NamedScoreInput


@strawberry.input
class StrawberryDocumentInput(strawberry.input(_copy("_BaseInput", _DocumentFields))):  # type: ignore[misc]
    evaluations: list[_NameScoreItemInput] | None = None
    scores: list[_NameScoreItemInput] | None = None
    chunks: list["StrawberryDocumentInput"] | None = None
    matches: list["StrawberryDocumentInput"] | None = None


_FIELDS = [f.name for f in dataclasses.fields(StrawberryDocument)]


def runner(seam: Any, cached: bool = False) -> Callable[[str, dict[str, Any] | None], Awaitable[bytes]]:
    """Run a request as Jina's endpoint does, the Flow being `seam.run`; the answer as strawberry's view writes it.
    `cached`: with strawberry's ParserCache and ValidationCache extensions (Jina's schema has neither)."""

    async def get_docs(data: Any, target_executor: Any, parameters: Any, exec_endpoint: str) -> list[Any]:
        docs = [Document.from_json_dict(dataclasses.asdict(d)) for d in data]
        req = DataRequest(exec_endpoint=exec_endpoint, target_executor=target_executor, docs=docs)
        await seam.run(req, 0)
        answered = [d.to_json_dict() for d in req.docs or ()]
        return [StrawberryDocument(**{k: v for k, v in d.items() if k in _FIELDS and v}) for d in answered]

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        async def docs(self, data: list[StrawberryDocumentInput] | None = None, target_executor: str | None = None,
                       parameters: JSONScalar | None = None,  # type: ignore[valid-type]
                       exec_endpoint: str = "/search") -> list[StrawberryDocument]:
            return await get_docs(data, target_executor, parameters, exec_endpoint)

    @strawberry.type
    class Query:
        @strawberry.field
        async def docs(self, data: list[StrawberryDocumentInput] | None = None, target_executor: str | None = None,
                       parameters: JSONScalar | None = None,  # type: ignore[valid-type]
                       exec_endpoint: str = "/search") -> list[StrawberryDocument]:
            return await get_docs(data, target_executor, parameters, exec_endpoint)

    extensions = []
    if cached:
        from strawberry.extensions import ParserCache, ValidationCache

        extensions = [ParserCache(), ValidationCache()]
    schema = strawberry.Schema(query=Query, mutation=Mutation, extensions=extensions)

    async def run(query: str, variables: dict[str, Any] | None) -> bytes:
        result = await schema.execute(query, variable_values=variables)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return json.dumps(body).encode()

    return run
