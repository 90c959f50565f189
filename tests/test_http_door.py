"""The HTTP door (relay/http_door.py): Jina's HTTP gateway routes on the relay's port, driven by curl.

* The commands of Jina's guide to third-party clients (HTTP) run verbatim with curl against the relay
  (`-e upper -e sleeper=sleep:1ms`, the shape of the Flow the captures were taken from) and their answers have
  the shape of the captured answers of a real Jina 3.34 HTTP gateway
  (shared/protocol/captures/a_legacy_http/post_*.txt), key by key: status line, content type, `header`,
  `parameters`, route entries and their timestamps (`+00:00`), every document field.
* An Executor's error answers 200 with `header.status.code` 1 (compared with the captured one); malformed JSON
  answers exactly the captured 422; a body that does not fit its model answers 422 naming the field; an
  unreachable upstream answers 503 with `UpstreamError`; CRUD routes take their verb only (405 otherwise).
* CORS (`--cors`, `--allowed-origins`), `--auth-token`, the body limit, and the counters and Prometheus metrics.
* In-process (no socket): `HttpDoor.handle` directly, and the timestamp format against `datetime.isoformat`.

Against a real Jina HTTP gateway (marked `jina`, needs the peer venv): the same requests to both, and the answers
compared key by key.

Everything is on 127.0.0.1; the relay is `flowrelay serve`, started by tests/http_door_harness.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from http_door_harness import HttpRelay, serve_http
from hypothesis import given, settings
from hypothesis import strategies as st
from jina_peer import RunningFlow, flow_fixture, free_port, shared_dir
from relay_process import http_get, run_relay

from relay.config import RelayConfig
from relay.doors.http import HttpDoor
from relay.executors import Chain
from relay.gateway import Gateway
from relay.net.http_types import HttpRequest
from relay.wire.messages import format_isoformat

FLOW = ("-e", "upper", "-e", "sleeper=sleep:1ms")  # gateway -> upper -> sleeper, as the captured Flow
CURL_TIMEOUT_S = 30
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")

# Jina's guide to third-party clients, HTTP section (docs/concepts/client/third-party-clients.md), with
# localhost:12345 as PORT; and the command this project's brief quotes from it.
GUIDE_COMMANDS = {
    "post_index": """curl -X POST http://127.0.0.1:PORT/post -H 'Content-Type: application/json' -d '{"data":[{"text": "hello world"}],"execEndpoint": "/index"}'""",  # noqa: E501
    "post_search": """curl --request POST 'http://127.0.0.1:PORT/post' --header 'Content-Type: application/json' -d '{"data": [{"text": "hello world"}],"execEndpoint": "/search"}'""",  # noqa: E501
    "crud_search": """curl --request POST 'http://127.0.0.1:PORT/search' --header 'Content-Type: application/json' -d '{"data": [{"text": "hello world"}]}'""",  # noqa: E501
    "crud_index": """curl --request POST 'http://127.0.0.1:PORT/index' --header 'Content-Type: application/json' -d '{"data": [{"text": "hello world"}]}'""",  # noqa: E501
}


# ---- helpers -------------------------------------------------------------------------------------


def captures_dir() -> Path:
    path = shared_dir() / "protocol" / "captures" / "a_legacy_http"
    if not path.is_dir():
        reason = f"the captured Jina HTTP answers are not at {path}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Answer:
    """One HTTP answer: status code, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_http(raw: bytes) -> Answer:
    """A `curl -i` output (or a capture of one): status line, headers, blank line, body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


def capture(name: str) -> Answer:
    raw = (captures_dir() / name).read_bytes()
    if raw.startswith(b"HTTP/"):
        return parse_http(raw)
    return Answer(200, {}, raw.strip())  # a body-only capture


def run_curl(command: str) -> Answer:
    """Run a curl command line (shell syntax) with `-s -i` added, never through a proxy."""
    argv = [*shlex.split(command), "-s", "-i", "--noproxy", "*", "--max-time", str(CURL_TIMEOUT_S)]
    assert argv[0] == "curl"
    out = subprocess.run(argv, capture_output=True, timeout=CURL_TIMEOUT_S + 5, check=True).stdout
    return parse_http(out)


