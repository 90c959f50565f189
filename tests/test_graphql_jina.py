"""The GraphQL door next to real Jina 3.34: the same answers as Jina's own `/graphql`, Jina's client, docarray v2.

* The same queries sent to a Jina HTTP Flow started with `--graphql` (its strawberry `/graphql`) and to a relay in
  front of a Jina WebSocket Flow with the same Executors (`upper` -> `sleeper`, 1 ms) give the same `data` (ids
  left out: each gateway makes its own); an unknown field gives the same whole answer. Where the Flow fails
  (`/fail`), both answer the same documents and the relay adds the error Jina leaves out.
* Jina's `Client.mutate` (tests/jina_scripts/client_mutate.py, in the peer venv, sgqlc put on its path) gets the
  same results from the relay as from Jina's Flow, and a `ConnectionError` naming the Executor on `/fail`, where
  Jina's Flow reports nothing.
* A docarray >= 0.30 Flow, which Jina cannot serve over GraphQL ("GraphQL is not yet supported for DocArrayV2"),
  is served by the relay (`--upstream-docarray v2`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graphql_helpers import post_graphql, without_ids
from jina_peer import RunningFlow, flow_fixture, peer_python, require_peer
from relay_process import RelayProcess, run_relay

pytestmark = pytest.mark.jina

SCRIPT = Path(__file__).parent / "jina_scripts" / "client_mutate.py"
SLEEP_MS = 1.0
SAME_DATA_QUERIES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "seed page": ('mutation { docs(data: {text: "abcd"}) { id text matches { embedding } } }', None),
    "query, tags and parameters as JSON strings": (
        'query { docs(data: [{text: "hello", tags: "{\\"k\\": \\"v\\"}"}], parameters: "{\\"sleep_ms\\": 3}", '
        'execEndpoint: "/index") { id text tags } }', None),
    "variables": ('mutation Index($d: [StrawberryDocumentInput!]) { docs(data: $d, execEndpoint: "/index") '
                  "{ id text } }", {"d": [{"text": "vars", "id": "my-id"}]}),
    "targetExecutor": ('mutation { docs(data: {text: "abcd"}, targetExecutor: "sleeper") { text tags } }', None),
    "several documents, default endpoint": (
        'mutation { docs(data: [{text: "one"}, {text: "two", uri: "u", mimeType: "text/plain", weight: 2}]) '
        "{ text uri mimeType weight granularity location } }", None),
    # No arrays or blob in the documents sent: Jina's gateway fails on any blob it is given ("Incorrect padding":
    # it decodes base64 twice), and an array sent upstream by the relay reaches Jina's Executors as None (the
    # relay does not mark it `cls_name: numpy`, as Jina's client does; a relay matter, not GraphQL's).
    "an Executor that raises": ('mutation { docs(data: {text: "x"}, execEndpoint: "/fail") { id text } }', None),
}


@pytest.fixture(scope="module")
def jina_graphql() -> Iterator[RunningFlow]:
    """Jina's own /graphql: an HTTP Flow started with `--graphql` (expose_graphql_endpoint=True)."""
    yield from flow_fixture(flavour="legacy", protocol="http", sleep_ms=SLEEP_MS, graphql=True)


@pytest.fixture(scope="module")
def relay_to_jina() -> Iterator[RelayProcess]:
    """The relay in front of a Jina WebSocket Flow with the same Executors."""
    for flow in flow_fixture(flavour="legacy", protocol="websocket", sleep_ms=SLEEP_MS):
        with run_relay("--upstream", flow.url) as relay:
            yield relay


@pytest.mark.parametrize("name", list(SAME_DATA_QUERIES))
def test_the_same_queries_give_the_same_data(name: str, jina_graphql: RunningFlow,
                                             relay_to_jina: RelayProcess) -> None:
    query, variables = SAME_DATA_QUERIES[name]
    jina_status, jina = post_graphql(jina_graphql.http_url + "/graphql", query, variables)
    status, ours = post_graphql(relay_to_jina.http_url + "/graphql", query, variables)
    assert jina_status == status == 200
    assert "errors" not in jina, jina
    assert ours["data"] is not None and without_ids(ours["data"]) == without_ids(jina["data"]), (ours, jina)
    if name == "an Executor that raises":
        (error,) = ours["errors"]
        assert error["extensions"]["executor"] == "UpperExec" and error["extensions"]["exception"] == "ValueError"
    else:
        assert "errors" not in ours, ours


