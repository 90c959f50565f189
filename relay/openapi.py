"""The HTTP door's models, written once as data: request validation and the OpenAPI document both come from them.

A `Model` is a list of `Field`s, each with a type built from a few small classes (`Str`, `Int`, `Num`, `Bool`,
`Obj`, `ListOf`, `MapOf`, `Ref`, `OneOf`, `NdArrayT`). From the same definitions:

* `validate(model, value)` checks a request body the way a Jina HTTP gateway's pydantic (v1) models do, and
  answers with the cleaned value or a list of FastAPI-style errors (`{"loc": ["body", "data", 0, "text"],
  "msg": "str type expected", "type": "type_error.str"}`) that name the field;
* `openapi_document(...)` writes an OpenAPI 3.1 document (JSON Schema 2020-12) for the routes of JINA-WIRE.md
  §8.1: the request models `JinaRequestModel` / `JinaEndpointRequestModel`, the response `JinaResponseModel`
  (nulls allowed where the gateway writes them) and `HTTPValidationError`.

Request documents are read as the WebSocket door reads them (relay.wire.documents): unknown keys ignored, a
number accepted where a string is expected, `null` meaning "not set". Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

UINT32_MAX = 2**32 - 1
SCHEMA_PREFIX = "#/components/schemas/"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# ---- types ---------------------------------------------------------------------------------------


Error = dict[str, Any]
Loc = tuple[str | int, ...]


def _error(loc: Loc, msg: str, type_: str, **ctx: Any) -> Error:
    out: Error = {"loc": list(loc), "msg": msg, "type": type_}
    if ctx:
        out["ctx"] = ctx
    return out


class Type:
    """A value's type: checks (and cleans) a value, and describes itself as JSON Schema."""

    json_type: str = ""  # the JSON type a value must have for this type ("" for several)

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def nullable_schema(self) -> dict[str, Any]:
        s = self.schema()
        t = s.get("type")
        if isinstance(t, str):
            return {**s, "type": [t, "null"]}
        if "anyOf" in s:
            return {**s, "anyOf": [*s["anyOf"], {"type": "null"}]}
        if "$ref" in s:
            return {"anyOf": [s, {"type": "null"}]}
        return s  # already admits null (any value)


@dataclass(frozen=True)
class Str(Type):
    """A string; numbers are taken as their text (as pydantic v1 and the WebSocket door do)."""

    format: str | None = None
    content_encoding: str | None = None
    json_type = "string"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        errors.append(_error(loc, "str type expected", "type_error.str"))
        return None

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string"}
        if self.format:
            s["format"] = self.format
        if self.content_encoding:
            s["contentEncoding"] = self.content_encoding
        return s


# What base64.b64decode(validate=True) accepts: the alphabet, in groups of four, padded.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


@dataclass(frozen=True)
class Base64(Str):
    """A base64 string (a document's `blob`)."""

    content_encoding: str | None = "base64"

    def schema(self) -> dict[str, Any]:
        return {**super().schema(), "pattern": BASE64_PATTERN}

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, str):
            errors.append(_error(loc, "str type expected", "type_error.str"))
            return None
        import base64
        import binascii

        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            errors.append(_error(loc, "value is not valid base64", "value_error.base64"))
            return None
        return value


@dataclass(frozen=True)
class Int(Type):
    minimum: int | None = None
    maximum: int | None = None
    json_type = "integer"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(_error(loc, "value is not a valid integer", "type_error.integer"))
            return None
        if isinstance(value, float):
            if not value.is_integer():
                errors.append(_error(loc, "value is not a valid integer", "type_error.integer"))
                return None
            value = int(value)
        if self.minimum is not None and value < self.minimum:
            errors.append(
                _error(
                    loc,
                    f"ensure this value is greater than or equal to {self.minimum}",
                    "value_error.number.not_ge",
                    limit_value=self.minimum,
                )
            )
            return None
        if self.maximum is not None and value > self.maximum:
            errors.append(
                _error(
                    loc,
                    f"ensure this value is less than or equal to {self.maximum}",
                    "value_error.number.not_le",
                    limit_value=self.maximum,
                )
            )
            return None
        return value

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


@dataclass(frozen=True)
class Num(Type):
    json_type = "number"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        errors.append(_error(loc, "value is not a valid float", "type_error.float"))
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "number"}