def curl(relay: HttpRelay, method: str, path: str, body: Any = None, *extra: str, raw: bytes | None = None) -> Answer:
    argv = ["curl", "-X", method, relay.http_url + path, *extra]
    if raw is not None:
        argv += ["--data-binary", "@-"]
    elif body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        raw = orjson.dumps(body)
    argv += ["-s", "-i", "--noproxy", "*", "--max-time", str(CURL_TIMEOUT_S)]
    out = subprocess.run(argv, input=raw, capture_output=True, timeout=CURL_TIMEOUT_S + 5, check=True).stdout
    return parse_http(out)


def shape(value: Any, skip: frozenset[str] = frozenset(), path: str = "") -> Any:
    """The structure of a JSON value: keys in order, value kinds, timestamp and id formats; a list is the list
    of its elements' distinct shapes. Paths in `skip` ("data.*.tags") are left out."""
    if path in skip:
        return "skipped"
    if isinstance(value, dict):
        return {"{}": [(k, shape(v, skip, f"{path}.{k}" if path else k)) for k, v in value.items()]}
    if isinstance(value, list):
        shapes: list[Any] = []
        for v in value:
            s = shape(v, skip, f"{path}.*")
            if s not in shapes:
                shapes.append(s)
        return ["[]", shapes]
    if isinstance(value, str):
        if ISO_UTC.match(value):
            return "timestamp+00:00"
        if HEX32.match(value):
            return "hex32"
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null"


def assert_like_capture(ours: Answer, theirs: Answer, skip: frozenset[str] = frozenset()) -> None:
    """Status, content type and body shape as the captured answer; route names, endpoint, parameters equal."""
    assert ours.status == theirs.status
    if theirs.headers:
        assert ours.headers["content-type"] == theirs.headers["content-type"]
    a, b = ours.json(), theirs.json()
    assert shape(a, skip) == shape(b, skip)
    assert [r["executor"] for r in a["routes"]] == [r["executor"] for r in b["routes"]]
    assert a["header"]["execEndpoint"] == b["header"]["execEndpoint"]
    assert a["parameters"] == b["parameters"]
    assert [list(d) for d in a["data"]] == [list(d) for d in b["data"]]


@pytest.fixture(scope="module")
def relay() -> Iterator[HttpRelay]:
    with serve_http(*FLOW) as r:
        yield r


# ---- the guide's commands, against the captures ----------------------------------------------------


@pytest.mark.parametrize(
    ("command", "captured", "endpoint"),
    [
        ("post_index", "post_post.txt", "/index"),
        ("post_search", "post_search.txt", "/search"),
        ("crud_search", "post_search.txt", "/search"),
        ("crud_index", "post_post.txt", "/index"),
    ],
)
def test_guide_commands_answer_like_jina(relay: HttpRelay, command: str, captured: str, endpoint: str) -> None:
    ours = run_curl(GUIDE_COMMANDS[command].replace("PORT", str(relay.port)))
    body = ours.json()
    assert ours.status == 200, body
    assert body["header"]["execEndpoint"] == endpoint
    assert body["header"]["status"] is None
    assert HEX32.match(body["header"]["requestId"])
    assert [d["text"] for d in body["data"]] == ["HELLO WORLD"]
    # The captured Flow's Executors tag documents (seen_by, slept_ms); the built-in ones do not.
    assert_like_capture(ours, capture(captured), frozenset({"data.*.tags"}))
    gateway, upper, sleeper = body["routes"]
    assert gateway["startTime"] <= upper["startTime"] <= upper["endTime"] <= sleeper["endTime"] <= gateway["endTime"]


def test_parameters_come_back_as_struct_values(relay: HttpRelay) -> None:
    ours = curl(relay, "POST", "/index", {"data": [{"text": "hello index"}], "parameters": {"k": 1}})
    assert_like_capture(ours, capture("post_index.txt"), frozenset({"data.*.tags"}))
    assert ours.json()["parameters"] == {"k": 1.0}
    assert b'"k":1.0' in ours.body


def test_no_data_answers_an_empty_list(relay: HttpRelay) -> None:
    ours = curl(relay, "POST", "/post", {"execEndpoint": "/index"})
    assert_like_capture(ours, capture("post_nodata.txt"))
    assert ours.json()["data"] == []


