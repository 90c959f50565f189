"""loadtest.measure.replay_diff: a replay's answers against the recorded ones. Status changes both ways, documents
whose count or ids changed (ids only where the request chose them), latency per endpoint and per hop on the same
footing as the recording's, merged across workers; and the table a person reads."""

from __future__ import annotations

from loadtest.measure.replay_diff import ReplayComparison, ReplayDiff, format_diff
from relay.capture.format import LATENCY_ROUND_TRIP, RecordedAnswer, RecordedRequest
from relay.wire.messages import Route, route_spans

T = 1_700_000_000_000_000_000


def _routes(gateway_us: int, upper_us: int) -> list[Route]:
    return [Route("gateway", T, T + gateway_us * 1000), Route("upper", T + 1000, T + 1000 + upper_us * 1000)]


def _spans(gateway_us: int, upper_us: int) -> list[tuple[str, int]]:
    return route_spans(_routes(gateway_us, upper_us))


def _recorded(index: int, endpoint: str = "/index", error: str | None = None, ids: list[str] | None = None,
              latency_us: int = 500) -> RecordedRequest:
    answer = RecordedAnswer(0, 1 if error else 0, error, latency_us * 1000, _routes(latency_us, 100),
                            ids if ids is not None else [f"d{index}"])
    return RecordedRequest(index, 0, 0, 0, f"r{index}", endpoint, b"", answer)