@dataclass(frozen=True)
class Enum(Type):
    """One of a few integers (a status code)."""

    values: tuple[int, ...] = ()
    json_type = "integer"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if value not in self.values or isinstance(value, bool):
            allowed = ", ".join(str(v) for v in self.values)
            msg = f"value is not a valid enumeration member; permitted: {allowed}"
            errors.append(_error(loc, msg, "type_error.enum"))
            return None
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "enum": list(self.values)}


@dataclass(frozen=True)
class Obj(Type):
    """A free-form JSON object (`parameters`, `tags`)."""

    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": True}


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    json_type = "array"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, list):
            errors.append(_error(loc, "value is not a valid list", "type_error.list"))
            return None
        item = self.item
        return [item.check(v, (*loc, i), errors) for i, v in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.item.schema()}


@dataclass(frozen=True)
class MapOf(Type):
    value: Type
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        inner = self.value
        return {k: inner.check(v, (*loc, k), errors) for k, v in value.items()}

    def schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.schema()}


@dataclass(frozen=True)
class Ref(Type):
    """Another model, by name (models may refer to themselves: a Document's chunks are Documents)."""

    name: str
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        return MODELS[self.name].check(value, loc, errors)

    def schema(self) -> dict[str, Any]:
        return {"$ref": SCHEMA_PREFIX + self.name}


@dataclass(frozen=True)
class OneOf(Type):
    """One of several types that differ in their JSON type (`data`: a list of documents, or `{"docs": [...]}`).
    A value is checked against the option of its JSON type only, so errors point inside it; a value of no
    option's type gets every option's type error, as pydantic reports a Union."""

    options: tuple[Type, ...]

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        kind = _json_type(value)
        for option in self.options:
            if option.json_type == kind:
                return option.check(value, loc, errors)
        for option in self.options:
            option.check(value, loc, errors)
        return None

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [o.schema() for o in self.options]}


