"""The load engine against a gateway that misbehaves: a stall shows in the tail, a lost connection is
counted and recovered from, and the request counts still add up.

The server is `load_helpers.FakeGateway`, which answers like a gateway but stalls or ends a connection
at a request count chosen by the test, so the fault lands mid-run whatever the machine's speed; and a
bare TCP listener that never completes the WebSocket handshake.
"""

from __future__ import annotations

import socket

import pytest
from load_helpers import RowList, assert_adds_up, fake_gateway, load_in_process
from relay_process import LOOPBACK

from loadtest.sessions.base import ConnectError

STALL_S = 0.5


def test_open_model_reports_a_stall_in_the_tail() -> None:
    # 200/s for 2 s; the 150th request (at 0.75 s) freezes every answer for 0.5 s. The open model keeps
    # sending on schedule, so ~100 requests wait out the stall and latency from due time shows it.
    with fake_gateway(delay_s=0.002, stall_after=150, stall_s=STALL_S) as gw:
        rows = RowList()
        summary, _ = load_in_process(gw.url, rate=200.0, duration_s=2.0, series=rows)
        assert gw.stalled
    req = summary["requests"]
    assert req["sent"] == 400
    assert req["ok"] == 400
    latency = summary["latency_ms"]
    assert latency["p99"] >= 400.0, latency
    assert latency["max"] >= 450.0, latency
    assert latency["p50"] < 100.0, "most requests were not caught in the stall"
    # The time series shows it too, in the second where the stalled answers arrived.
    assert max(row["max_ms"] or 0.0 for row in rows) >= 450.0


def test_closed_model_hides_most_of_the_same_stall() -> None:
    # One user in a loop: during the stall it waits for one answer and sends nothing, so the stall
    # touches one request out of hundreds (coordinated omission) and stays out of p99.
    with fake_gateway(delay_s=0.002, stall_after=150, stall_s=STALL_S) as gw:
        summary, _ = load_in_process(gw.url, concurrency=1, duration_s=2.0)
        assert gw.stalled
    latency = summary["latency_ms"]
    assert summary["requests"]["ok"] >= 200
    assert latency["max"] >= 450.0, "the one stalled request is still measured"
    assert latency["p99"] < 400.0, latency


@pytest.mark.parametrize(
    ("subprotocol", "kill_code", "reason"),
    [
        ("bytes", None, "close 1006"),  # TCP dropped, no close frame
        ("json", 1011, "close 1011: test gateway going away"),
    ],
    ids=["bytes-tcp-drop", "json-close-1011"],
)
def test_connection_killed_mid_run_is_counted_and_reconnected(
    subprotocol: str, kill_code: int | None, reason: str
) -> None:
    # 200/s for 2 s, 20 ms per answer (about 4 in flight); the 150th request's connection is ended at
    # 0.75 s with that request unanswered.
    with fake_gateway(delay_s=0.020, kill_after=150, kill_code=kill_code) as gw:
        rows = RowList()
        summary, _ = load_in_process(gw.url, subprotocol=subprotocol, rate=200.0, duration_s=2.0, series=rows)
        assert gw.killed
        assert gw.connections >= 2
    req = summary["requests"]
    assert_adds_up(summary)
    assert summary["reconnects"] >= 1
    assert req["transport_failed"] >= 1
    assert summary["errors"] == {reason: req["transport_failed"]}
    # Requests due while the session was down were dropped, not sent: the schedule's count is kept.
    assert req["sent"] + req["dropped"] == 400
    assert set(req["dropped_by_reason"]) <= {"no connection"}
    assert req["failed"] == req["timeout"] == req["unanswered"] == 0
    # Traffic went on after the reconnect: answers in a later second than the one with the failures.
    first_error = next(i for i, row in enumerate(rows) if row["errors"])
    assert sum(row["ok"] for row in rows[first_error + 1 :]) > 100, rows
    assert req["ok"] > 300


def test_handshake_that_never_completes_is_a_connect_error_with_a_reason() -> None:
    # TCP is accepted (the backlog) but no HTTP upgrade answer ever comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)
        url = f"ws://{LOOPBACK}:{sock.getsockname()[1]}"
        with pytest.raises(ConnectError) as caught:
            load_in_process(url, rate=10.0, duration_s=1.0, connect_timeout_s=0.5)
    message = str(caught.value)
    assert message.startswith(url)
    assert "Timeout" in message, f"the reason is missing: {message!r}"