def test_status_changes_both_ways_with_examples() -> None:
    diff = ReplayDiff()
    diff.on_answer(_recorded(0), True, None, 1, ["d0"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(1), True, "ValueError", 1, ["d1"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(2, error="ValueError"), True, None, 1, ["d2"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(3, error="ValueError"), True, "KeyError", 1, ["d3"], _spans(600, 100), 0.001)
    diff.on_failure(_recorded(4), "timeout")
    diff.on_answer(RecordedRequest(5, 0, 0, 0, "r5", "/", b""), True, None, 1, None, [], 0.001)
    s = diff.summary()
    assert s["compared"] == 5 and s["no_recorded_answer"] == 1
    assert s["status"] == {"ok_to_ok": 1, "ok_to_error": 2, "error_to_ok": 1, "error_to_error": 0,
                           "error_changed": 1, "changed": 4}
    assert [(e["request"], e["recorded"], e["now"]) for e in s["status_examples"]] == [
        (1, "ok", "ValueError"), (2, "ValueError", "ok"), (3, "ValueError", "KeyError"), (4, "ok", "timeout")]


def test_document_counts_and_ids_that_changed() -> None:
    diff = ReplayDiff()
    diff.on_answer(_recorded(0, ids=["a", "b"]), True, None, 2, ["a", "b"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(1, ids=["a", "b"]), True, None, 1, ["a"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(2, ids=["a", "b"]), True, None, 2, ["a", "c"], _spans(600, 100), 0.001)
    # The request chose no ids: the gateway's new ones are no change.
    diff.on_answer(_recorded(3, ids=["x"]), False, None, 1, ["y"], _spans(600, 100), 0.001)
    # A session that cannot read ids (gRPC, HTTP): only the count is compared.
    diff.on_answer(_recorded(4, ids=["a"]), True, None, 1, None, _spans(600, 100), 0.001)
    s = diff.summary()
    assert s["docs"] == {"count_changed": 1, "ids_compared": 3, "ids_changed": 2}
    assert s["docs_examples"] == [
        {"request": 1, "endpoint": "/index", "recorded_docs": 2, "now_docs": 1, "missing_ids": ["b"], "new_ids": []},
        {"request": 2, "endpoint": "/index", "recorded_docs": 2, "now_docs": 2, "missing_ids": ["b"],
         "new_ids": ["c"]},
    ]


def test_latency_per_endpoint_and_hop_on_the_recordings_footing() -> None:
    diff = ReplayDiff()
    for i in range(10):
        diff.on_answer(_recorded(i, "/index", latency_us=500), True, None, 1, [f"d{i}"], _spans(2000, 1500), 0.004)
        diff.on_answer(_recorded(i, "/search", latency_us=800), True, None, 1, [f"d{i}"], _spans(1900, 1500), 0.003)
    s = diff.summary()
    assert s["latency_basis"] == {"recorded": "gateway", "now": "gateway"}
    index = s["endpoints"]["/index"]
    assert index["count"] == 10
    assert index["recorded_ms"] == {"p50": 0.5, "p99": 0.5}
    assert index["now_ms"] == {"p50": 2.0, "p99": 2.0}  # the gateway entry, not the 4 ms round trip
    assert s["hops"]["upper"]["recorded_ms"]["p50"] == 0.1 and s["hops"]["upper"]["now_ms"]["p50"] == 1.5
    assert "outside_gateway" not in s["hops"]
    assert s["hops_added"] == [] and s["hops_removed"] == []
    diff.on_answer(_recorded(0), True, None, 1, ["d0"], route_spans([*_routes(900, 100), Route("embed", T, T + 5)]),
                   0.003)
    diff.on_answer(_recorded(1), True, None, 1, ["d1"], route_spans([Route("gateway", T, T + 9)]), 0.003)
    assert diff.summary()["hops_added"] == ["embed"] and diff.summary()["hops_removed"] == ["upper"]
    assert "hops now, not recorded: embed" in format_diff(diff.summary())
    har = ReplayDiff(LATENCY_ROUND_TRIP)
    har.on_answer(_recorded(0, latency_us=5000), True, None, 1, ["d0"], _spans(2000, 100), 0.007)
    assert har.summary()["endpoints"]["/index"]["now_ms"]["p50"] == 7.0  # a browser timed its round trip


def test_workers_diffs_merge_exactly() -> None:
    parts = [ReplayDiff(), ReplayDiff()]
    whole = ReplayDiff()
    for i in range(20):
        error = "ValueError" if i % 7 == 0 else None
        for diff in (parts[i % 2], whole):
            diff.on_answer(_recorded(i, latency_us=100 + i), True, error, 1, [f"d{i}"], _spans(200 + i, 50), 0.001)
    merged = ReplayDiff.from_plain(parts[0].to_plain())
    merged.merge(ReplayDiff.from_plain(parts[1].to_plain()))
    a, b = merged.summary(), whole.summary()
    assert a["status"] == b["status"] and a["endpoints"] == b["endpoints"] and a["hops"] == b["hops"]
    assert sorted(a["hops"]) == ["gateway", "upper"] and a["hops"]["upper"]["now_ms"]["p50"] == 0.05  # now's too
    assert sorted(e["request"] for e in a["status_examples"]) == sorted(e["request"] for e in b["status_examples"])


def test_the_table_names_what_changed() -> None:
    diff = ReplayDiff()
    diff.on_answer(_recorded(0), True, "ValueError", 1, ["d0"], _spans(600, 100), 0.001)
    diff.on_answer(_recorded(1, ids=["a", "b"]), True, None, 1, ["a"], _spans(600, 100), 0.001)
    text = format_diff(diff.summary())
    assert "ok->error 1" in text
    assert "request 0 /index: ok -> ValueError" in text
    assert "request 1 /index: 2 -> 1 docs, missing ['b'], new []" in text
    assert "endpoint /index" in text and "hop upper" in text


def test_the_engines_comparison_follows_each_request_once() -> None:
    recorded = [_recorded(0), _recorded(1, error="ValueError"), _recorded(2)]

    class Answer:
        def __init__(self) -> None:
            self.routes = _routes(600, 100)
            self.doc_ids = ["d0"]

        def route_spans(self) -> list[tuple[str, int]]:
            return route_spans(self.routes)

    comparison = ReplayComparison(recorded, [True, True, True])
    comparison.sent("a", 0)
    comparison.sent("b", 1)
    comparison.sent("c", 2)
    comparison.answered("a", Answer(), 1, None, 0.001)
    comparison.answered("a", Answer(), 1, None, 0.001)  # a late duplicate: already settled
    comparison.answered("b", Answer(), 1, None, 0.001)
    comparison.failed("c", "timeout")
    comparison.failed("zzz", "close 1006")  # not a replayed request
    s = comparison.diff.summary()
    assert s["compared"] == 3
    assert s["status"]["ok_to_ok"] == 1 and s["status"]["error_to_ok"] == 1 and s["status"]["ok_to_error"] == 1