@dataclass(frozen=True)
class NdArrayT(Type):
    """An array as JSON carries it: a number, or a list (nested for more dimensions) of numbers or booleans,
    rectangular. Checked here for types and shape, so that the error names the field."""

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> Any:
        if _is_number(value):
            return value
        if not isinstance(value, list):
            errors.append(_error(loc, "value is not a valid list", "type_error.list"))
            return None
        shape: list[int] = []
        probe: Any = value
        while isinstance(probe, list):
            shape.append(len(probe))
            if not probe:
                break
            probe = probe[0]
        # Iterative walk: every leaf at the same depth, every list at a depth of the length its shape says.
        stack: list[tuple[Any, int]] = [(value, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == len(shape):
                if isinstance(node, list):
                    errors.append(
                        _error(loc, f"ragged nested list: not an array of shape {tuple(shape)}", "value_error.ndarray")
                    )
                    return None
                if not _is_number(node) and not isinstance(node, bool):
                    errors.append(_error(loc, "array values must be numbers or booleans", "type_error.ndarray"))
                    return None
                continue
            if not isinstance(node, list) or len(node) != shape[depth]:
                errors.append(
                    _error(loc, f"ragged nested list: not an array of shape {tuple(shape)}", "value_error.ndarray")
                )
                return None
            stack.extend((child, depth + 1) for child in node)
        return value

    def schema(self) -> dict[str, Any]:
        return {"$ref": SCHEMA_PREFIX + "NdArray"}

    def nullable_schema(self) -> dict[str, Any]:
        return {"anyOf": [self.schema(), {"type": "null"}]}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---- models --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One key of a model. `name` is the key the schema shows (camelCase in Jina's HTTP models); `key` is the
    key of the cleaned value; `also` lists other spellings a request may use (snake_case)."""

    name: str
    type: Type
    key: str = ""
    also: tuple[str, ...] = ()
    nullable: bool = True
    required: bool = False
    default: Any = MISSING
    description: str = ""
    example: Any = MISSING
    title: str = ""

    @property
    def out_key(self) -> str:
        return self.key or self.name

    def schema(self) -> dict[str, Any]:
        s = self.type.nullable_schema() if self.nullable else self.type.schema()
        s = dict(s)
        s["title"] = self.title or _title(self.name)
        if self.description:
            s["description"] = self.description
        if self.default is not MISSING:
            s["default"] = self.default
        if self.example is not MISSING:
            s["examples"] = [self.example]
        return s


@dataclass(frozen=True)
class Model:
    name: str
    fields: tuple[Field, ...]
    description: str = ""
    example: Any = MISSING
    json_type = "object"

    def check(self, value: Any, loc: Loc, errors: list[Error]) -> dict[str, Any] | None:
        """The cleaned value (keys `Field.out_key`; absent or null fields as their default or None)."""
        if not isinstance(value, dict):
            errors.append(_error(loc, "value is not a valid dict", "type_error.dict"))
            return None
        out: dict[str, Any] = {}
        for f in self.fields:
            used, raw = f.name, value.get(f.name)
            if raw is None:
                used, raw = next(((k, value[k]) for k in f.also if value.get(k) is not None), (used, None))
            if raw is not None:
                out[f.out_key] = f.type.check(raw, (*loc, used), errors)
                continue
            present = any(k in value for k in (f.name, *f.also))
            if f.required and not present:
                errors.append(_error((*loc, f.name), "field required", "value_error.missing"))
            elif not f.nullable and present:
                errors.append(_error((*loc, f.name), "none is not an allowed value", "type_error.none.not_allowed"))
            out[f.out_key] = None if f.default is MISSING else f.default
        return out

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "type": "object",
            "title": self.name,
            "properties": {f.name: f.schema() for f in self.fields},
        }
        # A field's other names (`target_executor` for `targetExecutor`) are read and checked like the field, so
        # the document says so: as extra keys they would otherwise be schema-valid with any value, and the door
        # would refuse schema-valid bodies. Pattern properties, because Jina's schema lists only the main names.
        aliases = {
            f"^{re.escape(k)}$": {**{a: v for a, v in f.schema().items() if a != "default"}, "title": _title(k)}
            for f in self.fields
            for k in f.also
        }
        if aliases:
            s["patternProperties"] = aliases
        required = [f.name for f in self.fields if f.required]
        if required:
            s["required"] = required
        if self.description:
            s["description"] = self.description
        if self.example is not MISSING:
            s["examples"] = [self.example]
        return s


def _title(name: str) -> str:
    # pydantic's titles: "parent_id" -> "Parent Id", "execEndpoint" -> "Execendpoint".
    return " ".join(part.capitalize() for part in name.split("_"))


def validate(model: Model, body: Any) -> tuple[dict[str, Any] | None, list[Error]]:
    """Check a request body against `model`: (the cleaned value, []) or (None, errors with `loc` from "body")."""
    errors: list[Error] = []
    cleaned = model.check(body, ("body",), errors)
    return (None, errors) if errors else (cleaned, [])


# ---- the models of Jina's HTTP gateway (docarray < 0.30) -------------------------------------------

_S = Str()
_NUM = Num()
_DOC_LIST = ListOf(Ref("Document"))

DESCRIPTION_DATA = (
    'The documents to send: a list of Document objects, or an object `{"docs": [...]}`. May be left out '
    "(a request without documents)."
)
DESCRIPTION_TARGET = (
    "A regular expression: only the Executors whose name matches it process the request (Python `re.match`). "
    "Also accepted as `target_executor`."
)
DESCRIPTION_PARAMETERS = "Parameters for the Executors (numbers come back as floats, as through protobuf's Struct)."
DESCRIPTION_ENDPOINT = (
    "The Executor endpoint, by convention starting with `/`: Executors bound to it with "
    "`@requests(on=...)` receive the request. Also accepted as `exec_endpoint`."
)

NAMED_SCORE = Model(
    "NamedScore",
    (
        Field("value", _NUM),
        Field("op_name", _S),
        Field("description", _S),
        Field("ref_id", _S),
    ),
    description="A score or evaluation of a Document.",
)

DOCUMENT = Model(
    "Document",
    (
        Field("id", _S, description="Made by the gateway when left out (32 hex characters)."),
        Field("parent_id", _S),
        Field("granularity", Int(0, UINT32_MAX)),
        Field("adjacency", Int(0, UINT32_MAX)),
        Field("blob", Base64(), description="Bytes, base64-encoded."),
        Field("tensor", NdArrayT(), description="A number or a (nested, rectangular) list of numbers."),
        Field("mime_type", _S),
        Field("text", _S),
        Field("weight", _NUM),
        Field("uri", _S),
        Field("tags", Obj()),
        Field("offset", _NUM),
        Field("location", ListOf(_NUM)),
        Field("embedding", NdArrayT(), description="A number or a (nested, rectangular) list of numbers."),
        Field("modality", _S),
        Field("evaluations", MapOf(Ref("NamedScore"))),
        Field("scores", MapOf(Ref("NamedScore"))),
        Field("chunks", _DOC_LIST),
        Field("matches", _DOC_LIST),
    ),
    description=(
        "A Document with the fields of docarray < 0.30. Keys stay snake_case. In a request every field may be "
        "left out (unknown keys are ignored); in a response every field is present, null when not set."
    ),
)

DOCS_OBJECT = Model(
    "DocsObject",
    (Field("docs", _DOC_LIST, required=True),),
    description='The documents wrapped in an object: `{"docs": [...]}`.',
)

_REQUEST_FIELDS = (
    Field(
        "data",
        OneOf((_DOC_LIST, Ref("DocsObject"))),
        description=DESCRIPTION_DATA,
        example=[{"text": "hello, world!"}],
    ),
    Field(
        "targetExecutor",
        _S,
        key="target_executor",
        also=("target_executor",),
        description=DESCRIPTION_TARGET,
        example="",
    ),
    Field("parameters", Obj(), description=DESCRIPTION_PARAMETERS, example={}),
)

JINA_REQUEST = Model(
    "JinaRequestModel",
    _REQUEST_FIELDS,
    description="A request to a fixed endpoint (the path names it). Extra keys are ignored.",
    example={"data": [{"text": "hello world"}]},
)

JINA_ENDPOINT_REQUEST = Model(
    "JinaEndpointRequestModel",
    (
        *_REQUEST_FIELDS,
        Field(
            "execEndpoint",
            _S,
            key="exec_endpoint",
            also=("exec_endpoint",),
            default="/",
            description=DESCRIPTION_ENDPOINT,
            example="/",
        ),
    ),
    description="A request to any Executor endpoint (`execEndpoint`, default `/`). Extra keys are ignored.",
    example={"data": [{"text": "hello world"}], "execEndpoint": "/index"},
)

EXCEPTION = Model(
    "ExceptionProto",
    (
        Field(
            "name",
            _S,
            nullable=False,
            description="The exception's class name (`UpstreamError` when the upstream Flow could not be reached).",
        ),
        Field("args", ListOf(_S), nullable=False),
        Field("stacks", ListOf(_S), nullable=False, description="The traceback, one line group per item."),
        Field("executor", _S, nullable=False, description="The class of the Executor that raised."),
    ),
)

STATUS = Model(
    "StatusProto",
    (
        Field("code", Enum((0, 1)), nullable=False, description="0: success, 1: error."),
        Field("description", _S, nullable=False),
        Field("exception", Ref("ExceptionProto")),
    ),
)

HEADER = Model(
    "HeaderProto",
    (
        Field("requestId", _S, nullable=False, description="Made by the gateway: 32 hex characters."),
        Field("status", Ref("StatusProto"), description="null on success; code 1 and the exception on failure."),
        Field("execEndpoint", _S, nullable=False),
        Field("targetExecutor", _S, nullable=False, description='Always "" in answers, as a Jina gateway writes.'),
    ),
)

ROUTE = Model(
    "RouteProto",
    (
        Field("executor", _S, nullable=False, description="`gateway` for the gateway's own span, else a Deployment."),
        Field("startTime", Str(format="date-time"), description="UTC, Python isoformat (`...+00:00`)."),
        Field(
            "endTime",
            Str(format="date-time"),
            description="null when the Executor did not process the request (`targetExecutor` did not match it).",
        ),
        Field("status", Ref("StatusProto")),
    ),
)

JINA_RESPONSE = Model(
    "JinaResponseModel",
    (
        Field("header", Ref("HeaderProto"), nullable=False),
        Field("parameters", Obj()),
        Field("routes", ListOf(Ref("RouteProto"))),
        Field("data", _DOC_LIST),
    ),
    description=(
        "The answer, in the shape of a Jina HTTP gateway's `JinaResponseModel`: camelCase keys, nulls kept; the "
        "documents in `data` keep snake_case keys. An Executor's error still answers 200, with `header.status`."
    ),
)

VALIDATION_ERROR = Model(
    "ValidationError",
    (
        Field("loc", ListOf(OneOf((Str(), Int()))), nullable=False, required=True, title="Location"),
        Field("msg", _S, nullable=False, required=True, title="Message"),
        Field("type", _S, nullable=False, required=True, title="Error Type"),
    ),
)

HTTP_VALIDATION_ERROR = Model(
    "HTTPValidationError",
    (Field("detail", ListOf(Ref("ValidationError")), nullable=False),),
    description="What a request that does not fit its model gets (422), FastAPI-style: each error's `loc` names "
    'the field (`["body", "data", 0, "text"]`).',
)

HTTP_ERROR = Model("HTTPError", (Field("detail", _S, nullable=False, required=True),))

HEALTH = Model("JinaHealthModel", (), description="The gateway's health check: `{}`.")

INFO = Model(
    "JinaInfoModel",
    (Field("jina", Obj(), nullable=False, required=True), Field("envs", Obj(), nullable=False, required=True)),
    description="Versions and settings of the relay.",
)

DRY_RUN = Model(
    "DryRunStatus",
    (
        Field("code", Enum((0, 1)), nullable=False),
        Field("description", _S, nullable=False),
        Field("exception", Obj(), description="The exception's name, args, stacks and executor; null on success."),
    ),
    description="The result of pushing an empty request through the whole Flow (HTTP 200 either way).",
)

MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        NAMED_SCORE,
        DOCUMENT,
        DOCS_OBJECT,
        JINA_REQUEST,
        JINA_ENDPOINT_REQUEST,
        EXCEPTION,
        STATUS,
        HEADER,
        ROUTE,
        JINA_RESPONSE,
        VALIDATION_ERROR,
        HTTP_VALIDATION_ERROR,
        HTTP_ERROR,
        HEALTH,
        INFO,
        DRY_RUN,
    )
}

NDARRAY_SCHEMA: dict[str, Any] = {
    "title": "NdArray",
    "description": "A number, or a list of numbers (booleans too), nested for more dimensions; rectangular.",
    "anyOf": [
        {"type": "number"},
        {"type": "array", "items": {"anyOf": [{"type": ["number", "boolean"]}, {"$ref": SCHEMA_PREFIX + "NdArray"}]}},
    ],
}


# ---- the OpenAPI document ------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One route of the door (or of the listener it sits behind)."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    request: Model | None = None
    response: Model | None = None
    tags: tuple[str, ...] = ()
    data: bool = False  # runs a request through the Flow: 422/503 (and 401/413) answers too
    content_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


def _crud(method: str, path: str) -> Operation:
    name = path.strip("/")
    return Operation(
        method,
        path,
        f"_{name}_{name}_{method}",
        "/" + name.capitalize(),
        f'Send documents to the Flow\'s `{path}` endpoint: Executors bound with `@requests(on="{path}")` '
        "process them. The body has no `execEndpoint`: the path is the endpoint.",
        request=JINA_REQUEST,
        response=JINA_RESPONSE,
        tags=("CRUD",),
        data=True,
    )


DATA_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/post",
        "post_post_post",
        "Post a data request to some endpoint",
        "Send documents to any Executor endpoint (`execEndpoint`, default `/`), as `Client.post(endpoint, ...)` "
        "does. Executor errors answer 200 with `header.status.code` 1; an unreachable upstream Flow answers 503.",
        request=JINA_ENDPOINT_REQUEST,
        response=JINA_RESPONSE,
        tags=("Debug",),
        data=True,
    ),
    _crud("post", "/index"),
    _crud("post", "/search"),
    _crud("put", "/update"),
    _crud("delete", "/delete"),
)

LISTENER_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/",
        "_gateway_health__get",
        "Get the health of the gateway",
        "Always `{}` while the relay is up (no token needed).",
        response=HEALTH,
    ),
    Operation(
        "get",
        "/status",
        "_status_status_get",
        "Get the status of the relay",
        "Versions, Executors and counters.",
        response=INFO,
        tags=("Debug",),
    ),
    Operation(
        "get",
        "/dry_run",
        "_flow_health_dry_run_get",
        "Get the readiness of the Flow",
        "Sends an empty request through the complete Flow to check that every Executor answers.",
        response=DRY_RUN,
    ),
)

METRICS_OPERATION = Operation(
    "get",
    "/metrics",
    "metrics_metrics_get",
    "Prometheus metrics",
    "The relay's metrics in the Prometheus text format.",
    tags=("Debug",),
    content_type="text/plain",
)

TAGS = (
    {"name": "Debug", "description": "Debugging interface: `/post` takes any endpoint; `/status` and `/metrics`."},
    {"name": "CRUD", "description": "One route per conventional endpoint (`/index`, `/search`, `/update`, `/delete`)."},
)


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
