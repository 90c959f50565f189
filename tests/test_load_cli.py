"""`flowrelay load` as a user runs it: exit codes, thresholds, usage errors before any traffic, several
worker processes, scenario files, and the results folder (summary.json, timeseries.jsonl, requests.msgpack).

Every run is a subprocess of the installed command against a relay (`upper -> sleeper` at 2 ms),
1-3 s at 100-200 requests per second.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from load_helpers import assert_adds_up, cli_summary, flatten_keys, read_request_log, run_load_cli
from relay_process import LOOPBACK, RelayProcess, run_relay

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_THRESHOLDS = 0, 1, 2, 99


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", "sleeper=sleep:2ms") as r:
        yield r


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that listens but never accepts: any connection attempt is left in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(8)
        sock.settimeout(0.3)
        yield sock


def _nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


# ---- thresholds and exit codes ---------------------------------------------------------------------


def test_threshold_that_holds_exits_0(relay: RelayProcess) -> None:
    proc = run_load_cli(
        relay.url, "--rate", "100", "--duration", "1s", "--threshold", "latency.p99<10s", "--quiet", "--json"
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    summary = cli_summary(proc)
    assert [(t["expr"], t["ok"]) for t in summary["thresholds"]] == [("latency.p99<10s", True)]
    assert summary["requests"]["ok"] == 100


def test_threshold_that_fails_exits_99(relay: RelayProcess) -> None:
    proc = run_load_cli(relay.url, "--rate", "100", "--duration", "1s", "--threshold", "latency.p50<0.001ms", "--quiet")
    assert proc.returncode == EXIT_THRESHOLDS, proc.stderr
    assert "FAIL  latency.p50<0.001ms" in proc.stdout
    assert "sent 100  ok 100" in proc.stdout, "the run itself went through"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "100", "--duration", "1s", "--threshold", "latency.p42<5ms"], "unknown metric 'latency.p42'"),
        (["--duration", "1s"], "no load model"),
        (["--rate", "100"], "give --duration or --requests"),
        (["--rate", "100", "--duration", "1s", "--concurrency", "2"], "choose one load model"),
    ],
    ids=["unknown-metric", "no-load-model", "unbounded", "two-models"],
)
def test_usage_error_exits_2_before_any_traffic(listener: socket.socket, args: list[str], message: str) -> None:
    url = f"ws://{LOOPBACK}:{listener.getsockname()[1]}"
    proc = run_load_cli(url, *args, "--quiet")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert message in proc.stderr
    assert _nobody_connected(listener), "a usage error must be reported before connecting"


def test_missing_target_exits_2() -> None:
    proc = run_load_cli("--rate", "100", "--duration", "1s", "--quiet")
    assert proc.returncode == EXIT_USAGE
    assert "a target is needed" in proc.stderr


def test_unreachable_target_exits_1(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there any more
    proc = run_load_cli(f"ws://{LOOPBACK}:{port}", "--rate", "100", "--duration", "1s", "--quiet")
    assert proc.returncode == EXIT_RUN_FAILED
    assert "cannot connect" in proc.stderr


# ---- processes -------------------------------------------------------------------------------------


def test_two_processes_give_one_summary_like_one_process(relay: RelayProcess, tmp_path: Path) -> None:
    common = [relay.url, "--rate", "200", "--duration", "1s", "--connections", "2", "--quiet", "--json"]
    single = run_load_cli(*common, "--out", str(tmp_path / "one"))
    double = run_load_cli(*common, "--procs", "2", "--out", str(tmp_path / "two"))
    assert single.returncode == EXIT_OK, single.stderr
    assert double.returncode == EXIT_OK, double.stderr
    one, two = cli_summary(single), cli_summary(double)

    skip = frozenset({"errors", "dropped_by_reason"})
    assert flatten_keys(two, skip=skip) == flatten_keys(one, skip=skip)
    assert two["procs"] == 2 and one["procs"] == 1
    for summary in (one, two):
        req = summary["requests"]
        assert req["sent"] == 200
        assert req["ok"] == 200
        assert req["dropped"] == 0
        assert_adds_up(summary)
        assert summary["rate"]["achieved_rps"] == pytest.approx(200.0)
        assert summary["latency_ms"]["count"] == 200
        assert summary["hops"]["sleeper"]["count"] == 200
    # The two workers' time series are merged into one.
    rows = [orjson.loads(line) for line in (tmp_path / "two" / "timeseries.jsonl").read_bytes().splitlines()]
    assert sum(row["sent"] for row in rows) == 200
    assert sum(row["ok"] for row in rows) == 200


# ---- scenario files ----------------------------------------------------------------------------------


def test_scenario_stages_send_the_integral_of_the_rate(relay: RelayProcess, tmp_path: Path) -> None:
    stages = [{"duration": "1s", "target": 100}, {"duration": "1s", "target": 100}, {"duration": "1s", "target": 0}]
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({"stages": stages, "subprotocol": "json"}))
    # k6's ramping arrival rate starts at 0 and moves linearly to each target: a trapezoid per stage.
    expected, previous, total_s = 0.0, 0.0, 0.0
    for stage in stages:
        seconds = float(str(stage["duration"]).removesuffix("s"))
        expected += (previous + stage["target"]) / 2 * seconds
        previous = stage["target"]
        total_s += seconds
    assert expected == 200.0

    proc = run_load_cli(relay.url, "--scenario", str(scenario), "--quiet", "--json")
    assert proc.returncode == EXIT_OK, proc.stderr
    summary = cli_summary(proc)
    req = summary["requests"]
    assert req["sent"] == expected
    assert req["ok"] == req["sent"]
    assert summary["subprotocol"]["offered"] == "json"
    assert summary["measured_duration_s"] == pytest.approx(total_s)
    assert summary["rate"]["target_rps"] == pytest.approx(expected / total_s)
    assert summary["rate"]["achieved_rps"] == pytest.approx(expected / total_s, abs=0.01)


# ---- results folder ------------------------------------------------------------------------------------


def test_out_dir_has_summary_timeseries_and_request_log(relay: RelayProcess, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = run_load_cli(
        relay.url,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--threshold",
        "requests.ok>0",
        "--out",
        str(out),
        "--log-requests",
        "--quiet",
    )
    assert proc.returncode == EXIT_OK, proc.stderr

    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["target"] == relay.url
    assert {"offered", "negotiated"} <= set(summary["subprotocol"])
    assert summary["subprotocol"]["negotiated"] == "bytes"
    assert isinstance(summary["duration_s"], float)
    assert {"sent", "ok", "failed", "timeout", "dropped", "unanswered"} <= set(summary["requests"])
    assert {"target_rps", "achieved_rps"} <= set(summary["rate"])
    assert set(summary["docs"]) >= {"sent", "received"}
    for section in ("latency_ms", "service_time_ms"):
        assert {"p50", "p90", "p99", "p999", "max", "mean"} <= set(summary[section])
        assert all(isinstance(summary[section][k], float) for k in ("p50", "p99", "max", "mean"))
    assert {"gateway", "upper", "sleeper", "outside_gateway"} <= set(summary["hops"])
    assert summary["errors"] == {}
    assert [(t["expr"], t["ok"]) for t in summary["thresholds"]] == [("requests.ok>0", True)]
    sent = summary["requests"]["sent"]
    assert sent == 200
    assert_adds_up(summary)

    # One row per second of the run: full seconds, then what was left of the last one (if anything
    # happened in it).
    rows = [orjson.loads(line) for line in (out / "timeseries.jsonl").read_bytes().splitlines()]
    assert 2 <= len(rows) <= 3
    assert all(row["interval_s"] == pytest.approx(1.0, abs=0.25) for row in rows[:-1])
    assert rows[-1]["interval_s"] <= 1.25
    assert summary["duration_s"] - 1.05 <= rows[-1]["t"] <= summary["duration_s"] + 0.01
    assert sum(row["sent"] for row in rows) == sent
    assert sum(row["ok"] for row in rows) == summary["requests"]["ok"]

    records = read_request_log(out / "requests.msgpack")
    assert len(records) == sent
    assert len({rec[0] for rec in records}) == sent, "one record per request id"
    assert all(rec[4] == "ok" for rec in records)
    assert all(rec[1] <= rec[2] + 0.002 and rec[2] < rec[3] for rec in records), "due <= sent < answered"