def test_target_executor(relay: HttpRelay) -> None:
    ours = curl(relay, "POST", "/post", {"data": [{"text": "x"}], "execEndpoint": "/index", "targetExecutor": "upper"})
    # Jina writes the local time without a zone as the end of a route whose Executor did not run; we write null.
    assert_like_capture(ours, capture("post_target.txt"), frozenset({"data.*.tags", "routes"}))
    routes = ours.json()["routes"]
    assert [r["executor"] for r in routes] == ["gateway", "upper", "sleeper"]
    assert ISO_UTC.match(routes[1]["endTime"])
    assert routes[2]["endTime"] is None
    assert ours.json()["data"][0]["text"] == "X"


def test_executor_error_answers_200_with_status() -> None:
    with serve_http("-e", "upper=fail:/fail", "-e", "sleeper=sleep:1ms") as failing:
        ours = curl(failing, "POST", "/post", {"data": [{"text": "x"}], "execEndpoint": "/fail"})
    theirs = capture("post_fail_via_post.txt")
    assert_like_capture(ours, theirs)
    header = ours.json()["header"]
    assert header["status"]["code"] == 1
    assert header["status"]["exception"]["name"] == "ValueError"
    assert header["status"]["exception"]["executor"] == "FailExecutor"
    assert ours.json()["routes"][1]["status"] == header["status"]  # the failing Executor's route carries it too


def test_malformed_json_answers_as_jina(relay: HttpRelay) -> None:
    ours = curl(relay, "POST", "/post", None, "-H", "Content-Type: application/json", raw=b"{x")
    theirs = capture("post_malformed.txt")
    assert ours.status == theirs.status == 422
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.body == theirs.body


@pytest.mark.parametrize(
    ("method", "path", "captured"), [("POST", "/nope", "post_nope.txt"), ("POST", "/fail", "post_fail.txt")]
)
def test_unknown_routes_answer_404(relay: HttpRelay, method: str, path: str, captured: str) -> None:
    ours = curl(relay, method, path, {"data": []})
    theirs = capture(captured)
    assert (ours.status, ours.body) == (theirs.status, theirs.body)


# ---- 422 names the field -------------------------------------------------------------------------

UNPROCESSABLE = [
    ({"data": [{"text": ["a"]}]}, [(["body", "data", 0, "text"], "type_error.str")]),
    ({"data": 5}, [(["body", "data"], "type_error.list"), (["body", "data"], "type_error.dict")]),
    ({"parameters": 5}, [(["body", "parameters"], "type_error.dict")]),
    ({"execEndpoint": []}, [(["body", "execEndpoint"], "type_error.str")]),
    ({"exec_endpoint": {}}, [(["body", "exec_endpoint"], "type_error.str")]),
    ({"targetExecutor": True}, [(["body", "targetExecutor"], "type_error.str")]),
    ({"data": [{"granularity": "x"}]}, [(["body", "data", 0, "granularity"], "type_error.integer")]),
    ({"data": [{"adjacency": -1}]}, [(["body", "data", 0, "adjacency"], "value_error.number.not_ge")]),
    ({"data": [{"weight": "heavy"}]}, [(["body", "data", 0, "weight"], "type_error.float")]),
    ({"data": [{"tags": [1]}]}, [(["body", "data", 0, "tags"], "type_error.dict")]),
    ({"data": [{"blob": "not base64!"}]}, [(["body", "data", 0, "blob"], "value_error.base64")]),
    (
        {"data": {"docs": [{"embedding": [[1], [1, 2]]}]}},
        [(["body", "data", "docs", 0, "embedding"], "value_error.ndarray")],
    ),
    ({"data": [{"tensor": ["a"]}]}, [(["body", "data", 0, "tensor"], "type_error.ndarray")]),
    ({"data": [{"chunks": [{"text": {}}]}]}, [(["body", "data", 0, "chunks", 0, "text"], "type_error.str")]),
    (
        {"data": [{"scores": {"s": {"value": "x"}}}]},
        [(["body", "data", 0, "scores", "s", "value"], "type_error.float")],
    ),
    ({"data": [{"location": [1, "x"]}]}, [(["body", "data", 0, "location", 1], "type_error.float")]),
    ({"data": [{}, {"text": []}]}, [(["body", "data", 1, "text"], "type_error.str")]),
    ({"data": {"foo": []}}, [(["body", "data", "docs"], "value_error.missing")]),
    ([1], [(["body"], "type_error.dict")]),
]


