"""The load engine against a real Jina 3.34 Flow (`gateway -> upper -> sleeper`, sleeper at 2 ms).

The same checks as against our relay, where a real gateway must agree: the rate achieved, the hops
read from Jina's routes, a known sleep measured at its delay, answers matched in both subprotocols
(in json mode through the gateway's echo of `parameters`), and the subprotocol a Jina gateway
negotiates: none, as it echoes nothing. Needs the Jina peer venv (scripts/setup_peer.sh).
"""

from __future__ import annotations

from typing import Any

import pytest
from jina_peer import RunningFlow
from load_helpers import assert_adds_up, load_in_process

pytestmark = pytest.mark.jina

RATE = 100.0
DURATION_S = 2.0
FLOW_SLEEP_MS = 2.0  # what the jina_flow fixture configures
# Plausible for a 2 ms sleep inside an Executor: a timer's hair below it, generous slack above.
FLOW_SLEEP_BAND_MS = (FLOW_SLEEP_MS - 0.2, 20.0)


@pytest.fixture(scope="module", params=["bytes", "json"])
def jina_run(request: pytest.FixtureRequest, jina_flow: RunningFlow) -> tuple[str, dict[str, Any]]:
    subprotocol = request.param
    summary, result = load_in_process(jina_flow.url, subprotocol=subprotocol, rate=RATE, duration_s=DURATION_S)
    assert result.late_answers == 0
    return subprotocol, summary


def test_rate_matches_target(jina_run: tuple[str, dict[str, Any]]) -> None:
    _, summary = jina_run
    req = summary["requests"]
    assert req["sent"] == int(RATE * DURATION_S)
    assert req["ok"] == req["sent"], summary["errors"]
    assert_adds_up(summary)
    assert summary["rate"]["target_rps"] == pytest.approx(RATE)
    assert summary["rate"]["achieved_rps"] == pytest.approx(RATE)
    assert summary["docs"]["received"] == req["sent"]


def test_hops_from_jina_routes(jina_run: tuple[str, dict[str, Any]]) -> None:
    _, summary = jina_run
    hops = summary["hops"]
    assert set(hops) == {"gateway", "upper", "sleeper", "outside_gateway"}
    assert all(h["count"] == summary["requests"]["ok"] for h in hops.values()), hops
    low, high = FLOW_SLEEP_BAND_MS
    assert low <= hops["sleeper"]["p50"] <= high, hops["sleeper"]
    assert hops["gateway"]["p50"] >= hops["sleeper"]["p50"]
    assert hops["gateway"]["max"] >= hops["sleeper"]["max"]
    assert hops["outside_gateway"]["p50"] >= 0.0


def test_jina_gateway_negotiates_nothing(jina_run: tuple[str, dict[str, Any]]) -> None:
    subprotocol, summary = jina_run
    assert summary["subprotocol"]["offered"] == subprotocol
    assert summary["subprotocol"]["negotiated"] is None
    assert summary["subprotocol"]["codec"] == subprotocol  # the offer decides the codec


def test_known_sleep_measured_at_its_delay(jina_flow: RunningFlow) -> None:
    # The peer's sleeper takes `sleep_ms` from the request's parameters, as the relay's does. It sleeps
    # in one blocking replica, so requests are spaced (one per 50 ms) to never queue behind each other:
    # at 100/s x 20 ms it would be saturated and its span would grow with the queue.
    summary, _ = load_in_process(jina_flow.url, rate=20.0, duration_s=1.5, parameters={"sleep_ms": 20})
    assert summary["requests"]["ok"] == summary["requests"]["sent"] == 30
    sleeper = summary["hops"]["sleeper"]
    assert 19.0 <= sleeper["p50"] <= 35.0, sleeper
    assert 19.0 <= summary["service_time_ms"]["p50"] <= 45.0, summary["service_time_ms"]
