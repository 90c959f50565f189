"""The GraphQL load target: `flowrelay load http://HOST:PORT/graphql --graphql QUERY` (loadtest/sessions/graphql.py).

Real `flowrelay load` processes against a real relay on 127.0.0.1 (and, jina-marked, Jina's own `/graphql`): a
run at 200 requests/s with thresholds, read as a user reads it (the summary), with the hops the relay's routes
give; an Executor's errors counted under their exception as on every target; the relay's metrics count the
same requests under `door="graphql"`; an impossible threshold exits 99; mistakes in `--graphql` exit 2 before
any traffic. Against Jina's gateway, which has no routes to give, the run is measured end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql_helpers import http_request
from http_door_harness import serve_http
from jina_peer import flow_fixture
from load_helpers import assert_adds_up, cli_summary, run_load_cli

MUTATION = "mutation { docs(data: $docs) { id text } }"


def test_a_graphql_run_at_200_per_second_with_thresholds() -> None:
    with serve_http("-e", "upper", "-e", "sleeper=sleep:1ms") as relay:
        done = run_load_cli(relay.http_url + "/graphql", "--graphql", MUTATION, "--rate", "200", "--duration", "2s",
                            "--warmup", "0.5s", "--connections", "8", "--docs-per-request", "2",
                            "--threshold", "errors.rate<0.01", "--threshold", "latency.p99<2s", "--json", "--quiet")
        metrics = http_request("GET", relay.http_url + "/metrics")[2].decode()
    assert done.returncode == 0, done.stderr
    summary = cli_summary(done)
    assert_adds_up(summary)
    assert summary["transport"] == "http" and "docs(data: $docs)" in summary["graphql"], "the run says it was GraphQL"
    measured, warmup = summary["requests"], summary["warmup"]["requests"]
    assert measured["sent"] + warmup["sent"] >= 395 and measured["ok"] == measured["sent"], summary["requests"]
    assert summary["docs"]["received"] == 2 * (measured["ok"] + warmup["ok"])
    assert summary["rate"]["achieved_rps"] == pytest.approx(200, rel=0.05)
    assert {"gateway", "upper", "sleeper"} <= set(summary["hops"])  # from the routes in the answers' extensions
    assert all(t["ok"] for t in summary["thresholds"]) and len(summary["thresholds"]) == 2
    sent = measured["sent"] + warmup["sent"]
    assert f'flowrelay_relay_door_requests_total{{door="graphql",outcome="ok"}} {float(sent)}' in metrics


def test_executor_errors_count_as_failed_requests_and_an_impossible_threshold_exits_99() -> None:
    with serve_http("-e", "upper", "-e", "fail:0.5") as relay:
        done = run_load_cli(relay.http_url + "/graphql", "--graphql", MUTATION, "--concurrency", "1",
                            "--requests", "40", "--threshold", "errors.rate<0.01", "--json", "--quiet")
    assert done.returncode == 99, done.stderr
    summary = cli_summary(done)
    assert summary["requests"]["failed"] == 20 and summary["requests"]["ok"] == 20
    assert summary["errors"] == {"executor: ValueError": 20}


def test_parameters_endpoint_and_target_executor_fill_their_variables(tmp_path: Path) -> None:
    """A query from a file using every run variable undeclared; documents with tags, an embedding and a blob."""
    query = tmp_path / "query.graphql"
    query.write_text("mutation Run { docs(data: $docs, parameters: $parameters, execEndpoint: $execEndpoint, "
                     "targetExecutor: $targetExecutor) { text } }")
    with serve_http("-e", "upper", "-e", "sleeper=sleep:1ms") as relay:
        done = run_load_cli(relay.http_url, "--graphql", f"@{query}", "--concurrency", "1", "--requests", "10",
                            "--param", "sleep_ms=20", "--endpoint", "/index", "--target-executor", "sleeper",
                            "--tags", '{"k": "v"}', "--embedding-dim", "4", "--blob-bytes", "8", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    summary = cli_summary(done)
    assert summary["requests"]["ok"] == 10
    # Only the sleeper ran (targetExecutor), for 20 ms each time (the parameter).
    assert summary["hops"]["sleeper"]["p50"] >= 19.0 and "upper" not in summary["hops"]


@pytest.mark.parametrize(("args", "message"), [
    (("ws://127.0.0.1:9/", "--graphql", MUTATION), "--graphql is for http:// targets"),
    (("http://127.0.0.1:9/graphql", "--graphql", "mutation { docs(data: $x) { id } }"), "fills only $docs"),
    (("http://127.0.0.1:9/graphql", "--graphql", "mutation { docs(data: $docs) { nope } }"),
     "Cannot query field 'nope'"),
    (("http://127.0.0.1:9/graphql", "--graphql", "mutation { docs("), "Syntax Error"),
    (("http://127.0.0.1:9/graphql", "--graphql", "@/nonexistent/query.graphql"), "No such file"),
])
def test_mistakes_in_the_query_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    done = run_load_cli(*args, "--rate", "10", "--requests", "1", "--quiet")
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.jina
def test_jinas_own_graphql_is_a_target_measured_end_to_end() -> None:
    for flow in flow_fixture(flavour="legacy", protocol="http", sleep_ms=1.0, graphql=True):
        done = run_load_cli(flow.http_url + "/graphql", "--graphql", MUTATION, "--rate", "50", "--duration", "1s",
                            "--connections", "8", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    summary = cli_summary(done)
    requests = summary["requests"]
    assert requests["ok"] == requests["sent"] > 0 and requests["sent"] + requests["dropped"] == 50, requests
    assert set(summary["hops"]) <= {"outside_gateway"}  # Jina's answers carry no routes