@pytest.mark.parametrize(
    ("body", "expected"), UNPROCESSABLE, ids=[orjson.dumps(b).decode()[:40] for b, _ in UNPROCESSABLE]
)
def test_bad_body_answers_422_naming_the_field(
    relay: HttpRelay, body: Any, expected: list[tuple[list[Any], str]]
) -> None:
    answer = curl(relay, "POST", "/post", body)
    assert answer.status == 422
    assert answer.headers["content-type"] == "application/json"
    detail = answer.json()["detail"]
    assert [(e["loc"], e["type"]) for e in detail] == expected
    assert all(isinstance(e["msg"], str) and e["msg"] for e in detail)


@pytest.mark.parametrize(
    ("extra", "raw", "expected"),
    [
        (
            ("-H", "Content-Type: application/json"),
            b"",
            {"loc": ["body"], "msg": "field required", "type": "value_error.missing"},
        ),
        (
            ("-H", "Content-Type: application/json"),
            b"null",
            {"loc": ["body"], "msg": "field required", "type": "value_error.missing"},
        ),
        # curl's default for -d, and any other non-JSON type: the body is not the object the model wants (FastAPI).
        ((), b'{"data": []}', {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}),
        (
            ("-H", "Content-Type: text/plain"),
            b'{"data": []}',
            {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"},
        ),
    ],
    ids=["empty", "null", "form-urlencoded", "text-plain"],
)
def test_body_that_is_not_a_json_object(
    relay: HttpRelay, extra: tuple[str, ...], raw: bytes, expected: dict[str, Any]
) -> None:
    answer = curl(relay, "POST", "/post", None, *extra, raw=raw)
    assert answer.status == 422
    assert answer.json() == {"detail": [expected]}


def test_json_content_type_variants_are_accepted(relay: HttpRelay) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        answer = curl(
            relay, "POST", "/search", None, "-H", f"Content-Type: {content_type}", raw=b'{"data": [{"text": "a"}]}'
        )
        assert answer.status == 200, content_type


def test_json_nested_too_deep_is_refused(relay: HttpRelay) -> None:
    depth = 300
    raw = b'{"data": [{"tags": {"a": ' + b"[" * depth + b"]" * depth + b"}}]}"
    answer = curl(relay, "POST", "/post", None, "-H", "Content-Type: application/json", raw=raw)
    assert answer.status == 422
    assert answer.json()["detail"][0]["type"] == "value_error.nesting"


@pytest.mark.parametrize(
    ("raw", "pos", "error"),
    [
        (b'{"data": [}', 10, "Expecting value"),
        (b"  ", 2, "Expecting value"),
        (b"[1,", 3, "Expecting value"),
        (b'{"a": 1,}', 8, "Expecting property name enclosed in double quotes"),
    ],
)
def test_malformed_json_positions(relay: HttpRelay, raw: bytes, pos: int, error: str) -> None:
    answer = curl(relay, "POST", "/index", None, "-H", "Content-Type: application/json", raw=raw)
    assert answer.status == 422
    assert answer.json() == {
        "detail": [
            {
                "type": "json_invalid",
                "loc": ["body", pos],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error},
            }
        ]
    }


# ---- what is accepted ----------------------------------------------------------------------------


def test_spellings_and_forms_jina_accepts(relay: HttpRelay) -> None:
    answer = curl(
        relay,
        "POST",
        "/post",
        {
            "data": {"docs": [{"text": "a", "id": "mine"}, {"text": 7}]},
            "exec_endpoint": "/search",
            "target_executor": "upper",
            "unknown": {"ignored": True},
        },
    )
    body = answer.json()
    assert answer.status == 200, body
    assert body["header"]["execEndpoint"] == "/search"
    assert body["header"]["targetExecutor"] == ""  # blanked, as a Jina gateway does
    assert [d["text"] for d in body["data"]] == ["A", "7"]
    assert body["data"][0]["id"] == "mine"
    assert HEX32.match(body["data"][1]["id"])
    assert body["routes"][2]["endTime"] is None  # sleeper did not match targetExecutor


