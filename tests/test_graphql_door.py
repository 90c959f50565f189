"""The GraphQL door (relay/doors/graphql): `/graphql` on a relay's HTTP port, as a Jina 3.34 HTTP gateway serves it.

Every test talks to a real `flowrelay serve` over 127.0.0.1 (tests/http_door_harness.py), with built-in Executors
(`upper`, a 1 ms `sleeper`, `fail` on `/fail`) or an unreachable upstream. What a client sees is checked against
what Jina's own `/graphql` answered (../shared/protocol/captures/a_legacy_graphql/): the seed page's sgqlc
example, the printed schema, a query with variables, `targetExecutor`, an unknown field (the very error Jina
gives); and where the relay does better than Jina: an Executor's error in `errors`, `JSONScalar` object literals,
GET for queries. The limits, the token, CORS and the metrics are those of the other doors. The same queries
against a real Jina Flow, Jina's own client and a docarray >= 0.30 Flow are in test_graphql_jina.py; GraphiQL in
Chromium in test_graphql_browser.py; schemathesis' GraphQL mode at the end of this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from graphql import build_client_schema, get_introspection_query, print_schema
from graphql_helpers import captures, get_graphql, http_request, post_graphql
from http_door_harness import HttpRelay, serve_http
from jina_peer import free_port

FLOW = ("-e", "upper", "-e", "sleeper=sleep:1ms", "-e", "fail:/fail")
SEED_MUTATION = """
mutation {
  docs(data: {text: "abcd"}) {
    id
    matches {
      embedding
    }
  }
}
"""


@pytest.fixture(scope="module")
def relay() -> Iterator[HttpRelay]:
    with serve_http(*FLOW) as r:
        yield r


@pytest.fixture(scope="module")
def url(relay: HttpRelay) -> str:
    return relay.http_url + "/graphql"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # sgqlc uses urllib, which honours proxy variables; loopback traffic must stay on loopback.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _capture(name: str) -> Any:
    return orjson.loads((captures() / name).read_bytes())


# ---- what Jina's gateway answers, the relay answers ------------------------------------------------------------


def test_the_seed_pages_sgqlc_example(url: str) -> None:
    """The page's example, unchanged but for the URL: sgqlc's HTTPEndpoint sends the mutation."""
    from sgqlc.endpoint.http import HTTPEndpoint

    endpoint = HTTPEndpoint(url)
    data = endpoint(query=SEED_MUTATION)
    assert "errors" not in data, data
    (doc,) = data["data"]["docs"]
    assert len(doc["id"]) == 32 and doc["matches"] is None  # as Jina: an id is made, no matches


def test_the_captured_mutation_answers_as_jina_did(url: str) -> None:
    status, body = post_graphql(url, 'mutation { docs(data: {text: "abcd"}) { id text matches { embedding } } }')
    jina = _capture("mutation_docs.json")
    assert status == 200
    assert body["data"]["docs"][0].keys() == jina["data"]["docs"][0].keys()
    assert body["data"]["docs"][0]["text"] == jina["data"]["docs"][0]["text"] == "ABCD"


def test_introspection_prints_the_captured_schema(url: str) -> None:
    status, body = post_graphql(url, get_introspection_query())
    assert status == 200 and "errors" not in body
    printed = print_schema(build_client_schema(body["data"]))
    assert printed.strip() == (captures() / "schema.graphql").read_text().strip()


def test_a_query_with_variables(url: str) -> None:
    status, body = post_graphql(
        url,
        "mutation Index($d: [StrawberryDocumentInput!]) { docs(data: $d, execEndpoint: \"/index\") { id text } }",
        {"d": [{"text": "vars", "id": "my-id"}]},
        operationName="Index",
    )
    assert status == 200 and body == {"data": {"docs": [{"id": "my-id", "text": "VARS"}]}}


def test_every_argument_through_variables(url: str) -> None:
    query = """mutation Run($docs: [StrawberryDocumentInput!], $params: JSONScalar, $endpoint: String!,
                             $target: String) {
      docs(data: $docs, parameters: $params, execEndpoint: $endpoint, targetExecutor: $target) { text }
    }"""
    variables = {"docs": [{"text": "a"}, {"text": "b"}], "params": '{"sleep_ms": 0}', "endpoint": "/index",
                 "target": "upper"}
    status, body = post_graphql(url, query, variables)
    assert status == 200 and body == {"data": {"docs": [{"text": "A"}, {"text": "B"}]}}


def test_target_executor_runs_only_that_executor(url: str) -> None:
    status, body = post_graphql(url, 'mutation { docs(data: {text: "abcd"}, targetExecutor: "sleeper") { text } }',
                                extensions={"routes": True})
    assert status == 200 and body["data"] == _capture("mutation_target_executor.json")["data"]
    routes = {r["executor"]: r for r in body["extensions"]["routes"]["docs"]}
    assert "end_time" not in routes["upper"] and "end_time" in routes["sleeper"]


def test_an_unknown_field_gets_jinas_error(url: str) -> None:
    status, body = post_graphql(url, "{ docs { nosuchfield } }")
    assert status == 200 and body == _capture("query_unknown_field.json")


def test_only_the_selected_fields_are_answered(relay: HttpRelay) -> None:
    """An Executor writes embeddings; a selection without `embedding` gets none of them on the wire."""
    with serve_http("-e", "embed:64") as embedding_relay:
        url = embedding_relay.http_url + "/graphql"
        _, lean = post_graphql(url, 'mutation { docs(data: [{text: "a"}, {text: "b"}]) { text } }')
        _, full = post_graphql(url, 'mutation { docs(data: [{text: "a"}, {text: "b"}]) { text embedding } }')
    assert lean == {"data": {"docs": [{"text": "a"}, {"text": "b"}]}}
    assert [len(d["embedding"]) for d in full["data"]["docs"]] == [64, 64]


def test_documents_nest_chunks_and_matches_to_any_depth(url: str) -> None:
    query = """mutation {
      docs(data: [{text: "top", chunks: [{text: "c1", chunks: [{text: "c2", matches: [{text: "m3",
                  scores: [{name: "cosine", score: {value: 0.5, opName: "cos"}}]}]}]}]}]) {
        text chunks { text chunks { text matches { text scores { name score { value opName refId } } } } }
      }
    }"""
    status, body = post_graphql(url, query)
    assert status == 200, body
    top = body["data"]["docs"][0]
    assert top["text"] == "TOP"  # `upper` changes the top level only, as Jina's does
    match = top["chunks"][0]["chunks"][0]["matches"][0]
    assert match == {"text": "m3", "scores": [{"name": "cosine", "score": {"value": 0.5, "opName": "cos",
                                                                           "refId": None}}]}


def test_tensors_blobs_and_arrays_round_trip(url: str) -> None:
    query = """mutation {
      docs(data: {text: "t", blob: "aGVsbG8=", tensor: [[1, 2], [3, 4]], embedding: [0.5, 1.5],
                  location: [1, 2], weight: 2, mimeType: "text/plain", parentId: "p"}) {
        blob tensor embedding location weight mimeType parentId granularity
      }
    }"""
    status, body = post_graphql(url, query)
    assert status == 200 and body["data"]["docs"] == [{
        "blob": "aGVsbG8=", "tensor": [[1, 2], [3, 4]], "embedding": [0.5, 1.5], "location": [1.0, 2.0],
        "weight": 2.0, "mimeType": "text/plain", "parentId": "p", "granularity": None,
    }]


# ---- better than Jina where Jina is wrong -----------------------------------------------------------------------


def test_an_executors_error_is_reported_in_errors(url: str) -> None:
    """Jina answers the documents and no error at all (mutation_fail.json); the relay adds the error."""
    status, body = post_graphql(url, 'mutation { docs(data: {text: "x"}, execEndpoint: "/fail") { text } }')
    assert status == 200
    assert body["data"] == {"docs": [{"text": "X"}]}  # the documents as the Flow answered them, as Jina does
    (error,) = body["errors"]
    assert error["path"] == ["docs"] and error["locations"] == [{"line": 1, "column": 12}]
    assert error["extensions"] == {"code": "EXECUTOR_ERROR", "executor": "FailExecutor", "exception": "ValueError",
                                   "args": ["deliberate failure from fail on /fail"]}
    assert "FailExecutor" in error["message"] and "ValueError" in error["message"]


def test_json_scalar_takes_a_json_string_an_object_literal_and_a_variable_object(url: str) -> None:
    as_string = post_graphql(url, 'mutation { docs(data: {text: "x", tags: "{\\"k\\": \\"v\\"}"}) { tags } }')
    as_literal = post_graphql(url, 'mutation { docs(data: {text: "x", tags: {k: "v"}}) { tags } }')
    as_variable = post_graphql(url, "mutation($t: JSONScalar) { docs(data: {text: \"x\", tags: $t}) { tags } }",
                               {"t": {"k": "v"}})
    assert as_string == as_literal == as_variable == (200, {"data": {"docs": [{"tags": {"k": "v"}}]}})


def test_parameters_reach_the_executors(url: str) -> None:
    """`parameters` as an object literal: the sleeper reads `sleep_ms` (routes show the 30 ms)."""
    status, body = post_graphql(url, 'mutation { docs(data: {text: "x"}, parameters: {sleep_ms: 30}) { text } }',
                                extensions={"routes": True})
    assert status == 200
    sleeper = next(r for r in body["extensions"]["routes"]["docs"] if r["executor"] == "sleeper")
    from relay.wire.messages import parse_timestamp

    assert parse_timestamp(sleeper["end_time"]) - parse_timestamp(sleeper["start_time"]) >= 30_000_000


def test_a_malformed_query_gets_the_standard_error_shape(url: str) -> None:
    status, body = post_graphql(url, "mutation {\n  docs(data: {text: \"a\"}) {\n    text\n")
    assert status == 200
    assert body == {"data": None, "errors": [{"message": "Syntax Error: Expected Name, found <EOF>.",
                                              "locations": [{"line": 4, "column": 1}]}]}


def test_bad_values_are_errors_with_locations(url: str) -> None:
    cases = {
        'mutation { docs(data: {embedding: [[1], [2, 3]]}) { id } }': "NdArray",
        'mutation { docs(data: {blob: "not base64!"}) { id } }': "Base64",
        'mutation { docs(data: {tags: "[1, 2]"}) { id } }': "tags must be a JSON object",
        'mutation { docs(data: {granularity: -1}) { id } }': "granularity",
        "mutation { docs(parameters: \"{oops\") { id } }": "JSONScalar",
    }
    for query, expected in cases.items():
        status, body = post_graphql(url, query)
        assert status == 200 and body["data"] is None, (query, body)
        (error,) = body["errors"]
        assert expected in error["message"] and error.get("locations"), (query, body)


def test_queries_over_get_mutations_refused(url: str) -> None:
    status, body = get_graphql(url, '{ docs(data: {text: "g"}, execEndpoint: "/index") { text } }')
    assert status == 200 and body == {"data": {"docs": [{"text": "G"}]}}
    status, body = get_graphql(url, 'mutation { docs(data: {text: "g"}) { text } }')
    assert status == 405 and "POST" in body["errors"][0]["message"]


def test_several_docs_fields_are_several_flow_requests(url: str) -> None:
    status, body = post_graphql(url, '{ a: docs(data: {text: "x"}) { text } b: docs(data: {text: "y"}, '
                                'targetExecutor: "sleeper") { ...F } } fragment F on StrawberryDocument { text '
                                "__typename }")
    assert status == 200 and body == {"data": {"a": [{"text": "X"}],
                                               "b": [{"text": "y", "__typename": "StrawberryDocument"}]}}


def test_requests_that_are_not_graphql(relay: HttpRelay, url: str) -> None:
    json_ct = {"Content-Type": "application/json"}
    cases = [
        ("POST", b'{"nothing": 1}', json_ct, 400),
        ("POST", b"not json", json_ct, 400),
        ("POST", b"[]", json_ct, 400),
        ("POST", b'{"query": "{ docs { id } }", "variables": [1]}', json_ct, 400),
        ("POST", b"{ docs { id } }", {"Content-Type": "text/plain"}, 415),
        ("PUT", b"{}", json_ct, 405),
    ]
    for method, payload, headers, expected in cases:
        status, got_headers, body = http_request(method, url, payload, headers)
        assert status == expected, (method, payload, status, body)
        assert got_headers["content-type"] == "application/json" and orjson.loads(body)["errors"][0]["message"]
    status, _, body = http_request("POST", url, b'{ docs(data: {text: "q"}) { text } }',
                                   {"Content-Type": "application/graphql"})
    assert status == 200 and orjson.loads(body) == {"data": {"docs": [{"text": "Q"}]}}


def test_deep_selections_are_refused(url: str) -> None:
    query = "{ docs { " + "chunks { " * 60 + "id" + " }" * 60 + " } }"
    status, body = post_graphql(url, query)
    assert status == 200 and body["data"] is None and "nest" in body["errors"][0]["message"]


def test_the_page_is_graphiql_from_the_relay(url: str) -> None:
    status, headers, body = http_request("GET", url, headers={"Accept": "text/html"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    page = body.decode()
    assert "graphql-assets/graphiql.min.js" in page and "unpkg" not in page and "cdn" not in page.lower()
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js",
                  "init.js", "LICENSE-graphiql", "LICENSE-react"):
        status, headers, body = http_request("GET", url.replace("/graphql", "/graphql-assets/") + asset)
        assert status == 200 and body, asset
        assert http_request("GET", url.replace("/graphql", "/graphql-assets/") + asset,
                            headers={"If-None-Match": headers["etag"]})[0] == 304


# ---- the other doors' token, CORS, limits, lifecycle and metrics ------------------------------------------------


def test_the_token_guards_requests_not_the_page() -> None:
    with serve_http("-e", "upper", "--auth-token", "s3cret") as relay:
        url = relay.http_url + "/graphql"
        query = '{ docs(data: {text: "t"}) { text } }'
        status, body = post_graphql(url, query)
        assert status == 401 and "token" in body["errors"][0]["message"]
        assert post_graphql(url, query, headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert post_graphql(url + "?token=s3cret", query)[0] == 200
        assert get_graphql(url, query)[0] == 401
        assert http_request("GET", url)[0] == 200  # the page
        assert http_request("GET", relay.http_url + "/graphql-assets/init.js")[0] == 200


def test_cors_as_on_the_http_door() -> None:
    with serve_http("-e", "upper", "--cors") as relay:
        url = relay.http_url + "/graphql"
        status, headers, _ = http_request("OPTIONS", url, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert status == 200 and headers["access-control-allow-origin"] == "*"
        status, headers, _ = http_request("POST", url, b'{"query": "{ docs { id } }"}',
                                          {"Content-Type": "application/json", "Origin": "http://app.example"})
        assert status == 200 and headers["access-control-allow-origin"] == "*"


def test_the_body_limit_applies() -> None:
    with serve_http("-e", "upper", "--max-message-size", "2KiB") as relay:
        query = 'mutation { docs(data: {text: "' + "x" * 4096 + '"}) { id } }'
        status, _, _ = http_request("POST", relay.http_url + "/graphql", orjson.dumps({"query": query}),
                                    {"Content-Type": "application/json"})
        assert status == 413


def test_an_unreachable_upstream_is_an_error_without_data() -> None:
    with serve_http("--upstream", f"ws://127.0.0.1:{free_port()}", "--upstream-timeout", "2s") as relay:
        status, body = post_graphql(relay.http_url + "/graphql", 'mutation { docs(data: {text: "x"}) { text } }')
    assert status == 200 and body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["exception"] == "UpstreamError" and error["path"] == ["docs"]
    assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"


def test_requests_count_in_the_metrics_with_a_door_label() -> None:
    with serve_http("-e", "upper", "-e", "fail:/fail") as relay:
        url = relay.http_url + "/graphql"
        for _ in range(3):
            post_graphql(url, 'mutation { docs(data: {text: "x"}, execEndpoint: "/index") { id } }')
        post_graphql(url, 'mutation { docs(data: {text: "x"}, execEndpoint: "/fail") { id } }')
        http_request("POST", relay.http_url + "/post", b'{"data": [{"text": "h"}], "execEndpoint": "/index"}',
                     {"Content-Type": "application/json"})
        metrics = http_request("GET", relay.http_url + "/metrics")[2].decode()
        status = orjson.loads(http_request("GET", relay.http_url + "/status")[2])
    assert 'flowrelay_relay_door_requests_total{door="graphql",outcome="ok"} 3.0' in metrics
    assert 'flowrelay_relay_door_requests_total{door="graphql",outcome="error"} 1.0' in metrics
    assert 'flowrelay_relay_door_requests_total{door="http",outcome="ok"} 1.0' in metrics
    assert 'flowrelay_relay_requests_total{endpoint="/index",outcome="ok"} 4.0' in metrics
    assert status["envs"]["requests_total"] == "5"


def test_without_graphql_core_the_relay_serves_the_rest_and_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "graphql"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('graphql-core is not installed (test)')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    with serve_http("-e", "upper") as relay:
        status, body = post_graphql(relay.http_url + "/graphql", "{ docs { id } }")
        page_status = http_request("GET", relay.http_url + "/graphql")[0]
        post_status = http_request("POST", relay.http_url + "/post", b'{"data": [{"text": "h"}]}',
                                   {"Content-Type": "application/json"})[0]
    assert status == 503 and "pip install" in body["errors"][0]["message"]
    assert page_status == 200 and post_status == 200


# ---- schemathesis' GraphQL mode against the live relay ----------------------------------------------------------

ST_TIMEOUT_S = 300
MAX_EXAMPLES = 60
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def _schemathesis(url: str, report: Path, checks: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", url,
        "--checks", checks,
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=ST_TIMEOUT_S, env=env, check=False,
                          cwd=report.parent)


def _statuses(report: Path) -> dict[str, Counter[int]]:
    out: dict[str, Counter[int]] = {}
    for line in report.read_text().splitlines():
        finished = orjson.loads(line).get("ScenarioFinished") if line.strip() else None
        recorder = (finished or {}).get("recorder") or {}
        if "label" not in recorder:
            continue
        statuses = out.setdefault(recorder["label"], Counter())
        for interaction in recorder.get("interactions", {}).values():
            statuses[(interaction.get("response") or {}).get("status_code")] += 1
    return out


@pytest.mark.timeout(ST_TIMEOUT_S + 60)
def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """schemathesis reads the schema by introspection and sends generated queries and mutations (any field, any
    argument value it can make, documents nested in chunks and matches) to a relay whose Executors change and
    embed the documents. No answer may be a 5xx, nor carry a server-side error (schemathesis'
    `not_a_server_error`: an error with a `path` that is not labelled a client's, as BAD_USER_INPUT is)."""
    report = tmp_path / "events.ndjson"
    with serve_http(*FLOW, "-e", "embed:8") as relay:
        done = _schemathesis(relay.http_url + "/graphql", report, "not_a_server_error")
    output = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, output
    statuses = _statuses(report)
    assert set(statuses) == {"Query.docs", "Mutation.docs"}, output
    for label, counts in statuses.items():
        assert counts[200] >= 10 and set(counts) == {200}, (label, counts)
