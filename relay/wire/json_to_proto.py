"""A json-mode Document (a dict, as a json request or a JSON Lines file holds it) straight into a
`docarray.DocumentProto`, without the Document model in between.

`Document.from_json_dict(d).fill_proto(pb)` builds a Document, checks and converts each field, then
copies it field by field into the message: ~2 us for a small Document, the larger part of what a client
spends per Document it reads from a file. Most such Documents carry only strings (`id`, `text`, `uri`,
`mime_type`, ...) and perhaps `tags`: those go into the message with one constructor call, which checks
the strings' types itself. Everything else (a number where a string goes, arrays, a blob, scores,
chunks, a wrong type, a field the model does not know) takes the Document path. Either way the message
is the same, hence the same bytes (tests/test_wire_json_to_proto.py). Imports the Document model and
the generated protobuf modules.
"""

from __future__ import annotations

from typing import Any

from relay.wire.documents import Document
from relay.wire.proto import jina_pb2

# Fields the constructor can take from the dict as they are. `tags` too: a Struct field takes a dict in
# the constructor and turns every number into a double, as `as_struct_values` does on the Document path.
STRING_FIELDS = frozenset(("id", "parent_id", "mime_type", "text", "uri", "modality"))
_DIRECT_FIELDS = STRING_FIELDS | {"tags"}
_NO_TAGS: Any = object()


def add_json_doc(docs: Any, d: Any) -> Any:
    """Append the Document `d` (a json-mode dict, read as `Document.from_json_dict` reads it) to `docs`, a
    repeated `DocumentProto` field, and return the new message. Raises what `from_json_dict` or
    `fill_proto` raise for a value the Document model refuses (a `BadRequest`, a `ValueError`); nothing
    is appended then."""
    if type(d) is dict and d.keys() <= _DIRECT_FIELDS:
        tags = d.get("tags", _NO_TAGS)
        # Empty tags: the Document path leaves the field out; a non-dict: its error message is the model's.
        if tags is _NO_TAGS or (type(tags) is dict and tags):
            try:
                return docs.add(**d)
            except (TypeError, ValueError):
                pass  # e.g. `"text": 5`, which the model reads as "5": nothing was appended
    doc = Document.from_json_dict(d)
    pb = docs.add()
    try:
        doc.fill_proto(pb)
    except BaseException:
        del docs[-1]
        raise
    return pb


def docs_request(envelope: jina_pb2.DataRequestProto, docs: list[Any]) -> jina_pb2.DataRequestProto | None:
    """A new request: `envelope` (header, parameters; no Documents), with the Documents `docs` (json-mode
    dicts) when every one is plain: a dict of string fields (`STRING_FIELDS`: strings or null) and
    perhaps non-empty `tags`. Built in one constructor call, the cheapest way for a batch. None when one
    is not plain (then use `add_json_doc` one by one); `docs` are not changed either way."""
    if not docs or set(map(type, docs)) != {dict}:
        return None
    if not all(map(STRING_FIELDS.issuperset, docs)) and \
            not (all(map(_DIRECT_FIELDS.issuperset, docs)) and all(map(_tags_direct, docs))):
        return None
    try:
        pb = jina_pb2.DataRequestProto(data={"docs": {"docs": docs}})
    except (TypeError, ValueError):
        return None  # e.g. a number where a string goes, which the model reads as a string
    pb.MergeFrom(envelope)
    return pb


def _tags_direct(d: dict[str, Any]) -> bool:
    # Empty tags: the Document path leaves the field out, the constructor would not.
    tags = d.get("tags", _NO_TAGS)
    return tags is _NO_TAGS or (type(tags) is dict and bool(tags))