def test_document_fields_round_trip(relay: HttpRelay) -> None:
    doc = {
        "id": "d1",
        "text": "hi",
        "tags": {"a": 1, "b": [1, "x"], "c": {"d": None}},
        "embedding": [1, 2],
        "tensor": [[0.5, 1.5], [2.5, 3.5]],
        "blob": "aGk=",
        "location": [1, 2],
        "weight": 2,
        "granularity": 1,
        "scores": {"s": {"value": 1}},
        "chunks": [{"text": "c"}],
    }
    answer = curl(relay, "POST", "/post", {"data": [doc], "execEndpoint": "/index"})
    assert answer.status == 200, answer.json()
    out = answer.json()["data"][0]
    assert out["text"] == "HI"
    assert out["tags"] == {"a": 1.0, "b": [1.0, "x"], "c": {"d": None}}
    assert out["embedding"] == [1, 2]
    assert out["tensor"] == [[0.5, 1.5], [2.5, 3.5]]
    assert (out["blob"], out["location"], out["weight"], out["granularity"]) == ("aGk=", [1.0, 2.0], 2.0, 1)
    assert out["scores"] == {"s": {"value": 1.0, "op_name": None, "description": None, "ref_id": None}}
    assert out["chunks"][0]["text"] == "c"


# ---- routes and verbs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/index"), ("POST", "/search"), ("PUT", "/update"), ("DELETE", "/delete")]
)
def test_crud_routes(relay: HttpRelay, method: str, path: str) -> None:
    # The path is the endpoint: an execEndpoint in the body is ignored, as Jina's JinaRequestModel ignores it.
    answer = curl(relay, method, path, {"data": [{"text": "crud"}], "execEndpoint": "/other"})
    body = answer.json()
    assert answer.status == 200, body
    assert body["header"]["execEndpoint"] == path
    assert body["data"][0]["text"] == "CRUD"
    empty = curl(relay, method, path, {})
    assert empty.status == 200
    assert empty.json()["data"] == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/post", "POST"),
        ("PUT", "/post", "POST"),
        ("GET", "/index", "POST"),
        ("POST", "/update", "PUT"),
        ("PUT", "/delete", "DELETE"),
        ("DELETE", "/search", "POST"),
        ("OPTIONS", "/post", "POST"),  # without --cors, as a Jina gateway without CORS
        ("POST", "/openapi.json", "GET"),
        ("DELETE", "/docs", "GET"),
    ],
)
def test_other_methods_answer_405(relay: HttpRelay, method: str, path: str, allow: str) -> None:
    answer = curl(relay, method, path)
    assert answer.status == 405
    assert answer.headers["allow"] == allow
    assert answer.json() == {"detail": "Method Not Allowed"}


def test_head_on_get_routes(relay: HttpRelay) -> None:
    for path in ("/openapi.json", "/docs", "/redoc", "/docs-assets/swagger-ui/swagger-ui.css"):
        out = subprocess.run(
            ["curl", "-s", "-I", "--noproxy", "*", "--max-time", str(CURL_TIMEOUT_S), relay.http_url + path],
            capture_output=True,
            timeout=CURL_TIMEOUT_S + 5,
            check=True,
        ).stdout
        head = parse_http(out)
        assert head.status == 200, path
        assert int(head.headers["content-length"]) > 0
        assert head.body == b""


# ---- upstream, counters, CORS, auth, limits ---------------------------------------------------------


def test_unreachable_upstream_answers_503() -> None:
    dead = free_port()
    with serve_http("--upstream", f"ws://127.0.0.1:{dead}", "--upstream-timeout", "2s") as relay:
        answer = curl(relay, "POST", "/post", {"data": [{"text": "a"}], "parameters": {"p": 1}})
    body = answer.json()
    assert answer.status == 503, body
    status = body["header"]["status"]
    assert status["code"] == 1
    assert status["exception"]["name"] == "UpstreamError"
    assert f"127.0.0.1:{dead}" in status["description"]
    assert body["parameters"] == {"p": 1.0}
    assert body["data"][0]["text"] == "a"  # the request's documents, echoed back


