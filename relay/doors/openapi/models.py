"""The models and routes of Jina's HTTP gateway (docarray < 0.30, JINA-WIRE.md §8.1), in relay.doors.openapi.types.

The request models `JinaRequestModel` / `JinaEndpointRequestModel`, the response `JinaResponseModel` (nulls
allowed where the gateway writes them), `HTTPValidationError`, and the `Operation`s the HTTP door serves.
Request documents are read as the WebSocket door reads them (relay.wire.documents): unknown keys ignored, a
number accepted where a string is expected, `null` meaning "not set". Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relay.doors.openapi.types import (
    MODELS,
    SCHEMA_PREFIX,
    UINT32_MAX,
    Base64,
    Enum,
    Field,
    Int,
    ListOf,
    MapOf,
    Model,
    NdArrayT,
    Num,
    Obj,
    OneOf,
    Ref,
    Str,
)

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

MODELS.update(
    (m.name, m)
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
)

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


