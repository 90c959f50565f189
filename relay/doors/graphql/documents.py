"""Documents in Jina's GraphQL types: `StrawberryDocumentInput` in, `StrawberryDocument` out (docarray < 0.30).

In: the arguments graphql-core has coerced (camelCase keys, `Base64` already bytes, `NdArray` already an
`NdArray`, `JSONScalar` already a value) become `Document`s; what GraphQL's types cannot say is checked here
(tags and parameters are objects, integers fit a `DocumentProto`, nesting is bounded).
Out: the value of each `StrawberryDocument` field of a `Document`, as Jina answers it: docarray's
`to_strawberry_type` keeps only a Document's non-empty fields, so a field at docarray's default (`""`, `0`,
an empty list or dict) is null, and `scores`/`evaluations` are lists of `{name, score}`.
And for clients (the load target): a Document's JSON form as a `StrawberryDocumentInput` value, with `tags` as a
JSON string as Jina's `JSONScalar` wants it.

Pure: imports relay.wire, orjson and the standard library only (no GraphQL library).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from relay.wire.documents import Document, NamedScore, as_struct_values
from relay.wire.errors import BadRequest

# Chunks and matches of an input document nest at most this deep: deeper trees would reach the recursive
# readers and writers of the wire layer (and orjson writes at most 254 levels).
MAX_INPUT_DEPTH = 40
UINT32_MAX = 2**32 - 1

# GraphQL field -> Document attribute, where they differ.
ATTRIBUTES = {"parentId": "parent_id", "mimeType": "mime_type"}
SCORE_ATTRIBUTES = {"opName": "op_name", "refId": "ref_id"}
# docarray's defaults: a field holding one of these is left out of the answer (null), as Jina answers it.
_DOCARRAY_DEFAULTS: dict[str, Any] = {
    "granularity": 0, "adjacency": 0, "parent_id": "", "blob": b"", "text": "", "weight": 0.0, "uri": "",
    "mime_type": "", "offset": 0.0, "modality": "",
}  # fmt: skip
_CONTAINERS = ("tags", "location", "evaluations", "scores", "chunks", "matches")


# ---- in: coerced GraphQL input -> Document ------------------------------------------------------------------


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A `JSONScalar` argument that must be an object (`tags`, `parameters`), as the Struct a Flow gets: numbers
    become floats, as a Jina gateway's protobuf Struct makes them."""
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {_json_type(value)}")
    return as_struct_values(value)


def documents_from_input(values: list[Mapping[str, Any]]) -> list[Document]:
    """The Documents of a `data` argument. Raises BadRequest (naming the document) for what GraphQL's types let
    through but a Document cannot hold."""
    return [_document(v, f"data[{i}]", 0) for i, v in enumerate(values)]


def _document(value: Mapping[str, Any], where: str, depth: int) -> Document:
    if depth > MAX_INPUT_DEPTH:
        raise BadRequest(f"{where}: chunks and matches nest deeper than {MAX_INPUT_DEPTH} levels")
    doc = Document()
    for key, v in value.items():
        if v is None:
            continue
        if key in ("chunks", "matches"):
            v = [_document(child, f"{where}.{key}[{i}]", depth + 1) for i, child in enumerate(v)]
        elif key in ("scores", "evaluations"):
            v = _scores(v)
        elif key == "tags":
            v = json_object(v, f"{where}.tags")
        elif key in ("granularity", "adjacency") and not 0 <= v <= UINT32_MAX:
            raise BadRequest(f"{where}.{key} must be an integer from 0 to 2**32-1, got {v}")
        setattr(doc, ATTRIBUTES.get(key, key), v)
    return doc


def _scores(items: list[Mapping[str, Any]]) -> dict[str, NamedScore]:
    out = {}
    for item in items:
        score = item["score"]
        out[item["name"]] = NamedScore(**{SCORE_ATTRIBUTES.get(k, k): v for k, v in score.items()})
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


# ---- out: Document -> StrawberryDocument field values -----------------------------------------------------


def _reader(attribute: str) -> Callable[[Document], Any]:
    default = _DOCARRAY_DEFAULTS.get(attribute)
    if attribute in _CONTAINERS:

        def read_container(doc: Document) -> Any:
            return getattr(doc, attribute) or None

        read: Callable[[Document], Any] = read_container
    elif default is not None:

        def read_scalar(doc: Document) -> Any:
            value = getattr(doc, attribute)
            return None if value == default else value

        read = read_scalar
    else:

        def read_plain(doc: Document) -> Any:
            return getattr(doc, attribute)

        read = read_plain
    if attribute in ("scores", "evaluations"):

        def read_scores(doc: Document) -> Any:
            scores = read_container(doc)
            return list(scores.items()) if scores else None

        return read_scores
    return read


#: `StrawberryDocument` field -> how to read it from a Document (a list of (name, NamedScore) for scores).
OUTPUT_READERS: dict[str, Callable[[Document], Any]] = {
    name: _reader(ATTRIBUTES.get(name, name))
    for name in (
        "id", "parentId", "granularity", "adjacency", "blob", "tensor", "mimeType", "text", "weight", "uri",
        "tags", "offset", "location", "embedding", "modality", "evaluations", "scores", "chunks", "matches",
    )
}  # fmt: skip


def score_field(score: NamedScore, name: str) -> Any:
    """A `Namedscore` field (`value`, `opName`, `description`, `refId`) of a NamedScore."""
    return getattr(score, SCORE_ATTRIBUTES.get(name, name))


# ---- for clients: a Document's JSON form -> StrawberryDocumentInput ------------------------------------------

_INPUT_KEYS = {"parent_id": "parentId", "mime_type": "mimeType"}
SCORE_KEYS = {"op_name": "opName", "ref_id": "refId"}


def input_from_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Document in its JSON form (relay.wire's `to_json_dict(full=False)`: snake_case, blob in base64, arrays
    as lists) as a `StrawberryDocumentInput` variable value: camelCase, `tags` a JSON string (Jina's `JSONScalar`
    reads variables with `json.loads`), scores as `[{name, score}]`."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if value is None:
            continue
        if key == "tags":
            value = orjson.dumps(value).decode()
        elif key in ("scores", "evaluations"):
            value = [
                {"name": name, "score": {SCORE_KEYS.get(k, k): v for k, v in score.items() if v is not None}}
                for name, score in value.items()
            ]
        elif key in ("chunks", "matches"):
            value = [input_from_json(child) for child in value]
        out[_INPUT_KEYS.get(key, key)] = value
    return out