def test_http_requests_count_in_status_and_metrics() -> None:
    with serve_http(*FLOW) as relay:
        for _ in range(3):
            assert curl(relay, "POST", "/index", {"data": [{"text": "m"}]}).status == 200
        assert curl(relay, "PUT", "/update", {}).status == 200
        assert curl(relay, "POST", "/post", {"data": 5}).status == 422  # refused before admission: not counted
        status = curl(relay, "GET", "/status").json()
        metrics = curl(relay, "GET", "/metrics").body.decode()
    assert status["envs"]["requests_total"] == "4"
    assert 'flowrelay_relay_requests_total{endpoint="/index",outcome="ok"} 3.0' in metrics
    assert 'flowrelay_relay_requests_total{endpoint="/update",outcome="ok"} 1.0' in metrics
    assert "flowrelay_relay_requests_in_flight 0.0" in metrics
    assert re.search(r'flowrelay_relay_executor_duration_seconds_count\{executor="upper"\} 4\.0', metrics)


PREFLIGHT = ("-H", "Origin: http://app.example", "-H", "Access-Control-Request-Method: POST",
             "-H", "Access-Control-Request-Headers: content-type, authorization")  # fmt: skip


def test_cors_is_off_by_default(relay: HttpRelay) -> None:
    assert curl(relay, "OPTIONS", "/post", None, *PREFLIGHT).status == 405
    answer = curl(relay, "POST", "/post", {"data": []}, "-H", "Origin: http://app.example")
    assert answer.status == 200
    assert "access-control-allow-origin" not in answer.headers


def test_cors_on() -> None:
    with serve_http(*FLOW, "--cors") as relay:
        pre = curl(relay, "OPTIONS", "/post", None, *PREFLIGHT)
        pre_status = curl(relay, "OPTIONS", "/status", None, *PREFLIGHT)
        post = curl(relay, "POST", "/post", {"data": [{"text": "c"}]}, "-H", "Origin: http://app.example")
        bad = curl(relay, "POST", "/post", {"data": 5}, "-H", "Origin: http://app.example")
        plain = curl(relay, "POST", "/post", {"data": []})
    for answer in (pre, pre_status):
        assert answer.status == 200
        assert answer.headers["access-control-allow-origin"] == "*"
        assert set(answer.headers["access-control-allow-methods"].split(", ")) >= {"POST", "PUT", "DELETE", "GET"}
        assert answer.headers["access-control-allow-headers"] == "content-type, authorization"
        assert int(answer.headers["access-control-max-age"]) > 0
        assert "access-control-allow-credentials" not in answer.headers
    assert post.status == 200
    assert post.headers["access-control-allow-origin"] == "*"
    assert bad.status == 422
    assert bad.headers["access-control-allow-origin"] == "*"  # errors are readable cross-origin too
    assert "access-control-allow-origin" not in plain.headers  # no Origin, no CORS headers


def test_cors_with_allowed_origins() -> None:
    with serve_http(*FLOW, "--cors", "--allowed-origins", "http://good.example") as relay:
        good = curl(relay, "OPTIONS", "/post", None, "-H", "Origin: http://good.example",
                    "-H", "Access-Control-Request-Method: POST")  # fmt: skip
        evil = curl(relay, "OPTIONS", "/post", None, "-H", "Origin: http://evil.example",
                    "-H", "Access-Control-Request-Method: POST")  # fmt: skip
        post = curl(relay, "POST", "/post", {"data": []}, "-H", "Origin: http://good.example")
        other = curl(relay, "POST", "/post", {"data": []}, "-H", "Origin: http://evil.example")
    assert good.status == 200
    assert good.headers["access-control-allow-origin"] == "http://good.example"
    assert good.headers["vary"] == "Origin"
    assert evil.status == 400
    assert "access-control-allow-origin" not in evil.headers
    assert post.headers["access-control-allow-origin"] == "http://good.example"
    assert other.status == 200  # answered, but a browser will not let the page read it
    assert "access-control-allow-origin" not in other.headers


def test_auth_token() -> None:
    with serve_http(*FLOW, "--auth-token", "s3cret") as relay:
        none = curl(relay, "POST", "/post", {"data": []})
        wrong = curl(relay, "POST", "/post", {"data": []}, "-H", "Authorization: Bearer nope")
        bearer = curl(relay, "POST", "/post", {"data": []}, "-H", "Authorization: Bearer s3cret")
        query = curl(relay, "POST", "/index?token=s3cret", {"data": []})
        schema = curl(relay, "GET", "/openapi.json", None, "-H", "Authorization: Bearer s3cret").json()
    for answer in (none, wrong):
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == "Bearer"
    assert bearer.status == query.status == 200
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert schema["paths"]["/post"]["post"]["security"] == [{"bearerAuth": []}]


