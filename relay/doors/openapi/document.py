"""The OpenAPI 3.1 document of the HTTP door, written from the models and routes in relay.doors.openapi.models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from relay.doors.openapi.models import (
    HTTP_ERROR,
    HTTP_VALIDATION_ERROR,
    JINA_RESPONSE,
    NDARRAY_SCHEMA,
    TAGS,
    Operation,
)
from relay.doors.openapi.types import MISSING, MODELS, SCHEMA_PREFIX, ListOf, MapOf, Model, OneOf, Ref, Type


def _json_content(model: Model | None, content_type: str = "application/json") -> dict[str, Any]:
    if content_type != "application/json":
        return {content_type: {"schema": {"type": "string"}}}
    schema: dict[str, Any] = {"$ref": SCHEMA_PREFIX + model.name} if model is not None else {}
    return {content_type: {"schema": schema}}


def _operation(op: Operation, auth: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "description": op.description, "operationId": op.operation_id}
    if op.tags:
        out["tags"] = list(op.tags)
    if op.request is not None:
        content = _json_content(op.request)
        if op.request.example is not MISSING:
            content["application/json"]["example"] = op.request.example
        out["requestBody"] = {"required": True, "content": content}
    responses: dict[str, Any] = {
        "200": {"description": "Successful Response", "content": _json_content(op.response, op.content_type)}
    }
    if op.data:
        responses["413"] = {"description": "Request body too large", "content": _json_content(HTTP_ERROR)}
        responses["422"] = {"description": "Validation Error", "content": _json_content(HTTP_VALIDATION_ERROR)}
        responses["503"] = {
            "description": "The upstream Flow is unreachable: `header.status` says why (exception `UpstreamError`)",
            "content": _json_content(JINA_RESPONSE),
        }
    if auth and op.path != "/":
        responses["401"] = {"description": "Missing or wrong token", "content": _json_content(HTTP_ERROR)}
        out["security"] = [{"bearerAuth": []}]
    out["responses"] = dict(sorted(responses.items()))
    return out


def used_models(operations: Iterable[Operation]) -> list[Model]:
    """The models the operations refer to, and the ones those refer to, in a stable order."""
    seen: dict[str, Model] = {}

    def visit_type(t: Type) -> None:
        if isinstance(t, Ref):
            visit(MODELS[t.name])
        elif isinstance(t, (ListOf,)):
            visit_type(t.item)
        elif isinstance(t, MapOf):
            visit_type(t.value)
        elif isinstance(t, OneOf):
            for o in t.options:
                visit_type(o)

    def visit(m: Model) -> None:
        if m.name in seen:
            return
        seen[m.name] = m
        for f in m.fields:
            visit_type(f.type)

    for op in operations:
        for m in (op.request, op.response):
            if m is not None:
                visit(m)
        if op.data:
            visit(HTTP_VALIDATION_ERROR)
            visit(HTTP_ERROR)
    return sorted(seen.values(), key=lambda m: m.name)


def openapi_document(
    title: str,
    version: str,
    description: str,
    operations: Iterable[Operation],
    auth: bool = False,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for `operations`, with the components they use."""
    ops = list(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = _operation(op, auth)
    schemas: dict[str, Any] = {m.name: m.schema() for m in used_models(ops)}
    if "Document" in schemas:
        schemas["NdArray"] = NDARRAY_SCHEMA
    components: dict[str, Any] = {"schemas": dict(sorted(schemas.items()))}
    if auth:
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "The relay's `--auth-token` (or FLOWRELAY_AUTH_TOKEN).",
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "description": description, "version": version},
        "paths": paths,
        "components": components,
        "tags": [t for t in TAGS if any(t["name"] in op.tags for op in ops)],
    }
