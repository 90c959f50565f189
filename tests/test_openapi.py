"""The HTTP door's OpenAPI document (`GET /openapi.json`, relay/openapi.py), checked three ways.

* It is a valid OpenAPI 3.1 document (openapi-spec-validator), with every route of JINA-WIRE.md §8.1 and the
  listener's own GET routes, and it covers what the captured schema of a real Jina 3.34 HTTP gateway has: the same
  paths and methods, the same properties in the request, response, header, route and document models.
* It is generated from the same models that validate requests: the JSON Schema of a model is the model's, and its
  examples pass both the schema and the door.
* schemathesis drives the live relay (over a real socket) for every operation in the document, with up to 25
  generated examples per operation and per phase, against relays whose Executors succeed, fail half the time,
  and whose upstream is unreachable (the 503 path). No answer may be a server error other than the documented
  503, and every answer must conform to the schema (status code, content type, headers, body). Schema-valid
  requests must be accepted (positive data acceptance), and on the door's routes other methods must answer 405.
  Left out: negative data rejection, because, like a Jina gateway (pydantic v1) and the WebSocket door, the door
  takes a number where a string is expected (`"targetExecutor": 0`), which the schema does not advertise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from http_door_harness import HttpRelay, serve_http
from jina_peer import free_port, shared_dir
from openapi_spec_validator import validate as validate_openapi

from relay.doors.openapi.document import used_models
from relay.doors.openapi.models import DATA_OPERATIONS, JINA_ENDPOINT_REQUEST, JINA_REQUEST, LISTENER_OPERATIONS
from relay.doors.openapi.types import validate

FLOW = ("-e", "upper", "-e", "sleeper=sleep:1ms")
MAX_EXAMPLES = 25
DOOR_PATHS = {op.path for op in DATA_OPERATIONS}
EXPECTED_OPERATIONS = {
    ("/post", "post"),
    ("/index", "post"),
    ("/search", "post"),
    ("/update", "put"),
    ("/delete", "delete"),
    ("/", "get"),
    ("/status", "get"),
    ("/dry_run", "get"),
    ("/metrics", "get"),
}


def _request(relay: HttpRelay, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, Any]:
    """One request to the relay, never through a proxy; (status, JSON body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(relay.http_url + path, data=body, method=method, headers=headers)
    try:
        with opener.open(req, timeout=20) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _get_json(relay: HttpRelay, path: str, **headers: str) -> Any:
    status, body = _request(relay, "GET", path, **headers)
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def relay() -> Iterator[HttpRelay]:
    with serve_http(*FLOW) as r:
        yield r


@pytest.fixture(scope="module")
def document(relay: HttpRelay) -> dict[str, Any]:
    return _get_json(relay, "/openapi.json")


def _jina_schema() -> dict[str, Any]:
    path = shared_dir() / "protocol" / "captures" / "a_legacy_http" / "get__openapi.json.body"
    if not path.is_file():
        reason = f"the captured Jina OpenAPI document is not at {path}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return orjson.loads(path.read_bytes())


# ---- the document ---------------------------------------------------------------------------------


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate_openapi(document)  # raises on any error; picks the 3.1 validator from "openapi"
    assert document["openapi"] == "3.1.0"
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == EXPECTED_OPERATIONS
    for path in DOOR_PATHS:
        (op,) = document["paths"][path].values()
        assert op["requestBody"]["required"] is True
        assert set(op["responses"]) == {"200", "413", "422", "503"}
        assert "example" in op["requestBody"]["content"]["application/json"]
    assert len({op["operationId"] for item in document["paths"].values() for op in item.values()}) == len(operations)


def test_document_with_auth_token_is_valid() -> None:
    with serve_http(*FLOW, "--auth-token", "t0ken") as relay:
        document = _get_json(relay, "/openapi.json", Authorization="Bearer t0ken")
    validate_openapi(document)
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "security" not in document["paths"]["/"]["get"]  # the health check needs no token
    for path in DOOR_PATHS:
        (op,) = document["paths"][path].values()
        assert op["security"] == [{"bearerAuth": []}]
        assert "401" in op["responses"]


def test_covers_the_jina_gateway_schema(document: dict[str, Any]) -> None:
    jina = _jina_schema()
    theirs = {(p, m) for p, item in jina["paths"].items() for m in item}
    ours = {(p, m) for p, item in document["paths"].items() for m in item}
    assert theirs <= ours
    for path, method in theirs:
        assert document["paths"][path][method]["operationId"] == jina["paths"][path][method]["operationId"]
    ours_s, theirs_s = document["components"]["schemas"], jina["components"]["schemas"]
    same_properties = {
        "JinaEndpointRequestModel": "JinaEndpointRequestModel",
        "JinaRequestModel": "JinaRequestModel",
        "JinaResponseModel": "JinaResponseModel",
        "RouteProto": "RouteProto",
        "StatusProto": "StatusProto",
        "ExceptionProto": "ExceptionProto",
        "Document": "PydanticDocument",
        "NamedScore": "_NamedScore",
        "HTTPValidationError": "HTTPValidationError",
        "ValidationError": "ValidationError",
    }
    for mine, jinas in same_properties.items():
        assert list(ours_s[mine]["properties"]) == list(theirs_s[jinas]["properties"]), mine
    # Jina's HeaderProto also lists `timeout`, which its answers never carry.
    assert list(ours_s["HeaderProto"]["properties"]) == [
        k for k in theirs_s["HeaderProto"]["properties"] if k != "timeout"
    ]
    assert ours_s["JinaEndpointRequestModel"]["properties"]["execEndpoint"]["default"] == "/"


def _resolver(document: dict[str, Any]) -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource("urn:openapi", resource)


def _validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:openapi#/components/schemas/{name}"}, registry=_resolver(document)
    )