def test_an_unknown_field_gets_the_same_answer(jina_graphql: RunningFlow, relay_to_jina: RelayProcess) -> None:
    query = "{ docs { nosuchfield } }"
    assert post_graphql(relay_to_jina.http_url + "/graphql", query) == post_graphql(
        jina_graphql.http_url + "/graphql", query)


def test_the_same_schema(jina_graphql: RunningFlow, relay_to_jina: RelayProcess) -> None:
    from graphql import build_client_schema, get_introspection_query, print_schema

    printed = [print_schema(build_client_schema(post_graphql(url + "/graphql", get_introspection_query())[1]["data"]))
               for url in (jina_graphql.http_url, relay_to_jina.http_url)]
    assert printed[0] == printed[1]


def _client_mutate(port: int, tmp_path: Path) -> dict[str, Any]:
    """Run client_mutate.py in the peer venv with (only) sgqlc added to its path."""
    python = require_peer("legacy")
    spec = importlib.util.find_spec("sgqlc")
    assert spec is not None and spec.submodule_search_locations, "sgqlc is in the dev extra"
    extra = tmp_path / "sgqlc-only"
    extra.mkdir(exist_ok=True)
    link = extra / "sgqlc"
    if not link.exists():
        link.symlink_to(next(iter(spec.submodule_search_locations)))
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(extra)
    env["JINA_OPTOUT_TELEMETRY"] = "1"
    done = subprocess.run([str(python), str(SCRIPT), "--port", str(port)], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_jinas_client_mutate_works_unchanged(jina_graphql: RunningFlow, relay_to_jina: RelayProcess,
                                             tmp_path: Path) -> None:
    jina = _client_mutate(jina_graphql.port, tmp_path)
    ours = _client_mutate(relay_to_jina.port, tmp_path)
    for step in ("seed", "variables"):
        assert "error" not in ours[step] and "error" not in jina[step], (ours, jina)
        assert without_ids(ours[step]["data"]) == without_ids(jina[step]["data"]), step
    assert ours["seed"]["data"]["docs"][0]["text"] == "ABCD"
    assert ours["variables"]["data"]["docs"][0]["id"] == "my-id"
    # Jina's Flow swallows the Executor's error; through the relay, Client.mutate raises with it.
    assert jina["fail"]["data"] == {"docs": [{"text": "x"}]} and "errors" not in jina["fail"]
    assert ours["fail"]["error"].startswith("ConnectionError: GraphQL mutation returned the following errors")
    assert "UpperExec" in ours["fail"]["error"] and "deliberate failure" in ours["fail"]["error"]


def test_graphql_to_a_docarray_v2_flow_through_the_relay(jina_flow_v2: RunningFlow) -> None:
    assert peer_python("v2") is not None
    with run_relay("--upstream", jina_flow_v2.url, "--upstream-docarray", "v2") as relay:
        url = relay.http_url + "/graphql"
        status, body = post_graphql(url, 'mutation { docs(data: [{text: "abcd"}, {text: "efg", id: "k"}], '
                                    'execEndpoint: "/index") { id text } }', extensions={"routes": True})
        assert status == 200 and "errors" not in body, body
        assert [d["text"] for d in body["data"]["docs"]] == ["ABCD", "EFG"] and body["data"]["docs"][1]["id"] == "k"
        executors = [r["executor"] for r in body["extensions"]["routes"]["docs"]]
        assert executors[-2:] == ["upper", "sleeper"]
        status, body = post_graphql(url, 'mutation { docs(data: {text: "x"}, execEndpoint: "/fail") { text } }')
        assert status == 200 and body["errors"][0]["extensions"]["exception"] == "ValueError"
