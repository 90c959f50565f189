"""`flowrelay load --dashboard`: the live page and its server-sent events, from a real run against a real relay.

The run (`--rate 200 --duration 12s`, through `upper -> sleeper (2 ms) -> fail (2 %)`) serves `/` and `/events`
while it goes: a client that connects a few seconds in gets the history first (every second from the first),
then a row as each second closes, the thresholds' live states, and at the end the summary; the rows it got are
the rows of the results folder's timeseries.jsonl. Also: the pieces behind it (the event log and its spool, the
live thresholds, the address flag) and the usage errors.
"""

from __future__ import annotations

import itertools
import socket
import threading
from pathlib import Path

import orjson
import pytest
from dashboard_helpers import LiveLoad, get
from load_helpers import run_load_cli
from relay_process import run_relay
from sse_helpers import EventStream

from loadtest.outputs.dashboard import parse_address
from loadtest.outputs.live_thresholds import LiveThresholds
from loadtest.outputs.report.page import final_sections
from relay.common.buckets import LATENCY_BUCKETS_S, bucket_quantile
from relay.common.web.events import EventLog, MemoryRows, SpooledRows

FLOW = ("-e", "upper", "-e", "sleeper=sleep:2ms", "-e", "fail:0.02")
ROW_KEYS = {"t", "interval_s", "warmup", "sent", "answered", "ok", "errors", "dropped", "inflight", "sent_rps",
            "ok_rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "service_p50_ms", "service_p99_ms", "error_reasons",
            "hops", "lag_p99_ms", "lag_max_ms", "p999_ms"}


def test_load_serves_the_dashboard_and_its_events_while_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with run_relay("--log-level", "WARNING", *FLOW) as relay, LiveLoad(
            relay.url, "--rate", "200", "--duration", "12s", "--out", str(out),
            "--threshold", "latency.p99<250ms", "--threshold", "errors.rate<0.001") as run:
        status, content_type, page = get(run.url)
        assert status == 200 and content_type.startswith("text/html")
        assert b"flowrelay load dashboard" in page and b'id="uplot-js"' in page
        assert get(run.url + "nowhere")[0] == 404

        with EventStream(run.url + "events") as first:
            assert first.status == 200 and first.content_type.startswith("text/event-stream")
            assert first.wait_for(lambda s: len(s.rows()) >= 3), run.output
        # A client that comes later: the history first, from the first second, then the seconds as they close.
        with EventStream(run.url + "events") as stream:
            assert stream.wait_for(lambda s: s.last("summary") is not None, 60), list(run.output)
            assert stream.wait_for(lambda s: s.ended.is_set(), 10), "the stream ends with the run"
        assert run.wait(30) == 99  # errors.rate<0.001 fails against a 2 % failing Executor

    events = stream.snapshot()
    assert events[0][0] == "hello" and events[0][1]["ctx"]["target"] == {"points": [[0.0, 200.0]], "after": None}
    rows = stream.rows()
    assert rows[0]["t"] < 1.5, "history first: the first second comes first"
    assert len(rows) >= 12
    for before, after in itertools.pairwise(rows):
        assert after["t"] > before["t"]
    for row in rows[:-1]:
        assert 0.5 < row["interval_s"] < 1.5, "one row per second"
        assert set(row) >= ROW_KEYS
        if row["ok"]:
            assert set(row["hops"]) >= {"gateway", "upper", "sleeper", "fail", "outside_gateway"}
            assert all(h["p50_ms"] <= h["p99_ms"] for h in row["hops"].values())
    # the same rows as the results folder's time series
    written = [orjson.loads(line) for line in (out / "timeseries.jsonl").read_bytes().splitlines()]
    assert rows == written
    # the thresholds as they went: the error rate failing in every measured second
    states = {t["expr"]: t for t in stream.last("thresholds")}
    assert states["errors.rate<0.001"]["failing_seconds"] >= 10
    assert states["latency.p99<250ms"]["state"] in ("holding", "failing")
    # the summary: the report's final sections, with the verdicts of summary.json
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert stream.last("summary") == orjson.loads(orjson.dumps(final_sections(summary, "this run")))


def test_a_lingering_dashboard_serves_after_the_run_and_reloads_get_everything(tmp_path: Path) -> None:
    with run_relay("--log-level", "WARNING", *FLOW) as relay, LiveLoad(
            relay.url, "--rate", "100", "--duration", "3s", "--dashboard-linger", "30s") as run:
        with EventStream(run.url + "events") as stream:
            assert stream.wait_for(lambda s: s.last("summary") is not None, 60), list(run.output)
        # the run is over and the page still up: a new client gets the whole run, then the summary
        with EventStream(run.url + "events") as again:
            assert again.wait_for(lambda s: s.last("summary") is not None)
            assert again.rows() == stream.rows() and len(again.rows()) >= 3
        assert run.proc.poll() is None, "lingering"
        run.interrupt()  # Ctrl-C ends the linger
        assert run.wait(15) == 99 or run.proc.returncode == 0


def test_dashboard_usage_errors_exit_2_before_any_traffic() -> None:
    proc = run_load_cli("ws://127.0.0.1:9", "--rate", "10", "--duration", "1s", "--dashboard", "localhost:http")
    assert proc.returncode == 2 and "--dashboard" in proc.stderr and "[HOST:]PORT" in proc.stderr
    proc = run_load_cli("ws://127.0.0.1:9", "--rate", "10", "--duration", "1s", "--dashboard", "70000")
    assert proc.returncode == 2 and "0..65535" in proc.stderr
    proc = run_load_cli("ws://127.0.0.1:9", "--rate", "10", "--duration", "1s", "--dashboard", "0",
                        "--dashboard-linger", "soon")
    assert proc.returncode == 2 and "--dashboard-linger" in proc.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_load_cli("ws://127.0.0.1:9", "--rate", "10", "--duration", "1s", "--dashboard", str(port))
    assert proc.returncode == 2 and "cannot serve the dashboard" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_parse_address() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:0") == ("0.0.0.0", 0)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address(":7000") == ("127.0.0.1", 7000)
    for bad in ("", "host:", "host:port", "65536"):
        with pytest.raises(ValueError):
            parse_address(bad)


