"""`flowrelay load --metrics-port`: what Prometheus scrapes during the linger matches the run's summary,
per-hop histograms are there, and with `--procs 2` both workers appear under one port with their `worker`
label, their counts adding up to the summary's.

Each run is a subprocess of the installed command against a `flowrelay serve` subprocess, on 127.0.0.1.
The metrics port is 0 (the load engine picks a free one and prints it on stderr, so no port race); the
summary is printed before the linger, so once it is complete the run is over and a scrape sees the final
values.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
import yaml
from load_helpers import assert_adds_up
from metrics_helpers import Samples, scrape, series, value
from relay_process import LOOPBACK, RelayProcess, flowrelay_command, relay_env, run_relay, stop_process

EXIT_OK, EXIT_USAGE = 0, 2
RUN_TIMEOUT_S = 60.0
LINGER = "3s"
_METRICS_AT = re.compile(r"metrics at http://127\.0\.0\.1:(\d+)/metrics")


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    with run_relay("--log-level", "WARNING", "-e", "upper", "-e", "sleeper=sleep:1ms") as r:
        yield r


def _pump(stream: IO[str], sink: list[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            sink.append(line)


def run_and_scrape(*args: str) -> tuple[dict[str, Any], Samples, int]:
    """Run `flowrelay load ARGS --json --quiet`, scrape /metrics once the summary is out (during the
    linger); returns the summary, the samples and the exit code."""
    cmd = [*flowrelay_command(), "load", *args, "--json", "--quiet"]
    proc = subprocess.Popen(cmd, env=relay_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)]
    for p in pumps:
        p.start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        summary: dict[str, Any] | None = None
        port: int | None = None
        while summary is None and time.monotonic() < deadline and proc.poll() is None:
            if port is None:
                port = next((int(m.group(1)) for line in list(err) if (m := _METRICS_AT.search(line))), None)
            with contextlib.suppress(orjson.JSONDecodeError):
                if out:
                    summary = orjson.loads("".join(out))
            time.sleep(0.05)
        assert port is not None, f"no metrics line on stderr: {''.join(err)}"
        assert summary is not None, f"no summary before the linger ended (exit {proc.poll()}): {''.join(err)}"
        _, samples = scrape(port)
        code = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        for p in pumps:
            p.join(timeout=5)
    return summary, samples, code


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: v for labels, v in series(samples, name).items()}


def test_one_process_matches_the_summary(relay: RelayProcess) -> None:
    summary, m, code = run_and_scrape(relay.url, "--rate", "100", "--duration", "1s",
                                      "--metrics-port", "0", "--metrics-linger", LINGER)
    assert code == EXIT_OK
    req = summary["requests"]
    assert_adds_up(summary)
    assert req["sent"] == 100
    assert per_worker(m, "flowrelay_load_requests_sent_total") == {"0": req["sent"]}
    assert per_worker(m, "flowrelay_load_requests_ok_total") == {"0": req["ok"]}
    assert sum(series(m, "flowrelay_load_requests_failed_total").values()) == req["sent"] - req["ok"]
    assert value(m, "flowrelay_load_requests_dropped_total", worker="0") == req["dropped"]
    assert value(m, "flowrelay_load_requests_in_flight", worker="0") == 0
    assert value(m, "flowrelay_load_docs_sent_total", worker="0") == summary["docs"]["sent"]
    assert value(m, "flowrelay_load_docs_received_total", worker="0") == summary["docs"]["received"]
    # the run is over: nothing more is due
    assert value(m, "flowrelay_load_target_rate", worker="0") == 0
    for name in ("latency_seconds", "service_time_seconds"):
        assert value(m, f"flowrelay_load_{name}_count", worker="0") == req["ok"]
        assert value(m, f"flowrelay_load_{name}_bucket", worker="0", le="+Inf") == req["ok"]
    assert value(m, "flowrelay_load_scheduler_lag_seconds_count", worker="0") == req["sent"]
    hops = {dict(labels)["hop"]: v for labels, v in series(m, "flowrelay_load_hop_seconds_count").items()}
    assert set(summary["hops"]) <= set(hops)
    for hop in ("gateway", "upper", "sleeper", "outside_gateway"):
        assert hops[hop] == req["ok"] == summary["hops"][hop]["count"]
    # The relay's own sleep of 1 ms is inside its gateway span.
    assert value(m, "flowrelay_load_hop_seconds_sum", worker="0", hop="sleeper") >= 0.001 * req["ok"] * 0.9


def test_two_processes_one_port_worker_labels_add_up(relay: RelayProcess, tmp_path: Path) -> None:
    # The metrics options from a scenario file this time.
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "target": relay.url, "rate": 200, "duration": "1s", "procs": 2, "connections": 2,
        "metrics_port": 0, "metrics_linger": LINGER,
    }))
    summary, m, code = run_and_scrape("--scenario", str(scenario))
    assert code == EXIT_OK
    req = summary["requests"]
    assert summary["procs"] == 2
    assert_adds_up(summary)
    sent = per_worker(m, "flowrelay_load_requests_sent_total")
    ok = per_worker(m, "flowrelay_load_requests_ok_total")
    assert set(sent) == set(ok) == {"0", "1"}
    assert all(v > 0 for v in sent.values())
    assert sum(sent.values()) == req["sent"] == 200
    assert sum(ok.values()) == req["ok"]
    assert sum(per_worker(m, "flowrelay_load_docs_received_total").values()) == summary["docs"]["received"]
    assert per_worker(m, "flowrelay_load_requests_in_flight") == {"0": 0, "1": 0}
    latency = per_worker(m, "flowrelay_load_latency_seconds_count")
    assert sum(latency.values()) == req["ok"]
    gateway = {dict(labels)["worker"]: v for labels, v in series(m, "flowrelay_load_hop_seconds_count").items()
               if dict(labels)["hop"] == "gateway"}
    assert gateway == ok


def test_a_busy_metrics_port_is_a_usage_error_before_any_traffic(relay: RelayProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*flowrelay_command(), "load", relay.url, "--rate", "10", "--duration", "1s", "--quiet",
             "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
        )
    assert proc.returncode == EXIT_USAGE
    assert "cannot serve metrics" in proc.stderr
