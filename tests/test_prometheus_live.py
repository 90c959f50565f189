"""The dashboards against a real Prometheus, without Docker: every panel query returns data during a run.

A relay (`flowrelay serve` in front of a Flow, another relay with an Executor that fails now and then so that
error series exist, and mirroring to a shadow, a third, so that the mirror's series exist), a load run
(`flowrelay load --procs 2 --metrics-port 0`) and Debian's Prometheus (`/usr/bin/prometheus`,
installed by scripts/setup_system.sh) run as processes on 127.0.0.1. Prometheus gets the shipped
`dashboards/prometheus.yml` with only the targets rewritten to the processes' ports, a TSDB in a
temporary directory and a free loopback port. While the load runs, every PromQL expression of every
panel of both Grafana dashboards is evaluated through `/api/v1/query` at the current time, with
Grafana's variables substituted (`$__rate_interval` by a window of at least four scrapes, `$worker` by
its All value), and each must return at least one finite sample. What Prometheus saw must agree with
the load engine's own summary.json: the run's increase of the sent, ok and failed counters and the sent
rate over the run within 5 %; the live `rate(...[10s])` mid-run within 5 % plus 10 %, the most a
once-a-second worker update can skew a 10 s window with `--procs` > 1.

Without the prometheus binary the test is skipped, except under CI (env CI set), where it fails.
Every process is stopped by its PID; the temporary directory is removed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from relay_process import LOOPBACK, exchange, flowrelay_command, relay_env, run_relay, stop_process

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = ROOT / "dashboards" / "prometheus.yml"
DASHBOARDS = [ROOT / "dashboards" / "grafana" / n for n in ("flowrelay-load.json", "flowrelay-relay.json")]
PROMETHEUS_BIN = "/usr/bin/prometheus"

RATE = 200
PROCS = 2
RUN_S = 22.0
QUERY_AFTER_S = 14.0  # into the run, at the earliest: see MIN_SCRAPES
LINGER_S = 3.0  # the load engine keeps serving its final counts this long for the last scrapes
TOLERANCE = 0.05
# With --procs N each worker's counts reach the exporter once a second, so a scrape sees them up to 1 s
# old: a rate over a window of W seconds can be off by up to 1/W of the rate (one update at each end).
WORKER_UPDATE_S = 1.0
RATE_WINDOW_S = 10
MIN_SCRAPES = RATE_WINDOW_S + 1
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
OUTPUT_LINES_KEPT = 400
_METRICS_AT = re.compile(r"metrics at http://127\.0\.0\.1:(\d+)/metrics")


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    assert m, f"unexpected duration {text!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]


# ---- Prometheus --------------------------------------------------------------------------------------


def rewritten_config(targets: dict[str, str]) -> dict[str, Any]:
    """The shipped config with each job's service discovery replaced by one static loopback target."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"jobs in {PROMETHEUS_YML.name}: {sorted(jobs)}"
    for name, job in jobs.items():
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": [targets[name]]}]
    return config


class Prometheus:
    """A `prometheus` process on 127.0.0.1 with a config and a TSDB in `workdir`; stopped by PID."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = _free_port()
        self.base = f"http://{LOOPBACK}:{self.port}"
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS_BIN,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self._opener.open(f"{self.base}/-/ready", timeout=2.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout_s} s:\n{self.log_tail()}")

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET /api/v1/PATH?PARAMS; the `data` of a successful answer, else an AssertionError."""
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params or {})}"
        try:
            with self._opener.open(url, timeout=HTTP_TIMEOUT_S) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"errorType": f"HTTP {err.code}", "error": raw.decode(errors="replace")}
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", {"query": expr})
        assert data["resultType"] == "vector", f"{expr}: a {data['resultType']}, not a vector"
        return data["result"]

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])

    def targets_up(self) -> dict[str, bool]:
        active = self.api("targets")["activeTargets"]
        return {t["labels"]["job"]: t["health"] == "up" for t in active}


# ---- the load run ------------------------------------------------------------------------------------


