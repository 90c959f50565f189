"""`flowrelay load --workers N --coordinator HOST:PORT` as a Kubernetes Indexed Job runs it: N processes of the
same command, JOB_COMPLETION_INDEX 0..N-1, started in any order, against a relay on 127.0.0.1.

* merged `sent` equals the one-machine schedule, and the relay saw (and answered) each request once;
* the merged histograms equal the union of the workers' own (as HdrHistogram's reader reads their logs),
  and `flowrelay report --merge` of the workers' folders gives the merged summary, to the last count;
* a worker arriving after the start is refused (exit 1, with the reason);
* a worker killed with -9 is named in the summary and on the live output, and the run exits 1; the others,
  aborted, still hand over what they did;
* worker 0's `--dashboard` shows the whole run; a replay is split over the workers by recorded connection.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from capture_helpers import by_connection, json_frame, normalised, record_connections
from cluster_helpers import WorkerProcess, free_port, hdrh_intervals, hdrh_totals, relay_requests, start_worker, stop
from hdrh.histogram import HdrHistogram
from load_helpers import fake_gateway
from relay_process import LOOPBACK, RelayProcess, flowrelay_command, run_relay
from sse_helpers import EventStream

from loadtest.measure.histograms import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS
from loadtest.outputs.report.page import final_sections


@pytest.fixture
def relay() -> Iterator[RelayProcess]:
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", "sleeper=sleep:1ms") as r:
        yield r


def load_args(relay: RelayProcess, port: int, *extra: str) -> list[str]:
    return ["load", relay.url, "--rate", "300", "--duration", "3s", "--connections", "3", "--workers", "3",
            "--coordinator", f"{LOOPBACK}:{port}", "--threshold", "latency.p99<5s", *extra]


def summary_of(folder: Path) -> dict:
    return orjson.loads((folder / "summary.json").read_bytes())


def test_three_workers_started_as_the_job_starts_them_give_one_exact_result(relay: RelayProcess,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "results"
    port = free_port()
    workers: list[WorkerProcess] = []
    try:
        for index in (2, 0, 1):  # any order: 2 starts before the coordinator exists
            workers.append(start_worker(load_args(relay, port, "--out", str(out)), index))
            time.sleep(0.3)
        codes = {w.index: w.wait() for w in workers}
    finally:
        stop(workers)
    by_index = {w.index: w for w in workers}
    assert codes == {0: 0, 1: 0, 2: 0}, by_index[0].stderr
    assert "all 3 workers ready" in by_index[0].stderr

    merged = summary_of(out)
    assert merged["requests"]["sent"] == 900  # 300/s for 3 s: the one-machine schedule
    assert merged["requests"]["ok"] == 900 and merged["requests"]["dropped"] == 0
    assert relay_requests(relay.port) == 900  # every request reached the relay once, and was answered
    assert merged["late_answers"] == 0
    assert merged["workers"]["count"] == 3 and merged["workers"]["lost"] == []
    assert len(merged["workers"]["clock_offsets_ms"]) == 3
    own = [summary_of(out / f"worker-{k}") for k in range(3)]
    assert [s["requests"]["sent"] for s in own] == [300, 300, 300]  # requests i with i mod 3 == k
    assert [p["requests"]["sent"] for p in merged["per_worker"]] == [300, 300, 300]
    assert [s["connections"] for s in own] == [1, 1, 1]
    assert merged["thresholds"][0]["ok"] is True

    # The merged histograms are the union of the workers' recorded values (as HdrHistogram reads the logs).
    whole = hdrh_totals(out)
    for tag in ("latency", "service_time", "scheduler_lag", "hop.sleeper"):
        union = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        for k in range(3):
            union.add(hdrh_totals(out / f"worker-{k}")[tag])
        assert union.get_total_count() == whole[tag].get_total_count() == 900
        assert bytes(union.counts) == bytes(whole[tag].counts), tag
    for key in ("p50", "p99"):
        percentile = {"p50": 50, "p99": 99}[key]
        assert merged["latency_ms"][key] == pytest.approx(
            min(whole["latency"].get_value_at_percentile(percentile) / 1000, merged["latency_ms"]["max"]), abs=0.0015)
    # The merged seconds add up too.
    rows = [orjson.loads(line) for line in (out / "timeseries.jsonl").read_bytes().splitlines()]
    assert sum(r["sent"] for r in rows) == 900
    assert sum(h.get_total_count() for h in hdrh_intervals(out / "latency.hlog") if h.get_tag() == "latency") == 900

    # The workers' folders, merged by hand, are the cluster's merged result to the last count.
    again = tmp_path / "again"
    proc = subprocess.run([*flowrelay_command(), "report", "--merge", *(str(out / f"worker-{k}") for k in range(3)),
                           "--out", str(again)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    by_hand = summary_of(again)
    for key in ("requests", "accounting", "latency_ms", "service_time_ms", "scheduler_lag_ms", "hops", "errors",
                "docs", "rate", "latency_distribution", "connections"):
        assert by_hand[key] == merged[key], key


def test_a_worker_that_arrives_after_the_start_is_refused(relay: RelayProcess, tmp_path: Path) -> None:
    port = free_port()
    args = ["load", relay.url, "--rate", "100", "--duration", "4s", "--workers", "2", "--coordinator",
            f"{LOOPBACK}:{port}", "--connections", "2", "--quiet"]
    workers = [start_worker(args, 0), start_worker(args, 1)]
    try:
        deadline = time.monotonic() + 60
        while "all 2 workers ready" not in (line := workers[0].proc.stderr.readline()):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "the run did not start"
        time.sleep(2.5)  # past T0
        late = start_worker(args, 1)  # a replaced pod: same index, after the start
        assert late.wait() == 1
        codes = [w.wait() for w in workers]
    finally:
        stop(workers)
    assert "refused this worker: the run started" in late.stderr and "would add load" in late.stderr
    assert codes == [0, 0]


def test_a_worker_killed_mid_run_is_named_and_the_run_exits_1(relay: RelayProcess, tmp_path: Path) -> None:
    out = tmp_path / "results"
    port = free_port()
    args = ["load", relay.url, "--rate", "300", "--duration", "8s", "--connections", "3", "--workers", "3",
            "--coordinator", f"{LOOPBACK}:{port}", "--out", str(out)]
    workers = [start_worker(args, k) for k in range(3)]
    try:
        deadline = time.monotonic() + 60
        while "all 3 workers ready" not in (line := workers[0].proc.stderr.readline()):  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "the run did not start"
        time.sleep(4.0)  # T0 is 2 s after the announcement: about 2 s into the run
        workers[2].proc.send_signal(signal.SIGKILL)
        codes = [w.wait() for w in workers]
    finally:
        stop(workers)
    assert codes[0] == 1 and codes[2] == -signal.SIGKILL
    assert codes[1] == 1 and "aborted" in workers[1].stderr and "worker 2 lost at" in workers[1].stderr
    assert "worker 2 lost at" in workers[0].stderr and "its connection closed" in workers[0].stderr
    merged = summary_of(out)
    (lost,) = merged["workers"]["lost"]
    assert lost["worker"] == 2 and lost["reason"] == "its connection closed" and 0 < lost["at_s"] < 8
    # What the lost worker had sent until its last row counts, and the accounting still adds up.
    assert merged["per_worker"][2]["lost_at_s"] == lost["at_s"]
    assert merged["per_worker"][2]["requests"]["sent"] > 0
    # The aborted worker stopped, and handed over (and kept) what it did, to the last request.
    own = summary_of(out / "worker-1")
    assert merged["per_worker"][1]["requests"] == own["requests"] and 0 < own["requests"]["sent"] < 800
    assert own["requests"]["sent"] == (own["requests"]["ok"] + own["requests"]["failed"]
                                       + own["requests"]["transport_failed"] + own["requests"]["timeout"]
                                       + own["requests"]["unanswered"])
    requests = merged["requests"]
    assert requests["sent"] == (requests["ok"] + requests["failed"] + requests["transport_failed"]
                                + requests["timeout"] + requests["unanswered"])
    assert 0 < requests["sent"] < 2400


def test_worker_0s_dashboard_shows_the_whole_run(relay: RelayProcess, tmp_path: Path) -> None:
    """`--dashboard` on worker 0: the page is up while the workers gather, then shows the merged seconds (the rows
    of the merged timeseries.jsonl), each worker's rate and health, and at the end the merged summary."""
    out = tmp_path / "results"
    port = free_port()
    args = ["load", relay.url, "--rate", "200", "--duration", "3s", "--connections", "2", "--workers", "2",
            "--coordinator", f"{LOOPBACK}:{port}", "--out", str(out), "--threshold", "latency.p99<5s"]
    head = start_worker([*args, "--dashboard", f"{LOOPBACK}:0"], 0)
    workers = [head]
    try:
        deadline = time.monotonic() + 60
        found = None
        while found is None:
            line = head.proc.stderr.readline()  # type: ignore[union-attr]
            assert line and time.monotonic() < deadline, "worker 0 printed no dashboard URL"
            found = re.search(r"dashboard at (http://\S+/)", line)
        url = found.group(1)
        with EventStream(url + "events", timeout_s=60) as stream:
            # Before worker 1 exists, the page already lists both workers.
            assert stream.wait_for(lambda s: s.last("workers") is not None), stream.snapshot()
            assert [w["health"] for w in stream.last("workers")] == ["starting", "starting"]
            workers.append(start_worker(args, 1))
            assert stream.wait_for(lambda s: s.last("summary") is not None, 90), stream.snapshot()
            assert stream.wait_for(lambda s: s.ended.is_set(), 10), "the stream ends with the run"
        codes = [w.wait() for w in workers]
    finally:
        stop(workers)
    assert codes == [0, 0], head.stderr
    merged = summary_of(out)
    assert merged["requests"]["sent"] == 600
    rows = stream.rows()
    assert rows == [orjson.loads(line) for line in (out / "timeseries.jsonl").read_bytes().splitlines()]
    assert sum(r["sent"] for r in rows) == 600  # the cluster's seconds, not worker 0's share
    final = stream.last("workers")
    assert [(w["worker"], w["health"], w["healthy"]) for w in final] == [(0, "done", True), (1, "done", True)]
    assert all(w["sent_rps"] is not None for w in final)
    assert stream.last("thresholds")[0]["expr"] == "latency.p99<5s"
    assert stream.last("summary") == orjson.loads(orjson.dumps(final_sections(merged, "this run")))
    assert (out / "report.html").stat().st_size > 10_000


