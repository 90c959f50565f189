"""Faults under a steady load, measured: `flowrelay load` -> `flowrelay serve --upstream` -> a real Jina Flow.

Each test runs the load tester as a process at a constant rate (open model) for about twelve seconds and
breaks something in the middle of the run:

* the Flow is killed outright (SIGKILL to its process group) and restarted on its port: the load engine's
  totals add up, the failures are answered errors (the client's connection to the relay never drops),
  and the relay serves again by itself; the recovery time the relay measured is printed;
* the relay is killed and started again on the same port: the load engine reconnects and goes on, and
  the gap shows in its time series;
* the relay gets SIGTERM: it answers everything it had admitted before closing 1001, so no request
  vanishes; requests sent after it stopped reading are counted with the close reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from jina_peer import RunningFlow, free_port
from load_helpers import read_request_log
from relay_process import LOOPBACK, run_relay
from upstream_helpers import LoadRun, RestartableFlow, assert_adds_up, relay_status, wait_until

pytestmark = pytest.mark.jina

RATE = "150"
DURATION = "12s"
LOAD_END_S = 60.0  # bound on a run's end: duration + grace + slack
RECOVERY_BOUND_S = 30.0


def _load_args(*extra: str) -> tuple[str, ...]:
    return ("--rate", RATE, "--duration", DURATION, "--subprotocol", "bytes", "--endpoint", "/index",
            "--timeout", "5s", "--grace", "5s", *extra)


def _admitted(port: int) -> int:
    return int(relay_status(port)["envs"]["requests_total"])


def test_flow_killed_and_restarted_under_load(tmp_path: Path) -> None:
    with RestartableFlow() as flow, run_relay("--upstream", flow.url) as relay, \
            LoadRun(relay.url, tmp_path / "load", *_load_args()) as load:
        wait_until(lambda: _admitted(relay.port) >= 300, 20, "two seconds of steady load")
        flow.kill()
        wait_until(lambda: not relay_status(relay)["upstream"]["healthy"], 10, "the relay to see the Flow gone")
        time.sleep(1.0)  # down for a while: the run must see it
        flow.start()
        back = time.monotonic()
        status = wait_until(lambda: (s := relay_status(relay))["upstream"]["healthy"] and s, RECOVERY_BOUND_S,
                            "the relay to reconnect by itself")
        reconnect_s = time.monotonic() - back
        admitted_at_recovery = int(status["envs"]["requests_total"])
        summary = load.finish(LOAD_END_S)
        rows = load.rows()
        final = relay_status(relay)
        assert relay.proc.poll() is None, "the relay was not restarted"

    recoveries = final["upstream"]["recoveries_s"]
    print(f"\nrelay recovery: {recoveries[-1]} s from the first failure to service again "
          f"(the Flow was down about 1 s and took its own time to start); "
          f"{reconnect_s:.2f} s from the Flow being ready to the relay serving")
    print(f"load: {summary['requests']}; errors {summary['errors']}")

    assert_adds_up(summary)
    r = summary["requests"]
    assert r["failed"] > 0, "requests during the outage are answered with an error status"
    assert set(summary["errors"]) == {"executor: UpstreamError"}, summary["errors"]
    assert r["transport_failed"] == r["timeout"] == r["unanswered"] == 0, r
    assert summary["reconnects"] == 0, "the relay shields its clients: their connections never dropped"
    assert r["ok"] > 0
    assert int(final["envs"]["requests_total"]) > admitted_at_recovery, "the load went on after recovery"

    first_error = next(i for i, row in enumerate(rows) if row["errors"] > 0)
    assert any(row["ok"] > 0 for row in rows[:first_error]), "served before the kill"
    assert any(row["ok"] > 0 and row["errors"] == 0 for row in rows[first_error + 1 :]), (
        f"served again after the restart: {[(row['ok'], row['errors']) for row in rows]}"
    )
    assert recoveries and 0 < recoveries[-1] < RECOVERY_BOUND_S
    assert reconnect_s < 15.0, "the relay's reconnect backoff is capped at 2 s"


def test_relay_restarted_under_load(tmp_path: Path, jina_flow: RunningFlow) -> None:
    port = free_port()
    args = ("--upstream", jina_flow.url, "--port", str(port))
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(run_relay(*args))
        load = stack.enter_context(LoadRun(f"ws://{LOOPBACK}:{port}", tmp_path / "load", *_load_args()))
        wait_until(lambda: _admitted(port) >= 300, 20, "two seconds of steady load")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
        time.sleep(1.5)  # with the engine's reconnect backoff, a gap of two or more whole intervals
        second = stack.enter_context(run_relay(*args))
        assert second.port == port
        wait_until(lambda: _admitted(port) > 50, 20, "the load engine to reconnect and send again")
        summary = load.finish(LOAD_END_S)
        rows = load.rows()

    print(f"\nload: {summary['requests']}; errors {summary['errors']}; reconnects {summary['reconnects']}")
    assert_adds_up(summary)
    r = summary["requests"]
    assert summary["reconnects"] >= 1
    assert r["failed"] == r["timeout"] == r["unanswered"] == 0, r
    # Only the requests in flight when the relay died are lost, each counted with the reason.
    assert set(summary["errors"]) <= {"close 1006"}, summary["errors"]
    assert r["dropped_by_reason"].get("no connection", 0) > 0, "while the relay was gone, due requests were dropped"

    oks = [row["ok"] for row in rows]
    gap = next((i for i, ok in enumerate(oks) if ok == 0 and any(oks[:i])), None)
    assert gap is not None, f"no interval without answers while the relay was down: {oks}"
    assert any(oks[gap + 1 :]), f"answers again after the restart: {oks}"


def test_sigterm_under_load_answers_everything_in_flight(tmp_path: Path, jina_flow: RunningFlow) -> None:
    """The Flow takes 15 ms a request, one at a time, at 100 requests/s: a backlog builds up in flight. On
    SIGTERM the relay stops reading, answers all of it, closes 1001 and exits 0."""
    out = tmp_path / "load"
    with run_relay("--upstream", jina_flow.url, "--drain-timeout", "20s") as relay, \
            LoadRun(relay.url, out, "--rate", "100", "--duration", "8s", "--param", "sleep_ms=15",
                    "--endpoint", "/index", "--timeout", "30s", "--grace", "10s", "--log-requests") as load:
        status = wait_until(lambda: (s := relay_status(relay))["upstream"]["in_flight"] >= 20 and s, 20,
                            "a backlog in flight")
        admitted_before = int(status["envs"]["requests_total"])
        relay.terminate()
        code = relay.wait(40)
        summary = load.finish(LOAD_END_S)
        records = read_request_log(out / "requests.msgpack")

    print(f"\nin flight at SIGTERM: >= {status['upstream']['in_flight']}; load: {summary['requests']}; "
          f"errors {summary['errors']}")
    assert code == 0
    assert "draining" in relay.output()
    assert_adds_up(summary)
    r = summary["requests"]
    assert r["failed"] == r["timeout"] == r["unanswered"] == 0, r
    assert r["ok"] >= admitted_before, "everything admitted before SIGTERM, in flight included, was answered"
    assert set(summary["errors"]) <= {"close 1001: the relay is shutting down"}, summary["errors"]

    # One connection, read in order: what the relay admitted is a prefix of what was sent, and all of it ok.
    statuses = [rec[4] for rec in sorted(records, key=lambda rec: rec[2])]
    assert len(statuses) == r["sent"]
    n_ok = statuses.count("ok")
    assert statuses[:n_ok] == ["ok"] * n_ok, "no request was lost before a later one was answered"
