"""HdrHistogram interval logs in a results folder, read by HdrHistogram's own reader (hdrh), and runs started by
hand merged with `flowrelay report --merge`: counts added up, histograms merged, percentiles from the
merged counts (checked against the union of the runs' histograms as hdrh reads them from the logs).

Runs are `flowrelay load` subprocesses against a relay (`upper -> sleeper` at 1 ms), a few seconds each.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cluster_helpers import hdrh_intervals, hdrh_totals
from hdrh.histogram import HdrHistogram
from load_helpers import run_load_cli
from relay_process import RelayProcess, flowrelay_command, run_relay

from loadtest.measure.histograms import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", "sleeper=sleep:1ms") as r:
        yield r


def summary_of(folder: Path) -> dict[str, Any]:
    return orjson.loads((folder / "summary.json").read_bytes())


def by_tag(intervals: list[HdrHistogram], tag: str) -> list[HdrHistogram]:
    return [h for h in intervals if h.get_tag() == tag]


def union(histograms: list[HdrHistogram]) -> HdrHistogram:
    total = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    for h in histograms:
        total.add(h)
    return total


@pytest.fixture(scope="module")
def two_runs(relay: RelayProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs started by hand at the same time, at different rates."""
    base = tmp_path_factory.mktemp("runs")
    a, b = base / "a", base / "b"
    procs = [
        subprocess.Popen([*flowrelay_command(), "load", relay.url, "--rate", str(rate), "--duration", "3s",
                          "--threshold", "latency.p99<5s", "--quiet", "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rate, out in ((150, a), (90, b))
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    return a, b


def test_a_results_folder_holds_interval_logs_hdrhistogram_reads(two_runs: tuple[Path, Path]) -> None:
    a, _ = two_runs
    summary = summary_of(a)
    seconds = hdrh_intervals(a / "latency.hlog")
    rows = [orjson.loads(line) for line in (a / "timeseries.jsonl").read_bytes().splitlines()]
    latency = by_tag(seconds, "latency")
    assert len(latency) == len(by_tag(seconds, "service_time")) == len(rows) >= 3
    # Each second's histogram holds that second's ok answers (no warm-up here: every answer counts).
    assert [h.get_total_count() for h in latency] == [row["ok"] for row in rows]
    assert sum(h.get_total_count() for h in latency) == summary["requests"]["ok"] == 450
    # The log's intervals are on the wall clock, in order, from the log's StartTime.
    starts = [h.get_start_time_stamp() for h in latency]
    assert starts == sorted(starts) and starts[0] / 1000 > 1.6e9

    totals = hdrh_totals(a)
    assert {"latency", "service_time", "scheduler_lag", "hop.gateway", "hop.upper", "hop.sleeper"} <= set(totals)
    assert totals["latency"].get_total_count() == summary["latency_ms"]["count"] == 450
    # The summary's percentiles are the log's histogram's (values in microseconds).
    assert totals["latency"].get_value_at_percentile(99) / 1000 == pytest.approx(summary["latency_ms"]["p99"],
                                                                                 abs=0.0015)


def test_report_merge_adds_runs_up_exactly(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_runs
    merged = tmp_path / "merged"
    proc = subprocess.run([*flowrelay_command(), "report", "--merge", str(a), str(b), "--out", str(merged)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"2 runs merged into {merged}/" in proc.stdout
    s, sa, sb = summary_of(merged), summary_of(a), summary_of(b)
    for key in ("sent", "ok", "failed", "timeout", "dropped", "unanswered", "transport_failed"):
        assert s["requests"][key] == sa["requests"][key] + sb["requests"][key]
    assert s["requests"]["sent"] == 450 + 270
    assert s["docs"]["sent"] == sa["docs"]["sent"] + sb["docs"]["sent"]
    assert s["rate"]["target_rps"] == 240.0 and s["connections"] == 2
    assert s["merged_from"] == [str(a), str(b)]

    # Percentiles from the union of both runs' histograms as HdrHistogram reads them from the logs.
    for tag, key in (("latency", "latency_ms"), ("service_time", "service_time_ms"), ("hop.sleeper", None)):
        whole = union([h for run in (a, b) for h in hdrh_intervals(run / "totals.hlog") if h.get_tag() == tag])
        figures = s[key] if key else s["hops"]["sleeper"]
        assert figures["count"] == whole.get_total_count() == 720
        for name, percentile in (("p50", 50), ("p90", 90), ("p99", 99)):
            expected_ms = min(whole.get_value_at_percentile(percentile), round(figures["max"] * 1000)) / 1000
            assert figures[name] == pytest.approx(expected_ms, abs=0.0015), (tag, name)
        if key:
            assert figures["max"] == max(sa[key]["max"], sb[key]["max"])
            exact_mean = (sa[key]["mean"] * 450 + sb[key]["mean"] * 270) / 720
            assert figures["mean"] == pytest.approx(exact_mean, abs=0.001)
    assert s["thresholds"] == [{"expr": "latency.p99<5s", "ok": True, "value": s["latency_ms"]["p99"]}]

    # The seconds, merged on one time axis, add up to the totals, and the merged folder is a results folder.
    rows = [orjson.loads(line) for line in (merged / "timeseries.jsonl").read_bytes().splitlines()]
    assert sum(row["sent"] for row in rows) == 720
    assert sum(h.get_total_count() for h in by_tag(hdrh_intervals(merged / "latency.hlog"), "latency")) == 720
    assert (merged / "report.html").stat().st_size > 10_000


def test_merge_refuses_what_does_not_add_up(two_runs: tuple[Path, Path], relay: RelayProcess, tmp_path: Path) -> None:
    a, _ = two_runs
    other = tmp_path / "other"
    proc = run_load_cli(relay.url, "--rate", "50", "--duration", "1s", "--endpoint", "/search", "--quiet",
                        "--out", str(other))
    assert proc.returncode == 0, proc.stderr
    refused = subprocess.run([*flowrelay_command(), "report", "--merge", str(a), str(other), "--out",
                              str(tmp_path / "m")], capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "differ in endpoint" in refused.stderr
    alone = subprocess.run([*flowrelay_command(), "report", "--merge", str(a)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert alone.returncode == 2 and "two results folders or more" in alone.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = subprocess.run([*flowrelay_command(), "report", "--merge", str(a), str(empty), "--out",
                              str(tmp_path / "m2")], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "summary.json" in missing.stderr