def test_a_replay_is_split_over_workers_by_recorded_connection(tmp_path: Path) -> None:
    """Recorded connection r goes to worker r mod N, its requests in their recorded order; the merged result counts
    each request once."""
    rec = tmp_path / "rec"
    streams = [[json_frame(f"c{c}-{i}") for i in range(5)] for c in range(3)]
    record_connections(rec, streams)
    port = free_port()
    with fake_gateway(delay_s=0.0) as gw:
        args = ["load", gw.url, "--replay", str(rec), "--workers", "2", "--coordinator", f"{LOOPBACK}:{port}",
                "--json", "--quiet"]
        workers = [start_worker(args, 1), start_worker(args, 0)]
        try:
            codes = [w.wait() for w in workers]
        finally:
            stop(workers)
        arrivals = by_connection(gw.arrivals)
    assert codes == [0, 0], workers[1].stderr
    merged = orjson.loads(workers[1].stdout)
    assert merged["requests"]["ok"] == merged["requests"]["sent"] == 15
    assert [p["requests"]["sent"] for p in merged["per_worker"]] == [10, 5]  # connections 0 and 2; connection 1
    got = sorted(orjson.dumps([normalised(a.frame, "json") for a in conn]) for conn in arrivals.values())
    assert got == sorted(orjson.dumps([normalised(f, "json") for f in s]) for s in streams)

    refused = start_worker([*args[:4], "--workers", "4", *args[6:]], 0)
    assert refused.wait() == 2 and "splits by recorded connection" in refused.stderr


def test_one_worker_with_a_coordinator_loses_no_second(relay: RelayProcess, tmp_path: Path) -> None:
    """`--workers 1`: the run's final sliver of a second (2.3 s: 0.3 s after the last whole second) stays a row
    of its own, so the merged seconds add up to the merged total."""
    out = tmp_path / "results"
    worker = start_worker(["load", relay.url, "--rate", "200", "--duration", "2.3s", "--workers", "1",
                           "--coordinator", f"{LOOPBACK}:{free_port()}", "--out", str(out), "--quiet"], 0)
    try:
        assert worker.wait() == 0, worker.stderr
    finally:
        stop([worker])
    merged = summary_of(out)
    assert merged["requests"]["sent"] == merged["requests"]["ok"] == 460
    rows = [orjson.loads(line) for line in (out / "timeseries.jsonl").read_bytes().splitlines()]
    assert sum(r["sent"] for r in rows) == sum(r["ok"] for r in rows) == 460
