"""Helpers for the cluster tests: worker processes started as a Kubernetes Indexed Job starts them (the same
command in every pod, JOB_COMPLETION_INDEX set per pod), a free port for the coordinator, the relay's
request counter, and interval logs as HdrHistogram's reader sees them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from relay_process import LOOPBACK, flowrelay_command

from loadtest.measure.histograms import HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS

WAIT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    index: int
    proc: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""

    def wait(self, timeout_s: float = WAIT_S) -> int:
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode


def start_worker(verb_args: list[str], index: int | None, env_index: bool = True) -> WorkerProcess:
    """`flowrelay VERB_ARGS...` as pod `index` of an Indexed Job runs it (JOB_COMPLETION_INDEX in its
    environment), or with no index at all (None: a Compose replica)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JOB_COMPLETION_INDEX", None)
    if index is not None and env_index:
        env["JOB_COMPLETION_INDEX"] = str(index)
    proc = subprocess.Popen([*flowrelay_command(), *verb_args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    return WorkerProcess(-1 if index is None else index, proc)


def stop(workers: list[WorkerProcess]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


def relay_requests(port: int) -> int:
    """How many requests the relay saw (and answered), from its own metrics."""
    text = urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10).read().decode()
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("flowrelay_relay_requests_total{")))


def hdrh_intervals(path: Path) -> list[HdrHistogram]:
    """Every interval of an interval log, as HdrHistogram's own (Python) reader returns them, tags kept."""
    reader = HistogramLogReader(str(path), HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))
    found = []
    while (histogram := reader.get_next_interval_histogram()) is not None:
        found.append(histogram)
    reader.close()
    return found


def hdrh_totals(folder: Path) -> dict[str, HdrHistogram]:
    """A results folder's totals.hlog, by tag."""
    return {h.get_tag(): h for h in hdrh_intervals(folder / "totals.hlog")}