def _pump(stream: IO[str], sink: collections.deque[str], port: list[int], ready: threading.Event) -> None:
    try:
        for line in stream:
            sink.append(line.rstrip("\n"))
            m = _METRICS_AT.search(line)
            if m and not port:
                port.append(int(m.group(1)))
                ready.set()
    except (OSError, ValueError):
        pass


class LoadRun:
    """`flowrelay load ... --metrics-port 0 --out DIR` as a subprocess; the metrics port read from stderr."""

    def __init__(self, target: str, out: Path) -> None:
        self.out = out
        self.output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        cmd = [
            *flowrelay_command(), "load", target,
            "--rate", str(RATE), "--duration", f"{RUN_S}s", "--procs", str(PROCS), "--connections", "2",
            "--metrics-port", "0", "--metrics-host", LOOPBACK, "--metrics-linger", f"{LINGER_S}s",
            "--quiet", "--out", str(out),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env=relay_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # its own process group, so that stop() reaches the workers too
        )
        self.started = time.monotonic()
        self._port: list[int] = []
        self._ready = threading.Event()
        self._pump = threading.Thread(target=_pump, args=(self.proc.stdout, self.output, self._port, self._ready),
                                      daemon=True)  # fmt: skip
        self._pump.start()

    def metrics_port(self, timeout_s: float = START_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while not self._ready.is_set() and self.proc.poll() is None and time.monotonic() < deadline:
            self._ready.wait(0.05)
        assert self._port, f"flowrelay load printed no metrics address (exit {self.proc.poll()}):\n{self.text()}"
        return self._port[0]

    def text(self) -> str:
        return "\n".join(self.output)

    def wait(self, timeout_s: float) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self._pump.join(timeout=5.0)
        return code

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) by PID, then the same to what is left of its process group (its workers)."""
        stop_process(self.proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group is this run's own: start_new_session
        self._pump.join(timeout=5.0)
        if not self._pump.is_alive() and self.proc.stdout is not None:
            self.proc.stdout.close()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.out / "summary.json").read_text())


# ---- the dashboards' queries ---------------------------------------------------------------------------


def dashboard_queries(rate_window: str) -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL ready to evaluate) for every query of every panel."""
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        values = {"__rate_interval": rate_window}
        for var in dash["templating"]["list"]:
            if var["type"] == "query":
                assert var.get("includeAll") and var.get("allValue"), f"{var['name']}: no All value"
                values[var["name"]] = var["allValue"]
        panels = [p for top in dash["panels"] for p in (top, *top.get("panels", []))]
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name in sorted(values, key=len, reverse=True):
                    expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
                assert "$" not in expr, f"{path.name} / {panel['title']}: unsubstituted variable in {expr}"
                yield path.name, panel["title"], expr