# ---- the event log behind both dashboards ------------------------------------------------------------------


def _messages(sub: object) -> list[bytes]:
    return list(sub.history) + sub.take()  # type: ignore[attr-defined]


def test_event_log_gives_a_new_subscriber_the_history_then_what_follows_with_nothing_lost() -> None:
    log = EventLog(SpooledRows(keep_in_memory=3), max_backlog=10_000)  # nothing reads until the end
    log.set_state("hello", {"ctx": {}})
    produced = 2000
    started = threading.Event()

    def produce() -> None:
        for t in range(produced):
            if t == 500:
                started.set()
            log.add_row({"t": t})

    producer = threading.Thread(target=produce)
    producer.start()
    started.wait(10)
    sub = log.subscribe(lambda: None)  # mid-stream: part history (most of it from the disk spool), part live
    producer.join(10)
    log.set_state("thresholds", [])
    got = [m for m in _messages(sub) if m.startswith(b"data: ")]
    assert [orjson.loads(m[6:]) for m in got] == [{"t": t} for t in range(produced)]
    first = list(log.subscribe(lambda: None).history)
    assert first[0].startswith(b"event: hello\n") and first[-1].startswith(b"event: thresholds\n")
    log.close()


def test_a_replaced_last_row_and_a_subscriber_that_falls_behind() -> None:
    log = EventLog(MemoryRows(keep=5), max_backlog=10)
    for t in range(8):
        log.add_row({"t": t})
    log.replace_last_row({"t": 7, "amended": True})
    history = [orjson.loads(m[6:]) for m in log.subscribe(lambda: None).history]
    assert history == [{"t": t} for t in range(3, 7)] + [{"t": 7, "amended": True}], "the last 5, amended"
    slow = log.subscribe(lambda: None)
    for t in range(20):
        log.add_row({"t": 100 + t})
    assert slow.closed and len(slow.take()) == 10, "dropped after its backlog: its browser starts over"
    assert log.subscribers == 0
    log.close()


def test_spooled_rows_keep_memory_flat_and_the_history_whole(tmp_path: Path) -> None:
    spool = SpooledRows(keep_in_memory=10, directory=str(tmp_path))
    log = EventLog(spool)
    for t in range(5000):
        log.add_row({"t": t, "pad": "x" * 100})
    assert spool.bytes_on_disk > 4990 * 100
    assert len(list(log.subscribe(lambda: None).history)) == 5000
    log.close()
    assert not list(tmp_path.iterdir()), "the spool leaves no file behind"


# ---- live thresholds ---------------------------------------------------------------------------------------


def _row(t: float, **figures: object) -> dict[str, object]:
    return {"t": t, "interval_s": 1.0, "warmup": False, "sent": 100, "ok": 100, "errors": 0, "dropped": 0,
            "sent_rps": 100.0, "ok_rps": 100.0, "p50_ms": 2.0, "p99_ms": 5.0, "max_ms": 9.0, "hops": {}, **figures}


def test_live_thresholds_judge_each_second_and_count_the_seconds_failing() -> None:
    live = LiveThresholds(["latency.p99<10ms", "errors.rate<0.01", "requests.ok>=250", "latency.p9999<1s",
                           "hops.sleeper.p50<3ms"])
    assert {s["state"] for s in live.states()} == {"waiting"}
    live.on_row({**_row(0.5), "warmup": True})
    assert {s["state"] for s in live.states()} == {"warm-up"}
    live.on_row(_row(1.0, hops={"sleeper": {"p50_ms": 2.1, "p99_ms": 2.5}}))
    live.on_row(_row(2.0, p99_ms=50.0, errors=5, ok=95, hops={"sleeper": {"p50_ms": 4.0, "p99_ms": 9.0}}))
    states = {s["expr"]: s for s in live.on_row(_row(3.0))}
    assert states["latency.p99<10ms"]["state"] == "holding" and states["latency.p99<10ms"]["failing_seconds"] == 1
    assert states["errors.rate<0.01"]["failing_seconds"] == 1 and states["errors.rate<0.01"]["value"] == 0.0
    assert states["requests.ok>=250"]["state"] == "holding" and states["requests.ok>=250"]["value"] == 295
    assert states["latency.p9999<1s"]["state"] == "waiting", "the rows have no p99.99: judged at the end"
    assert states["hops.sleeper.p50<3ms"]["state"] == "waiting", "no hop figures in the last second"
    assert states["hops.sleeper.p50<3ms"]["failing_seconds"] == 1
    assert all(s["seconds"] == 3 for s in states.values())


def test_bucket_quantile_as_prometheus_estimates_it() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    assert bucket_quantile(0.5, counts) is None
    i = LATENCY_BUCKETS_S.index(0.002)
    counts[i] = 100  # every observation in (1.6 ms, 2 ms]
    assert bucket_quantile(0.5, counts) == pytest.approx(0.0018)
    assert bucket_quantile(1.0, counts) == pytest.approx(0.002)
    counts[-1] = 100  # and as many above the last bound
    assert bucket_quantile(0.99, counts) == LATENCY_BUCKETS_S[-1]