def test_body_over_the_message_limit_answers_413() -> None:
    with serve_http(*FLOW, "--max-message-size", "1KiB") as relay:
        small = curl(relay, "POST", "/post", {"data": [{"text": "x" * 100}]})
        large = curl(relay, "POST", "/post", {"data": [{"text": "x" * 2000}]})
    assert small.status == 200
    assert large.status == 413


# What a default install (`pip install flowrelay`, without the docs extra) has: no drf-spectacular-sidecar.
WITHOUT_THE_DOCS_EXTRA = """
import sys
sys.modules["drf_spectacular_sidecar"] = None  # importlib finds no such package
"""


def test_without_the_docs_extra_the_pages_say_how_to_get_them() -> None:
    with run_relay("-e", "upper", prelude=WITHOUT_THE_DOCS_EXTRA) as relay:
        for path in ("/docs", "/redoc"):
            status, body = http_get(relay.port, path)
            assert status == 503, path
            assert body == {"detail": "the docs pages need the docs extra: pip install 'flowrelay[docs]'"}
        assert http_get(relay.port, "/openapi.json")[0] == 200
        status, body = http_get(relay.port, "/status")
        assert status == 200 and body["envs"]["requests_total"] == "0"


# ---- in-process: HttpDoor.handle directly ----------------------------------------------------------


def _door(**config: Any) -> HttpDoor:
    return HttpDoor(Gateway(RelayConfig(host="127.0.0.1", port=0, **config), Chain.from_specs(["upper"])))