def test_schemas_come_from_the_models(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in used_models([*DATA_OPERATIONS, *LISTENER_OPERATIONS]):
        assert schemas[model.name] == model.schema()
    for model in (JINA_ENDPOINT_REQUEST, JINA_REQUEST):
        example = model.example
        _validator(document, model.name).validate(example)
        cleaned, errors = validate(model, example)
        assert errors == [] and cleaned is not None


def test_answers_conform_to_the_response_model(relay: HttpRelay, document: dict[str, Any]) -> None:
    response = _validator(document, "JinaResponseModel")
    invalid = _validator(document, "HTTPValidationError")
    for body in (
        {"data": [{"text": "a", "tensor": [[1, 2]], "blob": "aGk=", "scores": {"s": {"value": 1}}}]},
        {"data": {"docs": [{"chunks": [{"text": "c"}], "matches": [{"id": "m"}]}]}, "targetExecutor": "upper"},
        {},
    ):
        status, answer = _request(relay, "POST", "/post", orjson.dumps(body), **{"Content-Type": "application/json"})
        assert status == 200, answer
        response.validate(answer)
    status, answer = _request(relay, "POST", "/post", b"{x", **{"Content-Type": "application/json"})
    assert status == 422
    invalid.validate(answer)


# ---- schemathesis against the live relay ----------------------------------------------------------

RELAYS = {
    "executors": FLOW,
    "failing-executor": ("-e", "upper", "-e", "fail:0.5"),
    "upstream-down": ("--upstream", "ws://127.0.0.1:{dead}", "--upstream-timeout", "2s"),
}
DOOR_PATH_REGEX = "^(" + "|".join(sorted(DOOR_PATHS)) + ")$"
# Checks left out everywhere: see the module docstring. On the listener's GET routes also `unsupported_method`:
# the listener answers 404, not 405, to other methods there. With the upstream down, every data request answers
# the documented 503 (as Jina's network error): there `not_a_server_error` cannot hold, and
# `status_code_conformance` (503 is declared) and `response_schema_conformance` judge the answers.
EXCLUDED = {"door": ["negative_data_rejection"], "listener": ["negative_data_rejection", "unsupported_method"]}
EXCLUDED_FOR_RELAY = {"upstream-down": ["not_a_server_error"]}
ST_TIMEOUT_S = 300


def _schemathesis(relay: HttpRelay, part: str, excluded: list[str], report: Path) -> subprocess.CompletedProcess[str]:
    """Run schemathesis's CLI on one part of the document ("door" or "listener"), bounded in examples and time."""
    cmd = [
        str(Path(sys.executable).with_name("st")),
        "run",
        relay.http_url + "/openapi.json",
        "--url",
        relay.http_url,
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(excluded),
        "--include-path-regex" if part == "door" else "--exclude-path-regex",
        DOOR_PATH_REGEX,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["SCHEMATHESIS_HOOKS"] = "schemathesis_hooks"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    # In the report's folder: the CLI keeps a cache of its findings (.schemathesis/) in its working directory.
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=ST_TIMEOUT_S, env=env, check=False, cwd=report.parent
    )


def _summary(report: Path) -> dict[str, dict[str, Counter[Any]]]:
    """Per operation ("POST /post"): test cases by phase, and the status codes of the answers."""
    out: dict[str, dict[str, Counter[Any]]] = {}
    for line in report.read_text().splitlines():
        finished = orjson.loads(line).get("ScenarioFinished") if line.strip() else None
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        if "label" not in recorder:
            continue
        entry = out.setdefault(recorder["label"], {"cases": Counter(), "statuses": Counter()})
        entry["cases"][finished["phase"]] += len(recorder.get("cases", {}))
        for interaction in recorder.get("interactions", {}).values():
            entry["statuses"][(interaction.get("response") or {}).get("status_code")] += 1
    return out


PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@pytest.mark.timeout(ST_TIMEOUT_S + 60)
@pytest.mark.parametrize("relay_kind", list(RELAYS))
@pytest.mark.parametrize("part", ["door", "listener"])
def test_schemathesis(relay_kind: str, part: str, document: dict[str, Any], tmp_path: Path) -> None:
    args = [a.replace("{dead}", str(free_port())) for a in RELAYS[relay_kind]]
    report = tmp_path / "events.ndjson"
    with serve_http(*args) as relay:
        done = _schemathesis(relay, part, EXCLUDED[part] + EXCLUDED_FOR_RELAY.get(relay_kind, []), report)
    output = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    summary = _summary(report)
    expected = {f"{m.upper()} {p}" for p, m in EXPECTED_OPERATIONS if (p in DOOR_PATHS) == (part == "door")}
    assert set(summary) == expected, output
    for label, entry in summary.items():
        method, path = label.split(" ", 1)
        documented = {int(code) for code in document["paths"][path][method.lower()]["responses"]}
        assert 1 <= entry["cases"]["fuzzing"] <= MAX_EXAMPLES, (label, entry)
        # Other methods are probed too: 405, as a Jina (FastAPI) gateway answers them.
        probed = {405}
        assert set(entry["statuses"]) <= documented | probed, (label, entry)
        if part == "door" and relay_kind != "upstream-down":
            assert entry["statuses"][200] > 0 and entry["statuses"][422] > 0, (label, entry)
        if relay_kind == "upstream-down" and part == "door":
            assert entry["statuses"][503] > 0 and entry["statuses"][200] == 0, (label, entry)