def variable_label_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard, label, metric) of each `label_values(metric, label)` template variable."""
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q.strip())
            assert m, f"{path.name}: variable {var['name']}: unexpected query {q}"
            yield path.name, m.group(2), m.group(1)


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


# ---- the test ------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_every_panel_query_returns_data_from_a_real_prometheus() -> None:
    if not (os.path.isfile(PROMETHEUS_BIN) and os.access(PROMETHEUS_BIN, os.X_OK)):
        _missing(f"{PROMETHEUS_BIN} not found (Debian's prometheus package; scripts/setup_system.sh installs it)")
    shipped = yaml.safe_load(PROMETHEUS_YML.read_text())
    scrape_s = _duration_s(shipped["global"]["scrape_interval"])
    assert scrape_s <= 2.0
    # Grafana's $__rate_interval is at least four scrape intervals; one more keeps >= 4 samples in it.
    rate_window = f"{round(5 * scrape_s)}s"

    with tempfile.TemporaryDirectory(prefix="flowrelay-prom-") as tmp:
        workdir = Path(tmp)
        # The relay under watch fronts a Flow (a relay with built-in Executors) and mirrors to a shadow (another),
        # so that the mirror's panels have data too.
        with run_relay("-e", "upper", "-e", "sleeper=sleep:2ms", "-e", "failer=fail:0.05") as flow, \
                run_relay("-e", "shadowecho=echo") as shadow, \
                run_relay("--upstream", flow.url, "--mirror", shadow.url) as relay:
            # One finished connection first, so the close-code series exist while the run's are open.
            closed = asyncio.run(exchange(relay.url, [{}]))
            assert closed.close_code == 1000

            load = LoadRun(relay.url, workdir / "results")
            prom: Prometheus | None = None
            try:
                load_port = load.metrics_port()
                config = rewritten_config({"relay": f"{LOOPBACK}:{relay.port}", "load": f"{LOOPBACK}:{load_port}"})
                prom = Prometheus(config, workdir)
                prom.wait_ready()

                deadline = time.monotonic() + START_TIMEOUT_S
                while time.monotonic() < deadline and prom.targets_up() != {"relay": True, "load": True}:
                    time.sleep(0.5)
                assert prom.targets_up() == {"relay": True, "load": True}, prom.log_tail()

                # Query mid-run, once the rate window is covered by scrapes (later on a slow start, but
                # while the load still sends).
                time.sleep(max(0.0, load.started + QUERY_AFTER_S - time.monotonic()))
                latest = load.started + RUN_S - 3.0
                while (scrapes := prom.scalar('count_over_time(up{job="load"}[1m])')) < MIN_SCRAPES:
                    assert time.monotonic() < latest, f"only {scrapes} scrapes of the load engine by now"
                    time.sleep(0.5)
                assert load.proc.poll() is None, f"the load run ended early:\n{load.text()}"

                # Every panel's every query, at the current time, while the run goes on.
                empty: list[str] = []
                queries = list(dashboard_queries(rate_window))
                for dash, title, expr in queries:
                    result = prom.query(expr)
                    if not result or not _finite(result):
                        empty.append(f"{dash} / {title}: {expr} -> {result}")
                for dash, label, metric in variable_label_queries():
                    values = prom.api("label/" + label + "/values", {"match[]": metric})
                    if not values:
                        empty.append(f"{dash} / variable {label}: label_values({metric}, {label}) -> []")
                    if label == "worker":
                        assert sorted(values) == [str(i) for i in range(PROCS)], values
                mid_rate = prom.scalar(f"sum(rate(flowrelay_load_requests_sent_total[{RATE_WINDOW_S}s]))")
                assert not empty, f"{len(empty)} of {len(queries)} queries returned no data:\n" + "\n".join(empty)
                assert len(queries) >= 40

                code = load.wait(timeout_s=RUN_S + LINGER_S + 60.0)
                assert code == 0, f"flowrelay load exited {code}:\n{load.text()}"
                summary = load.summary()

                # What Prometheus saw against what the load engine reports. The counters start at 0 with the
                # run and the exporter lingers, so the last scraped value of each is the run's increase.
                requests = summary["requests"]
                achieved = summary["rate"]["achieved_rps"]
                assert achieved == pytest.approx(RATE, rel=TOLERANCE)
                sent = prom.scalar("sum(max_over_time(flowrelay_load_requests_sent_total[2m]))")
                assert sent == pytest.approx(requests["sent"], rel=TOLERANCE), (sent, requests)
                ok = prom.scalar("sum(max_over_time(flowrelay_load_requests_ok_total[2m]))")
                assert ok == pytest.approx(requests["ok"], rel=TOLERANCE), (ok, requests)
                failed = prom.scalar("sum(max_over_time(flowrelay_load_requests_failed_total[2m]))")
                assert failed == pytest.approx(requests["sent"] - requests["ok"], rel=TOLERANCE, abs=5), requests
                # The sent rate over the whole run as Prometheus saw it, then the live rate mid-run.
                assert sent / summary["measured_duration_s"] == pytest.approx(achieved, rel=TOLERANCE)
                mid_tolerance = TOLERANCE + WORKER_UPDATE_S / RATE_WINDOW_S
                assert mid_rate == pytest.approx(achieved, rel=mid_tolerance), (mid_rate, achieved)
            finally:
                load.stop()
                if prom is not None:
                    prom.stop()
            assert load.proc.returncode is not None
            assert prom.proc.returncode is not None
