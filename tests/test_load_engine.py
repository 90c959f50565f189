"""The load engine against our relay (and a fake gateway where the server's behaviour must be known exactly).

What a user reads in the summary is checked: the rate achieved against the target, the per-hop spans
from routes, a `sleep` Executor measured at its configured delay, the negotiated subprotocol, answers
matched whatever their order, the closed model holding C requests in flight, requests dropped at the
in-flight limit, timeouts. Runs are in-process (`run_load` + `build_summary`), 1-2 s each at low rates;
the latency bands are behaviour checks with generous margins, not speed checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from load_helpers import RowList, assert_adds_up, fake_gateway, load_in_process, read_request_log
from relay_process import RelayProcess, run_relay

SLEEP_MS = 20.0
# Band for a 20 ms sleep seen through the relay: the sleep plus scheduling on a shared machine, and a
# millisecond below it, as an event loop with millisecond timers may wake a hair early.
SLEEP_BAND_MS = (SLEEP_MS - 1.0, 35.0)
RATE = 100.0
DURATION_S = 2.0


@pytest.fixture(scope="module")
def relay20() -> Iterator[RelayProcess]:
    """A relay `gateway -> upper -> sleeper`, the sleeper waiting 20 ms (overridable per request)."""
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", f"sleeper=sleep:{SLEEP_MS:g}ms") as relay:
        yield relay


@pytest.fixture(scope="module", params=["bytes", "json"])
def steady(request: pytest.FixtureRequest, relay20: RelayProcess) -> tuple[str, dict[str, Any]]:
    """One 2 s run at 100/s, even arrivals, per subprotocol; several tests read its summary."""
    subprotocol = request.param
    summary, _ = load_in_process(relay20.url, subprotocol=subprotocol, rate=RATE, duration_s=DURATION_S)
    return subprotocol, summary


def test_achieved_rate_matches_target(steady: tuple[str, dict[str, Any]]) -> None:
    _, summary = steady
    req = summary["requests"]
    # Even arrivals: exactly rate x duration requests, all answered.
    assert req["sent"] == int(RATE * DURATION_S)
    assert req["ok"] == req["sent"]
    assert req["dropped"] == 0
    assert_adds_up(summary)
    assert summary["rate"]["target_rps"] == pytest.approx(RATE)
    assert summary["rate"]["achieved_rps"] == pytest.approx(RATE)
    assert summary["docs"] == {"sent": req["sent"], "received": req["sent"]}
    assert summary["errors"] == {}


def test_hops_from_routes(steady: tuple[str, dict[str, Any]]) -> None:
    _, summary = steady
    hops = summary["hops"]
    assert set(hops) == {"gateway", "upper", "sleeper", "outside_gateway"}
    ok = summary["requests"]["ok"]
    assert all(h["count"] == ok for h in hops.values()), hops
    # The gateway's span encloses the Executors'; every request's, so every percentile's too.
    for stat in ("p50", "p99", "max"):
        assert hops["gateway"][stat] >= hops["sleeper"][stat] >= hops["upper"][stat]
    assert hops["upper"]["p50"] < 5.0, "upper-casing one short text takes far less than the sleep"
    assert hops["outside_gateway"]["p50"] >= 0.0


def test_sleep_executor_measured_at_its_delay(steady: tuple[str, dict[str, Any]]) -> None:
    _, summary = steady
    low, high = SLEEP_BAND_MS
    assert low <= summary["hops"]["sleeper"]["p50"] <= high
    assert low <= summary["service_time_ms"]["p50"] <= high
    # Latency runs from the due time, never later than the actual send.
    assert summary["latency_ms"]["p50"] >= summary["service_time_ms"]["p50"]
    assert summary["latency_ms"]["count"] == summary["requests"]["ok"]


def test_negotiated_subprotocol_is_the_relays_echo(steady: tuple[str, dict[str, Any]]) -> None:
    subprotocol, summary = steady
    assert summary["subprotocol"]["offered"] == subprotocol
    assert summary["subprotocol"]["negotiated"] == subprotocol
    assert summary["subprotocol"]["codec"] == subprotocol


def test_no_subprotocol_offered_nothing_negotiated(relay20: RelayProcess) -> None:
    summary, _ = load_in_process(relay20.url, subprotocol="none", rate=RATE, duration_s=1.0)
    assert summary["subprotocol"]["offered"] is None
    assert summary["subprotocol"]["negotiated"] is None
    assert summary["subprotocol"]["codec"] == "json"  # what a gateway speaks to a client that offers nothing
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == int(RATE)


def test_json_mode_matches_out_of_order_answers_from_relay() -> None:
    # Exponential service times (median 5 ms) at 200/s: answers overtake each other all the time.
    with run_relay("--log-level", "WARNING", "-e", "jitter=sleep:exponential:5ms") as relay:
        summary, result = load_in_process(relay.url, subprotocol="json", rate=200.0, duration_s=1.0)
    assert summary["requests"]["sent"] == 200
    assert summary["requests"]["ok"] == summary["requests"]["sent"]
    assert result.late_answers == 0
    assert summary["hops"]["jitter"]["count"] == 200


@pytest.mark.parametrize("subprotocol", ["json", "bytes"])
def test_each_answer_matched_to_its_own_request(subprotocol: str, tmp_path: Path) -> None:
    """The gateway holds every request whose id ends in an even digit 150 ms, the others 1 ms, so answers
    come back out of order; the request log must show each request with its own service time."""

    def delay_for(rid: str) -> float:
        return 0.150 if int(rid[-1]) % 2 == 0 else 0.001

    log = tmp_path / "requests.msgpack"
    with fake_gateway(delay_for=delay_for) as gw:
        summary, _ = load_in_process(gw.url, subprotocol=subprotocol, rate=100.0, duration_s=1.0, log_requests=log)
        assert gw.out_of_order > 0
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == 100
    records = read_request_log(log)
    assert len(records) == 100
    for rid, _due, sent, answered, status, _docs in records:
        assert status == "ok"
        service_s = answered - sent
        if int(rid[-1]) % 2 == 0:
            assert service_s >= 0.145, (rid, service_s)
        else:
            assert service_s < 0.100, (rid, service_s)


def test_closed_model_keeps_c_in_flight() -> None:
    concurrency, delay_s, duration_s = 4, 0.020, 1.5
    with fake_gateway(delay_s=delay_s) as gw:
        rows = RowList()
        summary, _ = load_in_process(gw.url, concurrency=concurrency, duration_s=duration_s, series=rows)
        assert gw.max_in_flight == concurrency  # reached C, never more
    assert summary["model"] == "closed"
    assert summary["concurrency"] == concurrency
    assert summary["rate"]["target_rps"] is None
    req = summary["requests"]
    assert req["ok"] == req["sent"]
    assert req["dropped"] == 0
    assert_adds_up(summary)
    # C in flight at a 20 ms service time is at most C / 20 ms = 200/s; well above half of it here.
    achieved = summary["rate"]["achieved_rps"]
    assert achieved == pytest.approx(req["sent"] / summary["measured_duration_s"], rel=0.01)
    assert 0.5 * concurrency / delay_s <= achieved <= 1.05 * concurrency / delay_s
    assert rows and all(row["inflight"] <= concurrency for row in rows)


def test_due_requests_dropped_when_connection_is_full(relay20: RelayProcess) -> None:
    # One request at a time, each held 50 ms, 100 due per second: most find the connection full.
    summary, _ = load_in_process(relay20.url, rate=100.0, duration_s=1.0, max_inflight=1, parameters={"sleep_ms": 50})
    req = summary["requests"]
    assert req["sent"] + req["dropped"] == 100
    assert req["dropped"] > 0
    assert req["sent"] <= 21  # one every 50 ms at most
    assert req["dropped_by_reason"] == {"in-flight limit": req["dropped"]}
    assert req["ok"] == req["sent"]
    assert_adds_up(summary)


def test_requests_past_timeout_are_timeouts(relay20: RelayProcess, tmp_path: Path) -> None:
    log = tmp_path / "requests.msgpack"
    summary, _ = load_in_process(
        relay20.url, rate=10.0, duration_s=1.0, timeout_s=0.2, parameters={"sleep_ms": 1000}, log_requests=log
    )
    req = summary["requests"]
    assert req["sent"] == 10
    assert req["timeout"] == 10, req
    assert req["ok"] == 0
    assert summary["errors"] == {"timeout": 10}
    assert_adds_up(summary)
    assert [rec[4] for rec in read_request_log(log)] == ["timeout"] * 10