def _handle(
    door: HttpDoor, method: str, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> Any:
    return asyncio.run(door.handle(HttpRequest(method, path, "", headers or [], body)))


def test_handle_in_process() -> None:
    door = _door()
    resp = _handle(door, "POST", "/post", b'{"data":[{"text":"in process"}],"execEndpoint":"/x"}')
    assert resp.status == 200
    body = orjson.loads(resp.body)
    assert body["data"][0]["text"] == "IN PROCESS"
    assert body["header"]["execEndpoint"] == "/x"
    assert door.gateway.stats.requests_total == 1
    assert door.gateway.stats.in_flight == 0
    for path in ("/nope", "/post/", "/docs-assets/nope.js", "/docs-assets/../pyproject.toml"):
        assert _handle(door, "GET", path).status == 404, path
    assert orjson.loads(_handle(door, "GET", "/").body) == {}
    assert orjson.loads(_handle(door, "GET", "/status").body)["envs"]["requests_total"] == "1"
    assert _handle(door, "POST", "/status").status == 405
    assert _handle(door, "GET", "/docs-assets/redoc/redoc.standalone.js").headers[0] == (
        "content-type",
        "application/javascript; charset=utf-8",
    )


def test_what_needs_no_token() -> None:
    door = _door(auth_token="t", cors=True)
    preflight = [("origin", "http://a.example"), ("access-control-request-method", "POST")]
    public = [("GET", "/docs", []), ("GET", "/redoc", []), ("GET", "/openapi.json", []),
              ("GET", "/docs-assets/swagger-ui/swagger-ui.css", []), ("OPTIONS", "/post", preflight),
              ("OPTIONS", "/status", preflight)]  # fmt: skip
    private = [("POST", "/post", []), ("PUT", "/update", []), ("GET", "/status", []), ("OPTIONS", "/post", [])]
    assert door.is_public(HttpRequest("GET", "/", "", []))  # the health check
    for method, path, headers in public:
        assert door.is_public(HttpRequest(method, path, "", headers)), (method, path)
    for method, path, headers in private:
        assert not door.is_public(HttpRequest(method, path, "", headers)), (method, path)
    assert _handle(door, "POST", "/post", b"{}").status == 401  # the data routes check the token themselves
    assert not _door(auth_token="t").is_public(HttpRequest("OPTIONS", "/post", "", preflight))  # CORS off


def test_assets_answer_304_when_unchanged() -> None:
    door = _door()
    first = _handle(door, "GET", "/docs-assets/swagger-ui/swagger-ui.css")
    etag = dict(first.headers)["etag"]
    again = _handle(door, "GET", "/docs-assets/swagger-ui/swagger-ui.css", headers=[("if-none-match", etag)])
    assert (first.status, again.status, again.body) == (200, 304, b"")


def test_docs_pages_load_nothing_from_elsewhere() -> None:
    door = _door()
    for path in ("/docs", "/redoc"):
        resp = _handle(door, "GET", path)
        page = resp.body.decode()
        assert resp.status == 200
        assert not re.search(r"(?:https?:)?//", page), path
        assert "default-src 'self'" in dict(resp.headers)["content-security-policy"]
        for ref in re.findall(r'(?:src|href|spec-url)="([^"]+)"', page):
            target = "/" + ref
            found = _handle(door, "GET", target)
            assert found is not None and found.status == 200, target


@given(st.integers(min_value=0, max_value=253402300799 * 10**9))
@settings(max_examples=300)
def test_timestamps_are_python_isoformat(ns: int) -> None:
    expected = dt.datetime.fromtimestamp(ns // 10**9, tz=dt.UTC).replace(microsecond=ns // 1000 % 10**6).isoformat()
    assert format_isoformat(ns) == expected


def test_timestamp_without_microseconds() -> None:
    assert format_isoformat(1_764_192_220_000_000_000) == "2025-11-26T21:23:40+00:00"
    assert format_isoformat(1_764_192_220_000_001_999) == "2025-11-26T21:23:40.000001+00:00"
    assert format_isoformat(None) is None


# ---- against a real Jina HTTP gateway ----------------------------------------------------------------


@pytest.fixture(scope="module")
def jina_http() -> Iterator[RunningFlow]:
    yield from flow_fixture(flavour="legacy", protocol="http", sleep_ms=1.0)


SAME_AS_JINA = [
    ("POST", "/post", {"data": [{"text": "hello world"}], "execEndpoint": "/index"}),
    ("POST", "/post", {"data": {"docs": [{"text": "a"}]}, "exec_endpoint": "/search", "parameters": {"n": 2}}),
    ("POST", "/index", {"data": [{"text": "b", "embedding": [1, 2], "location": [1]}]}),
    ("POST", "/search", {}),
    ("PUT", "/update", {"data": [{"text": "u"}]}),
    ("DELETE", "/delete", {"data": [{"text": "d"}]}),
    ("POST", "/post", {"data": [{"text": "x"}], "execEndpoint": "/index", "targetExecutor": "sleeper"}),
]
# Where pydantic reports a Union's every branch (`data` of the wrong kind), the door reports only the branch of
# the value's kind; these have one branch and the same answer.
SAME_422_AS_JINA = [{"parameters": 5}, {"execEndpoint": []}, [1], {"data": 5}]


@pytest.mark.jina
def test_same_answers_as_a_jina_http_gateway(jina_http: RunningFlow, relay: HttpRelay) -> None:
    jina = HttpRelay(jina_http.port)
    for method, path, body in SAME_AS_JINA:
        ours, theirs = curl(relay, method, path, body), curl(jina, method, path, body)
        # Jina's Executors tag documents and its gateway writes a zone-less local time for a skipped route.
        skip = frozenset({"data.*.tags", "routes"} if "targetExecutor" in body else {"data.*.tags"})
        assert_like_capture(ours, theirs, skip)
        if ours.json()["header"]["execEndpoint"] in ("/index", "/search"):  # where both `upper`s upper-case
            assert [d["text"] for d in ours.json()["data"]] == [d["text"] for d in theirs.json()["data"]]
    for body in SAME_422_AS_JINA:
        ours, theirs = curl(relay, "POST", "/post", body), curl(jina, "POST", "/post", body)
        assert (ours.status, ours.json()) == (theirs.status, theirs.json()), body
    for raw in (b"{x", b"", b'{"data": [}'):
        extra = ("-H", "Content-Type: application/json")
        ours, theirs = (
            curl(relay, "POST", "/post", None, *extra, raw=raw),
            curl(jina, "POST", "/post", None, *extra, raw=raw),
        )
        assert (ours.status, ours.body) == (theirs.status, theirs.body), raw
    for method, path in (("GET", "/post"), ("PUT", "/index"), ("POST", "/nope")):
        ours, theirs = curl(relay, method, path), curl(jina, method, path)
        assert (ours.status, ours.json(), ours.headers.get("allow")) == (
            theirs.status,
            theirs.json(),
            theirs.headers.get("allow"),
        )
