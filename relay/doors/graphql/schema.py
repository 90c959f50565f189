"""Jina's GraphQL schema, field for field, with its three scalars and the resolvers that read `Document`s.

`SDL` is the schema a Jina 3.34 HTTP gateway serves (docarray 0.21's strawberry types, printed from its
introspection: ../shared/protocol/captures/a_legacy_graphql/schema.graphql); the schema is built from that very
text, so introspection prints it back unchanged. The scalars behave as Jina's, with two deliberate widenings:

* `JSONScalar` takes a JSON string, as Jina's does (`json.loads`), and also any other GraphQL value: an object
  literal `{k: "v"}` or a JSON object in the variables (Jina refuses both).
* `NdArray` takes a list of numbers (nested for more dimensions) or a number; it answers with the nested list.
  `Base64` takes and answers standard base64.

A value a scalar cannot take raises ValueError, which graphql-core reports with the value's location ("Expected
value of type 'NdArray', found ...; <why>"). Only the fields a query selects are resolved, so only those are
encoded: an `embedding` costs nothing unless asked.
Imports graphql-core, relay.wire and this package's documents module.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import orjson
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    StringValueNode,
    ValueNode,
    build_schema,
    value_from_ast_untyped,
)

from relay.doors.graphql.documents import OUTPUT_READERS, score_field
from relay.wire.documents import Document, NdArray
from relay.wire.errors import BadRequest

SDL = '''\
type Query {
  docs(data: [StrawberryDocumentInput!] = null, targetExecutor: String = null, parameters: JSONScalar = null, \
execEndpoint: String! = "/search"): [StrawberryDocument!]!
}

type StrawberryDocument {
  id: String
  parentId: String
  granularity: Int
  adjacency: Int
  blob: Base64
  tensor: NdArray
  mimeType: String
  text: String
  weight: Float
  uri: String
  tags: JSONScalar
  offset: Float
  location: [Float!]
  embedding: NdArray
  modality: String
  evaluations: [Namescoreitem!]
  scores: [Namescoreitem!]
  chunks: [StrawberryDocument!]
  matches: [StrawberryDocument!]
}

scalar Base64

scalar NdArray

"""
The GenericScalar scalar type represents a generic GraphQL scalar value that could be: List or Object.
"""
scalar JSONScalar

type Namescoreitem {
  name: String!
  score: Namedscore!
}

type Namedscore implements Namedscoreinterface {
  value: Float
  opName: String
  description: String
  refId: String
}

interface Namedscoreinterface {
  value: Float
  opName: String
  description: String
  refId: String
}

input StrawberryDocumentInput {
  id: String = null
  parentId: String = null
  granularity: Int = null
  adjacency: Int = null
  blob: Base64 = null
  tensor: NdArray = null
  mimeType: String = null
  text: String = null
  weight: Float = null
  uri: String = null
  tags: JSONScalar = null
  offset: Float = null
  location: [Float!] = null
  embedding: NdArray = null
  modality: String = null
  evaluations: [Namescoreiteminput!] = null
  scores: [Namescoreiteminput!] = null
  chunks: [StrawberryDocumentInput!] = null
  matches: [StrawberryDocumentInput!] = null
}

input Namescoreiteminput {
  name: String!
  score: Namedscoreinput!
}

input Namedscoreinput {
  value: Float = null
  opName: String = null
  description: String = null
  refId: String = null
}

type Mutation {
  docs(data: [StrawberryDocumentInput!] = null, targetExecutor: String = null, parameters: JSONScalar = null, \
execEndpoint: String! = "/search"): [StrawberryDocument!]!
}
'''

DocsResolver = Callable[..., Any]


# ---- scalars ---------------------------------------------------------------------------------------------------


def _serialize_base64(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise ValueError(f"Base64 cannot represent {type(value).__name__}")


def _parse_base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"Base64 must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Base64 must be standard base64 (A-Z, a-z, 0-9, +, / and = padding)") from None


def _serialize_ndarray(value: Any) -> Any:
    if isinstance(value, NdArray):
        return value.to_list()
    raise ValueError(f"NdArray cannot represent {type(value).__name__}")


def _parse_ndarray(value: Any) -> NdArray:
    if isinstance(value, bool) or not isinstance(value, (list, int, float)):
        raise ValueError("NdArray must be a number or a (nested) list of numbers")
    try:
        return NdArray.from_list(value if isinstance(value, list) else [value], "NdArray")
    except BadRequest as exc:
        raise ValueError(exc.reason) from None


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"JSONScalar: a string must hold JSON ({exc})") from None
    return value


def _parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    if isinstance(node, StringValueNode):
        return _parse_json(node.value)
    return value_from_ast_untyped(node, variables)


def _parse_untyped_literal(parse: Callable[[Any], Any]) -> Callable[..., Any]:
    def parse_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
        return parse(value_from_ast_untyped(node, variables))

    return parse_literal


def _set_scalar(schema: GraphQLSchema, name: str, serialize: Callable[[Any], Any], parse_value: Callable[[Any], Any],
                parse_literal: Callable[..., Any]) -> None:
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType)
    scalar.serialize = serialize  # type: ignore[method-assign]
    scalar.parse_value = parse_value  # type: ignore[method-assign]
    scalar.parse_literal = parse_literal  # type: ignore[method-assign]
    if hasattr(scalar, "coerce_output_value"):  # graphql-core >= 3.3 reads these (3.2 the three above)
        scalar.coerce_output_value = serialize
        scalar.coerce_input_value = parse_value


# ---- resolvers -------------------------------------------------------------------------------------------------


def _document_resolver(read: Callable[[Document], Any]) -> Callable[..., Any]:
    def resolve(doc: Document, _info: Any) -> Any:
        return read(doc)

    return resolve


def _score_resolver(name: str) -> Callable[..., Any]:
    def resolve(score: Any, _info: Any) -> Any:
        return score_field(score, name)

    return resolve


def _object_type(schema: GraphQLSchema, name: str) -> dict[str, GraphQLField]:
    found = schema.type_map[name]
    assert isinstance(found, GraphQLObjectType)
    return found.fields


def build(resolve_docs: DocsResolver) -> GraphQLSchema:
    """Jina's schema, whose `docs` fields (Query and Mutation) call `resolve_docs(root, info, **arguments)` with
    the arguments under their GraphQL names (`data`, `targetExecutor`, `parameters`, `execEndpoint`)."""
    schema = build_schema(SDL)
    _set_scalar(schema, "Base64", _serialize_base64, _parse_base64, _parse_untyped_literal(_parse_base64))
    _set_scalar(schema, "NdArray", _serialize_ndarray, _parse_ndarray, _parse_untyped_literal(_parse_ndarray))
    _set_scalar(schema, "JSONScalar", lambda v: v, _parse_json, _parse_json_literal)
    for name, field in _object_type(schema, "StrawberryDocument").items():
        field.resolve = _document_resolver(OUTPUT_READERS[name])
    item = _object_type(schema, "Namescoreitem")
    item["name"].resolve = lambda pair, _info: pair[0]
    item["score"].resolve = lambda pair, _info: pair[1]
    for name, field in _object_type(schema, "Namedscore").items():
        field.resolve = _score_resolver(name)
    _object_type(schema, "Query")["docs"].resolve = resolve_docs
    _object_type(schema, "Mutation")["docs"].resolve = resolve_docs
    return schema
